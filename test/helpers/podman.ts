import { existsSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';

/** podman's `libpod_parent` cgroups in every hierarchy (v2, or each v1 controller and the unified one). */
function podmanCgroups(): string[] {
  const roots = ['/sys/fs/cgroup', ...readdirSync('/sys/fs/cgroup').map((d) => join('/sys/fs/cgroup', d))];
  return roots.map((root) => join(root, 'libpod_parent')).filter((dir) => existsSync(dir));
}

/** Removes a cgroup and its child cgroups, deepest first, as long as no process is in them. */
function removeEmptyCgroup(dir: string): void {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) removeEmptyCgroup(join(dir, entry.name));
  }
  try {
    rmdirSync(dir);
  } catch {
    // still in use: not ours to remove
  }
}

/**
 * podman (cgroupfs manager) leaves its empty libpod_parent cgroups behind. Call
 * this before a suite uses podman; the returned function removes the ones made
 * since (retrying for a while: conmon may still be leaving its cgroup).
 */
export function podmanCgroupsCleanup(): () => Promise<void> {
  const before = podmanCgroups();
  return async () => {
    for (let i = 0; i < 30; i++) {
      const left = podmanCgroups().filter((d) => !before.includes(d));
      if (left.length === 0) break;
      for (const dir of left) removeEmptyCgroup(dir);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
}
