import { useEffect, useState } from 'preact/hooks';
import { api, Page, query, Role, segment } from '../api';
import { countdown, describeError, ErrorLine, Json, nonAsciiStrings, Pill, reveal, revealedJson, ShowMore, useNow, usePagedPoll, usePoll, when } from '../ui';
import type { Task } from './tasks';

/** An approval as the admin API lists it. */
interface Approval {
  id: string;
  task_id: string;
  agent_id: string;
  connector_id: string;
  authorization_details: unknown[];
  reasons: string[];
  policy_version: string;
  status: string;
  requested_at: string;
  expires_at: string;
  decided_at: string | null;
  decided_by: string | null;
  note: string | null;
  /** Thumbprint of the DPoP key the agent asked with: the credential is bound to it (null: a bearer credential). */
  dpop_jkt: string | null;
}

/** Fired after a decision, so that the badge in the top bar counts again at once. */
export const APPROVALS_CHANGED = 'writ:approvals-changed';

/** What the inbox shows of an approval's task: its declared purpose and the verified user it acts for. */
interface TaskFacts {
  purpose: string;
  user: { iss: string; sub: string } | null;
}

const facts = new Map<string, Promise<TaskFacts>>();

/** The task's purpose and user (cached: both are fixed when the task is declared). */
function factsOf(taskId: string): Promise<TaskFacts> {
  let read = facts.get(taskId);
  if (!read) {
    read = api<Task>('GET', `/v1/tasks/${segment(taskId)}`).then((task) => ({ purpose: task.purpose, user: task.user ?? null }));
    read.catch(() => facts.delete(taskId));
    facts.set(taskId, read);
  }
  return read;
}

function useTaskFacts(taskId: string): TaskFacts | 'unreadable' | undefined {
  const [read, setRead] = useState<TaskFacts | 'unreadable' | undefined>();
  useEffect(() => {
    void factsOf(taskId).then(setRead, () => setRead('unreadable'));
  }, [taskId]);
  return read;
}

function Purpose({ task }: { task: TaskFacts | 'unreadable' | undefined }) {
  return <span data-testid="purpose">{task === undefined ? '…' : task === 'unreadable' ? '(task unreadable)' : reveal(task.purpose)}</span>;
}

/**
 * Whose upstream account the credential would use: the task's verified user (a connected
 * account of theirs is what the gateway injects), or none. Two requests with the same details
 * and purpose for two users are two different grants.
 */
function ActsFor({ task }: { task: TaskFacts | 'unreadable' | undefined }) {
  return (
    <span data-testid="acts-for">
      {task === undefined
        ? '…'
        : task === 'unreadable'
          ? '(task unreadable)'
          : task.user
            ? `${reveal(task.user.sub)} (issuer ${reveal(task.user.iss)})`
            : "no user: the connector's own credential"}
    </span>
  );
}

/**
 * Names the values of the details that hold characters outside ASCII, character by character:
 * a look-alike letter (Cyrillic `а` for Latin `a`) cannot be seen in the JSON, only named.
 */
function NonAsciiWarning({ value }: { value: unknown }) {
  const found = nonAsciiStrings(value);
  if (!found.length) return null;
  return (
    <ul class="warn small" data-testid="non-ascii">
      {found.map((item) => (
        <li>
          <span class="mono">{item.path}</span> {revealedJson(item.text)} has characters outside ASCII, which can look like others: {item.chars.join(', ')}
        </li>
      ))}
    </ul>
  );
}

/** Where an approval shown in the inbox stands: still to decide, decided here, or gone meanwhile. */
type CardState = 'pending' | 'approved' | 'denied' | 'gone';

