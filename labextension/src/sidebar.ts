/**
 * The "Cluster firewall" sidebar: one cluster's effective settings with where they came from, rows to
 * add / edit / remove (the server's validation sentence shown next to the row), the public/private
 * toggle, and Plan / Apply / Refresh / Save / copy-as-cell. Every control has an accessible name.
 *
 * It holds no firewall logic: each action is one REST call to the server extension, which calls the
 * same core functions as the magics; what it shows is the payload the server returns.
 *
 * It starts nothing by itself: shown, it reads the settings (no cloud call); the cloud is read only
 * when the person asks (Refresh, Enter in the cluster field, Plan, Apply, Destroy). While it is
 * visible it asks the server, every few seconds and on window focus, how many applies and saves the
 * machine has seen (one file's size), and reads again when a kernel applied or saved. Typed rules
 * are drafts: they reach the session only when committed (Add, Enter, or Plan/Apply, which commit
 * what is written first), as written. Every operation disables the buttons and says what it does.
 */

import { Clipboard } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { ApiError, FirewallApi, IRuleFields } from './api';
import { button, el, textField } from './dom';
import { firewallIcon } from './icon';
import { IPayload, IRow, accountOf, columnsFor, ingressOrigin, toggleOrigin } from './payload';
import { renderHeader, renderResult, sortableTable } from './render';

export const SIDEBAR_ID = 'coiled-jupyter-firewall';

/** How long typing pauses before the new rule is checked by the server. */
const CHECK_DELAY_MS = 250;

/** How often a visible sidebar asks whether a kernel applied or saved (one cheap GET). */
const FOLLOW_MS = 2000;

/** Where the cluster the sidebar shows is remembered across reloads (this browser, this server). */
const CLUSTER_KEY = 'coiled-jupyter:sidebar:cluster';

function rememberedCluster(): string {
  try {
    return window.localStorage.getItem(CLUSTER_KEY) ?? '';
  } catch {
    return ''; // storage switched off: the default cluster
  }
}

function rememberCluster(name: string): void {
  try {
    if (name) {
      window.localStorage.setItem(CLUSTER_KEY, name);
    } else {
      window.localStorage.removeItem(CLUSTER_KEY);
    }
  } catch {
    // storage switched off: the cluster is forgotten on reload, nothing else changes
  }
}

