import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { listContainers } from '../src/runtime/containers.js';
import { type ApiImages, apiImages } from './helpers/api-image.js';
import { describeKernel, missingForContainers } from './helpers/kernel.js';

const top = join(import.meta.dirname, '..');
const vitest = join(top, 'node_modules', 'vitest', 'vitest.mjs');

let images: ApiImages;
let out: string;

beforeAll(async () => {
  if (missingForContainers()) return;
  images = await apiImages();
  out = mkdtempSync(join(tmpdir(), 'ptest-vitest-out-'));
});
afterAll(() => {
  images?.remove();
  if (out) rmSync(out, { recursive: true, force: true });
});

it('the package exports petri/vitest beside the root', () => {
  const resolved = spawnSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      "console.log(import.meta.resolve('petri'), import.meta.resolve('petri/vitest'), import.meta.resolve('petri/package.json'))",
    ],
    { cwd: top, encoding: 'utf8' },
  );
  expect(resolved.stderr).toBe('');
  expect(resolved.stdout.trim().split(' ')).toEqual([
    `file://${top}/dist/lib/index.js`,
    `file://${top}/dist/lib/vitest.js`,
    `file://${top}/package.json`,
  ]);
});

it('the bundled entries share one copy of what both use, and importing loads nothing a test may not need', () => {
  // A fresh process, as a vitest worker is: what `import 'petri'` costs, and which of its modules are shared.
  const script = `
    const petri = await import('petri');
    const { createRequire } = await import('node:module');
    // npm packages petri loaded (vitest, imported by petri/vitest below, has its own)
    const packages = Object.keys(createRequire(import.meta.url).cache).filter((file) => file.includes('/node_modules/'));
    const builtins = process.moduleLoadList.filter((m) => /^NativeModule (http|https|tls|zlib)$/.test(m));
    const vitest = await import('petri/vitest');
    let thrown;
    try {
      vitest.petriGlobalSetup({ images: 5 });
    } catch (error) {
      thrown = error;
    }
    console.log(JSON.stringify({
      sameContainer: vitest.petriContainer('busybox') instanceof petri.GenericContainer,
      samePetriError: thrown instanceof petri.PetriError,
      builtins,
      packages,
    }));
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: top, encoding: 'utf8' });
  expect(r.stderr).toBe('');
  expect(JSON.parse(r.stdout)).toEqual({
    sameContainer: true,
    samePetriError: true,
    // loaded on first use: HTTP wait strategies, registries, archives, reused containers' lock
    builtins: [],
    packages: [],
  });
});

describeKernel(
  'petri/vitest: a suite of its own (test/vitest-integration) with the global setup and the fixtures',
  () => {
    it('builds the image once, gives every test its own container, in parallel workers, and leaves none', async () => {
      const child = spawn(
        process.execPath,
        [vitest, 'run', '--config', join(top, 'test', 'vitest-integration', 'vitest.config.ts')],
        {
          cwd: top,
          env: { ...process.env, PTEST_VITEST_STORE: images.dir, PTEST_VITEST_OUT: out, NO_COLOR: '1', CI: '1' },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let output = '';
      child.stdout.on('data', (chunk) => {
        output += chunk;
      });
      child.stderr.on('data', (chunk) => {
        output += chunk;
      });
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      expect(output).toMatch(/Test Files\s+2 passed \(2\)/);
      expect(output).toMatch(/Tests\s+6 passed \| 1 skipped \(7\)/);
      expect(code).toBe(0);

      const records = readFileSync(join(out, 'records.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { pid: number; file: string; id: string; port?: number; image: string });
      expect(records).toHaveLength(6);
      // Two test files, two workers at once: the same image id in both, from one build.
      expect(new Set(records.map((r) => r.pid)).size).toBe(2);
      const web = (await images.store.resolve('petri-vitest/web:latest')).id;
      const base = (await images.store.resolve('ptest/api:1')).id;
      expect(new Set(records.map((r) => r.image))).toEqual(new Set([web, base]));
      // The same container port in both workers at once, different host ports.
      const ports = records.flatMap((r) => (r.port === undefined ? [] : [r.port]));
      expect(ports).toHaveLength(5);
      expect(new Set(ports).size).toBe(5);
      // A container per test (and per start), none left.
      expect(new Set(records.map((r) => r.id)).size).toBe(6);
      const ids = new Set(records.map((r) => r.id));
      expect(listContainers().filter((c) => ids.has(c.id))).toEqual([]);
    }, 120_000);
  },
);
