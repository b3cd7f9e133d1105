import { closeSync, lstatSync, openSync, readdirSync, readSync, rmdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Removes a directory tree without following symlinks. Small and synchronous:
 * container directories hold a handful of entries, and this keeps `fs.rmSync`'s
 * heavier machinery off the CLI's start-up path. Missing paths are fine.
 */
export function removeTree(path: string): void {
  let entries: import('node:fs').Dirent[];
  try {
    entries = readdirSync(path, { withFileTypes: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    if (code === 'ENOTDIR') {
      unlinkQuietly(path);
      return;
    }
    throw error;
  }
  for (const entry of entries) {
    const child = join(path, entry.name);
    if (entry.isDirectory()) removeTree(child);
    else unlinkQuietly(child);
  }
  rmdirQuietly(path);
}

/** Removes an empty directory that another remover may have removed first. */
export function rmdirQuietly(path: string): void {
  try {
    rmdirSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

/** Unlinks a file that another remover may have removed first. */
export function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

/** Whether a path exists without following a final symlink. */
export function lexists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** `bytes` random bytes as hex, from /dev/urandom (cheaper at start-up than loading node:crypto). */
export function randomHex(bytes: number): string {
  const buffer = Buffer.alloc(bytes);
  const fd = openSync('/dev/urandom', 'r');
  try {
    readSync(fd, buffer, 0, bytes, null);
  } finally {
    closeSync(fd);
  }
  return buffer.toString('hex');
}

/** Whether a file starts with gzip's magic bytes. */
export function isGzipFile(path: string): boolean {
  const head = Buffer.alloc(2);
  const fd = openSync(path, 'r');
  try {
    readSync(fd, head, 0, 2, 0);
  } finally {
    closeSync(fd);
  }
  return head[0] === 0x1f && head[1] === 0x8b;
}
