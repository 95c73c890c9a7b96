import { useState } from 'preact/hooks';
import { api, FieldError, Page, query, Role } from '../api';
import { describeError, ErrorLine, Field, parseJsonField, Pill, reveal, ShowMore, usePagedPoll, usePoll, when } from '../ui';
import type { Task } from './tasks';

interface ActivePolicy {
  version: string;
  source: string;
  loaded_at: string;
  loaded_by: string;
  entrypoint: string;
  format: string;
}

interface StoredVersion {
  version: string;
  source: string;
  loaded_by: string;
  loaded_at: string;
  active: boolean;
}

interface Evaluation {
  policy_version: string;
  decision: {
    allow: boolean;
    reasons: string[];
    max_ttl_seconds: number;
    max_uses: number | null;
    requires_approval: boolean;
    quarantine: boolean;
    out_of_purpose: boolean;
  };
  violations?: string[];
}

const EXAMPLE = JSON.stringify(
  [{ type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints: { destination: 'acct_1', amount_max: 42000, currency: 'usd' } }],
  null,
  2,
);

async function base64Of(file: File): Promise<string> {
  const bytes = new Uint8Array(await file.arrayBuffer());
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function Upload({ onDone }: { onDone: () => void }) {
  const [file, setFile] = useState<File | undefined>();
  const [error, setError] = useState<string | undefined>();
  const [result, setResult] = useState<string | undefined>();
  const upload = async (event: Event) => {
    event.preventDefault();
    if (!file) return setError('choose a compiled bundle (.tar.gz) or a .wasm module');
    setError(undefined);
    try {
      const type = file.name.endsWith('.wasm') ? 'application/wasm' : 'application/gzip';
      const stored = await api<StoredVersion>('PUT', '/v1/policies/active', undefined, { raw: { body: file, type } });
      setResult(`now active on every instance: ${stored.version.slice(0, 16)}…`);
      onDone();
    } catch (caught) {
      const { message, fields } = describeError(caught);
      setError(fields.length ? fields.map((field) => `${field.field}: ${field.message}`).join('; ') : message);
    }
  };
  return (
    <form class="card" onSubmit={upload} data-testid="policy-upload">
      <h2>Upload a policy bundle</h2>
      <p class="muted small">
        An <code>opa build</code> bundle or a <code>.wasm</code> module with <code>writ/grant/decision</code>. It is loaded first; a bundle that does not load
        changes nothing.
      </p>
      <input type="file" name="bundle" accept=".gz,.tar.gz,.wasm" onChange={(event) => setFile((event.target as HTMLInputElement).files?.[0])} />
      <button type="submit" class="primary">
        Activate
      </button>
      <ErrorLine error={error} />
      {result ? <p class="ok">{result}</p> : null}
    </form>
  );
}

function DryRun() {
  const tasks = usePoll(() => api<Page<Task>>('GET', '/v1/tasks?limit=50'), 0);
  const [taskId, setTaskId] = useState('');
  const [details, setDetails] = useState(EXAMPLE);
  const [candidateData, setCandidateData] = useState('');
  const [candidate, setCandidate] = useState<File | undefined>();
  const [errors, setErrors] = useState<FieldError[]>([]);
  const [message, setMessage] = useState<string | undefined>();
  const [result, setResult] = useState<Evaluation | undefined>();
  const run = async (event: Event) => {
    event.preventDefault();
    const local: FieldError[] = [];
    const body: Record<string, unknown> = { task_id: taskId.trim(), authorization_details: parseJsonField(details, 'authorization_details', local) };
    if (candidateData.trim()) body.candidate_data = parseJsonField(candidateData, 'candidate_data', local);
    if (candidate) body.candidate_bundle = await base64Of(candidate);
    setResult(undefined);
    if (local.length) {
      setErrors(local);
      setMessage('fix the fields marked below');
      return;
    }
    try {
      setResult(await api<Evaluation>('POST', '/v1/policies/evaluate', body));
      setErrors([]);
      setMessage(undefined);
    } catch (caught) {
      const described = describeError(caught);
      setErrors(described.fields);
      setMessage(described.message);
    }
  };
  return (
    <form class="card" onSubmit={run} data-testid="dry-run" novalidate>
      <h2>Dry run</h2>
      <p class="muted small">
        Evaluates a request as token exchange would, for a stored task, against the active policy or a candidate. Nothing is issued, counted or recorded.
      </p>
      <ErrorLine error={message} />
      <Field label="Task" name="task_id" errors={errors}>
        <input
          name="task_id"
          list="recent-tasks"
          value={taskId}
          onInput={(event) => setTaskId((event.target as HTMLInputElement).value)}
          placeholder="task id"
        />
        <datalist id="recent-tasks">
          {(tasks.data?.items ?? []).map((task) => (
            <option value={task.task_id}>{reveal(`${task.agent_id}: ${task.purpose}`)}</option>
          ))}
        </datalist>
      </Field>
      <Field label="authorization_details (JSON)" name="authorization_details" errors={errors}>
        <textarea
          name="authorization_details"
          rows={7}
          value={details}
          onInput={(event) => setDetails((event.target as HTMLTextAreaElement).value)}
          spellcheck={false}
        />
      </Field>
      <Field label="Candidate policy data (JSON, optional)" name="candidate_data" errors={errors} hint='e.g. {"writ":{"config":{…}}}: replaces the data whole'>
        <textarea
          name="candidate_data"
          rows={3}
          value={candidateData}
          onInput={(event) => setCandidateData((event.target as HTMLTextAreaElement).value)}
          spellcheck={false}
        />
      </Field>
      <Field label="Candidate bundle (optional)" name="candidate_bundle" errors={errors}>
        <input
          type="file"
          name="candidate_bundle"
          accept=".gz,.tar.gz,.wasm"
          onChange={(event) => setCandidate((event.target as HTMLInputElement).files?.[0])}
        />
      </Field>
      <button type="submit" class="primary">
        Evaluate
      </button>
      {result ? (
        <div class="result" data-testid="dry-run-result">
          <p>
            <span class={`decision ${result.decision.allow ? 'allow' : 'deny'}`} data-testid="decision">
              {result.decision.allow ? 'ALLOW' : 'DENY'}
            </span>
            {result.decision.requires_approval ? <Pill value="requires approval" /> : null}
            {result.decision.quarantine ? <Pill value="quarantine" /> : null}
            <span class="muted small">
              {' '}
              policy {result.policy_version.slice(0, 16)}… · ttl ≤ {result.decision.max_ttl_seconds}s · uses ≤ {result.decision.max_uses ?? '∞'}
            </span>
          </p>
          <h3>Reasons</h3>
          <ul data-testid="reasons">
            {result.decision.reasons.map((reason) => (
              <li>{reveal(reason)}</li>
            ))}
          </ul>
          {result.violations && result.violations.length ? (
            <>
              <h3>Refused by the server whatever the policy says</h3>
              <ul class="error">
                {result.violations.map((violation) => (
                  <li>{reveal(violation)}</li>
                ))}
              </ul>
            </>
          ) : null}
        </div>
      ) : null}
    </form>
  );
}

/** The policy in force, its stored history, uploads (admin) and dry runs (operator). */
export function PoliciesPage({ can }: { can: (role: Role) => boolean }) {
  const active = usePoll(() => api<ActivePolicy>('GET', '/v1/policies'), 10_000);
  const history = usePagedPoll<StoredVersion>((cursor) => `/v1/policies/history${query({ limit: 50, cursor })}`, 10_000);
  const refresh = () => {
    active.refresh();
    history.refresh();
  };
  return (
    <div>
      <h1>Policies</h1>
      <div class="grid-2">
        <section class="card" data-testid="active-policy">
          <h2>Active policy</h2>
          <ErrorLine error={active.error} />
          {active.data ? (
            <dl class="facts">
              <dt>Version</dt>
              <dd class="mono small">{active.data.version}</dd>
              <dt>Source</dt>
              <dd class="small">{active.data.source}</dd>
              <dt>Loaded</dt>
              <dd>
                {when(active.data.loaded_at)} by {reveal(active.data.loaded_by)}
              </dd>
              <dt>Entrypoint</dt>
              <dd class="mono">
                {active.data.entrypoint} ({active.data.format})
              </dd>
            </dl>
          ) : null}
          <h3>History</h3>
          <ErrorLine error={history.error} />
          {history.loaded && history.items.length === 0 ? (
            <p class="muted small">No version was uploaded through the API: the policy file is in force.</p>
          ) : null}
          <table class="small" data-testid="policy-history">
            <tbody>
              {history.items.map((version) => (
                <tr>
                  <td class="mono">{version.version.slice(0, 16)}…</td>
                  <td>{version.source}</td>
                  <td>{reveal(version.loaded_by)}</td>
                  <td>{when(version.loaded_at)}</td>
                  <td>{version.active ? <Pill value="active" /> : null}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <ShowMore list={history} label="Older versions" testId="more-history" />
        </section>
        <div>
          {can('operator') ? <DryRun /> : <p class="card muted">Dry runs need the operator role.</p>}
          {can('admin') ? <Upload onDone={refresh} /> : null}
        </div>
      </div>
    </div>
  );
}
