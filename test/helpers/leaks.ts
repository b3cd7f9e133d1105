import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { namesDir } from '../../src/runtime/names.js';
import { containersDir, petriRoot } from '../../src/runtime/paths.js';

/**
 * Lists what petri left on this machine: mounts, cgroups, runner processes and
 * container records. The same checks as ../shared/tools/leaks.sh, in-process.
 */
export function findLeaks(): string[] {
  const leaks: string[] = [];
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const target = line.split(' ')[1];
    // The state directory may itself be a mount (a tmpfs in the v2 VM); what is mounted below it is not.
    if (target?.includes('petri') && target !== petriRoot()) leaks.push(`mount: ${target}`);
  }
  const roots = ['/sys/fs/cgroup', ...safeList('/sys/fs/cgroup').map((d) => join('/sys/fs/cgroup', d))];
  for (const root of roots) {
    if (existsSync(join(root, 'petri'))) leaks.push(`cgroup: ${join(root, 'petri')}`);
  }
  for (const pid of safeList('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (readlinkSync(`/proc/${pid}/exe`).includes('petri-runner')) leaks.push(`process: ${pid}`);
    } catch {
      // gone or a kernel thread
    }
  }
  const records = containersDir();
  if (existsSync(records)) for (const id of readdirSync(records)) leaks.push(`state: ${join(records, id)}`);
  const names = namesDir();
  if (existsSync(names)) for (const name of readdirSync(names)) leaks.push(`name: ${join(names, name)}`);
  return leaks;
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
