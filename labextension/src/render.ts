/**
 * One renderer for every result payload (settings, rules, plan, apply, save, destroy, scheduler): a
 * header naming the cluster, backend, region and account, the summary, a table sortable by column,
 * then notes and warnings. Used by the MIME renderer and by the sidebar for plan and apply results.
 */

import { el } from './dom';
import {
  Column,
  ILayer,
  IPayload,
  IRow,
  TITLES,
  accountOf,
  columnsFor,
  ingressOrigin,
  planOrigin,
  toggleOrigin
} from './payload';

/** The header line: cluster, backend (the sandbox marked as not AWS), region, account, VPC, group. */
export function renderHeader(data: IPayload, account?: string): HTMLElement {
  const header = el('div', { className: 'cj-header' });
  const item = (label: string, value: string, className = ''): void => {
    header.appendChild(
      el('span', { className: `cj-header-item ${className}`.trim() }, [
        el('span', { className: 'cj-header-label', text: `${label} ` }),
        el('span', { className: 'cj-header-value', text: value })
      ])
    );
  };
  item('cluster', data.cluster ?? '');
  if (data.backend_marker) {
    // The payload's one sandbox marker (the same words in every view), drawn as a pill; the label
    // naming the local server is its tooltip.
    item('backend', 'sandbox', 'cj-backend');
    header.appendChild(
      el('span', {
        className: 'cj-sandbox-badge',
        text: data.backend_marker,
        attrs: { title: data.backend_label ?? '' }
      })
    );
  } else {
    item('backend', data.backend_label || data.backend || '', 'cj-backend');
  }
  item('region', data.region ?? '');
  item('account', accountOf(data) || account || 'unknown');
  if (data.vpc_id) {
    item('vpc', data.vpc_id);
  }
  if (data.group_id) {
    item('group', data.group_id);
  }
  return header;
}

function linesBefore(data: IPayload): string[] {
  const lines: string[] = [];
  if (data.summary) {
    lines.push(data.summary);
  }
  if (data.ports?.summary) {
    lines.push(`ports assumed: ${data.ports.summary}`);
  }
  if (data.kind === 'plan' && planOrigin(data)) {
    lines.push(`declared in: ${planOrigin(data)}`);
  }
  if (data.kind === 'settings') {
    lines.push(
      `rules from: ${ingressOrigin(data)}; use_scheduler_public_ip: ` +
        `${String(data.use_scheduler_public_ip)} (from ${toggleOrigin(data)})`
    );
  }
  return lines;
}

/**
 * The lines under the table. A payload with `details` (the settings view) shows only its verdict
 * line here (warnings follow); the rest is in its collapsed details, as in display.py.
 */
function linesAfter(data: IPayload): string[] {
  if (Array.isArray(data.details)) {
    return data.verdict ? [data.verdict] : [];
  }
  const lines: string[] = [];
  const reach = data.reachability;
  if (reach) {
    for (const port of [reach.scheduler, reach.dashboard]) {
      if (port) {
        lines.push(
          `can this notebook reach the ${port.name} (port ${port.port})? ${port.verdict}: ` +
            port.reason
        );
      }
    }
  }
  for (const layer of data.layers ?? []) {
    lines.push(`layer ${layer.layer}: ${layerSays(layer)}`);
  }
  for (const note of [...(data.notes ?? []), ...(data.client_notes ?? [])]) {
    lines.push(`note: ${note}`);
  }
  return lines;
}

/**
 * What one layer sets, and how it is known ("sets nothing (read at 03:41:07 UTC)"); a layer that
 * was not read shows only its note, since it may set values where it is kept.
 */
function layerSays(layer: ILayer): string {
  const sets = layer.sets.join('; ') || (layer.read === false ? '' : 'sets nothing');
  if (!layer.note) {
    return sets;
  }
  return sets ? `${sets} (${layer.note})` : layer.note;
}

function cellText(row: IRow, key: string): string {
  const value = row[key];
  return value === undefined || value === null ? '' : String(value);
}

/** Ports sort by number ('all' first); everything else alphabetically. */
function compare(key: string, a: IRow, b: IRow): number {
  const left = cellText(a, key);
  const right = cellText(b, key);
  if (key === 'ports') {
    const number = (text: string): number => (text === 'all' ? -1 : parseInt(text, 10) || 0);
    return number(left) - number(right) || left.localeCompare(right);
  }
  return left.localeCompare(right);
}

/**
 * A table whose rows re-sort when a column header is clicked (again to reverse). `decorate` may add
 * cells to a row and return one more row to follow it (the sidebar's edit controls and error line).
 */
