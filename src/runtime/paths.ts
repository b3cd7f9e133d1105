import { join } from 'node:path';

/** petri's state directory: `$PETRI_ROOT`, by default `/var/lib/petri`. */
export function petriRoot(): string {
  return process.env.PETRI_ROOT || '/var/lib/petri';
}

export function containersDir(root = petriRoot()): string {
  return join(root, 'containers');
}

export function containerDir(id: string, root = petriRoot()): string {
  return join(containersDir(root), id);
}
