import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeKernel } from './helpers/kernel.js';
import { replayPackage, settle } from './helpers/replay-package.js';

const fixtures = join(import.meta.dirname, '..', 'fixtures', 'build');

interface Step {
  type: 'step';
  text: string;
  status: string;
  early?: true;
}

/**
 * Early runs (src/build/early.ts, runner/replay.c): when the only change since
 * the remembered build is the content of files a COPY reads, and a RUN follows
 * that COPY, `petri` starts the RUN while Node starts, and the builder takes
 * it for its step. The RUN reports to an HTTP server here (it runs on the
 * host's network, as RUN steps do): each test counts how often it ran, and
 * compares the image with one Node builds from the same files in a store of
 * its own.
 */
describeKernel('petri build: early runs', () => {
  let dir: string;
  let pkg: string;
  let server: Server;
  let port = 0;
  const hits: string[] = [];
  const env: Record<string, string> = {};

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ptest-early-'));
    ({ pkg } = replayPackage(dir));
    Object.assign(env, process.env, { SOURCE_DATE_EPOCH: '1700000000' });
    delete env.NODE_EXTRA_CA_CERTS;
    server = createServer((req, res) => {
      hits.push(decodeURIComponent(req.url ?? ''));
      res.end('ok\n');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
    cpSync(join(fixtures, 'busybox'), join(dir, 'busybox'), { recursive: true });
    copyFileSync('/bin/busybox', join(dir, 'busybox', 'busybox'));
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  /** `petri` as users run it (bin/petri: the runner's replay first); asynchronous, as the RUN calls this process. */
  const petri = (root: string, args: string[]) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(
        join(pkg, 'bin', 'petri'),
        args,
        { encoding: 'utf8', cwd: dir, env: { ...env, PETRI_ROOT: join(dir, root) }, timeout: 120_000 },
        (error, stdout, stderr) => resolve({ status: error ? ((error.code as number) ?? 1) : 0, stdout, stderr }),
      );
    });
  const ok = async (root: string, args: string[]) => {
    const result = await petri(root, args);
    expect(result.status, result.stderr).toBe(0);
    return result.stdout.trim();
  };
  /** A store with the busybox base image. */
  const store = async (root: string) => ok(root, ['build', '-q', '-t', 'petri-fixture/busybox', join(dir, 'busybox')]);
  /**
   * The RUN: the script's output; what it found on stdin (`read`'s status: 1 for /dev/null, as for a RUN of
   * its own, 143 for a stdin that never ends); the copied file's time to the nanosecond.
   */
  const RUN =
    "sh app.sh > /src/out.txt && { timeout 5 sh -c 'read x'; echo $? > /src/stdin.txt; } && stat -c %y /src/app.sh > /src/times.txt";
  const context = (name: string, run = RUN) => {
    const ctx = join(dir, name);
    mkdirSync(ctx);
    const report = `wget -q -O /dev/null "http://127.0.0.1:${port}/${name}/$(cat /src/out.txt)"`;
    writeFileSync(
      join(ctx, 'Dockerfile'),
      `FROM petri-fixture/busybox\nWORKDIR /src\nCOPY app.sh .\nRUN ${run} && ${report}\nCMD ["cat", "/src/out.txt"]\n`,
    );
    return ctx;
  };
  const write = (ctx: string, text: string) => writeFileSync(join(ctx, 'app.sh'), `echo ${text}\n`);
  /** Builds with JSON progress: the image ID and the RUN step's end. */
  const build = async (root: string, ctx: string) => {
    const result = await petri(root, ['build', '--progress', 'json', '-t', 'ptest/early', ctx]);
    const steps = result.stderr
      .split('\n')
      .filter((l) => l.startsWith('{"type":"step"'))
      .map((l) => JSON.parse(l) as Step);
    const run = steps.find((s) => s.text.startsWith('RUN') && s.status !== 'start');
    return { ...result, id: result.stdout.trim(), run };
  };
  /** Builds twice, the second out of the racy window: remembered, with the plan of an early run. */
  const remember = async (root: string, ctx: string) => {
    settle();
    expect((await build(root, ctx)).status).toBe(0);
    settle();
    expect((await build(root, ctx)).status).toBe(0);
    const results = join(dir, root, 'build-cache', 'results');
    expect(readdirSync(results).filter((f) => f.endsWith('.early'))).toHaveLength(1);
  };
  /** Nothing left of an early run: no container, no staging directory, no runner. */
  const clean = async (root: string) => {
    for (let i = 0; i < 50 && readdirSync(join(dir, root, 'containers')).length > 0; i++) await sleep(20);
    expect(readdirSync(join(dir, root, 'containers'))).toEqual([]);
    expect(readdirSync(join(dir, root, 'layers')).filter((f) => f.startsWith('.tmp-'))).toEqual([]);
  };

  it('runs the RUN after a changed COPY while petri starts, once, to the image Node builds from the same files', async () => {
    await store('a');
    const ctx = context('same');
    write(ctx, 'one');
    await remember('a', ctx);
    hits.length = 0;
    write(ctx, 'two');
    const early = await build('a', ctx);
    expect(early.status, early.stderr).toBe(0);
    expect(early.run).toMatchObject({ status: 'done', early: true });
    expect(hits).toEqual(['/same/two']);
    await clean('a');
    // Node alone, in a store of its own (no record, no early run): the same image.
    await store('b');
    const node = await build('b', ctx);
    expect(node.run?.early).toBeUndefined();
    expect(node.id).toBe(early.id);
    expect(await ok('a', ['run', '--rm', 'ptest/early'])).toBe('two');
    expect(await ok('a', ['run', '--rm', 'ptest/early', 'cat', '/src/stdin.txt'])).toBe('1');
    // Again and again: each build's own early run (its result not remembered: the record stays the plan's).
    for (const text of ['three', 'four']) {
      write(ctx, text);
      const again = await build('a', ctx);
      expect(again.run).toMatchObject({ status: 'done', early: true });
    }
    expect(hits).toEqual(['/same/two', '/same/two', '/same/three', '/same/four']);
    // A terminal's build (its live view is Node's, no replay): still an early run.
    write(ctx, 'five');
    const command = [join(pkg, 'bin', 'petri'), 'build', '--progress', 'json', '-t', 'ptest/early', ctx].join(' ');
    const tty = await new Promise<string>((resolve) =>
      execFile(
        'script',
        ['-qec', command, '/dev/null'],
        { encoding: 'utf8', cwd: dir, env: { ...env, PETRI_ROOT: join(dir, 'a') }, timeout: 120_000 },
        (_error, stdout) => resolve(stdout),
      ),
    );
    const ran = tty
      .split(/\r?\n/)
      .filter((l) => l.startsWith('{"type":"step"'))
      .map((l) => JSON.parse(l) as Step)
      .find((s) => s.text.startsWith('RUN') && s.status !== 'start');
    expect(ran).toMatchObject({ status: 'done', early: true });
    expect(hits.at(-1)).toBe('/same/five');
    await clean('a');
  });

  it('takes the early run over a COPY into directories it makes (their times the build’s own)', async () => {
    await store('g');
    const ctx = context('fresh');
    const report = `wget -q -O /dev/null "http://127.0.0.1:${port}/fresh/$(cat /out.txt)"`;
    writeFileSync(
      join(ctx, 'Dockerfile'),
      `FROM petri-fixture/busybox\nCOPY app.sh /new/dir/\nRUN sh /new/dir/app.sh > /out.txt && ${report}\n`,
    );
    write(ctx, 'one');
    await remember('g', ctx);
    hits.length = 0;
    write(ctx, 'two');
    const early = await build('g', ctx);
    expect(early.run).toMatchObject({ status: 'done', early: true });
    expect(hits).toEqual(['/fresh/two']);
    expect(await ok('g', ['run', '--rm', 'ptest/early', 'cat', '/out.txt'])).toBe('two');
    await clean('g');
  });

  it('never runs early a RUN the step cache has, nor one over a base image whose tag moved', async () => {
    await store('c');
    const ctx = context('cached');
    write(ctx, 'one');
    await remember('c', ctx);
    write(ctx, 'two');
    expect((await build('c', ctx)).run?.early).toBe(true);
    hits.length = 0;
    write(ctx, 'one'); // back to the remembered content: its RUN is cached
    const cached = await build('c', ctx);
    expect(cached.run).toMatchObject({ status: 'cached' });
    expect(hits).toEqual([]);
    // Another image under the base's tag: the C side sees the index entry gone and leaves the build to Node.
    const moved = join(dir, 'moved');
    mkdirSync(moved);
    writeFileSync(join(moved, 'Dockerfile'), 'FROM petri-fixture/busybox\nRUN echo moved > /moved\n');
    await ok('c', ['build', '-q', '-t', 'petri-fixture/busybox', moved]);
    write(ctx, 'three');
    const rebased = await build('c', ctx);
    expect(rebased.status, rebased.stderr).toBe(0);
    expect(rebased.run).toMatchObject({ status: 'done' });
    expect(rebased.run?.early).toBeUndefined();
    expect(hits).toEqual(['/cached/three']);
    expect(await ok('c', ['run', '--rm', 'ptest/early', 'cat', '/moved', '/src/out.txt'])).toBe('moved\nthree');
    await clean('c');
  });

  it('fails the build with the early RUN failing, as the step would: its exit code and last output', async () => {
    await store('d');
    const ctx = context('fails', 'sh app.sh > /src/out.txt && cat /src/out.txt && test "$(cat /src/out.txt)" != bad');
    write(ctx, 'good');
    await remember('d', ctx);
    write(ctx, 'bad');
    const failed = await build('d', ctx);
    expect(failed.status).toBe(1);
    expect(failed.stderr).toContain('did not complete successfully: exit code: 1 (last output: bad)');
    expect(failed.stderr).toContain('"type":"output","id":4,"stream":"stdout","data":"bad\\n"');
    await clean('d');
  });

  it("drops an early run that is not the step's (Node judges it), and runs the step", async () => {
    await store('e');
    const ctx = context('judged');
    // It says when it starts and when it ends, seconds later (long after Node gets to the step, in the VM too):
    // an early run dropped at once never ends.
    const say = (what: string) => `wget -q -O /dev/null "http://127.0.0.1:${port}/judged/${what}-$(cat /src/out.txt)"`;
    const pause = process.env.PETRI_IN_V2VM ? 30 : 3;
    writeFileSync(
      join(ctx, 'Dockerfile'),
      `FROM petri-fixture/busybox\nWORKDIR /src\nCOPY app.sh .\nRUN sh app.sh > /src/out.txt && ${say('start')} && sleep ${pause} && ${say('end')}\n`,
    );
    write(ctx, 'one');
    await remember('e', ctx);
    // The plan, rewritten as a hand (or another petri) could: the same but for the options' hash, checksum redone.
    const results = join(dir, 'e', 'build-cache', 'results');
    const file = join(results, readdirSync(results).find((f) => f.endsWith('.early')) as string);
    const text = readFileSync(file, 'latin1');
    const body = text
      .slice(text.indexOf('\n') + 1)
      .replace(/\noptions\t[0-9a-f]{64}\n/, `\noptions\t${'0'.repeat(64)}\n`);
    const sum = createHash('sha256').update(Buffer.from(body, 'latin1')).digest('hex');
    writeFileSync(file, Buffer.from(`petri-early 1 ${sum}\n${body}`, 'latin1'));
    hits.length = 0;
    write(ctx, 'two');
    const judged = await build('e', ctx);
    expect(judged.status, judged.stderr).toBe(0);
    expect(judged.run).toMatchObject({ status: 'done' });
    expect(judged.run?.early).toBeUndefined();
    // The early run started, and was killed as the step came (before the step ran its own): it never ended.
    expect(hits).toEqual(['/judged/start-two', '/judged/start-two', '/judged/end-two']);
    expect(await ok('e', ['run', '--rm', 'ptest/early', 'cat', '/src/out.txt'])).toBe('two');
    await clean('e');
  });

  it('leaves nothing running when the build is killed during its early run (the next prune sweeps the rest)', async () => {
    await store('f');
    const ctx = context('killed');
    write(ctx, 'one');
    // The remembered builds are quick: the RUN sleeps for the content "slow" only.
    const quick = 'sh app.sh > /src/out.txt && { grep -q slow /src/out.txt && sleep 30 || true; }';
    writeFileSync(
      join(ctx, 'Dockerfile'),
      `FROM petri-fixture/busybox\nWORKDIR /src\nCOPY app.sh .\nRUN ${quick}\nCMD ["cat", "/src/out.txt"]\n`,
    );
    await remember('f', ctx);
    write(ctx, 'slow');
    const child = spawn(join(pkg, 'bin', 'petri'), ['build', '-q', '-t', 'ptest/early', ctx], {
      env: { ...env, PETRI_ROOT: join(dir, 'f') },
      stdio: 'ignore',
    });
    const containers = join(dir, 'f', 'containers');
    for (let i = 0; i < 250 && (!existsSync(containers) || readdirSync(containers).length === 0); i++) await sleep(20);
    const [id] = readdirSync(containers);
    expect(id).toBeDefined();
    const runner = () =>
      readdirSync('/proc').filter((pid) => {
        try {
          return /^\d+$/.test(pid) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`containers/${id}`);
        } catch {
          return false;
        }
      });
    for (let i = 0; i < 250 && runner().length === 0; i++) await sleep(20);
    expect(runner().length).toBeGreaterThan(0);
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    for (let i = 0; i < 250 && runner().length > 0; i++) await sleep(20);
    expect(runner()).toEqual([]);
    await ok('f', ['prune']);
    await clean('f');
  });
});
