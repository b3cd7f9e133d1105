import { spawnSync } from 'node:child_process';
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRoot } from './helpers/kernel.js';
import { replayPackage, settle } from './helpers/replay-package.js';

const _top = join(import.meta.dirname, '..');

/**
 * bin/petri and petri-runner replay: a remembered build answered in C without
 * Node. Node is kept off PATH where a replay is expected: had the runner gone
 * to Node, the command would fail with "cannot run node" (exit 127).
 */
(isRoot ? describe : describe.skip)(`petri build replay${isRoot ? '' : ' [skipped: needs root (petri build)]'}`, () => {
  let dir: string;
  let pkg: string;
  let ctx: string;
  let noNode: string;
  const env: Record<string, string> = {};

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ptest-replay-'));
    ({ pkg, noNode } = replayPackage(dir));
    ctx = join(dir, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nARG WHO\nCOPY a.txt /a.txt\nLABEL who=$WHO\n');
    writeFileSync(join(ctx, 'a.txt'), 'a\n');
    settle();
    Object.assign(env, process.env, { PETRI_ROOT: join(dir, 'root') });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const petri = (args: string[], options: { node?: boolean; cwd?: string; bin?: string; extra?: object } = {}) =>
    spawnSync(options.bin ?? join(pkg, 'bin', 'petri'), args, {
      encoding: 'utf8',
      cwd: options.cwd ?? dir,
      env: { ...env, ...options.extra, ...(options.node === false ? { PATH: noNode } : {}) },
    });
  const build = (...args: string[]) => ['build', '--progress', 'plain', '-t', 'ptest/replay', ...args];
  const replayed = (result: ReturnType<typeof petri>) => {
    expect(result.stderr).not.toContain('cannot run node');
    expect(result.status, result.stderr).toBe(0);
    return result;
  };
  const refused = (result: ReturnType<typeof petri>) => {
    expect(result.status).toBe(127);
    expect(result.stderr).toBe('petri: cannot run node: No such file or directory\n');
  };

  it('answers the same build again without Node, printing what the result cache would', () => {
    const first = petri(build(ctx));
    expect(first.status, first.stderr).toBe(0);
    const id = first.stdout.trim();
    expect(id).toMatch(/^sha256:[a-f0-9]{64}$/);
    // (The first build into an empty store is not remembered: its index.json came with it.)
    expect(petri(build(ctx)).status).toBe(0);
    expect(petri([...build(ctx), '--progress', 'json']).status).toBe(0);
    const again = replayed(petri(build(ctx), { node: false }));
    expect(again.stdout).toBe(`${id}\n`);
    expect(again.stderr).toMatch(/^#1 \[stage-0 1\/4\] FROM scratch\n/);
    expect(again.stderr).toContain('#3 [stage-0 3/4] COPY a.txt /a.txt\n#3 CACHED\n');
    expect(again.stderr).toMatch(new RegExp(`image ${id} \\(ptest/replay:latest\\) built in 0\\.\\ds\\n$`));
    // The JSON events too, with this run's duration.
    const json = replayed(petri([...build(ctx), '--progress', 'json'], { node: false }));
    const image = JSON.parse(json.stderr.trim().split('\n').at(-1) as string);
    expect(image).toMatchObject({ type: 'image', id, tags: ['ptest/replay:latest'], resultCache: true });
    expect(image.durationMs).toBeLessThan(1000);
    // Through npm's link in node_modules/.bin, as users run it.
    const link = join(dir, 'node_modules', '.bin', 'petri');
    mkdirSync(join(link, '..'), { recursive: true });
    symlinkSync(join(pkg, 'bin', 'petri'), link);
    expect(replayed(petri(build(ctx), { node: false, bin: link })).stdout).toBe(`${id}\n`);
  });

  it('goes to Node when anything the build depended on changed, and replays again after', () => {
    expect(petri(build(ctx)).status).toBe(0);
    replayed(petri(build(ctx), { node: false }));
    // A touched file that no COPY reads (the builder then finds every step cached), a new one, the Dockerfile.
    // (A touched a.txt, which only the last COPY reads, is the replay's delta: replay-delta.test.ts.)
    const later = new Date(Date.now() + 5000);
    writeFileSync(join(ctx, 'unread.txt'), 'x\n');
    settle();
    expect(petri(build(ctx)).status).toBe(0);
    settle();
    expect(petri(build(ctx)).status).toBe(0);
    replayed(petri(build(ctx), { node: false }));
    utimesSync(join(ctx, 'unread.txt'), later, later);
    settle();
    refused(petri(build(ctx), { node: false }));
    expect(petri(build(ctx)).status).toBe(0);
    replayed(petri(build(ctx), { node: false }));
    writeFileSync(join(ctx, 'new.txt'), 'new\n');
    settle();
    refused(petri(build(ctx), { node: false }));
    expect(petri(build(ctx)).status).toBe(0);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nARG WHO\nCOPY a.txt /b.txt\nLABEL who=$WHO\n');
    settle();
    refused(petri(build(ctx), { node: false }));
    expect(petri(build(ctx)).status).toBe(0);
    replayed(petri(build(ctx), { node: false }));
    // The image store: another name in it.
    expect(petri(['tag', 'ptest/replay', 'ptest/replay:other']).status).toBe(0);
    refused(petri(build(ctx), { node: false }));
    expect(petri(build(ctx)).status).toBe(0);
    // Another command line, another working directory, another SOURCE_DATE_EPOCH.
    refused(petri(build('--target', 'stage-0', ctx), { node: false }));
    refused(petri(build('.'), { node: false, cwd: ctx }));
    refused(petri(build(ctx), { node: false, extra: { SOURCE_DATE_EPOCH: '5' } }));
    replayed(petri(build(ctx), { node: false }));
    // petri itself rebuilt or upgraded (its build file changed).
    const chunk = readdirSync(join(pkg, 'dist', 'bin')).find((name) => /^build-.*\.cjs$/.test(name)) as string;
    utimesSync(join(pkg, 'dist', 'bin', chunk), later, later);
    refused(petri(build(ctx), { node: false }));
    expect(petri(build(ctx)).status).toBe(0);
    replayed(petri(build(ctx), { node: false }));
  });

  it('keys a bare --build-arg by its variable, and never replays --no-cache (but the build after it)', () => {
    const args = build('--build-arg', 'WHO', ctx);
    expect(petri(args, { extra: { WHO: 'x' } }).status).toBe(0);
    const x = replayed(petri(args, { node: false, extra: { WHO: 'x' } })).stdout;
    refused(petri(args, { node: false, extra: { WHO: 'y' } }));
    const y = petri(args, { extra: { WHO: 'y' } });
    expect(y.status).toBe(0);
    expect(y.stdout).not.toBe(x);

    refused(petri([...build(ctx), '--no-cache'], { node: false }));
    expect(petri([...build(ctx), '--no-cache']).status).toBe(0);
    replayed(petri(build(ctx), { node: false }));
  });

  it('never replays a record whose bytes changed since petri wrote it (its first line holds their SHA-256)', () => {
    // This command line's record alone: the others go first, then its Node build writes it.
    const records = join(dir, 'root', 'build-cache', 'results');
    for (const name of readdirSync(records)) if (name.startsWith('replay-')) rmSync(join(records, name));
    expect(petri(build(ctx)).status).toBe(0);
    const { stdout: id } = replayed(petri(build(ctx), { node: false }));
    const names = readdirSync(records).filter((name) => name.startsWith('replay-'));
    expect(names).toHaveLength(1);
    const file = join(records, names[0] as string);
    const whole = readFileSync(file);
    expect(whole.toString('latin1')).toMatch(/^petri-replay 2 [a-f0-9]{64}\n/);
    // One byte of the stderr it prints ("CACHED" becomes "CACHEE"): a record that would still parse.
    const at = whole.indexOf('CACHED');
    expect(at).toBeGreaterThan(80);
    const changed = Buffer.from(whole);
    changed[at + 5] = 'E'.charCodeAt(0);
    writeFileSync(file, changed);
    refused(petri(build(ctx), { node: false }));
    // So too a first line cut short, and the same bytes back.
    writeFileSync(file, whole.subarray(0, 40));
    refused(petri(build(ctx), { node: false }));
    writeFileSync(file, whole);
    expect(replayed(petri(build(ctx), { node: false })).stdout).toBe(id);
  });

  it('leaves a terminal to Node (its live view)', (context) => {
    const script = spawnSync('sh', ['-c', 'command -v script'], { encoding: 'utf8' }).stdout.trim();
    if (!script) context.skip('needs script (util-linux) for a terminal');
    expect(petri(build(ctx)).status).toBe(0);
    replayed(petri(build(ctx), { node: false }));
    const command = `${join(pkg, 'bin', 'petri')} build -t ptest/replay ${ctx}`;
    const onTty = spawnSync(script, ['-qec', command, '/dev/null'], {
      encoding: 'utf8',
      env: { ...env, PATH: noNode, SHELL: '/bin/sh' },
    });
    expect(onTty.stdout).toContain('cannot run node');
  });
});
