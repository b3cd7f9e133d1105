import type { Readable } from 'node:stream';
import type { Container, ExecProcess, ExitResult } from '../runtime/container.js';
import type { ExecOptions } from '../runtime/options.js';
import type { PortMapping } from '../runtime/record.js';
import type { OciSpec } from '../runtime/spec.js';
import type { LogBuffer } from './logs.js';

/** What the API needs of a container, whether this process runs it or a reused one is attached. */
export interface ContainerHandle {
  readonly id: string;
  readonly name: string;
  /** Its directory: record, bundle, upper dir. */
  readonly dir: string;
  readonly spec: OciSpec;
  /** Its read-only layers, top first. */
  readonly lower: readonly string[];
  /** Host pid of its init while it runs. */
  readonly pid: number | undefined;
  readonly running: boolean;
  readonly cgroupDirs: string[];
  /** Its published ports while it runs (host ports on 127.0.0.1). */
  readonly ports: readonly PortMapping[];
  /** Starts it (again, after it ended), its output going to `logs`; resolves once the command runs. */
  start(logs: LogBuffer): Promise<void>;
  /** The end of the current run. */
  wait(): Promise<ExitResult>;
  /** Sends a signal to the command (SIGKILL: the whole container). */
  kill(signal: NodeJS.Signals): void;
  exec(command: string[], options: ExecOptions): ExecProcess;
  remove(): Promise<void>;
}

/** A container this process runs, through the runtime: it dies with the process. */
export class LocalHandle implements ContainerHandle {
  #starts = 0;

  constructor(
    readonly container: Container,
    readonly lower: readonly string[],
  ) {}

  get id(): string {
    return this.container.id;
  }

  get name(): string {
    return this.container.name;
  }

  get dir(): string {
    return this.container.dir;
  }

  get spec(): OciSpec {
    return this.container.spec;
  }

  get pid(): number | undefined {
    return this.container.state === 'running' ? this.container.pid : undefined;
  }

  get running(): boolean {
    return this.container.state === 'running';
  }

  get cgroupDirs(): string[] {
    return this.container.cgroupDirs;
  }

  get ports(): readonly PortMapping[] {
    return this.container.ports;
  }

  async start(logs: LogBuffer): Promise<void> {
    const first = this.#starts++ === 0;
    // The logs follow the output from the spawn on: a command that exits at once loses nothing.
    const io = { onOutput: (stdout: Readable | null, stderr: Readable | null) => void logs.attach(stdout, stderr) };
    await (first ? this.container.start(io) : this.container.restart(io));
    this.container.unref(); // like testcontainers: a running container does not keep the process alive
  }

  wait(): Promise<ExitResult> {
    return this.container.wait();
  }

  kill(signal: NodeJS.Signals): void {
    if (this.container.state === 'running') this.container.kill(signal);
  }

  exec(command: string[], options: ExecOptions): ExecProcess {
    return this.container.exec(command, options);
  }

  remove(): Promise<void> {
    return this.container.remove();
  }
}
