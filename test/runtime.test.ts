import { expect, it } from 'vitest';
import { describeKernel } from './helpers/kernel.js';
import { probeReport, runProbe } from './helpers/probe.js';

describeKernel('a container on the real kernel', () => {
  it('is isolated like a Docker container, with petri init as PID 1', async () => {
    const report = await probeReport({ hostname: 'probe-box' });
    expect(report.pid1Comm).toBe('petri-init');
    expect(report.pid).toBe(2);
    expect(report.ppid).toBe(1);
    expect(report.pids.sort()).toEqual([1, 2]);
    expect(report.hostname).toBe('probe-box');
    expect(report.interfaces).toEqual([{ name: 'lo', up: true }]);
    expect(report.status.CapEff).toBe('00000000a80425fb');
    expect(report.status.CapBnd).toBe('00000000a80425fb');
    expect(report.status.CapPrm).toBe('00000000a80425fb');
    expect(report.status.CapInh).toBe('0000000000000000');
    expect(report.status.NoNewPrivs).toBe('0');
    expect(report.status.Seccomp).toBe('2');
    expect(report.uid).toBe(0);
    expect(report.cwd).toBe('/');
    expect(report.cgroup.every((line) => line.endsWith(':/'))).toBe(true);
  });

  it('has the mounts Docker gives, /sys read-only', async () => {
    const report = await probeReport();
    const byTarget = new Map(report.mounts.map((m) => [m.target, m]));
    expect(byTarget.get('/')?.fstype).toBe('overlay');
    expect(byTarget.get('/proc')?.fstype).toBe('proc');
    expect(byTarget.get('/dev')?.fstype).toBe('tmpfs');
    expect(byTarget.get('/dev/pts')?.fstype).toBe('devpts');
    expect(byTarget.get('/dev/shm')?.fstype).toBe('tmpfs');
    expect(byTarget.get('/dev/mqueue')?.fstype).toBe('mqueue');
    expect(byTarget.get('/sys')?.fstype).toBe('sysfs');
    expect(byTarget.get('/sys')?.options.split(',')).toContain('ro');
    expect(byTarget.get('/proc/sys')?.options.split(',')).toContain('ro');
    expect(report.attempts.sysWrite).toMatch(/^(EROFS|EACCES)$/);
    expect(report.attempts.procSysWrite).toMatch(/^(EROFS|EACCES)$/);
  });

  it("masks Docker's masked paths", async () => {
    const report = await probeReport();
    for (const path of ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/sys/firmware']) {
      expect(report.masked[path], path).toMatch(/^(empty|absent)$/);
    }
    expect(report.attempts.procKcore).not.toBe('ok');
  });

  it('sets no_new_privs on request, user, groups, env, cwd and umask', async () => {
    const report = await probeReport({
      noNewPrivileges: true,
      user: { uid: 1000, gid: 1000, additionalGids: [2000] },
      env: { GREETING: 'hello world' },
      workdir: '/home/tester',
      umask: 0o027,
    });
    expect(report.status.NoNewPrivs).toBe('1');
    expect(report.uid).toBe(1000);
    expect(report.gid).toBe(1000);
    expect(report.groups).toContain(2000);
    expect(report.status.CapEff).toBe('0000000000000000');
    expect(report.env).toContain('GREETING=hello world');
    expect(report.cwd).toBe('/home/tester');
    expect(report.umask).toBe('0027');
  });

  it('lowers rlimits when asked', async () => {
    const report = await probeReport({ ulimits: [{ name: 'nofile', soft: 256, hard: 512 }] });
    expect(report.rlimits.nofile).toEqual([256, 512]);
  });

  it('adds and drops capabilities', async () => {
    const report = await probeReport({ capAdd: ['SYS_PTRACE'], capDrop: ['CHOWN', 'NET_RAW'] });
    const eff = BigInt(`0x${report.status.CapEff}`);
    expect(eff & (1n << 19n)).toBe(1n << 19n); // CAP_SYS_PTRACE
    expect(eff & 1n).toBe(0n); // CAP_CHOWN
    expect(eff & (1n << 13n)).toBe(0n); // CAP_NET_RAW
  });

  it('runs the command as PID 1 with init: false', async () => {
    const report = await probeReport({ init: false });
    expect(report.pid).toBe(1);
    expect(report.pids).toEqual([1]);
  });

  it('propagates exit codes and signals', async () => {
    expect((await runProbe(['exit', '3'])).exitCode).toBe(3);
    const killed = await runProbe(['signal', '9']);
    expect(killed).toMatchObject({ exitCode: 137, signal: 9 });
    const terminated = await runProbe(['signal', '15']);
    expect(terminated).toMatchObject({ exitCode: 143, signal: 15 });
  });

  it('keeps stdout and stderr apart, and passes stdin', async () => {
    const out = await runProbe(['out', 'to-stdout', 'to-stderr']);
    expect(out.stdout).toBe('to-stdout\n'.repeat(3));
    expect(out.stderr).toBe('to-stderr\n'.repeat(3));
    const cat = await runProbe(['cat'], {}, 'piped through\nstdin\n');
    expect(cat.stdout).toBe('piped through\nstdin\n');
  });

  it('reaps zombies with init, and does not without it', async () => {
    const withInit = JSON.parse((await runProbe(['orphans', '5'])).stdout);
    expect(withInit.zombies).toBe(0);
    const withoutInit = JSON.parse((await runProbe(['orphans', '5'], { init: false })).stdout);
    expect(withoutInit.zombies).toBe(5);
  });

  it('fails to start with a clear error and 127 when the command does not exist', async () => {
    await expect(runProbe([], { command: ['no-such-command'] })).rejects.toThrow(
      /cannot start container [0-9a-f]{12}: .*no-such-command.*not found/,
    );
    await expect(runProbe([], { command: ['no-such-command'] })).rejects.toMatchObject({ exitCode: 127 });
  });
});
