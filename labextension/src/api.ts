/**
 * The REST client of the server extension (/coiled-jupyter/api/...). ServerConnection.makeRequest
 * sends Jupyter's auth token and the XSRF header, so writes pass the server's XSRF check.
 */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { IPayload } from './payload';

/**
 * A refusal of the server: 400 carries the validation sentence, 502/503 the AWS error code, 409 a
 * conflict a person must resolve (a group someone else owns, another kernel's apply holding the lock).
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly problems: string[] = [],
    readonly code = ''
  ) {
    super(message);
  }
}

async function request<T = IPayload>(
  path: string,
  method: string,
  query: { [name: string]: string } = {},
  body?: unknown
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const search = new URLSearchParams(query).toString();
  const url =
    URLExt.join(settings.baseUrl, 'coiled-jupyter', 'api', path) + (search ? `?${search}` : '');
  const init: RequestInit = { method };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { 'Content-Type': 'application/json' };
  }
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ApiError(0, `the Jupyter server did not answer: ${String(error)}`);
  }
  const text = await response.text();
  let data: any = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = { message: text };
  }
  if (!response.ok) {
    const message =
      typeof data.message === 'string' && data.message
        ? data.message
        : `the server answered ${response.status} ${response.statusText}`;
    throw new ApiError(
      response.status,
      message,
      Array.isArray(data.problems) ? data.problems.map(String) : [],
      typeof data.code === 'string' ? data.code : ''
    );
  }
  return data as T;
}

/** The fields of one rule as the sidebar edits it. */
export interface IRuleFields {
  ports: string;
  source: string;
  protocol?: string;
  description?: string;
}

/** One cluster's calls; an empty cluster name means the server's default cluster. */
export class FirewallApi {
  constructor(private readonly cluster: () => string) {}

  private where(): { [name: string]: string } {
    const name = this.cluster().trim();
    return name ? { cluster: name } : {};
  }

  settings(): Promise<IPayload> {
    return request('settings', 'GET', this.where());
  }

  /** The sentences for one rule as typed (none when it is fine); changes nothing. */
  async check(rule: IRuleFields): Promise<string[]> {
    const query: { [name: string]: string } = { ports: rule.ports, source: rule.source };
    if (rule.protocol) {
      query.protocol = rule.protocol;
    }
    if (rule.description) {
      query.description = rule.description;
    }
    const answer = await request<{ problems?: unknown }>('check', 'GET', query);
    return Array.isArray(answer.problems) ? answer.problems.map(String) : [];
  }

  add(rule: IRuleFields): Promise<IPayload> {
    return request('settings', 'PATCH', {}, { op: 'add', ...rule, ...this.where() });
  }

  remove(rule: IRuleFields): Promise<IPayload> {
    const { ports, source, protocol } = rule;
    return request('settings', 'PATCH', {}, { op: 'remove', ports, source, protocol, ...this.where() });
  }

  schedulerIp(choice: 'public' | 'private'): Promise<IPayload> {
    return request('settings', 'PATCH', {}, { op: 'scheduler_ip', choice, ...this.where() });
  }

  /** Say which kind of cluster this is ('coiled' or 'dask'), for the server's session. */
  kind(kind: string): Promise<IPayload> {
    return request('settings', 'PATCH', {}, { op: 'kind', kind, ...this.where() });
  }

  reset(): Promise<IPayload> {
    return request('settings', 'PATCH', {}, { op: 'reset', ...this.where() });
  }

  /** Replace the rule list in one step (used to edit a row: all or nothing). */
  setRules(rules: IRuleFields[]): Promise<IPayload> {
    return request('settings', 'PUT', {}, { value: rules.map(toCoiled), ...this.where() });
  }

  plan(): Promise<IPayload> {
    return request('plan', 'POST', {}, this.where());
  }

  apply(): Promise<IPayload> {
    return request('apply', 'POST', {}, this.where());
  }

  describe(): Promise<IPayload> {
    return request('describe', 'GET', this.where());
  }

  /** The applied group enforced with packets (predicted beside measured per source and port). */
  rehearse(): Promise<IPayload> {
    return request('rehearse', 'POST', {}, this.where());
  }

  save(scope: 'user' | 'account'): Promise<IPayload> {
    return request('save', 'POST', {}, { scope, ...this.where() });
  }

  destroy(): Promise<IPayload> {
    return request('destroy', 'POST', {}, this.where());
  }

  /**
   * How many applies, destroys and saves this machine has seen (any kernel, any server): read often
   * while the sidebar is visible, it costs one file's size on the server, no cloud call.
   */
  async changes(): Promise<number> {
    const answer = await request<{ changes?: unknown }>('changes', 'GET');
    return typeof answer.changes === 'number' ? answer.changes : 0;
  }
}

/** A rule in Coiled's format ({ports, cidr, protocol?, description?}), as the core parses it. */
export function toCoiled(rule: IRuleFields): { [key: string]: unknown } {
  const out: { [key: string]: unknown } = { ports: [rule.ports], cidr: rule.source };
  if (rule.protocol && rule.protocol !== 'tcp') {
    out.protocol = rule.protocol;
  }
  if (rule.description) {
    out.description = rule.description;
  }
  return out;
}
