import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { PetriError } from '../../errors.js';
import type { DeviceRule } from '../spec.js';
import { CGROUP_ROOT, type CgroupMode, detectCgroupMode } from './detect.js';
import { killCgroups, readKeyed, removeCgroups, tryWrite } from './dirs.js';

export interface CgroupLimits {
  memory?: number;
  pids?: number;
  cpus?: number;
  devices: DeviceRule[];
}

/** A container's cgroups, in every hierarchy it uses. */
export interface ContainerCgroups {
  readonly mode: CgroupMode;
  /** Every directory the container's processes join (`exec`'s `--cgroup` args; the record's list). */
  readonly dirs: string[];
  /**
   * The cgroup v2 directory (one of `dirs`) the container's first process is
   * created in with clone3(CLONE_INTO_CGROUP) (the runner's `--clone-into`):
   * no migration, so no wait for cgroup_threadgroup_rwsem. The container's dir
   * on v2, the unified one on hybrid hosts; none on pure v1.
   */
  readonly cloneIntoDir?: string;
  /** The cgroup v2 directory that gets the eBPF device program (v2 and hybrid). */
  readonly deviceBpfDir?: string;
  /** Whether the kernel's OOM killer killed a process of this container. */
  oomKilled(): boolean;
  kill(): void;
  remove(): Promise<void>;
}

const PARENT = 'petri';
const CPU_PERIOD = 100_000;
const V2_CONTROLLERS = ['memory', 'pids', 'cpu'];

/** Creates the cgroups of container `id` under the `petri` parent and writes its limits. */
export function createCgroups(id: string, limits: CgroupLimits, mode = detectCgroupMode()): ContainerCgroups {
  const created: string[] = [];
  try {
    if (mode === 'v2') return createV2(id, limits, created);
    return createV1(id, limits, mode, created);
  } catch (error) {
    void removeCgroups(created).catch(() => {});
    if (error instanceof PetriError) throw error;
    throw new PetriError(`cannot set up the cgroups of container ${id}: ${(error as Error).message}`, { cause: error });
  }
}

function createV2(id: string, limits: CgroupLimits, created: string[]): ContainerCgroups {
  const parent = `${CGROUP_ROOT}/${PARENT}`;
  const dir = `${parent}/${id}`;
  mkdirRacing(dir, () => {
    mkdirSync(parent, { recursive: true });
    enableControllers(CGROUP_ROOT);
    enableControllers(parent);
  });
  created.push(dir);
  // Another petri process may have made the parent and not yet enabled its
  // controllers: then this dir has no limit files (opening one gives EACCES).
  const wanted = [limits.memory && 'memory.max', limits.pids && 'pids.max', limits.cpus && 'cpu.max'];
  if (wanted.some((file) => file && !existsSync(`${dir}/${file}`))) {
    enableControllers(CGROUP_ROOT);
    enableControllers(parent);
  }
  if (limits.memory) {
    write(dir, 'memory.max', String(limits.memory));
    tryWrite(`${dir}/memory.swap.max`, '0');
  }
  if (limits.pids) write(dir, 'pids.max', String(limits.pids));
  if (limits.cpus) write(dir, 'cpu.max', `${Math.round(limits.cpus * CPU_PERIOD)} ${CPU_PERIOD}`);
  return {
    mode: 'v2',
    dirs: [dir],
    cloneIntoDir: dir,
    deviceBpfDir: dir,
    oomKilled: () => readKeyed(`${dir}/memory.events`, 'oom_kill') > 0,
    kill: () => killCgroups([dir]),
    remove: () => removeCgroups([dir]),
  };
}

function createV1(id: string, limits: CgroupLimits, mode: CgroupMode, created: string[]): ContainerCgroups {
  const dirFor = (controller: string) => {
    const parent = `${CGROUP_ROOT}/${controller}/${PARENT}`;
    const dir = `${parent}/${id}`;
    mkdirRacing(dir, () => mkdirSync(parent, { recursive: true }));
    created.push(dir);
    return dir;
  };
  // Hybrid hosts: the unified (v2) hierarchy holds the container from its
  // first instruction (clone3 CLONE_INTO_CGROUP), enforces the device
  // allowlist (eBPF) and kills (cgroup.kill); v1 cgroups only for the limits
  // asked, as joining one means a migration (cgroup_threadgroup_rwsem).
  // Pure v1: the devices cgroup for the allowlist, the freezer for killing.
  const unified = mode === 'hybrid' ? dirFor('unified') : undefined;
  if (!unified) writeDeviceRulesV1(dirFor('devices'), limits.devices);
  let memory: string | undefined;
  if (limits.memory) {
    memory = dirFor('memory');
    write(memory, 'memory.limit_in_bytes', String(limits.memory));
    if (existsSync(`${memory}/memory.memsw.limit_in_bytes`)) {
      write(memory, 'memory.memsw.limit_in_bytes', String(limits.memory));
    }
  }
  if (limits.pids) write(dirFor('pids'), 'pids.max', String(limits.pids));
  if (limits.cpus) {
    const cpu = dirFor('cpu');
    write(cpu, 'cpu.cfs_period_us', String(CPU_PERIOD));
    write(cpu, 'cpu.cfs_quota_us', String(Math.round(limits.cpus * CPU_PERIOD)));
  }
  if (!unified && existsSync(`${CGROUP_ROOT}/freezer`)) dirFor('freezer');
  const dirs = [...created];
  return {
    mode,
    dirs,
    ...(unified ? { cloneIntoDir: unified, deviceBpfDir: unified } : {}),
    oomKilled: () => (memory ? readKeyed(`${memory}/memory.oom_control`, 'oom_kill') > 0 : false),
    kill: () => killCgroups(dirs),
    remove: () => removeCgroups(dirs),
  };
}

/** Writes Docker's device allowlist to a v1 devices cgroup (deny all, then allow each rule). */
function writeDeviceRulesV1(dir: string, rules: DeviceRule[]): void {
  for (const rule of rules) {
    const line =
      rule.type === undefined || rule.type === 'a'
        ? 'a'
        : `${rule.type} ${rule.major ?? '*'}:${rule.minor ?? '*'} ${rule.access}`;
    write(dir, rule.allow ? 'devices.allow' : 'devices.deny', line);
  }
}

/**
 * Creates a container's cgroup below the `petri` parent. The parent is removed
 * when its last container goes (so nothing of petri stays on the host), which
 * may race with another process: a missing parent is made again, and retried.
 */
function mkdirRacing(dir: string, makeParent: () => void): void {
  for (let attempt = 0; ; attempt++) {
    try {
      mkdirSync(dir);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 5) throw error;
      makeParent();
    }
  }
}

function enableControllers(dir: string): void {
  const available = readFileSync(`${dir}/cgroup.controllers`, 'utf8').split(/\s+/);
  const enabled = readFileSync(`${dir}/cgroup.subtree_control`, 'utf8').split(/\s+/);
  for (const controller of V2_CONTROLLERS) {
    if (available.includes(controller) && !enabled.includes(controller)) {
      tryWrite(`${dir}/cgroup.subtree_control`, `+${controller}`);
    }
  }
}

function write(dir: string, file: string, value: string): void {
  try {
    writeFileSync(`${dir}/${file}`, value);
  } catch (error) {
    throw new PetriError(`cannot write ${value} to ${dir}/${file}: ${(error as Error).message}`, { cause: error });
  }
}
