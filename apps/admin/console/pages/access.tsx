import { useRef, useState } from 'preact/hooks';
import { api, FieldError, newIdempotencyKey, query, segment } from '../api';
import { describeError, ErrorLine, Field, Pill, reveal, ShowMore, usePagedPoll, useSingleFlight, when } from '../ui';

interface AdminToken {
  id: string;
  name: string;
  role: string;
  created_by: string | null;
  created_at: string;
  last_used_at: string | null;
  revoked_at: string | null;
  expires_at: string | null;
}

interface SigningKey {
  kid: string;
  alg: string;
  status: string;
  created_at: string;
  retired_at: string | null;
}

function NewToken({ onCreated }: { onCreated: () => void }) {
  const [name, setName] = useState('');
  const [role, setRole] = useState('viewer');
  // Seconds until it expires ('' = until revoked); a day by default, as a leaked token should not live on.
  const [expiresIn, setExpiresIn] = useState('86400');
  const [errors, setErrors] = useState<FieldError[]>([]);
  const [message, setMessage] = useState<string | undefined>();
  const [created, setCreated] = useState<{ name: string; token: string } | undefined>();
  // One Idempotency-Key per intended token: kept while the form is unchanged (a double click, a
  // retry after a 503 or a lost answer make one token, not a second one whose secret nobody saw),
  // a new one once a token is made or a field changes.
  const key = useRef<string | undefined>(undefined);
  const flight = useSingleFlight();
  const edited =
    <T,>(set: (value: T) => void) =>
    (value: T) => {
      key.current = undefined;
      set(value);
    };
  const create = (event: Event) => {
    event.preventDefault();
    return flight.run(async () => {
      key.current ??= newIdempotencyKey();
      try {
        const answer = await api<{ id: string; name: string; token?: string }>(
          'POST',
          '/v1/admin-tokens',
          { name, role, ...(expiresIn ? { expires_in: Number(expiresIn) } : {}) },
          { idempotencyKey: key.current },
        );
        key.current = undefined;
        setErrors([]);
        setName('');
        onCreated();
        if (typeof answer.token === 'string') {
          setCreated({ name: answer.name, token: answer.token });
          setMessage(undefined);
        } else {
          // A replay: an earlier attempt made the token and its answer, the only one with the secret, was lost.
          setMessage(
            `An earlier attempt created "${reveal(answer.name)}" (id ${answer.id}), but its answer did not reach this page and the token cannot be shown again: revoke it below and create another.`,
          );
        }
      } catch (caught) {
        const described = describeError(caught);
        setErrors(described.fields);
        setMessage(described.message);
      }
    });
  };
  return (
    <form class="card" onSubmit={create} data-testid="new-admin-token" novalidate>
      <h2>New admin token</h2>
      <ErrorLine error={message} />
      <Field label="Name" name="name" errors={errors} hint="who or what uses it, e.g. alice or ci-deployer">
        <input name="name" value={name} onInput={(event) => edited(setName)((event.target as HTMLInputElement).value)} />
      </Field>
      <Field label="Role" name="role" errors={errors}>
        <select name="role" value={role} onChange={(event) => edited(setRole)((event.target as HTMLSelectElement).value)}>
          <option value="viewer">viewer: reads</option>
          <option value="operator">operator: also changes the registry, revokes, decides approvals</option>
          <option value="admin">admin: also policies, keys and admin tokens</option>
        </select>
      </Field>
      <Field label="Expires" name="expires_in" errors={errors}>
        <select name="expires_in" value={expiresIn} onChange={(event) => edited(setExpiresIn)((event.target as HTMLSelectElement).value)}>
          <option value="3600">in an hour</option>
          <option value="86400">in a day</option>
          <option value="2592000">in 30 days</option>
          <option value="31536000">in a year</option>
          <option value="">never (until revoked)</option>
        </select>
      </Field>
      <button type="submit" class="primary" disabled={flight.busy}>
        Create
      </button>
      {created ? (
        <div class="once" role="status">
          <p>
            <strong>{reveal(created.name)}</strong>: copy this token now, it is shown only once.
          </p>
          <input readOnly class="mono" data-testid="created-token" value={created.token} onFocus={(event) => (event.target as HTMLInputElement).select()} />
          <button type="button" onClick={() => setCreated(undefined)}>
            Done
          </button>
        </div>
      ) : null}
    </form>
  );
}

/**
 * Before a revocation is confirmed: how many live tokens listed here go with it (the API revokes
 * every token a token created, and theirs). Counted on the tokens this page has loaded.
 */
