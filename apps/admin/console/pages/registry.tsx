import { useEffect, useRef, useState } from 'preact/hooks';
import { api, FieldError, newIdempotencyKey, Page, query, Role, segment } from '../api';
import type { Route } from '../main';
import { describeError, ErrorLine, Field, parseJsonField, Pill, reveal, ShowMore, usePagedPoll, useSingleFlight, when } from '../ui';

type Kind = 'agents' | 'orchestrators' | 'connectors';

/** A registered agent, orchestrator or connector, as listed. */
interface Resource {
  id: string;
  name: string;
  description?: string | null;
  status?: string;
  jwks?: { keys?: { kid?: string }[] };
  allowed_agents?: string[];
  base_url?: string;
  operations?: { name: string; method: string; path: string; risk: string }[];
  credential?: { type: string; fingerprint: string; set_at: string } | null;
  updated_at: string;
}

/** The form's text state: JSON members are edited as text. */
interface Draft {
  id: string;
  name: string;
  description: string;
  jwks: string;
  allowed_agents: string;
  base_url: string;
  operations: string;
  credential: string;
}

const EMPTY: Draft = { id: '', name: '', description: '', jwks: '{"keys": []}', allowed_agents: '', base_url: '', operations: '[]', credential: '' };

function draftOf(resource: Resource): Draft {
  return {
    id: resource.id,
    name: resource.name,
    description: resource.description ?? '',
    jwks: JSON.stringify(resource.jwks ?? { keys: [] }, null, 2),
    allowed_agents: (resource.allowed_agents ?? []).join(', '),
    base_url: resource.base_url ?? '',
    operations: JSON.stringify(resource.operations ?? [], null, 2),
    credential: '',
  };
}

/** The request body for a create (all members) or an edit (changed members only). */
function bodyOf(kind: Kind, draft: Draft, original: Resource | undefined, errors: FieldError[]): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  const base = original ? draftOf(original) : undefined;
  const changed = (name: keyof Draft) => !base || draft[name] !== base[name];
  if (!original && draft.id) body.id = draft.id;
  if (changed('name')) body.name = draft.name;
  if (kind === 'connectors') {
    if (changed('base_url')) body.base_url = draft.base_url;
    if (changed('operations')) body.operations = parseJsonField(draft.operations, 'operations', errors);
    if (draft.credential.trim()) body.credential = parseJsonField(draft.credential, 'credential', errors);
  } else {
    if (changed('description')) body.description = draft.description === '' ? (original ? null : undefined) : draft.description;
    if (changed('jwks')) body.jwks = parseJsonField(draft.jwks, 'jwks', errors);
    if (kind === 'orchestrators' && changed('allowed_agents'))
      body.allowed_agents = draft.allowed_agents
        .split(',')
        .map((id) => id.trim())
        .filter(Boolean);
  }
  return body;
}

