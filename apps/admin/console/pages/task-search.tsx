import { useEffect, useState } from 'preact/hooks';
import { query } from '../api';
import type { Route } from '../main';
import { DetailsSummary, ErrorLine, Pill, reveal, ShowMore, usePagedPoll, useRouteFilters, when } from '../ui';
import type { Task } from './tasks';

/** The task statuses the admin API filters by (`GET /v1/tasks?status=`). */
const STATUSES = ['active', 'completed', 'failed', 'expired', 'revoked'] as const;

const FILTERS = ['status', 'agent_id', 'orchestrator_id'] as const;

/**
 * Every task, ended ones included (`GET /v1/tasks`: by status, agent and orchestrator, newest
 * first), paged as the API pages it; each opens its timeline, credentials and evidence in the
 * audit explorer. The filters live in the location hash (a search can be linked) and are sent as
 * query values, never as a path: the API refuses one it does not know (a status mistyped in a
 * link) with a `400`, shown here, rather than answering unfiltered.
 */
export function TaskSearchPage({ route }: { route: Route }) {
  const { applied, draft, setDraft, apply, field } = useRouteFilters(route.params, FILTERS, 'task-search');
  // Polled slowly: a search is read, not watched; an active task that ends changes its status here too.
  const tasks = usePagedPoll<Task>((cursor) => `/v1/tasks${query({ ...applied, limit: 50, cursor })}`, 15_000, [JSON.stringify(applied)]);
  return (
    <div>
      <h1>Task search</h1>
      <form class="card filters" onSubmit={apply} data-testid="task-filters">
        <label>
          <span class="label">Status</span>
          <select name="status" value={draft.status ?? ''} onChange={(event) => setDraft({ ...draft, status: event.currentTarget.value })}>
            <option value="">any</option>
            {STATUSES.map((status) => (
              <option value={status}>{status}</option>
            ))}
            {/* A status from a link that the console does not know: kept, so that the API's refusal says why. */}
            {draft.status && !(STATUSES as readonly string[]).includes(draft.status) ? <option value={draft.status}>{reveal(draft.status)}</option> : null}
          </select>
        </label>
        {field('agent_id', 'Agent')}
        {field('orchestrator_id', 'Orchestrator')}
        <button type="submit" class="primary">
          Search
        </button>
      </form>
      <section class="card">
        <h2>
          Tasks{' '}
          <span class="muted small" data-testid="task-search-count">
            {tasks.loaded ? `${tasks.items.length}${tasks.hasMore ? '+' : ''} found` : ''}
          </span>
        </h2>
        <ErrorLine error={tasks.error} />
        {/* Only from an answer: a failed read is not "no task". */}
        {tasks.loaded && tasks.items.length === 0 ? <p class="muted">No task matches.</p> : null}
        <table class="tasks" data-testid="task-search-table">
          <thead>
            <tr>
              <th>Agent</th>
              <th>Status</th>
              <th>
                Purpose and declared <code>allowed</code>
              </th>
              <th>Declared</th>
              <th>Deadline</th>
              <th>Credentials</th>
              <th>Calls</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {tasks.items.map((task) => (
              <tr key={task.task_id} data-task-id={task.task_id}>
                <td>
                  <strong>{reveal(task.agent_id)}</strong>
                  <div class="muted small">by {reveal(task.orchestrator_id)}</div>
                  <div class="muted small mono" title={task.task_id}>
                    {task.task_id.slice(0, 8)}
                  </div>
                </td>
                <td data-testid="status">
                  <Pill value={task.status} />
                  {task.status_reason ? <div class="small muted">{reveal(task.status_reason)}</div> : null}
                </td>
                <td>
                  <div class="purpose">{reveal(task.purpose)}</div>
                  <DetailsSummary details={task.allowed} />
                  {task.history.refusals > 0 ? (
                    <div class="warn small">
                      {task.history.refusals} refused, {task.history.out_of_purpose_requests} out of purpose
                    </div>
                  ) : null}
                </td>
                <td class="small">{when(task.created_at)}</td>
                <td class="small">{when(task.expires_at)}</td>
                <td class="num">{task.history.grants_issued}</td>
                <td class="num">{task.calls}</td>
                <td class="actions">
                  <a href={`#/audit?task_id=${encodeURIComponent(task.task_id)}`} data-testid="open-timeline">
                    Timeline and evidence
                  </a>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        <ShowMore list={tasks} label="Show more tasks" testId="more-task-search" />
      </section>
    </div>
  );
}
