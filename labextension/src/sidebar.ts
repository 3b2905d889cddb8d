/**
 * The "Cluster firewall" sidebar: one cluster's effective settings with where they came from, rows to
 * add / edit / remove (the server's validation sentence shown next to the row), the public/private
 * toggle, and Plan / Apply / Refresh / Save / copy-as-cell. Every control has an accessible name.
 *
 * It holds no firewall logic: each action is one REST call to the server extension, which calls the
 * same core functions as the magics; what it shows is the payload the server returns.
 */

import { Clipboard } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { ApiError, FirewallApi, IRuleFields } from './api';
import { ingressCell } from './cell';
import { button, el, textField } from './dom';
import { firewallIcon } from './icon';
import {
  Column,
  IPayload,
  IRow,
  accountOf,
  ingressOrigin,
  toggleOrigin
} from './payload';
import { compact, renderHeader, renderResult, sortableTable } from './render';

export const SIDEBAR_ID = 'coiled-jupyter-firewall';

// Every rule of the settings comes from one layer (a list is replaced as a whole), so the origin
// is said once above the table ("Rules from: ..."); the narrow sidebar keeps its width for the rules.
const COLUMNS: Column[] = [
  ['protocol', 'Protocol'],
  ['ports', 'Port'],
  ['source', 'Source'],
  ['description', 'Description']
];

/** How long typing pauses before the new rule is checked by the server. */
const CHECK_DELAY_MS = 250;

const TOGGLE_HELP =
  'Public: the client connects to the scheduler on its public IP, so the rules must admit this ' +
  "notebook's public address. Private: it connects on the private IP, over a VPN or peered VPC.";

function fieldsOf(row: IRow): IRuleFields {
  return {
    ports: String(row.ports ?? ''),
    source: String(row.source ?? ''),
    protocol: String(row.protocol ?? 'tcp'),
    description: String(row.description ?? '')
  };
}

function protocolSelect(name: string, value = 'tcp'): HTMLSelectElement {
  const select = el('select', {
    className: 'cj-select',
    attrs: { 'aria-label': name, title: name }
  });
  for (const protocol of ['tcp', 'udp']) {
    select.appendChild(el('option', { text: protocol, attrs: { value: protocol } }));
  }
  select.value = value;
  return select;
}

/** A rule's detail row (editor and sentence, under the rule) shows only when it holds something. */
function showDetail(inside: HTMLElement): void {
  const row = inside.closest('tr.cj-detail-row');
  if (row) {
    const editor = row.querySelector('.cj-editor');
    const error = row.querySelector('.cj-error');
    row.toggleAttribute('hidden', !editor?.childElementCount && !error?.textContent);
  }
}

/** The sentence of a refusal, with the AWS code for cloud faults. */
function describeError(error: unknown): string {
  if (error instanceof ApiError) {
    return error.code ? `${error.message} (${error.code})` : error.message;
  }
  return String(error);
}

export class FirewallSidebar extends Widget {
  constructor() {
    super();
    this.id = SIDEBAR_ID;
    this.title.icon = firewallIcon;
    this.title.caption = 'Cluster firewall';
    this.addClass('cj-sidebar');
    this.api = new FirewallApi(() => this.clusterInput.value);
    this.build();
  }

  /** The current settings as a %%coiled_ingress cell, read fresh from the server. */
  async cellText(): Promise<string> {
    return ingressCell(await this.api.settings());
  }

  /** Read the settings and the cloud's table again. */
  async refresh(): Promise<void> {
    // A later refresh (another cluster name, say) wins over one still in flight.
    const generation = ++this._generation;
    const current = () => generation === this._generation;
    const showSettings = (data: IPayload) => current() && this.showSettings(data);
    const read = await this.run(() => this.api.settings(), showSettings);
    if (!read || !current()) {
      return;
    }
    const described = await this.run(
      () => this.api.describe(),
      data => {
        if (current()) {
          this._account = accountOf(data) || this._account;
          this.showCloud(data);
          this.showHeader();
        }
      }
    );
    // Describing read the account defaults again; the settings (no cloud call) show them as last
    // read, so they are asked once more to show what the cloud holds now.
    if (described && current()) {
      await this.run(() => this.api.settings(), showSettings);
    }
  }

  protected onAfterAttach(): void {
    if (!this._loaded) {
      this._loaded = true;
      void this.refresh();
    }
  }

