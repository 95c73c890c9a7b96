import './console.css';
import { Component, ComponentChildren, render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, Page, Role, roleAtLeast, setToken, setUnauthorizedHandler } from './api';
import { AccessPage } from './pages/access';
import { APPROVALS_CHANGED, ApprovalsPage } from './pages/approvals';
import { AuditPage } from './pages/audit';
import { ConnectionsPage } from './pages/connections';
import { PoliciesPage } from './pages/policies';
import { RegistryPage } from './pages/registry';
import { TaskSearchPage } from './pages/task-search';
import { TasksPage } from './pages/tasks';
import { ErrorLine, reveal, usePoll } from './ui';

/** Who is signed in (from `GET /v1/admin-tokens/self`). */
export interface Session {
  id: string;
  name: string;
  role: Role;
}

/** The parsed location hash: `#/audit?task_id=…` → `{page: 'audit', sub: undefined, params}`. */
export interface Route {
  page: string;
  sub: string | undefined;
  params: URLSearchParams;
}

function parseHash(): Route {
  const [path, search] = window.location.hash.replace(/^#\/?/, '').split('?');
  const [page, sub] = (path || 'tasks').split('/');
  return { page: page || 'tasks', sub, params: new URLSearchParams(search ?? '') };
}

function useRoute(): Route {
  const [route, setRoute] = useState(parseHash());
  useEffect(() => {
    const onChange = () => setRoute(parseHash());
    window.addEventListener('hashchange', onChange);
    return () => window.removeEventListener('hashchange', onChange);
  }, []);
  return route;
}

/**
 * The sign-in form: a page of its own, or (`ended`) a dialog over the console whose session has
 * just ended, so that the page under it and everything typed in it stay as they were.
 */
function SignIn({ onSignedIn, ended, onSignOut }: { onSignedIn: (session: Session) => void; ended?: boolean; onSignOut?: () => void }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    setToken(value.trim());
    try {
      const session = await api<Session>('GET', '/v1/admin-tokens/self', undefined, { quiet401: true });
      setValue('');
      onSignedIn(session);
    } catch (caught) {
      setToken(null);
      setError(
        caught instanceof ApiError && caught.status === 401
          ? 'This admin token is unknown or revoked.'
          : caught instanceof Error
            ? caught.message
            : String(caught),
      );
    } finally {
      setBusy(false);
    }
  };
  const form = (
    <form onSubmit={submit} class="card">
      <h1 id="signin-title">{ended ? 'Session ended' : 'Writ console'}</h1>
      {ended ? (
        <p role="alert" data-testid="session-ended">
          The admin API refused this console's token (401): it expired or was revoked. Sign in again to carry on where you were: what you typed is kept, and
          nothing was saved by the refused request.
        </p>
      ) : null}
      <p class="muted">Sign in with an admin token. It is kept in this page's memory only: reloading or closing the tab signs you out.</p>
      <label>
        <span class="label">Admin token</span>
        <input
          name="token"
          type="password"
          autocomplete="off"
          spellcheck={false}
          required
          value={value}
          onInput={(event) => setValue((event.target as HTMLInputElement).value)}
        />
      </label>
      <ErrorLine error={error} />
      <button type="submit" class="primary" disabled={busy}>
        Sign in
      </button>
      {onSignOut ? (
        <button type="button" onClick={onSignOut}>
          Sign out and discard
        </button>
      ) : null}
    </form>
  );
  return ended ? (
    <div class="signin reauth" role="dialog" aria-modal="true" aria-labelledby="signin-title">
      {form}
    </div>
  ) : (
    <main class="signin">{form}</main>
  );
}

/**
 * A page that throws while rendering (an answer of a shape it does not expect) shows why, in place
 * of the page: without this, Preact unmounts the whole console, a blank tab with no way on but a
 * reload, which signs the admin out and drops what they typed elsewhere. The top bar stays, and
 * another page (a new `key`) starts afresh.
 */
class PageBoundary extends Component<{ children: ComponentChildren }, { failed?: string }> {
  state: { failed?: string } = {};
  componentDidCatch(error: unknown) {
    this.setState({ failed: error instanceof Error ? error.message : String(error) });
  }
  render() {
    if (this.state.failed === undefined) return this.props.children;
    return (
      <section class="card" data-testid="page-failed">
        <h1>This page could not be shown</h1>
        <ErrorLine error={`It failed while showing an answer of the admin API: ${this.state.failed}`} />
        <button type="button" onClick={() => this.setState({ failed: undefined })}>
          Try again
        </button>
      </section>
    );
  }
}

const NAV: { page: string; label: string; role: Role }[] = [
  { page: 'tasks', label: 'Live tasks', role: 'viewer' },
  { page: 'task-search', label: 'Task search', role: 'viewer' },
  { page: 'approvals', label: 'Approvals', role: 'viewer' },
  { page: 'audit', label: 'Audit', role: 'viewer' },
  { page: 'registry', label: 'Registry', role: 'viewer' },
  { page: 'connections', label: 'Connections', role: 'viewer' },
  { page: 'policies', label: 'Policies', role: 'viewer' },
  { page: 'access', label: 'Access', role: 'admin' },
];

