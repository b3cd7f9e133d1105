import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';

const top = join(import.meta.dirname, '..', '..');

/** Waits out the result cache's racy window: a build less than 100 ms after a change to its files is not remembered. */
export const settle = () => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 150);

/**
 * For the replay tests: a copy of the package under `dir` (bin, bundle, runner: a test may touch its files), and a
 * PATH directory without node, where a build the runner does not answer fails with "cannot run node" (exit 127).
 */
export function replayPackage(dir: string): { pkg: string; noNode: string } {
  const pkg = join(dir, 'pkg');
  for (const part of ['bin', 'dist', 'build', 'package.json'])
    cpSync(join(top, part), join(pkg, part), { recursive: true });
  symlinkSync(join(top, 'node_modules'), join(pkg, 'node_modules'));
  const noNode = join(dir, 'tools');
  mkdirSync(noNode);
  symlinkSync(
    spawnSync('sh', ['-c', 'command -v readlink'], { encoding: 'utf8' }).stdout.trim(),
    join(noNode, 'readlink'),
  );
  return { pkg, noNode };
}
