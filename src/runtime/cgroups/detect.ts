import { existsSync, statfsSync } from 'node:fs';
import { PetriError } from '../../errors.js';

export type CgroupMode = 'v1' | 'v2' | 'hybrid';

const CGROUP2_SUPER_MAGIC = 0x63677270;
export const CGROUP_ROOT = '/sys/fs/cgroup';

/**
 * Tells how this host mounts cgroups: `v2` (unified at /sys/fs/cgroup, GitHub-hosted
 * runners), `hybrid` (v1 controllers plus a v2 hierarchy at /sys/fs/cgroup/unified),
 * or `v1`. `PETRI_CGROUP_MODE` overrides it (for tests).
 */
export function detectCgroupMode(root = CGROUP_ROOT): CgroupMode {
  const forced = process.env.PETRI_CGROUP_MODE;
  if (forced === 'v1' || forced === 'v2' || forced === 'hybrid') return forced;
  if (isCgroup2(root)) return 'v2';
  if (!existsSync(`${root}/pids`) && !existsSync(`${root}/memory`) && !existsSync(`${root}/devices`)) {
    throw new PetriError(
      `no cgroup hierarchy at ${root}: mount cgroup v2 there (mount -t cgroup2 none ${root}) or the v1 controllers`,
    );
  }
  return isCgroup2(`${root}/unified`) ? 'hybrid' : 'v1';
}

function isCgroup2(path: string): boolean {
  try {
    return statfsSync(path).type === CGROUP2_SUPER_MAGIC;
  } catch {
    return false;
  }
}
