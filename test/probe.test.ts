// The probe itself, run directly on the host (no container needed).
import { type SpawnSyncOptions, spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { busyboxRootfs } from './helpers/rootfs.js';

let probe = '';

beforeAll(async () => {
  probe = path.join(await busyboxRootfs(), 'probe');
}, 120_000);

function run(args: string[], opts: SpawnSyncOptions = {}) {
  const r = spawnSync(probe, args, { encoding: 'utf8', timeout: 30_000, ...opts });
  if (r.error) throw r.error;
  return { ...r, stdout: String(r.stdout), stderr: String(r.stderr) };
}

function json(stdout: string): Record<string, unknown> {
  const lines = stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0] ?? '') as Record<string, unknown>;
}

const ATTEMPTS = `mount umount unshareUser unshareNet cloneUser sysrq sysWrite procSysWrite initModule
  finitModule kexecLoad bpf perfEventOpen userfaultfd keyctl addKey swapoff reboot acct settimeofday
  clockSettime pivotRoot openByHandleAt proc1Exe proc1ExeLink procKcore mknodDisk setns`.split(/\s+/);
const MASKED = `/proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /proc/scsi /proc/acpi
  /sys/firmware /proc/asound /proc/latency_stats /proc/timer_stats /sys/devices/virtual/powercap`.split(/\s+/);

describe('probe report', () => {
  it('prints one JSON object describing the process', () => {
    const cwd = os.tmpdir();
    const r = run(['report'], { cwd, env: { PROBE_TEST: 'yes', PATH: '/bin' } });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const rep = json(r.stdout);

    expect(rep.pid).toBe(r.pid);
    expect(rep.ppid).toBe(process.pid);
    expect(rep.uid).toBe(process.getuid?.());
    expect(rep.gid).toBe(process.getgid?.());
    expect(rep.euid).toBe(process.geteuid?.());
    expect(rep.groups).toEqual(expect.any(Array));
    for (const g of rep.groups as unknown[]) expect(g).toEqual(expect.any(Number));
    expect(rep.hostname).toBe(os.hostname());
    expect(rep.cwd).toBe(cwd);
    expect(rep.umask).toMatch(/^0[0-7]{3}$/);
    expect(rep.env).toEqual(['PROBE_TEST=yes', 'PATH=/bin']);

    const status = rep.status as Record<string, string | null>;
    for (const k of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) {
      expect(status[k]).toMatch(/^[0-9a-f]{16}$/);
    }
    expect(status.NoNewPrivs).toMatch(/^[01]$/);
    expect(status.Seccomp).toMatch(/^[0-2]$/);

    expect(rep.pid1Comm).toBe(readFileSync('/proc/1/comm', 'utf8').trim());
    expect(rep.pid1Cmdline).toEqual(expect.any(Array));
    const pids = rep.pids as number[];
    expect(pids).toContain(1);
    expect(pids).toContain(r.pid);
    expect([...pids].sort((a, b) => a - b)).toEqual(pids);

    const ifaces = rep.interfaces as { name: string; up: boolean }[];
    for (const i of ifaces) expect(i).toEqual({ name: expect.any(String), up: expect.any(Boolean) });
    expect(ifaces.map((i) => i.name)).toContain('lo');

    const mounts = rep.mounts as Record<string, string>[];
    expect(mounts.length).toBeGreaterThan(0);
    for (const m of mounts) {
      expect(m).toMatchObject({
        target: expect.any(String),
        fstype: expect.any(String),
        options: expect.any(String),
        source: expect.any(String),
      });
    }
    expect(mounts.find((m) => m.target === '/proc')?.fstype).toBe('proc');

    expect(rep.cgroup).toEqual(readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n'));
    const rl = rep.rlimits as Record<string, [number, number]>;
    for (const k of ['nofile', 'nproc']) {
      expect(rl[k]).toHaveLength(2);
      for (const v of rl[k] ?? []) expect(Number.isInteger(v) && v >= -1).toBe(true);
    }

    const ns = rep.nsInodes as Record<string, string>;
    for (const k of ['mnt', 'pid', 'net', 'uts', 'ipc', 'cgroup']) {
      expect(ns[k]).toBe(readlinkSync(`/proc/self/ns/${k}`));
    }

    const attempts = rep.attempts as Record<string, string>;
    expect(Object.keys(attempts).sort()).toEqual([...ATTEMPTS].sort());
    for (const [k, v] of Object.entries(attempts)) {
      if (k === 'proc1ExeLink') expect(v).toMatch(/^(ok:\/.*|E[A-Z0-9]+)$/);
      else if (k === 'mknodDisk') expect(v).toMatch(/^(ok|(mknod|open):E[A-Z0-9]+)$/);
      else if (k === 'procKcore') expect(v).toMatch(/^(ok|empty|E[A-Z0-9]+)$/);
      else expect(v, k).toMatch(/^(ok|E[A-Z0-9]+)$/);
    }
    // Nothing is left behind on the host by the attempts.
    expect(readdirSync('/tmp').filter((f) => f.startsWith('.probe-sda'))).toEqual([]);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).toMatch(/ \/proc \S+ .*- proc /);

    const masked = rep.masked as Record<string, string>;
    expect(Object.keys(masked)).toEqual(MASKED);
    for (const v of Object.values(masked)) {
      expect(v).toMatch(/^(absent|empty|readable:\d+|error:E[A-Z0-9]+)$/);
    }
    for (const v of Object.values(rep.limits as Record<string, unknown>)) {
      if (v !== null) expect(v).toEqual(expect.any(String));
    }
  });

  it('escapes odd strings as valid JSON', () => {
    const weird = 'quote" back\\slash \t tab \u00e9 \u{1f600}';
    const r = run(['report'], { env: { WEIRD: weird, BAD: 'x\x01y' } });
    const rep = json(r.stdout);
    expect(rep.env).toEqual([`WEIRD=${weird}`, 'BAD=x\x01y']);
  });
});

