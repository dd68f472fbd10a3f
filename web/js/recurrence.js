// The "Repeat" part of the task editor: presets, a custom rule builder, the rule in words and
// the next occurrences, both computed by the server (POST /api/v1/recurrence/preview).

import { api, ApiError } from './api.js';
import { byId, h, debounce, setMessage } from './dom.js';
import { formatLocal } from './format.js';

const WEEKDAYS = [['MO', 'Mon'], ['TU', 'Tue'], ['WE', 'Wed'], ['TH', 'Thu'], ['FR', 'Fri'], ['SA', 'Sat'], ['SU', 'Sun']];
const ORDINALS = { 1: 'first', 2: 'second', 3: 'third', 4: 'fourth', '-1': 'last' };
/** Normalised rules the presets stand for, so a saved task shows its preset again. */
const PRESET_RULES = {
  'FREQ=DAILY': 'daily',
  'FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR': 'weekdays',
  'FREQ=WEEKLY': 'weekly',
  'FREQ=WEEKLY;INTERVAL=2': 'biweekly',
  'FREQ=MONTHLY': 'monthly',
  'FREQ=YEARLY': 'yearly',
};

/** Splits "FREQ=WEEKLY;BYDAY=MO,WE" into {FREQ: "WEEKLY", BYDAY: "MO,WE"}. */
function ruleParts(rule) {
  const parts = {};
  for (const piece of rule.split(';')) {
    const [key, value] = piece.split('=');
    if (key && value !== undefined) parts[key.trim().toUpperCase()] = value.trim().toUpperCase();
  }
  return parts;
}

/** The repeat section of the editor. */
export class RecurrenceEditor {
  /** @param {() => ({date: string, time: string, zone: string, dueAt: string|null})} dueOf the editor's due fields */
  constructor(dueOf) {
    this.dueOf = dueOf;
    this.preset = byId('r-preset');
    this.custom = byId('r-custom');
    this.freq = byId('r-freq');
    this.interval = byId('r-interval');
    this.weekdays = byId('r-weekdays');
    this.monthly = byId('r-monthly');
    this.monthMode = byId('r-month-mode');
    this.ends = byId('r-ends');
    this.count = byId('r-count');
    this.until = byId('r-until');
    this.ruleText = byId('r-rule');
    this.anchor = byId('r-anchor');
    this.preview = byId('r-preview');
    this.words = byId('r-description');
    this.next = byId('r-next');
    this.error = byId('r-error');
    this.dirty = false;
    this.previewRequest = 0;
    this.refreshPreview = debounce(() => this.loadPreview(), 250);

    for (const [code, label] of WEEKDAYS) {
      const id = `r-day-${code}`;
      this.weekdays.append(h('label', { for: id }, h('input', { type: 'checkbox', id, value: code }), label));
    }
    const changed = () => {
      this.dirty = true;
      this.sync();
    };
    this.preset.addEventListener('change', changed);
    for (const control of [this.freq, this.interval, this.monthMode, this.ends, this.count, this.until, this.weekdays, this.anchor]) {
      control.addEventListener('change', changed);
      control.addEventListener('input', changed);
    }
    this.ruleText.addEventListener('input', () => {
      this.dirty = true;
      this.loadBuilder(this.ruleText.value);
      this.updateVisibility();
      this.refreshPreview();
    });
  }

  /** Fills the section from a task's `recurrence` (or clears it for a new task). */
  load(recurrence) {
    this.dirty = false;
    this.anchor.checked = recurrence?.anchor === 'completion';
    if (!recurrence) {
      this.preset.value = '';
      this.loadBuilder('FREQ=DAILY');
    } else {
      this.preset.value = PRESET_RULES[recurrence.rule] || 'custom';
      this.loadBuilder(recurrence.rule);
      this.ruleText.value = recurrence.rule;
    }
    this.updateVisibility();
    this.refreshMonthModes();
    this.showWords(recurrence?.description || '', []);
    this.refreshPreview();
  }

  /** Sets the builder's controls from an RRULE (what it cannot show stays in the rule text). */
  loadBuilder(rule) {
    const parts = ruleParts(rule);
    if (['DAILY', 'WEEKLY', 'MONTHLY', 'YEARLY'].includes(parts.FREQ)) this.freq.value = parts.FREQ;
    this.interval.value = parts.INTERVAL || '1';
    const days = (parts.BYDAY || '').split(',').filter(Boolean);
    for (const box of this.weekdays.querySelectorAll('input')) box.checked = days.includes(box.value);
    this.monthDay = parts.BYMONTHDAY || null;
    this.monthWeekday = parts.FREQ === 'MONTHLY' && days.length === 1 && /^-?\d/.test(days[0]) ? days[0] : null;
    if (parts.COUNT) {
      this.ends.value = 'count';
      this.count.value = parts.COUNT;
    } else if (parts.UNTIL) {
      this.ends.value = 'until';
      const u = parts.UNTIL;
      this.until.value = `${u.slice(0, 4)}-${u.slice(4, 6)}-${u.slice(6, 8)}`;
    } else {
      this.ends.value = 'never';
    }
  }

