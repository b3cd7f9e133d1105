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
  // callback import() needs with cached data). Only rarely used chunks may have one, and the index
  // lock's chunk (the store needs it) holds the lock alone.
  const bin = join(import.meta.dirname, '..', 'dist', 'bin');
  const text = (name: string) => readFileSync(join(bin, name), 'utf8');
  const allowed = /^(petri|config-load|repro|lock)[.-]/;
  const chunks = readdirSync(bin).filter((name) => name.endsWith('.cjs'));
  const withImport = chunks.filter((name) => text(name).includes('import('));
  expect(withImport.filter((name) => !allowed.test(name))).toEqual([]);
  const lock = withImport.find((name) => name.startsWith('lock-'));
  expect(lock).toBeDefined(); // the check itself still finds them
  expect(text(lock as string).match(/^\/\/ dist\/.*$/gm)).toEqual(['// dist/image/lock.js']);
  // What every command loads (petri.cjs, the entry, which the hook never compiles; then main's chunk)
  // requires none of the others at load time.
  const main = chunks.find((name) => name.startsWith('main-')) as string;
  const required = [...text(main).matchAll(/^(?:const|let) \w+ = require\("\.\/([^"]+)"\)/gm)].map((m) => m[1]);
  expect(required).toContain('petri.cjs'); // the pattern still reads main's requires
  expect(required.filter((name) => name !== 'petri.cjs' && withImport.includes(name as string))).toEqual([]);
});
