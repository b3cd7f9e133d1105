import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  appendFileSync,
  chmodSync,
  chownSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { jobLines } from '../src/action/config-lines.js';
import { petriTestArgs, readInputs } from '../src/action/inputs.js';
import { restoreStore, saveStore, storeCacheKey } from '../src/action/store-cache.js';
import { summaryMarkdown } from '../src/action/summary.js';
import { uploadFailures } from '../src/action/upload.js';
import { loadConfig } from '../src/test-runner/config-load.js';
import type { JobResult } from '../src/test-runner/events.js';
import { type ArtifactService, startArtifactService, unzip } from './helpers/artifact-service.js';
import { type CacheService, startCacheService } from './helpers/cache-service.js';
import { describeKernel } from './helpers/kernel.js';
import { releasedNode } from './helpers/node-release.js';

const top = join(import.meta.dirname, '..');
const actionDist = join(top, 'action', 'dist');
const MAIN = join(actionDist, 'main.cjs');
const POST = join(actionDist, 'post.cjs');
const PETRI = join(actionDist, 'petri.cjs');
const LEAKS = join(top, '..', 'shared', 'tools', 'leaks.sh');
/**
 * The node that runs the bundle, petri and the bundler here: GitHub runs the action on node24, and this suite
 * runs on whatever node vitest has. PETRI_TEST_NODE=/path/to/node24/bin/node runs every spawned script on that
 * node instead (README: "Checking the action on Node 24").
 */
const NODE = process.env.PETRI_TEST_NODE || process.execPath;
/** How node starts a warning it prints: `(node:1234) [DEP0005] DeprecationWarning: …`, `(node:1234) Warning: …`. */
const NODE_WARNING = /^\(node:\d+\) /m;

interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a script the way the runner runs an action's entry point: `node FILE`, asynchronously (the stand-in service answers meanwhile). */
function runNode(
  script: string,
  env: NodeJS.ProcessEnv,
  options: {
    cwd: string;
    uid?: number;
    gid?: number;
    onStdout?: (text: string) => void;
    timeoutMs?: number;
    node?: string;
  },
): { done: Promise<Ran>; pid: number | undefined; kill: (signal: NodeJS.Signals) => void } {
  const child = spawn(options.node ?? NODE, [script], {
    cwd: options.cwd,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.uid !== undefined ? { uid: options.uid, gid: options.gid } : {}),
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    options.onStdout?.(stdout);
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
  const done = new Promise<Ran>((resolve) =>
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    }),
  );
  return { done, pid: child.pid, kill: (signal) => child.kill(signal) };
}

/** Whether a process runs (a zombie nobody reaped yet does not). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** The `name<<DELIMITER … DELIMITER` records of GITHUB_OUTPUT and GITHUB_STATE files. */
function fileCommands(file: string): Record<string, string> {
  const values: Record<string, string> = {};
  const lines = readFileSync(file, 'utf8').split('\n');
  for (let i = 0; i < lines.length; i++) {
    const match = /^([^<]+)<<(.+)$/.exec(lines[i] ?? '');
    if (!match) continue;
    const [, name, delimiter] = match as unknown as [string, string, string];
    const value: string[] = [];
    for (i++; i < lines.length && lines[i] !== delimiter; i++) value.push(lines[i] ?? '');
    values[name] = value.join('\n');
  }
  return values;
}

