import { resolveCapabilities } from './capabilities.js';
import type { ContainerOptions } from './options.js';
import { defaultSeccompProfile, type SeccompProfile } from './seccomp-profile.js';
import { type Rlimit, resolveUlimits } from './ulimits.js';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Docker's masked paths (moby `oci/defaults.go`). */
export const MASKED_PATHS = [
  '/proc/asound',
  '/proc/acpi',
  '/proc/interrupts',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
  '/sys/devices/virtual/powercap',
];
export const READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

export interface DeviceRule {
  allow: boolean;
  type?: 'a' | 'c' | 'b';
  major?: number;
  minor?: number;
  access: string;
}

/** Docker's device allowlist: mknod of anything, read/write only of the harmless character devices. */
export const DEFAULT_DEVICE_RULES: DeviceRule[] = [
  { allow: false, access: 'rwm' },
  { allow: true, type: 'c', access: 'm' },
  { allow: true, type: 'b', access: 'm' },
  { allow: true, type: 'c', major: 1, minor: 3, access: 'rwm' }, // null
  { allow: true, type: 'c', major: 1, minor: 5, access: 'rwm' }, // zero
  { allow: true, type: 'c', major: 1, minor: 7, access: 'rwm' }, // full
  { allow: true, type: 'c', major: 1, minor: 8, access: 'rwm' }, // random
  { allow: true, type: 'c', major: 1, minor: 9, access: 'rwm' }, // urandom
  { allow: true, type: 'c', major: 5, minor: 0, access: 'rwm' }, // tty
  { allow: true, type: 'c', major: 5, minor: 1, access: 'rwm' }, // console
  { allow: true, type: 'c', major: 5, minor: 2, access: 'rwm' }, // ptmx
  { allow: true, type: 'c', major: 136, access: 'rwm' }, // pts/*
  { allow: true, type: 'c', major: 10, minor: 200, access: 'rwm' }, // net/tun
];

export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

export interface OciProcess {
  terminal: boolean;
  user: { uid: number; gid: number; additionalGids?: number[]; umask?: number };
  args: string[];
  env: string[];
  cwd: string;
  capabilities: Record<'bounding' | 'effective' | 'permitted' | 'inheritable' | 'ambient', string[]>;
  noNewPrivileges: boolean;
  rlimits?: Rlimit[];
}

export interface OciSpec {
  ociVersion: string;
  process: OciProcess;
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: OciMount[];
  annotations: Record<string, string>;
  linux: {
    namespaces: { type: string }[];
    rootfsPropagation: string;
    maskedPaths: string[];
    readonlyPaths: string[];
    cgroupsPath?: string;
    resources: {
      devices: DeviceRule[];
      memory?: { limit: number; swap: number };
      pids?: { limit: number };
      cpu?: { quota: number; period: number };
    };
    seccomp?: SeccompProfile;
  };
}

export interface SpecContext {
  id: string;
  /** The directory the container sees as `/`. */
  rootPath: string;
  /** Overlay layers: the runner mounts them on rootPath inside the container's mount namespace. */
  overlay?: { lower: string[]; upper: string; work: string; lowerBase?: string };
  /** Mount the cgroup2 filesystem at /sys/fs/cgroup (pure cgroup v2 hosts, like Docker there). */
  cgroupMount: boolean;
}

const CPU_PERIOD = 100_000;