  private build(): void {
    this.clusterInput = textField('Cluster name', 'default cluster');
    this.clusterInput.addEventListener('keydown', event => {
      if (event.key === 'Enter') {
        void this.refresh();
      }
    });
    this.toggle = el('input', {
      attrs: { type: 'checkbox', 'aria-label': 'Public scheduler IP', title: 'Public scheduler IP' }
    });
    this.toggle.addEventListener('change', () => {
      const choice = this.toggle.checked ? 'public' : 'private';
      void this.run(
        () => this.api.schedulerIp(choice),
        data => this.showSettings(data)
      );
    });
    this.kindSelect = el('select', {
      className: 'cj-select',
      attrs: { 'aria-label': 'Cluster kind', title: 'Cluster kind: decides the ports checked' }
    });
    for (const [kind, text] of [
      ['coiled', 'coiled (scheduler 443)'],
      ['dask', 'dask (8786/8787)']
    ]) {
      this.kindSelect.appendChild(el('option', { text, attrs: { value: kind } }));
    }
    this.kindSelect.addEventListener('change', () => {
      const kind = this.kindSelect.value;
      void this.run(
        () => this.api.kind(kind),
        data => this.showSettings(data)
      );
    });
    this.scope = el('select', {
      className: 'cj-select',
      attrs: { 'aria-label': 'Save scope', title: 'Save scope' }
    });
    this.scope.appendChild(
      el('option', { text: 'my Dask config file', attrs: { value: 'user' } })
    );
    this.scope.appendChild(
      el('option', { text: 'account defaults (team)', attrs: { value: 'account' } })
    );

    const actions = el('div', { className: 'cj-actions' }, [
      button('Plan', 'Plan', () => void this.showAction(() => this.api.plan())),
      button('Apply', 'Apply', () => void this.applyNow(), 'cj-button cj-primary'),
      button('Refresh', 'Refresh', () => void this.refresh()),
      button('Rehearse', 'Rehearse with packets', () =>
        void this.showAction(() => this.api.rehearse())
      ),
      button('Reset', 'Reset session edits', () =>
        void this.run(
          () => this.api.reset(),
          data => this.showSettings(data)
        )
      ),
      button('Copy cell', 'Copy as %%coiled_ingress cell', () => void this.copyCell())
    ]);
    const saveRow = el('div', { className: 'cj-actions' }, [
      this.scope,
      button('Save', 'Save', () =>
        void this.showAction(() => this.api.save(this.scope.value as 'user' | 'account'))
      )
    ]);

    this.node.append(
      el('h2', { className: 'cj-heading', text: 'Cluster firewall' }),
      el('label', { className: 'cj-field' }, [
        el('span', { text: 'Cluster ' }),
        this.clusterInput
      ]),
      this.headerBox,
      this.status,
      el('h3', { className: 'cj-subheading', text: 'Settings' }),
      this.originLine,
      this.rulesBox,
      this.settingsNotes,
      this.addForm(),
      el('div', { className: 'cj-toggle' }, [
        el('label', {}, [this.toggle, el('span', { text: ' Public scheduler IP' })]),
        el('p', { className: 'cj-help', text: TOGGLE_HELP }),
        this.toggleOrigin
      ]),
      el('div', { className: 'cj-kind' }, [
        el('label', {}, [el('span', { text: 'Cluster kind ' }), this.kindSelect]),
        this.portsLine
      ]),
      actions,
      saveRow,
      this.resultBox,
      el('h3', { className: 'cj-subheading', text: 'In the cloud' }),
      this.cloudBox
    );
  }

