// Form fields with a label, a hint and an error message next to the control.

import { h, uid } from './dom.js';

/**
 * A labelled field: `{row, control}`. The control is described by its hint and its error
 * message; `setError(control, text)` shows a message (and marks the control invalid).
 */
export function field({ label, control, hint = '', required = false }) {
  const id = control.id || uid('field');
  control.id = id;
  const hintId = `${id}-hint`;
  const errorId = `${id}-error`;
  control.setAttribute('aria-describedby', hint ? `${hintId} ${errorId}` : errorId);
  if (required) control.required = true;
  const row = h(
    'div',
    { class: 'field' },
    h('label', { for: id }, label, required ? h('span', { class: 'required' }, ' (required)') : null),
    control,
    hint ? h('p', { class: 'hint', id: hintId }, hint) : null,
    h('p', { class: 'field-error', id: errorId, hidden: true }),
  );
  return { row, control };
}

/** Show `text` as the error of `control` (an empty text clears it). */
export function setError(control, text) {
  const error = document.getElementById(`${control.id}-error`);
  if (text) control.setAttribute('aria-invalid', 'true');
  else control.removeAttribute('aria-invalid');
  if (error) {
    error.textContent = text ?? '';
    error.hidden = !text;
  }
}

/** Clear every field error inside `container`. */
export function clearErrors(container) {
  for (const control of container.querySelectorAll('[aria-invalid="true"]')) setError(control, '');
}

/**
 * Check the browser's constraints (required, min, max, step, pattern) of every control in
 * `container`, showing each problem next to its control. Returns the first invalid control.
 */
export function checkConstraints(container) {
  let first = null;
  for (const control of container.querySelectorAll('input, select, textarea')) {
    if (control.willValidate && !control.checkValidity()) {
      setError(control, control.validationMessage);
      first ??= control;
    }
  }
  return first;
}

/** A `<select>` of `choices` with an empty first option labelled `empty` (when given). */
export function choiceSelect(choices, empty) {
  return h(
    'select',
    {},
    empty !== undefined ? h('option', { value: '' }, empty) : null,
    choices.map((choice) => h('option', { value: choice }, choice)),
  );
}
