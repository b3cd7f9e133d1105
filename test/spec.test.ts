import { describe, expect, it } from 'vitest';
import {
  ALL_CAPABILITIES,
  capabilityMask,
  DEFAULT_CAPABILITIES,
  resolveCapabilities,
} from '../src/runtime/capabilities.js';
import { defaultSeccompProfile } from '../src/runtime/seccomp-profile.js';
import { createSpec } from '../src/runtime/spec.js';

const context = { id: 'abc123abc123', rootPath: '/r', cgroupMount: false };

describe('capabilities', () => {
  it("Docker's default set is CapEff 00000000a80425fb", () => {
    expect(capabilityMask(DEFAULT_CAPABILITIES)).toBe('00000000a80425fb');
  });
  it('adds and drops like docker --cap-add/--cap-drop', () => {
    expect(resolveCapabilities(['NET_ADMIN'], ['chown'])).toContain('CAP_NET_ADMIN');
    expect(resolveCapabilities(['NET_ADMIN'], ['chown'])).not.toContain('CAP_CHOWN');
    expect(resolveCapabilities([], ['ALL'])).toEqual([]);
    expect(resolveCapabilities(['SYS_PTRACE'], ['ALL'])).toEqual(['CAP_SYS_PTRACE']);
    expect(resolveCapabilities([], [], true, ALL_CAPABILITIES)).toHaveLength(41);
    expect(() => resolveCapabilities(['FLY'])).toThrow('unknown capability "FLY"');
  });
  it('never asks for a capability petri itself lacks', () => {
    const without = ALL_CAPABILITIES.filter((c) => c !== 'CAP_SYS_RESOURCE');
    expect(resolveCapabilities([], [], true, without)).toHaveLength(40);
    expect(resolveCapabilities(['ALL'], [], false, without)).not.toContain('CAP_SYS_RESOURCE');
    expect(() => resolveCapabilities(['SYS_RESOURCE'], [], false, without)).toThrow(
      'cannot add capability CAP_SYS_RESOURCE: petri itself does not hold it here',
    );
  });
});

describe('seccomp profile', () => {
  it('denies what Docker denies a default root container', () => {
    const denied = defaultSeccompProfile(DEFAULT_CAPABILITIES).syscalls[0]?.names ?? [];
    for (const name of [
      'kexec_load',
      'init_module',
      'finit_module',
      'bpf',
      'perf_event_open',
      'userfaultfd',
      'keyctl',
      'add_key',
      'request_key',
      'unshare',
      'mount',
      'umount2',
      'pivot_root',
      'swapon',
      'swapoff',
      'reboot',
      'acct',
      'settimeofday',
      'clock_settime',
      'open_by_handle_at',
      'setns',
    ]) {
      expect(denied, name).toContain(name);
    }
    expect(denied).not.toContain('clone');
    expect(denied).not.toContain('ptrace');
  });
  it('blocks new namespaces through clone and sends clone3 to ENOSYS', () => {
    const profile = defaultSeccompProfile(DEFAULT_CAPABILITIES);
    const cloneRules = profile.syscalls.filter((rule) => rule.names.includes('clone'));
    expect(cloneRules.map((rule) => rule.args?.[0]?.value)).toContain(0x10000000);
    expect(profile.syscalls.find((rule) => rule.names.includes('clone3'))?.errnoRet).toBe(38);
  });
  it('lets a capability allow its calls, like Docker', () => {
    const withAdmin = defaultSeccompProfile([...DEFAULT_CAPABILITIES, 'CAP_SYS_ADMIN']);
    expect(withAdmin.syscalls[0]?.names).not.toContain('mount');
    expect(withAdmin.syscalls.some((rule) => rule.names.includes('clone'))).toBe(false);
    const withTime = defaultSeccompProfile([...DEFAULT_CAPABILITIES, 'CAP_SYS_TIME']);
    expect(withTime.syscalls[0]?.names).not.toContain('settimeofday');
  });
});

describe('createSpec', () => {
  it('has Docker defaults', () => {
    const spec = createSpec({ rootfs: '/r', command: ['true'] }, context);
    expect(spec.process.capabilities.effective).toEqual(spec.process.capabilities.bounding);
    expect(spec.process.noNewPrivileges).toBe(false);
    expect(spec.hostname).toBe('abc123abc123');
    expect(spec.linux.namespaces.map((ns) => ns.type).sort()).toEqual(
      ['cgroup', 'ipc', 'mount', 'network', 'pid', 'uts'].sort(),
    );
    expect(spec.linux.maskedPaths).toContain('/proc/kcore');
    expect(spec.linux.readonlyPaths).toContain('/proc/sysrq-trigger');
    expect(spec.mounts.map((m) => m.destination)).toEqual([
      '/proc',
      '/dev',
      '/dev/pts',
      '/sys',
      '/dev/mqueue',
      '/dev/shm',
    ]);
    expect(spec.process.env).toContain('PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
    expect(spec.linux.seccomp).toBeDefined();
  });
  it('gives a non-root user no effective capabilities, like Docker', () => {
    const spec = createSpec({ rootfs: '/r', command: ['id'], user: { uid: 1000, gid: 1000 } }, context);
    expect(spec.process.capabilities.effective).toEqual([]);
    expect(spec.process.capabilities.bounding).toHaveLength(14);
  });
  it('applies options', () => {
    const spec = createSpec(
      {
        rootfs: '/r',
        command: ['true'],
        memory: 64 * 1024 * 1024,
        pids: 32,
        cpus: 0.5,
        noNewPrivileges: true,
        readonlyRootfs: true,
        network: 'host',
        tmpfs: { '/run': 'size=1m' },
        binds: [{ source: '/etc', target: '/host-etc', readonly: true }],
        hostname: 'box',
      },
      { ...context, cgroupMount: true },
    );
    expect(spec.linux.resources.memory).toEqual({ limit: 67108864, swap: 67108864 });
    expect(spec.linux.resources.pids).toEqual({ limit: 32 });
    expect(spec.linux.resources.cpu).toEqual({ quota: 50000, period: 100000 });
    expect(spec.process.noNewPrivileges).toBe(true);
    expect(spec.root.readonly).toBe(true);
    expect(spec.linux.namespaces.map((ns) => ns.type)).not.toContain('network');
    expect(spec.mounts.find((m) => m.destination === '/run')?.options).toContain('size=1m');
    expect(spec.mounts.find((m) => m.destination === '/host-etc')?.options).toContain('ro');
    expect(spec.mounts.find((m) => m.destination === '/sys/fs/cgroup')?.type).toBe('cgroup');
    expect(spec.hostname).toBe('box');
  });
  it('privileged drops the filter, the masks and the device allowlist', () => {
    const spec = createSpec({ rootfs: '/r', command: ['true'], privileged: true }, context);
    expect(spec.linux.seccomp).toBeUndefined();
    expect(spec.linux.maskedPaths).toEqual([]);
    expect(spec.linux.resources.devices).toEqual([{ allow: true, access: 'rwm' }]);
  });
  it('refuses to raise a resource limit', () => {
    expect(() =>
      createSpec({ rootfs: '/r', command: ['true'], ulimits: [{ name: 'nofile', soft: 1, hard: 2 ** 40 }] }, context),
    ).toThrow(/cannot raise ulimit nofile to \d+: petri only lowers limits/);
  });
});
