import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, FieldError, newIdempotencyKey, query, Role, segment } from '../api';
import type { Route } from '../main';
import { describeError, ErrorLine, Field, Pill, reveal, ShowMore, usePagedPoll, useRouteFilters, useSingleFlight, when } from '../ui';

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

/** The answer to `POST /v1/connections/links`: `url` only in the first answer, never in a replay. */
interface ConnectLink {
  url?: string;
  expires_at: string;
  connector_id: string;
  user: { iss: string; sub: string };
}

const FILTERS = ['connector_id', 'user_iss', 'user_sub'] as const;

/**
 * A create the person has confirmed, frozen: the body the confirmation named, and the
 * `Idempotency-Key` that every attempt of it sends (a double click, a retry after a 503 or a
 * lost answer), so that the API creates it once. A new key only for a new confirmation.
 */
interface PendingCreate<T> {
  body: T;
  key: string;
}

/** The confirmation of a change: what it changes, named, then the button that makes it. */
function Confirm({
  children,
  label,
  busy,
  error,
  onConfirm,
  onCancel,
  testId,
}: {
  children: ComponentChildren;
  label: string;
  busy: boolean;
  error: string | undefined;
  onConfirm: () => void;
  onCancel: () => void;
  testId: string;
}) {
  return (
    <div class="confirm" role="group" aria-label="confirmation" data-testid={testId}>
      <p data-testid="confirm-text">{children}</p>
      <ErrorLine error={error} />
      <div class="buttons">
        <button type="button" class="danger" disabled={busy} onClick={onConfirm}>
          {busy ? 'Working…' : label}
        </button>
        <button type="button" onClick={onCancel} disabled={busy}>
          Cancel
        </button>
      </div>
    </div>
  );
}

/**
 * A button whose action runs only after a confirmation (`children` say what changes). The button
 * stays where it is (disabled while the confirmation is open) and the confirmation opens below
 * it: a double click on the button cannot land its second click on Confirm. `run` answers the
 * notice to show once done.
 */
function ConfirmedAction(props: {
  button: string;
  confirm: string;
  testId: string;
  run: () => Promise<string>;
  onDone: (notice: string) => void;
  children: ComponentChildren;
}) {
  const [open, setOpen] = useState(false);
  const [error, setError] = useState<string | undefined>();
  const flight = useSingleFlight();
  const confirmed = () =>
    flight.run(async () => {
      setError(undefined);
      try {
        const notice = await props.run();
        setOpen(false);
        props.onDone(notice);
      } catch (caught) {
        setError(describeError(caught).message);
      }
    });
  return (
    <>
      <button type="button" class="danger" disabled={open} onClick={() => setOpen(true)}>
        {props.button}
      </button>
      {open ? (
        <Confirm label={props.confirm} busy={flight.busy} error={error} onConfirm={confirmed} onCancel={() => setOpen(false)} testId={props.testId}>
          {props.children}
        </Confirm>
      ) : null}
    </>
  );
}

/** Disconnect (operator): removes the connection and revokes its grant at the upstream, after a confirmation naming it. */
function DisconnectControl({ connection, onDone }: { connection: Connection; onDone: (notice: string) => void }) {
  const disconnect = async () => {
    const removed = await api<{ upstream_revocation: string }>('DELETE', `/v1/connections/${segment(connection.id)}`);
    return `Disconnected ${reveal(connection.user.sub)} (${reveal(connection.user.iss)}) from ${reveal(connection.connector_id)}; upstream revocation: ${reveal(String(removed?.upstream_revocation ?? 'unknown'))}.`;
  };
  return (
    <ConfirmedAction button="Disconnect" confirm="Confirm disconnect" testId="confirm-disconnect" run={disconnect} onDone={onDone}>
      Disconnect user <strong>{reveal(connection.user.sub)}</strong> of <span class="mono">{reveal(connection.user.iss)}</span> from{' '}
      <strong>{reveal(connection.connector_id)}</strong>: the connection is removed at once (calls made for this user with it stop) and its grant is revoked at
      the upstream. The user must connect again to use it.
    </ConfirmedAction>
  );
}