/** Builds the OCI runtime spec for a container, with Docker's defaults and the caller's changes. */
export function createSpec(options: ContainerOptions, context: SpecContext): OciSpec {
  const capabilities = resolveCapabilities(options.capAdd, options.capDrop, options.privileged);
  const user = options.user ?? { uid: 0, gid: 0 };
  const hostname = options.hostname ?? context.id.slice(0, 12);
  const effective = user.uid === 0 ? capabilities : [];
  const env = buildEnv(options.env, hostname, user.uid);
  const rlimits = resolveUlimits(options.ulimits ?? []);
  const process: OciProcess = {
    terminal: false,
    user: {
      uid: user.uid,
      gid: user.gid,
      ...(user.additionalGids?.length ? { additionalGids: user.additionalGids } : {}),
      ...(options.umask !== undefined ? { umask: options.umask } : {}),
    },
    args: options.command,
    env,
    cwd: options.workdir ?? '/',
    capabilities: { bounding: capabilities, effective, permitted: effective, inheritable: [], ambient: [] },
    noNewPrivileges: options.noNewPrivileges ?? false,
    ...(rlimits.length ? { rlimits } : {}),
  };
  const namespaces = ['pid', 'ipc', 'uts', 'mount', 'cgroup'];
  if (options.network !== 'host') namespaces.push('network');
  const annotations: Record<string, string> = { 'org.petri.id': context.id };
  if (context.overlay) {
    annotations['org.petri.rootfs.lower'] = context.overlay.lower.join(':');
    annotations['org.petri.rootfs.upper'] = context.overlay.upper;
    annotations['org.petri.rootfs.work'] = context.overlay.work;
    if (context.overlay.lowerBase) annotations['org.petri.rootfs.lowerbase'] = context.overlay.lowerBase;
  }
  for (const [key, value] of Object.entries(options.labels ?? {})) annotations[key] = value;
  if (options.reportUpper) annotations['org.petri.report-upper'] = '1';
  return {
    ociVersion: '1.0.2',
    process,
    root: { path: context.rootPath, readonly: options.readonlyRootfs ?? false },
    hostname,
    mounts: buildMounts(options, context),
    annotations,
    linux: {
      namespaces: namespaces.map((type) => ({ type })),
      rootfsPropagation: 'rslave',
      maskedPaths: options.privileged ? [] : MASKED_PATHS,
      readonlyPaths: options.privileged ? [] : READONLY_PATHS,
      cgroupsPath: `/petri/${context.id}`,
      resources: {
        devices: options.privileged ? [{ allow: true, access: 'rwm' }] : DEFAULT_DEVICE_RULES,
        ...(options.memory ? { memory: { limit: options.memory, swap: options.memory } } : {}),
        ...(options.pids ? { pids: { limit: options.pids } } : {}),
        ...(options.cpus ? { cpu: { quota: Math.round(options.cpus * CPU_PERIOD), period: CPU_PERIOD } } : {}),
      },
      ...(options.privileged ? {} : { seccomp: defaultSeccompProfile(capabilities) }),
    },
  };
}

function buildEnv(extra: Record<string, string> = {}, hostname: string, uid: number): string[] {
  const env: Record<string, string> = { PATH: DEFAULT_PATH, HOSTNAME: hostname };
  if (uid === 0) env.HOME = '/root';
  Object.assign(env, extra);
  return Object.entries(env).map(([key, value]) => `${key}=${value}`);
}

function buildMounts(options: ContainerOptions, context: SpecContext): OciMount[] {
  const mounts: OciMount[] = [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    {
      destination: '/dev',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
    },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
    },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    {
      destination: '/dev/shm',
      type: 'tmpfs',
      source: 'shm',
      options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
    },
  ];
  if (context.cgroupMount) {
    mounts.splice(4, 0, {
      destination: '/sys/fs/cgroup',
      type: 'cgroup',
      source: 'cgroup',
      options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'],
    });
  }
  for (const [destination, opts] of Object.entries(options.tmpfs ?? {})) {
    const extra = opts ? opts.split(',').filter(Boolean) : [];
    mounts.push({ destination, type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', ...extra] });
  }
  for (const bind of options.binds ?? []) {
    mounts.push({
      destination: bind.target,
      type: 'bind',
      source: bind.source,
      options: ['rbind', 'rprivate', bind.readonly ? 'ro' : 'rw'],
    });
  }
  return mounts;
}
