import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runInNewContext } from 'node:vm';
import { loadConfig } from '@writ/config';
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

  it("verifies with docs/console.md's receiver, given the secret as the doc says, for both secret forms", () => {
    const doc = readFileSync(join(__dirname, '..', '..', '..', '..', 'docs', 'console.md'), 'utf8');
    const snippet = /^## Approval notifications$[\s\S]*?^```js\n([\s\S]*?)^```/m.exec(doc)![1];
    const verify = runInNewContext(`${snippet}\nverify`, { require, Buffer }) as (secret: unknown, header: string, body: string, now: number) => boolean;
    const whsec = `whsec_${Buffer.alloc(24, 7).toString('base64')}`;
    for (const value of [whsec, 'p'.repeat(40)]) {
      // What the service signs with: the secret as libs/config reads it.
      const signing = loadConfig({ WRIT_APPROVAL_WEBHOOK_URL: 'https://hooks.example/writ', WRIT_APPROVAL_WEBHOOK_SECRET: value }).approvalWebhook!.secret;
      // What the doc tells a receiver to use.
      const receiving = value.startsWith('whsec_') ? Buffer.from(value.slice('whsec_'.length), 'base64') : value;
      expect([value.slice(0, 6), verify(receiving, signWebhook(signing, now, body), body, now)]).toEqual([value.slice(0, 6), true]);
      expect(verify(receiving, signWebhook(signing, now, body), body, now + 301)).toBe(false);
      // The pitfall the doc warns of: a whsec_ secret's string is not the key.
      if (value.startsWith('whsec_')) expect(verify(value, signWebhook(signing, now, body), body, now)).toBe(false);
    }
  });
});
