import type { ComponentChildren, JSX } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, FieldError, Page } from './api';

/** Re-runs `load` every `intervalMs` while mounted (and when `deps` change); keeps the last good value. */
export function usePoll<T>(
  load: () => Promise<T>,
  intervalMs: number,
  deps: unknown[] = [],
): { data: T | undefined; error: string | undefined; refresh: () => void } {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [tick, setTick] = useState(0);
  const loader = useRef(load);
  loader.current = load;
  useEffect(() => {
    let live = true;
    let timer: number | undefined;
    const run = async () => {
      try {
        const value = await loader.current();
        if (live) {
          setData(value);
          setError(undefined);
        }
      } catch (caught) {
        if (live) setError(caught instanceof Error ? caught.message : String(caught));
      }
      if (live && intervalMs > 0) timer = window.setTimeout(run, intervalMs);
    };
    void run();
    return () => {
      live = false;
      if (timer !== undefined) window.clearTimeout(timer);
    };
  }, [...deps, tick]);
  return { data, error, refresh: () => setTick((value) => value + 1) };
}

/**
 * A polled cursor list (`{items, next_cursor}`), kept live as far as it was paged: each poll reads
 * the first page and follows `next_cursor` for as many more pages as `more()` asked for, so that
 * the rows past the first page change with the list instead of going stale. `path(cursor)` is the
 * URL of a page. A list read again for other `deps` (another kind, other filters) starts again
 * from its first page. A failed poll keeps the rows of the last good one (see {@link usePoll}).
 */
export function usePagedPoll<T>(
  path: (cursor: string | undefined) => string,
  intervalMs: number,
  deps: unknown[] = [],
): {
  items: T[];
  /** The last good answer (a new object at each poll that answered). */
  data: { items: T[]; hasMore: boolean } | undefined;
  loaded: boolean;
  hasMore: boolean;
  more: () => void;
  error: string | undefined;
  refresh: () => void;
} {
  const key = JSON.stringify(deps);
  const [wanted, setWanted] = useState({ key, pages: 1 });
  const pages = wanted.key === key ? wanted.pages : 1;
  const poll = usePoll(
    async () => {
      const items: T[] = [];
      let cursor: string | undefined;
      let next: string | null = null;
      for (let read = 0; read < pages; read += 1) {
        const page = await api<Page<T>>('GET', path(cursor));
        items.push(...page.items);
        next = page.next_cursor;
        if (!next) break;
        cursor = next;
      }
      return { items, hasMore: next !== null };
    },
    intervalMs,
    [...deps, pages],
  );
  return {
    items: poll.data?.items ?? [],
    data: poll.data,
    loaded: poll.data !== undefined,
    hasMore: poll.data?.hasMore ?? false,
    more: () => setWanted({ key, pages: pages + 1 }),
    error: poll.error,
    refresh: poll.refresh,
  };
}

/** The button that asks a {@link usePagedPoll} list for its next page (its errors show with the list's). */
export function ShowMore({ list, label, testId }: { list: { items: unknown[]; hasMore: boolean; more: () => void }; label: string; testId?: string }) {
  return list.hasMore ? (
    <div class="more">
      <button type="button" onClick={list.more} data-testid={testId}>
        {label} <span class="muted small">({list.items.length} shown)</span>
      </button>
    </div>
  ) : null;
}

/**
 * One call at a time: `run(step)` does nothing while a step it started is still running. A ref,
 * not state: the second click of a double click can arrive before a re-render disables the
 * button, and it must not send the request again.
 */
export function useSingleFlight(): { busy: boolean; run: (step: () => Promise<void>) => Promise<void> } {
  const running = useRef(false);
  const [busy, setBusy] = useState(false);
  const run = async (step: () => Promise<void>) => {
    if (running.current) return;
    running.current = true;
    setBusy(true);
    try {
      await step();
    } finally {
      running.current = false;
      setBusy(false);
    }
  };
  return { busy, run };
}

/** Re-renders every second (countdowns). */
export function useNow(): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = window.setInterval(() => setNow(Date.now()), 1000);
    return () => window.clearInterval(timer);
  }, []);
  return now;
}

/** "4m 05s" to a deadline, or "passed". */
export function countdown(deadline: string, now: number): string {
  const left = Math.floor((Date.parse(deadline) - now) / 1000);
  if (left <= 0) return 'passed';
  const hours = Math.floor(left / 3600);
  const minutes = Math.floor((left % 3600) / 60);
  const seconds = String(left % 60).padStart(2, '0');
  return hours > 0 ? `${hours}h ${String(minutes).padStart(2, '0')}m` : `${minutes}m ${seconds}s`;
}