/** A draft the person is writing; committing it returns whether it reached the session. */
type Commit = () => Promise<boolean>;

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
    this.clusterInput.value = rememberedCluster();
    window.addEventListener('focus', () => {
      if (this.isVisible) {
        void this.followChanges();
      }
    });
  }

  /** The current settings as a %%coiled_ingress cell (it sets them, it does not apply). */
  async cellText(): Promise<string> {
    const data = await this.api.settings();
    return data.copy_as_cell ?? '';
  }

  /** Read the settings and, as the person asked, the cloud's table again. */
  async refresh(): Promise<void> {
    rememberCluster(this.clusterInput.value.trim());
    const read = await this.run(
      'Reading the settings',
      () => this.api.settings(),
      data => this.showSettings(data)
    );
    if (read) {
      await this.describe();
    }
  }

  protected onAfterShow(): void {
    this.shown();
  }

  protected onAfterAttach(): void {
    if (this.isVisible) {
      this.shown();
    }
  }

  protected onAfterHide(): void {
    this.stopFollowing();
  }

  protected onBeforeDetach(): void {
    this.stopFollowing();
  }

  /** Shown: the settings (no cloud call) the first time, then follow what kernels apply and save. */
  private shown(): void {
    if (!this._settings && !this._busy) {
      void this.run(
        'Reading the settings',
        () => this.api.settings(),
        data => this.showSettings(data)
      );
    }
    if (!this._timer) {
      this._timer = window.setInterval(() => void this.followChanges(), FOLLOW_MS);
      void this.followChanges();
    }
  }

  private stopFollowing(): void {
    window.clearInterval(this._timer);
    this._timer = 0;
  }

  /**
   * Read again what a kernel (or another sidebar) applied, destroyed or saved: the settings, and
   * the cloud's table if the person had it read. Waits while an operation runs or a row's editor
   * is open (its draft would be lost); the next check catches up.
   */
  private async followChanges(): Promise<void> {
    if (this._busy || this._asking || this._editors.size) {
      return;
    }
    this._asking = true;
    let count: number;
    try {
      count = await this.api.changes();
    } catch {
      return; // the next check asks again
    } finally {
      this._asking = false;
    }
    const seen = this._changes;
    this._changes = count;
    if (seen === null || seen === count || this._busy) {
      return;
    }
    const read = await this.run(
      'A kernel applied or saved: reading the settings again',
      () => this.api.settings(),
      data => this.showSettings(data)
    );
    if (read && this._described) {
      await this.describe();
    }
  }

  private async describe(): Promise<void> {
    const described = await this.run(
      this.cloudWork('Reading the cloud'),
      () => this.api.describe(),
      data => {
        this._described = true;
        this.noteAccount(data);
        this.showCloud(data);
      }
    );
    // Describing read the account defaults again; the settings (no cloud call) show them as last
    // read, so they are asked once more to show what the cloud holds now.
    if (described) {
      await this.run(
        'Reading the settings',
        () => this.api.settings(),
        data => this.showSettings(data)
      );
    }
  }

  /** What a cloud operation is doing, and that the local sandbox may start first. */
  private cloudWork(doing: string): string {
    return this._settings?.backend === 'sandbox'
      ? `${doing} (the local sandbox starts first if it is not running)`
      : doing;
  }

  private build(): void {
    this.clusterInput = textField('Cluster name', 'default cluster');
    this.clusterInput.addEventListener('keydown', event => {
      if (event.key === 'Enter') {
        this._described = false;
        void this.refresh();
      }
    });
    this.toggle = el('input', {
      attrs: { type: 'checkbox', 'aria-label': 'Public scheduler IP', title: 'Public scheduler IP' }
    });
    this.toggle.addEventListener('change', () => {
      const choice = this.toggle.checked ? 'public' : 'private';
      void this.run(
        'Setting the scheduler IP',
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
        'Setting the kind of cluster',
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
      button('Plan', 'Plan', () => void this.planNow()),
      button('Apply', 'Apply', () => void this.applyNow(), 'cj-button cj-primary'),
      button('Refresh', 'Refresh', () => void this.refresh()),
      button('Rehearse', 'Rehearse with packets', () =>
        void this.run(
          this.cloudWork('Rehearsing with packets'),
          () => this.api.rehearse(),
          data => this.showResult(data)
        )
      ),
      button('Reset', 'Reset session edits', () =>
        void this.run(
          'Resetting the session',
          () => this.api.reset(),
          data => this.showSettings(data)
        )
      ),
      button('Copy cell', 'Copy as %%coiled_ingress cell', () => void this.copyCell()),
      button(
        'Destroy\u2026',
        "Destroy the cluster's group",
        () => void this.confirmDestroy(),
        'cj-button cj-danger'
      )
    ]);
    const saveRow = el('div', { className: 'cj-actions' }, [
      this.scope,
      button('Save', 'Save', () =>
        void this.run(
          this.scope.value === 'account' ? this.cloudWork('Saving') : 'Saving',
          () => this.api.save(this.scope.value as 'user' | 'account'),
          data => this.showResult(data)
        )
      )
    ]);

    this.node.append(
      el('h2', { className: 'cj-heading', text: 'Cluster firewall' }),
      el('label', { className: 'cj-field' }, [
        el('span', { text: 'Cluster ' }),
        this.clusterInput
      ]),
      this.clustersBox,
      this.headerBox,
      this.progress,
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
    this.cloudBox.replaceChildren(this.notRead());
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
    const empty = (): boolean => ![ports, source, description].some(field => field.value.trim());
    // Committed as written: the fields are read when the person commits, never while typing.
    const add: Commit = () =>
      this.run(
        'Adding the rule',
        () => this.api.add(typed()),
        data => {
          ports.value = source.value = description.value = '';
          check();
          this.showSettings(data);
        },
        error
      );
    // Plan and Apply commit what is written first; an empty form holds no draft.
    this._drafts.add(() => (empty() ? Promise.resolve(true) : add()));
    const addButton = button('Add', 'Add rule', () => void add(), 'cj-button cj-primary');
    // As the person types, the server's sentences for the rule (the same check as Add), once both
    // ports and source hold something; Add waits until they are fine. A newer keystroke wins.
    let asked = 0;
    let timer = 0;
    const block = (problems: string[]): void => {
      error.textContent = problems.join(' ');
      addButton.dataset.blocked = String(problems.length > 0);
      this.updateControls();
    };
    const check = (): void => {
      window.clearTimeout(timer);
      const mine = ++asked;
      if (!ports.value.trim() || !source.value.trim()) {
        block([]);
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
          block(problems);
        }
      }, CHECK_DELAY_MS);
    };
    for (const field of [ports, source, description]) {
      field.addEventListener('input', check);
      field.addEventListener('keydown', event => {
        if (event.key === 'Enter') {
          void add();
        }
      });
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
   * One REST call: while it runs, every button is disabled and the progress line says `doing`; on
   * success `show` its payload; a refusal shows the server's sentence in `errorBox` (next to the row
   * it is about) or in the status line. Returns whether it succeeded. Operations run one at a time,
   * in the order they were asked for (Enter in a field is not stopped by disabled buttons).
   */
  private async run(
    doing: string,
    call: () => Promise<IPayload>,
    show: (data: IPayload) => void,
    errorBox?: HTMLElement
  ): Promise<boolean> {
    const previous = this._running;
    let finished = (): void => undefined;
    this._running = new Promise<void>(resolve => (finished = resolve));
    await previous;
    try {
      return await this.runNow(doing, call, show, errorBox);
    } finally {
      finished();
    }
  }

  private async runNow(
    doing: string,
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
    this.busy(`${doing}\u2026`);
    try {
      show(await call());
      return true;
    } catch (error) {
      tell(describeError(error));
      box.classList.add('cj-error');
      return false;
    } finally {
      this.busy('');
    }
  }

  /** Show that an operation runs (`doing`), or that none does (''). */
  private busy(doing: string): void {
    this._busy = !!doing;
    this.progressText.textContent = doing;
    this.progress.hidden = !doing;
    if (doing) {
      this.node.setAttribute('aria-busy', 'true');
    } else {
      this.node.removeAttribute('aria-busy');
    }
    this.updateControls();
  }

  /** Buttons are disabled while an operation runs, and Add while the new rule is not valid. */
  private updateControls(): void {
    const buttons = this.node.querySelectorAll<HTMLButtonElement>('button.cj-button');
    for (const node of Array.from(buttons)) {
      node.disabled = this._busy || node.dataset.blocked === 'true';
    }
    this.toggle.disabled = this.scope.disabled = this.kindSelect.disabled = this._busy;
  }

  /** Commit every draft (the new rule, open editors) before Plan or Apply; false if one is refused. */
  private async commitDrafts(what: string): Promise<boolean> {
    for (const commit of [...this._drafts, ...this._editors.values()]) {
      if (!(await commit())) {
        if (!this.status.textContent) {
          this.status.textContent =
            `Nothing was ${what}: a rule being written is not valid (its sentence is next ` +
            'to it); fix it or clear it first.';
          this.status.classList.add('cj-error');
        }
        return false;
      }
    }
    return true;
  }

  private async planNow(): Promise<void> {
    if (await this.commitDrafts('planned')) {
      await this.run(this.cloudWork('Planning'), () => this.api.plan(), data =>
        this.showResult(data)
      );
    }
  }

  private async applyNow(): Promise<void> {
    if (!(await this.commitDrafts('applied'))) {
      return;
    }
    await this.run(this.cloudWork('Applying'), () => this.api.apply(), data => {
      // The applied table shows once: in "In the cloud".
      this._described = true;
      this.noteAccount(data);
      this.resultBox.replaceChildren();
      this.showCloud(data);
    });
  }

  /** Destroy asks first: it reads the group and shows what goes with it, as a plan does. */
  private async confirmDestroy(): Promise<void> {
    const doing = this.cloudWork('Reading the group to destroy');
    await this.run(doing, () => this.api.describe(), data => {
      this._described = true;
      this.noteAccount(data);
      this.showCloud(data);
      this.resultBox.replaceChildren(this.destroyPlan(data));
    });
  }

  private destroyPlan(data: IPayload): HTMLElement {
    const cluster = data.cluster ?? '';
    if (!data.group_id) {
      return el('p', {
        className: 'cj-line',
        text: `Cluster ${cluster} has no security group: nothing to destroy.`
      });
    }
    const rows = (data.rows ?? []).map(row => ({ ...row, action: 'remove' }));
    const count = `${rows.length} rule${rows.length === 1 ? '' : 's'}`;
    const cancel = (): void => this.resultBox.replaceChildren();
    const destroy = (): void =>
      void this.run(this.cloudWork('Destroying'), () => this.api.destroy(), result => {
        this.resultBox.replaceChildren();
        this.showCloud(result);
      });
    const attrs = { role: 'group', 'aria-label': 'Destroy plan' };
    return el('div', { className: 'cj-confirm', attrs }, [
      el('div', { className: 'cj-title', text: 'Destroy plan' }),
      el('p', {
        className: 'cj-line',
        text: `Delete group ${data.group_id} of cluster ${cluster}, and the ${count} it holds:`
      }),
      rows.length
        ? el('div', { className: 'cj-scroll' }, [sortableTable(rows, columnsFor('plan', rows))])
        : null,
      el('p', {
        className: 'cj-help',
        text: 'AWS refuses while an instance still uses the group. Nothing changes until you confirm.'
      }),
      el('div', { className: 'cj-actions' }, [
        button('Delete group', `Delete group ${data.group_id}`, destroy, 'cj-button cj-danger'),
        button('Cancel', 'Cancel destroy', cancel)
      ])
    ]);
  }

  private async copyCell(): Promise<void> {
    await this.run(
      'Reading the settings',
      () => this.api.settings(),
      data => {
        this.showSettings(data);
        Clipboard.copyToSystem(data.copy_as_cell ?? '');
        this.status.textContent =
          'Copied a %%coiled_ingress cell with these settings (it sets them; it does not apply).';
      }
    );
  }

  private noteAccount(data: IPayload): void {
    this._account = accountOf(data) || this._account;
    this.showHeader();
  }

  private showHeader(): void {
    if (this._settings) {
      this.headerBox.replaceChildren(renderHeader(this._settings, this._account));
    }
  }

  private showResult(data: IPayload): void {
    this.noteAccount(data);
    this.resultBox.replaceChildren(renderResult(data, true));
  }

  private showCloud(data: IPayload): void {
    this.cloudBox.replaceChildren(renderResult(data, true));
  }

  /** The clusters with session settings in this server, each a button that shows its settings. */
  private showClusters(data: IPayload): void {
    const names = data.session_clusters ?? [];
    this.clustersBox.replaceChildren(
      ...(names.length ? [el('span', { className: 'cj-help', text: 'Session settings for ' })] : []),
      ...names.map(name => {
        const show = (): void => void this.switchTo(name);
        const chip = button(name, `Show cluster ${name}`, show, 'cj-button cj-chip');
        chip.classList.toggle('cj-current', name === data.cluster);
        return chip;
      })
    );
    this.updateControls();
  }

  /** Show another cluster's settings (no cloud call; Refresh reads its group). */
  private async switchTo(name: string): Promise<void> {
    this.clusterInput.value = name;
    rememberCluster(name);
    this._described = false;
    this.resultBox.replaceChildren();
    this.cloudBox.replaceChildren(this.notRead());
    await this.run(
      'Reading the settings',
      () => this.api.settings(),
      data => this.showSettings(data)
    );
  }

  private notRead(): HTMLElement {
    return el('p', {
      className: 'cj-empty',
      text: "Not read yet: Refresh reads this cluster's group from the cloud."
    });
  }

  private showSettings(data: IPayload): void {
    if (this._settings?.cluster !== data.cluster) {
      this._account = '';
    }
    this.showClusters(data);
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
    this._editors.clear();
    const rows = data.rows ?? [];
    if (!rows.length) {
      this.rulesBox.replaceChildren(el('p', { className: 'cj-empty', text: '(no inbound rules)' }));
      return;
    }
    const table = sortableTable(rows, columnsFor('settings'), (row, tr) =>
      this.decorate(rows, row, tr)
    );
    // The row controls come first, so a long description that scrolls never hides them.
    table.tHead?.rows[0]?.prepend(el('th', { attrs: { scope: 'col', 'aria-label': 'Edit' } }));
    this.rulesBox.replaceChildren(el('div', { className: 'cj-scroll' }, [table]));
    this.updateControls();
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
          'Removing the rule',
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
    tr.prepend(el('td', { className: 'cj-row-actions' }, [edit, remove]));
    tr.dataset.rule = label;
    return detail;
  }

  /** Open the editor of one rule; Save (or Enter) replaces the whole rule list in one call. */
  private edit(rows: IRow[], row: IRow, editor: HTMLElement, error: HTMLElement): void {
    const rule = fieldsOf(row);
    const label = `${rule.protocol} ${rule.ports} from ${rule.source}`;
    const protocol = protocolSelect(`Protocol of rule ${label}`, rule.protocol);
    const ports = textField(`Ports of rule ${label}`, 'ports', rule.ports);
    const source = textField(`Source of rule ${label}`, 'source', rule.source);
    const description = textField(`Description of rule ${label}`, 'description', rule.description);
    const save: Commit = () => {
      const edited: IRuleFields = {
        ports: ports.value,
        source: source.value,
        protocol: protocol.value,
        description: description.value
      };
      const list = rows.map(other => (other === row ? edited : fieldsOf(other)));
      return this.run(
        'Saving the rule',
        () => this.api.setRules(list),
        data => this.showSettings(data),
        error
      );
    };
    const close = (): void => {
      this._editors.delete(editor);
      editor.replaceChildren();
      error.textContent = '';
      showDetail(editor);
    };
    for (const field of [ports, source, description]) {
      field.addEventListener('keydown', event => {
        if (event.key === 'Enter') {
          void save();
        }
      });
    }
    editor.replaceChildren(
      ports,
      source,
      protocol,
      description,
      button('Save', `Save rule ${label}`, () => void save(), 'cj-button cj-primary'),
      button('Cancel', `Cancel editing rule ${label}`, close)
    );
    this._editors.set(editor, save);
    showDetail(editor);
    this.updateControls();
    ports.focus();
  }

  private readonly api: FirewallApi;
  private clusterInput!: HTMLInputElement;
  private toggle!: HTMLInputElement;
  private scope!: HTMLSelectElement;
  private kindSelect!: HTMLSelectElement;
  private readonly portsLine = el('p', { className: 'cj-help', attrs: { 'aria-label': 'Ports assumed' } });
  private readonly headerBox = el('div', { className: 'cj-header-box' });
  private readonly clustersBox = el('div', {
    className: 'cj-clusters',
    attrs: { role: 'group', 'aria-label': 'Clusters with session settings' }
  });
  private readonly progressText = el('span', { className: 'cj-progress-text' });
  private readonly progress = el(
    'div',
    {
      className: 'cj-progress',
      attrs: { role: 'progressbar', 'aria-label': 'Progress', hidden: '' }
    },
    [el('span', { className: 'cj-spinner', attrs: { 'aria-hidden': 'true' } }), this.progressText]
  );
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
  /** The new rule's commit (Plan and Apply commit it first). */
  private readonly _drafts = new Set<Commit>();
  /** The open row editors and their commits. */
  private readonly _editors = new Map<HTMLElement, Commit>();
  private _settings: IPayload | null = null;
  private _account = '';
  private _busy = false;
  /** The operation running now (the next one waits for it). */
  private _running: Promise<void> = Promise.resolve();
  /** Whether the cloud was read for this cluster (a change is then read from the cloud again). */
  private _described = false;
  private _asking = false;
  private _changes: number | null = null;
  private _timer = 0;
}
