import { copyFileSync, mkdtempSync, readFileSync, renameSync, rmSync, unwatchFile, watchFile, writeFileSync, type Stats } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ActivePolicy, type PolicyReloadEvent } from './active-policy';
import { defaultPolicyPath } from './default-policy';
import { PolicyEngine } from './policy-engine';
import { PolicyLoadError } from './policy-errors';
import { readTarGz } from './read-tar-gz';
import { spinningPolicyModule } from '@writ/testing';

describe('ActivePolicy', () => {
  let dir: string;
  let file: string;
  const bareWasm = () => readTarGz(readFileSync(defaultPolicyPath())).get('/policy.wasm')!;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'writ-active-policy-'));
    file = join(dir, 'policy.tar.gz');
    copyFileSync(defaultPolicyPath(), file);
  });

  afterEach(() => {
    jest.restoreAllMocks();
    rmSync(dir, { recursive: true, force: true });
  });

  const echoWasm = () => readFileSync(join(__dirname, '..', 'test-fixtures', 'echo.wasm'));

  /**
   * Holds every `PolicyEngine.load` (the compile) until released: `started` counts the loads
   * begun, `nextStart` resolves when the next one begins.
   */
  function holdLoads(): { started: () => number; nextStart: () => Promise<void>; release: () => void } {
    const load = PolicyEngine.load.bind(PolicyEngine);
    let count = 0;
    let onStart: () => void = () => undefined;
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    jest.spyOn(PolicyEngine, 'load').mockImplementation(async (...args) => {
      count += 1;
      onStart();
      await released;
      return load(...args);
    });
    return { started: () => count, nextStart: () => new Promise<void>((resolve) => (onStart = resolve)), release };
  }

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

  it('refuses to start on a file whose policy does not answer the sample request', async () => {
    writeFileSync(file, spinningPolicyModule(echoWasm()));
    await expect(ActivePolicy.load(file)).rejects.toMatchObject({ name: 'PolicyLoadError', code: 'POLICY_TOO_SLOW' });
  }, 15_000);

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

  it('refuses, on a worker, a changed file whose policy does not answer, keeping the previous policy and the event loop free', async () => {
    const active = await ActivePolicy.load(file);
    const before = active.current().version;
    writeFileSync(file, spinningPolicyModule(echoWasm()));
    let ticks = 0;
    const ticking = setInterval(() => (ticks += 1), 100);
    try {
      await expect(active.reload()).rejects.toMatchObject({ name: 'PolicyLoadError', code: 'POLICY_TOO_SLOW' });
    } finally {
      clearInterval(ticking);
    }
    expect(ticks).toBeGreaterThan(10);
    expect(active.current().version).toBe(before);
  }, 15_000);

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

  it('watching, leaves a policy installed from the database in force when the file changes', async () => {
    const active = await ActivePolicy.load(file, { pollIntervalMs: 10 });
    const stored = await PolicyEngine.load(echoWasm());
    active.install(stored, 'admin:ops', 'database');
    const reload = jest.spyOn(ActivePolicy.prototype, 'reload');
    // Our own listener shares the watcher's stat polls and runs after the policy's listener.
    let seen: () => void = () => undefined;
    const observe = (current: Stats, previous: Stats) => {
      if (current.mtimeMs !== previous.mtimeMs || current.size !== previous.size) seen();
    };
    const stop = active.watch();
    watchFile(file, { interval: 10, persistent: false }, observe);
    try {
      let changed = false;
      for (let round = 0; round < 40 && !changed; round += 1) {
        const polled = new Promise<boolean>((resolve) => (seen = () => resolve(true)));
        writeFileSync(`${file}.tmp`, round % 2 === 0 ? bareWasm() : echoWasm());
        renameSync(`${file}.tmp`, file);
        changed = await Promise.race([polled, new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 250))]);
      }
      expect(changed).toBe(true);
      expect(reload).not.toHaveBeenCalled();
      expect(active.current()).toBe(stored);
      expect(active.describe()).toMatchObject({ source: 'database', loaded_by: 'admin:ops' });
    } finally {
      unwatchFile(file, observe);
      stop();
    }
  }, 15_000);

  it('keeps a policy installed from the database while a file change was loading in force', async () => {
    const active = await ActivePolicy.load(file);
    const stored = await PolicyEngine.load(echoWasm());
    const held = holdLoads();
    writeFileSync(file, bareWasm());
    const reloading = active.reload(); // the watcher saw the change while the file was in force
    while (held.started() === 0) await held.nextStart();
    active.install(stored, 'admin:ops', 'database'); // the cluster's activation, meanwhile
    held.release();
    expect(await reloading).toBe(stored);
    expect(active.current()).toBe(stored);
    expect(active.describe()).toMatchObject({ source: 'database', loaded_by: 'admin:ops' });
    // Deactivated: the file is read again and wins.
    const file2 = await active.reload();
    expect(active.current()).toBe(file2);
    expect(file2.version).not.toBe(stored.version);
    expect(active.installedFromElsewhere).toBe(false);
  });

  it('loads a change made while a reload is in flight once that reload ends', async () => {
    const active = await ActivePolicy.load(file);
    const v2 = (await PolicyEngine.load(bareWasm())).version;
    const held = holdLoads();
    writeFileSync(file, echoWasm());
    const first = active.reload(); // reads v1, then compiles (held)
    while (held.started() === 0) await held.nextStart();
    writeFileSync(file, bareWasm());
    const second = active.reload(); // the watcher's next poll saw v2
    held.release();
    await first;
    expect((await second).version).toBe(v2);
    expect(active.current().version).toBe(v2);
  });

  it('watching, installs an edit made while the previous edit is compiling, with no later change', async () => {
    const events: PolicyReloadEvent[] = [];
    const active = await ActivePolicy.load(file, { pollIntervalMs: 10, onReload: (event) => events.push(event) });
    const v2 = (await PolicyEngine.load(bareWasm())).version;
    const held = holdLoads();
    const replace = (content: Buffer) => {
      writeFileSync(`${file}.tmp`, content);
      renameSync(`${file}.tmp`, file);
    };
    // A listener of our own on the same file shares the watcher's stat polls and runs after the
    // policy's own listener: when it sees a change, the policy has already asked for its reload.
    let seen: (stats: Stats) => void = () => undefined;
    const stop = active.watch();
    const observe = (current: Stats, previous: Stats) => {
      if (current.mtimeMs !== previous.mtimeMs || current.size !== previous.size) seen(current);
    };
    watchFile(file, { interval: 10, persistent: false }, observe);
    try {
      // Edit 1: replace until the watcher starts a reload of it (its first stat is its baseline).
      for (let round = 0; round < 40 && held.started() === 0; round += 1) {
        const started = held.nextStart();
        replace(echoWasm());
        await Promise.race([started, new Promise((resolve) => setTimeout(resolve, 250))]);
      }
      expect(held.started()).toBe(1);
      // Edit 2 while reload 1 is held, and wait for the poll that sees it.
      const v2Size = bareWasm().length;
      const polled = new Promise<void>((resolve) => (seen = (stats) => stats.size === v2Size && resolve()));
      replace(bareWasm());
      await polled;
      held.release();
      while (active.current().version !== v2 && events.length < 2) await new Promise((resolve) => setTimeout(resolve, 10));
      expect(active.current().version).toBe(v2);
    } finally {
      unwatchFile(file, observe);
      stop();
    }
  }, 15_000);
});