export function sortableTable(
  rows: IRow[],
  columns: Column[],
  decorate?: (row: IRow, tr: HTMLTableRowElement) => HTMLTableRowElement | void
): HTMLTableElement {
  const table = el('table', { className: 'cj-table' });
  const head = el('tr');
  const body = el('tbody');
  let sortKey = '';
  let ascending = true;
  const headers: HTMLTableCellElement[] = [];

  const fill = (): void => {
    const ordered = [...rows];
    if (sortKey) {
      ordered.sort((a, b) => (ascending ? 1 : -1) * compare(sortKey, a, b));
    }
    body.replaceChildren();
    for (const row of ordered) {
      const tr = el('tr');
      if (typeof row.action === 'string' && columns.some(([key]) => key === 'action')) {
        tr.classList.add(`cj-action-${row.action}`);
      }
      if (row.agree === false) {
        // A rehearsal row whose predicted and measured verdicts differ: one of them is wrong.
        tr.classList.add('cj-disagree');
      }
      for (const [key] of columns) {
        tr.appendChild(el('td', { text: cellText(row, key), attrs: { 'data-column': key } }));
      }
      const after = decorate?.(row, tr);
      body.appendChild(tr);
      if (after) {
        body.appendChild(after);
      }
    }
    columns.forEach(([key], index) => {
      const state = key !== sortKey ? 'none' : ascending ? 'ascending' : 'descending';
      headers[index].setAttribute('aria-sort', state);
    });
  };

  for (const [key, title] of columns) {
    const sorter = el('button', {
      className: 'cj-sort',
      text: title,
      attrs: { type: 'button', title: `Sort by ${title}`, 'aria-label': `Sort by ${title}` }
    });
    sorter.addEventListener('click', () => {
      ascending = key === sortKey ? !ascending : true;
      sortKey = key;
      fill();
    });
    const th = el('th', { attrs: { scope: 'col', 'data-column': key } }, [sorter]);
    headers.push(th);
    head.appendChild(th);
  }
  table.appendChild(el('thead', {}, [head]));
  table.appendChild(body);
  fill();
  return table;
}

/**
 * The whole result: title, header, summary lines, sortable table, notes and warnings. The sidebar,
 * whose own header already names the cluster, passes `narrow`: no title and no header.
 */
export function renderResult(data: IPayload, narrow = false): HTMLElement {
  const withHeader = !narrow;
  const root = el('div', {
    className: 'cj-rendered',
    attrs: { 'data-kind': String(data.kind), 'data-cluster': String(data.cluster ?? '') }
  });
  if (withHeader) {
    root.appendChild(
      el('div', { className: 'cj-title', text: TITLES[data.kind] ?? 'Firewall' })
    );
    root.appendChild(renderHeader(data));
  } else if (data.group_id) {
    root.appendChild(el('p', { className: 'cj-line cj-meta', text: `group ${data.group_id}` }));
  }
  for (const line of linesBefore(data)) {
    root.appendChild(el('p', { className: 'cj-line', text: line }));
  }
  const rows = Array.isArray(data.rows) ? data.rows : [];
  if (rows.length) {
    root.appendChild(
      el('div', { className: 'cj-scroll' }, [sortableTable(rows, columnsFor(data.kind, rows))])
    );
  } else if (['rules', 'settings', 'apply'].includes(data.kind)) {
    root.appendChild(el('p', { className: 'cj-empty', text: '(no inbound rules)' }));
  }
  if (data.body) {
    root.appendChild(el('pre', { className: 'cj-body', text: data.body }));
  }
  const after = linesAfter(data);
  const warnings = data.warnings ?? [];
  if (after.length || warnings.length) {
    const list = el('ul', { className: 'cj-notes' });
    for (const line of after) {
      list.appendChild(el('li', { text: line }));
    }
    for (const warning of warnings) {
      list.appendChild(el('li', { className: 'cj-warning', text: `warning: ${warning}` }));
    }
    root.appendChild(list);
  }
  const commands = data.commands ?? [];
  if (commands.length) {
    const list = el('ul', { className: 'cj-commands' });
    for (const item of commands) {
      list.appendChild(
        el('li', {}, [
          el('code', { text: item.command }),
          el('span', { text: ` ${item.does}` })
        ])
      );
    }
    root.appendChild(list);
  }
  if (Array.isArray(data.details) && data.details.length) {
    const details = el('details', { className: 'cj-details' }, [
      el('summary', { text: 'Why, layers and notes' }),
      el(
        'ul',
        { className: 'cj-notes' },
        data.details.map(line => el('li', { text: line }))
      )
    ]);
    details.open = Boolean(data.verbose);
    root.appendChild(details);
  }
  return root;
}
