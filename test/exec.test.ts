import { spawn } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { Container } from '../src/runtime/index.js';
import { runnerPath } from '../src/runtime/runner-binary.js';
import { describeKernel } from './helpers/kernel.js';
import type { ProbeReport } from './helpers/probe.js';
import { busyboxRootfs } from './helpers/rootfs.js';

async function collect(stream: NodeJS.ReadableStream | null): Promise<string> {
  let text = '';
  for await (const chunk of stream ?? []) text += chunk;
  return text;
}

describeKernel('exec into a running container', () => {
  // Forked by the container's runner (output piped, no stdin), or by a `petri-runner exec` of its own (stdin).
  it.each([
    ['forked by the container runner', {}],
    ['through petri-runner exec', { stdin: 'pipe' as const }],
  ])('joins the same namespaces and cgroups, under the same security profile (%s)', async (_, stdio) => {
    const container = Container.create({ rootfs: await busyboxRootfs(), command: ['/probe', 'sleep', '30'] });
    try {
      await container.start();
      const proc = container.exec(['/probe', 'report'], { env: { FROM_EXEC: '1' }, workdir: '/tmp', ...stdio });
      proc.stdin?.end();
      const [out, result] = await Promise.all([collect(proc.stdout), proc.result]);
      expect(result.exitCode, out).toBe(0);
      const report = JSON.parse(out) as ProbeReport;
      for (const ns of ['mnt', 'pid', 'net', 'uts', 'ipc', 'cgroup']) {
        expect(report.nsInodes[ns], ns).toBe(readlinkSync(`/proc/${container.pid}/ns/${ns}`));
      }
      expect(report.status.CapEff).toBe('00000000a80425fb');
      expect(report.status.Seccomp).toBe('2');
      expect(report.env).toContain('FROM_EXEC=1');
      expect(report.cwd).toBe('/tmp');
      expect(report.pids).toContain(1);
      expect(report.cgroup.every((line) => line.endsWith(':/'))).toBe(true);
    } finally {
      await container.remove();
    }
  });

  it('joins every cgroup of a container with limits, v1 hierarchies included, and is counted there', async () => {
    const container = Container.create({
      rootfs: await busyboxRootfs(),
      command: ['/probe', 'sleep', '30'],
      memory: 64 * 1024 * 1024,
      pids: 64,
      cpus: 1,
    });
    try {
      await container.start();
      const proc = container.exec(['/probe', 'report']);
      const [out, result] = await Promise.all([collect(proc.stdout), proc.result]);
      expect(result.exitCode).toBe(0);
      const report = JSON.parse(out) as ProbeReport;
      // Each line is relative to the cgroup namespace's root, the container's cgroup: `:/` in every hierarchy.
      expect(report.cgroup.length).toBeGreaterThan(0);
      expect(report.cgroup.filter((line) => !line.endsWith(':/'))).toEqual([]);
      // From the host: every cgroup directory of the container holds init, the command and the exec'd `sleep`.
      const sleeper = container.exec(['sh', '-c', 'echo ready; exec sleep 30']);
      const ended = sleeper.result.catch(() => undefined);
      await new Promise<void>((resolve, reject) => {
        sleeper.stdout?.once('data', () => resolve());
        ended.then(() => reject(new Error('the exec ended before it said ready')));
      });
      expect(container.cgroupDirs.length).toBeGreaterThan(0);
      for (const dir of container.cgroupDirs) {
        const members = readFileSync(join(dir, 'cgroup.procs'), 'utf8').trim().split('\n');
        expect(members.length, dir).toBeGreaterThanOrEqual(3);
      }
      container.kill();
      await ended;
    } finally {
      await container.remove();
    }
  });

  it('through the runner (no spawn): many at once, large output intact, stdout and stderr apart, ended with the container', async () => {
    const container = Container.create({ rootfs: await busyboxRootfs(), command: ['/probe', 'sleep', '30'] });
    try {
      const starting = container.start();
      // Not before the runner says the command started: the container's root is not in place until then.
      expect(() => container.exec(['true'])).toThrow(/it is still starting/);
      await starting;
      const runs = Array.from({ length: 12 }, (_, i) => {
        const proc = container.exec(['sh', '-c', `echo out ${i}; echo err ${i} >&2; exit ${i}`]);
        return Promise.all([collect(proc.stdout), collect(proc.stderr), proc.result]);
      });
      const results = await Promise.all(runs);
      results.forEach(([out, err, result], i) => {
        expect(out).toBe(`out ${i}\n`);
        expect(err).toBe(`err ${i}\n`);
        expect(result.exitCode).toBe(i);
      });
      // 3 MiB through the control socket, byte for byte.
      const big = container.exec(['sh', '-c', 'head -c 3145728 /dev/zero | tr "\\0" "x"; echo end']);
      const [bigOut] = await Promise.all([collect(big.stdout), big.result]);
      expect(bigOut.length).toBe(3145728 + 4);
      expect(bigOut.endsWith('xend\n')).toBe(true);
      // Its signals are not blocked (the runner's own supervisor blocks them for its signalfd).
      const status = container.exec(['sh', '-c', 'grep -E "^Sig(Blk|Ign)" /proc/self/status']);
      const [statusOut] = await Promise.all([collect(status.stdout), status.result]);
      expect(statusOut).toMatch(/^SigBlk:\s+0+$/m);
      // A process too big for a control line (a 100 KB env value) is spawned instead, and works the same.
      const huge = container.exec(['sh', '-c', 'printf %s "$HUGE" | wc -c'], { env: { HUGE: 'y'.repeat(100_000) } });
      const [hugeOut] = await Promise.all([collect(huge.stdout), huge.result]);
      expect(hugeOut.trim()).toBe('100000');
      // A process still running when the container is killed ends with it.
      const long = container.exec(['sleep', '30']);
      await new Promise((resolve) => setTimeout(resolve, 100));
      container.kill();
      const ended = await long.result.then(
        (r) => r.exitCode,
        () => 'rejected',
      );
      expect(ended === 'rejected' || ended === 137).toBe(true);
    } finally {
      await container.remove();
    }
  });

  it('runs as another user, and reports exit codes', async () => {
    const container = Container.create({ rootfs: await busyboxRootfs(), command: ['/probe', 'sleep', '30'] });
    try {
      await container.start();
      const id = container.exec(['id', '-u'], { user: { uid: 1000, gid: 1000 } });
      expect((await collect(id.stdout)).trim()).toBe('1000');
      expect((await container.exec(['sh', '-c', 'exit 7']).result).exitCode).toBe(7);
      await expect(container.exec(['no-such-tool']).result).rejects.toThrow(/not found/);
    } finally {
      await container.remove();
    }
  });

  it('checks the state: no exec into an exited or removed container, with the state in the error', async () => {
    const container = Container.create({ rootfs: await busyboxRootfs(), command: ['true'] });
    expect(() => container.exec(['true'])).toThrow(`cannot exec in container ${container.id}: it is created`);
    await container.start();
    await container.wait();
    expect(() => container.exec(['true'])).toThrow(`cannot exec in container ${container.id}: it is exited`);
    await container.remove();
    expect(() => container.exec(['true'])).toThrow(`cannot exec in container ${container.id}: it is removed`);
    await expect(container.start()).rejects.toThrow('it is removed');
  });

  it('stops the command with SIGTERM under init, which PID 1 itself would ignore', async () => {
    const rootfs = await busyboxRootfs();
    const withInit = Container.create({ rootfs, command: ['sleep', '30'] });
    const asPid1 = Container.create({ rootfs, command: ['sleep', '30'], init: false });
    try {
      await Promise.all([withInit.start(), asPid1.start()]);
      withInit.kill('SIGTERM');
      asPid1.kill('SIGTERM');
      const result = await withInit.wait();
      expect(result).toMatchObject({ exitCode: 143, signal: 15 });
      expect(result.durationMs).toBeLessThan(5000);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(asPid1.state).toBe('running');
      asPid1.kill();
      expect(await asPid1.wait()).toMatchObject({ exitCode: 137, signal: 9 });
    } finally {
      await withInit.remove();
      await asPid1.remove();
    }
  });
});

describeKernel('petri-runner standby', () => {
  const standby = () =>
    spawn(runnerPath(), ['standby', '--control-fd', '3'], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
  const exited = (child: ReturnType<typeof standby>) =>
    new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));

  it('waits for its command line on the control fd, then runs it as if started with it', async () => {
    const child = standby();
    const ended = exited(child);
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(child.exitCode).toBeNull(); // still waiting
    const control = child.stdio[3] as Socket;
    let events = '';
    control.on('data', (chunk) => {
      events += chunk;
    });
    // A run of a bundle that does not exist: the runner says so on the control fd, as `run` would.
    control.write(`${['run', '--control-fd', '3', '/nonexistent/ptest-bundle'].join('\0')}\0\0`);
    expect(await ended).toBe(125);
    expect(events).toContain('"event":"error"');
    expect(events).toContain('/nonexistent/ptest-bundle/config.json');
  });

  it('exits 125 when the harness goes away before sending one', async () => {
    const child = standby();
    const ended = exited(child);
    await new Promise((resolve) => setTimeout(resolve, 100));
    (child.stdio[3] as Socket).end();
    expect(await ended).toBe(125);
  });
});
