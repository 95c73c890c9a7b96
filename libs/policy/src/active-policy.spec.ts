import { copyFileSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ActivePolicy, type PolicyReloadEvent } from './active-policy';
import { defaultPolicyPath } from './default-policy';
import { PolicyLoadError } from './policy-errors';
import { readTarGz } from './read-tar-gz';

describe('ActivePolicy', () => {
  let dir: string;
  let file: string;
  const bareWasm = () => readTarGz(readFileSync(defaultPolicyPath())).get('/policy.wasm')!;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'writ-active-policy-'));
    file = join(dir, 'policy.tar.gz');
    copyFileSync(defaultPolicyPath(), file);
  });

  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('loads the committed default when no path is given', async () => {
    const active = await ActivePolicy.load(undefined);
    expect(active.path).toBe(defaultPolicyPath());
    expect(active.current().entrypoint).toBe('writ/grant/decision');
  });

  it('fails to load a missing file, saying which', async () => {
    const load = ActivePolicy.load(join(dir, 'absent.wasm'));
    await expect(load).rejects.toBeInstanceOf(PolicyLoadError);
    await expect(load).rejects.toMatchObject({ code: 'POLICY_FILE_UNREADABLE', message: expect.stringContaining('absent.wasm') });
  });

  it('reloads a changed file, and keeps the previous policy when the new one is invalid', async () => {
    const active = await ActivePolicy.load(file);
    const first = active.current();
    writeFileSync(file, bareWasm());
    const second = await active.reload();
    expect(second.version).not.toBe(first.version);
    expect(active.current()).toBe(second);
    expect(active.describe()).toMatchObject({ version: second.version, source: file, loaded_by: 'file change' });
    writeFileSync(file, 'not a policy');
    await expect(active.reload()).rejects.toMatchObject({ code: 'POLICY_FORMAT_INVALID' });
    expect(active.current()).toBe(second);
  });

  it('watches the file and reports each reload', async () => {
    const events: PolicyReloadEvent[] = [];
    let notify: () => void = () => undefined;
    const active = await ActivePolicy.load(file, {
      pollIntervalMs: 10,
      onReload: (event) => {
        events.push(event);
        notify();
      },
    });
    const next = () => new Promise<void>((resolve) => (notify = resolve));
    // Replace by rename, as a deploy would: the watcher never sees a half-written file.
    const replace = (content: Buffer | string) => {
      writeFileSync(`${file}.tmp`, content);
      renameSync(`${file}.tmp`, file);
    };
    // watchFile takes its baseline with a first stat of its own: a replacement made before that
    // stat completes (a busy libuv pool) is the baseline, not a change. Replace again until seen.
    const replaceUntilSeen = async (content: Buffer | string): Promise<PolicyReloadEvent> => {
      const seen = events.length;
      for (let round = 0; round < 40 && events.length === seen; round += 1) {
        const changed = next();
        replace(content);
        await Promise.race([changed, new Promise((resolve) => setTimeout(resolve, 250))]);
      }
      return events[seen];
    };
    const stop = active.watch();
    try {
      expect(await replaceUntilSeen(bareWasm())).toMatchObject({ ok: true, version: active.current().version });
      expect(await replaceUntilSeen('garbage')).toMatchObject({ ok: false, keptVersion: active.current().version });
    } finally {
      stop();
    }
  }, 15_000);
});
