// Small DOM helpers. Text always goes in through textContent, never as HTML.

/** The element with this id (throws when the page lacks it: a bug, not a user error). */
export function byId(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`missing element #${id}`);
  return element;
}

/**
 * Creates an element: `h('button', { type: 'button', class: 'x', onclick: fn }, 'Text', child)`.
 * Attributes named `on…` become listeners; `dataset` is an object; false/null attributes are skipped.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (name === 'dataset') {
      Object.assign(element.dataset, value);
    } else if (name === 'class') {
      element.className = value;
    } else if (value === true) {
      element.setAttribute(name, '');
    } else {
      element.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** Shows `text` in an alert paragraph, or hides it when `text` is empty. */
export function setMessage(element, text) {
  element.textContent = text || '';
  element.hidden = !text;
}

/** Calls `fn` once `ms` have passed without another call. */
export function debounce(fn, ms) {
  let timer = null;
  const debounced = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  debounced.cancel = () => clearTimeout(timer);
  return debounced;
}

/** A short message at the bottom of the screen. */
export function toast(text, { error = false, ms = 4000 } = {}) {
  const box = byId('toasts');
  const item = h('div', { class: error ? 'toast error' : 'toast' }, text);
  box.append(item);
  setTimeout(() => item.remove(), ms);
}

/**
 * Gives focus back to `element`, or, when a re-render replaced it, to its successor: the element
 * with the same `data-focus-key`.
 */
export function refocus(element) {
  if (!(element instanceof HTMLElement)) return;
  if (element.isConnected) {
    element.focus();
    return;
  }
  const key = element.dataset.focusKey;
  const successor = key && document.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
  if (successor instanceof HTMLElement) successor.focus();
}

/** Opens a modal dialog, remembering what had focus so closing can give it back. */
export function openDialog(dialog) {
  const previous = document.activeElement;
  if (!dialog.open) dialog.showModal();
  dialog.addEventListener('close', () => refocus(previous), { once: true });
}
