import { type ChildProcess, type StdioOptions, spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import { constants } from 'node:os';
import type { PortMapping } from './record.js';
import { runnerPath } from './runner-binary.js';

export type Stdio = 'pipe' | 'inherit' | 'ignore';

export interface RunnerExit {
  exitCode: number;
  signal: number | null;
  /** Set when setup failed before the command ran. */
  error?: string;
}

/**
 * A running `petri-runner` (run or exec mode) and its control socket (fd 3):
 * events come in as JSON lines, commands go out as text lines.
 */
export class RunnerProcess {
  readonly child: ChildProcess;
  /** Host pid of the container's PID 1 (or the exec'd process) once started. */
  pid: number | undefined;
  /** The published ports (`run --publish`), once bound. */
  ports: PortMapping[] = [];
  readonly started: Promise<void>;
  readonly exited: Promise<RunnerExit>;
  private readonly control: Socket;

  constructor(args: string[], stdio: [Stdio, Stdio, Stdio]) {
    this.child = spawn(runnerPath(), [args[0] as string, '--control-fd', '3', ...args.slice(1)], {
      stdio: [...stdio, 'pipe'] as StdioOptions,
    });
    this.control = this.child.stdio[3] as Socket;
    let error: string | undefined;
    let exit: { exitCode: number; signal: number | null } | undefined;
    let resolveStarted!: () => void;
    let rejectStarted!: (e: Error) => void;
    this.started = new Promise((resolve, reject) => {
      resolveStarted = resolve;
      rejectStarted = reject;
    });
    this.started.catch(() => {});
    let buffered = '';
    this.control.setEncoding('utf8');
    this.control.on('data', (chunk: string) => {
      buffered += chunk;
      let newline = buffered.indexOf('\n');
      while (newline >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        newline = buffered.indexOf('\n');
        let event: {
          event: string;
          pid?: number;
          message?: string;
          exitCode?: number;
          signal?: number | null;
          ports?: PortMapping[];
        };
        try {
          event = JSON.parse(line);
        } catch {
          continue;
        }
        if (event.event === 'started') {
          this.pid = event.pid;
          resolveStarted();
        } else if (event.event === 'ports') {
          this.ports = event.ports ?? [];
        } else if (event.event === 'error') {
          error = event.message ?? 'unknown error';
        } else if (event.event === 'exit') {
          exit = { exitCode: event.exitCode ?? 0, signal: event.signal ?? null };
        }
      }
    });
    this.control.on('error', () => {});
    this.exited = new Promise((resolve) => {
      this.child.on('error', (e) => {
        error ??= `cannot run ${runnerPath()}: ${e.message}`;
      });
      this.child.on('close', (code, signal) => {
        let result: RunnerExit;
        if (exit) result = exit;
        else if (signal) result = { exitCode: 128 + signalNumber(signal), signal: signalNumber(signal) };
        else result = { exitCode: code ?? 125, signal: null };
        if (error !== undefined) result = { ...result, error };
        if (this.pid === undefined) rejectStarted(new Error(error ?? `petri-runner exited with ${result.exitCode}`));
        resolve(result);
      });
    });
  }

  /** Kills the container (or exec'd process): the runner SIGKILLs it and its PID namespace. */
  kill(): void {
    this.send('kill');
  }

  signal(signal: number): void {
    this.send(`signal ${signal}`);
  }

  private send(line: string): void {
    if (!this.control.destroyed && this.control.writable) this.control.write(`${line}\n`);
  }
}

function signalNumber(name: NodeJS.Signals): number {
  return constants.signals[name] ?? 9;
}
