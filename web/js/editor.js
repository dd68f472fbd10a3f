// Creating and editing a task, including reminders and the conflict dialog.
//
// An edit sends only the fields the user changed, with `If-Match` set to the version that was
// opened. When someone else saved in between the server answers 412; the user then sees both
// versions and chooses: keep mine (send the same changes again on top of the new version) or
// take theirs (drop the edit). Nothing is overwritten silently.

import { api, ApiError, serverCapabilities } from './api.js';
import { byId, h, openDialog, setMessage, toast } from './dom.js';
import {
  allZones, browserZone, describeDuration, formatInstant, instantToWall, parseTags, priorityLabel, wallToInstant,
} from './format.js';
import { RecurrenceEditor } from './recurrence.js';

const MAX_REMINDERS = 10;

const FIELD_LABELS = {
  title: 'Title', description: 'Description', priority: 'Priority', tags: 'Tags', due_at: 'Due',
  time_zone: 'Time zone', recurrence: 'Repeat', reminders: 'Reminders', status: 'Status',
};

/** Milliseconds of an ISO 8601 duration like `P1W`, `P1DT2H`, `PT1H30M`, `PT0.5S` (NaN when not one). */
function durationMs(iso) {
  const match = /^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$/.exec(iso || '');
  if (!match) return NaN;
  const [w, d, hours, m, s] = match.slice(1).map((x) => Number(x || 0));
  return ((((w * 7 + d) * 24 + hours) * 60 + m) * 60 + s) * 1000;
}

/** A reminder's meaning, whatever the spelling (`P7D` = `P1W`, `…T19:00:00Z` = `…T19:00:00.000Z`). */
function reminderKey(spec) {
  if (spec.at) return `at:${Date.parse(spec.at)}`;
  return `before:${durationMs(spec.before_due)}`;
}

/** Whether two reminder plans are the same (in order, as the server keeps them). */
function samePlan(a, b) {
  return a.length === b.length && a.every((spec, i) => reminderKey(spec) === reminderKey(b[i]));
}

/** The task editor dialog. */
export class TaskEditor {
  /** @param {(task: object) => void} onSaved called with the task as the server stored it */
  constructor(onSaved) {
    this.onSaved = onSaved;
    this.dialog = byId('editor');
    this.form = byId('editor-form');
    this.title = byId('e-title');
    this.description = byId('e-description');
    this.priority = byId('e-priority');
    this.tags = byId('e-tags');
    this.dueDate = byId('e-due-date');
    this.dueTime = byId('e-due-time');
    this.zone = byId('e-zone');
    this.error = byId('editor-error');
    this.notice = byId('editor-notice');
    this.save = byId('editor-save');
    this.reminderList = byId('reminder-list');
    this.original = null;
    this.remindersSupported = false;

    const zones = allZones();
    const mine = browserZone();
    if (!zones.includes(mine)) zones.unshift(mine);
    this.zone.append(...zones.map((z) => h('option', { value: z }, z.replaceAll('_', ' '))));

    this.recurrence = new RecurrenceEditor(() => this.dueFields());
    for (const control of [this.dueDate, this.dueTime, this.zone]) {
      control.addEventListener('change', () => this.recurrence.sync());
    }
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
    byId('editor-cancel').addEventListener('click', () => this.dialog.close());
    for (const button of this.dialog.querySelectorAll('[data-remind]')) {
      button.addEventListener('click', () => this.addReminder({ before_due: button.dataset.remind }));
    }
    byId('add-reminder').addEventListener('click', () => this.addReminder({ before_due: 'PT30M' }));
    serverCapabilities().then((caps) => {
      this.remindersSupported = caps.reminders;
      byId('e-reminders').hidden = !caps.reminders;
    });
  }

  /** The due date fields as the recurrence preview needs them. */
  dueFields() {
    const date = this.dueDate.value;
    const zone = this.zone.value || browserZone();
    const time = this.dueTime.value || '09:00';
    return { date, time, zone, dueAt: date ? wallToInstant(date, time, zone).toISOString() : null };
  }