  private addForm(): HTMLElement {
    const ports = textField('New rule ports', 'ports, e.g. 8786,8787');
    const source = textField('New rule source', 'source: CIDR, me, sg-...');
    const protocol = protocolSelect('New rule protocol');
    const description = textField('New rule description', 'description (optional)');
    const error = el('p', {
      className: 'cj-error',
      attrs: { role: 'alert', 'aria-label': 'New rule error' }
    });
    const typed = (): IRuleFields => ({
      ports: ports.value,
      source: source.value,
      protocol: protocol.value,
      description: description.value
    });
    const add = (): void => {
      void this.run(
        () => this.api.add(typed()),
        data => {
          ports.value = source.value = description.value = '';
          check();
          this.showSettings(data);
        },
        error
      );
    };
    const addButton = button('Add', 'Add rule', add, 'cj-button cj-primary');
    // As the person types, the server's sentences for the rule (the same check as Add), once both
    // ports and source hold something; Add waits until they are fine. A newer keystroke wins.
    let asked = 0;
    let timer = 0;
    const check = (): void => {
      window.clearTimeout(timer);
      const mine = ++asked;
      if (!ports.value.trim() || !source.value.trim()) {
        error.textContent = '';
        addButton.disabled = false;
        return;
      }
      timer = window.setTimeout(async () => {
        let problems: string[];
        try {
          problems = await this.api.check(typed());
        } catch {
          return; // Add still asks the server, which then says what is wrong
        }
        if (mine === asked) {
          error.textContent = problems.join(' ');
          addButton.disabled = problems.length > 0;
        }
      }, CHECK_DELAY_MS);
    };
    for (const field of [ports, source, description]) {
      field.addEventListener('input', check);
    }
    protocol.addEventListener('change', check);
    return el('div', { className: 'cj-add' }, [
      el('div', { className: 'cj-subheading', text: 'Add a rule' }),
      ports,
      source,
      protocol,
      description,
      addButton,
      error
    ]);
  }

  /**
   * One REST call: on success `show` its payload; a refusal shows its sentence in `errorBox` (next to
   * the row it is about) or in the status line. Returns whether it succeeded.
   */
  private async run(
    call: () => Promise<IPayload>,
    show: (data: IPayload) => void,
    errorBox?: HTMLElement
  ): Promise<boolean> {
    const box = errorBox ?? this.status;
    const tell = (text: string): void => {
      box.textContent = text;
      showDetail(box);
    };
    tell('');
    this.status.textContent = '';
    this.status.classList.remove('cj-error');
    this.node.setAttribute('aria-busy', 'true');
    try {
      show(await call());
      return true;
    } catch (error) {
      tell(describeError(error));
      box.classList.add('cj-error');
      return false;
    } finally {
      this.node.removeAttribute('aria-busy');
    }
  }

  private showAction(call: () => Promise<IPayload>): Promise<boolean> {
    return this.run(call, data => {
      this._account = accountOf(data) || this._account;
      this.resultBox.replaceChildren(renderResult(data, true));
      this.showHeader();
    });
  }

  private async applyNow(): Promise<void> {
    await this.run(
      () => this.api.apply(),
      data => {
        this._account = accountOf(data) || this._account;
        this.resultBox.replaceChildren();
        this.showCloud(data);
        this.showHeader();
      }
    );
  }

  private async copyCell(): Promise<void> {
    await this.run(
      () => this.api.settings(),
      data => {
        Clipboard.copyToSystem(ingressCell(data));
        this.status.textContent = 'Copied a %%coiled_ingress cell with these settings.';
      }
    );
  }

  private showHeader(): void {
    if (this._settings) {
      this.headerBox.replaceChildren(renderHeader(this._settings, this._account));
    }
  }

  private showCloud(data: IPayload): void {
    this.cloudBox.replaceChildren(renderResult(data, true));
  }

  private showSettings(data: IPayload): void {
    this._settings = data;
    if (!this.clusterInput.value && data.cluster) {
      this.clusterInput.value = data.cluster;
    }
    this.showHeader();
    this.originLine.textContent = `Rules from: ${ingressOrigin(data)}`;
    this.toggle.checked = Boolean(data.use_scheduler_public_ip);
    this.toggleOrigin.textContent = `Now ${
      data.use_scheduler_public_ip ? 'public' : 'private'
    }, from ${toggleOrigin(data)}.`;
    if (data.ports) {
      this.kindSelect.value = data.ports.kind;
      this.portsLine.textContent = `Ports assumed: ${data.ports.summary}`;
    }
    // What the rules replace, what was not read, what changed since, and whether a client will
    // connect at all: said before anything is applied. Notes about a kernel's coiled.Cluster()
    // (client_notes) do not concern the server.
    this.settingsNotes.replaceChildren(
      ...(data.notes ?? []).map(note => el('li', { text: `note: ${note}` })),
      ...(data.warnings ?? []).map(warning =>
        el('li', { className: 'cj-warning', text: `warning: ${warning}` })
      )
    );
    const rows = data.rows ?? [];
    if (!rows.length) {
      this.rulesBox.replaceChildren(el('p', { className: 'cj-empty', text: '(no inbound rules)' }));
      return;
    }
    const [shown, columns] = compact(rows, COLUMNS);
    this.rulesBox.replaceChildren(
      el('div', { className: 'cj-scroll' }, [
        sortableTable(shown, columns, (row, tr) => this.decorate(shown, row, tr), [''])
      ])
    );
  }

