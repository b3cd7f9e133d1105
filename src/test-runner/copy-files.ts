import { chmod, chown, cp, lstat, mkdir, stat } from 'node:fs/promises';
import { basename, join, posix } from 'node:path';
import type { TestJob } from './config-validate.js';

/**
 * Copies a job's `files` into a created (not yet started) container's writable
 * layer, so that they are there when its command starts. The directories on
 * the way that the image has keep its owner and mode (a directory in the upper
 * layer hides the attributes of the image's); new ones are root's, 0755.
 */
export async function copyJobFiles(files: TestJob['files'], upper: string, lower: string[]): Promise<void> {
  for (const file of files) {
    const source = await stat(file.source);
    let target = posix.normalize(file.target);
    if (!source.isDirectory() && file.target.endsWith('/')) target = posix.join(target, basename(file.source));
    const parent = source.isDirectory() ? target : posix.dirname(target);
    await makeDirs(upper, lower, parent);
    try {
      await cp(file.source, join(upper, target), { recursive: true, force: true, dereference: false });
    } catch (error) {
      throw new Error(`cannot copy ${file.shown} to ${file.target}: ${(error as Error).message}`);
    }
  }
}

async function makeDirs(upper: string, lower: string[], path: string): Promise<void> {
  let current = '/';
  for (const part of path.split('/').filter(Boolean)) {
    current = posix.join(current, part);
    const inUpper = join(upper, current);
    try {
      const existing = await lstat(inUpper);
      if (existing.isDirectory()) continue;
      throw new Error(`cannot copy files to ${path}: ${current} is not a directory in the container`);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    const image = await fromLayers(lower, current);
    if (image && !image.isDirectory()) {
      throw new Error(
        `cannot copy files to ${path}: ${current} is ${image.isSymbolicLink() ? 'a symlink' : 'not a directory'} in the image (name the real path)`,
      );
    }
    await mkdir(inUpper, { mode: 0o755 });
    if (image) {
      await chown(inUpper, image.uid, image.gid);
      await chmod(inUpper, image.mode & 0o7777);
    }
  }
}

/** The topmost layer's entry at `path`, if any layer has one (a whiteout hides it). */
async function fromLayers(lower: string[], path: string) {
  for (const dir of lower) {
    try {
      const entry = await lstat(join(dir, path));
      if (entry.isCharacterDevice() && entry.rdev === 0) return undefined;
      return entry;
    } catch {
      // not in this layer
    }
  }
  return undefined;
}