/**
 * A connect link for a user (operator). Confirmed first, naming the connector and the user; sent
 * with one `Idempotency-Key` per confirmation. The URL (it carries the link's secret) is shown
 * once, in this panel only: never logged, never put in the location, the title or a message, and
 * dropped from the page's state on **Done**.
 */
function ConnectLinkForm({ issuers }: { issuers: string[] }) {
  const [connector, setConnector] = useState('');
  const [issuer, setIssuer] = useState('');
  const [subject, setSubject] = useState('');
  const [pending, setPending] = useState<PendingCreate<{ connector_id: string; user: { iss: string; sub: string } }> | undefined>();
  const [errors, setErrors] = useState<FieldError[]>([]);
  const [message, setMessage] = useState<string | undefined>();
  const [created, setCreated] = useState<Required<ConnectLink> | undefined>();
  const [lost, setLost] = useState<ConnectLink | undefined>();
  const [copied, setCopied] = useState<string | undefined>();
  const flight = useSingleFlight();
  const review = (event: Event) => {
    event.preventDefault();
    // Already confirming: the same create, with the same key.
    if (pending) return;
    setErrors([]);
    setMessage(undefined);
    setLost(undefined);
    setPending({ body: { connector_id: connector.trim(), user: { iss: issuer.trim(), sub: subject } }, key: newIdempotencyKey() });
  };
  const create = () =>
    flight.run(async () => {
      if (!pending) return;
      setMessage(undefined);
      try {
        const link = await api<ConnectLink>('POST', '/v1/connections/links', pending.body, { idempotencyKey: pending.key });
        setPending(undefined);
        setErrors([]);
        if (typeof link.url === 'string') {
          setCreated({ ...link, url: link.url });
          setSubject('');
        } else {
          // A replay: an earlier attempt made the link, and its answer (the only one with the URL) was lost.
          setLost(link);
        }
      } catch (caught) {
        const described = describeError(caught);
        setErrors(described.fields);
        setMessage(described.message);
      }
    });
  const copy = async (url: string) => {
    try {
      await navigator.clipboard.writeText(url);
      setCopied('Copied.');
    } catch {
      setCopied('The browser refused the clipboard: select the link and copy it.');
    }
  };
  const done = () => {
    setCreated(undefined);
    setCopied(undefined);
  };
  return (
    <form class="card" onSubmit={review} data-testid="connect-link-form" novalidate>
      <h2>Connect link</h2>
      <p class="muted small">
        A one-time link, valid 10 minutes, that lets a user connect their account on a connector with an <code>oauth2_authorization_code</code> credential.
      </p>
      <fieldset disabled={pending !== undefined}>
        <Field label="Connector" name="connector_id" errors={errors}>
          <input name="connector_id" value={connector} onInput={(event) => setConnector(event.currentTarget.value)} />
        </Field>
        <Field label="User issuer" name="user.iss" errors={errors} hint="a registered identity provider">
          <input name="link_user_iss" list="link-issuers" value={issuer} onInput={(event) => setIssuer(event.currentTarget.value)} />
        </Field>
        <datalist id="link-issuers">
          {issuers.map((value) => (
            <option value={value} />
          ))}
        </datalist>
        <Field label="User subject" name="user.sub" errors={errors}>
          <input name="link_user_sub" value={subject} onInput={(event) => setSubject(event.currentTarget.value)} />
        </Field>
        <button type="submit" class="primary">
          Create connect link…
        </button>
      </fieldset>
      {pending ? (
        <Confirm
          label="Confirm: create the link"
          busy={flight.busy}
          error={message}
          onConfirm={create}
          onCancel={() => {
            setPending(undefined);
            setMessage(undefined);
          }}
          testId="confirm-link"
        >
          Create a one-time link that connects user <strong>{reveal(pending.body.user.sub)}</strong> of{' '}
          <span class="mono">{reveal(pending.body.user.iss)}</span> to <strong>{reveal(pending.body.connector_id)}</strong>. Whoever opens it within 10 minutes
          connects their account as this user: give it to that user only.
        </Confirm>
      ) : (
        <ErrorLine error={message} />
      )}
      {lost ? (
        <p class="warn" role="status" data-testid="link-url-lost">
          An earlier attempt created this link (for {reveal(lost.user.sub)} on {reveal(lost.connector_id)}), but its answer, the only one with the URL, did not
          reach this page; the URL is kept only hashed and cannot be shown again. It expires unused at {when(lost.expires_at)}. Create another link.
        </p>
      ) : null}
      {created ? (
        <div class="once" role="status" data-testid="created-link">
          <p>
            Link for <strong>{reveal(created.user.sub)}</strong> on <strong>{reveal(created.connector_id)}</strong>, usable once until{' '}
            {when(created.expires_at)}. Copy it now: it is shown only once.
          </p>
          <input readOnly class="mono" data-testid="connect-link-url" value={created.url} onFocus={(event) => event.currentTarget.select()} />
          <div class="buttons">
            <button type="button" onClick={() => void copy(created.url)}>
              Copy
            </button>
            <button type="button" onClick={done}>
              Done
            </button>
          </div>
          {copied ? <p class="small muted">{copied}</p> : null}
        </div>
      ) : null}
    </form>
  );
}

