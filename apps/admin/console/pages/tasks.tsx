import { useRef, useState } from 'preact/hooks';
import { api, Page, query, Role, segment } from '../api';
import { countdown, DetailsSummary, describeError, ErrorLine, Pill, reveal, ShowMore, useNow, usePagedPoll, usePoll, when } from '../ui';

/** A task as the admin API lists it. */
export interface Task {
  task_id: string;
  agent_id: string;
  orchestrator_id: string;
  purpose: string;
  allowed: unknown[];
  /** The verified user the task acts for (their connected accounts), if any. */
  user?: { iss: string; sub: string } | null;
  status: string;
  status_reason: string | null;
  created_at: string;
  expires_at: string;
  history: { grants_issued: number; refusals: number; out_of_purpose_requests: number };
  calls: number;
  /** A read's page of the task's credentials, oldest first (empty in lists). */
  grants?: TaskGrant[];
  /** The `grants_cursor` of the next page of credentials, null after the last. */
  grants_next_cursor?: string | null;
}

/** One credential of a task (never the token itself). */
export interface TaskGrant {
  jti: string;
  connector: string;
  action: string;
  authorization_details: unknown[];
  issued_at: string;
  expires_at: string;
  max_uses: number | null;
  uses: number;
  state: string;
  revoked_reason: string | null;
}

/** An audit event as the admin API lists it. */
export interface AuditEvent {
  seq: number;
  occurred_at: string;
  type: string;
  outcome: string;
  actor_type: string;
  actor_id: string | null;
  agent_id: string | null;
  task_id: string | null;
  connector_id: string | null;
  data: Record<string, unknown>;
}

function RevokeControl({ task, onDone }: { task: Task; onDone: () => void }) {
  const [open, setOpen] = useState(false);
  const [reason, setReason] = useState('');
  const [error, setError] = useState<string | undefined>();
  const revoke = async (event: Event) => {
    event.preventDefault();
    try {
      await api('POST', `/v1/tasks/${segment(task.task_id)}/revoke`, reason ? { reason } : {});
      setOpen(false);
      onDone();
    } catch (caught) {
      setError(describeError(caught).message);
    }
  };
  if (!open)
    return (
      <button type="button" class="danger" onClick={() => setOpen(true)}>
        Revoke
      </button>
    );
  return (
    <form class="inline" onSubmit={revoke}>
      <input
        name="reason"
        placeholder="reason (recorded in the audit log)"
        value={reason}
        maxLength={500}
        onInput={(event) => setReason((event.target as HTMLInputElement).value)}
      />
      <button type="submit" class="danger">
        Confirm revoke
      </button>
      <button type="button" onClick={() => setOpen(false)}>
        Cancel
      </button>
      <ErrorLine error={error} />
    </form>
  );
}

/** The newest audit events, polled; events not seen at the previous poll are marked new. */
export function EventFeed({ filter = {}, limit = 25 }: { filter?: Record<string, string>; limit?: number }) {
  const known = useRef<number>(0);
  const [fresh, setFresh] = useState<Set<number>>(new Set());
  const feed = usePoll(
    async () => {
      const page = await api<Page<AuditEvent>>('GET', `/v1/audit${query({ ...filter, limit })}`);
      const newest = page.items[0]?.seq ?? 0;
      if (known.current > 0) setFresh(new Set(page.items.filter((item) => item.seq > known.current).map((item) => item.seq)));
      known.current = Math.max(known.current, newest);
      return page;
    },
    2000,
    [JSON.stringify(filter)],
  );
  return (
    <section class="card">
      <h2>
        Events <span class="muted small">live</span>
      </h2>
      <ErrorLine error={feed.error} />
      <ol class="feed" data-testid="event-feed">
        {(feed.data?.items ?? []).map((event) => (
          <li class={fresh.has(event.seq) ? 'fresh' : ''} data-type={event.type}>
            <span class="muted mono">#{event.seq}</span> <span class="muted">{when(event.occurred_at)}</span> <strong>{event.type}</strong>{' '}
            <Pill value={event.outcome} /> {event.agent_id ? <span class="muted">agent {event.agent_id}</span> : null}{' '}
            {event.task_id ? (
              <a href={`#/audit?task_id=${encodeURIComponent(event.task_id)}`} class="mono">
                {event.task_id.slice(0, 8)}
              </a>
            ) : null}
          </li>
        ))}
      </ol>
    </section>
  );
}

/** Active tasks, live: agent, purpose, declared `allowed`, deadline, credentials, calls; revoke. */
export function TasksPage({ can }: { can: (role: Role) => boolean }) {
  const now = useNow();
  // Every active task can be reached, page after page: one past the first hundred may be the one to revoke.
  const tasks = usePagedPoll<Task>((cursor) => `/v1/tasks${query({ status: 'active', limit: 100, cursor })}`, 2000);
  const active = tasks.items.filter((task) => task.status === 'active');
  return (
    <div class="grid-main">
      <section class="card">
        <h1>
          Live tasks{' '}
          <span class="muted small" data-testid="active-count">
            {active.length}
            {tasks.hasMore ? '+' : ''} active
          </span>
        </h1>
        <p class="muted small">
          Ended tasks (completed, failed, expired, revoked): <a href="#/task-search">Task search</a>.
        </p>
        <ErrorLine error={tasks.error} />
        {/* Only from an answer: a failed first read is not "no task" (an operator would look no further). */}
        {tasks.loaded && active.length === 0 ? <p class="muted">No active task.</p> : null}
        <table class="tasks" data-testid="tasks-table">
          <thead>
            <tr>
              <th>Agent</th>
              <th>
                Purpose and declared <code>allowed</code>
              </th>
              <th>Deadline</th>
              <th>Credentials</th>
              <th>Calls</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {/* Keyed: an open revocation (and its typed reason) stays with its task when the list
                moves, not with a row position that another task may take. */}
            {active.map((task) => (
              <tr key={task.task_id} data-task-id={task.task_id}>
                <td>
                  <strong>{task.agent_id}</strong>
                  <div class="muted small">by {task.orchestrator_id}</div>
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
                <td class="mono" title={task.expires_at} data-testid="countdown">
                  {countdown(task.expires_at, now)}
                </td>
                <td class="num" data-testid="grants">
                  {task.history.grants_issued}
                </td>
                <td class="num" data-testid="calls">
                  {task.calls}
                </td>
                <td class="actions">
                  <a href={`#/audit?task_id=${encodeURIComponent(task.task_id)}`}>Timeline</a>
                  {can('operator') ? <RevokeControl task={task} onDone={tasks.refresh} /> : null}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        <ShowMore list={tasks} label="Show more tasks" testId="more-tasks" />
      </section>
      <EventFeed />
    </div>
  );
}
