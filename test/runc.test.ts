import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { Container, detectCgroupMode } from '../src/runtime/index.js';
import { describeKernel } from './helpers/kernel.js';
import type { ProbeReport } from './helpers/probe.js';
import { busyboxRootfs } from './helpers/rootfs.js';

const haveRunc = spawnSync('runc', ['--version']).status === 0;

/** What must be equal whichever runtime ran the bundle. */
function comparable(report: ProbeReport) {
  return {
    caps: [report.status.CapEff, report.status.CapPrm, report.status.CapBnd, report.status.CapInh],
    noNewPrivs: report.status.NoNewPrivs,
    seccomp: report.status.Seccomp,
    hostname: report.hostname,
    uid: [report.uid, report.gid],
    interfaces: report.interfaces,
    mounts: report.mounts
      .filter((m) => m.target !== '/')
      .map((m) => `${m.target} ${m.fstype} ${m.options.split(',').includes('ro') ? 'ro' : 'rw'}`)
      .sort(),
    masked: report.masked,
    attempts: report.attempts,
    limits: report.limits,
    rlimits: report.rlimits,
    cgroupRoot: report.cgroup.every((line) => line.endsWith(':/')),
  };
}

describeKernel('the same bundle under runc', () => {
  it.skipIf(!haveRunc)('gives the same probe report as petri-runner [needs runc]', async () => {
    const rootfs = await busyboxRootfs();
    const options = {
      rootfs,
      rootfsInPlace: true,
      command: ['/probe', 'report'],
      hostname: 'same',
      memory: 64 * 1024 * 1024,
      pids: 64,
      ulimits: [{ name: 'nofile', soft: 512, hard: 512 }],
      init: false,
    };
    const container = Container.create(options);
    const bundle = mkdtempSync(join(tmpdir(), 'ptest-runc-'));
    const runcId = `ptest-${container.id}`;
    let petriOut = '';
    try {
      const spec = JSON.parse(readFileSync(join(container.dir, 'config.json'), 'utf8'));
      spec.linux.cgroupsPath = `/ptest-runc/${runcId}`;
      writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
      await container.start();
      container.stdout?.on('data', (chunk) => {
        petriOut += chunk;
      });
      expect((await container.wait()).exitCode).toBe(0);
      const runc = spawnSync('runc', ['run', '--bundle', bundle, runcId], { encoding: 'utf8', timeout: 20_000 });
      expect(runc.stderr).toBe('');
      expect(runc.status).toBe(0);
      expect(comparable(JSON.parse(runc.stdout))).toEqual(comparable(JSON.parse(petriOut)));
    } finally {
      spawnSync('runc', ['delete', '--force', runcId]);
      await container.remove();
      rmSync(bundle, { recursive: true, force: true });
      for (const hier of detectCgroupMode() === 'v2'
        ? ['']
        : ['memory', 'pids', 'devices', 'cpu', 'freezer', 'unified', 'systemd', 'blkio', 'cpuset', 'cpuacct']) {
        const dir = join('/sys/fs/cgroup', hier, 'ptest-runc');
        if (existsSync(dir)) {
          try {
            rmdirSync(join(dir, runcId));
          } catch {}
          try {
            rmdirSync(dir);
          } catch {}
        }
      }
    }
  });
});
