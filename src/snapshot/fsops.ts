import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { constants } from 'node:os';
import { PetriError } from '../errors.js';
import { runnerPath } from '../runtime/runner-binary.js';
import type { ScanEntry } from './scan.js';

export type FsOp =
  | { op: 'mknod'; path: string; type: 'c' | 'b' | 'p'; major: number; minor: number; mode: number }
  | { op: 'whiteout'; path: string }
  | { op: 'opaque'; path: string }
  | { op: 'setxattr'; path: string; name: string; value: string }
  | { op: 'scan'; path: string };

const errnoNames = new Map(Object.entries(constants.errno).map(([name, value]) => [value, name]));

/**
 * A `petri-runner fsops` process (runner/PROTOCOL.md) for the calls Node cannot
 * make: device nodes, fifos, overlay whiteouts, xattrs, scans of trees with
 * their xattrs. Started on the first op (or by `start()`, ahead of it);
 * ops are applied in order, each answered before the caller goes on. A failed op
 * rejects with a PetriError whose `code` is the errno name (`EPERM`) when a system
 * call failed. `close()` ends the process.
 */
export class FsOps {
  #child: ChildProcessWithoutNullStreams | undefined;
  #waiting: { resolve: () => void; reject: (error: Error) => void; lines?: string[] }[] = [];
  #failure: Error | undefined;
  #closed: Promise<void> | undefined;
  #stderr = '';

  mknod(path: string, type: 'c' | 'b' | 'p', major: number, minor: number, mode: number): Promise<void> {
    return this.apply({ op: 'mknod', path, type, major, minor, mode });
  }

  whiteout(path: string): Promise<void> {
    return this.apply({ op: 'whiteout', path });
  }

  opaque(path: string): Promise<void> {
    return this.apply({ op: 'opaque', path });
  }

  setxattr(path: string, name: string, value: Buffer): Promise<void> {
    return this.apply({ op: 'setxattr', path, name, value: value.toString('base64') });
  }

  /**
   * Every entry under `dir`, as `scanTree` reads it, without a process of its
   * own: a builder scans each layer it writes with one FsOps.
   */
  async scan(dir: string): Promise<ScanEntry[]> {
    const lines: string[] = [];
    await this.#send({ op: 'scan', path: dir }, lines).catch((error: PetriError) => {
      throw new PetriError(`cannot read the directory tree ${dir}: ${error.message}`, { cause: error });
    });
    return lines.map((line) => JSON.parse(line) as ScanEntry);
  }

  apply(op: FsOp): Promise<void> {
    return this.#send(op);
  }

  #send(op: FsOp, lines?: string[]): Promise<void> {
    const child = this.#start();
    return new Promise((resolve, reject) => {
      if (this.#failure) return reject(this.#failure);
      this.#waiting.push({ resolve, reject, ...(lines ? { lines } : {}) });
      child.stdin.write(`${JSON.stringify(op)}\n`);
    });
  }

  /** Ends the process (after the ops sent so far) and waits for it. */
  close(): Promise<void> {
    const child = this.#child;
    if (!child || !this.#closed) return Promise.resolve();
    child.stdin.end();
    return this.#closed;
  }

  /** Starts the process now, so that it is ready when the first op comes. */
  start(): void {
    this.#start();
  }

  #start(): ChildProcessWithoutNullStreams {
    if (this.#child) return this.#child;
    const child = spawn(runnerPath(), ['fsops'], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#child = child;
    this.#closed = new Promise((resolve) => child.once('close', () => resolve()));
    child.on('error', (error) => this.#fail(new PetriError(`cannot start petri-runner fsops: ${error.message}`)));
    child.once('close', (code, signal) => {
      const why = this.#stderr.trim().split('\n')[0] || `exit status ${code ?? signal}`;
      this.#fail(new PetriError(`petri-runner fsops ended before answering (${why})`));
    });
    child.stdin.on('error', () => {}); // reported by 'close'
    child.stderr.on('data', (chunk: Buffer) => {
      this.#stderr += chunk.toString();
    });
    let partial = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) this.#answer(line);
    });
    return child;
  }

  #answer(line: string): void {
    const scanning = this.#waiting[0]?.lines;
    if (scanning && line.startsWith('{')) {
      scanning.push(line);
      return;
    }
    const waiter = this.#waiting.shift();
    if (!waiter) return;
    if (line === 'ok') {
      waiter.resolve();
      return;
    }
    const message = line.replace(/^error /, '');
    const errno = /\(errno (\d+)\)$/.exec(message);
    const code = errno ? errnoNames.get(Number(errno[1])) : undefined;
    waiter.reject(new PetriError(message.replace(/ \(errno \d+\)$/, ''), code ? { code } : {}));
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    for (const waiter of this.#waiting.splice(0)) waiter.reject(error);
  }
}
