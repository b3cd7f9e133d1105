import { readdirSync, readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { Container, detectCgroupMode } from '../src/runtime/index.js';
import { describeKernel } from './helpers/kernel.js';
import { runProbe } from './helpers/probe.js';
import { busyboxRootfs } from './helpers/rootfs.js';

const MiB = 1024 * 1024;

describeKernel(`cgroup limits (cgroup ${safeMode()})`, () => {
  it('kills a container that passes its memory limit and reports oomKilled', async () => {
    const result = await runProbe(['alloc', '256'], { memory: 32 * MiB });
    expect(result.oomKilled).toBe(true);
    expect(result.exitCode).toBe(137);
    expect(result.signal).toBe(9);
    const fine = await runProbe(['alloc', '8'], { memory: 64 * MiB });
    expect(fine).toMatchObject({ exitCode: 0, oomKilled: false });
  });

  it('makes fork fail past the pids limit', async () => {
    const limited = JSON.parse((await runProbe(['forks', '40'], { pids: 12 })).stdout);
    expect(limited.forked).toBeLessThan(12);
    expect(limited.error).toBe('EAGAIN');
    const free = JSON.parse((await runProbe(['forks', '40'])).stdout);
    expect(free).toEqual({ forked: 40, error: null });
  });

  it('writes the CPU quota and throttles to it', async () => {
    const container = Container.create({
      rootfs: await busyboxRootfs(),
      command: ['/probe', 'spin', '150'],
      cpus: 0.25,
    });
    try {
      const mode = detectCgroupMode();
      const quota =
        mode === 'v2'
          ? readFileSync(`/sys/fs/cgroup/petri/${container.id}/cpu.max`, 'utf8').trim()
          : readFileSync(`/sys/fs/cgroup/cpu/petri/${container.id}/cpu.cfs_quota_us`, 'utf8').trim();
      expect(quota).toBe(mode === 'v2' ? '25000 100000' : '25000');
      await container.start();
      let out = '';
      container.stdout?.on('data', (chunk) => {
        out += chunk;
      });
      expect((await container.wait()).exitCode).toBe(0);
      const spin = JSON.parse(out);
      // 150 ms of CPU at a quarter of a CPU takes at least ~3 periods of waiting.
      expect(spin.wallMs).toBeGreaterThan(spin.cpuMs * 1.8);
    } finally {
      await container.remove();
    }
  });

  it('lets a container mknod a disk but never open it (device allowlist)', async () => {
    const result = await runProbe(['report']);
    expect(JSON.parse(result.stdout).attempts.mknodDisk).toBe('open:EPERM');
  });

  it('kills the whole container, grandchildren too, on timeout', async () => {
    // Long enough for `tree` to start its processes even in the slow v2 VM.
    const result = await runProbe(['tree'], { timeoutMs: process.env.PETRI_IN_V2VM ? 6000 : 1000 });
    expect(result.timedOut).toBe(true);
    expect(result.signal).toBe(9);
    expect(result.stdout).toContain('tree ready');
    const sleepers = readdirSync('/proc').filter((pid) => {
      try {
        return /^\d+$/.test(pid) && readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'probe-sleeper';
      } catch {
        return false;
      }
    });
    expect(sleepers).toEqual([]);
  });
});

function safeMode(): string {
  try {
    return detectCgroupMode();
  } catch {
    return 'none';
  }
}