  /** Options of "monthly on …" for the current due date: the day of the month or its weekday. */
  refreshMonthModes() {
    const { date } = this.dueOf();
    const previous = this.monthMode.value;
    this.monthMode.replaceChildren();
    if (!date) {
      this.monthMode.append(h('option', { value: 'day' }, 'the due date’s day of the month'));
      return;
    }
    const [y, m, d] = date.split('-').map(Number);
    const weekdayIndex = (new Date(Date.UTC(y, m - 1, d)).getUTCDay() + 6) % 7;
    const [code, label] = WEEKDAYS[weekdayIndex];
    const nth = Math.ceil(d / 7);
    const lastDay = new Date(Date.UTC(y, m, 0)).getUTCDate();
    this.monthMode.append(h('option', { value: 'day' }, `day ${d}`));
    if (nth <= 4) this.monthMode.append(h('option', { value: `${nth}${code}` }, `the ${ORDINALS[nth]} ${label}`));
    if (d + 7 > lastDay) this.monthMode.append(h('option', { value: `-1${code}` }, `the last ${label}`));
    const wanted = this.monthWeekday || previous;
    if ([...this.monthMode.options].some((o) => o.value === wanted)) this.monthMode.value = wanted;
  }

  updateVisibility() {
    const preset = this.preset.value;
    const custom = preset === 'custom';
    this.custom.hidden = !custom;
    this.weekdays.hidden = !(custom && this.freq.value === 'WEEKLY');
    this.monthly.hidden = !(custom && this.freq.value === 'MONTHLY');
    byId('r-count-field').hidden = this.ends.value !== 'count';
    byId('r-until-field').hidden = this.ends.value !== 'until';
    byId('r-anchor-field').hidden = preset === '';
    if (preset === '') {
      this.preview.hidden = true;
      setMessage(this.error, '');
    }
  }

  /** The rule the builder's controls describe. */
  builtRule() {
    const parts = [`FREQ=${this.freq.value}`];
    const interval = Math.max(1, Number(this.interval.value) || 1);
    if (interval > 1) parts.push(`INTERVAL=${interval}`);
    if (this.freq.value === 'WEEKLY') {
      const days = [...this.weekdays.querySelectorAll('input:checked')].map((b) => b.value);
      if (days.length) parts.push(`BYDAY=${days.join(',')}`);
    }
    if (this.freq.value === 'MONTHLY' && this.monthMode.value && this.monthMode.value !== 'day') {
      parts.push(`BYDAY=${this.monthMode.value}`);
    }
    if (this.ends.value === 'count') {
      parts.push(`COUNT=${Math.max(1, Number(this.count.value) || 1)}`);
    } else if (this.ends.value === 'until' && this.until.value) {
      parts.push(`UNTIL=${this.until.value.replaceAll('-', '')}T235959Z`);
    }
    return parts.join(';');
  }

  /** Recomputes the rule text and the preview after a control changed. */
  sync() {
    this.refreshMonthModes();
    this.updateVisibility();
    if (this.preset.value === 'custom') this.ruleText.value = this.builtRule();
    this.refreshPreview();
  }

  /** The `recurrence` to send, or null for "does not repeat". */
  value() {
    const preset = this.preset.value;
    if (!preset) return null;
    const rule = preset === 'custom' ? this.ruleText.value.trim() || this.builtRule() : preset;
    const recurrence = { rule };
    if (this.anchor.checked) recurrence.anchor = 'completion';
    return recurrence;
  }

  /** Whether the user touched this section since it was loaded. */
  changed() {
    return this.dirty;
  }

  showWords(description, items, zone) {
    this.words.textContent = description;
    this.next.replaceChildren(...items.map((o) => h('li', { dataset: { due: o.due_at } }, formatLocal(o.local))));
    this.preview.hidden = !description && !items.length;
    this.previewZone = zone;
  }

  async loadPreview() {
    if (!byId('editor').open) return;
    const recurrence = this.value();
    if (!recurrence) return;
    const { dueAt, zone } = this.dueOf();
    if (!dueAt) {
      this.showWords('', []);
      setMessage(this.error, 'A repeating task needs a due date: its first occurrence is the task itself.');
      return;
    }
    const request = ++this.previewRequest;
    try {
      const { data } = await api('/api/v1/recurrence/preview', {
        method: 'POST',
        body: { recurrence, due_at: dueAt, time_zone: zone, limit: 5 },
      });
      if (request !== this.previewRequest) return;
      setMessage(this.error, '');
      this.showWords(data.description, data.items, data.time_zone);
    } catch (error) {
      if (request !== this.previewRequest) return;
      this.showWords('', []);
      if (error instanceof ApiError && error.status === 404) return; // server without previews
      setMessage(this.error, error.message);
    }
  }
}

