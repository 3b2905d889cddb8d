/**
 * Small DOM helpers. Text from a payload or a server reply goes in only through textContent, so a rule
 * description holding markup or script (descriptions come from the cloud) shows as text and never runs.
 */

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  options: { className?: string; text?: string; attrs?: { [name: string]: string } } = {},
  children: (Node | null)[] = []
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (options.className) {
    node.className = options.className;
  }
  if (options.text !== undefined) {
    node.textContent = options.text;
  }
  for (const [name, value] of Object.entries(options.attrs ?? {})) {
    node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child) {
      node.appendChild(child);
    }
  }
  return node;
}

/** A button with a visible label and an accessible name (aria-label and title). */
export function button(
  label: string,
  name: string,
  onClick: () => void,
  className = 'cj-button'
): HTMLButtonElement {
  const node = el('button', {
    className,
    text: label,
    attrs: { type: 'button', 'aria-label': name, title: name }
  });
  node.addEventListener('click', onClick);
  return node;
}

/** A text field with an accessible name and a placeholder. */
export function textField(name: string, placeholder: string, value = ''): HTMLInputElement {
  const node = el('input', {
    className: 'cj-input',
    attrs: { type: 'text', 'aria-label': name, title: name, placeholder }
  });
  node.value = value;
  return node;
}