/** Registers a trusted identity provider (admin), confirmed first, with one `Idempotency-Key` per confirmation. */
function ProviderForm({ onChanged }: { onChanged: (notice: string) => void }) {
  const [issuer, setIssuer] = useState('');
  const [jwksUri, setJwksUri] = useState('');
  const [audience, setAudience] = useState('');
  const [asserting, setAsserting] = useState('');
  const [pending, setPending] = useState<
    PendingCreate<{ issuer: string; jwks_uri: string; audience: string; asserting_orchestrators: string[] }> | undefined
  >();
  const [errors, setErrors] = useState<FieldError[]>([]);
  const [message, setMessage] = useState<string | undefined>();
  const flight = useSingleFlight();
  const review = (event: Event) => {
    event.preventDefault();
    if (pending) return;
    setErrors([]);
    setMessage(undefined);
    const orchestrators = asserting
      .split(/[\s,]+/)
      .map((value) => value.trim())
      .filter((value) => value !== '');
    setPending({ body: { issuer: issuer.trim(), jwks_uri: jwksUri.trim(), audience, asserting_orchestrators: orchestrators }, key: newIdempotencyKey() });
  };
  const register = () =>
    flight.run(async () => {
      if (!pending) return;
      setMessage(undefined);
      try {
        const provider = await api<IdentityProvider>('POST', '/v1/identity-providers', pending.body, { idempotencyKey: pending.key });
        setPending(undefined);
        setErrors([]);
        setIssuer('');
        setJwksUri('');
        setAudience('');
        setAsserting('');
        onChanged(`Registered the identity provider ${reveal(provider.issuer)}.`);
      } catch (caught) {
        const described = describeError(caught);
        setErrors(described.fields);
        setMessage(described.message);
      }
    });
  const body = pending?.body;
  return (
    <form class="card" onSubmit={review} data-testid="provider-form" novalidate>
      <h2>Register an identity provider</h2>
      <fieldset disabled={pending !== undefined}>
        <Field label="Issuer" name="issuer" errors={errors} hint="the iss of its users' tokens, exactly">
          <input name="issuer" value={issuer} onInput={(event) => setIssuer(event.currentTarget.value)} />
        </Field>
        <Field label="JWKS URI" name="jwks_uri" errors={errors}>
          <input name="jwks_uri" value={jwksUri} onInput={(event) => setJwksUri(event.currentTarget.value)} />
        </Field>
        <Field label="Audience" name="audience" errors={errors} hint="the aud its user tokens carry">
          <input name="audience" value={audience} onInput={(event) => setAudience(event.currentTarget.value)} />
        </Field>
        <Field label="Asserting orchestrators" name="asserting_orchestrators" errors={errors} hint="ids, comma-separated; usually none">
          <input name="asserting_orchestrators" value={asserting} onInput={(event) => setAsserting(event.currentTarget.value)} />
        </Field>
        <button type="submit" class="primary">
          Register provider…
        </button>
      </fieldset>
      {body ? (
        <Confirm
          label="Confirm: trust this provider"
          busy={flight.busy}
          error={message}
          onConfirm={register}
          onCancel={() => {
            setPending(undefined);
            setMessage(undefined);
          }}
          testId="confirm-provider"
        >
          Trust <span class="mono">{reveal(body.issuer)}</span>: a user token it signs (with a key from <span class="mono">{reveal(body.jwks_uri)}</span>) for
          the audience <strong>{reveal(body.audience)}</strong> then proves who a task acts for, and so whose connected accounts it may use.{' '}
          {body.asserting_orchestrators.length > 0 ? (
            <>
              Orchestrators <strong>{reveal(body.asserting_orchestrators.join(', '))}</strong> may also name any user of this issuer without a token.
            </>
          ) : (
            'No orchestrator may name its users without a token.'
          )}
        </Confirm>
      ) : (
        <ErrorLine error={message} />
      )}
    </form>
  );
}