describe('probe modes', () => {
  it('exit N exits with N', () => {
    expect(run(['exit', '3']).status).toBe(3);
    expect(run(['exit', '0']).status).toBe(0);
  });

  it('signal N dies of the signal', () => {
    expect(run(['signal', '15']).signal).toBe('SIGTERM');
  });

  it('out TEXT ERRTEXT writes to both streams', () => {
    const r = run(['out', 'a', 'b']);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('a\na\na\n');
    expect(r.stderr).toBe('b\nb\nb\n');
  });

  it('cat copies stdin to stdout', () => {
    const input = 'hello\nworld\n'.repeat(10_000);
    const r = run(['cat'], { input });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(input);
  });

  it('sleep sleeps for fractional seconds', () => {
    const t0 = Date.now();
    expect(run(['sleep', '0.2']).status).toBe(0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
  });

  it('alloc reports progress every 16 MiB', () => {
    const r = run(['alloc', '40']);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('allocated 16\nallocated 32\nallocated 40\n');
  });

  it('orphans prints a zombie count', () => {
    const r = run(['orphans', '3']);
    expect(r.status).toBe(0);
    expect(json(r.stdout)).toEqual({ zombies: expect.any(Number) });
  });

  it('forks N forks N children and reaps them', () => {
    const r = run(['forks', '5']);
    expect(r.status).toBe(0);
    expect(json(r.stdout)).toEqual({ forked: 5, error: null });
  });

  it('spin burns CPU time', () => {
    const r = run(['spin', '50']);
    expect(r.status).toBe(0);
    const out = json(r.stdout) as { cpuMs: number; wallMs: number };
    expect(out.cpuMs).toBeGreaterThanOrEqual(50);
    expect(out.wallMs).toBeGreaterThanOrEqual(49);
  });

  it('unknown or incomplete modes exit 2', () => {
    expect(run(['nope']).status).toBe(2);
    expect(run([]).status).toBe(2);
    expect(run(['exit']).status).toBe(2);
  });

  it('ignore-term survives SIGTERM', async () => {
    const child = spawn(probe, ['ignore-term', '30'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await waitForOutput(child.stdout, 'ready\n');
      child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 200));
      expect(child.exitCode).toBeNull();
      expect(child.signalCode).toBeNull();
    } finally {
      child.kill('SIGKILL');
    }
  });
});

function waitForOutput(stream: NodeJS.ReadableStream, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${text}`)), 10_000);
    stream.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf === text) {
        clearTimeout(timer);
        resolve();
      } else if (!text.startsWith(buf)) {
        clearTimeout(timer);
        reject(new Error(`unexpected output: ${buf}`));
      }
    });
  });
}
