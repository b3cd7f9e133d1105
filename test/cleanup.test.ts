import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { containersDir, sweepContainers } from '../src/runtime/index.js';
import { describeKernel } from './helpers/kernel.js';
import { busyboxRootfs } from './helpers/rootfs.js';

const top = join(import.meta.dirname, '..');

describeKernel('cleanup after a harness dies', () => {
  it('takes the containers down with a SIGKILLed harness, and the next sweep removes the rest', async () => {
    const rootfs = await busyboxRootfs();
    // A harness that starts two containers running `tree` (a child and a grandchild) and waits forever.
    const script = `
      import { Container } from ${JSON.stringify(join(top, 'dist/lib/index.js'))};
      const containers = [0, 1].map(() => Container.create({ rootfs: ${JSON.stringify(rootfs)}, command: ['/probe', 'tree'] }));
      for (const c of containers) await c.start();
      console.log(JSON.stringify(containers.map((c) => ({ id: c.id, pid: c.pid }))));
      setInterval(() => {}, 1000);
    `;
    const harness = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const line = await new Promise<string>((resolve, reject) => {
      harness.stdout.once('data', (chunk) => resolve(String(chunk)));
      harness.once('exit', (code) => reject(new Error(`harness exited ${code}`)));
    });
    const started = JSON.parse(line) as { id: string; pid: number }[];
    for (const { id } of started) expect(existsSync(join(containersDir(), id))).toBe(true);
    harness.kill('SIGKILL');
    await new Promise((resolve) => harness.once('exit', resolve));

    // The runners die with their parent (PDEATHSIG) and take the PID namespaces with them.
    // (Dead but not yet reaped by this machine's own PID 1 is dead: state Z.)
    for (let i = 0; i < 100 && started.some(({ pid }) => running(pid)); i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    for (const { pid } of started) expect(running(pid), `init ${pid} still runs`).toBe(false);
    const sleepers = readdirSync('/proc').filter(
      (p) => /^\d+$/.test(p) && readComm(p) === 'probe-sleeper' && running(Number(p)),
    );
    expect(sleepers).toEqual([]);

    // Records and cgroups stay until a later petri process sweeps them.
    // (Another test worker's background sweep may get to some of them first.)
    const removed = await sweepContainers();
    for (const id of removed) expect(started.map((s) => s.id)).toContain(id);
    for (const { id } of started) {
      expect(existsSync(join(containersDir(), id))).toBe(false);
      for (const hier of ['', 'unified/', 'devices/'])
        expect(existsSync(`/sys/fs/cgroup/${hier}petri/${id}`)).toBe(false);
    }
  });
});

function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function readComm(pid: string): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}