/** Remove (admin): stops trusting an identity provider, after a confirmation naming it. */
function RemoveProviderControl({ provider, onDone }: { provider: IdentityProvider; onDone: (notice: string) => void }) {
  const remove = async () => {
    await api('DELETE', `/v1/identity-providers/${segment(provider.issuer)}`);
    return `Removed the identity provider ${reveal(provider.issuer)}.`;
  };
  return (
    <ConfirmedAction button="Remove" confirm="Confirm remove" testId="confirm-remove-provider" run={remove} onDone={onDone}>
      Stop trusting <span class="mono">{reveal(provider.issuer)}</span>: its users' tokens are refused from then on, for new tasks and connect links, and no
      orchestrator may name its users. Existing connections and tasks already declared for its users are kept.
    </ConfirmedAction>
  );
}

/**
 * Users' connected accounts (`GET /v1/connections`: by connector and/or user, newest first) and
 * the identity providers whose users they belong to, each list paged as the API pages it. The
 * user's issuer and subject, scopes and an upstream's refresh error come from outside: shown as
 * text, hidden characters made visible, in the lists and in every confirmation. An operator may
 * disconnect an account and create a connect link; an admin may register and remove identity
 * providers (the API's roles: the controls of a role below are not shown).
 */
export function ConnectionsPage({ route, can }: { route: Route; can: (role: Role) => boolean }) {
  const { applied, apply, field } = useRouteFilters(route.params, FILTERS, 'connections');
  const [notice, setNotice] = useState<string | undefined>();
  const connections = usePagedPoll<Connection>((cursor) => `/v1/connections${query({ ...applied, limit: 100, cursor })}`, 10_000, [JSON.stringify(applied)]);
  const providers = usePagedPoll<IdentityProvider>((cursor) => `/v1/identity-providers${query({ limit: 100, cursor })}`, 30_000);
  const connectionsChanged = (text: string) => {
    setNotice(text);
    connections.refresh();
  };
  const providersChanged = (text: string) => {
    setNotice(text);
    providers.refresh();
  };
  return (
    <div>
      <h1>Connections</h1>
      {notice ? (
        <p class="ok" role="status" data-testid="connections-notice">
          {notice}
        </p>
      ) : null}
      <form class="card filters" onSubmit={apply}>
        {field('connector_id', 'Connector')}
        {field('user_iss', 'User issuer')}
        {field('user_sub', 'User subject')}
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
              {can('operator') ? <th /> : null}
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
                {can('operator') ? (
                  <td class="actions">
                    <DisconnectControl connection={connection} onDone={connectionsChanged} />
                  </td>
                ) : null}
              </tr>
            ))}
          </tbody>
        </table>
        <ShowMore list={connections} label="Show more connections" testId="more-connections" />
      </section>
      {can('operator') ? <ConnectLinkForm issuers={providers.items.map((provider) => provider.issuer)} /> : null}
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
              {can('admin') ? <th /> : null}
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
                {can('admin') ? (
                  <td class="actions">
                    <RemoveProviderControl provider={provider} onDone={providersChanged} />
                  </td>
                ) : null}
              </tr>
            ))}
          </tbody>
        </table>
        <ShowMore list={providers} label="Show more providers" testId="more-providers" />
      </section>
      {can('admin') ? <ProviderForm onChanged={providersChanged} /> : null}
    </div>
  );
}