function Editor({ kind, original, onDone, onCancel }: { kind: Kind; original?: Resource; onDone: () => void; onCancel: () => void }) {
  const [draft, setDraft] = useState<Draft>(original ? draftOf(original) : EMPTY);
  const [errors, setErrors] = useState<FieldError[]>([]);
  const [message, setMessage] = useState<string | undefined>();
  // The version being edited, read afresh with its ETag: the change is sent with If-Match, so
  // that an edit made meanwhile by someone else is never overwritten (the API answers 412).
  const [base, setBase] = useState<Resource | undefined>(original);
  const [version, setVersion] = useState<string | undefined>();
  useEffect(() => {
    if (!original) return;
    let open = true;
    let tag: string | undefined;
    api<Resource>('GET', `/v1/${kind}/${segment(original.id)}`, undefined, { onEntityTag: (answered) => (tag = answered) })
      .then((fresh) => {
        if (!open) return;
        setBase(fresh);
        setVersion(tag);
        // Typed changes are kept; every field not typed in shows the version read (kept as the
        // list showed it, it would be sent back as a change and undo another admin's edit).
        const listed = draftOf(original);
        const read = draftOf(fresh);
        setDraft((current) => {
          const merged = { ...current };
          for (const name of Object.keys(read) as (keyof Draft)[]) if (current[name] === listed[name]) merged[name] = read[name];
          return merged;
        });
      })
      .catch((caught: unknown) => open && setMessage(describeError(caught).message));
    return () => {
      open = false;
    };
  }, [kind, original]);
  // A create's Idempotency-Key: kept while the form is unchanged, so that a double click or a retry
  // after a failure registers one agent (an id left empty is generated anew by each request).
  const key = useRef<string | undefined>(undefined);
  const flight = useSingleFlight();
  const set = (name: keyof Draft) => (event: Event) => {
    key.current = undefined;
    setDraft({ ...draft, [name]: (event.target as HTMLInputElement).value });
  };
  const save = (event: Event) => {
    event.preventDefault();
    return flight.run(() => send());
  };
  const send = async () => {
    // An edit is sent only with the version it applies to: before the read answers there is none.
    if (original && version === undefined) {
      setMessage('the current version is still being read (or could not be): save again once it is shown, or cancel');
      return;
    }
    const local: FieldError[] = [];
    const body = bodyOf(kind, draft, base, local);
    if (local.length) {
      setErrors(local);
      setMessage('fix the fields marked below');
      return;
    }
    try {
      if (original) await api('PATCH', `/v1/${kind}/${segment(original.id)}`, body, { ifMatch: version });
      else await api('POST', `/v1/${kind}`, body, { idempotencyKey: (key.current ??= newIdempotencyKey()) });
      onDone();
    } catch (caught) {
      const { message: text, fields } = describeError(caught);
      setErrors(fields);
      setMessage(text);
    }
  };
  const singular = kind.slice(0, -1);
  return (
    <form class="card editor" onSubmit={save} data-testid="editor" novalidate>
      <h2>{original ? `Edit ${singular} ${original.id}` : `New ${singular}`}</h2>
      <ErrorLine error={message} />
      {!original ? (
        <Field label="Id" name="id" errors={errors} hint={kind === 'connectors' ? 'lower case, e.g. payments' : 'optional: generated when empty'}>
          <input name="id" value={draft.id} onInput={set('id')} />
        </Field>
      ) : null}
      <Field label="Name" name="name" errors={errors}>
        <input name="name" value={draft.name} onInput={set('name')} />
      </Field>
      {kind === 'connectors' ? (
        <>
          <Field label="Base URL" name="base_url" errors={errors}>
            <input name="base_url" value={draft.base_url} onInput={set('base_url')} placeholder="https://api.example.com" />
          </Field>
          <Field
            label="Operations (JSON)"
            name="operations"
            errors={errors}
            hint='[{"name":"payouts.create","method":"POST","path":"/v1/payouts","risk":"write","constraints":{}}]'
          >
            <textarea name="operations" rows={8} value={draft.operations} onInput={set('operations')} spellcheck={false} />
          </Field>
          <Field
            label="Upstream credential (JSON, write-only)"
            name="credential"
            errors={errors}
            hint={
              original?.credential
                ? `set: ${original.credential.type} ${original.credential.fingerprint}; leave empty to keep it`
                : '{"type":"bearer","token":"…"}; never shown again'
            }
          >
            <textarea name="credential" rows={3} value={draft.credential} onInput={set('credential')} spellcheck={false} autocomplete="off" />
          </Field>
        </>
      ) : (
        <>
          <Field label="Description" name="description" errors={errors}>
            <input name="description" value={draft.description} onInput={set('description')} />
          </Field>
          <Field label="Public keys (JWKS)" name="jwks" errors={errors} hint="public keys only; private members are refused">
            <textarea name="jwks" rows={6} value={draft.jwks} onInput={set('jwks')} spellcheck={false} />
          </Field>
          {kind === 'orchestrators' ? (
            <Field label="Allowed agents" name="allowed_agents" errors={errors} hint='comma-separated agent ids, or "*"'>
              <input name="allowed_agents" value={draft.allowed_agents} onInput={set('allowed_agents')} />
            </Field>
          ) : null}
        </>
      )}
      <div class="buttons">
        <button type="submit" class="primary" disabled={flight.busy}>
          {original ? 'Save' : 'Create'}
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function RowActions({ kind, resource, onChanged, onEdit }: { kind: Kind; resource: Resource; onChanged: () => void; onEdit: () => void }) {
  const [confirm, setConfirm] = useState(false);
  const [error, setError] = useState<string | undefined>();
  const run = async (method: string, body?: unknown) => {
    try {
      await api(method, `/v1/${kind}/${segment(resource.id)}`, body);
      setConfirm(false);
      onChanged();
    } catch (caught) {
      setError(describeError(caught).message);
    }
  };
  return (
    <td class="actions">
      <button type="button" onClick={onEdit}>
        Edit
      </button>
      {resource.status === 'active' ? (
        <button type="button" onClick={() => run('PATCH', { status: 'suspended' })}>
          Suspend
        </button>
      ) : null}
      {resource.status === 'suspended' ? (
        <button type="button" onClick={() => run('PATCH', { status: 'active' })}>
          Reactivate
        </button>
      ) : null}
      {confirm ? (
        <>
          <button type="button" class="danger" onClick={() => run('DELETE')}>
            Confirm delete
          </button>
          <button type="button" onClick={() => setConfirm(false)}>
            Keep
          </button>
        </>
      ) : (
        <button type="button" class="danger" onClick={() => setConfirm(true)}>
          Delete
        </button>
      )}
      <ErrorLine error={error} />
    </td>
  );
}

/** Agents, orchestrators and connectors: list, create, edit, suspend, delete. */
export function RegistryPage({ route, can }: { route: Route; can: (role: Role) => boolean }) {
  const kind: Kind = route.sub === 'orchestrators' || route.sub === 'connectors' ? route.sub : 'agents';
  const list = usePagedPoll<Resource>((cursor) => `/v1/${kind}${query({ limit: 200, cursor })}`, 10_000, [kind]);
  const [editing, setEditing] = useState<{ kind: Kind; resource?: Resource } | undefined>();
  const write = can('operator');
  const done = () => {
    setEditing(undefined);
    list.refresh();
  };
  return (
    <div>
      <h1>Registry</h1>
      <nav class="tabs">
        {(['agents', 'orchestrators', 'connectors'] as Kind[]).map((tab) => (
          <a href={`#/registry/${tab}`} class={tab === kind ? 'active' : ''} onClick={() => setEditing(undefined)}>
            {tab}
          </a>
        ))}
        {write ? (
          <button type="button" class="primary" onClick={() => setEditing({ kind })}>
            New {kind.slice(0, -1)}
          </button>
        ) : null}
      </nav>
      {editing && editing.kind === kind ? (
        <Editor key={editing.resource?.id ?? 'new'} kind={kind} original={editing.resource} onDone={done} onCancel={() => setEditing(undefined)} />
      ) : null}
      <section class="card">
        <ErrorLine error={list.error} />
        <table data-testid="registry-table">
          <thead>
            <tr>
              <th>Id</th>
              <th>Name</th>
              {kind === 'connectors' ? (
                <>
                  <th>Base URL</th>
                  <th>Operations</th>
                  <th>Credential</th>
                </>
              ) : (
                <>
                  <th>Status</th>
                  <th>Keys</th>
                  {kind === 'orchestrators' ? <th>Agents</th> : null}
                </>
              )}
              <th>Updated</th>
              {write ? <th /> : null}
            </tr>
          </thead>
          <tbody>
            {list.items.map((resource) => (
              <tr key={`${kind}:${resource.id}`} data-id={resource.id}>
                <td class="mono">{resource.id}</td>
                <td>{reveal(resource.name)}</td>
                {kind === 'connectors' ? (
                  <>
                    <td class="mono small">{resource.base_url}</td>
                    <td class="small">{(resource.operations ?? []).map((operation) => operation.name).join(', ')}</td>
                    <td class="mono small">{resource.credential ? `${resource.credential.type} ${resource.credential.fingerprint.slice(0, 24)}…` : 'none'}</td>
                  </>
                ) : (
                  <>
                    <td>
                      <Pill value={resource.status ?? ''} />
                    </td>
                    <td class="mono small">{reveal((resource.jwks?.keys ?? []).map((key) => key.kid ?? '?').join(', '))}</td>
                    {kind === 'orchestrators' ? <td class="small">{(resource.allowed_agents ?? []).join(', ')}</td> : null}
                  </>
                )}
                <td class="small">{when(resource.updated_at)}</td>
                {write ? <RowActions kind={kind} resource={resource} onChanged={list.refresh} onEdit={() => setEditing({ kind, resource })} /> : null}
              </tr>
            ))}
          </tbody>
        </table>
        <ShowMore list={list} label={`Show more ${kind}`} testId="more-registry" />
      </section>
    </div>
  );
}
