import { Inject, Injectable, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import type { Pool, PoolClient } from 'pg';
import type { Logger } from 'pino';
import { AuditEventInput, AuditService } from '@writ/audit';
import type { ApprovalWebhookConfig } from '@writ/config';
import { ApprovalEntity, PG_POOL, RowOf } from '@writ/database';
import { LOGGER, RUNTIME, Runtime } from '@writ/platform';
import { signWebhook, WEBHOOK_ID_HEADER, WEBHOOK_SIGNATURE_HEADER } from './approval-webhook-signature';

/** How often each admin instance looks for new pending approvals and due retries. */
export const WEBHOOK_POLL_MS = 1000;
/** Time allowed to one delivery attempt (connect, send, answer). */
export const WEBHOOK_TIMEOUT_MS = 10_000;
/** How long a claim keeps other instances off a delivery: well past one attempt's timeout. */
const CLAIM_SECONDS = 60;
/** Longest wait between two attempts. */
const MAX_BACKOFF_MS = 15 * 60 * 1000;
/** Deliveries one instance sends at once. */
const BATCH = 10;

/** The JSON body POSTed for a new pending approval. */
export interface ApprovalWebhookPayload {
  /** The delivery id, also in `Writ-Webhook-Id`: the same on every retry. */
  id: string;
  type: 'approval.requested';
  created_at: string;
  attempt: number;
  /** A one-line summary, so that a Slack incoming webhook can take the body as it is. */
  text: string;
  data: {
    approval_id: string;
    task_id: string;
    agent_id: string;
    connector_id: string;
    purpose: string;
    authorization_details: unknown[];
    reasons: string[];
    policy_version: string;
    requested_at: string;
    expires_at: string;
  };
}

interface ClaimedRow {
  approval_id: string;
  id: string;
  attempts: number;
}

/** An approval row (the entity's typed columns) with whether it is still live and its task's purpose. */
type ApprovalRow = Omit<RowOf<ApprovalEntity>, 'decided_at' | 'decided_by' | 'note' | 'used_at'> & { live: boolean; purpose: string };

/**
 * SQL: whether the task of approval `a` is still open. An approval of a task that ended (completed,
 * failed, revoked, past its deadline) reads `expired` and can no longer be decided: announcing it
 * would page a person for nothing (and, under a flood of ended tasks, train them to ignore pages).
 */
const TASK_OPEN = `EXISTS (SELECT 1 FROM tasks t WHERE t.id = a.task_id AND t.status = 'active' AND t.expires_at > now())`;

/**
 * The `text` of a notification, safe to post as it is to a chat (Slack's incoming webhooks):
 * `&`, `<` and `>` escaped as Slack asks, so that a purpose chosen by an orchestrator (or the
 * user input it copied) cannot post a link (`<https://…|Approve here>`) or ping a channel
 * (`<!channel>`) in Writ's name; and on one line, so that it cannot add lines that read as
 * Writ's own.
 */
export function chatText(text: string): string {
  return text
    .replace(/[\r\n\u2028\u2029]+/g, ' ')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;');
}

/** The wait before attempt `attempt + 1`: the base, doubled per attempt, at most 15 minutes. */
export function webhookBackoffMs(baseMs: number, attempt: number): number {
  return Math.min(baseMs * 2 ** Math.max(0, attempt - 1), MAX_BACKOFF_MS);
}

/**
 * Announces each new pending approval to the deployment's webhook (`WRIT_APPROVAL_WEBHOOK_URL`),
 * so that Slack or a pager can call a person. Every admin instance polls; a delivery row per
 * approval is created once (primary key) and claimed by one instance at a time with a
 * conditional UPDATE over `FOR UPDATE SKIP LOCKED`, so an approval is announced once across
 * instances. Each attempt is signed (`Writ-Signature: t=…,v1=HMAC-SHA256("t.body")`), audited
 * as `approval.notification` together with the delivery's new state, and retried with
 * exponential backoff until it is delivered (2xx), given up after the configured attempts, or
 * skipped because the approval was decided or expired meanwhile (its task's end included). The URL is never logged or
 * audited: chat webhook URLs carry their own secret.
 */
@Injectable()
export class ApprovalWebhookService implements OnApplicationBootstrap, OnApplicationShutdown {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly config: ApprovalWebhookConfig | undefined;

  constructor(
    @Inject(RUNTIME) runtime: Runtime,
    @Inject(PG_POOL) private readonly pool: Pool,
    private readonly audit: AuditService,
    @Inject(LOGGER) private readonly logger: Logger,
  ) {
    this.config = runtime.config.approvalWebhook;
  }

  /** Starts polling when a webhook is configured. */
  onApplicationBootstrap(): void {
    if (!this.config) return;
    this.timer = setInterval(() => void this.tick(), WEBHOOK_POLL_MS);
    this.timer.unref();
  }

  /** Stops polling and waits for the attempts in flight. */
  async onApplicationShutdown(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** One round: enqueue new pending approvals, claim due deliveries, send them. Never overlaps itself. */
  tick(): Promise<void> {
    if (!this.running) {
      this.running = this.round()
        .catch((error: unknown) => this.logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'approval webhook round failed; retrying'))
        .finally(() => {
          this.running = undefined;
        });
    }
    return this.running;
  }

  private async round(): Promise<void> {
    const config = this.config;
    if (!config) return;
    await this.pool.query(
      `INSERT INTO approval_webhook_deliveries (approval_id, id)
       SELECT a.id, gen_random_uuid() FROM approvals a
        WHERE a.status = 'pending' AND a.expires_at > now() AND ${TASK_OPEN}
          AND NOT EXISTS (SELECT 1 FROM approval_webhook_deliveries d WHERE d.approval_id = a.id)
       ON CONFLICT (approval_id) DO NOTHING`,
    );
    const { rows } = await this.pool.query<ClaimedRow>(
      `UPDATE approval_webhook_deliveries d SET claimed_until = now() + make_interval(secs => $1)
        WHERE d.approval_id IN (
          SELECT approval_id FROM approval_webhook_deliveries
           WHERE status = 'pending' AND next_attempt_at <= now() AND (claimed_until IS NULL OR claimed_until < now())
           ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)
        RETURNING d.approval_id, d.id, d.attempts`,
      [CLAIM_SECONDS, BATCH],
    );
    await Promise.all(rows.map((row) => this.deliver(config, row)));
  }

  private async deliver(config: ApprovalWebhookConfig, claimed: ClaimedRow): Promise<void> {
    const { rows } = await this.pool.query<ApprovalRow>(
      `SELECT a.id, a.task_id, a.agent_id, a.connector_id, a.authorization_details, a.reasons, a.policy_version, a.status,
              a.status = 'pending' AND a.expires_at > now() AND t.status = 'active' AND t.expires_at > now() AS live,
              a.requested_at, a.expires_at, t.purpose
         FROM approvals a JOIN tasks t ON t.id = a.task_id WHERE a.id = $1`,
      [claimed.approval_id],
    );
    const approval = rows[0];
    if (!approval || !approval.live) {
      await this.pool.query(
        `UPDATE approval_webhook_deliveries SET status = 'skipped', claimed_until = NULL, finished_at = now(), last_error = $2 WHERE approval_id = $1`,
        [claimed.approval_id, `approval ${approval ? (approval.status === 'pending' ? 'expired' : approval.status) : 'missing'} before delivery`],
      );
      return;
    }
    const attempt = claimed.attempts + 1;
    const payload = this.payload(claimed.id, attempt, approval);
    const body = JSON.stringify(payload);
    const timestamp = Math.floor(Date.now() / 1000);
    let status: number | null = null;
    let error: string | null = null;
    try {
      const response = await fetch(config.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'writ-approval-webhook/1',
          [WEBHOOK_ID_HEADER]: claimed.id,
          [WEBHOOK_SIGNATURE_HEADER]: signWebhook(config.secret, timestamp, body),
        },
        body,
        redirect: 'manual',
        signal: AbortSignal.timeout(WEBHOOK_TIMEOUT_MS),
      });
      status = response.status;
      await response.body?.cancel().catch(() => undefined);
      if (status < 200 || status >= 300) error = `answered ${status}`;
    } catch (caught) {
      // By name, not instanceof: the abort's DOMException may come from another realm.
      error = (caught as { name?: unknown } | null)?.name === 'TimeoutError' ? 'timed out' : 'could not connect';
    }
    await this.settle(config, claimed, approval, attempt, status, error);
  }

  /** Records the attempt and the delivery's next state in one transaction. */
  private async settle(
    config: ApprovalWebhookConfig,
    claimed: ClaimedRow,
    approval: ApprovalRow,
    attempt: number,
    status: number | null,
    error: string | null,
  ): Promise<void> {
    const delivered = error === null;
    const givenUp = !delivered && attempt >= config.maxAttempts;
    const retryInMs = delivered || givenUp ? null : webhookBackoffMs(config.backoffMs, attempt);
    const state = delivered ? 'delivered' : givenUp ? 'failed' : 'pending';
    const event: AuditEventInput = {
      type: 'approval.notification',
      outcome: delivered ? 'success' : 'failure',
      actor: { type: 'system', id: 'approval-webhook' },
      agentId: approval.agent_id,
      taskId: approval.task_id,
      connectorId: approval.connector_id,
      data: {
        approval_id: approval.id,
        delivery_id: claimed.id,
        attempt,
        status,
        ...(error ? { error } : {}),
        result: delivered ? 'delivered' : givenUp ? 'failed' : 'retrying',
        ...(retryInMs !== null ? { retry_in_ms: retryInMs } : {}),
      },
    };
    await this.audit.recordWith(
      (client: PoolClient) =>
        client.query(
          `UPDATE approval_webhook_deliveries
              SET attempts = $2, status = $3, last_status = $4, last_error = $5, claimed_until = NULL,
                  next_attempt_at = CASE WHEN $6::bigint IS NULL THEN next_attempt_at ELSE now() + make_interval(secs => $6::bigint / 1000.0) END,
                  finished_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END
            WHERE approval_id = $1`,
          [claimed.approval_id, attempt, state, status, error, retryInMs],
        ),
      () => [event],
    );
    if (givenUp) this.logger.warn({ approval_id: approval.id, attempts: attempt }, 'approval webhook given up');
  }

  private payload(id: string, attempt: number, approval: ApprovalRow): ApprovalWebhookPayload {
    const actions = approval.authorization_details
      .map((detail) => ((detail as { actions?: unknown }).actions as string[] | undefined)?.join(', '))
      .filter(Boolean)
      .join('; ');
    return {
      id,
      type: 'approval.requested',
      created_at: new Date().toISOString(),
      attempt,
      text: chatText(`Writ: ${approval.agent_id} asks for ${approval.connector_id} ${actions} (task: ${approval.purpose}). ${approval.reasons.join('; ')}`),
      data: {
        approval_id: approval.id,
        task_id: approval.task_id,
        agent_id: approval.agent_id,
        connector_id: approval.connector_id,
        purpose: approval.purpose,
        authorization_details: approval.authorization_details,
        reasons: approval.reasons,
        policy_version: approval.policy_version,
        requested_at: approval.requested_at.toISOString(),
        expires_at: approval.expires_at.toISOString(),
      },
    };
  }
}
