import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { PetriError } from '../errors.js';
import { runnerPath } from '../runtime/runner-binary.js';
import { devMajor, devMinor } from '../util/dev.js';
import { childProcess } from '../util/lazy-builtins.js';

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
  const child = childProcess().spawn(runnerPath(), ['scan', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const out: Buffer[] = [];
  child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
  const closed = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve(code));
  });
  const code = await closed.catch((error: Error) => {
    throw new PetriError(`cannot start petri-runner scan: ${error.message}`);
  });
  if (code !== 0) {
    const why = stderr.trim().replace(/^petri-runner: /, '') || `petri-runner scan exited with ${code}`;
    throw new PetriError(`cannot read the directory tree ${dir}: ${why}`);
  }
  const lines = Buffer.concat(out).toString('utf8').split('\n');
  return lines.filter((line) => line !== '').map((line) => JSON.parse(line) as ScanEntry);
}

/**
 * The same entries as `scanTree`, read with lstat in this process: for a tree
 * that petri wrote itself with Node's fs calls, which holds no xattrs that a
 * layer keeps and no device nodes (no helper to start). Names in byte order,
 * as petri-runner sorts them.
 */
export function scanOwnTree(dir: string): ScanEntry[] {
  const entries: ScanEntry[] = [];
  const walk = (abs: string, rel: string): void => {
    const names = readdirSync(abs).sort(byBytes);
    for (const name of names) {
      const path = join(abs, name);
      const relPath = rel ? `${rel}/${name}` : name;
      const st = lstatSync(path, { bigint: true, throwIfNoEntry: false });
      if (!st) continue; // gone meanwhile: skipped, as petri-runner does
      const type = st.isFile()
        ? 'f'
        : st.isDirectory()
          ? 'd'
          : st.isSymbolicLink()
            ? 'l'
            : st.isCharacterDevice()
              ? 'c'
              : st.isBlockDevice()
                ? 'b'
                : st.isFIFO()
                  ? 'p'
                  : 's';
      const ns = st.mtimeNs;
      const entry: ScanEntry = {
        path: relPath,
        type,
        mode: Number(st.mode & 0o7777n),
        uid: Number(st.uid),
        gid: Number(st.gid),
        size: Number(st.size),
        // whole seconds, rounded down as the kernel's tv_sec
        mtime: Number(ns / 1_000_000_000n - (ns < 0n && ns % 1_000_000_000n !== 0n ? 1n : 0n)),
        rdev: [devMajor(Number(st.rdev)), devMinor(Number(st.rdev))],
        ino: Number(st.ino),
        nlink: Number(st.nlink),
      };
      if (type === 'l') entry.link = readlinkSync(path, 'utf8');
      entries.push(entry);
      if (type === 'd') walk(path, relPath);
    }
  };
  try {
    walk(dir, '');
  } catch (error) {
    throw new PetriError(`cannot read the directory tree ${dir}: ${(error as Error).message}`, { cause: error });
  }
  return entries;
}

/** strcmp's order of two names' UTF-8 bytes. */
function byBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}