  /** Opens the dialog for a new task. */
  openNew() {
    this.original = null;
    byId('editor-title').textContent = 'New task';
    this.title.value = '';
    this.description.value = '';
    this.priority.value = 'none';
    this.tags.value = '';
    this.dueDate.value = '';
    this.dueTime.value = '';
    this.zone.value = browserZone();
    this.setReminders([]);
    this.recurrence.load(null);
    setMessage(this.error, '');
    setMessage(this.notice, '');
    openDialog(this.dialog);
    this.title.focus();
  }

  /** Opens the dialog on an existing task. */
  openEdit(task) {
    this.original = task;
    byId('editor-title').textContent = 'Edit task';
    this.fill(task);
    setMessage(this.error, '');
    setMessage(this.notice, '');
    openDialog(this.dialog);
    this.title.focus();
  }

  fill(task) {
    this.title.value = task.title;
    this.description.value = task.description || '';
    this.priority.value = task.priority;
    this.tags.value = task.tags.join(' ');
    this.zone.value = task.time_zone;
    if (task.due_at) {
      const wall = instantToWall(task.due_at, task.time_zone);
      this.dueDate.value = wall.date;
      this.dueTime.value = wall.time;
    } else {
      this.dueDate.value = '';
      this.dueTime.value = '';
    }
    this.setReminders(task.reminders || []);
    this.recurrence.load(task.recurrence);
  }

  /** Whether the dialog is editing the task with this id. */
  isEditing(id) {
    return this.dialog.open && this.original?.id === id;
  }

  /** Another tab or device changed the task being edited: tell the user before they save. */
  changedElsewhere(task) {
    if (!this.isEditing(task.id) || task.version === this.original.version) return;
    setMessage(this.notice, 'This task was just changed elsewhere. Saving will ask which version to keep.');
  }

  // Reminders -------------------------------------------------------------------------------

  setReminders(reminders) {
    this.reminderList.replaceChildren();
    for (const reminder of reminders) this.addReminder(reminder);
  }

  addReminder(reminder) {
    if (this.reminderList.children.length >= MAX_REMINDERS) {
      toast(`At most ${MAX_REMINDERS} reminders per task.`, { error: true });
      return;
    }
    const kind = h('select', {},
      h('option', { value: 'before' }, 'Before due'),
      h('option', { value: 'at' }, 'At a time'));
    const amount = h('input', { type: 'number', min: 1, max: 999, value: 1 });
    const unit = h('select', {},
      h('option', { value: 'M' }, 'minutes'), h('option', { value: 'H' }, 'hours'),
      h('option', { value: 'D' }, 'days'), h('option', { value: 'W' }, 'weeks'));
    const at = h('input', { type: 'datetime-local' });
    const remove = h('button', { type: 'button', class: 'secondary small' }, 'Remove');
    const row = h('li', { class: 'reminder' }, kind, amount, unit, at, remove);
    row.controls = { kind, amount, unit, at, remove };
    const update = () => {
      const before = kind.value === 'before';
      amount.hidden = !before;
      unit.hidden = !before;
      at.hidden = before;
    };
    kind.addEventListener('change', update);
    remove.addEventListener('click', () => {
      row.remove();
      this.renumberReminders();
    });
    if (reminder.at) {
      kind.value = 'at';
      const wall = instantToWall(reminder.at, this.zone.value || browserZone());
      at.value = `${wall.date}T${wall.time}`;
    } else {
      // The server writes offsets in its own form (P7D comes back as P1W, PT90M as PT1H30M):
      // show them in the largest unit that holds them exactly.
      const minutes = Math.round(durationMs(reminder.before_due || 'PT1H') / 60_000);
      const [n, u] = minutes > 0 && minutes % 10_080 === 0 ? [minutes / 10_080, 'W']
        : minutes > 0 && minutes % 1440 === 0 ? [minutes / 1440, 'D']
          : minutes > 0 && minutes % 60 === 0 ? [minutes / 60, 'H']
            : [minutes, 'M'];
      amount.value = n;
      unit.value = u;
      row.title = describeDuration(reminder.before_due);
    }
    // An entry the user did not touch goes back exactly as the server sent it (an instant
    // with seconds, which the minute-precision field would otherwise round).
    const initial = [kind.value, amount.value, unit.value, at.value].join('|');
    row.reminder = () => {
      if ([kind.value, amount.value, unit.value, at.value].join('|') === initial) {
        if (reminder.at) return { at: reminder.at };
        if (reminder.before_due) return { before_due: reminder.before_due };
      }
      if (kind.value === 'at') {
        if (!at.value) return null;
        const [date, time] = at.value.split('T');
        return { at: wallToInstant(date, time, this.zone.value || browserZone()).toISOString() };
      }
      const n2 = Math.max(0, Math.round(Number(amount.value) || 0));
      const iso = { M: `PT${n2}M`, H: `PT${n2}H`, D: `P${n2}D`, W: `P${n2 * 7}D` }[unit.value];
      return { before_due: iso };
    };
    update();
    this.reminderList.append(row);
    this.renumberReminders();
  }

