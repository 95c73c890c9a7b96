import { useState } from 'preact/hooks';
import { query } from '../api';
import type { Route } from '../main';
import { ErrorLine, Pill, reveal, ShowMore, usePagedPoll, when } from '../ui';

/** A user's connected account as the admin API lists it (never its tokens). */
interface Connection {
  id: string;
  connector_id: string;
  user: { iss: string; sub: string };
  status: string;
  scopes: string[];
  broken_error: string | null;
  access_expires_at: string | null;
  connected_at: string;
  refreshed_at: string | null;
}

/** A trusted identity provider as the admin API lists it. */
interface IdentityProvider {
  issuer: string;
  jwks_uri: string;
  audience: string;
  asserting_orchestrators: string[];
  created_at: string;
}

const FILTERS = ['connector_id', 'user_iss', 'user_sub'] as const;
type Filters = Partial<Record<(typeof FILTERS)[number], string>>;

/**
 * Users' connected accounts (`GET /v1/connections`: by connector and/or user, newest first) and
 * the identity providers whose users they belong to, each list paged as the API pages it. The
 * user's issuer and subject, scopes and an upstream's refresh error come from outside: shown as
 * text, hidden characters made visible.
 */
export function ConnectionsPage({ route }: { route: Route }) {
  const applied: Filters = {};
  for (const name of FILTERS) {
    const value = route.params.get(name);
    if (value) applied[name] = value;
  }
  const [draft, setDraft] = useState<Filters>(applied);
  const connections = usePagedPoll<Connection>((cursor) => `/v1/connections${query({ ...applied, limit: 100, cursor })}`, 10_000, [JSON.stringify(applied)]);
  const providers = usePagedPoll<IdentityProvider>((cursor) => `/v1/identity-providers${query({ limit: 100, cursor })}`, 30_000);
  const apply = (event: Event) => {
    event.preventDefault();
    const search = new URLSearchParams();
    for (const name of FILTERS) if (draft[name]) search.set(name, draft[name]);
    window.location.hash = `#/connections?${search.toString()}`;
  };
  const input = (name: (typeof FILTERS)[number], label: string) => (
    <label>
      <span class="label">{label}</span>
      <input name={name} type="text" value={draft[name] ?? ''} onInput={(event) => setDraft({ ...draft, [name]: event.currentTarget.value })} />
    </label>
  );
  return (
    <div>
      <h1>Connections</h1>
      <form class="card filters" onSubmit={apply}>
        {input('connector_id', 'Connector')}
        {input('user_iss', 'User issuer')}
        {input('user_sub', 'User subject')}
        <button type="submit" class="primary">
          Filter
        </button>
      </form>
      <section class="card">
        <h2>Connected accounts</h2>
        <ErrorLine error={connections.error} />
        {connections.loaded && connections.items.length === 0 ? <p class="muted">No connected account.</p> : null}
        <table data-testid="connections-table">
          <thead>
            <tr>
              <th>Connector</th>
              <th>User</th>
              <th>Status</th>
              <th>Scopes</th>
              <th>Connected</th>
              <th>Refreshed</th>
              <th>Access expires</th>
            </tr>
          </thead>
          <tbody>
            {connections.items.map((connection) => (
              <tr key={connection.id} data-id={connection.id}>
                <td class="mono">{reveal(connection.connector_id)}</td>
                <td>
                  <strong data-testid="user-sub">{reveal(connection.user.sub)}</strong>
                  <div class="muted small">{reveal(connection.user.iss)}</div>
                </td>
                <td>
                  <Pill value={connection.status} />
                  {connection.broken_error ? <div class="small warn">{reveal(connection.broken_error)}</div> : null}
                </td>
                <td class="small">{reveal(connection.scopes.join(' '))}</td>
                <td class="small">{when(connection.connected_at)}</td>
                <td class="small">{when(connection.refreshed_at)}</td>
                <td class="small">{when(connection.access_expires_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        <ShowMore list={connections} label="Show more connections" testId="more-connections" />
      </section>
      <section class="card">
        <h2>Identity providers</h2>
        <ErrorLine error={providers.error} />
        <table data-testid="identity-providers">
          <thead>
            <tr>
              <th>Issuer</th>
              <th>Audience</th>
              <th>JWKS</th>
              <th>Asserting orchestrators</th>
              <th>Registered</th>
            </tr>
          </thead>
          <tbody>
            {providers.items.map((provider) => (
              <tr key={provider.issuer}>
                <td class="mono small">{reveal(provider.issuer)}</td>
                <td>{reveal(provider.audience)}</td>
                <td class="mono small">{reveal(provider.jwks_uri)}</td>
                <td class="small">{reveal(provider.asserting_orchestrators.join(', '))}</td>
                <td class="small">{when(provider.created_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        <ShowMore list={providers} label="Show more providers" testId="more-providers" />
      </section>
    </div>
  );
}
