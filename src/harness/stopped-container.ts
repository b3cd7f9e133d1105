import type { Readable } from 'node:stream';
import type { StartedContainer } from './started-container.js';
import type { CommitOptions } from './types.js';

/** A stopped container: its filesystem can still be copied from and committed until it is removed. */
export class StoppedContainer implements AsyncDisposable {
  constructor(
    private readonly started: StartedContainer,
    private readonly autoRemove: boolean,
  ) {}

  getId(): string {
    return this.started.getId();
  }

  getName(): string {
    return this.started.getName();
  }

  copyArchiveFromContainer(path: string): Promise<Readable> {
    return this.started.copyArchiveFromContainer(path);
  }

  commit(options: CommitOptions): Promise<string> {
    return this.started.commit(options);
  }

  /** Removes its writable layer and record. */
  remove(): Promise<void> {
    return this.started.remove();
  }

  /** `await using`: removes it (a withAutoRemove(false) container is kept). */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.autoRemove) await this.remove();
  }
}
