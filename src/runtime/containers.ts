import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { PetriError } from '../errors.js';
import { removeTree } from '../util/fs.js';
import { killCgroups, removeCgroups } from './cgroups/index.js';
import { releaseName } from './names.js';
import { containerDir } from './paths.js';
import { type ContainerRecord, listRecords, ownerAlive, readRecord } from './record.js';

/**
 * Containers as other petri processes see them: through their records on
 * disk (`petri ps`, `petri rm`, `petri commit`, `petri diff`).
 */

export interface ContainerInfo extends ContainerRecord {
  /** `running` only while its owner and its init still live. */
  status: 'created' | 'running' | 'exited';
  dir: string;
}

export function listContainers(): ContainerInfo[] {
  return listRecords().map(toInfo);
}

/** Finds a container by name, full id or a unique id prefix. */
export function findContainer(ref: string): ContainerInfo {
  const all = listContainers();
  const byName = all.find((c) => c.name === ref || c.id === ref);
  if (byName) return byName;
  const byPrefix = ref.length >= 3 ? all.filter((c) => c.id.startsWith(ref)) : [];
  if (byPrefix.length === 1) return byPrefix[0] as ContainerInfo;
  if (byPrefix.length > 1) throw new PetriError(`container id prefix "${ref}" is ambiguous: give more characters`);
  throw new PetriError(`no such container: ${ref}`, { code: 'ENOCONTAINER' });
}

/** Removes a container; a running one only with `force` (then it is killed first). */
export async function removeContainer(ref: string, options: { force?: boolean } = {}): Promise<ContainerInfo> {
  const container = findContainer(ref);
  if (container.status === 'running') {
    if (!options.force) {
      throw new PetriError(
        `cannot remove container ${container.name}: it is running; stop it first, or force it with petri rm -f`,
      );
    }
    killCgroups(container.cgroupDirs);
    for (let i = 0; i < 250 && container.initPid && existsSync(`/proc/${container.initPid}/ns`); i++) await sleep(20);
    // The owner of a kept container records its exit: let it, so that the two do not race on the directory.
    for (let i = 0; i < 100 && ownerStillRecording(container.dir); i++) await sleep(20);
  }
  await removeCgroups(container.cgroupDirs);
  releaseName(container.name, container.id);
  removeTree(container.dir);
  return container;
}

/** Whether a kept container's live owner has yet to record its exit (settleKept in container.ts). */
function ownerStillRecording(dir: string): boolean {
  const record = readRecord(dir);
  return record?.keep === true && record.state === 'running' && ownerAlive(record.owner);
}

function toInfo(record: ContainerRecord): ContainerInfo {
  const alive =
    record.state === 'running' &&
    ownerAlive(record.owner) &&
    record.initPid !== undefined &&
    existsSync(`/proc/${record.initPid}/ns`);
  const status = alive ? 'running' : record.state === 'created' && ownerAlive(record.owner) ? 'created' : 'exited';
  return { ...record, status, dir: containerDir(record.id) };
}
