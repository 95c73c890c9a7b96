import { useEffect, useRef, useState } from 'preact/hooks';
import { api, downloadJson, Page, query, segment } from '../api';
import type { Route } from '../main';
import { DetailsSummary, describeError, ErrorLine, Json, MoreButton, Pill, reveal, usePoll, when } from '../ui';
import type { AuditEvent, Task, TaskGrant } from './tasks';

const FILTERS = ['agent_id', 'task_id', 'connector', 'type', 'outcome', 'since', 'until'] as const;
type Filters = Partial<Record<(typeof FILTERS)[number], string>>;

interface Evidence {
  task: Task;
  events: (AuditEvent & { hash: string; prev_hash: string })[];
  chain: { first_seq: number | null; last_seq: number | null; verified: boolean; reason?: string };
}

interface Verification {
  valid: boolean;
  events: number;
  first_invalid_seq?: number;
  reason?: string;
}

/** Where an event sits in a task's story. */
function stage(type: string): string {
  if (type === 'task.created') return 'declared';
  if (type === 'grant.decision') return 'request and decision';
  if (type.startsWith('approval.')) return 'approval';
  if (type === 'token.issued') return 'issuance';
  if (type === 'token.refused') return 'refusal';
  if (type.startsWith('gateway.')) return 'call';
  if (type === 'token.revoked' || type === 'task.revoked') return 'revocation';
  if (type.startsWith('task.')) return 'end';
  return 'other';
}

/** One line of what an event says. */
/** The members of event data the summary reads (audit events carry more; see docs/audit.md). */
interface SummaryData {
  decision?: { requires_approval?: boolean; reasons?: string[] };
  action?: string;
  kind?: string;
  expires_at?: string;
  method?: string;
  path?: string;
  operation?: string;
  status?: number;
  reason?: string;
  error?: string;
  error_description?: string;
  upstream_latency_ms?: number;
  count?: number;
  purpose?: string;
}

function summary(event: AuditEvent): string {
  const data = event.data as SummaryData;
  switch (event.type) {
    case 'grant.decision': {
      const verdict = event.outcome === 'success' ? 'allowed' : data.decision?.requires_approval ? 'held for approval' : 'denied';
      const reasons = data.decision?.reasons ?? [];
      return reasons.length ? `${verdict}: ${reasons.join('; ')}` : verdict;
    }
    case 'token.issued':
      return `${data.action ?? data.kind} until ${when(data.expires_at)}`;
    case 'gateway.call':
      return `${data.method ?? ''} ${data.path ?? ''} ${data.operation ?? ''} ${data.status ? `→ ${data.status}` : ''} ${data.reason ?? ''}`;
    case 'gateway.upstream':
      return `upstream ${data.status ?? data.error ?? ''} in ${data.upstream_latency_ms ?? '?'} ms`;
    case 'token.revoked':
      return `${data.count ?? ''} credential(s): ${data.reason ?? ''}`;
    case 'token.refused':
      return `${data.error ?? ''}: ${data.error_description ?? ''}`;
    default:
      return typeof data.reason === 'string' ? data.reason : typeof data.purpose === 'string' ? data.purpose : '';
  }
}

/**
 * A task's credentials: the page its read brought, then the following ones on request through
 * `grants_next_cursor` (a task read shows at most 100; its agent decides how many there are).
 */
