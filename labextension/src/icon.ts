import { LabIcon } from '@jupyterlab/ui-components';

/** A brick wall: the firewall. Filled through jp-icon3, so it follows the theme. */
const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">
  <path class="jp-icon3" fill="#616161" d="M3 4h18v4H3zm0 6h8v4H3zm10 0h8v4h-8zM3 16h18v4H3z"/>
</svg>`;

export const firewallIcon = new LabIcon({ name: 'coiled-jupyter:firewall', svgstr: svg });
