/**
 * The JupyterLab plugin: the "Cluster firewall" sidebar and its command palette entries (open the
 * sidebar; insert a %%coiled_ingress cell with the current settings into the active notebook).
 * The MIME renderer is the package's mimeExtension (mime.ts).
 */

import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';

import { FirewallSidebar, SIDEBAR_ID } from './sidebar';

const OPEN = 'coiled-jupyter:open-firewall';
const INSERT = 'coiled-jupyter:insert-ingress-cell';
const CATEGORY = 'Cluster firewall';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'coiled-jupyter:sidebar',
  description: 'A sidebar to see and change the firewall of a Dask cluster.',
  autoStart: true,
  requires: [ILabShell],
  optional: [ICommandPalette, INotebookTracker, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    shell: ILabShell,
    palette: ICommandPalette | null,
    notebooks: INotebookTracker | null,
    restorer: ILayoutRestorer | null
  ) => {
    const sidebar = new FirewallSidebar();
    shell.add(sidebar, 'left', { rank: 900 });
    restorer?.add(sidebar, SIDEBAR_ID);

    app.commands.addCommand(OPEN, {
      label: 'Open the cluster firewall sidebar',
      caption: 'See and change the firewall of a Dask cluster',
      execute: () => shell.activateById(SIDEBAR_ID)
    });
    app.commands.addCommand(INSERT, {
      label: 'Insert a %%coiled_ingress cell with the current firewall settings',
      caption:
        'Below the active cell; once %load_ext coiled_jupyter has run, the cell sets the same ' +
        "rules in that notebook's kernel",
      isEnabled: () => !!notebooks?.currentWidget,
      execute: async () => {
        const panel = notebooks?.currentWidget;
        if (!panel) {
          return;
        }
        const text = await sidebar.cellText();
        NotebookActions.insertBelow(panel.content);
        panel.content.activeCell?.model.sharedModel.setSource(text);
      }
    });
    for (const command of [OPEN, INSERT]) {
      palette?.addItem({ command, category: CATEGORY });
    }
  }
};

export default plugin;