function PendingApproval({
  approval,
  state,
  can,
  onDecided,
}: {
  approval: Approval;
  state: CardState;
  can: (role: Role) => boolean;
  onDecided: (id: string, decision: 'approved' | 'denied') => void;
}) {
  const now = useNow();
  const task = useTaskFacts(approval.task_id);
  const [note, setNote] = useState('');
  const [error, setError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const decide = async (decision: 'approve' | 'deny') => {
    setBusy(true);
    setError(undefined);
    try {
      await api('POST', `/v1/approvals/${segment(approval.id)}/${decision}`, note ? { note } : {});
      onDecided(approval.id, decision === 'approve' ? 'approved' : 'denied');
    } catch (caught) {
      setError(describeError(caught).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <article class={`card approval${state === 'pending' ? '' : ' settled'}`} data-approval-id={approval.id} data-task-id={approval.task_id} data-state={state}>
      <header>
        <strong>{reveal(approval.agent_id)}</strong> asks for <strong>{reveal(approval.connector_id)}</strong>
        <span class="muted small">
          {' '}
          requested {when(approval.requested_at)} · expires in {countdown(approval.expires_at, now)}
        </span>
      </header>
      <dl>
        <dt>Task purpose</dt>
        <dd>
          <Purpose task={task} />{' '}
          <a class="small mono" href={`#/audit?task_id=${encodeURIComponent(approval.task_id)}`}>
            {approval.task_id.slice(0, 8)}
          </a>
        </dd>
        <dt>Acts for the user</dt>
        <dd>
          <ActsFor task={task} />
          {task && task !== 'unreadable' && task.user ? <NonAsciiWarning value={task.user} /> : null}
        </dd>
        <dt>Bound to</dt>
        <dd data-testid="bound-to">
          {approval.dpop_jkt ? (
            <>
              the agent's DPoP key <span class="mono">{approval.dpop_jkt}</span>
            </>
          ) : (
            <span class="warn">no key: a bearer credential, usable by whoever holds it</span>
          )}
        </dd>
        <dt>Why the policy asks</dt>
        <dd>
          <ul class="reasons">
            {approval.reasons.map((reason) => (
              <li>{reveal(reason)}</li>
            ))}
          </ul>
        </dd>
        <dt>Exactly what the credential would grant</dt>
        <dd>
          <Json value={approval.authorization_details} label="authorization_details" />
          <NonAsciiWarning value={approval.authorization_details} />
        </dd>
      </dl>
      {state !== 'pending' ? (
        // In place of the buttons, so that nothing moves under the pointer of a quick second click.
        <p class="decide settled-note" role="status">
          {state === 'gone' ? 'No longer pending: decided elsewhere, expired or its task ended.' : `${state === 'approved' ? 'Approved' : 'Denied'} by you.`}
        </p>
      ) : can('operator') ? (
        <div class="decide">
          <input
            name="note"
            placeholder="note (recorded with the decision)"
            maxLength={500}
            value={note}
            onInput={(event) => setNote((event.target as HTMLInputElement).value)}
          />
          <button type="button" class="primary" disabled={busy} onClick={() => decide('approve')}>
            Approve
          </button>
          <button type="button" class="danger" disabled={busy} onClick={() => decide('deny')}>
            Deny
          </button>
        </div>
      ) : null}
      <ErrorLine error={error} />
    </article>
  );
}

/** Oldest first, so that a request arriving later never lands above those already shown. */
function byAge(a: Approval, b: Approval): number {
  return Date.parse(a.requested_at) - Date.parse(b.requested_at) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** The approvals inbox: pending requests with their exact details, the task's purpose and the policy's reasons. */
export function ApprovalsPage({ can }: { can: (role: Role) => boolean }) {
  // Listed newest first a page at a time: an agent's flood of fresh requests would push an older
  // one off the first page for good. Show more reads further; what it brings joins the cards only
  // through "Update the list", like any request that arrives, so that no card moves on its own.
  const pending = usePagedPoll<Approval>((cursor) => `/v1/approvals${query({ status: 'pending', limit: 100, cursor })}`, 2000);
  const recent = usePagedPoll<Approval>((cursor) => `/v1/approvals${query({ limit: 30, cursor })}`, 5000);
  // The cards shown stay where they are until the person asks for an update: a request that an
  // agent times to arrive (or one that disappears) must never slide another request's buttons
  // under a pointer that was aimed at the one being read.
  const [shown, setShown] = useState<Approval[] | undefined>();
  const [mine, setMine] = useState<ReadonlyMap<string, 'approved' | 'denied'>>(new Map());
  const items = pending.items;
  const live = new Set(items.map((approval) => approval.id));
  const shownIds = new Set((shown ?? []).map((approval) => approval.id));
  const waiting = shown ? items.filter((approval) => !shownIds.has(approval.id)) : [];
  const settled = (shown ?? []).filter((approval) => mine.has(approval.id) || !live.has(approval.id)).length;
  const update = () => {
    setShown([...items].sort(byAge));
    setMine(new Map());
  };
  useEffect(() => {
    // The first answer, or new requests while no card is shown (nothing to misclick), are shown at once.
    if (pending.data && (!shown || (shown.length === 0 && waiting.length > 0))) update();
  }, [pending.data]);
  const decided = (id: string, decision: 'approved' | 'denied') => {
    setMine((current) => new Map(current).set(id, decision));
    pending.refresh();
    recent.refresh();
    window.dispatchEvent(new Event(APPROVALS_CHANGED));
  };
  const recentDecisions = recent.items.filter((approval) => approval.status !== 'pending');
  return (
    <div>
      <h1>
        Approvals{' '}
        <span class="muted small" data-testid="pending-count">
          {live.size}
          {pending.hasMore ? '+' : ''} pending
        </span>{' '}
        {/* Always laid out (hidden when there is nothing to update): its appearing moves nothing. */}
        <button
          type="button"
          class={`small${waiting.length > 0 || settled > 0 ? '' : ' invisible'}`}
          disabled={waiting.length === 0 && settled === 0}
          data-testid="update-approvals"
          onClick={update}
        >
          Update the list (
          {[waiting.length > 0 ? `${waiting.length} new` : '', settled > 0 ? `${settled} settled` : ''].filter(Boolean).join(', ') || 'no change'})
        </button>
      </h1>
      {shown && shown.length === 0 ? <p class="muted card">Nothing waits for a decision.</p> : null}
      <div class="approvals" data-testid="pending-approvals">
        {(shown ?? []).map((approval) => (
          <PendingApproval
            key={approval.id}
            approval={approval}
            state={mine.get(approval.id) ?? (live.has(approval.id) ? 'pending' : 'gone')}
            can={can}
            onDecided={decided}
          />
        ))}
      </div>
      {/* Below the cards: an error that comes and goes with the polls must not move them. */}
      <ErrorLine error={pending.error} />
      <ShowMore list={pending} label="Show older pending requests" testId="more-pending" />
      <section class="card">
        <h2>Recent decisions</h2>
        <table>
          <thead>
            <tr>
              <th>Requested</th>
              <th>Agent</th>
              <th>Connector</th>
              <th>Status</th>
              <th>Decided</th>
              <th>Note</th>
            </tr>
          </thead>
          <tbody>
            {recentDecisions.map((approval) => (
              <tr data-approval-id={approval.id}>
                <td>{when(approval.requested_at)}</td>
                <td>{approval.agent_id}</td>
                <td>{approval.connector_id}</td>
                <td>
                  <Pill value={approval.status} />
                </td>
                <td>{when(approval.decided_at)}</td>
                <td>{reveal(approval.note ?? '')}</td>
              </tr>
            ))}
          </tbody>
        </table>
        <ErrorLine error={recent.error} />
        <ShowMore list={recent} label="Older decisions" testId="more-decisions" />
      </section>
    </div>
  );
}
