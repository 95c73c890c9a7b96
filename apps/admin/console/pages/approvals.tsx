import { useEffect, useState } from 'preact/hooks';
import { api, Page, Role } from '../api';
import { countdown, describeError, ErrorLine, Json, Pill, useNow, usePoll, when } from '../ui';
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
}

/** Fired after a decision, so that the badge in the top bar counts again at once. */
export const APPROVALS_CHANGED = 'writ:approvals-changed';

const purposes = new Map<string, Promise<string>>();

/** The task's declared purpose (cached: a task's purpose never changes). */
function purposeOf(taskId: string): Promise<string> {
  let purpose = purposes.get(taskId);
  if (!purpose) {
    purpose = api<Task>('GET', `/v1/tasks/${taskId}`).then((task) => task.purpose);
    purpose.catch(() => purposes.delete(taskId));
    purposes.set(taskId, purpose);
  }
  return purpose;
}

function Purpose({ taskId }: { taskId: string }) {
  const [text, setText] = useState<string | undefined>();
  useEffect(() => {
    void purposeOf(taskId).then(setText, () => setText('(task unreadable)'));
  }, [taskId]);
  return <span data-testid="purpose">{text ?? '…'}</span>;
}

function PendingApproval({ approval, can, onDecided }: { approval: Approval; can: (role: Role) => boolean; onDecided: () => void }) {
  const now = useNow();
  const [note, setNote] = useState('');
  const [error, setError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const decide = async (decision: 'approve' | 'deny') => {
    setBusy(true);
    setError(undefined);
    try {
      await api('POST', `/v1/approvals/${approval.id}/${decision}`, note ? { note } : {});
      onDecided();
    } catch (caught) {
      setError(describeError(caught).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <article class="card approval" data-approval-id={approval.id} data-task-id={approval.task_id}>
      <header>
        <strong>{approval.agent_id}</strong> asks for <strong>{approval.connector_id}</strong>
        <span class="muted small">
          {' '}
          requested {when(approval.requested_at)} · expires in {countdown(approval.expires_at, now)}
        </span>
      </header>
      <dl>
        <dt>Task purpose</dt>
        <dd>
          <Purpose taskId={approval.task_id} />{' '}
          <a class="small mono" href={`#/audit?task_id=${approval.task_id}`}>
            {approval.task_id.slice(0, 8)}
          </a>
        </dd>
        <dt>Why the policy asks</dt>
        <dd>
          <ul class="reasons">
            {approval.reasons.map((reason) => (
              <li>{reason}</li>
            ))}
          </ul>
        </dd>
        <dt>Exactly what the credential would grant</dt>
        <dd>
          <Json value={approval.authorization_details} label="authorization_details" />
        </dd>
      </dl>
      {can('operator') ? (
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

/** The approvals inbox: pending requests with their exact details, the task's purpose and the policy's reasons. */
export function ApprovalsPage({ can }: { can: (role: Role) => boolean }) {
  const pending = usePoll(() => api<Page<Approval>>('GET', '/v1/approvals?status=pending&limit=100'), 2000);
  const recent = usePoll(() => api<Page<Approval>>('GET', '/v1/approvals?limit=30'), 5000);
  const refresh = () => {
    pending.refresh();
    recent.refresh();
    window.dispatchEvent(new Event(APPROVALS_CHANGED));
  };
  const decided = (recent.data?.items ?? []).filter((approval) => approval.status !== 'pending');
  return (
    <div>
      <h1>
        Approvals <span class="muted small">{pending.data?.items.length ?? 0} pending</span>
      </h1>
      <ErrorLine error={pending.error} />
      {pending.data && pending.data.items.length === 0 ? <p class="muted card">Nothing waits for a decision.</p> : null}
      <div class="approvals" data-testid="pending-approvals">
        {(pending.data?.items ?? []).map((approval) => (
          <PendingApproval key={approval.id} approval={approval} can={can} onDecided={refresh} />
        ))}
      </div>
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
            {decided.map((approval) => (
              <tr data-approval-id={approval.id}>
                <td>{when(approval.requested_at)}</td>
                <td>{approval.agent_id}</td>
                <td>{approval.connector_id}</td>
                <td>
                  <Pill value={approval.status} />
                </td>
                <td>{when(approval.decided_at)}</td>
                <td>{approval.note ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </div>
  );
}
