import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { PetriError } from '../errors.js';
import { runnerPath } from '../runtime/runner-binary.js';

/** One entry of `petri-runner scan DIR` (runner/PROTOCOL.md). */
export interface ScanEntry {
  /** Relative to the scanned directory, `/`-separated. */
  path: string;
  /** file, directory, symlink, char device, block device, fifo, socket */
  type: 'f' | 'd' | 'l' | 'c' | 'b' | 'p' | 's';
  /** Permission bits with setuid, setgid and sticky. */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  rdev: [number, number];
  ino: number;
  nlink: number;
  /** Target of a symlink. */
  link?: string;
  /** Extended attributes, values base64. */
  xattrs?: Record<string, string>;
}

/**
 * Every entry under `dir` (not `dir` itself), depth first with the entries of a
 * directory sorted by name, as `petri-runner scan` reads it: without following
 * symlinks, with the xattrs (trusted.*, security.*) Node cannot read.
 */
export async function scanTree(dir: string): Promise<ScanEntry[]> {
  const child = spawn(runnerPath(), ['scan', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const closed = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve(code));
  });
  const lines: string[] = [];
  for await (const line of createInterface({ input: child.stdout })) if (line) lines.push(line);
  const code = await closed.catch((error: Error) => {
    throw new PetriError(`cannot start petri-runner scan: ${error.message}`);
  });
  if (code !== 0) {
    const why = stderr.trim().replace(/^petri-runner: /, '') || `petri-runner scan exited with ${code}`;
    throw new PetriError(`cannot read the directory tree ${dir}: ${why}`);
  }
  return lines.map((line) => JSON.parse(line) as ScanEntry);
}