function TaskGrants({ task }: { task: Task }) {
  const [more, setMore] = useState<TaskGrant[]>([]);
  const [cursor, setCursor] = useState<string | null>(task.grants_next_cursor ?? null);
  const next = async () => {
    if (!cursor) return;
    const page = await api<Task>('GET', `/v1/tasks/${segment(task.task_id)}${query({ grants_cursor: cursor })}`);
    setMore((loaded) => [...loaded, ...(page.grants ?? [])]);
    setCursor(page.grants_next_cursor ?? null);
  };
  const grants = [...(task.grants ?? []), ...more];
  return (
    <div class="grants">
      <h3>
        Credentials{' '}
        <span class="muted small" data-testid="grants-count">
          {grants.length} of {task.history.grants_issued} shown
        </span>
      </h3>
      <table data-testid="grants-table">
        <thead>
          <tr>
            <th>Credential</th>
            <th>Grants</th>
            <th>Issued</th>
            <th>Expires</th>
            <th>Uses</th>
            <th>State</th>
          </tr>
        </thead>
        <tbody>
          {grants.map((grant) => (
            <tr key={grant.jti} data-jti={grant.jti}>
              <td class="mono" title={grant.jti}>
                {reveal(grant.jti)}
              </td>
              <td>
                <DetailsSummary details={grant.authorization_details} />
              </td>
              <td>{when(grant.issued_at)}</td>
              <td>{when(grant.expires_at)}</td>
              <td class="num">
                {grant.uses}
                {grant.max_uses === null ? '' : ` / ${grant.max_uses}`}
              </td>
              <td>
                <Pill value={grant.state} />
                {grant.revoked_reason ? <div class="small">{reveal(grant.revoked_reason)}</div> : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {cursor ? <MoreButton label="Show more credentials" onMore={next} testId="more-grants" /> : null}
    </div>
  );
}

function Timeline({ taskId }: { taskId: string }) {
  // Loaded once per task, and again on request, never polled: the server verifies the audit
  // chain for each answer, a walk whose cost grows with the whole log.
  const evidence = usePoll(() => api<Evidence>('GET', `/v1/tasks/${segment(taskId)}/evidence`), 0, [taskId]);
  const data = evidence.data;
  // Each answer is a fresh read of the task: its credentials start again from their first page.
  const reads = useRef<{ data: Evidence | undefined; count: number }>({ data: undefined, count: 0 });
  if (reads.current.data !== data) reads.current = { data, count: reads.current.count + 1 };
  return (
    <section class="card" data-testid="timeline">
      <h2>
        Task timeline <span class="mono small">{reveal(taskId)}</span>
      </h2>
      <ErrorLine error={evidence.error} />
      {data ? (
        <>
          <p>
            <strong>{reveal(data.task.agent_id)}</strong>: {reveal(data.task.purpose)} <Pill value={data.task.status} />{' '}
            <span class={data.chain.verified ? 'ok' : 'error'} data-testid="evidence-verified">
              {data.chain.verified ? `chain verified (events ${data.chain.first_seq}–${data.chain.last_seq})` : `chain NOT verified: ${data.chain.reason}`}
            </span>
          </p>
          <button type="button" class="primary" data-testid="download-evidence" onClick={() => downloadJson(`writ-evidence-${taskId}.json`, data)}>
            Download evidence pack
          </button>{' '}
          <button type="button" data-testid="reload-evidence" onClick={evidence.refresh}>
            Reload and verify again
          </button>
          <TaskGrants key={reads.current.count} task={data.task} />
          <ol class="timeline">
            {data.events.map((event) => (
              <li class={`stage-${stage(event.type).split(' ')[0]}`} data-type={event.type}>
                <span class="stage">{stage(event.type)}</span>
                <span class="muted">{when(event.occurred_at)}</span> <strong>{event.type}</strong> <Pill value={event.outcome} />
                <div class="small">{reveal(summary(event))}</div>
              </li>
            ))}
          </ol>
        </>
      ) : null}
    </section>
  );
}

function VerifyChain() {
  const [result, setResult] = useState<Verification | undefined>();
  const [error, setError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const verify = async () => {
    setBusy(true);
    setError(undefined);
    try {
      setResult(await api<Verification>('GET', '/v1/audit/verify'));
    } catch (caught) {
      setError(describeError(caught).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="verify">
      <button type="button" onClick={verify} disabled={busy}>
        Verify the chain
      </button>
      {result ? (
        <span class={result.valid ? 'ok' : 'error'} data-testid="verify-result">
          {result.valid ? `Chain valid: ${result.events} events` : `Chain INVALID from event ${result.first_invalid_seq}: ${result.reason}`}
        </span>
      ) : null}
      <ErrorLine error={error} />
    </div>
  );
}

/**
 * A time filter as the API reads it. A value that is no date (`#/audit?since=x` in a link) is sent
 * as it is, for the API to refuse naming the field: `toISOString()` would throw while rendering,
 * and the whole console would go blank (a reload then signs the operator out).
 */
const toIso = (local: string | undefined) => {
  if (!local) return undefined;
  const date = new Date(local);
  return Number.isNaN(date.getTime()) ? local : date.toISOString();
};

/** Audit explorer: filters, pages, a task's timeline and evidence, chain verification. */
export function AuditPage({ route }: { route: Route }) {
  const initial: Filters = {};
  for (const name of FILTERS) {
    const value = route.params.get(name);
    if (value) initial[name] = value;
  }
  const [draft, setDraft] = useState<Filters>(initial);
  const applied: Filters = initial;
  // A link to another task (from the feed or a row) changes the hash, not this page: follow it.
  // Only on a change: on mount the draft already holds these values, and resetting it then
  // would wipe what a quick user (or a browser test) typed before the effect ran.
  const routeKey = JSON.stringify(initial);
  const shownRoute = useRef(routeKey);
  useEffect(() => {
    if (shownRoute.current === routeKey) return;
    shownRoute.current = routeKey;
    setDraft(initial);
  }, [routeKey]);
  const [pages, setPages] = useState<AuditEvent[][]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [open, setOpen] = useState<number | undefined>();
  const params = { ...applied, since: toIso(applied.since), until: toIso(applied.until) };
  const first = usePoll(
    async () => {
      const page = await api<Page<AuditEvent>>('GET', `/v1/audit${query({ ...params, limit: 100 })}`);
      setPages([]);
      setCursor(page.next_cursor);
      return page;
    },
    0,
    [JSON.stringify(applied)],
  );
  const more = async () => {
    if (!cursor) return;
    const page = await api<Page<AuditEvent>>('GET', `/v1/audit${query({ ...params, limit: 100, cursor })}`);
    setPages([...pages, page.items]);
    setCursor(page.next_cursor);
  };
  const apply = (event: Event) => {
    event.preventDefault();
    const search = new URLSearchParams();
    for (const name of FILTERS) if (draft[name]) search.set(name, draft[name]);
    window.location.hash = `#/audit?${search.toString()}`;
  };
  const events = [...(first.data?.items ?? []), ...pages.flat()];
  const input = (name: (typeof FILTERS)[number], label: string, type: 'text' | 'datetime-local' = 'text') => (
    <label>
      <span class="label">{label}</span>
      {type === 'text' ? (
        <input name={name} type="text" value={draft[name] ?? ''} onInput={(event) => setDraft({ ...draft, [name]: event.currentTarget.value })} />
      ) : (
        <input name={name} type="datetime-local" value={draft[name] ?? ''} onInput={(event) => setDraft({ ...draft, [name]: event.currentTarget.value })} />
      )}
    </label>
  );
  return (
    <div>
      <h1>Audit</h1>
      <form class="card filters" onSubmit={apply}>
        {input('agent_id', 'Agent')}
        {input('task_id', 'Task')}
        {input('connector', 'Connector')}
        {input('type', 'Type')}
        <label>
          <span class="label">Outcome</span>
          <select name="outcome" value={draft.outcome ?? ''} onChange={(event) => setDraft({ ...draft, outcome: (event.target as HTMLSelectElement).value })}>
            <option value="">any</option>
            {['success', 'denied', 'failure', 'error', 'info'].map((value) => (
              <option value={value}>{value}</option>
            ))}
          </select>
        </label>
        {input('since', 'Since', 'datetime-local')}
        {input('until', 'Until', 'datetime-local')}
        <button type="submit" class="primary">
          Filter
        </button>
        <VerifyChain />
      </form>
      {applied.task_id ? <Timeline taskId={applied.task_id} /> : null}
      <section class="card">
        <ErrorLine error={first.error} />
        <table class="audit" data-testid="audit-table">
          <thead>
            <tr>
              <th>Seq</th>
              <th>Time</th>
              <th>Type</th>
              <th>Outcome</th>
              <th>Actor</th>
              <th>Agent</th>
              <th>Task</th>
              <th>Connector</th>
            </tr>
          </thead>
          <tbody>
            {events.map((event) => (
              <>
                <tr class="clickable" onClick={() => setOpen(open === event.seq ? undefined : event.seq)} data-type={event.type}>
                  <td class="mono">{event.seq}</td>
                  <td>{when(event.occurred_at)}</td>
                  <td>{event.type}</td>
                  <td>
                    <Pill value={event.outcome} />
                  </td>
                  <td>
                    {event.actor_type}
                    {event.actor_id ? `:${event.actor_id.slice(0, 12)}` : ''}
                  </td>
                  <td>{event.agent_id ?? ''}</td>
                  <td>
                    {event.task_id ? (
                      <a class="mono" href={`#/audit?task_id=${encodeURIComponent(event.task_id)}`} onClick={(e) => e.stopPropagation()}>
                        {event.task_id.slice(0, 8)}
                      </a>
                    ) : (
                      ''
                    )}
                  </td>
                  <td>{event.connector_id ?? ''}</td>
                </tr>
                {open === event.seq ? (
                  <tr>
                    <td colSpan={8}>
                      <Json value={event.data} />
                    </td>
                  </tr>
                ) : null}
              </>
            ))}
          </tbody>
        </table>
        {cursor ? <MoreButton label="Older events" onMore={more} testId="more-events" /> : null}
      </section>
    </div>
  );
}
