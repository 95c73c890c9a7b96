import { createHmac, timingSafeEqual } from 'node:crypto';

/** The header carrying the signature: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`. */
export const WEBHOOK_SIGNATURE_HEADER = 'Writ-Signature';
/** The header carrying the delivery id (the same on every retry of one delivery): dedupe on it. */
export const WEBHOOK_ID_HEADER = 'Writ-Webhook-Id';
/** How old a signed timestamp a receiver should accept, by default (replay window). */
export const WEBHOOK_TOLERANCE_SECONDS = 300;

/** The HMAC-SHA256, in hex, of `<timestamp>.<body>` under `secret`. */
export function webhookHmac(secret: Buffer, timestamp: number, body: string): string {
  return createHmac('sha256', secret).update(`${timestamp}.${body}`, 'utf8').digest('hex');
}

/** The `Writ-Signature` value of `body` sent at `timestamp` (unix seconds). */
export function signWebhook(secret: Buffer, timestamp: number, body: string): string {
  return `t=${timestamp},v1=${webhookHmac(secret, timestamp, body)}`;
}

/**
 * What a receiver does (Stripe's scheme): parse `t` and every `v1`, recompute the HMAC over
 * the raw body, compare in constant time, and refuse a timestamp outside the tolerance.
 */
export function verifyWebhookSignature(
  secret: Buffer,
  header: string | undefined,
  body: string,
  nowSeconds: number = Math.floor(Date.now() / 1000),
  toleranceSeconds: number = WEBHOOK_TOLERANCE_SECONDS,
): boolean {
  if (!header) return false;
  const parts = header.split(',').map((part) => part.trim().split('='));
  const timestamp = Number(parts.find(([name]) => name === 't')?.[1]);
  if (!Number.isInteger(timestamp) || Math.abs(nowSeconds - timestamp) > toleranceSeconds) return false;
  const expected = Buffer.from(webhookHmac(secret, timestamp, body), 'hex');
  return parts
    .filter(([name, value]) => name === 'v1' && typeof value === 'string' && /^[0-9a-f]{64}$/.test(value))
    .some(([, value]) => timingSafeEqual(Buffer.from(value, 'hex'), expected));
}