  /**
   * The Edit and Remove controls of one row, and the row under it that holds the editor (opened by
   * Edit) and the server's sentence about this rule; that row shows only when it has something.
   */
  private decorate(rows: IRow[], row: IRow, tr: HTMLTableRowElement): HTMLTableRowElement {
    const rule = fieldsOf(row);
    const label = `${rule.protocol} ${rule.ports} from ${rule.source}`;
    const editor = el('div', { className: 'cj-editor' });
    const error = el('p', {
      className: 'cj-error',
      attrs: { role: 'alert', 'aria-label': `Error for rule ${label}` }
    });
    const cell = el('td', {}, [editor, error]);
    cell.colSpan = tr.childElementCount + 1;
    const detail = el('tr', { className: 'cj-detail-row', attrs: { hidden: '' } }, [cell]);
    const remove = button(
      '\u2715',
      `Remove rule ${label}`,
      () =>
        void this.run(
          () => this.api.remove(rule),
          data => this.showSettings(data),
          error
        ),
      'cj-button cj-icon-button'
    );
    const edit = button(
      '\u270E',
      `Edit rule ${label}`,
      () => this.edit(rows, row, editor, error),
      'cj-button cj-icon-button'
    );
    tr.appendChild(el('td', { className: 'cj-row-actions' }, [edit, remove]));
    tr.dataset.rule = label;
    return detail;
  }

  /** Open the editor of one rule; Save replaces the whole rule list in one call (all or nothing). */
  private edit(rows: IRow[], row: IRow, editor: HTMLElement, error: HTMLElement): void {
    const rule = fieldsOf(row);
    const label = `${rule.protocol} ${rule.ports} from ${rule.source}`;
    const protocol = protocolSelect(`Protocol of rule ${label}`, rule.protocol);
    const ports = textField(`Ports of rule ${label}`, 'ports', rule.ports);
    const source = textField(`Source of rule ${label}`, 'source', rule.source);
    const description = textField(`Description of rule ${label}`, 'description', rule.description);
    const save = (): void => {
      const edited: IRuleFields = {
        ports: ports.value,
        source: source.value,
        protocol: protocol.value,
        description: description.value
      };
      const list = rows.map(other => (other === row ? edited : fieldsOf(other)));
      void this.run(
        () => this.api.setRules(list),
        data => this.showSettings(data),
        error
      );
    };
    const close = (): void => {
      editor.replaceChildren();
      error.textContent = '';
      showDetail(editor);
    };
    editor.replaceChildren(
      ports,
      source,
      protocol,
      description,
      button('Save', `Save rule ${label}`, save, 'cj-button cj-primary'),
      button('Cancel', `Cancel editing rule ${label}`, close)
    );
    showDetail(editor);
    ports.focus();
  }

  private readonly api: FirewallApi;
  private clusterInput!: HTMLInputElement;
  private toggle!: HTMLInputElement;
  private scope!: HTMLSelectElement;
  private kindSelect!: HTMLSelectElement;
  private readonly portsLine = el('p', { className: 'cj-help', attrs: { 'aria-label': 'Ports assumed' } });
  private readonly headerBox = el('div', { className: 'cj-header-box' });
  private readonly status = el('p', {
    className: 'cj-status',
    attrs: { role: 'status', 'aria-live': 'polite', 'aria-label': 'Status' }
  });
  private readonly originLine = el('p', { className: 'cj-line' });
  private readonly toggleOrigin = el('p', { className: 'cj-help' });
  private readonly rulesBox = el('div', { className: 'cj-rules' });
  private readonly settingsNotes = el('ul', {
    className: 'cj-notes',
    attrs: { 'aria-label': 'Settings notes' }
  });
  private readonly resultBox = el('div', {
    className: 'cj-result-box',
    attrs: { 'aria-label': 'Result' }
  });
  private readonly cloudBox = el('div', {
    className: 'cj-cloud',
    attrs: { 'aria-label': 'Rules in the cloud' }
  });
  private _settings: IPayload | null = null;
  private _account = '';
  private _loaded = false;
  private _generation = 0;
}
