import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { PetriError } from '../errors.js';

/**
 * Runs `work` with the container's processes frozen (cgroup v2 `cgroup.freeze`,
 * or the v1 freezer), like `docker pause`: nothing in the container can change
 * its files meanwhile (a copy resolves paths and then writes them; a commit
 * reads a consistent layer). Without a freezer it just runs `work`.
 */
export async function whileFrozen<T>(cgroupDirs: string[], work: () => Promise<T>): Promise<T> {
  const v2 = cgroupDirs.find((dir) => existsSync(`${dir}/cgroup.freeze`));
  const v1 = v2 ? undefined : cgroupDirs.find((dir) => existsSync(`${dir}/freezer.state`));
  if (!v2 && !v1) return work();
  const [file, freeze, thaw] = v2 ? [`${v2}/cgroup.freeze`, '1', '0'] : [`${v1}/freezer.state`, 'FROZEN', 'THAWED'];
  writeFileSync(file, freeze);
  try {
    for (let waited = 0; !frozen(v2, v1); waited += 5) {
      if (waited > 5000)
        throw new PetriError(`cannot freeze the container's processes (${file}): still not frozen after 5s`);
      await sleep(5);
    }
    return await work();
  } finally {
    writeFileSync(file, thaw);
  }
}

function frozen(v2: string | undefined, v1: string | undefined): boolean {
  try {
    if (v2) return /^frozen 1$/m.test(readFileSync(`${v2}/cgroup.events`, 'utf8'));
    return readFileSync(`${v1}/freezer.state`, 'utf8').trim() === 'FROZEN';
  } catch {
    return true; // the cgroup is gone: nothing left to run
  }
}
