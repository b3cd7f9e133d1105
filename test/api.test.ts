import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GenericContainer, type StartedContainer, Wait } from '../src/index.js';
import { capabilityMask, resolveCapabilities } from '../src/runtime/capabilities.js';
import { detectCgroupMode } from '../src/runtime/cgroups/index.js';
import { findContainer, listContainers } from '../src/runtime/containers.js';
import { containerDir } from '../src/runtime/paths.js';
import { type ApiImages, apiImages } from './helpers/api-image.js';
import { describeKernel, missingForContainers } from './helpers/kernel.js';

const petri = join(import.meta.dirname, '..', 'dist', 'cli', 'main.js');

let images: ApiImages;
const container = (image = images.image) => new GenericContainer(image, { store: images.store, layers: images.layers });

async function sh(c: StartedContainer, script: string): Promise<string> {
  const result = await c.exec(['sh', '-c', script]);
  if (result.exitCode !== 0) throw new Error(`sh -c ${script} exited ${result.exitCode}: ${result.output}`);
  return result.stdout;
}

async function untar(stream: NodeJS.ReadableStream): Promise<{ name: string; type: string; body: string }[]> {
  const extract = tar.extract();
  const entries: { name: string; type: string; body: string }[] = [];
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, body, next) => {
      const chunks: Buffer[] = [];
      body.on('data', (chunk: Buffer) => chunks.push(chunk));
      body.on('end', () => {
        entries.push({ name: header.name, type: header.type, body: Buffer.concat(chunks).toString() });
        next();
      });
    });
    extract.on('finish', resolve);
    extract.on('error', reject);
  });
  stream.pipe(extract as unknown as NodeJS.WritableStream);
  await done;
  return entries;
}

function cgroupFile(id: string, controller: 'memory' | 'cpu'): string {
  const mode = detectCgroupMode();
  const file = controller === 'memory' ? 'memory.limit_in_bytes' : 'cpu.cfs_quota_us';
  if (mode === 'v2') {
    const v2 = readFileSync(`/sys/fs/cgroup/petri/${id}/${controller === 'memory' ? 'memory.max' : 'cpu.max'}`, 'utf8');
    return v2.trim().split(' ')[0] as string;
  }
  return readFileSync(`/sys/fs/cgroup/${controller}/petri/${id}/${file}`, 'utf8').trim();
}

const gone = (id: string) => !existsSync(containerDir(id));

beforeAll(async () => {
  if (!missingForContainers()) images = await apiImages();
});
afterAll(() => images?.remove());