  /** Labels the rows 1…n (again after one was removed). */
  renumberReminders() {
    [...this.reminderList.children].forEach((row, i) => {
      const n = i + 1;
      const { kind, amount, unit, at, remove } = row.controls;
      kind.setAttribute('aria-label', `Reminder ${n} kind`);
      amount.setAttribute('aria-label', `Reminder ${n} amount`);
      unit.setAttribute('aria-label', `Reminder ${n} unit`);
      at.setAttribute('aria-label', `Reminder ${n} time`);
      remove.setAttribute('aria-label', `Remove reminder ${n}`);
    });
  }

  reminders() {
    return [...this.reminderList.children].map((row) => row.reminder()).filter(Boolean);
  }

  // Saving ----------------------------------------------------------------------------------

  /** The form as a full task body (for creation). */
  formValues() {
    const values = {
      title: this.title.value.trim(),
      description: this.description.value,
      priority: this.priority.value,
      tags: parseTags(this.tags.value),
      time_zone: this.zone.value || browserZone(),
      due_at: null,
    };
    if (this.dueDate.value) {
      values.due_at = wallToInstant(this.dueDate.value, this.dueTime.value || '09:00', values.time_zone).toISOString();
    }
    return values;
  }

  /** Only what differs from the task as it was opened. */
  changes(task) {
    const values = this.formValues();
    const patch = {};
    if (values.title !== task.title) patch.title = values.title;
    if (values.description !== (task.description || '')) patch.description = values.description;
    if (values.priority !== task.priority) patch.priority = values.priority;
    if (values.tags.join(' ') !== task.tags.join(' ')) patch.tags = values.tags;
    if (values.time_zone !== task.time_zone) patch.time_zone = values.time_zone;
    const sameDue = values.due_at === null
      ? task.due_at === null
      : task.due_at !== null && Date.parse(values.due_at) === Date.parse(task.due_at);
    if (!sameDue) patch.due_at = values.due_at;
    if (this.recurrence.changed()) patch.recurrence = this.recurrence.value();
    const reminders = this.reminders();
    // Old servers refuse unknown fields: only send reminders where the server knows them.
    if ('reminders' in task || (this.remindersSupported && reminders.length)) {
      if (!samePlan(reminders, task.reminders || [])) patch.reminders = reminders;
    }
    return patch;
  }

