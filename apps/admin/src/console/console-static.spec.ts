import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CONSOLE_CSP, consoleAssetsDir } from './console-static';

describe('console static files', () => {
  it('allows only its own scripts and styles, and is never framed', () => {
    expect(CONSOLE_CSP).toContain("script-src 'self'");
    expect(CONSOLE_CSP).toContain("style-src 'self'");
    expect(CONSOLE_CSP).toContain("frame-ancestors 'none'");
    expect(CONSOLE_CSP).toContain("default-src 'none'");
    expect(CONSOLE_CSP).not.toMatch(/unsafe-|\*/);
  });

  it('finds dist/console from the sources or from dist, and nothing without a build', () => {
    const root = mkdtempSync(join(tmpdir(), 'writ-console-'));
    writeFileSync(join(root, 'package.json'), '{}');
    const from = join(root, 'dist', 'apps', 'admin', 'src', 'console');
    mkdirSync(from, { recursive: true });
    expect(consoleAssetsDir(from)).toBeUndefined();
    mkdirSync(join(root, 'dist', 'console'));
    writeFileSync(join(root, 'dist', 'console', 'index.html'), '<!doctype html>');
    expect(consoleAssetsDir(from)).toBe(join(root, 'dist', 'console'));
    expect(consoleAssetsDir(join(root, 'apps', 'admin', 'src', 'console'))).toBe(join(root, 'dist', 'console'));
    rmSync(root, { recursive: true, force: true });
  });
});