describeKernel('GenericContainer: what each builder method changes in the container', () => {
  it('command, entrypoint, environment, working dir, user, hostname, name, labels', async () => {
    await using c = await container()
      .withEntrypoint(['sh'])
      .withCommand(['-c', 'echo via-entrypoint; exec sleep 1000'])
      .withEnvironment({ GREETING: 'hello world', EMPTY: '' })
      .withWorkingDir('/home/tester')
      .withUser('tester')
      .withHostname('api-host')
      .withName('ptest-api-named')
      .withLabels({ 'com.example.role': 'db', tier: 'test' })
      .withWaitStrategy(Wait.forLogMessage('via-entrypoint'))
      .start();
    expect(await sh(c, 'echo "$GREETING|$EMPTY|$FROM_IMAGE|$HOME"; pwd; id -u; id -G; hostname')).toBe(
      'hello world||1|/home/tester\n/home/tester\n1000\n1000 2000\napi-host\n',
    );
    expect(c.getName()).toBe('ptest-api-named');
    expect(c.getHostname()).toBe('api-host');
    expect(c.getLabels()).toEqual({ 'com.example.role': 'db', tier: 'test' });
    expect(findContainer('ptest-api-named').id).toBe(c.getId());
    if (existsSync(petri)) {
      const inspected = JSON.parse(
        spawnSync(process.execPath, [petri, 'inspect', c.getName()], { encoding: 'utf8' }).stdout,
      );
      expect(inspected[0].Config.Labels).toEqual({ 'com.example.role': 'db', tier: 'test' });
    }
    // exec options: another user (a name from the image), working dir, environment
    const asRoot = await c.exec('id -u', { user: 'root' });
    expect(asRoot).toEqual({ output: '0\n', stdout: '0\n', stderr: '', exitCode: 0 });
    const exec = await c.exec(['sh', '-c', 'pwd; echo $X; echo err >&2; exit 3'], {
      workingDir: '/tmp',
      env: { X: 'y' },
    });
    expect(exec).toEqual({ output: '/tmp\ny\nerr\n', stdout: '/tmp\ny\n', stderr: 'err\n', exitCode: 3 });
    const missing = await c.exec(['no-such-tool']);
    expect(missing.exitCode).toBe(127);
    expect(missing.stderr).toMatch(/no-such-tool.*not found/);
  });

  it('bind mounts (rw and ro), tmpfs, extra hosts', async () => {
    const host = join(images.dir, 'bind');
    mkdirSync(host);
    writeFileSync(join(host, 'from-host'), 'host data\n');
    await using c = await container()
      .withBindMounts([
        { source: host, target: '/mnt/rw' },
        { source: host, target: '/mnt/ro', mode: 'ro' },
      ])
      .withTmpFs({ '/scratch': 'size=1m,mode=0755' })
      .withExtraHosts([
        { host: 'db.local', ipAddress: '10.1.2.3' },
        { host: 'v6.local', ipAddress: 'fd00::1' },
      ])
      .start();
    expect(await sh(c, 'cat /mnt/rw/from-host; echo written > /mnt/rw/from-container')).toBe('host data\n');
    expect(readFileSync(join(host, 'from-container'), 'utf8')).toBe('written\n');
    const ro = await c.exec(['sh', '-c', 'echo x > /mnt/ro/nope']);
    expect(ro.exitCode).not.toBe(0);
    expect(ro.stderr).toMatch(/Read-only file system/);
    expect(await sh(c, 'grep " /scratch " /proc/mounts')).toMatch(
      /^tmpfs \/scratch tmpfs rw,nosuid,nodev,.*size=1024k,mode=755 /,
    );
    const hosts = await sh(c, 'cat /etc/hosts');
    expect(hosts).toContain('127.0.0.1\tlocalhost\n');
    expect(hosts).toContain('10.1.2.3\tdb.local\nfd00::1\tv6.local\n');
  });

  it('copies files, directories and contents in before the start, through the image’s symlinks', async () => {
    const src = join(images.dir, 'copy-src');
    mkdirSync(join(src, 'dir', 'sub'), { recursive: true });
    writeFileSync(join(src, 'file.txt'), 'a file\n', { mode: 0o755 });
    writeFileSync(join(src, 'dir', 'sub', 'deep.txt'), 'deep\n');
    // An image whose /linkdir is a symlink to /realdir (committed from a container).
    let linked: string;
    {
      await using base = await container().start();
      await sh(base, 'mkdir /realdir && echo old > /realdir/old && ln -s /realdir /linkdir');
      linked = await base.commit({ repo: 'ptest/api-links', tag: '1' });
    }
    await using c = await container(linked)
      .withCopyFilesToContainer([
        { source: join(src, 'file.txt'), target: '/opt/files/file.txt' },
        { source: join(src, 'file.txt'), target: '/opt/files/private.txt', mode: 0o600 },
      ])
      .withCopyDirectoriesToContainer([{ source: join(src, 'dir'), target: '/opt/dir' }])
      .withCopyContentToContainer([
        { content: 'from a string\n', target: '/etc/greeting', mode: 0o640 },
        { content: Buffer.from('from a buffer\n'), target: '/linkdir/through-link' },
        { content: Readable.from(['from ', 'a stream\n']), target: '/opt/stream.txt' },
      ])
      .start();
    expect(
      await sh(
        c,
        'cat /opt/files/file.txt /opt/dir/sub/deep.txt /etc/greeting /realdir/through-link /opt/stream.txt; stat -c "%a %u %g" /opt/files/file.txt /opt/files/private.txt /etc/greeting; readlink /linkdir; cat /realdir/old',
      ),
    ).toBe('a file\ndeep\nfrom a string\nfrom a buffer\nfrom a stream\n755 0 0\n600 0 0\n640 0 0\n/realdir\nold\n');
    // The image's /etc is still all there (the copy did not hide it).
    expect(await sh(c, 'grep -c tester /etc/passwd')).toBe('1\n');
  });

  it('resources quota (GiB and CPUs), ulimits, capabilities, privileged mode', async () => {
    await using limited = await container()
      .withResourcesQuota({ memory: 0.125, cpu: 0.5 })
      .withUlimits({ nofile: { soft: 512, hard: 1024 }, nproc: { soft: 200, hard: undefined } })
      .withAddedCapabilities('NET_ADMIN', 'sys_ptrace')
      .withDroppedCapabilities('CHOWN')
      .start();
    expect(cgroupFile(limited.getId(), 'memory')).toBe(String(128 * 1024 * 1024));
    expect(cgroupFile(limited.getId(), 'cpu')).toBe('50000');
    const limits = await sh(limited, 'grep -E "Max (open files|processes)" /proc/self/limits');
    expect(limits).toMatch(/Max processes\s+200\s+200\s/);
    expect(limits).toMatch(/Max open files\s+512\s+1024\s/);
    const caps = capabilityMask(resolveCapabilities(['NET_ADMIN', 'SYS_PTRACE'], ['CHOWN']));
    expect(await sh(limited, 'grep CapEff /proc/self/status')).toBe(`CapEff:\t${caps}\n`);
    expect(caps).not.toBe(capabilityMask(resolveCapabilities()));

    await using privileged = await container().withPrivilegedMode().start();
    const status = await sh(privileged, 'grep -E "CapEff|Seccomp:" /proc/self/status');
    expect(status).toContain(`CapEff:\t${capabilityMask(resolveCapabilities([], [], true))}\n`);
    expect(status).toContain('Seccomp:\t0\n');
  });

  it('checks every option when it is set: the option, the value and what was expected', () => {
    const c = container();
    const cases: [() => unknown, RegExp][] = [
      [
        () => c.withCommand('echo hi' as never),
        /^withCommand: invalid command "echo hi": expected an array of strings/,
      ],
      [
        () => c.withEnvironment({ PORT: 5432 as never }),
        /^withEnvironment: invalid value of PORT 5432: expected a string/,
      ],
      [() => c.withEnvironment({ 'A=B': 'x' }), /^withEnvironment: invalid variable name "A=B"/],
      [
        () => c.withWorkingDir('relative'),
        /^withWorkingDir: invalid working directory "relative": expected an absolute path/,
      ],
      [() => c.withUser('no body'), /^withUser: invalid user "no body": expected a user name or uid/],
      [() => c.withName('-bad'), /^withName: invalid name "-bad": expected letters, digits/],
      [
        () => c.withLabels({ 'org.petri.id': 'x' }),
        /^withLabels: invalid label name "org.petri.id": expected a name outside org.petri/,
      ],
      [() => c.withHostname('under_score'), /^withHostname: invalid hostname "under_score"/],
      [
        () => c.withBindMounts([{ source: '/no/such/dir', target: '/x' }]),
        /^withBindMounts: invalid host path "\/no\/such\/dir": expected an existing path/,
      ],
      [
        () => c.withBindMounts([{ source: '/tmp', target: '/x', mode: 'rx' as never }]),
        /^withBindMounts: invalid mode of \/x "rx": expected "rw" or "ro"/,
      ],
      [() => c.withTmpFs({ tmp: '' }), /^withTmpFs: invalid tmpfs path "tmp": expected an absolute path/],
      [
        () => c.withCopyFilesToContainer([{ source: '/tmp', target: '/x' }]),
        /^withCopyFilesToContainer: invalid source "\/tmp": expected a file/,
      ],
      [
        () => c.withCopyContentToContainer([{ content: 42 as never, target: '/x' }]),
        /^withCopyContentToContainer: invalid content for \/x 42: expected a string, a Buffer or a Readable/,
      ],
      [
        () => c.withCopyContentToContainer([{ content: 'x', target: '/x', mode: 0o10000 }]),
        /^withCopyContentToContainer: invalid mode 4096: expected permission bits/,
      ],
      [
        () => c.withResourcesQuota({ memory: 0.001 }),
        /^withResourcesQuota: invalid memory 0.001: expected a number of gigabytes/,
      ],
      [
        () => c.withResourcesQuota({ cpu: -1 }),
        /^withResourcesQuota: invalid cpu -1: expected a positive number of CPUs/,
      ],
      [
        () => c.withUlimits({ nofile: { soft: 1, hard: 1e12 } }),
        /^withUlimits: cannot raise ulimit nofile to 1000000000000: petri only lowers limits/,
      ],
      [
        () => c.withUlimits({ nofiles: { soft: 1, hard: 1 } }),
        /^withUlimits: unknown ulimit "nofiles": expected one of/,
      ],
      [
        () => c.withUlimits({ nofile: { soft: 10, hard: 5 } }),
        /^withUlimits: invalid ulimit nofile=10:5: the soft limit is above the hard one/,
      ],
      [() => c.withAddedCapabilities('NET_WIZARD'), /^withAddedCapabilities: unknown capability "NET_WIZARD"/],
      [
        () => c.withExtraHosts([{ host: 'db', ipAddress: '300.1.1.1' }]),
        /^withExtraHosts: invalid ipAddress of db "300.1.1.1": expected an IPv4 or IPv6 address/,
      ],
      [
        () => c.withStartupTimeout(-5),
        /^withStartupTimeout: invalid timeout -5: expected a positive number of milliseconds/,
      ],
      [
        () => c.withWaitStrategy({} as never),
        /^withWaitStrategy: invalid wait strategy \{\}: expected one of Wait.for/,
      ],
      [
        () => c.withHealthCheck({ test: ['CMD'] as never }),
        /^withHealthCheck: invalid test \["CMD"\]: expected \["CMD-SHELL", "command"\]/,
      ],
      [
        () => c.withHealthCheck({ test: ['CMD', 'true'], retries: 1.5 }),
        /^withHealthCheck: invalid retries 1.5: expected a non-negative integer/,
      ],
      [
        () => c.withLogConsumer('console' as never),
        /^withLogConsumer: invalid consumer "console": expected a function/,
      ],
      [() => c.withAutoRemove('no' as never), /^withAutoRemove: invalid value "no": expected true or false/],
      [() => new GenericContainer(''), /^GenericContainer: invalid image "": expected an image reference/],
      [() => Wait.forLogMessage('x', 0), /^Wait.forLogMessage: invalid times 0: expected an integer/],
      [() => Wait.forListeningPorts(70000), /^Wait.forListeningPorts: invalid port 70000: expected a TCP port number/],
      [() => Wait.forAll([]), /^Wait.forAll: invalid strategies \[\]: expected a non-empty array/],
    ];
    for (const [call, message] of cases) expect(call).toThrow(message);
  });
});

