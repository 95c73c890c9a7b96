import { signWebhook, verifyWebhookSignature } from './approval-webhook-signature';

describe('approval webhook signatures', () => {
  const secret = Buffer.from('a'.repeat(32));
  const body = '{"type":"approval.requested","data":{"amount_max":42000}}';
  const now = 1_764_400_000;

  it('verifies what it signs', () => {
    expect(verifyWebhookSignature(secret, signWebhook(secret, now, body), body, now)).toBe(true);
    expect(signWebhook(secret, now, body)).toMatch(/^t=1764400000,v1=[0-9a-f]{64}$/);
  });

  it('refuses a changed body, another secret, a moved timestamp, a stale one, or garbage', () => {
    const header = signWebhook(secret, now, body);
    expect(verifyWebhookSignature(secret, header, body.replace('42000', '4200000'), now)).toBe(false);
    expect(verifyWebhookSignature(Buffer.from('b'.repeat(32)), header, body, now)).toBe(false);
    expect(verifyWebhookSignature(secret, header.replace(`t=${now}`, `t=${now + 1}`), body, now)).toBe(false);
    expect(verifyWebhookSignature(secret, header, body, now + 301)).toBe(false);
    expect(verifyWebhookSignature(secret, undefined, body, now)).toBe(false);
    expect(verifyWebhookSignature(secret, 't=x,v1=zz', body, now)).toBe(false);
    expect(verifyWebhookSignature(secret, `t=${now},v1=${'0'.repeat(64)}`, body, now)).toBe(false);
  });

  it('accepts any one valid v1 among several (secret rotation)', () => {
    const valid = signWebhook(secret, now, body).split(',')[1];
    expect(verifyWebhookSignature(secret, `t=${now},v1=${'1'.repeat(64)},${valid}`, body, now)).toBe(true);
  });
});
