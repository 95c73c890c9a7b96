import { errorFromAnswer, readJson, WritClient, type WritClientOptions } from './client.js';
import { WritError, WritResponseError } from './errors.js';
import { lifetimeMs, refreshAtFor } from './lifetime.js';
import { hideSecrets } from './redact.js';
import { withRetries } from './retry.js';
import type { AllowedEntry, AuthorizationDetail, TaskInfo } from './types.js';

/** What an orchestrator declares: which agent, why, and what it may ask for. */
export interface TaskSpec {
  /** The agent that will run the task. */
  agentId: string;
  /** The declared purpose, in words (recorded, and given to the policy). */
  purpose: string;
  /** Every connector operation (and its constraints, optional limits) the agent may ask for. */
  allowed: AllowedEntry[];
  /** Lifetime of the task, in seconds. */
  ttlSeconds: number;
  /** A free label of the user the task acts for (not verified: see `userToken`). */
  onBehalfOf?: string;
  /** Proof of the user the task acts for: their token from an identity provider registered in Writ (docs/connected-accounts.md). */
  userToken?: string;
  /** The user `{iss, sub}` without a token, for an orchestrator trusted to assert users of that issuer. */
  user?: { iss: string; sub: string };
  /** Free-form metadata kept with the task (ids of the run, the invoice…). */
  metadata?: Record<string, unknown>;
}

/** A declared task: its id and the task token the agent exchanges. */
export interface CreatedTask {
  taskId: string;
  /** The subject token of the agent's token exchanges; give it to the agent only. */
  taskToken: string;
  expiresAt: string;
  status: string;
}

/** Options of {@link Orchestrator.runTask}. */
export interface RunTaskOptions {
  /** Aborting fails the task at once (revoking its credentials) and rejects `runTask`. */
  signal?: AbortSignal;
}

/** `value` as one path segment: encoded, and never `.` or `..` (which the URL parser would resolve away). */
function segment(value: string): string {
  if (typeof value !== 'string' || value === '' || value === '.' || value === '..') {
    throw new WritError('invalid_request', `invalid task id ${JSON.stringify(value)}`);
  }
  return encodeURIComponent(value);
}

/**
 * A trusted orchestrator: authenticates with `private_key_jwt` (client credentials, scope
 * `tasks`), declares tasks for its agents and ends them. {@link runTask} ends every task it
 * starts: completed when the work returns, failed when it throws or is aborted.
 */
export class Orchestrator {
  readonly #client: WritClient;
  #token?: { value: Promise<string>; refreshAt: number };

  /** The Tasks API. */
  readonly tasks = {
    /** `POST /v1/tasks`: declares a task; returns its id and task token. */
    create: (spec: TaskSpec): Promise<CreatedTask> => this.createTask(spec),
    /** `GET /v1/tasks/{id}`: the task, its status and its grants. */
    get: async (taskId: string): Promise<TaskInfo> => this.call<TaskInfo>('GET', `/v1/tasks/${segment(taskId)}`),
    /** Completes the task; every credential of the task is revoked before this resolves. */
    complete: async (taskId: string): Promise<TaskInfo> => this.call<TaskInfo>('POST', `/v1/tasks/${segment(taskId)}/complete`),
    /** Fails the task; every credential of the task is revoked before this resolves. */
    fail: async (taskId: string): Promise<TaskInfo> => this.call<TaskInfo>('POST', `/v1/tasks/${segment(taskId)}/fail`),
  };

  constructor(options: WritClientOptions) {
    this.#client = new WritClient(options);
  }