describeKernel('GenericContainer: wait strategies', () => {
  /** This process's containers (other petri processes may run tests meanwhile). */
  const ids = () =>
    new Set(
      listContainers()
        .filter((c) => c.owner.pid === process.pid)
        .map((c) => c.id),
    );

  /** Starting must fail with these message parts, and leave no container behind. */
  async function failsWith(start: () => Promise<StartedContainer>, ...parts: (string | RegExp)[]): Promise<string> {
    const before = ids();
    let message = '';
    try {
      const started = await start();
      await started.stop({ remove: true });
    } catch (error) {
      message = (error as Error).message;
    }
    for (const part of parts) {
      if (typeof part === 'string') expect(message).toContain(part);
      else expect(message).toMatch(part);
    }
    expect([...ids()].filter((id) => !before.has(id))).toEqual([]);
    return message;
  }

  it('forLogMessage: a text a number of times, a regex; a timeout names what it saw and the last lines', async () => {
    const started = performance.now();
    await using c = await container()
      .withCommand(['sh', '-c', 'echo one; echo "ready 1" >&2; sleep 0.2; echo "ready 2"; exec sleep 1000'])
      .withWaitStrategy(Wait.forLogMessage('ready', 2))
      .start();
    expect(performance.now() - started).toBeGreaterThan(150);
    const logs = await c.logs();
    const text = await new Promise<string>((resolve) => {
      let seen = '';
      logs.on('data', (chunk: string) => {
        seen += chunk;
        if (seen.includes('ready 2')) resolve(seen);
      });
    });
    expect(text.split('\n').sort()).toEqual(['', 'one', 'ready 1', 'ready 2']); // two pipes: either order
    const tail = await c.logs({ tail: 1 });
    expect(await new Promise((resolve) => tail.once('data', resolve))).toBe('ready 2\n');
    tail.destroy();
    logs.destroy();

    await using r = await container()
      .withCommand(['sh', '-c', 'echo "listening on port 5432"; exec sleep 1000'])
      .withWaitStrategy(Wait.forLogMessage(/port \d+$/))
      .start();
    expect(r.getId()).toMatch(/^[0-9a-f]{12}$/);

    const message = await failsWith(
      () =>
        container()
          .withCommand([
            'sh',
            '-c',
            'for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22; do echo line $i; done; exec sleep 1000',
          ])
          .withWaitStrategy(Wait.forLogMessage('never', 2))
          .withStartupTimeout(1000)
          .start(),
      /^container [0-9a-f]{12} \(image ptest\/api:1\) did not start: waiting for log message "never" 2 times timed out after [\d.]+m?s \(saw it 0 of 2 times\); the container is still running; its last log lines:\n {2}line 3\n/,
    );
    expect(message.endsWith('  line 21\n  line 22')).toBe(true);
  });

  it('a container that dies while starting: its exit status and last lines', async () => {
    await failsWith(
      () =>
        container()
          .withCommand(['sh', '-c', 'echo going down >&2; exit 3'])
          .withWaitStrategy(Wait.forLogMessage('ready'))
          .start(),
      'waiting for log message "ready" stopped after',
      "as the container's command ended (saw it 0 of 1 time); the container exited with code 3; its last log lines:\n  going down",
    );
    await failsWith(
      () => container().withCommand(['no-such-program']).start(),
      /cannot start container [0-9a-f]{12}: exec "no-such-program": executable file not found/,
    );
  });

  it('forSuccessfulCommand', async () => {
    await using c = await container()
      .withCommand(['sh', '-c', 'sleep 0.3; touch /tmp/ready; exec sleep 1000'])
      .withWaitStrategy(Wait.forSuccessfulCommand('test -f /tmp/ready'))
      .start();
    expect(await sh(c, 'ls /tmp/ready')).toBe('/tmp/ready\n');
    await failsWith(
      () =>
        container()
          .withWaitStrategy(Wait.forSuccessfulCommand('echo not yet; exit 2').withStartupTimeout(1000))
          .start(),
      /waiting for command "echo not yet; exit 2" to succeed timed out after [\d.]+m?s \(\d+ attempts?, the last exited with 2: not yet\); the container is still running; it wrote nothing/,
    );
  });

  it('forHealthCheck: withHealthCheck, the image’s HEALTHCHECK, unhealthy, none', async () => {
    await using own = await container()
      .withCommand(['sh', '-c', 'sleep 0.2; touch /tmp/ok; exec sleep 1000'])
      .withHealthCheck({ test: ['CMD-SHELL', 'test -f /tmp/ok'], interval: 50, retries: 100 })
      .withWaitStrategy(Wait.forHealthCheck())
      .start();
    expect(own.getId()).toBeTruthy();
    await using fromImage = await container(images.healthImage)
      .withCommand(['sh', '-c', 'touch /tmp/healthy; exec sleep 1000'])
      .withWaitStrategy(Wait.forHealthCheck())
      .start();
    expect(fromImage.getId()).toBeTruthy();
    await failsWith(
      () =>
        container()
          .withHealthCheck({ test: ['CMD', 'sh', '-c', 'echo sick; exit 1'], interval: 30, retries: 3 })
          .withWaitStrategy(Wait.forHealthCheck())
          .start(),
      /waiting for health check to report healthy failed after \d+ms: it reported unhealthy \(status unhealthy, 3 failures in a row, the last check exited 1: sick\); the container is still running/,
    );
    await failsWith(
      () => container().withWaitStrategy(Wait.forHealthCheck()).start(),
      'failed after',
      'the container has no health check: the image has no HEALTHCHECK and withHealthCheck was not used',
    );
    await failsWith(
      () => container(images.healthImage).withWaitStrategy(Wait.forHealthCheck()).start(),
      /image ptest\/api-health:1\) did not start: waiting for health check to report healthy failed after \d+ms: it reported unhealthy \(status unhealthy, 2 failures in a row, the last check exited 1\)/,
    );
  });

  it('forOneShotStartup', async () => {
    const done = await container()
      .withCommand(['sh', '-c', 'echo job done'])
      .withWaitStrategy(Wait.forOneShotStartup())
      .start();
    const out = await untar(await done.copyArchiveFromContainer('/etc/passwd'));
    expect(out.map((e) => e.name)).toEqual(['passwd']);
    await (await done.stop()).remove();
    expect(gone(done.getId())).toBe(true);
    await failsWith(
      () => container().withCommand(['sh', '-c', 'exit 4']).withWaitStrategy(Wait.forOneShotStartup()).start(),
      /waiting for the command to exit with 0 failed after \d+ms: it exited with code 4; the container exited with code 4/,
    );
  });

  it('forListeningPorts: given ports, any port; the default strategy waits for nothing without exposed ports', async () => {
    await using c = await container()
      .withCommand(['sh', '-c', 'sleep 0.2; exec httpd -f -p 8080'])
      .withWaitStrategy(Wait.forListeningPorts(8080))
      .start();
    expect(await sh(c, 'wget -O /dev/null http://127.0.0.1:8080/ 2>&1 || true')).toMatch(/404 Not Found/);
    await using any = await container()
      .withCommand(['httpd', '-f', '-p', '9090'])
      .withWaitStrategy(Wait.forListeningPorts())
      .start();
    expect(any.getId()).toBeTruthy();
    await failsWith(
      () =>
        container()
          .withCommand(['httpd', '-f', '-p', '8080'])
          .withWaitStrategy(Wait.forListeningPorts(8080, 9999))
          .withStartupTimeout(1500)
          .start(),
      /waiting for ports 8080, 9999 to listen timed out after [\d.]+m?s \(listening: 8080\)/,
    );
    const started = performance.now();
    await using plain = await container().start();
    expect(performance.now() - started).toBeLessThan(2000);
    expect(plain.getHost()).toBe('127.0.0.1');
  });

  it('forAll: every strategy; the one that fails is named', async () => {
    await using c = await container()
      .withCommand(['sh', '-c', 'echo booted; touch /tmp/x; exec httpd -f -p 8080'])
      .withWaitStrategy(
        Wait.forAll([
          Wait.forLogMessage('booted'),
          Wait.forSuccessfulCommand('test -f /tmp/x'),
          Wait.forListeningPorts(8080),
        ]),
      )
      .start();
    expect(c.getId()).toBeTruthy();
    await failsWith(
      () =>
        container()
          .withCommand(['sh', '-c', 'echo booted; exec sleep 1000'])
          .withWaitStrategy(Wait.forAll([Wait.forLogMessage('booted'), Wait.forListeningPorts(8080)]))
          .withStartupTimeout(1000)
          .start(),
      /waiting for all of \[log message "booted"; ports 8080 to listen\] timed out after [\d.]+m?s \(still waiting for ports 8080 to listen \(nothing listens yet\)\)/,
    );
    await failsWith(
      () =>
        container()
          .withWaitStrategy(Wait.forAll([Wait.forHealthCheck(), Wait.forLogMessage('x')]))
          .start(),
      'failed after',
      ': health check to report healthy: the container has no health check',
    );
  });

  it('a log consumer gets the output as it comes', async () => {
    let seen = '';
    let resolveSeen!: () => void;
    const complete = new Promise<void>((resolve) => {
      resolveSeen = resolve;
    });
    await using c = await container()
      .withCommand(['sh', '-c', 'echo out; echo err >&2; exec sleep 1000'])
      .withLogConsumer((stream) => {
        stream.on('data', (chunk: string) => {
          seen += chunk;
          if (seen.includes('out') && seen.includes('err')) resolveSeen();
        });
      })
      .start();
    await complete;
    expect(seen.split('\n').sort()).toEqual(['', 'err', 'out']);
    expect(c.getId()).toBeTruthy();
  });
});