function Shell({ session, onSignOut, inert }: { session: Session; onSignOut: () => void; inert: boolean }) {
  const route = useRoute();
  const pending = usePoll(() => api<Page<{ id: string }>>('GET', '/v1/approvals?status=pending&limit=200'), 3000);
  const count = pending.data?.items.length ?? 0;
  useEffect(() => {
    const onChange = () => pending.refresh();
    window.addEventListener(APPROVALS_CHANGED, onChange);
    return () => window.removeEventListener(APPROVALS_CHANGED, onChange);
  }, []);
  const seen = useRef<Set<string> | undefined>(undefined);
  const [toast, setToast] = useState<string | undefined>();
  useEffect(() => {
    if (!pending.data) return;
    const ids = new Set(pending.data.items.map((item) => item.id));
    if (seen.current) {
      const fresh = [...ids].filter((id) => !seen.current!.has(id)).length;
      if (fresh > 0) setToast(`${fresh} new approval${fresh > 1 ? 's' : ''} waiting`);
      else if (ids.size === 0) setToast(undefined);
    }
    seen.current = ids;
    document.title = count > 0 ? `(${count}${pending.data.next_cursor ? '+' : ''}) Writ console` : 'Writ console';
  }, [pending.data]);
  useEffect(() => {
    if (route.page === 'approvals') setToast(undefined);
  }, [route.page]);
  useEffect(() => {
    if (!toast) return;
    const timer = window.setTimeout(() => setToast(undefined), 15_000);
    return () => window.clearTimeout(timer);
  }, [toast]);
  const can = (role: Role) => roleAtLeast(session.role, role);
  let page;
  switch (route.page) {
    case 'approvals':
      page = <ApprovalsPage can={can} />;
      break;
    case 'audit':
      page = <AuditPage route={route} />;
      break;
    case 'registry':
      page = <RegistryPage route={route} can={can} />;
      break;
    case 'task-search':
      page = <TaskSearchPage route={route} />;
      break;
    case 'connections':
      page = <ConnectionsPage route={route} can={can} />;
      break;
    case 'policies':
      page = <PoliciesPage can={can} />;
      break;
    case 'access':
      page = can('admin') ? <AccessPage selfId={session.id} /> : <TasksPage can={can} />;
      break;
    default:
      page = <TasksPage can={can} />;
  }
  return (
    <div class="shell" inert={inert} aria-hidden={inert ? 'true' : undefined}>
      <header class="top">
        <span class="brand">Writ</span>
        <nav>
          {NAV.filter((item) => can(item.role)).map((item) => (
            <a href={`#/${item.page}`} class={route.page === item.page ? 'active' : ''} aria-current={route.page === item.page ? 'page' : undefined}>
              {item.label}
              {item.page === 'approvals' && count > 0 ? (
                <span class="badge" aria-label={`${count} pending`} data-testid="approvals-badge">
                  {count}
                  {pending.data?.next_cursor ? '+' : ''}
                </span>
              ) : null}
            </a>
          ))}
        </nav>
        <span class="who" data-testid="who">
          {reveal(session.name)} <span class={`pill pill-role`}>{session.role}</span>
        </span>
        <button type="button" onClick={onSignOut}>
          Sign out
        </button>
      </header>
      {toast ? (
        <div class="toast" role="status">
          {toast} —{' '}
          <a href="#/approvals" onClick={() => setToast(undefined)}>
            review
          </a>
          <button type="button" class="link" onClick={() => setToast(undefined)} aria-label="dismiss">
            ×
          </button>
        </div>
      ) : null}
      <main class="content">
        <PageBoundary key={route.page}>{page}</PageBoundary>
      </main>
    </div>
  );
}

function App() {
  const [session, setSession] = useState<Session | null>(null);
  // A 401 (the token expired or was revoked meanwhile) forgets the token at once but keeps the
  // page: it asks for a token over it, so that a form half filled, a reason typed for a
  // revocation or a note for an approval is still there to send once signed in again.
  const [ended, setEnded] = useState(false);
  useEffect(() => {
    setUnauthorizedHandler(() => {
      setToken(null);
      setEnded(true);
    });
  }, []);
  const signOut = () => {
    setToken(null);
    setSession(null);
    setEnded(false);
  };
  // Leaving the page signs out, as closing the tab does. The browser keeps a page left by a
  // navigation in its back/forward cache, whole, memory included: Back would otherwise bring the
  // console back signed in, polling with the token, to whoever uses the browser next.
  useEffect(() => {
    const leave = () => signOut();
    window.addEventListener('pagehide', leave);
    return () => window.removeEventListener('pagehide', leave);
  }, []);
  const signedIn = (next: Session) => {
    setSession(next);
    setEnded(false);
  };
  if (!session) return <SignIn onSignedIn={signedIn} />;
  return (
    <>
      <Shell session={session} onSignOut={signOut} inert={ended} />
      {ended ? <SignIn onSignedIn={signedIn} ended onSignOut={signOut} /> : null}
    </>
  );
}

render(<App />, document.getElementById('app')!);
