import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';

// The bundled CLI keeps compiled code in $PETRI_ROOT/compile-cache (src/cli/compile-cache.ts).
const petri = join(import.meta.dirname, '..', 'dist', 'bin', 'petri.cjs');
let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'ptest-compile-cache-'));
  chmodSync(root, 0o755);
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const run = (...args: string[]) => {
  const env: NodeJS.ProcessEnv = { ...process.env, PETRI_ROOT: root };
  delete env.NODE_DISABLE_COMPILE_CACHE;
  return spawnSync(process.execPath, [petri, ...args], { encoding: 'utf8', timeout: 20_000, env });
};
const cacheDir = () => join(root, 'compile-cache');
/** The cache's files, wherever Node or petri keeps them below the directory. */
const files = (dir = cacheDir()): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)],
  );

it('keeps compiled code in its own directory and survives a corrupt cache', () => {
  const first = run('--help');
  expect(first.status).toBe(0);
  expect(first.stderr).toBe('');
  expect(statSync(cacheDir()).mode & 0o777).toBe(0o700);
  expect(files().length).toBeGreaterThan(0);
  const again = run('--help');
  expect(again).toMatchObject({ status: 0, stdout: first.stdout, stderr: '' });
  for (const file of files()) writeFileSync(file, 'not compiled code');
  expect(run('--help')).toMatchObject({ status: 0, stdout: first.stdout, stderr: '' });
  expect(run('--help')).toMatchObject({ status: 0, stdout: first.stdout, stderr: '' });
});

it('caches nothing under a PETRI_ROOT others may write to', () => {
  chmodSync(root, 0o777);
  expect(run('--help').status).toBe(0);
  expect(existsSync(cacheDir())).toBe(false);
});

it('keeps import() out of the chunks most commands load (on Node 20 the cache leaves such a file out)', () => {
  // compile-cache.ts compiles a file with import() in it without the cache (vm.Script loses the
  // callback import() needs with cached data). Only rarely used chunks may have one.
  const bin = join(import.meta.dirname, '..', 'dist', 'bin');
  const allowed = /^(petri|config-load|repro|lock)[.-]/;
  const withImport = readdirSync(bin).filter(
    (name) => name.endsWith('.cjs') && /\bimport\(/.test(readFileSync(join(bin, name), 'utf8')),
  );
  expect(withImport.filter((name) => !allowed.test(name))).toEqual([]);
  expect(withImport.some((name) => name.startsWith('lock-'))).toBe(true); // the check itself still sees them
});
