/**
 * A seccomp profile in OCI form that denies what Docker's default profile
 * denies a container with the given capabilities. Docker's profile is an
 * allowlist; petri's is the equivalent denylist (default allow), which runc
 * and petri-runner both load from the same config.json.
 */

const EPERM = 1;
const ENOSYS = 38;

/** Always denied (Docker allows none of these to any non-privileged container). */
const ALWAYS_DENIED = [
  'kexec_load',
  'kexec_file_load',
  'create_module',
  'get_kernel_syms',
  'query_module',
  'nfsservctl',
  'uselib',
  'userfaultfd',
  'keyctl',
  'add_key',
  'request_key',
  'vm86',
  'vm86old',
  'lookup_dcookie',
];

/** Denied unless the container has the capability (Docker's `includes.caps` groups). */
const DENIED_WITHOUT: Record<string, string[]> = {
  CAP_SYS_ADMIN: [
    'mount',
    'umount',
    'umount2',
    'pivot_root',
    'unshare',
    'setns',
    'sethostname',
    'setdomainname',
    'syslog',
    'quotactl',
    'quotactl_fd',
    'name_to_handle_at',
    'fanotify_init',
    'fsopen',
    'fsconfig',
    'fsmount',
    'fspick',
    'move_mount',
    'open_tree',
    'mount_setattr',
    'bpf',
    'perf_event_open',
    'swapon',
    'swapoff',
    'acct',
    'iopl',
    'ioperm',
  ],
  CAP_SYS_MODULE: ['init_module', 'finit_module', 'delete_module'],
  CAP_SYS_BOOT: ['reboot'],
  CAP_SYS_TIME: ['settimeofday', 'stime', 'clock_settime', 'clock_settime64', 'clock_adjtime', 'clock_adjtime64'],
  CAP_DAC_READ_SEARCH: ['open_by_handle_at'],
  CAP_SYS_PTRACE: ['process_vm_readv', 'process_vm_writev', 'kcmp', 'pidfd_getfd'],
  CAP_SYS_PACCT: ['acct'],
  CAP_SYS_TTY_CONFIG: ['vhangup'],
  CAP_SYS_NICE: ['get_mempolicy', 'mbind', 'set_mempolicy', 'set_mempolicy_home_node'],
  CAP_SYS_RAWIO: ['iopl', 'ioperm'],
};

/** Namespace flags that `clone` may not carry without CAP_SYS_ADMIN. */
const CLONE_NAMESPACE_FLAGS = [
  0x00020000, // CLONE_NEWNS
  0x02000000, // CLONE_NEWCGROUP
  0x04000000, // CLONE_NEWUTS
  0x08000000, // CLONE_NEWIPC
  0x10000000, // CLONE_NEWUSER
  0x20000000, // CLONE_NEWPID
  0x40000000, // CLONE_NEWNET
];

export interface SeccompRule {
  names: string[];
  action: 'SCMP_ACT_ERRNO';
  errnoRet: number;
  args?: { index: number; value: number; valueTwo: number; op: 'SCMP_CMP_MASKED_EQ' }[];
}

export interface SeccompProfile {
  defaultAction: 'SCMP_ACT_ALLOW';
  architectures: string[];
  syscalls: SeccompRule[];
}

/** The profile for a container with these capabilities; `undefined` means no filter (privileged). */
export function defaultSeccompProfile(capabilities: string[]): SeccompProfile {
  const denied = new Set(ALWAYS_DENIED);
  for (const [cap, names] of Object.entries(DENIED_WITHOUT)) {
    if (!capabilities.includes(cap)) for (const name of names) denied.add(name);
  }
  // A capability that allows a call wins over another group that denies it (acct: SYS_ADMIN or SYS_PACCT).
  if (capabilities.includes('CAP_SYS_PACCT')) denied.delete('acct');
  if (capabilities.includes('CAP_SYS_RAWIO')) for (const n of ['iopl', 'ioperm']) denied.delete(n);
  if (capabilities.includes('CAP_PERFMON')) denied.delete('perf_event_open');
  if (capabilities.includes('CAP_BPF')) denied.delete('bpf');
  if (capabilities.includes('CAP_SYSLOG')) denied.delete('syslog');

  const syscalls: SeccompRule[] = [{ names: [...denied].sort(), action: 'SCMP_ACT_ERRNO', errnoRet: EPERM }];
  if (!capabilities.includes('CAP_SYS_ADMIN')) {
    for (const flag of CLONE_NAMESPACE_FLAGS) {
      syscalls.push({
        names: ['clone'],
        action: 'SCMP_ACT_ERRNO',
        errnoRet: EPERM,
        args: [{ index: 0, value: flag, valueTwo: flag, op: 'SCMP_CMP_MASKED_EQ' }],
      });
    }
    // Like Docker: clone3's flags live in memory a filter cannot read, so it reports ENOSYS and libc falls back to clone.
    syscalls.push({ names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS });
  }
  return {
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures:
      process.arch === 'arm64'
        ? ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM']
        : ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
    syscalls,
  };
}