  /**
   * Declares a task, runs `work` with it, and always ends it: `complete` when `work`
   * resolves, `fail` when it throws or when `options.signal` aborts (then at once, so that
   * credentials still in the agent's hands stop working while `work` unwinds). The end is
   * in a `finally`: a task started here is never left active.
   */
  async runTask<T>(spec: TaskSpec, work: (task: CreatedTask, signal: AbortSignal) => Promise<T>, options: RunTaskOptions = {}): Promise<T> {
    options.signal?.throwIfAborted();
    const task = await this.createTask(spec);
    const controller = new AbortController();
    let ended: Promise<unknown> | undefined;
    const fail = () => (ended ??= this.tasks.fail(task.taskId));
    const onAbort = () => {
      controller.abort(options.signal?.reason);
      fail().catch(() => undefined);
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    let completed = false;
    try {
      const aborted = new Promise<never>((_, reject) => {
        const rejectWithReason = () => reject(controller.signal.reason ?? new WritError('aborted', 'the task was aborted'));
        if (controller.signal.aborted) rejectWithReason();
        else controller.signal.addEventListener('abort', rejectWithReason, { once: true });
      });
      aborted.catch(() => undefined);
      if (options.signal?.aborted) onAbort();
      const running = Promise.resolve().then(() => work(task, controller.signal));
      running.catch(() => undefined); // still observed by the race; no unhandled rejection after an abort
      const result = await Promise.race([running, aborted]);
      await this.tasks.complete(task.taskId);
      completed = true;
      return result;
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      if (!completed) {
        if (!controller.signal.aborted) controller.abort(new WritError('task_failed', 'the task failed'));
        // A failure to fail must not hide the work's own error; the task still expires at its deadline.
        await fail().catch(() => undefined);
      }
    }
  }

  private async createTask(spec: TaskSpec): Promise<CreatedTask> {
    const body = {
      agent_id: spec.agentId,
      purpose: spec.purpose,
      allowed: spec.allowed.map((entry): AuthorizationDetail & { limits?: AllowedEntry['limits'] } => ({ ...entry, type: 'connector' })),
      ttl_seconds: spec.ttlSeconds,
      ...(spec.onBehalfOf !== undefined ? { on_behalf_of: spec.onBehalfOf } : {}),
      ...(spec.userToken !== undefined ? { user_token: spec.userToken } : {}),
      ...(spec.user !== undefined ? { user: spec.user } : {}),
      ...(spec.metadata !== undefined ? { metadata: spec.metadata } : {}),
    };
    // One key for every attempt of this declaration: a retry after a lost answer gets the same task.
    const created = await this.call<{ task_id: string; task_token: string; expires_at: string; status: string }>('POST', '/v1/tasks', body, {
      'idempotency-key': globalThis.crypto.randomUUID(),
    });
    return hideSecrets<CreatedTask>({ taskId: created.task_id, taskToken: created.task_token, expiresAt: created.expires_at, status: created.status }, [
      'taskToken',
    ]);
  }

  /** A Tasks API access token (client credentials, scope `tasks`), reused until shortly before it expires. */
  private accessToken(): { value: Promise<string>; refreshAt: number } {
    if (this.#token && Date.now() < this.#token.refreshAt) return this.#token;
    const entry = { value: Promise.resolve(''), refreshAt: Number.POSITIVE_INFINITY };
    entry.value = this.#client.token('client_credentials', { scope: 'tasks' }).then(
      (response) => {
        // An `expires_in` of 0 is used for the call that asked for it and not reused; absurd ones are clamped.
        entry.refreshAt = refreshAtFor(Date.now(), lifetimeMs(response.expires_in));
        return response.access_token;
      },
      (error: unknown) => {
        if (this.#token === entry) this.#token = undefined;
        throw error;
      },
    );
    this.#token = entry;
    return entry;
  }

  /** One Tasks API call; a refused access token (401) is replaced once; never follows a redirect (the token goes to the issuer only). */
  private async call<T>(method: string, path: string, body?: unknown, extraHeaders: Record<string, string> = {}): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const entry = this.accessToken();
      const token = await entry.value;
      // A 429/503 (shed before any work) is retried after its `Retry-After`, bounded.
      let response: Response;
      try {
        response = await withRetries(() =>
          this.#client.serverFetch(`${this.#client.issuer}${path}`, {
            method,
            headers: {
              authorization: `Bearer ${token}`,
              accept: 'application/json',
              ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
              ...extraHeaders,
            },
            body: body !== undefined ? JSON.stringify(body) : undefined,
            redirect: 'manual',
            signal: this.#client.timeoutSignal(),
          }),
        );
      } catch (error) {
        throw this.#client.timedOut(error, `${method} ${path.split('?')[0]}`);
      }
      if (response.status === 401 && attempt === 0) {
        await response.body?.cancel();
        // Only the refused token: concurrent calls refused it too share the one that replaces it.
        if (this.#token === entry) this.#token = undefined;
        continue;
      }
      const json = await readJson(response);
      if (!response.ok) throw errorFromAnswer(response.status, json);
      // Not an OAuth error: a proxy page or a broken server (the same class and code as in the Python SDK).
      if (json === undefined) throw new WritResponseError(response.status, 'the Tasks API answered without a JSON body');
      return json as T;
    }
  }
}
