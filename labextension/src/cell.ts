/**
 * The settings as a %%coiled_ingress cell: a whole `coiled:` snippet in Coiled's format, so running
 * the cell in a kernel sets the same rules and toggle in that kernel's session. Strings are written
 * as JSON (valid YAML flow scalars), so no description can break out of its quotes.
 */

import { IPayload, IRow } from './payload';

function ports(row: IRow): string {
  const text = String(row.ports ?? '');
  if (/^\d+$/.test(text)) {
    return `[${text}]`;
  }
  return `[${JSON.stringify(text)}]`;
}

function ruleLine(row: IRow): string {
  const parts = [`ports: ${ports(row)}`, `cidr: ${JSON.stringify(String(row.source ?? ''))}`];
  if (row.protocol && row.protocol !== 'tcp') {
    parts.push(`protocol: ${JSON.stringify(String(row.protocol))}`);
  }
  if (row.description) {
    parts.push(`description: ${JSON.stringify(String(row.description))}`);
  }
  return `      - {${parts.join(', ')}}`;
}

export function ingressCell(settings: IPayload): string {
  const header = settings.cluster
    ? `%%coiled_ingress --cluster ${settings.cluster}`
    : '%%coiled_ingress';
  const rows = settings.rows ?? [];
  const lines = [
    header,
    'coiled:',
    `  use_scheduler_public_ip: ${settings.use_scheduler_public_ip ? 'true' : 'false'}`,
    '  backend-options:',
    rows.length ? '    ingress:' : '    ingress: []',
    ...rows.map(ruleLine)
  ];
  return lines.join('\n');
}
