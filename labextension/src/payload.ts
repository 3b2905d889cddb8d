/**
 * The JSON payload every coiled_jupyter result carries under MIME_TYPE (see coiled_jupyter/display.py).
 *
 * The types are deliberately loose: the payload comes from the Python core, so every field is read
 * defensively and rendered as text, never as markup.
 */

export const MIME_TYPE = 'application/vnd.coiled-jupyter.rules+json';

export interface IRow {
  protocol?: string;
  ports?: string;
  source?: string;
  description?: string;
  origin?: string;
  action?: string;
  previous_description?: string;
  [key: string]: unknown;
}

export interface IPortReach {
  name: string;
  port: number;
  verdict: string;
  reason: string;
}

export interface IReachability {
  scheduler?: IPortReach;
  dashboard?: IPortReach;
}

export interface ILayer {
  layer: string;
  sets: string[];
  /** False for a layer that was not read (the account layer in settings work). */
  read?: boolean;
  /** How the layer is known: "read at 03:41:07 UTC", "not read: ...". */
  note?: string;
}

/** The kind of cluster and the ports a result assumed (coiled_jupyter/ports.py). */
export interface IPorts {
  kind: string;
  kind_origin?: string;
  scheduler_port?: number;
  dashboard_port?: number;
  dashboard_https?: boolean;
  summary: string;
}

export interface IPayload {
  version?: number;
  kind: string;
  backend?: string;
  backend_label?: string;
  /** 'local sandbox: not AWS' for the sandbox, '' for AWS: shown as a pill in every view. */
  backend_marker?: string;
  region?: string;
  cluster?: string;
  vpc_id?: string | null;
  account?: string | null;
  account_id?: string | null;
  group_id?: string | null;
  summary?: string;
  rows?: IRow[];
  notes?: string[];
  /** Notes about a coiled.Cluster() created in the kernel that made the payload. */
  client_notes?: string[];
  warnings?: string[];
  ingress_origin?: string;
  ingress_from?: string;
  use_scheduler_public_ip?: boolean;
  use_scheduler_public_ip_origin?: string;
  use_scheduler_public_ip_from?: string;
  layers?: ILayer[];
  reachability?: IReachability | null;
  origin?: string;
  declared_in?: string;
  plan?: IPayload;
  /** The %%coiled_ingress cell that sets these settings (made by coiled_jupyter/cell.py). */
  copy_as_cell?: string;
  /** The clusters that have session settings in the process that made the payload. */
  session_clusters?: string[];
  deleted?: boolean;
  ports?: IPorts | null;
  /** The settings view's one line: can this notebook reach the scheduler and the dashboard. */
  verdict?: string;
  /** Magics that fix what the warnings and notes say, each working when pasted. */
  commands?: ICommand[];
  /** The settings view's layers, notes and reasons, shown collapsed unless `verbose`. */
  details?: string[];
  verbose?: boolean;
  /** An export's text (Terraform, CSV, ...), shown as it is, to copy. */
  body?: string;
}

export interface ICommand {
  command: string;
  does: string;
}

/** The AWS account the result describes ('' when the call did not need to know it). */
export function accountOf(data: IPayload): string {
  return data.account_id || data.account || '';
}

/** Where the settings' rule list came from (the key was renamed once; read both spellings). */
export function ingressOrigin(data: IPayload): string {
  return data.ingress_origin ?? data.ingress_from ?? '';
}

/** Where use_scheduler_public_ip came from. */
export function toggleOrigin(data: IPayload): string {
  return data.use_scheduler_public_ip_origin ?? data.use_scheduler_public_ip_from ?? '';
}

/** Where a plan's rules were declared. */
export function planOrigin(data: IPayload): string {
  return data.origin ?? data.declared_in ?? '';
}

export const TITLES: { [kind: string]: string } = {
  rules: 'Firewall rules',
  plan: 'Firewall plan',
  apply: 'Firewall applied',
  settings: 'Firewall settings',
  destroy: 'Firewall destroyed',
  scheduler: 'Scheduler address',
  save: 'Firewall settings saved',
  ports: 'Ports',
  history: 'Firewall history',
  export: 'Firewall export',
  rehearsal: 'Firewall rehearsal',
  guardrails: 'Team guardrails'
};

export type Column = [key: string, title: string];

const RULE_COLUMNS: Column[] = [
  ['protocol', 'Protocol'],
  ['ports', 'Port'],
  ['source', 'Source'],
  ['description', 'Description']
];

/** A rehearsal's: per source and port, the verdict predicted beside the one measured. */
const REHEARSAL_COLUMNS: Column[] = [
  ['source', 'Source'],
  ['address', 'Address'],
  ['port', 'Port'],
  ['predicted', 'Predicted'],
  ['measured', 'Measured'],
  ['time', 'Time'],
  ['detail', 'What happened']
];

/** A plan's columns shown only when some row has a value: an update's old description, and who
 * wrote a rule that is removed (as in coiled_jupyter/display.py). */
const OPTIONAL_PLAN_COLUMNS: Column[] = [
  ['previous_description', 'Was'],
  ['origin', 'Origin']
];

/** The table's columns per kind of result and its rows, as in the text and HTML twins. */
export function columnsFor(kind: string, rows: IRow[] = []): Column[] {
  if (kind === 'plan') {
    const optional = OPTIONAL_PLAN_COLUMNS.filter(([key]) => rows.some(row => row[key]));
    return [['action', 'Action'], ...RULE_COLUMNS, ...optional];
  }
  if (kind === 'ports') {
    return [
      ['ports', 'Port'],
      ['use', 'Used by'],
      ['needed', 'Needed'],
      ['admitted', 'Admitted'],
      ['from', 'From']
    ];
  }
  if (kind === 'settings' || kind === 'save') {
    return RULE_COLUMNS;
  }
  if (kind === 'rehearsal') {
    return REHEARSAL_COLUMNS;
  }
  if (kind === 'guardrails') {
    return [
      ['guardrail', 'Guardrail'],
      ['rule', 'Rule'],
      ['set_by', 'Set by'],
      ['set_at', 'Set at']
    ];
  }
  if (kind === 'history') {
    return [
      ['at', 'When'],
      ['changes', 'Changed'],
      ['before', 'Before']
    ];
  }
  return [...RULE_COLUMNS, ['origin', 'Origin']];
}
