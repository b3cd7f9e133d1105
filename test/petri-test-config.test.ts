import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { junitXml } from '../src/report/junit.js';
import { findConfig, loadConfig } from '../src/test-runner/config-load.js';
import { validateConfig } from '../src/test-runner/config-validate.js';
import type { JobResult } from '../src/test-runner/events.js';
import { readFailureLabels } from '../src/test-runner/failure-labels.js';
import { TailBuffer, xmlSafe } from '../src/test-runner/output.js';
import { defaultParallelism } from '../src/test-runner/run-tests.js';
import { matchesFilter, parseShard, selectJobs, shardOf } from '../src/test-runner/select.js';

const petriBin = join(import.meta.dirname, '..', 'dist', 'cli', 'main.js');
const XSD = join(import.meta.dirname, '..', '..', 'shared', 'schemas', 'junit-10.xsd');
const haveXmllint = spawnSync('xmllint', ['--version']).status === 0;

const base = { images: { app: { context: 'app' }, base: { image: 'busybox:local' } } };
const validate = (jobs: unknown[], extra: Record<string, unknown> = {}) =>
  validateConfig({ ...base, ...extra, jobs }, '/proj/petri.config.json', '/proj');
const errorOf = (jobs: unknown[], extra: Record<string, unknown> = {}) => {
  try {
    validate(jobs, extra);
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error('expected a config error');
};

describe('petri test config: validation', () => {
  it('applies defaults and resolves paths relative to the config file', () => {
    const config = validate([
      { name: 'unit', image: 'app', run: 'npm test', env: { CI: 1, X: true }, timeout: '1m30s', memory: '256m' },
      { name: 'lint', image: 'base', run: ['sh', '-c', 'x'], user: 1000, retries: 2, pids: 64, cpus: 0.5 },
      { name: 'multi', image: 'app', steps: ['make', ['./check', '--all']], tags: ['slow'] },
    ]);
    expect(config.images.get('app')).toEqual({ name: 'app', kind: 'build', context: '/proj/app', buildArgs: {} });
    expect(config.images.get('base')).toEqual({ name: 'base', kind: 'store', ref: 'busybox:local' });
    const [unit, lint, multi] = config.jobs;
    expect(unit).toMatchObject({
      commands: [['sh', '-c', 'npm test']],
      steps: false,
      env: { CI: '1', X: 'true' },
      timeoutMs: 90_000,
      memory: 256 << 20,
      retries: 0,
      tags: [],
    });
    expect(lint).toMatchObject({ commands: [['sh', '-c', 'x']], user: '1000', retries: 2, pids: 64, cpus: 0.5 });
    expect(multi).toMatchObject({
      steps: true,
      commands: [
        ['sh', '-c', 'make'],
        ['./check', '--all'],
      ],
      tags: ['slow'],
    });
  });

  it('names the file, the key path, the bad value and what was expected, on one line', () => {
    const ok = { name: 'a', image: 'app', run: 'true' };
    const cases: [unknown[], RegExp][] = [
      [
        [ok, { ...ok, name: 'b' }, { ...ok, name: 'c', timeout: 'soon' }],
        /^petri\.config\.json: jobs\[2\]\.timeout: "soon" is not valid: expected a duration/,
      ],
      [
        [{ ...ok, memory: '12q' }],
        /^petri\.config\.json: jobs\[0\]\.memory: "12q" is not valid: expected a size like 256m/,
      ],
      [
        [{ ...ok, image: 'ap' }],
        /jobs\[0\]\.image: "ap" is not valid: expected a key of images \(did you mean app\?\): app, base$/,
      ],
      [[{ ...ok, retries: -1 }], /jobs\[0\]\.retries: -1 is not valid: expected an integer ≥ 0/],
      [
        [{ ...ok, timout: '1s' }],
        /jobs\[0\]\.timout: unknown key \(did you mean timeout\?\): expected one of name, image/,
      ],
      [[{ name: 'a', image: 'app' }], /jobs\[0\]: .* expected exactly one of run \(a command\) or steps/],
      [[{ ...ok, steps: ['x'] }], /expected exactly one of run/],
      [[{ ...ok, run: [] }], /jobs\[0\]\.run: \[\] is not valid: expected a command string or a non-empty argv array/],
      [[{ ...ok, run: ['ls', 3] }], /jobs\[0\]\.run\[1\]: 3 is not valid: expected a string/],
      [[{ ...ok, workdir: 'app' }], /jobs\[0\]\.workdir: "app" is not valid: expected an absolute path/],
      [[{ ...ok, name: 'has space' }], /jobs\[0\]\.name: "has space" is not valid/],
      [[ok, { ...ok, name: 'A' }], /jobs\[1\]\.name: "A" is not valid: expected a name no other job has \(jobs\[0\]/],
      [[{ ...ok, env: { 'BAD-NAME': 'x' } }], /jobs\[0\]\.env: "BAD-NAME" is not valid/],
      [
        [{ ...ok, env: { A: { nested: 1 } } }],
        /jobs\[0\]\.env\.A: \{"nested":1\} is not valid: expected a string, number or boolean/,
      ],
      [[{ ...ok, cpus: 0 }], /jobs\[0\]\.cpus: 0 is not valid/],
      [[{ ...ok, tags: 'fast' }], /jobs\[0\]\.tags: "fast" is not valid: expected an array of strings/],
      [[], /^petri\.config\.json: jobs: \[\] is not valid: expected a non-empty array of jobs$/],
    ];
    for (const [jobs, pattern] of cases) {
      const message = errorOf(jobs);
      expect(message).toMatch(pattern);
      expect(message).not.toContain('\n');
    }
    expect(errorOf([ok], { images: { App: { context: '.' } } })).toMatch(
      /^petri\.config\.json: images: "App" is not valid/,
    );
    expect(errorOf([ok], { images: { app: { context: '.', dokerfile: 'x' } } })).toMatch(
      /images\.app\.dokerfile: unknown key \(did you mean dockerfile\?\)/,
    );
    expect(errorOf([ok], { image: {} })).toMatch(/^petri\.config\.json: image: unknown key \(did you mean images\?\)/);
  });

  it('files: sources relative to the config file, that exist; absolute targets', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ptest-files-'));
    try {
      mkdirSync(join(dir, 'data'));
      writeFileSync(join(dir, 'data', 'a.txt'), 'a');
      const file = join(dir, 'petri.config.json');
      const check = (files: unknown) =>
        validateConfig({ ...base, jobs: [{ name: 'a', image: 'app', run: 'true', files }] }, file, dir);
      expect(check([{ source: 'data/', target: '/data' }]).jobs[0]?.files).toEqual([
        { source: join(dir, 'data'), target: '/data', shown: 'data/' },
      ]);
      expect(check(undefined).jobs[0]?.files).toEqual([]);
      const failures: [unknown, RegExp][] = [
        ['data', /jobs\[0\]\.files: "data" is not valid: expected an array of \{ source, target \}/],
        [
          [{ source: 'nope', target: '/x' }],
          /jobs\[0\]\.files\[0\]\.source: "nope" is not valid: expected an existing file or directory/,
        ],
        [
          [{ source: 'data', target: 'rel' }],
          /jobs\[0\]\.files\[0\]\.target: "rel" is not valid: expected an absolute path/,
        ],
        [[{ source: 'data', target: '/a/../etc' }], /files\[0\]\.target: "\/a\/..\/etc" is not valid/],
        [
          [{ source: 'data', target: '/x', mode: 1 }],
          /jobs\[0\]\.files\[0\]\.mode: unknown key: expected one of source, target/,
        ],
        [[{ target: '/x' }], /jobs\[0\]\.files\[0\]\.source: nothing is not valid/],
      ];
      for (const [files, pattern] of failures) expect(() => check(files)).toThrow(pattern);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('passEnv copies variables from petri’s environment when set (env wins)', () => {
    const config = validateConfig(
      {
        ...base,
        jobs: [{ name: 'a', image: 'app', run: 'x', env: { B: 'mine' }, passEnv: ['A', 'B', 'UNSET'] }],
      },
      '/p/petri.config.json',
      '/p',
      { A: 'from-host', B: 'host' },
    );
    expect(config.jobs[0]?.env).toEqual({ B: 'mine', A: 'from-host' });
  });
});

describe('petri test config: files', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ptest-config-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, text: string) => {
    const sub = mkdtempSync(join(dir, 'c-'));
    writeFileSync(join(sub, name), text);
    return { sub, file: join(sub, name) };
  };
  const jobs = [{ name: 'unit', image: 'base', run: 'true' }];
  const images = { base: { image: 'busybox' } };

  it('reads JSON, YAML and JavaScript modules (a default export, or a function returning the config)', async () => {
    const json = write('petri.config.json', JSON.stringify({ images, jobs }));
    expect(findConfig(json.sub)).toBe(json.file);
    expect((await loadConfig(json.file)).jobs[0]?.name).toBe('unit');
    const yaml = write(
      'petri.config.yaml',
      'images:\n  base: { image: busybox }\njobs:\n  - name: unit\n    image: base\n    run: "true"\n    env: { CI: 1 }\n',
    );
    expect((await loadConfig(yaml.file)).jobs[0]?.env).toEqual({ CI: '1' });
    const mjs = write('petri.config.mjs', `export default ${JSON.stringify({ images, jobs })};`);
    expect((await loadConfig(mjs.file)).jobs).toHaveLength(1);
    const fn = write('petri.config.mjs', `export default async () => (${JSON.stringify({ images, jobs })});`);
    expect((await loadConfig(fn.file)).jobs).toHaveLength(1);
  });

  it('says what is wrong with a file: missing, several, unparsable, TypeScript on a Node without type stripping', async () => {
    const empty = mkdtempSync(join(dir, 'empty-'));
    expect(() => findConfig(empty)).toThrow(/no petri\.config\.\{js,mjs,json,yaml,yml\} in .*pass --config FILE/);
    const both = write('petri.config.json', '{}');
    writeFileSync(join(both.sub, 'petri.config.yml'), '');
    expect(() => findConfig(both.sub)).toThrow(/several config files \(petri\.config\.json, petri\.config\.yml\)/);
    const bad = write('petri.config.json', '{"jobs": [,]}');
    await expect(loadConfig(bad.file)).rejects.toThrow(/petri\.config\.json: cannot parse: /);
    const badYaml = write('petri.config.yaml', 'jobs: [a\n');
    await expect(loadConfig(badYaml.file)).rejects.toThrow(/petri\.config\.yaml: cannot parse: /);
    // TypeScript: through the built CLI (vitest would load it itself).
    const ts = write('petri.config.ts', `export default ${JSON.stringify({ images, jobs })} as const;`);
    const cli = spawnSync(process.execPath, [petriBin, 'test', '--config', ts.file], { encoding: 'utf8' });
    if (/^v(20|21|22\.([0-9]|1[0-7]))\./.test(process.version)) {
      expect(cli.stderr).toMatch(
        /^petri: .*petri\.config\.ts: Node .* cannot load TypeScript without a loader \(Node 22\.18\+ strips types itself\): write petri\.config\.js or \.mjs/,
      );
      expect(cli.status).toBe(125);
    } else {
      expect(cli.stderr).not.toMatch(/cannot load TypeScript/);
    }
    await expect(loadConfig(join(dir, 'nope.json'))).rejects.toThrow(/does not exist/);
  });
});

describe('petri test: filter and shard', () => {
  const job = (name: string, tags: string[] = []) => ({ name, tags }) as never;

  it('filters by substring of a name or tag, or by a glob on the whole of one', () => {
    const unit = { name: 'unit-api', tags: ['fast'] };
    expect(matchesFilter(unit, 'api')).toBe(true);
    expect(matchesFilter(unit, 'fas')).toBe(true);
    expect(matchesFilter(unit, 'unit-*')).toBe(true);
    expect(matchesFilter(unit, 'api*')).toBe(false);
    expect(matchesFilter(unit, 'f?st')).toBe(true);
    expect(matchesFilter(unit, 'unit-[ab]pi')).toBe(true);
    expect(matchesFilter(unit, 'unit-[!a]pi')).toBe(false);
    expect(matchesFilter(unit, 'slow')).toBe(false);
  });

  it('puts every job in exactly one shard, stable whatever the other jobs', () => {
    const jobs = Array.from({ length: 200 }, (_, i) => job(`job-${i}`));
    for (const count of [1, 2, 3, 7]) {
      const shards = Array.from({ length: count }, (_, i) => selectJobs(jobs, [], { index: i + 1, count }));
      const names = shards.flat().map((j: { name: string }) => j.name);
      expect(names.sort()).toEqual(jobs.map((j: { name: string }) => j.name).sort());
      if (count > 1) for (const shard of shards) expect(shard.length).toBeGreaterThan(200 / count / 2);
    }
    expect(shardOf('job-7', 3)).toBe(shardOf('job-7', 3));
    expect(parseShard('2/4')).toEqual({ index: 2, count: 4 });
    for (const bad of ['0/2', '3/2', '1/0', 'a/b', '1']) expect(() => parseShard(bad)).toThrow(/invalid --shard/);
  });

  it('runs one job more than the CPUs by default, fewer when their memory does not fit', () => {
    const jobs = Array.from({ length: 10 }, () => ({ memory: 1 << 30 }) as never);
    expect(defaultParallelism(jobs, 8, 64 * 2 ** 30)).toBe(9);
    expect(defaultParallelism(jobs.slice(0, 4), 8, 64 * 2 ** 30)).toBe(4);
    expect(defaultParallelism(jobs, 8, 3 * 2 ** 30)).toBe(3);
    expect(defaultParallelism(jobs, 8, 100)).toBe(1);
    expect(defaultParallelism([{} as never], 8, 64 * 2 ** 30)).toBe(1);
  });
});

describe('petri test: output and reports', () => {
  it('keeps the tail of a stream', () => {
    const tail = new TailBuffer(10);
    for (const part of ['aaaa', 'bbbb', 'cccc', 'dddd']) tail.push(Buffer.from(part));
    expect(tail.text()).toBe('bbccccdddd');
    expect(tail.dropped).toBe(4);
  });

  it('strips what XML cannot hold', () => {
    expect(xmlSafe('a\x00b\x1bc\td\ne\uFFFEf\uD800g😀')).toBe('abc\td\nefg😀');
  });

  it.skipIf(!haveXmllint || !existsSync(XSD))(
    'writes JUnit that the Jenkins schema accepts, whatever the output bytes [needs xmllint and ../shared/schemas/junit-10.xsd]',
    () => {
      const nasty = `ok \x00\x01\x1b[31mred\x1b[0m ]]> <tag> & "quotes" \uD800 ${Buffer.from([0xff, 0xfe]).toString('utf8')}\n`;
      const result = (over: Partial<JobResult>): JobResult => ({
        name: 'job',
        image: 'app',
        status: 'passed',
        message: 'passed',
        durationMs: 1234,
        attempts: 1,
        stdout: nasty,
        stderr: nasty.repeat(4000),
        ...over,
      });
      const xml = junitXml({
        runId: 'r1',
        startedAt: new Date(0),
        images: new Map([['app', { name: 'app', ref: 'x', id: 'sha256:aa', manifestDigest: 'sha256:bb' }]]),
        results: [
          result({ name: 'ok' }),
          result({
            name: 'bad',
            status: 'failed',
            failure: 'exit',
            message: 'exit code 3',
            exitCode: 3,
            command: ['sh', '-c', 'exit 3 # \x07'],
            repro: 'petri repro petri-artifacts/bad.tar --rerun',
            artifact: {
              image: 'petri-failed/bad:r1',
              imageId: 'sha256:cc',
              tar: 'petri-artifacts/bad.tar',
              json: '',
              markdown: '',
              repro: '',
            },
          }),
          result({ name: 'broken', image: 'other', status: 'error', message: 'image other did not build: \x01' }),
          result({ name: 'stopped', status: 'interrupted', message: 'interrupted', stdout: '', stderr: '' }),
        ],
      });
      const dir = mkdtempSync(join(tmpdir(), 'ptest-junit-'));
      try {
        const file = join(dir, 'junit.xml');
        writeFileSync(file, xml);
        const lint = spawnSync('xmllint', ['--noout', '--schema', XSD, file], { encoding: 'utf8' });
        expect(lint.stderr).toContain('validates');
        expect(lint.status).toBe(0);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
      expect(xml).toContain(
        '<failure message="exit code 3; reproduce: petri repro petri-artifacts/bad.tar --rerun" type="exit"',
      );
      expect(xml).toContain('<property name="artifact.bad" value="petri-artifacts/bad.tar"/>');
      expect(xml).toContain('<property name="image.id" value="sha256:aa"/>');
      expect(xml).toMatch(/<testsuite name="other"[^>]* tests="1" failures="0" errors="1"/);
      expect(xml).toMatch(/<testcase classname="app" name="stopped" time="1.234">\s*<skipped\/>/);
      expect(xml.length).toBeLessThan(100_000);
    },
  );

  it('reads back the labels of a failed job’s image, and nothing from other images', () => {
    expect(
      readFailureLabels({
        'org.petri.test.job': 'x',
        'org.petri.test.command': '["sh","-c","exit 3"]',
        'org.petri.test.memory': '1024',
        'org.petri.test.exit-code': '3',
      }),
    ).toEqual({
      job: 'x',
      command: ['sh', '-c', 'exit 3'],
      env: {},
      memory: 1024,
      exitCode: 3,
    });
    expect(readFailureLabels({ maintainer: 'me' })).toBeUndefined();
    expect(readFailureLabels(undefined)).toBeUndefined();
  });
});
