import { spawn, spawnSync } from 'node:child_process';
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
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeKernel } from './helpers/kernel.js';
import { podmanCgroupsCleanup } from './helpers/podman.js';

const top = join(import.meta.dirname, '..');
const petriBin = join(top, 'dist', 'cli', 'main.js');
const XSD = join(top, '..', 'shared', 'schemas', 'junit-10.xsd');
const LEAKS = join(top, '..', 'shared', 'tools', 'leaks.sh');
const haveXmllint = spawnSync('xmllint', ['--version']).status === 0;
const havePodman = spawnSync('podman', ['--version']).status === 0;

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

interface JsonEvent {
  type: string;
  [key: string]: unknown;
}

describeKernel('petri test: jobs, failures kept as images, JUnit, repro', () => {
  let work: string;
  let root: string;
  let removePodmanCgroups: () => Promise<void> = async () => {};
  const env = (extra: Record<string, string> = {}) => ({ ...process.env, PETRI_ROOT: root, NO_COLOR: '1', ...extra });
  const petri = (cwd: string, args: string[], extraEnv: Record<string, string> = {}): Result => {
    const r = spawnSync(process.execPath, [petriBin, ...args], {
      cwd,
      encoding: 'utf8',
      timeout: 120_000,
      env: env(extraEnv),
    });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const ok = (...args: string[]) => {
    const r = petri(work, args);
    if (r.status !== 0) throw new Error(`petri ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
    return r.stdout;
  };
  /** A project directory with a config (and optional files), its path returned. */
  const project = (name: string, config: unknown, files: Record<string, string> = {}) => {
    const dir = join(work, name);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'petri.config.json'), JSON.stringify(config, null, 2));
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(join(dir, path, '..'), { recursive: true });
      writeFileSync(join(dir, path), text);
    }
    return dir;
  };
  const events = (stdout: string) =>
    stdout
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as JsonEvent);
  const planned = (stdout: string) =>
    ((events(stdout).find((e) => e.type === 'plan')?.jobs ?? []) as { name: string }[]).map((j) => j.name);
  const validateJunit = (file: string) => {
    const lint = spawnSync('xmllint', ['--noout', '--schema', XSD, file], { encoding: 'utf8' });
    expect(lint.stderr).toContain('validates');
    expect(lint.status).toBe(0);
  };
  /** What leaks.sh reports that belongs to this suite's store or to the given containers. */
  const leaks = (ids: string[] = []) => {
    if (!existsSync(LEAKS)) return [];
    const r = spawnSync('bash', [LEAKS], { encoding: 'utf8', env: env() });
    return r.stdout.split('\n').filter((line) => line && (line.includes(root) || ids.some((id) => line.includes(id))));
  };
  const base = { image: 'petri-fixture/busybox' };

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'ptest-petritest-'));
    root = join(work, 'root');
    if (havePodman) removePodmanCgroups = podmanCgroupsCleanup();
    const context = join(work, 'busybox-context');
    cpSync(join(top, 'fixtures', 'build', 'busybox'), context, { recursive: true });
    copyFileSync('/bin/busybox', join(context, 'busybox'));
    ok('build', '-q', '-t', 'petri-fixture/busybox', context);
  });
  afterAll(async () => {
    await removePodmanCgroups();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  let mainProject: string;
  let failedImage: string;

  it('runs jobs in parallel containers: passed and failed, steps in one container, prefixed output, a summary, exit 1', () => {
    mainProject = project(
      'main',
      {
        images: { base, app: { context: 'app' } },
        jobs: [
          { name: 'ok', image: 'base', run: 'echo hello from $PETRI_TEST_JOB; echo to-stderr >&2', tags: ['fast'] },
          {
            name: 'fails',
            image: 'app',
            env: { MODE: 'broken' },
            workdir: '/work',
            user: '1000',
            run: 'echo "$MODE" > state.txt; echo about to fail; exit 3',
          },
          { name: 'steps', image: 'app', steps: ['echo one > /tmp/one', 'cat /tmp/one', ['test', '-f', '/tmp/one']] },
          { name: 'step-fails', image: 'base', steps: ['echo first', 'exit 4', 'echo never'] },
          { name: 'argv', image: 'base', run: ['/bin/sh', '-c', 'test "$0" = /bin/sh && echo argv ok'] },
        ],
      },
      { 'app/Dockerfile': 'FROM petri-fixture/busybox\nRUN mkdir /work && chown 1000:1000 /work\n' },
    );
    const r = petri(mainProject, ['test', '--reporter', 'plain', '--junit', 'out/junit.xml', '--artifacts', 'arts']);
    expect(r.status, r.stderr).toBe(1);
    expect(r.stdout).toMatch(/^petri test: 5 jobs, \d at a time \(run \d{8}-\d{6}-[0-9a-f]{4}\)$/m);
    expect(r.stdout).toMatch(/^\[ok\] +hello from ok$/m);
    expect(r.stderr).toMatch(/^\[ok\] +to-stderr$/m);
    expect(r.stdout).toMatch(/^\[ok\] +passed in \d/m);
    expect(r.stdout).toMatch(/^\[fails\] +about to fail$/m);
    expect(r.stdout).toMatch(/^\[fails\] +FAILED: exit code 3 after /m);
    expect(r.stdout).toMatch(/^\[fails\] +reproduce: petri repro arts\/fails\.tar --rerun$/m);
    expect(r.stdout).toMatch(/^\[steps\] +one$/m);
    expect(r.stdout).toMatch(/^\[steps\] +passed/m);
    expect(r.stdout).toMatch(/^\[step-fails\] +FAILED: step 2: exit code 4/m);
    expect(r.stdout).not.toContain('never');
    expect(r.stdout).toMatch(/^\[argv\] +argv ok$/m);
    // The summary.
    expect(r.stdout).toMatch(/^JOB +IMAGE +STATUS +TIME +ATTEMPTS +DETAIL$/m);
    expect(r.stdout).toMatch(/^ok +base +passed +\S+ +1$/m);
    expect(r.stdout).toMatch(/^fails +app +FAILED +\S+ +1 +exit code 3$/m);
    expect(r.stdout).toMatch(/^3 passed, 2 failed in \S+ \(run /m);
    expect(r.stdout).toMatch(/^reproduce fails: petri repro arts\/fails\.tar --rerun$/m);

    // The failed jobs' artifacts and reports; no container is left.
    for (const file of ['fails.tar', 'fails.json', 'fails.md', 'step-fails.tar']) {
      expect(existsSync(join(mainProject, 'arts', file)), file).toBe(true);
    }
    const report = JSON.parse(readFileSync(join(mainProject, 'arts', 'fails.json'), 'utf8'));
    expect(report).toMatchObject({
      job: 'fails',
      status: 'failed',
      failure: 'exit',
      exitCode: 3,
      command: ['sh', '-c', 'echo "$MODE" > state.txt; echo about to fail; exit 3'],
      env: { MODE: 'broken' },
      workdir: '/work',
      user: '1000',
      stdout: 'about to fail\n',
      changes: expect.arrayContaining(['A /work/state.txt']),
    });
    failedImage = report.committed.image;
    expect(failedImage).toMatch(/^petri-failed\/fails:\d{8}-\d{6}-[0-9a-f]{4}$/);
    expect(readFileSync(join(mainProject, 'arts', 'fails.md'), 'utf8')).toContain(
      'petri repro arts/fails.tar --rerun   # run the failed command again',
    );
    const stepReport = JSON.parse(readFileSync(join(mainProject, 'arts', 'step-fails.json'), 'utf8'));
    expect(stepReport.command).toEqual(['sh', '-c', 'exit 4']);
    expect(ok('ps', '-a', '-q')).toBe('');
    expect(ok('images')).toMatch(/^petri-failed\/fails +\d{8}-\d{6}-[0-9a-f]{4} /m);
    const inspected = JSON.parse(ok('inspect', failedImage))[0];
    expect(inspected.Config.Labels).toMatchObject({
      'org.petri.test.job': 'fails',
      'org.petri.test.exit-code': '3',
      'org.petri.test.status': 'exit',
      'org.petri.test.stdout-tail': 'about to fail\n',
      'org.petri.test.diff': expect.stringContaining('A /work/state.txt'),
    });
    expect(inspected.Config.Cmd).toEqual(['sh', '-c', 'echo "$MODE" > state.txt; echo about to fail; exit 3']);
    expect(inspected.History.at(-1).comment).toBe('petri test: job fails failed: exit code 3');
    // Running it again reuses the cached build: no RUN step runs.
    const again = petri(mainProject, ['test', '--filter', 'steps', '--artifacts', 'arts']);
    expect(again.status).toBe(0);
    expect(again.stderr).toMatch(/RUN mkdir \/work[^\n]*\n[^\n]*CACHED/);
  });

  it.skipIf(!haveXmllint || !existsSync(XSD))(
    'writes JUnit the Jenkins schema accepts: a suite per image, failures with the repro command [needs xmllint and ../shared/schemas/junit-10.xsd]',
    () => {
      const file = join(mainProject, 'out', 'junit.xml');
      validateJunit(file);
      const xml = readFileSync(file, 'utf8');
      expect(xml).toMatch(/<testsuite name="base"[^>]* tests="3" failures="1" errors="0"/);
      expect(xml).toMatch(/<testsuite name="app"[^>]* tests="2" failures="1" errors="0"/);
      expect(xml).toContain(
        '<failure message="exit code 3; reproduce: petri repro arts/fails.tar --rerun" type="exit"',
      );
      expect(xml).toContain('<property name="artifact.fails" value="arts/fails.tar"/>');
      expect(xml).toMatch(/<property name="image.id" value="sha256:[0-9a-f]{64}"\/>/);
      expect(xml).toContain('<system-out><![CDATA[about to fail\n]]></system-out>');
    },
  );

  it('petri repro --rerun runs the failed command again in the failed state and exits with its code', () => {
    const r = petri(mainProject, ['repro', 'arts/fails.tar', '--rerun']);
    expect(r.status).toBe(3);
    expect(r.stdout).toBe('about to fail\n');
    expect(r.stderr).toContain("petri repro: running job fails's command again, which failed (exit code 3)");
    expect(r.stderr).toContain('petri repro: exit code 3 (the job: exit code 3)');
    // The state it failed in, its user and workdir: from the committed image.
    expect(ok('run', '--rm', failedImage, 'sh', '-c', 'cat state.txt; id -u; pwd; echo $MODE')).toBe(
      'broken\n1000\n/work\nbroken\n',
    );
    // By image name too; without a terminal there is no shell to open.
    expect(petri(mainProject, ['repro', failedImage, '--rerun']).status).toBe(3);
    const shell = petri(mainProject, ['repro', 'arts/fails.tar']);
    expect(shell.status).toBe(125);
    expect(shell.stderr).toMatch(/stdin is not a terminal.*use --rerun/);
    const docker = petri(mainProject, ['repro', 'arts/fails.tar', '--docker']);
    expect(docker.status).toBe(0);
    expect(docker.stdout).toContain('docker load -i arts/fails.tar\n');
    expect(docker.stdout).toContain(`docker run -it --rm --network none ${failedImage} sh\n`);
    expect(docker.stdout).toContain(`docker run --rm --network none ${failedImage}\n`);
    expect(ok('ps', '-a', '-q')).toBe('');
  });

  it.skipIf(!havePodman)(
    'the artifact loads with podman load and its container shows the failed state [needs podman]',
    () => {
      const podman = (...args: string[]) =>
        spawnSync(
          'podman',
          [
            '--root',
            join(work, 'podman'),
            '--runroot',
            join(work, 'podman-run'),
            '--storage-driver',
            'vfs',
            '--cgroup-manager',
            'cgroupfs',
            '--events-backend',
            'none',
            ...args,
          ],
          { encoding: 'utf8', timeout: 120_000 },
        );
      // runc may not raise these limits here (as in test/image-roundtrip.test.ts).
      const ULIMITS = ['--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024'];
      const loaded = podman('load', '-i', join(mainProject, 'arts', 'fails.tar'));
      expect(loaded.status, loaded.stderr).toBe(0);
      const ran = podman(
        'run',
        '--rm',
        '--runtime',
        'runc',
        '--network',
        'none',
        ...ULIMITS,
        failedImage,
        'sh',
        '-c',
        'cat state.txt; id -u; pwd; echo $MODE',
      );
      expect(ran.stderr).toBe('');
      expect(ran.stdout).toBe('broken\n1000\n/work\nbroken\n');
      const rerun = podman('run', '--rm', '--runtime', 'runc', '--network', 'none', ...ULIMITS, failedImage);
      expect(rerun.status).toBe(3);
      const labels = JSON.parse(podman('image', 'inspect', failedImage).stdout)[0].Labels;
      expect(labels['org.petri.test.exit-code']).toBe('3');
    },
  );

  it('a timeout and an out-of-memory kill fail the job, are kept, and reproduce', () => {
    const dir = project('limits', {
      images: { base },
      jobs: [
        { name: 'slow', image: 'base', run: 'echo starting; sleep 20', timeout: '1s' },
        { name: 'slow-default', image: 'base', run: 'sleep 20' },
        // its own timeout: the kernel's reclaim before the OOM kill takes 0.3-0.7 s here, more under load
        { name: 'hungry', image: 'base', memory: '32m', run: 'head -c 100m /dev/zero | tail', timeout: '10s' },
      ],
    });
    const started = Date.now();
    const r = petri(dir, ['test', '--timeout', '1500ms', '--artifacts', 'arts']);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(r.status, r.stderr).toBe(1);
    expect(r.stdout).toMatch(/^\[slow\] +FAILED: timed out after 1\.00s/m);
    expect(r.stdout).toMatch(/^\[slow-default\] +FAILED: timed out after 1\.50s/m);
    expect(r.stdout).toMatch(/^\[hungry\] +FAILED: killed: out of memory \(limit 32m\), exit code \d+/m);
    const slow = JSON.parse(readFileSync(join(dir, 'arts', 'slow.json'), 'utf8'));
    expect(slow).toMatchObject({ failure: 'timeout', stdout: 'starting\n', limits: { timeoutMs: 1000 } });
    const hungry = JSON.parse(readFileSync(join(dir, 'arts', 'hungry.json'), 'utf8'));
    expect(hungry).toMatchObject({ failure: 'oom', limits: { memory: 32 << 20 } });
    // The repro applies the job's timeout and memory limit again.
    const again = petri(dir, ['repro', 'arts/slow.tar', '--rerun']);
    expect(again.status).toBe(124);
    expect(again.stderr).toContain('timed out after 1.00s, as the job did');
    const oom = petri(dir, ['repro', 'arts/hungry.tar', '--rerun']);
    expect(oom.status).not.toBe(0);
    expect(oom.stderr).toMatch(/exit code \d+, out of memory/);
    expect(petri(dir, ['repro', 'arts/hungry.tar', '--docker']).stdout).toContain('--memory 32m --memory-swap 32m');
    expect(ok('ps', '-a', '-q')).toBe('');
  });

  it('files: copies files and directories from the host into the container before the command runs', () => {
    const dir = project(
      'files',
      {
        images: { base },
        jobs: [
          {
            name: 'copied',
            image: 'base',
            user: '1000',
            files: [
              { source: 'data/', target: '/data' },
              { source: 'one.txt', target: '/tmp/in/' },
            ],
            run: 'cat /data/a.txt /data/sub/b.txt /tmp/in/one.txt && touch /tmp/mine && stat -c %a /tmp',
          },
        ],
      },
      { 'data/a.txt': 'A\n', 'data/sub/b.txt': 'B\n', 'one.txt': 'ONE\n' },
    );
    const r = petri(dir, ['test', '--reporter', 'plain']);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    // The image's /tmp keeps its mode (1777: user 1000 may write there) under the copied /tmp/in.
    for (const line of ['A', 'B', 'ONE', '1777']) expect(r.stdout).toContain(`[copied] ${line}\n`);
    expect(ok('ps', '-a', '-q')).toBe('');
  });

  it('retries: a job passes on a later attempt; one that keeps failing is kept once; --no-keep-failed keeps none', () => {
    const dir = project('retries', {
      images: { base },
      jobs: [
        {
          name: 'flaky',
          image: 'base',
          retries: 2,
          run: 'echo attempt $PETRI_TEST_ATTEMPT; test $PETRI_TEST_ATTEMPT -ge 2',
        },
        { name: 'broken', image: 'base', retries: 1, run: 'exit 7' },
      ],
    });
    const r = petri(dir, ['test', '--reporter', 'json', '--artifacts', 'arts']);
    expect(r.status, r.stderr).toBe(1);
    const all = events(r.stdout);
    const starts = (job: string) => all.filter((e) => e.type === 'job-start' && e.job === job).length;
    expect(starts('flaky')).toBe(2);
    expect(starts('broken')).toBe(2);
    expect(all.filter((e) => e.type === 'job-retry').map((e) => [e.job, e.attempt])).toEqual(
      expect.arrayContaining([
        ['flaky', 1],
        ['broken', 1],
      ]),
    );
    const ends = Object.fromEntries(
      all.filter((e) => e.type === 'job-end').map((e) => [(e.result as { name: string }).name, e.result]),
    ) as Record<string, { status: string; attempts: number; artifact?: unknown }>;
    expect(ends.flaky).toMatchObject({ status: 'passed', attempts: 2 });
    expect(ends.broken).toMatchObject({ status: 'failed', attempts: 2, exitCode: 7 });
    expect(readdirSync(join(dir, 'arts')).sort()).toEqual(['broken.json', 'broken.md', 'broken.tar']);
    expect(all.at(-1)?.type).toBe('summary');

    const none = petri(dir, ['test', '--no-keep-failed', '--filter', 'broken', '--artifacts', 'none']);
    expect(none.status).toBe(1);
    expect(existsSync(join(dir, 'none'))).toBe(false);
    expect(ok('ps', '-a', '-q')).toBe('');
  });

  it('--filter picks jobs by name or tag (substring or glob); --shard puts every job in exactly one shard', () => {
    const names = Array.from({ length: 12 }, (_, i) => `job-${i}`);
    const dir = project('select', {
      images: { base },
      jobs: names.map((name, i) => ({ name, image: 'base', run: 'echo out', tags: i % 3 === 0 ? ['fast'] : ['slow'] })),
    });
    const run = (...args: string[]) => {
      const r = petri(dir, ['test', '--reporter', 'json', ...args]);
      expect(r.status, r.stderr).toBe(0);
      return planned(r.stdout);
    };
    expect(run('--filter', 'fast')).toEqual(['job-0', 'job-3', 'job-6', 'job-9']);
    expect(run('--filter', 'job-1*')).toEqual(['job-1', 'job-10', 'job-11']);
    expect(run('--filter', 'job-1?', '--filter', 'job-2')).toEqual(['job-2', 'job-10', 'job-11']);
    const none = petri(dir, ['test', '--filter', 'nothing-like-it']);
    expect(none.status).toBe(125);
    expect(none.stderr).toMatch(/^petri: petri test: no job matches --filter nothing-like-it \(jobs: job-0, /);
    const shards = [1, 2, 3].map((i) => {
      const r = petri(dir, ['test', '--reporter', 'json', '--shard', `${i}/3`]);
      expect(r.status).toBe(0);
      // Even the output of a command that ends at once is never lost.
      const outputs = events(r.stdout).filter((e) => e.type === 'output' && e.line === 'out');
      expect(outputs.map((e) => e.job).sort()).toEqual([...planned(r.stdout)].sort());
      return planned(r.stdout);
    });
    expect(shards.flat().sort()).toEqual([...names].sort());
    expect(new Set(shards.flat()).size).toBe(names.length);
    // Stable: the same shard again has the same jobs, and a filter only narrows it.
    expect(run('--shard', '2/3')).toEqual(shards[1]);
    expect(run('--shard', '2/3', '--filter', 'fast')).toEqual(shards[1]?.filter((n) => Number(n.slice(4)) % 3 === 0));
  });

  it('a job that cannot run is an error, not a failure: a missing image, a bad Dockerfile, a user not in the image', () => {
    const dir = project(
      'errors',
      {
        images: {
          base,
          missing: { image: 'no/such-image' },
          broken: { context: 'broken' },
          nosh: { context: 'nosh' },
        },
        jobs: [
          { name: 'fine', image: 'base', run: 'true' },
          { name: 'no-image', image: 'missing', run: 'true' },
          { name: 'no-build', image: 'broken', run: 'true' },
          { name: 'no-user', image: 'base', user: 'nobody-here', run: 'true' },
          { name: 'no-shell', image: 'nosh', steps: [['/bin/busybox', 'true']] },
        ],
      },
      {
        'broken/Dockerfile': 'FROM petri-fixture/busybox\nRUN exit 9\n',
        'nosh/Dockerfile': 'FROM petri-fixture/busybox\nRUN rm /bin/sh\n',
      },
    );
    const r = petri(dir, ['test', '--junit', 'junit.xml']);
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/^\[no-image\] +ERROR: image missing: .*no\/such-image/m);
    expect(r.stdout).toMatch(/^\[no-build\] +ERROR: image broken did not build: .*exit code: 9$/m);
    expect(r.stdout).toMatch(/^\[no-user\] +ERROR: cannot create its container: unable to find user nobody-here/m);
    expect(r.stdout).toMatch(/^\[no-shell\] +ERROR: .*needs sh in its image/m);
    expect(r.stdout).toMatch(/^1 passed, 0 failed, 4 errors in /m);
    if (haveXmllint && existsSync(XSD)) {
      validateJunit(join(dir, 'junit.xml'));
      expect(readFileSync(join(dir, 'junit.xml'), 'utf8')).toMatch(/<testsuite name="broken"[^>]* errors="1"/);
    }
    // A bad config: one line naming the file, the key and what was expected.
    writeFileSync(
      join(dir, 'petri.config.json'),
      JSON.stringify({ images: { base }, jobs: [{ name: 'x', image: 'base', run: 'true', retries: 'two' }] }),
    );
    const bad = petri(dir, ['test']);
    expect(bad.status).toBe(125);
    expect(bad.stderr).toBe('petri: petri.config.json: jobs[0].retries: "two" is not valid: expected an integer ≥ 0\n');
  });

  it('Ctrl-C stops the running jobs, reports the unfinished ones as interrupted and leaves nothing behind', async () => {
    const dir = project('interrupt', {
      images: { base },
      jobs: [
        { name: 'long-1', image: 'base', run: 'echo up; sleep 60' },
        { name: 'long-2', image: 'base', run: 'echo up; sleep 60' },
        { name: 'queued', image: 'base', run: 'true' },
      ],
    });
    const child = spawn(process.execPath, [petriBin, 'test', '--parallel', '2', '--junit', 'junit.xml'], {
      cwd: dir,
      env: env(),
    });
    let stdout = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
    });
    child.stderr.resume();
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    for (let i = 0; i < 200 && (stdout.match(/\] +up$/gm) ?? []).length < 2; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(stdout).toMatch(/\[long-2\] +up/);
    const ids = ok('ps', '-q').trim().split('\n').filter(Boolean);
    expect(ids).toHaveLength(2);
    const killedAt = Date.now();
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(Date.now() - killedAt).toBeLessThan(10_000);
    expect(stdout).toMatch(/^\[long-1\] +interrupted$/m);
    expect(stdout).toMatch(/^\[queued\] +interrupted before it started$/m);
    expect(stdout).toMatch(/^0 passed, 0 failed, 3 interrupted in /m);
    expect(ok('ps', '-a', '-q')).toBe('');
    expect(leaks(ids)).toEqual([]);
    expect(existsSync(join(dir, 'petri-artifacts'))).toBe(false);
    if (haveXmllint && existsSync(XSD)) {
      validateJunit(join(dir, 'junit.xml'));
      expect(readFileSync(join(dir, 'junit.xml'), 'utf8')).toMatch(/<testsuite name="base"[^>]* skipped="3"/);
    }
  });

  it('Ctrl-C during an image build stops the build too and leaves nothing behind', async () => {
    const dir = project(
      'interrupt-build',
      { images: { slow: { context: 'slow' } }, jobs: [{ name: 'never', image: 'slow', run: 'true' }] },
      { 'slow/Dockerfile': 'FROM petri-fixture/busybox\nRUN echo building && sleep 60\n' },
    );
    const child = spawn(process.execPath, [petriBin, 'test'], { cwd: dir, env: env() });
    let stderr = '';
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    let stdout = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    for (let i = 0; i < 200 && !/ building$/m.test(stderr); i++) await new Promise((r) => setTimeout(r, 50));
    expect(stderr).toMatch(/ building$/m);
    const ids = ok('ps', '-q').trim().split('\n').filter(Boolean);
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(stdout).toMatch(/^\[never\] +interrupted before it started$/m);
    expect(ok('ps', '-a', '-q')).toBe('');
    expect(leaks(ids)).toEqual([]);
  });

  it('the demo (fixtures/demo): ten jobs on two images pass; DEMO_FAIL=1 fails exactly one, kept for repro', () => {
    const config = join(top, 'fixtures', 'demo', 'petri.config.json');
    const pass = petri(work, ['test', '--config', config, '--artifacts', 'demo-arts']);
    expect(pass.status, pass.stdout + pass.stderr).toBe(0);
    expect(pass.stdout).toMatch(/^10 passed, 0 failed in /m);
    const fail = petri(work, ['test', '--config', config, '--artifacts', 'demo-arts'], { DEMO_FAIL: '1' });
    expect(fail.status).toBe(1);
    expect(fail.stdout).toMatch(/^9 passed, 1 failed in /m);
    expect(fail.stdout).toMatch(/^reproduce divide: petri repro demo-arts\/divide\.tar --rerun$/m);
    const again = petri(work, ['repro', 'demo-arts/divide.tar', '--rerun']);
    expect(again.status).toBe(1);
    expect(again.stderr).toContain('divide: by zero');
    expect(readdirSync(join(work, 'demo-arts')).sort()).toEqual(['divide.json', 'divide.md', 'divide.tar']);
    expect(ok('ps', '-a', '-q')).toBe('');
  });
});
