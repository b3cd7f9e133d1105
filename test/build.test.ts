// biome-ignore-all lint/suspicious/noTemplateCurlyInString: Dockerfile variables like ${VAR}, not template strings
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
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { sweepContainers } from '../src/runtime/index.js';
import { describeKernel } from './helpers/kernel.js';
import { busyboxRootfs } from './helpers/rootfs.js';

const petriBin = join(import.meta.dirname, '..', 'dist', 'cli', 'main.js');
const fixtures = join(import.meta.dirname, '..', 'fixtures', 'build');

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

interface StepEvent {
  type: 'step';
  id: number;
  stage: string;
  index: number;
  text: string;
  status: string;
}

describeKernel('petri build: fixtures, cache, output', () => {
  let work: string;
  let root: string;
  const petri = (...args: string[]): Result => {
    const r = spawnSync(process.execPath, [petriBin, ...args], {
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...process.env, PETRI_ROOT: root },
    });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const ok = (...args: string[]): string => {
    const r = petri(...args);
    if (r.status !== 0) throw new Error(`petri ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
    return r.stdout;
  };
  const ctx = (name: string) => join(work, name);
  /** Builds with JSON progress; returns the image ID and the step events. */
  const build = (context: string, ...args: string[]) => {
    const r = petri('build', '--progress', 'json', ...args, context);
    if (r.status !== 0) throw new Error(`petri build ${context} exited ${r.status}: ${r.stderr}`);
    const events = r.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { type: string });
    return { id: r.stdout.trim(), events, steps: events.filter((e): e is StepEvent => e.type === 'step') };
  };
  const sh = (image: string, script: string) => ok('run', '--rm', image, 'sh', '-c', script);
  const inspect = (image: string) => JSON.parse(ok('inspect', image))[0];
  const finished = (steps: StepEvent[]) => steps.filter((s) => s.status !== 'start');
  /** The steps that make layers (metadata steps only change the config). */
  const fsSteps = (steps: StepEvent[]) => finished(steps).filter((s) => /^(RUN|COPY|ADD|WORKDIR)\b/.test(s.text));
  const blobCount = () => readdirSync(join(root, 'images', 'blobs', 'sha256')).length;

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'ptest-build-'));
    root = join(work, 'root');
    cpSync(fixtures, work, { recursive: true, verbatimSymlinks: true });
    copyFileSync('/bin/busybox', join(ctx('busybox'), 'busybox'));
    ok('build', '-q', '-t', 'petri-fixture/busybox', ctx('busybox'));
  });
  afterAll(() => {
    rmSync(work, { recursive: true, force: true });
  });

  it('builds a busybox base from scratch: its applets, users and Cmd', () => {
    expect(sh('petri-fixture/busybox', 'ls /bin/ls && id -un && cat /etc/group | wc -l')).toBe('/bin/ls\nroot\n2\n');
    const image = inspect('petri-fixture/busybox');
    expect(image.Config.Cmd).toEqual(['sh']);
    expect(image.RootFS.Layers).toHaveLength(4);
    expect(image.History.map((h: { created_by: string }) => h.created_by)).toContain(
      'RUN /bin/busybox --install -s /bin # buildkit',
    );
  });

  it('multi-stage: builds only what the target needs, independent stages at once, COPY --from by name and index', () => {
    const { steps } = build(ctx('multi-stage'), '-t', 'ptest/multi');
    expect(sh('ptest/multi', 'cat /app/out.txt /app/tool.txt; head -1 /app/app.sh')).toBe(
      'built by 0 in /src\ntool\n#!/bin/sh\n',
    );
    expect(steps.some((s) => s.stage === 'unused')).toBe(false);
    // `tools` starts before `build` has finished: they run in parallel.
    const toolsStart = steps.findIndex((s) => s.stage === 'tools' && s.status === 'start');
    const buildDone = steps.findLastIndex((s) => s.stage === 'build' && s.status !== 'start');
    expect(toolsStart).toBeGreaterThanOrEqual(0);
    expect(toolsStart).toBeLessThan(buildDone);

    build(ctx('multi-stage'), '--target', 'build', '-t', 'ptest/multi-build');
    expect(sh('ptest/multi-build', 'cat /src/out.txt; ls /app 2>&1 || true')).toBe(
      'built by 0 in /src\nls: /app: No such file or directory\n',
    );
    expect(inspect('ptest/multi-build').Config.WorkingDir).toBe('/src');
  });

  it('heredocs: RUN scripts (with and without #!), COPY bodies expanded or literal, several per line', () => {
    build(ctx('heredocs'), '-t', 'ptest/heredocs');
    expect(sh('ptest/heredocs', 'cd /out && for f in run script copied literal two; do cat $f.txt; done')).toBe(
      'hello world\nshebang /dev/.petri-heredoc-0\ncopied world\nliteral ${NAME}\nfirst\nsecond\n',
    );
  });

  it('RUN mounts: a cache mount persists across builds, tmpfs, bind from the context, --network=none; none of them lands in the image', () => {
    build(ctx('cache-mount'), '-t', 'ptest/mounts', '--build-arg', 'RUN_ID=1');
    expect(
      sh(
        'ptest/mounts',
        'cat /count.txt /tmpfs.txt /bound.txt /netdevs.txt; ls -A /var/cache/app /scratch /mnt 2>&1; true',
      ),
    ).toBe(
      '1\nx\nbound content\n1\nls: /var/cache/app: No such file or directory\nls: /scratch: No such file or directory\nls: /mnt: No such file or directory\n',
    );
    const second = build(ctx('cache-mount'), '-t', 'ptest/mounts', '--build-arg', 'RUN_ID=2');
    expect(sh('ptest/mounts', 'cat /count.txt')).toBe('2\n');
    // The cache mount's step re-ran because RUN_ID changed, not because of the mount.
    expect(fsSteps(second.steps)[0]?.status).toBe('done');
    const third = build(ctx('cache-mount'), '-t', 'ptest/mounts', '--build-arg', 'RUN_ID=2');
    expect(fsSteps(third.steps).every((s) => s.status === 'cached')).toBe(true);
  });

  it.skipIf(!existsSync('/etc/resolv.conf'))(
    "RUN with the host's network gets the host's resolv.conf, which stays out of the image [needs /etc/resolv.conf]",
    () => {
      const dir = join(work, 'resolv');
      mkdirSync(dir);
      writeFileSync(
        join(dir, 'Dockerfile'),
        'FROM petri-fixture/busybox\nRUN cat /etc/resolv.conf > /dns.txt && echo "nameserver 192.0.2.1" > /etc/resolv.conf\nRUN --network=none ls /etc/resolv.conf > /none.txt 2>&1 || true\n',
      );
      build(dir, '-t', 'ptest/resolv');
      expect(sh('ptest/resolv', 'cat /dns.txt')).toBe(readFileSync('/etc/resolv.conf', 'utf8'));
      expect(sh('ptest/resolv', 'cat /none.txt')).toMatch(/No such file/);
      expect(sh('ptest/resolv', 'ls /etc/resolv.conf 2>&1; true')).toMatch(/No such file/);
      expect(readFileSync('/etc/resolv.conf', 'utf8')).not.toContain('192.0.2.1');
    },
  );

  it('.dockerignore: patterns, ! exceptions, ** and directories', () => {
    build(ctx('dockerignore'), '-t', 'ptest/ignore');
    expect(sh('ptest/ignore', 'cd /ctx && find . | sort')).toBe(
      '.\n./.dockerignore\n./a.txt\n./keep.log\n./sub\n./sub/deep\n./sub/deep/data.txt\n',
    );
  });

  it('ARG and ENV: defaults, global ARGs, --build-arg, ${VAR:-x} and ${VAR:+x}, expansion in WORKDIR, COPY and LABEL', () => {
    build(ctx('args-env'), '-t', 'ptest/args');
    expect(sh('ptest/args', 'pwd; cat args.txt world.txt')).toBe(
      '/opt/world\nhello world|fallback|alt|hello|world\nworld file\n',
    );
    build(ctx('args-env'), '-t', 'ptest/args2', '--build-arg', 'TARGET=moon', '--build-arg', 'GREETING=hi');
    expect(sh('ptest/args2', 'pwd; cat args.txt moon.txt')).toBe(
      '/opt/moon\nhi moon|fallback|alt|hi|moon\nmoon file\n',
    );
    const image = inspect('ptest/args2');
    expect(image.Config.Labels).toEqual({ greeting: 'hi' });
    expect(image.Config.Env).toContain('MESSAGE=hi moon');
  });

  it('USER and WORKDIR: RUN as the user, WORKDIR created for it, COPY --chown by name and --chmod', () => {
    build(ctx('user-workdir'), '-t', 'ptest/user');
    expect(sh('ptest/user', 'cd /home/app/work && cat uid.txt pwd.txt home.txt /stat.txt')).toBe(
      '1000\n/home/app/work\n/home/app\n1000:1000 755\n1000:1000 644\n0:0 600\n',
    );
    expect(inspect('ptest/user').Config.User).toBe('root');
  });

  it('ONBUILD: triggers run in the child build, with the child context, and are not inherited further', () => {
    build(ctx('onbuild/parent'), '-t', 'petri-fixture/onbuild-parent');
    expect(inspect('petri-fixture/onbuild-parent').Config.OnBuild).toHaveLength(2);
    build(ctx('onbuild/child'), '-t', 'ptest/onbuild-child');
    expect(sh('ptest/onbuild-child', 'cat /app/onbuild.txt')).toBe('from child context\nchild\n');
    expect(inspect('ptest/onbuild-child').Config.OnBuild ?? []).toEqual([]);
  });

  it('metadata instructions set the image config like docker build', () => {
    build(ctx('metadata'), '-t', 'ptest/meta');
    const image = inspect('ptest/meta');
    expect(image.Author).toBe('fixtures@petri');
    expect(image.Config).toMatchObject({
      Labels: { 'org.example.name': 'metadata fixture', version: '1' },
      ExposedPorts: { '80/tcp': {}, '443/tcp': {}, '53/udp': {} },
      Volumes: { '/data': {}, '/logs': {} },
      StopSignal: 'SIGTERM',
      Healthcheck: { Test: ['CMD', 'true'], Interval: 5e9, Timeout: 2e9, Retries: 3 },
      Shell: ['/bin/sh', '-ec'],
      Entrypoint: ['/bin/echo'],
      Cmd: ['hello'],
    });
    expect(ok('run', '--rm', 'ptest/meta')).toBe('hello\n');
  });

  it('ADD extracts local tars (gzip, bzip2, xz), COPY semantics: directory contents, several sources, wildcards, file renames, --exclude', () => {
    build(ctx('add-tar'), '-t', 'ptest/add');
    expect(sh('ptest/add', 'cat /opt/dir/file.txt /opt/plain.txt /opt/bz/b.txt /opt/xz/x.txt; ls /opt')).toBe(
      'in archive\nplain\nfrom bzip2\nfrom xz\nbz\ndir\nplain.txt\nxz\n',
    );
    build(ctx('copy-semantics'), '-t', 'ptest/copy');
    expect(
      sh(
        'ptest/copy',
        'cd / && find dst many wild excluded | sort && cat renamed.txt && readlink wild/link || echo nolink',
      ),
    ).toBe(
      'dst\ndst/nested\ndst/nested/n.txt\ndst/top.txt\ndst/x.skip\nexcluded\nexcluded/nested\nexcluded/nested/n.txt\nexcluded/top.txt\nmany\nmany/a.txt\nmany/b.txt\nwild\nwild/a.txt\nwild/b.txt\na\nnolink\n',
    );
  });

  it('cache: a rebuild runs nothing and writes nothing; touching a file changes nothing; a content change rebuilds that step and what follows', () => {
    const first = build(ctx('multi-stage'), '-t', 'ptest/cache');
    const blobs = blobCount();
    const again = build(ctx('multi-stage'), '-t', 'ptest/cache');
    expect(again.id).toBe(first.id);
    expect(again.events.some((e) => e.type === 'output')).toBe(false);
    expect(fsSteps(again.steps).length).toBe(7);
    expect(fsSteps(again.steps).every((s) => s.status === 'cached')).toBe(true);
    expect(blobCount()).toBe(blobs);

    const future = new Date(Date.now() + 3_600_000);
    utimesSync(join(ctx('multi-stage'), 'app.sh'), future, future);
    expect(build(ctx('multi-stage'), '-t', 'ptest/cache').id).toBe(first.id);

    writeFileSync(join(ctx('multi-stage'), 'app.sh'), '#!/bin/sh\necho changed\n');
    const changed = build(ctx('multi-stage'), '-t', 'ptest/cache');
    const status = (stage: string, prefix: string) =>
      finished(changed.steps).find((s) => s.stage === stage && s.text.startsWith(prefix))?.status;
    expect(status('build', 'WORKDIR')).toBe('cached');
    expect(status('build', 'COPY app.sh')).toBe('done');
    expect(status('build', 'RUN')).toBe('done');
    expect(status('tools', 'RUN')).toBe('cached');
    expect(sh('ptest/cache', 'cat /app/out.txt')).toBe('changed\n');
  });

  it('result cache: the same build again answers without the builder, with the same steps; any change goes back to the builder', () => {
    const dir = join(work, 'result-cache');
    cpSync(ctx('multi-stage'), dir, { recursive: true });
    // A change within a clock tick of a build is not remembered by it (racy): let changes age a little.
    const settle = () => spawnSync('sleep', ['0.15']);
    settle();
    const imageEvent = (b: ReturnType<typeof build>) =>
      b.events.find((e) => e.type === 'image') as { id: string; tags: string[]; resultCache?: boolean };
    const lines = (b: ReturnType<typeof build>) => finished(b.steps).map((s) => `${s.stage} ${s.text}:${s.status}`);
    const records = () => readdirSync(join(root, 'build-cache', 'results')).length;

    // Built by the builder (its steps ran, or were cached by an earlier test): remembered either way.
    const first = build(dir, '-t', 'ptest/results');
    expect(imageEvent(first).resultCache).toBeUndefined();
    const hit = build(dir, '-t', 'ptest/results');
    expect(imageEvent(hit)).toMatchObject({ id: first.id, tags: ['ptest/results:latest'], resultCache: true });
    expect(hit.id).toBe(first.id);
    expect(fsSteps(hit.steps).every((s) => s.status === 'cached')).toBe(true);
    const plain = petri('build', '--progress', 'plain', '-t', 'ptest/results', dir);
    expect(plain.stdout.trim()).toBe(first.id);
    expect(plain.stderr).toMatch(/#5 CACHED/);
    const remembered = records();

    // A touched file: the builder (every step cached, the same steps as the result cache showed), then the result cache again.
    const future = new Date(Date.now() + 7_200_000);
    utimesSync(join(dir, 'app.sh'), future, future);
    settle();
    const touched = build(dir, '-t', 'ptest/results');
    expect(imageEvent(touched).resultCache).toBeUndefined();
    expect(touched.id).toBe(first.id);
    expect(lines(hit).sort()).toEqual(lines(touched).sort());
    expect(imageEvent(build(dir, '-t', 'ptest/results')).resultCache).toBe(true);
    const cached = touched;

    // Another tag, another build arg, --no-cache: the builder.
    expect(imageEvent(build(dir, '-t', 'ptest/results', '-t', 'ptest/results:two')).resultCache).toBeUndefined();
    expect(imageEvent(build(dir, '-t', 'ptest/results', '--build-arg', 'UNUSED=1')).resultCache).toBeUndefined();
    const cold = build(dir, '-t', 'ptest/results', '--no-cache');
    expect(imageEvent(cold).resultCache).toBeUndefined();
    expect(fsSteps(cold.steps).every((s) => s.status === 'done')).toBe(true);
    // ... which is remembered: its steps are all in the step cache now.
    expect(imageEvent(build(dir, '-t', 'ptest/results')).resultCache).toBe(true);

    // The store's names changed (a tag elsewhere): the builder, then the result cache again.
    ok('tag', 'petri-fixture/busybox', 'ptest/unrelated');
    expect(imageEvent(build(dir, '-t', 'ptest/results')).resultCache).toBeUndefined();
    expect(imageEvent(build(dir, '-t', 'ptest/results')).resultCache).toBe(true);

    // A new file in the context, then a content change: the builder; the change rebuilds its steps,
    // tags a new image, and is remembered (only its own tag changed in the store).
    writeFileSync(join(dir, 'new.txt'), 'new\n');
    settle();
    expect(imageEvent(build(dir, '-t', 'ptest/results')).resultCache).toBeUndefined();
    writeFileSync(join(dir, 'app.sh'), '#!/bin/sh\necho result cache\n');
    settle();
    const changed = build(dir, '-t', 'ptest/results');
    expect(imageEvent(changed).resultCache).toBeUndefined();
    expect(changed.id).not.toBe(cached.id);
    expect(fsSteps(changed.steps).some((s) => s.status === 'done')).toBe(true);
    expect(sh('ptest/results', 'cat /app/out.txt')).toBe('result cache\n');
    expect(imageEvent(build(dir, '-t', 'ptest/results'))).toMatchObject({ id: changed.id, resultCache: true });

    // A Dockerfile given by a symlink, outside the context: an edit of its target goes to the builder.
    const linked = join(work, 'result-cache-link');
    const files = join(work, 'result-cache-files');
    mkdirSync(linked);
    mkdirSync(files);
    const real = join(files, 'real.Dockerfile');
    const link = join(files, 'Dockerfile.link');
    writeFileSync(real, 'FROM petri-fixture/busybox\nRUN echo one > /v\n');
    symlinkSync('real.Dockerfile', link);
    settle();
    build(linked, '-f', link, '-t', 'ptest/results-link');
    expect(imageEvent(build(linked, '-f', link, '-t', 'ptest/results-link')).resultCache).toBe(true);
    writeFileSync(real, 'FROM petri-fixture/busybox\nRUN echo two > /v\n');
    settle();
    expect(imageEvent(build(linked, '-f', link, '-t', 'ptest/results-link')).resultCache).toBeUndefined();
    expect(sh('ptest/results-link', 'cat /v')).toBe('two\n');
    // ADD from a variable (it may be a URL, which BuildKit fetches each time): never remembered.
    writeFileSync(join(linked, 'src.txt'), 'x\n');
    writeFileSync(real, 'FROM petri-fixture/busybox\nARG SRC=src.txt\nADD $SRC /x\n');
    settle();
    build(linked, '-f', link, '-t', 'ptest/results-link');
    expect(imageEvent(build(linked, '-f', link, '-t', 'ptest/results-link')).resultCache).toBeUndefined();

    // The image removed: the builder makes it again.
    build(dir, '-t', 'ptest/results');
    ok('rmi', 'ptest/results');
    const again = build(dir, '-t', 'ptest/results');
    expect(imageEvent(again).resultCache).toBeUndefined();
    expect(again.id).toBe(changed.id);
    expect(records()).toBeGreaterThanOrEqual(remembered);
  });

  it('cache: changing an ARG rebuilds from its first use; --no-cache runs everything and gives the same layer digests', () => {
    const dir = join(work, 'arg-cache');
    mkdirSync(dir);
    writeFileSync(
      join(dir, 'Dockerfile'),
      'FROM petri-fixture/busybox\nRUN echo one > /one\nARG V=1\nRUN echo $V > /v\nRUN echo after > /after\n',
    );
    build(dir, '-t', 'ptest/argcache');
    const changed = build(dir, '-t', 'ptest/argcache', '--build-arg', 'V=2');
    expect(finished(changed.steps).map((s) => `${s.text.split(' ').slice(0, 3).join(' ')}:${s.status}`)).toEqual([
      'FROM petri-fixture/busybox:done',
      'RUN echo one:cached',
      'ARG V=1:done',
      'RUN echo $V:done',
      'RUN echo after:done',
    ]);
    const layers = inspect('ptest/argcache').RootFS.Layers;
    const cold = build(dir, '-t', 'ptest/argcache', '--build-arg', 'V=2', '--no-cache');
    expect(finished(cold.steps).filter((s) => s.status === 'cached')).toEqual([]);
    expect(inspect('ptest/argcache').RootFS.Layers).toEqual(layers);
  });

  it('secrets: mounted for the step, never in the image or the cache key', () => {
    const dir = join(work, 'secret');
    mkdirSync(dir);
    writeFileSync(join(dir, 'token'), 's3cret');
    writeFileSync(
      join(dir, 'Dockerfile'),
      'FROM petri-fixture/busybox\nRUN --mount=type=secret,id=tok test "$(cat /run/secrets/tok)" = s3cret && echo ok > /checked\n',
    );
    build(dir, '-t', 'ptest/secret', '--secret', `id=tok,src=${join(dir, 'token')}`);
    expect(sh('ptest/secret', 'cat /checked; ls /run/secrets 2>&1 || true')).toBe(
      'ok\nls: /run/secrets: No such file or directory\n',
    );
  });

  it('ssh: RUN --mount=type=ssh reaches the agent of --ssh through a socket of its own; a required one must be given', async () => {
    const dir = join(work, 'ssh');
    mkdirSync(dir);
    copyFileSync(join(await busyboxRootfs(), 'probe'), join(dir, 'probe'));
    // A stand-in agent in a process of its own (the builds below block this one): it answers what it got.
    const socket = join(work, 'agent.sock');
    const agent = spawn(
      process.execPath,
      [
        '-e',
        "require('node:net').createServer((c) => { let d = ''; c.on('data', (x) => { d += x; }).on('end', () => c.end(`agent got: ${d}`)); }).listen(process.argv[1])",
        socket,
      ],
      { stdio: 'ignore' },
    );
    try {
      for (let i = 0; i < 200 && !existsSync(socket); i++) await new Promise((resolve) => setTimeout(resolve, 10));
      writeFileSync(
        join(dir, 'Dockerfile'),
        [
          'FROM petri-fixture/busybox',
          'COPY probe /probe',
          'USER 1000:1000',
          'RUN --mount=type=ssh,uid=1000 /probe unix "$SSH_AUTH_SOCK" hello > /tmp/reply && stat -c "%u %a %F" "$SSH_AUTH_SOCK" > /tmp/socket && echo "$SSH_AUTH_SOCK" > /tmp/env',
          '',
        ].join('\n'),
      );
      build(dir, '-t', 'ptest/ssh', '--ssh', `default=${socket}`);
      expect(sh('ptest/ssh', 'cat /tmp/reply; echo; cat /tmp/socket /tmp/env; ls /run/buildkit 2>&1 || true')).toBe(
        'agent got: hello\n1000 600 socket\n/run/buildkit/ssh_agent.0\nls: /run/buildkit: No such file or directory\n',
      );
      // Without --ssh, an optional mount is left out (SSH_AUTH_SOCK names it all the same, as in BuildKit;
      // an id named like an object's property is just another id); a required one fails in one line.
      writeFileSync(
        join(dir, 'Dockerfile'),
        'FROM petri-fixture/busybox\nRUN --mount=type=ssh,id=constructor test "$SSH_AUTH_SOCK" = /run/buildkit/ssh_agent.0 && test ! -e "$SSH_AUTH_SOCK"\n',
      );
      build(dir, '--no-cache');
      writeFileSync(join(dir, 'Dockerfile'), 'FROM petri-fixture/busybox\nRUN --mount=type=ssh,required=true true\n');
      const missing = petri('build', '-q', dir);
      expect(missing.status).toBe(1);
      expect(missing.stderr).toContain('ssh default is required but was not given: pass --ssh default');
      const bad = petri('build', '-q', '--ssh', `default=${join(dir, 'Dockerfile')}`, dir);
      expect(bad.status).not.toBe(0);
      expect(bad.stderr).toContain("is not an agent's socket");
    } finally {
      agent.kill();
    }
  });

  it('plain progress: BuildKit-like step lines, CACHED and DONE; a failing RUN shows its command, exit code and last output', () => {
    const dir = join(work, 'failing');
    mkdirSync(dir);
    writeFileSync(
      join(dir, 'Dockerfile'),
      'FROM petri-fixture/busybox\nRUN echo first line && echo to stderr >&2 && exit 3\n',
    );
    const r = petri('build', '--progress', 'plain', dir);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^#1 \[stage-0 1\/2\] FROM petri-fixture\/busybox$/m);
    expect(r.stderr).toMatch(/^#2 \[stage-0 2\/2\] RUN echo first line && echo to stderr >&2 && exit 3$/m);
    expect(r.stderr).toMatch(/^#2 \d+\.\d{3} first line$/m);
    expect(r.stderr).toMatch(/^#2 \d+\.\d{3} to stderr$/m);
    expect(r.stderr).toMatch(
      /^petri: .*Dockerfile:2: RUN: process "\/bin\/sh -c echo first line && echo to stderr >&2 && exit 3" did not complete successfully: exit code: 3/m,
    );
    const cached = petri('build', '--progress', 'plain', ctx('heredocs'));
    expect(cached.status).toBe(0);
    expect(cached.stderr).toMatch(/^#\d+ CACHED$/m);
    expect(cached.stdout).toMatch(/^sha256:[0-9a-f]{64}\n$/);
  });

  it('progress through a non-blocking stderr stays whole and in order; a reader that goes away does not fail the build', async () => {
    const dir = join(work, 'chatty');
    mkdirSync(dir);
    writeFileSync(join(dir, 'Dockerfile'), 'FROM petri-fixture/busybox\nRUN seq 1 20000\n');
    const env = { ...process.env, PETRI_ROOT: root };
    const args = [petriBin, 'build', '--no-cache', '--progress', 'plain', dir];
    // petri's stderr: a pipe whose writing end is opened again with O_NONBLOCK (a new open file of it), read
    // only after 1.5 s: petri's writes (300 KB) meet EAGAIN. Its stdout goes to the wrapper's stderr.
    const wrapper = join(work, 'nonblocking.cjs');
    writeFileSync(
      wrapper,
      `const fs = require('node:fs');
      const fd = fs.openSync('/proc/self/fd/1', fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
      require('node:child_process').spawn(process.execPath, ${JSON.stringify(args)}, { stdio: ['ignore', 2, fd] })
        .on('exit', (code) => process.exit(code ?? 1));`,
    );
    const child = spawn('sh', ['-c', '"$0" "$1" | (sleep 1.5; cat)', process.execPath, wrapper], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
    });
    let stderr = '';
    let stdout = '';
    child.stdout.on('data', (chunk) => {
      stderr += chunk; // petri's stderr, through the pipe
    });
    child.stderr.on('data', (chunk) => {
      stdout += chunk; // petri's stdout
    });
    const code = await new Promise((resolve) => child.on('close', resolve));
    expect(code).toBe(0); // cat's: petri's own shows in its stdout (the ID) and last line
    expect(stdout).toMatch(/^sha256:[0-9a-f]{64}\n$/);
    const printed = stderr
      .split('\n')
      .filter((line) => line.startsWith('#2 ') && /^\d+$/.test(line.split(' ')[2] ?? ''))
      .map((line) => Number(line.split(' ')[2]));
    expect(printed).toEqual(Array.from({ length: 20000 }, (_, i) => i + 1));
    expect(stderr.trimEnd().split('\n').at(-1)).toMatch(/^image sha256:[0-9a-f]{64} built in /);

    // The reader of stderr gone before the first line (EPIPE): the build still succeeds.
    const orphan = spawn(process.execPath, [...args.slice(0, -1), '-t', 'ptest/chatty', dir], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...env },
    });
    orphan.stderr.destroy();
    const [id, status] = await Promise.all([
      new Promise<string>((resolve) => {
        let out = '';
        orphan.stdout.on('data', (chunk) => {
          out += chunk;
        });
        orphan.stdout.on('end', () => resolve(out));
      }),
      new Promise((resolve) => orphan.on('close', resolve)),
    ]);
    expect(status).toBe(0);
    expect(id).toMatch(/^sha256:[0-9a-f]{64}\n$/);
  });

  it('a build killed while a RUN step runs leaves its container to the next sweep, which removes it', async () => {
    const dir = join(work, 'killed');
    mkdirSync(dir);
    writeFileSync(join(dir, 'Dockerfile'), 'FROM petri-fixture/busybox\nRUN echo running && sleep 60\n');
    const child = spawn(process.execPath, [petriBin, 'build', '--no-cache', '--progress', 'json', dir], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, PETRI_ROOT: root },
    });
    const exited = new Promise((resolve) => child.once('close', resolve));
    await new Promise<void>((resolve, reject) => {
      let seen = '';
      child.stderr.on('data', (chunk) => {
        seen += chunk;
        if (/"type":"output".*running/.test(seen)) resolve();
      });
      child.once('exit', (code) => reject(new Error(`petri build exited ${code} before its RUN ran: ${seen}`)));
    });
    const containers = join(root, 'containers');
    const ids = readdirSync(containers).filter((name) => /^[0-9a-f]{12}$/.test(name));
    expect(ids).toHaveLength(1);
    child.kill('SIGKILL');
    await exited;
    // Its runner dies with it (PDEATHSIG); the directory and cgroups stay for a sweep, which removes them: a
    // build's container is no kept one (`docker run` without --rm), whose record a sweep would keep.
    const id = ids[0] as string;
    for (let i = 0; i < 100 && existsSync(join(containers, id)); i++) {
      await sweepContainers(root);
      if (existsSync(join(containers, id))) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(existsSync(join(containers, id))).toBe(false);
    for (const hier of ['', 'unified/', 'memory/', 'devices/'])
      expect(existsSync(`/sys/fs/cgroup/${hier}petri/${id}`)).toBe(false);
  });

  it('a RUN that renames a lower directory or chmods a lower file makes a whole layer, also where overlayfs would redirect or copy metadata only', (context) => {
    // overlayfs' defaults for redirects (Ubuntu's kernels turn them on) and metadata-only copy-ups, host-wide while
    // the build runs (petri's own mounts say redirect_dir=off,metacopy=off; other overlays on the host see them).
    const params = ['redirect_dir', 'metacopy'].map((name) => `/sys/module/overlay/parameters/${name}`);
    const before = new Map<string, string>();
    try {
      for (const param of params) before.set(param, readFileSync(param, 'utf8').trim());
      for (const param of params) writeFileSync(param, 'Y');
    } catch (error) {
      for (const [param, value] of before) writeFileSync(param, value);
      context.skip(`needs writable ${params.join(' and ')} (overlayfs' defaults): ${(error as Error).message}`);
    }
    const dir = join(work, 'redirect');
    mkdirSync(dir);
    writeFileSync(
      join(dir, 'Dockerfile'),
      'FROM petri-fixture/busybox\nRUN mkdir -p /a/b && echo moved > /a/b/f && echo kept > /g\nRUN mv /a /c && chmod 600 /g\n',
    );
    try {
      ok('build', '-q', '--no-cache', '-t', 'ptest/redirect', dir);
    } finally {
      for (const [param, value] of before) writeFileSync(param, value);
    }
    // The last layer itself (what a push or `docker load` gets), not the store's unpacked copy of it.
    const blob = (digest: string) => join(root, 'images', 'blobs', 'sha256', digest.slice('sha256:'.length));
    const manifest = JSON.parse(readFileSync(blob(inspect('ptest/redirect').ManifestDigest), 'utf8'));
    const layer = blob(manifest.layers.at(-1).digest);
    const listed = spawnSync('tar', ['-tf', layer], { encoding: 'utf8' }).stdout.split('\n');
    expect(listed).toEqual(expect.arrayContaining(['.wh.a', 'c/', 'c/b/', 'c/b/f', 'g']));
    expect(spawnSync('tar', ['-xOf', layer, 'c/b/f'], { encoding: 'utf8' }).stdout).toBe('moved\n');
    // A metadata-only copy of /g would be its size in zeros.
    expect(spawnSync('tar', ['-xOf', layer, 'g'], { encoding: 'utf8' }).stdout).toBe('kept\n');
  });

  it('bad input: one clear line each, nothing built', () => {
    const dir = join(work, 'bad');
    mkdirSync(dir);
    const expectError = (dockerfile: string, args: string[], pattern: RegExp) => {
      writeFileSync(join(dir, 'Dockerfile'), dockerfile);
      const r = petri('build', '-q', ...args, dir);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(pattern);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    };
    expectError('FROM ptest/not-there\n', [], /^petri: .*base image ptest\/not-there is not in petri's image store/);
    expectError(
      'FROM scratch AS one\n',
      ['--target', 'onw'],
      /target stage "onw" could not be found: did you mean "one"\?/,
    );
    expectError('FROM petri-fixture/busybox\nCOPY missing.txt /\n', [], /Dockerfile:2: COPY: .*missing\.txt/);
    expectError('FORM scratch\n', [], /did you mean FROM/i);
    expectError('FROM scratch\n', ['--progress', 'fancy'], /invalid --progress fancy/);
    expect(petri('build', join(dir, 'nope')).stderr).toMatch(/build context .* is not a directory/);
  });
});