function DescendantsWarning({ tokens, root }: { tokens: AdminToken[]; root: string }) {
  const children = new Map<string, AdminToken[]>();
  for (const token of tokens) if (token.created_by) children.set(token.created_by, [...(children.get(token.created_by) ?? []), token]);
  const seen = new Set([root]);
  const walk = [root];
  let live = 0;
  while (walk.length > 0) {
    for (const child of children.get(walk.pop()!) ?? []) {
      if (seen.has(child.id)) continue;
      seen.add(child.id);
      walk.push(child.id);
      if (!child.revoked_at && !(child.expires_at && Date.parse(child.expires_at) <= Date.now())) live += 1;
    }
  }
  if (live === 0) return null;
  return (
    <span class="muted small" data-testid="revokes-descendants">
      Also revokes {live === 1 ? '1 token' : `${live} tokens`} it created, directly or through others.{' '}
    </span>
  );
}

/** Admin only: admin tokens (create, revoke) and signing keys (rotate). */
export function AccessPage({ selfId }: { selfId: string }) {
  const tokens = usePagedPoll<AdminToken>((cursor) => `/v1/admin-tokens${query({ limit: 200, cursor })}`, 10_000);
  const keys = usePagedPoll<SigningKey>((cursor) => `/v1/keys${query({ limit: 50, cursor })}`, 10_000);
  const [error, setError] = useState<string | undefined>();
  const [confirm, setConfirm] = useState<string | undefined>();
  const run = async (method: string, path: string, after: () => void) => {
    setError(undefined);
    try {
      await api(method, path);
      setConfirm(undefined);
      after();
    } catch (caught) {
      setError(describeError(caught).message);
    }
  };
  return (
    <div>
      <h1>Access</h1>
      <ErrorLine error={error} />
      <div class="grid-main">
        <section class="card">
          <h2>Admin tokens</h2>
          <ErrorLine error={tokens.error} />
          <table data-testid="admin-tokens">
            <thead>
              <tr>
                <th>Name</th>
                <th>Role</th>
                <th>Created</th>
                <th>Last used</th>
                <th>Expires</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {tokens.items.map((token) => (
                <tr key={token.id} data-id={token.id}>
                  <td>
                    {reveal(token.name)}
                    {token.id === selfId ? <span class="muted small"> (you)</span> : null}
                  </td>
                  <td>
                    <Pill value={token.role} />
                  </td>
                  <td class="small">{when(token.created_at)}</td>
                  <td class="small">{when(token.last_used_at)}</td>
                  <td class="small">{token.expires_at ? when(token.expires_at) : 'never'}</td>
                  <td class="actions">
                    {token.revoked_at ? (
                      <Pill value="revoked" />
                    ) : token.expires_at && Date.parse(token.expires_at) <= Date.now() ? (
                      <Pill value="expired" />
                    ) : token.id === selfId ? null : confirm === token.id ? (
                      <>
                        <DescendantsWarning tokens={tokens.items} root={token.id} />
                        <button type="button" class="danger" onClick={() => run('DELETE', `/v1/admin-tokens/${segment(token.id)}`, tokens.refresh)}>
                          Confirm revoke
                        </button>
                        <button type="button" onClick={() => setConfirm(undefined)}>
                          Keep
                        </button>
                      </>
                    ) : (
                      <button type="button" class="danger" onClick={() => setConfirm(token.id)}>
                        Revoke
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <ShowMore list={tokens} label="Show more tokens" testId="more-tokens" />
        </section>
        <NewToken onCreated={tokens.refresh} />
      </div>
      <section class="card">
        <h2>Signing keys</h2>
        <p class="muted small">Rotation makes a new key active; the previous one keeps verifying until the tokens it signed expire.</p>
        <ErrorLine error={keys.error} />
        <table data-testid="signing-keys">
          <thead>
            <tr>
              <th>kid</th>
              <th>alg</th>
              <th>Status</th>
              <th>Created</th>
              <th>Retired</th>
            </tr>
          </thead>
          <tbody>
            {keys.items.map((key) => (
              <tr>
                <td class="mono small">{key.kid}</td>
                <td>{key.alg}</td>
                <td>
                  <Pill value={key.status} />
                </td>
                <td class="small">{when(key.created_at)}</td>
                <td class="small">{when(key.retired_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        <ShowMore list={keys} label="Show more keys" testId="more-keys" />
        <button type="button" onClick={() => run('POST', '/v1/keys/rotate', keys.refresh)}>
          Rotate the signing key
        </button>
      </section>
    </div>
  );
}