/** A timestamp in the viewer's locale, to the second. */
export function when(iso: string | null | undefined): string {
  if (!iso) return '—';
  const date = new Date(iso);
  return `${date.toLocaleDateString(undefined, { month: 'short', day: 'numeric' })} ${date.toLocaleTimeString(undefined, { hour12: false })}`;
}

/**
 * Characters that change how the text around them is shown, or are not shown at all: bidi
 * controls (U+202E turns `acct_\u202E9876` into what reads as another account), line separators,
 * and every default-ignorable code point, which browsers draw as nothing: zero-width characters,
 * Unicode tags (invisible "ASCII"), variation selectors (U+FE00-U+FE0F, U+E0100-U+E01EF), the
 * combining grapheme joiner (U+034F), Hangul fillers, Mongolian selectors and the unassigned
 * ones (U+2065). A list of a few of them left the others to disguise a value: `acct_1` + U+034F
 * reads as `acct_1`. Also the interlinear annotation characters (U+FFF9-U+FFFB, format characters
 * that are not default-ignorable) and the object replacement character (U+FFFC): Chromium draws
 * each of them with no width either (a scan of every code point finds no other).
 */
const HIDDEN = /[\p{Default_Ignorable_Code_Point}\u061C\u180E\u2028\u2029\u202A-\u202E\u2066-\u2069\uFFF9-\uFFFC]/gu;