describeKernel('StartedContainer: exec, copy, commit, stop, restart, dispose', () => {
  it('copies into a running container (files, directories, contents, a tar) and out of it', async () => {
    await using c = await container().start();
    const src = join(images.dir, 'live-src');
    mkdirSync(join(src, 'tree'), { recursive: true });
    writeFileSync(join(src, 'one.txt'), 'one\n');
    writeFileSync(join(src, 'tree', 'two.txt'), 'two\n');
    await c.copyFilesToContainer([{ source: join(src, 'one.txt'), target: '/srv/one.txt' }]);
    await c.copyDirectoriesToContainer([{ source: join(src, 'tree'), target: '/srv/tree' }]);
    await c.copyContentToContainer([{ content: 'three\n', target: '/srv/three.txt', mode: 0o600 }]);
    const pack = tar.pack();
    pack.entry({ name: 'archived/four.txt' }, 'four\n');
    pack.entry({ name: 'archived/link', type: 'symlink', linkname: 'four.txt' });
    pack.finalize();
    await c.copyArchiveToContainer(pack as unknown as Readable, '/srv');
    expect(
      await sh(c, 'cat /srv/one.txt /srv/tree/two.txt /srv/three.txt /srv/archived/link; stat -c %a /srv/three.txt'),
    ).toBe('one\ntwo\nthree\nfour\n600\n');

    // A symlink the container made is followed inside the container, never on the host.
    await sh(c, 'ln -s /etc /tmp/etc-link; ln -s ../../../../../../etc /tmp/up-link');
    await c.copyContentToContainer([
      { content: 'inside\n', target: '/tmp/etc-link/ptest-api-escape' },
      { content: 'inside too\n', target: '/tmp/up-link/ptest-api-escape2' },
    ]);
    expect(existsSync('/etc/ptest-api-escape')).toBe(false);
    expect(existsSync('/etc/ptest-api-escape2')).toBe(false);
    expect(await sh(c, 'cat /etc/ptest-api-escape /etc/ptest-api-escape2')).toBe('inside\ninside too\n');

    const entries = await untar(await c.copyArchiveFromContainer('/srv'));
    expect(entries.map((e) => `${e.type} ${e.name}`)).toEqual([
      'directory srv/',
      'directory srv/archived/',
      'file srv/archived/four.txt',
      'symlink srv/archived/link',
      'file srv/one.txt',
      'file srv/three.txt',
      'directory srv/tree/',
      'file srv/tree/two.txt',
    ]);
    expect(entries.find((e) => e.name === 'srv/tree/two.txt')?.body).toBe('two\n');
    // The whole root: what /proc and /sys hold is no file to copy.
    const root = (await untar(await c.copyArchiveFromContainer('/'))).map((e) => e.name);
    expect(root).toEqual(expect.arrayContaining(['bin/', 'bin/sh', 'etc/passwd', 'proc/', 'sys/', 'srv/tree/two.txt']));
    expect(root.filter((name) => /^(proc|sys)\/./.test(name))).toEqual([]);
    await expect(c.copyArchiveFromContainer('/no/such')).rejects.toThrow(
      `cannot copy /no/such from container ${c.getName()}: no such file or directory: /no/such`,
    );
  });

  it('commits a running container; the committed image runs with the change, the labels and the history', async () => {
    await using c = await container()
      .withLabels({ 'com.example.kind': 'committed' })
      .withEnvironment({ FROM_RUN: 'yes' })
      .start();
    await sh(c, 'echo committed > /committed.txt; rm /etc/group');
    const id = await c.commit({
      repo: 'ptest/api-committed',
      tag: '1',
      message: 'from the API',
      author: 'api test',
      changes: ['ENV COMMITTED=yes', 'WORKDIR /tmp'],
    });
    expect(id).toMatch(/^sha256:[0-9a-f]{64}$/);
    const image = await images.store.resolve('ptest/api-committed:1');
    expect(image.id).toBe(id);
    expect(image.config.config.Labels).toEqual({ 'com.example.kind': 'committed' });
    expect(image.config.history?.at(-1)).toMatchObject({ comment: 'from the API', author: 'api test' });
    await using next = await container('ptest/api-committed:1').start();
    expect(
      await sh(next, 'cat /committed.txt; echo $COMMITTED $FROM_RUN $FROM_IMAGE; pwd; ls /etc/group 2>&1 || true'),
    ).toBe('committed\nyes yes 1\n/tmp\nls: /etc/group: No such file or directory\n');
  });

  it('stop: the stopped container can still be copied from and committed, then removed', async () => {
    const c = await container().start();
    await sh(
      c,
      'mkdir -p /data/sub && echo kept > /data/sub/file && rm -rf /home && mkdir /home && echo new > /home/only',
    );
    const stopped = await c.stop();
    expect(await c.stop()).toBe(stopped);
    expect(existsSync(containerDir(c.getId()))).toBe(true);
    await expect(c.exec(['true'])).rejects.toThrow(/it is exited/);
    const data = await untar(await stopped.copyArchiveFromContainer('/data/sub/file'));
    expect(data).toEqual([{ name: 'file', type: 'file', body: 'kept\n' }]);
    const home = await untar(await stopped.copyArchiveFromContainer('/home'));
    expect(home.map((e) => e.name)).toEqual(['home/', 'home/only']);
    const id = await stopped.commit({ repo: 'ptest/api-stopped', tag: '1' });
    await using next = await container(id).start();
    expect(await sh(next, 'cat /data/sub/file; ls /home')).toBe('kept\nonly\n');
    await stopped.remove();
    expect(gone(c.getId())).toBe(true);
    await expect(stopped.copyArchiveFromContainer('/data')).rejects.toThrow(/it was removed/);
  });

  it('copies out of a container that ended on its own, reading its layers', async () => {
    const c = await container()
      .withCommand([
        'sh',
        '-c',
        'rm -rf /home && mkdir /home && echo new > /home/only && mkdir /out && echo out > /out/f',
      ])
      .withWaitStrategy(Wait.forOneShotStartup())
      .start();
    const home = await untar(await c.copyArchiveFromContainer('/home'));
    expect(home.map((e) => e.name)).toEqual(['home/', 'home/only']);
    const out = await untar(await c.copyArchiveFromContainer('/out/f'));
    expect(out).toEqual([{ name: 'f', type: 'file', body: 'out\n' }]);
    await c.remove();
    expect(gone(c.getId())).toBe(true);
  });

  it('restart: the same container (id, writable layer, logs) runs its command again and is waited for', async () => {
    await using c = await container()
      .withCommand(['sh', '-c', 'echo start >> /tmp/starts; echo up; exec sleep 1000'])
      .withWaitStrategy(Wait.forLogMessage('up'))
      .start();
    const id = c.getId();
    await c.restart();
    expect(c.getId()).toBe(id);
    expect(await sh(c, 'cat /tmp/starts')).toBe('start\nstart\n');
    const logs = await c.logs();
    const text = await new Promise<string>((resolve) => logs.once('data', resolve));
    expect(text).toBe('up\nup\n');
    logs.destroy();
    await c.restart({ timeout: 100 });
    expect(await sh(c, 'wc -l < /tmp/starts')).toBe('3\n');
  });

  it('await using: the container is removed at the end of the block, also on an exception', async () => {
    let id = '';
    {
      await using c = await container().start();
      id = c.getId();
      expect(gone(id)).toBe(false);
    }
    expect(gone(id)).toBe(true);
    const thrower = async () => {
      await using c = await container().start();
      id = c.getId();
      throw new Error('test failure');
    };
    await expect(thrower()).rejects.toThrow('test failure');
    expect(gone(id)).toBe(true);
  });

  it('getIpAddress: a container on no network says so', async () => {
    await using c = await container().start();
    expect(c.getNetworkNames()).toEqual([]);
    expect(() => c.getIpAddress('bridge')).toThrow(`container ${c.getName()} is not on network "bridge"`);
  });
});

