import { existsSync } from 'node:fs';
import { expect, it } from 'vitest';
import { describeKernel } from './helpers/kernel.js';
import { probeReport } from './helpers/probe.js';

describeKernel('attempts to get out of a default container fail', () => {
  it('is denied by seccomp, capabilities and read-only mounts', async () => {
    const { attempts } = await probeReport();
    const denied = [
      'mount',
      'umount',
      'unshareUser',
      'unshareNet',
      'cloneUser',
      'initModule',
      'finitModule',
      'kexecLoad',
      'bpf',
      'perfEventOpen',
      'userfaultfd',
      'keyctl',
      'addKey',
      'swapoff',
      'reboot',
      'acct',
      'settimeofday',
      'clockSettime',
      'pivotRoot',
      'openByHandleAt',
      'setns',
    ];
    for (const attempt of denied) expect(attempts[attempt], attempt).toBe('EPERM');
    // Read-only where the kernel has the file (this CI kernel has no /proc/sysrq-trigger at all).
    expect(attempts.sysrq).toMatch(existsSync('/proc/sysrq-trigger') ? /^(EROFS|EACCES)$/ : /^ENOENT$/);
  });

  it('cannot reach the runner binary through /proc/1/exe', async () => {
    const { attempts } = await probeReport();
    expect(attempts.proc1Exe).toMatch(/^(EACCES|EPERM)$/);
    expect(attempts.proc1ExeLink).not.toMatch(/^ok:.*\/build\/petri-runner/);
  });

  it('reaches the same calls when privileged, showing the denials come from petri', async () => {
    const { attempts, status } = await probeReport({ privileged: true });
    expect(status.Seccomp).toBe('0');
    expect(attempts.keyctl).not.toBe('EPERM');
    expect(attempts.clockSettime).toBe('EINVAL');
  });
});