const codePoint = (char: string) => (char.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0');

/** Text that an agent, an orchestrator or an upstream chose, with each hidden character made visible (`⟨U+202E⟩`). */
export function reveal(text: string): string {
  return text.replace(HIDDEN, (char) => `⟨U+${codePoint(char)}⟩`);
}

/** `JSON.stringify`, with each hidden character inside strings written as its JSON escape (`\u202e`): the same JSON, shown as it is. */
export function revealedJson(value: unknown, indent?: number): string {
  const text = JSON.stringify(value, null, indent) ?? String(value);
  return text.replace(HIDDEN, (char) => Array.from({ length: char.length }, (_, i) => `\\u${char.charCodeAt(i).toString(16).padStart(4, '0')}`).join(''));
}

/** A string of a JSON value with characters outside ASCII: where it is, and which characters. */
export interface NonAscii {
  path: string;
  text: string;
  chars: string[];
}

/**
 * Every string (member names included) of `value` that holds characters outside ASCII, with
 * where it is (`[0].constraints.destination`) and each such character as `а U+0430`. A Cyrillic
 * `а` or a Greek `ο` looks like its Latin twin: `асct_1` reads as `acct_1` to the person
 * approving, though the upstream reads another account (or mailbox, or domain).
 */
export function nonAsciiStrings(value: unknown, path = ''): NonAscii[] {
  const found: NonAscii[] = [];
  const check = (text: string, where: string) => {
    const chars = [...new Set(Array.from(text).filter((char) => char > '\u007f'))];
    if (chars.length) found.push({ path: where || '(value)', text, chars: chars.map((char) => `${reveal(char)} U+${codePoint(char)}`) });
  };
  if (typeof value === 'string') check(value, path);
  else if (Array.isArray(value)) value.forEach((item, index) => found.push(...nonAsciiStrings(item, `${path}[${index}]`)));
  else if (value !== null && typeof value === 'object')
    for (const [name, member] of Object.entries(value)) {
      check(name, `${path}.${name} (name)`);
      found.push(...nonAsciiStrings(member, `${path}.${name}`));
    }
  return found;
}

/** Pretty JSON in a block. */
export function Json({ value, label }: { value: unknown; label?: string }) {
  return (
    <pre class="json" aria-label={label}>
      {revealedJson(value, 2)}
    </pre>
  );
}

/** An error line (role="alert"), or nothing. */
export function ErrorLine({ error }: { error: string | undefined | null }) {
  return error ? (
    <p class="error" role="alert">
      {error}
    </p>
  ) : null;
}

/** Field errors for `name` (the field itself and every member under it, e.g. `operations[0].path`). */
export function fieldErrors(errors: FieldError[], name: string): FieldError[] {
  return errors.filter((error) => error.field === name || error.field.startsWith(`${name}.`) || error.field.startsWith(`${name}[`));
}

/** A labelled form field with the API's errors beside it. */
export function Field({
  label,
  name,
  errors,
  hint,
  children,
}: {
  label: string;
  name: string;
  errors: FieldError[];
  hint?: string;
  children: ComponentChildren;
}) {
  const mine = fieldErrors(errors, name);
  return (
    <div class={`field${mine.length ? ' invalid' : ''}`} data-field={name}>
      <label>
        <span class="label">{label}</span>
        {children}
      </label>
      {hint ? <span class="hint">{hint}</span> : null}
      {mine.map((error) => (
        <span class="field-error" role="alert" data-field-error={error.field}>
          {error.field === name ? error.message : `${error.field}: ${error.message}`}
        </span>
      ))}
    </div>
  );
}

/** The message and field errors of a failed call. */
export function describeError(caught: unknown): { message: string; fields: FieldError[] } {
  if (caught instanceof ApiError) return { message: caught.message, fields: caught.fields };
  return { message: caught instanceof Error ? caught.message : String(caught), fields: [] };
}

/**
 * The button that loads the next page of a cursor list. One page at a time: the button is
 * disabled while a page loads (a second click would append the same page twice), and a refused
 * or failed read is shown beside it, the rows already shown kept, the button there to try again.
 */
export function MoreButton({ label, onMore, testId }: { label: string; onMore: () => Promise<void>; testId?: string }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | undefined>();
  const click = async () => {
    setBusy(true);
    setError(undefined);
    try {
      await onMore();
    } catch (caught) {
      setError(describeError(caught).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="more">
      <button type="button" onClick={click} disabled={busy} data-testid={testId}>
        {busy ? 'Loading…' : label}
      </button>
      <ErrorLine error={error} />
    </div>
  );
}

/** A status pill. */
export function Pill({ value }: { value: string }) {
  return <span class={`pill pill-${value}`}>{value}</span>;
}

/** A one-line summary of authorization_details entries: `payments: payouts.create (destination=acct_1, amount_max=50000)`. */
export function DetailsSummary({ details }: { details: unknown }) {
  const entries = Array.isArray(details)
    ? (details as { connector?: string; actions?: string[]; constraints?: Record<string, unknown>; limits?: unknown }[])
    : [];
  return (
    <ul class="details">
      {entries.map((entry) => (
        <li>
          <strong>{reveal(String(entry.connector ?? ''))}</strong>: {reveal((entry.actions ?? []).join(', '))}
          {entry.constraints && Object.keys(entry.constraints).length > 0 ? (
            <span class="constraints">
              {' '}
              (
              {Object.entries(entry.constraints)
                .map(([name, value]) => `${reveal(name)}=${revealedJson(value)}`)
                .join(', ')}
              )
            </span>
          ) : null}
          {entry.limits ? <span class="constraints"> limits {revealedJson(entry.limits)}</span> : null}
        </li>
      ))}
    </ul>
  );
}

/** Parses a JSON text field; a bad one becomes a field error named `name`. */
export function parseJsonField(text: string, name: string, errors: FieldError[]): unknown {
  try {
    return JSON.parse(text);
  } catch (caught) {
    errors.push({ field: name, message: `is not valid JSON (${caught instanceof Error ? caught.message : 'parse error'})` });
    return undefined;
  }
}

/**
 * A list page's filters kept in its link (`#/<page>?name=value`): `applied` as the route gives
 * them, `draft` as the form shows them (set back to `applied` when a link followed or Back
 * changes them without remounting the page), `apply` to put the trimmed draft in the link, and
 * `field` for a text input bound to the draft.
 */
export function useRouteFilters<N extends string>(
  params: URLSearchParams,
  names: readonly N[],
  page: string,
): {
  applied: Partial<Record<N, string>>;
  appliedKey: string;
  draft: Partial<Record<N, string>>;
  setDraft: (draft: Partial<Record<N, string>>) => void;
  apply: (event: Event) => void;
  field: (name: N, label: string) => JSX.Element;
} {
  const applied: Partial<Record<N, string>> = {};
  for (const name of names) {
    const value = params.get(name);
    if (value) applied[name] = value;
  }
  const appliedKey = JSON.stringify(applied);
  const [draft, setDraft] = useState<Partial<Record<N, string>>>(applied);
  // Only on a change: on mount the draft already holds these values, and resetting it then would
  // wipe what a quick user (or a browser test) typed before the effect ran.
  const shown = useRef(appliedKey);
  useEffect(() => {
    if (shown.current === appliedKey) return;
    shown.current = appliedKey;
    setDraft(applied);
  }, [appliedKey]);
  const apply = (event: Event) => {
    event.preventDefault();
    const search = new URLSearchParams();
    for (const name of names) {
      const value = draft[name]?.trim();
      if (value) search.set(name, value);
    }
    window.location.hash = `#/${page}?${search.toString()}`;
  };
  const field = (name: N, label: string) => (
    <label>
      <span class="label">{label}</span>
      <input name={name} type="text" value={draft[name] ?? ''} onInput={(event) => setDraft({ ...draft, [name]: event.currentTarget.value })} />
    </label>
  );
  return { applied, appliedKey, draft, setDraft, apply, field };
}