describe('the action: inputs, config lines, summary, action.yml, committed bundle', () => {
  it('reads its inputs with their defaults and turns them into petri test arguments', () => {
    const env = (values: Record<string, string>) => (name: string) => values[name] ?? '';
    const inputs = readInputs(env({}), '/work/project');
    expect(inputs).toEqual({
      filters: [],
      junit: 'petri-artifacts/junit.xml',
      artifacts: 'petri-artifacts',
      uploadFailed: true,
      keepFailed: true,
      workingDirectory: '/work/project',
      cache: true,
      artifactPrefix: 'petri-failed-',
    });
    expect(petriTestArgs(inputs)).toEqual([
      'test',
      '--reporter',
      'json',
      '--artifacts',
      'petri-artifacts',
      '--junit',
      'petri-artifacts/junit.xml',
      '--keep-failed',
    ]);
    const all = readInputs(
      env({
        config: 'ci/petri.yaml',
        filter: 'unit\n\n e2e-* ',
        shard: '2/4',
        parallel: '3',
        junit: 'none',
        'keep-failed': 'false',
        'upload-failed': 'False',
        'retention-days': '5',
        'working-directory': 'sub',
        cache: 'false',
      }),
      '/w',
    );
    expect(petriTestArgs(all)).toEqual([
      'test',
      '--reporter',
      'json',
      '--artifacts',
      'petri-artifacts',
      '--config',
      'ci/petri.yaml',
      '--filter',
      'unit',
      '--filter',
      'e2e-*',
      '--shard',
      '2/4',
      '--parallel',
      '3',
      '--no-keep-failed',
    ]);
    expect(all).toMatchObject({ workingDirectory: '/w/sub', retentionDays: 5, uploadFailed: false, cache: false });
    expect(() => readInputs(env({ shard: '5/4' }))).toThrow('input shard: "5/4" is not valid: expected I/N');
    expect(() => readInputs(env({ parallel: '0' }))).toThrow('input parallel: "0" is not valid');
    expect(() => readInputs(env({ 'retention-days': '91' }))).toThrow('expected a whole number from 1 to 90');
    expect(() => readInputs(env({ 'upload-failed': 'yes' }))).toThrow('input upload-failed: "yes" is not valid');
  });

  it("finds each job's line in JSON, YAML and JavaScript configs", () => {
    const json = JSON.stringify({ images: {}, jobs: [{ name: 'unit', run: 'x' }, { name: 'unit-2' }] }, null, 2);
    expect(jobLines(json, ['unit', 'unit-2', 'missing'])).toEqual(
      new Map([
        ['unit', 5],
        ['unit-2', 9],
      ]),
    );
    const oneLine = '{\n  "jobs": [\n    { "name": "a.b", "image": "x" },\n    { "name": "a", "image": "x" }\n  ]\n}';
    expect(jobLines(oneLine, ['a', 'a.b'])).toEqual(
      new Map([
        ['a', 4],
        ['a.b', 3],
      ]),
    );
    const yaml =
      "images:\n  app: {context: app}\njobs:\n  - name: lint\n    run: x\n  - image: app\n    name: 'e2e' # slow\n";
    expect(jobLines(yaml, ['lint', 'e2e'])).toEqual(
      new Map([
        ['lint', 4],
        ['e2e', 7],
      ]),
    );
    const js =
      "export default defineConfig({\n  jobs: [\n    { name: 'unit', image: 'app' },\n    {\n      name: `e2e`,\n    },\n  ],\n});\n";
    expect(jobLines(js, ['unit', 'e2e'])).toEqual(
      new Map([
        ['unit', 3],
        ['e2e', 5],
      ]),
    );
  });

  it('writes a summary: a table of the jobs, and for a failure its reason, last lines, artifact and the commands that open it', () => {
    const base = { image: 'app', attempts: 1, stdout: '', stderr: '' };
    const results: JobResult[] = [
      { ...base, name: 'unit', status: 'passed', message: 'passed', durationMs: 1200 },
      {
        ...base,
        name: 'e2e',
        status: 'failed',
        failure: 'exit',
        message: 'exit code 2',
        command: ['sh', '-c', 'npm run e2e'],
        durationMs: 61_000,
        artifact: {
          image: 'petri-failed/e2e:20261123-120000-abcd',
          imageId: 'sha256:1',
          tar: 'petri-artifacts/e2e.tar',
          json: 'petri-artifacts/e2e.json',
          markdown: 'petri-artifacts/e2e.md',
          repro: 'petri repro petri-artifacts/e2e.tar --rerun',
        },
        repro: 'petri repro petri-artifacts/e2e.tar --rerun',
      },
      { ...base, name: 'lint', status: 'error', message: 'image app did not build: step 2 failed', durationMs: 0 },
    ];
    const markdown = summaryMarkdown({
      results,
      runId: '20261123-120000-abcd',
      durationMs: 62_000,
      shard: '1/4',
      config: 'petri.config.json',
      githubRunId: '777',
      repository: 'octo/app',
      details: new Map([
        [
          'e2e',
          {
            lastLines: ['step one', 'Error: ``` boom'],
            upload: { name: 'petri-failed-e2e', id: 3 },
            dockerRun: 'docker run -it --rm --memory 268435456 petri-failed/e2e:20261123-120000-abcd sh',
          },
        ],
      ]),
    });
    expect(markdown).toContain('### petri test: 1 failed, 1 passed, 1 could not run in 1m02s');
    expect(markdown).toContain('run `20261123-120000-abcd` · shard 1/4 · config `petri.config.json`');
    expect(markdown).toContain('| `unit` | app | ✅ passed | 1.20s | 1 |');
    expect(markdown).toContain('| `e2e` | app | ❌ failed | 1m01s | 1 |');
    expect(markdown).toContain('| `lint` | app | ⚠️ error | 0ms | 1 |');
    expect(markdown).toContain('#### ❌ `e2e`: exit code 2');
    expect(markdown).toContain("Command: `sh -c 'npm run e2e'`");
    expect(markdown).toContain('````text\nstep one\nError: ``` boom\n````');
    expect(markdown).toContain('Artifact: **petri-failed-e2e** (`e2e.tar`, `e2e.json`, `e2e.md`)');
    expect(markdown).toContain(
      'gh run download 777 -R octo/app -n petri-failed-e2e -D petri-failed-e2e\nsudo petri repro petri-failed-e2e/e2e.tar --rerun',
    );
    expect(markdown).toContain(
      'docker load -i petri-failed-e2e/e2e.tar\ndocker run -it --rm --memory 268435456 petri-failed/e2e:20261123-120000-abcd sh',
    );
    expect(markdown).toContain('#### ⚠️ `lint` could not run');
  });

  it("keys the store cache on the config, the Dockerfiles and their contexts' content (not on ignored files)", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ptest-action-key-'));
    try {
      mkdirSync(join(dir, 'app'));
      writeFileSync(
        join(dir, 'petri.config.json'),
        JSON.stringify({ images: { app: { context: 'app' } }, jobs: [{ name: 'unit', image: 'app', run: 'true' }] }),
      );
      writeFileSync(join(dir, 'app', 'Dockerfile'), 'FROM petri-fixture/busybox\nCOPY . /app\n');
      writeFileSync(join(dir, 'app', 'main.sh'), 'echo one\n');
      writeFileSync(join(dir, 'app', '.dockerignore'), '*.log\n');
      const key = async () => storeCacheKey(await loadConfig(join(dir, 'petri.config.json'), dir));
      const first = await key();
      expect(first).toMatch(new RegExp(`^petri-store-v1-${process.platform}-${process.arch}-[0-9a-f]{40}$`));
      expect(await key()).toBe(first);
      writeFileSync(join(dir, 'app', 'debug.log'), 'ignored');
      expect(await key()).toBe(first);
      writeFileSync(join(dir, 'app', 'main.sh'), 'echo two\n');
      const second = await key();
      expect(second).not.toBe(first);
      writeFileSync(join(dir, 'app', 'Dockerfile'), 'FROM petri-fixture/busybox\nCOPY . /srv\n');
      expect(await key()).not.toBe(second);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('saves the store (images, build cache records) in a local stand-in of the Actions cache service (v2) and restores it into an empty store only', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ptest-action-cache-'));
    const service = await startCacheService();
    const saved = { ...process.env };
    // @actions/cache reads these when it is called: the runner's variables, pointing at the stand-in.
    Object.assign(process.env, service.env, { RUNNER_TEMP: join(dir, 'runner-temp'), GITHUB_WORKSPACE: dir });
    try {
      const store = join(dir, 'store');
      for (const path of ['images/blobs/sha256', 'build-cache/steps', 'build-cache/mounts/m', 'containers/c']) {
        mkdirSync(join(store, path), { recursive: true });
      }
      writeFileSync(join(store, 'images', 'index.json'), '{"manifests":[]}');
      writeFileSync(join(store, 'images', 'blobs', 'sha256', 'ab'), 'blob');
      writeFileSync(join(store, 'build-cache', 'steps', 'k'), '{}');
      writeFileSync(join(store, 'build-cache', 'mounts', 'm', 'npm-cache'), 'not carried');
      const log: string[] = [];
      const options = (root: string) => ({
        access: { kind: 'root' } as const,
        root,
        staging: join(dir, 'staging'),
        log: (line: string) => log.push(line),
      });
      const prefix = `petri-store-v1-${process.platform}-${process.arch}-`;
      const key = `${prefix}${'a'.repeat(40)}`;
      const methods = () => service.calls.map((call) => call.method);

      // A store with images: not restored over; the cache is only asked whether it has the key.
      expect(await restoreStore(key, options(store))).toEqual({ cached: false });
      expect(log).toContain(`cache: ${store} already has images: not restoring over them`);
      expect(methods()).toEqual(['GetCacheEntryDownloadURL']);
      expect(service.calls[0]?.request.key).toBe(key);
      expect(service.calls[0]?.request.restore_keys ?? []).toEqual([]); // lookup of the exact key only

      await saveStore(key, false, options(store));
      expect(log).toContain(`cache: saved petri's store as ${key}`);
      expect(methods()).toEqual(['GetCacheEntryDownloadURL', 'CreateCacheEntry', 'FinalizeCacheEntryUpload']);
      expect(service.calls.every((call) => call.authorization === `Bearer ${service.token}`)).toBe(true);
      expect(existsSync(join(dir, 'staging', 'store.tar'))).toBe(false);
      const entry = service.entries.get(key);
      expect(entry?.finalizedSize).toBe(entry?.blob?.length);
      // The entry: @actions/cache's compressed tar of the staging directory, holding petri's tar of the store.
      const unpacked = join(dir, 'unpacked');
      mkdirSync(unpacked);
      writeFileSync(join(dir, 'entry'), entry?.blob as Buffer);
      const untar = spawnSync('tar', ['-x', '-f', join(dir, 'entry'), '-C', unpacked, '-P'], { encoding: 'utf8' });
      expect(untar.status, untar.stderr).toBe(0);
      const listing = spawnSync('tar', ['-t', '-f', join(unpacked, 'staging', 'store.tar')], { encoding: 'utf8' });
      expect(listing.status, listing.stderr).toBe(0);
      const names = listing.stdout.split('\n').filter(Boolean);
      expect(names).toEqual(
        expect.arrayContaining(['images/index.json', 'images/blobs/sha256/ab', 'build-cache/steps/k']),
      );
      expect(names.filter((name) => /^(containers|build-cache\/mounts)\b/.test(name))).toEqual([]);

      // A fresh store: restored, the archive downloaded once; the key is cached, so nothing to save after.
      const fresh = join(dir, 'fresh');
      expect(await restoreStore(key, options(fresh))).toEqual({ restored: key, cached: true });
      expect(service.downloads).toBe(1);
      expect(log).toContain(`cache: restored petri's store from ${key}`);
      expect(readFileSync(join(fresh, 'images', 'blobs', 'sha256', 'ab'), 'utf8')).toBe('blob');
      expect(readFileSync(join(fresh, 'build-cache', 'steps', 'k'), 'utf8')).toBe('{}');
      expect(existsSync(join(fresh, 'build-cache', 'mounts'))).toBe(false);
      expect(existsSync(join(fresh, 'containers'))).toBe(false);
      expect(existsSync(join(dir, 'staging', 'store.tar'))).toBe(false);
      const calls = service.calls.length;
      await saveStore(key, true, options(fresh));
      expect(log).toContain(`cache: the cache has ${key} already: nothing to save`);
      expect(service.calls.length).toBe(calls);
      // The store with images again: the cache has its key, so it is neither restored over nor saved again.
      expect(await restoreStore(key, options(store))).toEqual({ cached: true });
      expect(service.downloads).toBe(1);

      // Another key (the config or a context changed): the newest entry of an earlier key is restored, and
      // the store is then saved under the new key.
      const next = `${prefix}${'b'.repeat(40)}`;
      const other = join(dir, 'other');
      expect(await restoreStore(next, options(other))).toEqual({ restored: key, cached: false });
      expect(log).toContain(`cache: restored petri's store from ${key} (for ${next})`);
      expect(service.calls.at(-1)?.request).toMatchObject({ key: next, restore_keys: [prefix] });
      expect(readFileSync(join(other, 'images', 'index.json'), 'utf8')).toBe('{"manifests":[]}');
      await saveStore(next, false, options(other));
      expect([...service.entries.keys()]).toEqual([key, next]);

      // Nothing under another version (other cached paths: another staging directory): a miss.
      const elsewhere = { ...options(join(dir, 'elsewhere')), staging: join(dir, 'staging-2') };
      expect(await restoreStore(key, elsewhere)).toEqual({ cached: false });
      expect(log).toContain(`cache: no entry for ${key}`);
      expect(existsSync(join(dir, 'elsewhere'))).toBe(false);
    } finally {
      for (const name of Object.keys(process.env)) if (!(name in saved)) delete process.env[name];
      Object.assign(process.env, saved);
      await service.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("names a re-run's artifacts by its attempt: a workflow run keeps each artifact name once (409 again)", async () => {
    const service = await startArtifactService();
    const dir = mkdtempSync(join(tmpdir(), 'ptest-action-upload-'));
    const saved = { token: process.env.ACTIONS_RUNTIME_TOKEN, url: process.env.ACTIONS_RESULTS_URL };
    try {
      for (const ext of ['tar', 'json', 'md']) writeFileSync(join(dir, `bad.${ext}`), `bad ${ext}\n`);
      const failed = {
        name: 'bad',
        status: 'failed',
        artifact: { tar: 'bad.tar', json: 'bad.json', markdown: 'bad.md' },
      } as unknown as JobResult;
      process.env.ACTIONS_RUNTIME_TOKEN = service.token;
      process.env.ACTIONS_RESULTS_URL = service.url;
      const upload = (attempt: number) =>
        uploadFailures([failed], { cwd: dir, prefix: 'petri-failed-', attempt, log: () => {} });
      expect((await upload(1)).get('bad')).toMatchObject({ name: 'petri-failed-bad' });
      expect((await upload(2)).get('bad')).toMatchObject({ name: 'petri-failed-bad-attempt2' });
      // The same name once more, as every attempt got before: refused.
      expect((await upload(2)).get('bad')?.error).toMatch(/409|already exists|Conflict/i);
      expect([...service.artifacts.keys()]).toEqual(['petri-failed-bad', 'petri-failed-bad-attempt2']);
    } finally {
      for (const [key, value] of [
        ['ACTIONS_RUNTIME_TOKEN', saved.token],
        ['ACTIONS_RESULTS_URL', saved.url],
      ] as const) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
      await service.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('action.yml runs the committed bundle on node24 and declares what the code reads and writes', () => {
    const action = parseYaml(readFileSync(join(top, 'action.yml'), 'utf8')) as {
      inputs: Record<string, { default?: string }>;
      outputs: Record<string, unknown>;
      runs: Record<string, string>;
    };
    expect(action.runs).toEqual({
      using: 'node24',
      main: 'action/dist/main.cjs',
      post: 'action/dist/post.cjs',
      'post-if': 'always()',
    });
    for (const file of [MAIN, POST, PETRI]) expect(existsSync(file), file).toBe(true);
    expect(Object.keys(action.inputs).sort()).toEqual(
      [
        'artifact-prefix',
        'artifacts',
        'cache',
        'config',
        'filter',
        'junit',
        'keep-failed',
        'parallel',
        'retention-days',
        'shard',
        'upload-failed',
        'working-directory',
      ].sort(),
    );
    expect(action.inputs['upload-failed']?.default).toBe('true');
    // The defaults in action.yml are the code's own defaults.
    const defaults = readInputs((name) => action.inputs[name]?.default ?? '', '/w');
    expect(defaults).toEqual(readInputs(() => '', '/w'));
    expect(Object.keys(action.outputs).sort()).toEqual(['artifacts', 'failed', 'junit', 'passed', 'run-id']);
  });

  it('the committed action/dist is what scripts/bundle-action.mjs makes from the sources now', () => {
    const fresh = mkdtempSync(join(tmpdir(), 'ptest-action-bundle-'));
    try {
      const r = spawnSync(NODE, [join(top, 'scripts', 'bundle-action.mjs'), '--out', fresh], {
        encoding: 'utf8',
        timeout: 120_000,
      });
      expect(r.status, r.stderr).toBe(0);
      expect(readdirSync(fresh).sort()).toEqual(readdirSync(actionDist).sort());
      for (const file of readdirSync(fresh)) {
        const same = readFileSync(join(fresh, file)).equals(readFileSync(join(actionDist, file)));
        expect(same, `action/dist/${file} is stale: run npm run build:action and commit action/dist`).toBe(true);
      }
    } finally {
      rmSync(fresh, { recursive: true, force: true });
    }
  }, 120_000);
});

describeKernel('the action on the real kernel: petri test, summary, annotations, artifact upload, post cleanup', () => {
  let work: string;
  let root: string;
  let service: ArtifactService;
  const sudoInstalled = spawnSync('sudo', ['--version']).status === 0;
  const canAddUser = spawnSync('useradd', ['--help']).status === 0;

  const petri = (args: string[], cwd = work) => {
    const r = spawnSync(NODE, [PETRI, ...args], {
      cwd,
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...process.env, PETRI_ROOT: root },
    });
    if (r.status !== 0) throw new Error(`petri ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
    return r.stdout;
  };
  /** A project with a config file, and a run directory with the runner's files (GITHUB_OUTPUT…). */
  const setup = (name: string, file: string, config: string) => {
    const project = join(work, name);
    const run = join(work, `${name}-run`);
    mkdirSync(project, { recursive: true });
    mkdirSync(run, { recursive: true });
    writeFileSync(join(project, file), config);
    for (const f of ['summary.md', 'output', 'state']) writeFileSync(join(run, f), '');
    return { project, run };
  };
  const actionEnv = (project: string, run: string, inputs: Record<string, string>, extra: NodeJS.ProcessEnv = {}) => {
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: run,
      PETRI_ROOT: root,
      GITHUB_ACTIONS: 'true',
      GITHUB_WORKSPACE: project,
      GITHUB_STEP_SUMMARY: join(run, 'summary.md'),
      GITHUB_OUTPUT: join(run, 'output'),
      GITHUB_STATE: join(run, 'state'),
      GITHUB_RUN_ID: '4242',
      GITHUB_REPOSITORY: 'octo/project',
      RUNNER_TEMP: run,
      ACTIONS_RESULTS_URL: service.url,
      ACTIONS_RUNTIME_TOKEN: service.token,
      ...extra,
    };
    for (const [key, value] of Object.entries(inputs)) env[`INPUT_${key.toUpperCase()}`] = value;
    return env;
  };
  /** The post step's environment: the runner turns GITHUB_STATE's records into STATE_<name>. */
  const postEnv = (env: NodeJS.ProcessEnv, run: string) => {
    const state = fileCommands(join(run, 'state'));
    return { ...env, ...Object.fromEntries(Object.entries(state).map(([k, v]) => [`STATE_${k}`, v])) };
  };
  /** What leaks.sh reports that belongs to this suite's store or to the given containers. */
  const leaks = (ids: string[] = []) => {
    if (!existsSync(LEAKS)) return [];
    const r = spawnSync('bash', [LEAKS], { encoding: 'utf8', env: { ...process.env, PETRI_ROOT: root } });
    return r.stdout.split('\n').filter((line) => line && (line.includes(root) || ids.some((id) => line.includes(id))));
  };
  /** What leaks.sh reports of another store. */
  const leaksIn = (store: string) => {
    if (!existsSync(LEAKS)) return [];
    const r = spawnSync('bash', [LEAKS], { encoding: 'utf8', env: { ...process.env, PETRI_ROOT: store } });
    return r.stdout.split('\n').filter((line) => line.includes(store));
  };
  const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
  const passFail = (extra = '') =>
    JSON.stringify(
      {
        images: { base: { image: 'petri-fixture/busybox' } },
        jobs: [
          { name: 'good', image: 'base', run: 'echo all good' },
          {
            name: 'bad',
            image: 'base',
            memory: '64m',
            run: `echo about to fail; echo oops >&2; echo state > /tmp/left-behind; exit 3${extra}`,
          },
        ],
      },
      null,
      2,
    );

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'ptest-action-'));
    chmodSync(work, 0o755);
    root = join(work, 'root');
    const context = join(work, 'busybox-context');
    cpSync(join(top, 'fixtures', 'build', 'busybox'), context, { recursive: true });
    copyFileSync('/bin/busybox', join(context, 'busybox'));
    petri(['build', '-q', '-t', 'petri-fixture/busybox', context]);
    service = await startArtifactService();
  });
  afterAll(async () => {
    await service?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('as root: runs the jobs, sets the outputs, writes the summary and annotations, uploads the failed job', async () => {
    const { project, run } = setup('as-root', 'petri.config.json', passFail());
    const env = actionEnv(project, run, { 'retention-days': '3', cache: 'true' });
    const r = await runNode(MAIN, env, { cwd: project }).done;
    expect(r.status, r.stderr).toBe(1);
    // No warning from node (a deprecated API, an experimental feature) in the action's or petri's output.
    expect(r.stderr).not.toMatch(NODE_WARNING);
    expect(r.stdout).toMatch(/^\[good\] +all good$/m);
    expect(r.stdout).toMatch(/^\[bad\] +FAILED: exit code 3 after/m);
    expect(r.stdout).toContain(
      'cache: the Actions cache service is not available here (no ACTIONS_CACHE_URL): skipped',
    );

    const outputs = fileCommands(join(run, 'output'));
    const runId = outputs['run-id'] as string;
    expect(runId).toMatch(/^\d{8}-\d{6}-[0-9a-f]{4}$/);
    expect(outputs).toEqual({
      passed: '1',
      failed: '1',
      junit: join(project, 'petri-artifacts', 'junit.xml'),
      artifacts: join(project, 'petri-artifacts'),
      'run-id': runId,
    });
    expect(readFileSync(join(project, 'petri-artifacts', 'junit.xml'), 'utf8')).toContain('<testcase');

    // The annotation: on the job's line of the config, with what happened and how to open it again.
    const line =
      readFileSync(join(project, 'petri.config.json'), 'utf8').split('\n').indexOf('      "name": "bad",') + 1;
    expect(line).toBeGreaterThan(0);
    const annotations = r.stdout.split('\n').filter((l) => l.startsWith('::error'));
    expect(annotations).toEqual([
      `::error title=petri test%3A job bad failed,file=petri.config.json,line=${line}::bad: exit code 3%0A%0Aabout to fail%0Aoops%0A%0AReproduce:%0Agh run download 4242 -R octo/project -n petri-failed-bad -D petri-failed-bad%0Asudo petri repro petri-failed-bad/bad.tar --rerun`,
      '::error::petri test: 1 of 2 jobs did not pass: bad (failed)',
    ]);

    const summary = readFileSync(join(run, 'summary.md'), 'utf8');
    expect(summary).toMatch(/^### petri test: 1 failed, 1 passed in \S+$/m);
    expect(summary).toContain(`run \`${runId}\` · config \`petri.config.json\``);
    expect(summary).toMatch(/^\| `good` \| base \| ✅ passed \| \S+ \| 1 \|$/m);
    expect(summary).toMatch(/^\| `bad` \| base \| ❌ failed \| \S+ \| 1 \|$/m);
    expect(summary).toContain('#### ❌ `bad`: exit code 3');
    expect(summary).toContain('```text\nabout to fail\noops\n```');
    expect(summary).toContain('Artifact: **petri-failed-bad** (`bad.tar`, `bad.json`, `bad.md`)');
    expect(summary).toContain(
      '```sh\ngh run download 4242 -R octo/project -n petri-failed-bad -D petri-failed-bad\nsudo petri repro petri-failed-bad/bad.tar --rerun',
    );
    expect(summary).toContain(
      `docker load -i petri-failed-bad/bad.tar\ndocker run -it --rm --network none --memory 64m --memory-swap 64m petri-failed/bad:${runId} sh`,
    );

    // The upload: one artifact, the failed job's archive and reports, sent to the stand-in service.
    expect([...service.artifacts.keys()]).toEqual(['petri-failed-bad']);
    const artifact = service.artifacts.get('petri-failed-bad');
    expect(artifact?.authorization).toBe(`Bearer ${service.token}`);
    expect(artifact?.created).toMatchObject({
      workflow_run_backend_id: 'run-backend-id',
      workflow_job_run_backend_id: 'job-backend-id',
      name: 'petri-failed-bad',
    });
    const expires = Date.parse(String(artifact?.created.expires_at));
    expect(Math.round((expires - Date.now()) / 86_400_000)).toBe(3);
    expect(artifact?.finalized).toMatchObject({ name: 'petri-failed-bad', size: String(artifact?.blob?.length) });
    const files = unzip(artifact?.blob as Buffer);
    expect([...files.keys()].sort()).toEqual(['bad.json', 'bad.md', 'bad.tar']);
    const tar = readFileSync(join(project, 'petri-artifacts', 'bad.tar'));
    expect(sha256(files.get('bad.tar') as Buffer)).toBe(sha256(tar));
    expect(JSON.parse((files.get('bad.json') as Buffer).toString()).committed.image).toBe(`petri-failed/bad:${runId}`);

    // The archive opens again: the failed command, in the state the job left.
    const repro = spawnSync(NODE, [PETRI, 'repro', join(project, 'petri-artifacts', 'bad.tar'), '--rerun'], {
      encoding: 'utf8',
      env: { ...process.env, PETRI_ROOT: root },
      timeout: 60_000,
    });
    expect(repro.status).toBe(3);
    expect(repro.stdout).toContain('about to fail');

    const post = await runNode(POST, postEnv(env, run), { cwd: project }).done;
    expect(post.status, post.stderr).toBe(0);
    expect(post.stderr).not.toMatch(NODE_WARNING);
    expect(post.stdout).not.toContain('::warning');
    expect(petri(['ps', '-a', '-q'])).toBe('');
    expect(leaks()).toEqual([]);
  }, 180_000);

  it('cache: true through the cache service (a local stand-in): the first run saves the store, a fresh store restores it and builds nothing, a store with images is not restored over', async () => {
    const cache: CacheService = await startCacheService();
    const stores = [join(work, 'cache-store-1'), join(work, 'cache-store-2')];
    try {
      const config = JSON.stringify(
        { images: { app: { context: 'app' } }, jobs: [{ name: 'greet', image: 'app', run: 'cat /greeting /built' }] },
        null,
        2,
      );
      const { project } = setup('cache', 'petri.config.json', config);
      // An image from scratch (the busybox fixture's steps) and two more steps: one that copies, one that runs
      // and writes what only that run can (random digits): a step run again would write others.
      cpSync(join(work, 'busybox-context'), join(project, 'app'), { recursive: true });
      appendFileSync(
        join(project, 'app', 'Dockerfile'),
        'COPY greeting /greeting\nRUN echo $RANDOM$RANDOM$RANDOM > /built\n',
      );
      writeFileSync(join(project, 'app', 'greeting'), 'hello from the cache\n');
      const key = storeCacheKey(await loadConfig(join(project, 'petri.config.json'), project));
      // The runner's temporary directory is the same path in every run (it is part of the cache entry's version).
      const runnerTemp = join(work, 'cache-runner-temp');
      mkdirSync(runnerTemp);
      // The Dockerfile's steps that make a layer (the others, FROM, ENV, CMD, only change the config: never cached).
      const layerSteps = readFileSync(join(project, 'app', 'Dockerfile'), 'utf8')
        .split('\n')
        .filter((line) => /^(COPY|ADD|RUN) /.test(line));
      expect(layerSteps).toHaveLength(6);
      const runAction = async (name: string, store: string) => {
        const run = join(work, name);
        mkdirSync(run);
        for (const f of ['summary.md', 'output', 'state']) writeFileSync(join(run, f), '');
        const env = actionEnv(
          project,
          run,
          { cache: 'true' },
          { ...cache.env, PETRI_ROOT: store, RUNNER_TEMP: runnerTemp },
        );
        const r = await runNode(MAIN, env, { cwd: project }).done;
        expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
        expect(r.stdout).not.toMatch(/^::(error|warning)/m);
        expect(r.stderr).not.toMatch(NODE_WARNING);
        expect(fileCommands(join(run, 'output'))).toMatchObject({ passed: '1', failed: '0' });
        const built = /^\[greet\] +(\d+)$/m.exec(r.stdout)?.[1];
        expect(r.stdout).toMatch(/^\[greet\] +hello from the cache$/m);
        const post = await runNode(POST, postEnv(env, run), { cwd: project }).done;
        expect(post.status, post.stderr).toBe(0);
        // The build's lines: `[image app] #3 [stage-0 2/9] COPY busybox /bin/busybox`, then `#3 DONE 0.1s` or `#3 CACHED`:
        // how each step of the Dockerfile ended.
        const text = new Map<string, string>();
        const status = new Map<string, string>();
        for (const line of r.stdout.split('\n')) {
          const step = /^\[image app\] +#(\d+) \[stage-0 \d+\/\d+\] (.+)$/.exec(line);
          if (step) text.set(step[1] as string, step[2] as string);
          const end = /^\[image app\] +#(\d+) (DONE|CACHED)\b/.exec(line);
          if (end) status.set(end[1] as string, end[2] as string);
        }
        const ended = [...text].map(([id, step]) => ({ step, status: status.get(id) }));
        expect(ended.map((s) => s.step).filter((step) => /^(COPY|ADD|RUN) /.test(step))).toEqual(layerSteps);
        const layers = ended.filter((s) => layerSteps.includes(s.step)).map((s) => s.status);
        const others = ended.filter((s) => !layerSteps.includes(s.step)).map((s) => s.status);
        return { stdout: r.stdout, built, layers, others };
      };
      const methods = () => cache.calls.map((call) => call.method);

      // Run 1, an empty store (a fresh runner) and an empty cache: every step built, then the store saved.
      const first = await runAction('cache-run-1', stores[0] as string);
      expect(first.stdout).toContain(`cache: no entry for ${key}`);
      expect(first.built).toMatch(/^\d+$/);
      expect(first.layers).toEqual(layerSteps.map(() => 'DONE'));
      expect(first.others).toEqual(['DONE', 'DONE', 'DONE']); // FROM scratch, ENV, CMD
      expect(first.stdout).toContain(`cache: saved petri's store as ${key}`);
      expect(methods()).toEqual(['GetCacheEntryDownloadURL', 'CreateCacheEntry', 'FinalizeCacheEntryUpload']);
      expect(cache.calls[0]?.request).toMatchObject({
        key,
        restore_keys: [`petri-store-v1-${process.platform}-${process.arch}-`],
      });
      const entry = cache.entries.get(key);
      expect(entry?.finalizedSize).toBeGreaterThan(0);
      expect(readdirSync(join(runnerTemp, 'petri-store-cache'))).toEqual([]); // petri's tar of the store: removed

      // Run 2, another empty store: restored from the cache, so every step is CACHED (the RUN step's digits are run 1's),
      // and as the cache has this key, nothing is saved.
      const second = await runAction('cache-run-2', stores[1] as string);
      expect(second.stdout).toContain(`cache: restored petri's store from ${key}`);
      expect(second.layers).toEqual(layerSteps.map(() => 'CACHED'));
      expect(second.built).toBe(first.built);
      expect(second.stdout).toContain(`cache: the cache has ${key} already: nothing to save`);
      expect(cache.downloads).toBe(1);
      expect(methods().slice(3)).toEqual(['GetCacheEntryDownloadURL']);
      for (const part of ['images/index.json', 'build-cache/steps'])
        expect(existsSync(join(stores[1] as string, part))).toBe(true);

      // Run 3, the first store again (it has images): not restored over (the archive is not even downloaded), and
      // not saved again.
      const third = await runAction('cache-run-3', stores[0] as string);
      expect(third.stdout).toContain(`cache: ${stores[0]} already has images: not restoring over them`);
      expect(third.stdout).toContain(`cache: the cache has ${key} already: nothing to save`);
      expect(third.layers).toEqual(layerSteps.map(() => 'CACHED'));
      expect(third.built).toBe(first.built);
      expect(cache.downloads).toBe(1);
      expect(methods().slice(4)).toEqual(['GetCacheEntryDownloadURL']);
      expect([...cache.entries.keys()]).toEqual([key]);
      for (const store of stores) {
        const ps = spawnSync(NODE, [PETRI, 'ps', '-a', '-q'], {
          encoding: 'utf8',
          env: { ...process.env, PETRI_ROOT: store },
        });
        expect(ps.stdout).toBe('');
        expect(leaksIn(store)).toEqual([]);
      }
    } finally {
      await cache.close();
    }
  }, 240_000);

  it('as a user with passwordless sudo: petri runs through sudo -E, its files come back to the user, the store cache is saved and restored through sudo; without sudo: one clear error', async (context) => {
    if (!canAddUser) return context.skip('needs useradd to make a throwaway user');
    const user = `ptest-action-${randomBytes(3).toString('hex')}`;
    const sudoers = `/etc/sudoers.d/${user}`;
    const yaml = [
      'images:',
      '  base: { image: petri-fixture/busybox }',
      'jobs:',
      '  - name: fine',
      '    image: base',
      '    run: echo fine',
      '  - image: base',
      '    name: broken',
      '    run: echo broken as $(id -u); exit 7',
      '',
    ].join('\n');
    const { project, run } = setup('as-user', 'petri.config.yaml', yaml);
    expect(spawnSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', user]).status).toBe(0);
    try {
      const uid = Number(spawnSync('id', ['-u', user], { encoding: 'utf8' }).stdout.trim());
      const gid = Number(spawnSync('id', ['-g', user], { encoding: 'utf8' }).stdout.trim());
      for (const path of [project, run, ...readdirSync(run).map((f) => join(run, f))]) chownSync(path, uid, gid);
      // Outputs in folders that do not exist yet: petri (root) makes them, the action gives them back too.
      const env = actionEnv(project, run, {
        'artifact-prefix': 'sudo-',
        artifacts: 'out/petri',
        junit: 'reports/ci/junit.xml',
      });

      // Without sudo rights: one line that says what is wrong, and nothing else happens.
      const denied = await runNode(MAIN, env, { cwd: project, uid, gid }).done;
      expect(denied.status).toBe(1);
      const errors = denied.stdout.split('\n').filter((l) => l.startsWith('::error'));
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatch(
        new RegExp(
          `^::error::petri needs root \\(namespaces, mounts, cgroups\\), and this job runs as uid ${uid} without passwordless sudo \\(.+\\): use a GitHub-hosted runner, or give the runner's user passwordless sudo, or run the job as root$`,
        ),
      );
      expect(existsSync(join(project, 'out'))).toBe(false);
      if (!sudoInstalled)
        return context.skip('sudo is not installed (apt-get install sudo): the sudo path is not tested');

      writeFileSync(sudoers, `${user} ALL=(ALL) NOPASSWD:SETENV: ALL\n`, { mode: 0o440 });
      const r = await runNode(MAIN, env, { cwd: project, uid, gid }).done;
      expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(1);
      expect(r.stdout).toMatch(/^\[broken\] +broken as 0$/m); // the job ran as root in its container, through sudo
      const line = yaml.split('\n').indexOf('    name: broken') + 1;
      expect(r.stdout).toContain(`::error title=petri test%3A job broken failed,file=petri.config.yaml,line=${line}::`);
      expect(fileCommands(join(run, 'output'))).toMatchObject({ passed: '1', failed: '1' });
      // petri wrote these as root; the action gave them back to its user.
      for (const file of [
        'out',
        'out/petri',
        'out/petri/broken.tar',
        'out/petri/broken.json',
        'reports',
        'reports/ci',
      ]) {
        expect(statSync(join(project, file)).uid, file).toBe(uid);
      }
      expect(statSync(join(project, 'reports/ci/junit.xml')).uid).toBe(uid);
      expect(service.artifacts.has('sudo-broken')).toBe(true);
      const files = unzip(service.artifacts.get('sudo-broken')?.blob as Buffer);
      expect(sha256(files.get('broken.tar') as Buffer)).toBe(
        sha256(readFileSync(join(project, 'out', 'petri', 'broken.tar'))),
      );
      expect(readFileSync(join(run, 'summary.md'), 'utf8')).toContain(
        'gh run download 4242 -R octo/project -n sudo-broken',
      );

      const post = await runNode(POST, postEnv(env, run), { cwd: project, uid, gid }).done;
      expect(post.status, post.stderr).toBe(0);
      expect(post.stdout).not.toContain('::warning');
      expect(petri(['ps', '-a', '-q'])).toBe('');
      expect(leaks()).toEqual([]);

      // The cache through sudo: the action's user saves the store that petri (root) wrote, then restores it
      // into a fresh store, which only root writes; the restored store has the jobs' image (petri-fixture/busybox).
      const cache = await startCacheService();
      try {
        const cached = setup('as-user-cache', 'petri.config.yaml', yaml);
        const runnerTemp = join(work, 'as-user-runner-temp');
        mkdirSync(runnerTemp);
        for (const path of [
          cached.project,
          cached.run,
          runnerTemp,
          ...readdirSync(cached.run).map((f) => join(cached.run, f)),
        ]) {
          chownSync(path, uid, gid);
        }
        const fresh = join(work, 'as-user-store');
        const cacheEnv = (store: string) =>
          actionEnv(
            cached.project,
            cached.run,
            { 'upload-failed': 'false' },
            { ...cache.env, PETRI_ROOT: store, RUNNER_TEMP: runnerTemp },
          );
        const saving = await runNode(MAIN, cacheEnv(root), { cwd: cached.project, uid, gid }).done;
        expect(saving.status, `${saving.stdout}\n${saving.stderr}`).toBe(1); // broken fails
        const key = storeCacheKey(await loadConfig(join(cached.project, 'petri.config.yaml'), cached.project));
        expect(saving.stdout).toContain(`cache: ${root} already has images: not restoring over them`);
        expect(saving.stdout).toContain(`cache: saved petri's store as ${key}`);
        expect(saving.stdout).not.toContain('::warning');
        expect(cache.entries.get(key)?.finalizedSize).toBeGreaterThan(0);
        const restoring = await runNode(MAIN, cacheEnv(fresh), { cwd: cached.project, uid, gid }).done;
        expect(restoring.status, `${restoring.stdout}\n${restoring.stderr}`).toBe(1);
        expect(restoring.stdout).toContain(`cache: restored petri's store from ${key}`);
        expect(restoring.stdout).toMatch(/^\[broken\] +broken as 0$/m);
        expect(restoring.stdout).toContain(`cache: the cache has ${key} already: nothing to save`);
        expect(restoring.stdout).not.toContain('::warning');
        expect(statSync(join(fresh, 'images')).uid).toBe(0);
        expect(readdirSync(join(runnerTemp, 'petri-store-cache'))).toEqual([]);
        const cachePost = await runNode(POST, postEnv(cacheEnv(fresh), cached.run), { cwd: cached.project, uid, gid })
          .done;
        expect(cachePost.status, cachePost.stderr).toBe(0);
        const ps = spawnSync(NODE, [PETRI, 'ps', '-a', '-q'], {
          encoding: 'utf8',
          env: { ...process.env, PETRI_ROOT: fresh },
        });
        expect(ps.stdout).toBe('');
        expect(leaksIn(fresh)).toEqual([]);
      } finally {
        await cache.close();
      }

      // The main step killed: sudo and petri (root's) go on; the post step stops them through sudo.
      const killed = setup(
        'as-user-killed',
        'petri.config.json',
        JSON.stringify({
          images: { base: { image: 'petri-fixture/busybox' } },
          jobs: [{ name: 'sleeper', image: 'base', run: 'echo sleeping; sleep 120' }],
        }),
      );
      for (const path of [killed.project, killed.run, ...readdirSync(killed.run).map((f) => join(killed.run, f))]) {
        chownSync(path, uid, gid);
      }
      const killedEnv = actionEnv(killed.project, killed.run, {});
      let sleeping: () => void = () => {};
      const started = new Promise<void>((resolve) => {
        sleeping = resolve;
      });
      const main = runNode(MAIN, killedEnv, {
        cwd: killed.project,
        uid,
        gid,
        onStdout: (text) => {
          if (/^\[sleeper\] +sleeping$/m.test(text)) sleeping();
        },
      });
      await Promise.race([started, main.done]);
      main.kill('SIGKILL');
      await main.done;
      const ids = petri(['ps', '-a', '-q']).trim().split('\n').filter(Boolean);
      expect(ids).toHaveLength(1);
      const sudoPid = Number(fileCommands(join(killed.run, 'state')).petri_pid);
      expect(running(sudoPid)).toBe(true);
      const killedPost = await runNode(POST, postEnv(killedEnv, killed.run), { cwd: killed.project, uid, gid }).done;
      expect(killedPost.status, killedPost.stderr).toBe(0);
      expect(killedPost.stdout).toMatch(/petri cleanup: petri \(pid \d+\) still runs: stopping it/);
      expect(running(sudoPid)).toBe(false);
      expect(petri(['ps', '-a', '-q'])).toBe('');
      let left = leaks(ids);
      for (let i = 0; i < 20 && left.length > 0; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        left = leaks(ids);
      }
      expect(left).toEqual([]);
    } finally {
      rmSync(sudoers, { force: true });
      spawnSync('userdel', [user]);
    }
  }, 180_000);

  it('on node 24, which action.yml asks of the runner: petri version, then the main and post steps on a passing job', async (context) => {
    const released = releasedNode(24);
    if ('reason' in released) return context.skip(released.reason);
    const { node } = released;
    const { version } = JSON.parse(readFileSync(join(top, 'package.json'), 'utf8')) as { version: string };
    const petriVersion = spawnSync(node, [PETRI, 'version'], { encoding: 'utf8', timeout: 30_000 });
    expect(petriVersion.status, petriVersion.stderr).toBe(0);
    expect(petriVersion.stdout).toBe(`petri ${version}\n`);
    expect(petriVersion.stderr).toBe('');

    const config = JSON.stringify({
      images: { base: { image: 'petri-fixture/busybox' } },
      jobs: [{ name: 'hello', image: 'base', run: 'echo hello from the job' }],
    });
    const { project, run } = setup('node24', 'petri.config.json', config);
    const env = actionEnv(project, run, { cache: 'false' });
    const r = await runNode(MAIN, env, { cwd: project, node }).done;
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stderr).not.toMatch(NODE_WARNING);
    expect(r.stdout).toMatch(/^\[hello\] +hello from the job$/m);
    expect(r.stdout).not.toContain('::error');
    expect(fileCommands(join(run, 'output'))).toMatchObject({ passed: '1', failed: '0' });
    expect(readFileSync(join(run, 'summary.md'), 'utf8')).toMatch(/^### petri test: 0 failed, 1 passed in \S+$/m);
    const post = await runNode(POST, postEnv(env, run), { cwd: project, node }).done;
    expect(post.status, post.stderr).toBe(0);
    expect(post.stderr).not.toMatch(NODE_WARNING);
    expect(post.stdout).not.toContain('::warning');
    expect(petri(['ps', '-a', '-q'])).toBe('');
    expect(leaks()).toEqual([]);
  }, 150_000);

  it('a bad config: petri says what is wrong in one error line and in the summary; the outputs are empty', async () => {
    const { project, run } = setup('bad-config', 'petri.config.json', '{"images": {}, "jobs": [{"name": "x"}]}');
    const r = await runNode(MAIN, actionEnv(project, run, {}), { cwd: project }).done;
    expect(r.status).toBe(1);
    const message = 'petri: petri.config.json: jobs[0].image: nothing is not valid: expected one of the images: (none)';
    expect(r.stderr).toContain(message);
    const errors = r.stdout.split('\n').filter((l) => l.startsWith('::error'));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toContain(`::error::petri test exited with code 125: ${message}`);
    expect(readFileSync(join(run, 'summary.md'), 'utf8')).toContain(
      `### petri test did not run\n\n\`\`\`text\npetri test exited with code 125: ${message}`,
    );
    expect(fileCommands(join(run, 'output'))).toEqual({
      passed: '0',
      failed: '0',
      junit: '',
      artifacts: '',
      'run-id': '',
    });
  });

  it('a cancelled step (SIGINT) stops petri, which removes its containers; the jobs are reported as interrupted', async () => {
    const config = JSON.stringify({
      images: { base: { image: 'petri-fixture/busybox' } },
      jobs: [{ name: 'slow', image: 'base', run: 'echo waiting; sleep 120' }],
    });
    const { project, run } = setup('cancelled', 'petri.config.json', config);
    const env = actionEnv(project, run, {});
    let waiting: () => void = () => {};
    const started = new Promise<void>((resolve) => {
      waiting = resolve;
    });
    const main = runNode(MAIN, env, {
      cwd: project,
      onStdout: (text) => {
        if (/^\[slow\] +waiting$/m.test(text)) waiting();
      },
    });
    await Promise.race([started, main.done]);
    main.kill('SIGINT');
    const r = await main.done;
    expect(r.status, r.stderr).toBe(1);
    expect(r.stdout).toContain('::error::petri test was interrupted');
    expect(fileCommands(join(run, 'output'))).toMatchObject({ passed: '0', failed: '1' });
    expect(readFileSync(join(run, 'summary.md'), 'utf8')).toMatch(/^\| `slow` \| base \| ⏹️ interrupted \|/m);
    expect(petri(['ps', '-a', '-q'])).toBe('');
    const post = await runNode(POST, postEnv(env, run), { cwd: project }).done;
    expect(post.status, post.stderr).toBe(0);
    expect(leaks()).toEqual([]);
  }, 120_000);

  it('the post step removes what a main step killed mid-run (SIGKILL) left: petri, its containers, their cgroups', async () => {
    const config = JSON.stringify({
      images: { base: { image: 'petri-fixture/busybox' } },
      jobs: [
        { name: 'sleeper', image: 'base', run: 'echo sleeping; sleep 120' },
        { name: 'steps', image: 'base', steps: ['echo step one', 'sleep 120'] },
      ],
    });
    const { project, run } = setup('killed', 'petri.config.json', config);
    const env = actionEnv(project, run, {});
    let bothStarted: () => void = () => {};
    const started = new Promise<void>((resolve) => {
      bothStarted = resolve;
    });
    const main = runNode(MAIN, env, {
      cwd: project,
      onStdout: (text) => {
        if (/^\[sleeper\] +sleeping$/m.test(text) && /^\[steps\] +step one$/m.test(text)) bothStarted();
      },
    });
    await Promise.race([started, main.done]);
    main.kill('SIGKILL');
    const killed = await main.done;
    expect(killed.status).toBe(null);
    // petri goes on running without the action: its containers are there.
    const state = fileCommands(join(run, 'state'));
    expect(state.petri_finished).toBeUndefined();
    const pid = Number(state.petri_pid);
    expect(running(pid)).toBe(true);
    const ids = petri(['ps', '-a', '-q']).trim().split('\n').filter(Boolean);
    expect(ids).toHaveLength(2);
    expect(leaks(ids).length).toBeGreaterThan(0);

    const post = await runNode(POST, postEnv(env, run), { cwd: project }).done;
    expect(post.status, post.stderr).toBe(0);
    expect(post.stdout).toContain(`petri cleanup: petri (pid ${pid}) still runs: stopping it`);
    expect(running(pid)).toBe(false);
    expect(petri(['ps', '-a', '-q'])).toBe('');
    let left = leaks(ids);
    for (let i = 0; i < 20 && left.length > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      left = leaks(ids);
    }
    expect(left).toEqual([]);
  }, 120_000);
});