  async submit() {
    setMessage(this.error, '');
    if (!this.title.value.trim()) {
      setMessage(this.error, 'Give the task a title.');
      this.title.focus();
      return;
    }
    this.save.disabled = true;
    try {
      if (this.original) {
        const patch = this.changes(this.original);
        if (Object.keys(patch).length === 0) {
          this.dialog.close();
          return;
        }
        await this.sendPatch(this.original, patch);
      } else {
        const body = this.formValues();
        if (body.due_at === null) delete body.due_at;
        const recurrence = this.recurrence.value();
        if (recurrence) body.recurrence = recurrence;
        const reminders = this.reminders();
        if (reminders.length) body.reminders = reminders;
        const { data } = await api('/api/v1/tasks', { method: 'POST', body });
        this.dialog.close();
        toast('Task created.');
        this.onSaved(data);
      }
    } catch (error) {
      this.showError(error);
    } finally {
      this.save.disabled = false;
    }
  }

  showError(error) {
    if (error instanceof ApiError && error.fieldErrors.some((e) => e.code === 'unknown_field' && e.field.startsWith('reminders'))) {
      setMessage(this.error, 'This server does not support reminders yet; remove them to save.');
      return;
    }
    setMessage(this.error, error instanceof ApiError ? error.message : 'Could not reach the server; check your connection and try again.');
  }

  async sendPatch(task, patch) {
    try {
      const { data } = await api(`/api/v1/tasks/${task.id}`, { method: 'PATCH', body: patch, ifMatch: task.version });
      this.dialog.close();
      toast('Task saved.');
      this.onSaved(data);
    } catch (error) {
      if (error instanceof ApiError && error.status === 412) {
        await this.resolveConflict(task, patch);
        return;
      }
      throw error;
    }
  }

  /** Shows both versions and applies the user's choice. */
  async resolveConflict(task, patch) {
    const { data: theirs } = await api(`/api/v1/tasks/${task.id}`);
    const dialog = byId('conflict');
    const rows = byId('conflict-rows');
    const show = (field, value) => {
      if (value === null || value === undefined || value === '') return '—';
      if (field === 'due_at') return formatInstant(value, patch.time_zone || theirs.time_zone);
      if (field === 'tags') return value.join(', ') || '—';
      if (field === 'priority') return priorityLabel(value);
      if (field === 'recurrence') return value.description || value.rule;
      if (field === 'reminders') return value.map((r) => (r.at ? formatInstant(r.at, theirs.time_zone) : describeDuration(r.before_due))).join(', ') || '—';
      return String(value);
    };
    const fields = new Set([...Object.keys(patch), 'title', 'description', 'priority', 'tags', 'due_at', 'status']);
    rows.replaceChildren(...[...fields]
      .filter((field) => field in patch || JSON.stringify(theirs[field]) !== JSON.stringify(task[field]))
      .map((field) => h('tr', { dataset: { field } },
        h('th', { scope: 'row' }, FIELD_LABELS[field] || field),
        h('td', {}, show(field, field in patch ? patch[field] : task[field])),
        h('td', {}, show(field, theirs[field])))));
    const choice = await new Promise((resolve) => {
      const mine = byId('conflict-mine');
      const take = byId('conflict-theirs');
      const done = (value) => {
        mine.removeEventListener('click', onMine);
        take.removeEventListener('click', onTheirs);
        dialog.removeEventListener('cancel', onCancel);
        dialog.close();
        resolve(value);
      };
      const onMine = () => done('mine');
      const onTheirs = () => done('theirs');
      const onCancel = (event) => {
        event.preventDefault();
        done(null);
      };
      mine.addEventListener('click', onMine);
      take.addEventListener('click', onTheirs);
      dialog.addEventListener('cancel', onCancel);
      openDialog(dialog);
      mine.focus();
    });
    if (choice === 'mine') {
      this.original = theirs;
      await this.sendPatch(theirs, patch);
    } else if (choice === 'theirs') {
      this.dialog.close();
      toast('Kept the saved version.');
      this.onSaved(theirs);
    } else {
      // Escape: back to the editor with the edit still in the form; saving asks again.
      setMessage(this.notice, 'Your changes are not saved yet: this task was changed elsewhere. Save to choose again.');
    }
  }
}

