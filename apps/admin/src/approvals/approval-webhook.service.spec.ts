import { chatText, webhookBackoffMs } from './approval-webhook.service';

describe('approval webhook backoff', () => {
  it('doubles from the base after each failed attempt, capped at 15 minutes', () => {
    expect([1, 2, 3, 4].map((attempt) => webhookBackoffMs(5000, attempt))).toEqual([5000, 10_000, 20_000, 40_000]);
    expect(webhookBackoffMs(5000, 30)).toBe(15 * 60 * 1000);
  });
});

describe('approval webhook chat text', () => {
  it("escapes Slack's control characters and keeps to one line", () => {
    expect(chatText('a <!here> & <https://x.example|b>\r\nc\u2028d')).toBe('a &lt;!here&gt; &amp; &lt;https://x.example|b&gt; c d');
    expect(chatText('&lt;')).toBe('&amp;lt;');
  });
});
