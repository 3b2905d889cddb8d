/**
 * The MIME renderer for application/vnd.coiled-jupyter.rules+json: every table the magics and the
 * panel print renders natively in Lab (theme-aware, sortable), while the HTML twin still serves classic
 * Notebook, nbconvert and GitHub.
 */

import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import { IPayload, MIME_TYPE } from './payload';
import { renderResult } from './render';

export class RulesRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this._mimeType = options.mimeType;
    this.addClass('cj-mime');
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const data = model.data[this._mimeType] as unknown as IPayload;
    this.node.replaceChildren(renderResult(data));
    return Promise.resolve();
  }

  private _mimeType: string;
}

export const rendererFactory: IRenderMime.IRendererFactory = {
  // Safe: the renderer writes text only (no markup from the payload), so untrusted output may use it.
  safe: true,
  mimeTypes: [MIME_TYPE],
  createRenderer: options => new RulesRenderer(options)
};

const extension: IRenderMime.IExtension = {
  id: 'coiled-jupyter:rules-renderer',
  description: 'Renders coiled_jupyter firewall tables natively.',
  rendererFactory,
  // Ahead of text/html (the HTML twin), so Lab shows this renderer.
  rank: 0,
  dataType: 'json'
};

export default extension;
