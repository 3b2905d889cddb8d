import { LabIcon } from '@jupyterlab/ui-components';

/** A brick wall: the firewall. Filled through jp-icon3, so it follows the theme. */
const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <rect x="2" y="3" width="9" height="5"/><rect x="13" y="3" width="9" height="5"/>
    <rect x="2" y="10" width="4" height="5"/><rect x="8" y="10" width="8" height="5"/>
    <rect x="18" y="10" width="4" height="5"/>
    <rect x="2" y="17" width="9" height="5"/><rect x="13" y="17" width="9" height="5"/>
  </g>
</svg>`;

export const firewallIcon = new LabIcon({ name: 'coiled-jupyter:firewall', svgstr: svg });