describeKernel('GenericContainer.fromDockerfile', () => {
  it('builds with build args, a target and no cache, and starts the image; the image stays', async () => {
    const context = join(images.dir, 'context');
    mkdirSync(context);
    writeFileSync(join(context, 'greeting.txt'), 'hi\n');
    writeFileSync(
      join(context, 'Dockerfile'),
      [
        `FROM ${images.image} AS base`,
        'ARG WHO=nobody',
        'COPY greeting.txt /greeting.txt',
        'RUN echo "built for $WHO" > /built.txt',
        'FROM base AS final',
        'RUN echo final > /final.txt',
      ].join('\n'),
    );
    const base = await GenericContainer.fromDockerfile(context)
      .withImageStore(images.store, images.layers)
      .withBuildArgs({ WHO: 'the api test' })
      .withTarget('base')
      .withCache(false)
      .build('ptest/api-built:1');
    await using c = await base.start();
    expect(await sh(c, 'cat /greeting.txt /built.txt; ls /final.txt 2>&1 || true')).toBe(
      'hi\nbuilt for the api test\nls: /final.txt: No such file or directory\n',
    );
    expect((await images.store.resolve('ptest/api-built:1')).tags).toEqual(['ptest/api-built:1']);

    const final = await GenericContainer.fromDockerfile(context, 'Dockerfile')
      .withImageStore(images.store, images.layers)
      .withBuildArgs({ WHO: 'the api test' })
      .build();
    await using f = await final.start();
    expect(await sh(f, 'cat /built.txt /final.txt')).toBe('built for the api test\nfinal\n');
  });

  it('checks the context, the Dockerfile and the options', () => {
    expect(() => GenericContainer.fromDockerfile('/no/such/dir')).toThrow(
      'fromDockerfile: invalid build context "/no/such/dir": expected an existing directory',
    );
    expect(() => GenericContainer.fromDockerfile(images.dir, 'Nope.dockerfile')).toThrow(
      `fromDockerfile: invalid Dockerfile "${images.dir}/Nope.dockerfile": expected an existing file`,
    );
    mkdirSync(join(images.dir, 'ctx2'));
    writeFileSync(join(images.dir, 'ctx2', 'Dockerfile'), 'FROM scratch\n');
    const builder = GenericContainer.fromDockerfile(join(images.dir, 'ctx2'));
    expect(() => builder.withBuildArgs({ N: 1 as never })).toThrow(
      'withBuildArgs: invalid value of N 1: expected a string',
    );
    expect(() => builder.withTarget('no stage')).toThrow('withTarget: invalid stage "no stage"');
    expect(() => builder.withCache('yes' as never)).toThrow('withCache: invalid value "yes": expected true or false');
  });
});

describe('GenericContainer: nothing runs without a start', () => {
  it('builds without touching the machine', () => {
    expect(() => new GenericContainer('anything:1').withCommand(['true']).withName('x1')).not.toThrow();
  });
});
