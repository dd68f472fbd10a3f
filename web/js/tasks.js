// The task list: filters, search as you type, sorting, "load more" pages, inline actions.

import { api, ApiError, query } from './api.js';
import { byId, h, debounce, refocus, toast } from './dom.js';
import { browserZone, formatInstant, priorityLabel, wallToInstant } from './format.js';

const PAGE = 25;

/** The list of tasks on screen and the query that produced it. */
export class TaskList {
  /**
   * @param {object} actions
   * @param {(task: object) => void} actions.edit  open the editor on a task
   * @param {(message: string) => Promise<boolean>} actions.confirm  ask a yes/no question
   */
  constructor({ edit, confirm }) {
    this.edit = edit;
    this.confirm = confirm;
    this.list = byId('tasks');
    this.empty = byId('empty');
    this.more = byId('load-more');
    this.status = byId('list-status');
    this.filters = byId('filters');
    this.tagSelect = byId('f-tag');
    this.tasks = [];
    this.nextCursor = null;
    this.request = 0;
    this.loading = false;
    this.active = false;
    this.wanted = PAGE;
    this.reloadSoon = debounce(() => this.reload(), 150);

    const search = byId('search');
    const fresh = () => this.reload({ fresh: true });
    const searchLater = debounce(fresh, 300);
    search.addEventListener('input', searchLater);
    search.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') {
        event.preventDefault();
        searchLater.cancel();
        fresh();
      }
    });
    this.filters.addEventListener('change', (event) => {
      if (event.target !== search) fresh();
    });
    this.filters.addEventListener('submit', (event) => event.preventDefault());
    this.filters.addEventListener('reset', () => setTimeout(fresh));
    this.more.addEventListener('click', () => this.loadMore());
  }

  /** The API query of the filter controls. */
  params() {
    const form = new FormData(this.filters);
    const zone = browserZone();
    const q = String(form.get('q') || '').trim();
    const params = {
      status: form.get('status'),
      priority: form.get('priority'),
      tag: form.get('tag'),
      overdue: form.get('overdue') ? 'true' : '',
      q,
      sort: form.get('sort'),
      order: form.get('order'),
    };
    if (params.sort === 'relevance' && !q) params.sort = '';
    if (params.sort === 'created_at' && q) params.sort = '';
    if (!params.sort) delete params.sort;
    // Day filters are whole days in the browser's zone: from the start of "from" to the end of "until".
    const after = form.get('due_after');
    const before = form.get('due_before');
    if (after) params.due_after = wallToInstant(after, '00:00', zone).toISOString();
    if (before) {
      const next = new Date(`${before}T00:00:00Z`);
      next.setUTCDate(next.getUTCDate() + 1);
      params.due_before = wallToInstant(next.toISOString().slice(0, 10), '00:00', zone).toISOString();
    }
    return params;
  }

  /** Starts loading for the signed-in user (until `clear()`). */
  activate() {
    this.active = true;
  }

  /**
   * Loads the list again: one page for a new query (`fresh`), else as many tasks as the user
   * has paged to, so live updates keep "load more" progress.
   */
  async reload({ fresh = false } = {}) {
    if (!this.active) return;
    const params = this.params();
    if (fresh) {
      this.wanted = PAGE;
      // The old cursor belongs to the old query.
      this.nextCursor = null;
      this.more.hidden = true;
    }
    const limit = Math.min(200, Math.max(this.wanted, PAGE));
    const request = ++this.request;
    this.setBusy(true);
    try {
      const { data } = await api(`/api/v1/tasks${query({ ...params, limit })}`);
      if (request !== this.request) return;
      this.tasks = data.items;
      this.nextCursor = data.next_cursor;
      this.cursorQuery = JSON.stringify(params);
      this.render();
    } catch (error) {
      if (request !== this.request) return;
      this.showError(error);
    } finally {
      if (request === this.request) this.setBusy(false);
    }
    this.loadTags();
  }

  async loadMore() {
    if (!this.active || !this.nextCursor) return;
    // A live reload may overtake this request: it then loads this many instead.
    this.wanted = this.tasks.length + PAGE;
    const params = this.params();
    if (JSON.stringify(params) !== this.cursorQuery) {
      this.reload();
      return;
    }
    const request = ++this.request;
    this.setBusy(true);
    try {
      const { data } = await api(`/api/v1/tasks${query({ ...params, limit: PAGE, cursor: this.nextCursor })}`);
      if (request !== this.request) return;
      const seen = new Set(this.tasks.map((t) => t.id));
      this.tasks.push(...data.items.filter((t) => !seen.has(t.id)));
      this.nextCursor = data.next_cursor;
      this.render();
    } catch (error) {
      if (request === this.request) this.showError(error);
    } finally {
      if (request === this.request) this.setBusy(false);
    }
  }

  async loadTags() {
    if (!this.active) return;
    try {
      const { data } = await api('/api/v1/tags');
      const chosen = this.tagSelect.value;
      const names = data.items.map((t) => t.tag);
      this.tagSelect.replaceChildren(h('option', { value: '' }, 'Any'), ...names.map((t) => h('option', { value: t }, t)));
      if (chosen && !names.includes(chosen)) this.tagSelect.append(h('option', { value: chosen }, chosen));
      this.tagSelect.value = chosen;
      byId('tag-suggestions').replaceChildren(...names.map((t) => h('option', { value: t })));
    } catch (error) {
      console.debug('tags not loaded', error);
    }
  }

  setBusy(busy) {
    this.loading = busy;
    this.list.setAttribute('aria-busy', String(busy));
    document.body.dataset.listLoading = String(busy);
  }

  showError(error) {
    if (error instanceof ApiError && error.status === 401) return;
    const text = error instanceof ApiError ? error.message : 'Could not reach the server.';
    this.status.textContent = text;
    toast(text, { error: true });
  }

  /** Puts a task the server just returned into the list (or drops it when it no longer matches). */
  apply(task) {
    const index = this.tasks.findIndex((t) => t.id === task.id);
    if (index >= 0 && this.tasks[index].version > task.version) return;
    if (index >= 0) this.tasks[index] = task;
    this.render();
    // Filters and sort order are the server's to decide: confirm with a reload.
    this.reloadSoon();
  }

  render() {
    // Live updates re-render often: skip identical lists, and keep keyboard focus where it was.
    const snapshot = JSON.stringify(this.tasks);
    if (snapshot !== this.rendered) {
      this.rendered = snapshot;
      const focused = this.list.contains(document.activeElement) ? document.activeElement : null;
      this.list.replaceChildren(...this.tasks.map((task) => this.item(task)));
      if (focused) refocus(focused);
    }
    this.empty.hidden = this.tasks.length > 0;
    this.more.hidden = !this.nextCursor;
    const n = this.tasks.length;
    this.status.textContent = `${n}${this.nextCursor ? '+' : ''} task${n === 1 ? '' : 's'}`;
  }

  item(task) {
    const completed = task.status === 'completed';
    const checkbox = h('input', {
      type: 'checkbox',
      id: `done-${task.id}`,
      checked: completed,
      dataset: { focusKey: `done-${task.id}` },
      'aria-label': `${completed ? 'Reopen' : 'Complete'}: ${task.title}`,
    });
    checkbox.addEventListener('change', () => this.toggle(task, checkbox));
    const meta = [];
    if (task.due_at) {
      meta.push(h('span', { class: 'due' }, h('time', { datetime: task.due_at }, `Due ${formatInstant(task.due_at, task.time_zone)}`)));
    }
    if (task.overdue) meta.push(h('span', { class: 'badge overdue' }, 'Overdue'));
    if (task.priority !== 'none') meta.push(h('span', { class: `badge prio prio-${task.priority}` }, priorityLabel(task.priority)));
    if (task.recurrence) {
      meta.push(h('span', { class: 'badge repeat', title: task.recurrence.rule }, h('span', { 'aria-hidden': 'true' }, '↻ '), task.recurrence.description));
    }
    for (const tag of task.tags) meta.push(h('span', { class: 'badge tag' }, `#${tag}`));
    if (task.reminders?.length) {
      meta.push(h('span', { class: 'badge reminder' }, `🔔 ${task.reminders.length}`));
    }
    const actions = [
      h('button', { type: 'button', class: 'secondary small', dataset: { focusKey: `edit-${task.id}` }, 'aria-label': `Edit: ${task.title}`, onclick: () => this.edit(task) }, 'Edit'),
    ];
    if (task.recurrence && !completed) {
      actions.push(h('button', { type: 'button', class: 'secondary small', dataset: { focusKey: `skip-${task.id}` }, 'aria-label': `Skip this occurrence: ${task.title}`, onclick: () => this.skip(task) }, 'Skip'));
    }
    actions.push(h('button', { type: 'button', class: 'secondary small', dataset: { focusKey: `delete-${task.id}` }, 'aria-label': `Delete: ${task.title}`, onclick: () => this.remove(task) }, 'Delete'));
    const classes = ['task'];
    if (task.overdue) classes.push('overdue');
    if (completed) classes.push('completed');
    return h('li', {
      class: classes.join(' '),
      dataset: { id: task.id, version: task.version, priority: task.priority, status: task.status, due: task.due_at || '', overdue: task.overdue },
    },
    checkbox,
    h('div', { class: 'task-main' },
      h('span', { class: 'task-title' }, task.title),
      meta.length ? h('div', { class: 'task-meta' }, meta) : null,
      task.description ? h('p', { class: 'task-desc' }, task.description) : null),
    h('div', { class: 'task-actions' }, actions));
  }

  async toggle(task, checkbox) {
    checkbox.disabled = true;
    const action = checkbox.checked ? 'complete' : 'reopen';
    try {
      const { data } = await api(`/api/v1/tasks/${task.id}/${action}`, { method: 'POST' });
      if (action === 'complete' && task.recurrence) toast('Done. The next occurrence is on the list.');
      this.apply(data);
    } catch (error) {
      checkbox.checked = !checkbox.checked;
      checkbox.disabled = false;
      this.showError(error);
    }
  }

  async skip(task) {
    try {
      const { data } = await api(`/api/v1/tasks/${task.id}/skip`, { method: 'POST' });
      toast('Skipped. The next occurrence is on the list.');
      this.apply(data);
    } catch (error) {
      this.showError(error);
    }
  }

  async remove(task) {
    if (!(await this.confirm(`Delete “${task.title}”?`))) return;
    try {
      await api(`/api/v1/tasks/${task.id}`, { method: 'DELETE' });
      this.tasks = this.tasks.filter((t) => t.id !== task.id);
      this.render();
      toast('Task deleted.');
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        this.reloadSoon();
        return;
      }
      this.showError(error);
    }
  }

  /** A live update from another tab or device. */
  changed(change) {
    if (change.change === 'deleted') {
      const before = this.tasks.length;
      this.tasks = this.tasks.filter((t) => t.id !== change.task_id);
      if (this.tasks.length !== before) this.render();
    }
    this.reloadSoon();
  }

  /** Empties the list (sign-out). */
  clear() {
    this.active = false;
    this.wanted = PAGE;
    this.reloadSoon.cancel();
    this.request += 1;
    this.rendered = null;
    this.tasks = [];
    this.nextCursor = null;
    this.list.replaceChildren();
    this.status.textContent = '';
  }
}
