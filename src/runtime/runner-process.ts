import { type ChildProcess, type StdioOptions, spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import { constants } from 'node:os';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { onJsonEvents } from './json-events.js';
import type { PortMapping } from './record.js';
import { runnerPath } from './runner-binary.js';
import { readyServer, runnerServerInUse, type ServedLaunch, servable } from './runner-server.js';

export type Stdio = 'pipe' | 'inherit' | 'ignore';

export interface RunnerExit {
  exitCode: number;
  signal: number | null;
  /** Set when setup failed before the command ran. */
  error?: string;
}

/** A process `exec`'d through a run supervisor's control socket (`exec ID JSON`). */
export interface ServedExec {
  stdout: PassThrough;
  stderr: PassThrough;
  /** The runner's exit report for the process (`error` when it never ran). */
  result: Promise<RunnerExit>;
  signal(signal: number): void;
}

interface ServedState {
  stdout: PassThrough;
  stderr: PassThrough;
  started: boolean;
  error?: string;
  resolve: (exit: RunnerExit) => void;
}

/**
 * A running `petri-runner` (run or exec mode) and its control socket (fd 3):
 * events come in as JSON lines, commands go out as text lines.
 */
export class RunnerProcess {
  /** The spawned runner; undefined when the fork server forked it (runner-server.ts). */
  readonly child: ChildProcess | undefined;
  readonly stdin: Writable | null;
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
  private readonly launch: ServedLaunch | undefined;
  /** Host pid of the container's PID 1 (or the exec'd process) once started. */
  pid: number | undefined;
  /** The published ports (`run --publish`), once bound. */
  ports: PortMapping[] = [];
  /** The runner's `upper` event (ContainerOptions.reportUpper), once the command ended. */
  upper: { plain: boolean; entries?: number } | undefined;
  readonly started: Promise<void>;
  readonly exited: Promise<RunnerExit>;
  private readonly control: Socket;
  private readonly served = new Map<number, ServedState>();
  private nextExec = 1;
  private closed = false;
  private unrefed = false;

  constructor(args: string[], stdio: [Stdio, Stdio, Stdio]) {
    const argv = [args[0] as string, '--control-fd', '3', ...args.slice(1)];
    const server = (args[0] === 'run' || args[0] === 'exec') && servable(stdio) ? readyServer() : undefined;
    if (server) {
      this.launch = server.launch(argv, stdio);
      this.control = this.launch.control;
      this.stdin = this.launch.stdin;
      this.stdout = this.launch.stdout;
      this.stderr = this.launch.stderr;
    } else {
      const ready =
        standbyEnabled && args[0] === 'run' && stdio.join() === STANDBY_STDIO.join() ? takeStandby() : undefined;
      if (ready) {
        // A runner spawned ahead, sealed and waiting: its command line goes down its control socket.
        this.child = ready;
        holdEventLoop(ready, true);
        (ready.stdio[3] as Socket).write(`${argv.join('\0')}\0\0`);
      } else {
        this.child = spawn(runnerPath(), argv, { stdio: [...stdio, 'pipe'] as StdioOptions });
      }
      if (standbyEnabled && args[0] === 'run') setImmediate(refillStandby);
      this.control = this.child.stdio[3] as Socket;
      this.stdin = this.child.stdin;
      this.stdout = this.child.stdout;
      this.stderr = this.child.stderr;
    }
    let error: string | undefined;
    let exit: { exitCode: number; signal: number | null } | undefined;
    let resolveStarted!: () => void;
    let rejectStarted!: (e: Error) => void;
    this.started = new Promise((resolve, reject) => {
      resolveStarted = resolve;
      rejectStarted = reject;
    });
    this.started.catch(() => {});
    onJsonEvents<{
      event: string;
      exec?: number;
      pid?: number;
      message?: string;
      exitCode?: number;
      signal?: number | null;
      ports?: PortMapping[];
      plain?: boolean;
      entries?: number;
      fd?: number;
      data?: string;
    }>(this.control, (event) => {
      if (event.exec !== undefined) {
        this.servedEvent(event.exec, event);
      } else if (event.event === 'started') {
        this.pid = event.pid;
        resolveStarted();
      } else if (event.event === 'upper') {
        this.upper = {
          plain: event.plain === true,
          ...(event.entries !== undefined ? { entries: event.entries } : {}),
        };
      } else if (event.event === 'ports') {
        this.ports = event.ports ?? [];
      } else if (event.event === 'error') {
        error = event.message ?? 'unknown error';
      } else if (event.event === 'exit') {
        exit = { exitCode: event.exitCode ?? 0, signal: event.signal ?? null };
      }
    });
    this.control.on('error', () => {});
    this.exited = new Promise((resolve) => {
      const closed = (code: number | null, signal: number | null) => {
        this.closed = true;
        for (const [id, state] of this.served) {
          this.served.delete(id);
          state.stdout.end();
          state.stderr.end();
          state.resolve({ exitCode: 137, signal: 9, error: state.error ?? 'the container ended' });
        }
        let result: RunnerExit;
        if (exit) result = exit;
        else if (signal) result = { exitCode: 128 + signal, signal };
        else result = { exitCode: code ?? 125, signal: null };
        if (error !== undefined) result = { ...result, error };
        if (this.pid === undefined) rejectStarted(new Error(error ?? `petri-runner exited with ${result.exitCode}`));
        resolve(result);
      };
      if (this.launch) {
        this.launch.closed.then(({ code, signal }) => closed(code, signal));
        return;
      }
      const child = this.child as ChildProcess;
      child.on('error', (e) => {
        error ??= `cannot run ${runnerPath()}: ${e.message}`;
      });
      child.on('close', (code, signal) => closed(code, signal ? signalNumber(signal) : null));
    });
  }

  /** Lets this process end while the runner runs (its pipes and control socket no longer hold the event loop). */
  unref(): void {
    this.unrefed = true;
    if (this.child) holdEventLoop(this.child, false);
    else this.launch?.hold(false);
    if (this.served.size > 0) this.control.ref();
  }

  /** Kills the container (or exec'd process): the runner SIGKILLs it and its PID namespace. */
  kill(): void {
    this.send('kill');
  }

  signal(signal: number): void {
    this.send(`signal ${signal}`);
  }

  /**
   * Runs a process in the container through this (run) runner: it forks the
   * process itself, straight into the container's cgroups, so nothing is
   * spawned here. stdin is /dev/null; stdout and stderr come back as events.
   */
  exec(processJson: string): ServedExec {
    const id = this.nextExec++;
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let resolve!: (exit: RunnerExit) => void;
    const result = new Promise<RunnerExit>((r) => {
      resolve = r;
    });
    if (this.closed || this.control.destroyed || !this.control.writable) {
      stdout.end();
      stderr.end();
      resolve({ exitCode: 125, signal: null, error: 'the container is not running' });
    } else {
      this.served.set(id, { stdout, stderr, started: false, resolve });
      // An exec holds the event loop open until it ends, even when the container does not.
      this.control.ref();
      this.send(`exec ${id} ${processJson}`);
    }
    return { stdout, stderr, result, signal: (signal: number) => this.send(`exec-signal ${id} ${signal}`) };
  }

  private servedEvent(
    id: number,
    event: { event: string; message?: string; exitCode?: number; signal?: number | null; fd?: number; data?: string },
  ): void {
    const state = this.served.get(id);
    if (!state) return;
    if (event.event === 'output') {
      (event.fd === 2 ? state.stderr : state.stdout).write(Buffer.from(event.data ?? '', 'base64'));
    } else if (event.event === 'started') {
      state.started = true;
    } else if (event.event === 'error') {
      // Setup failed before the process ran; the exit (125, 126 or 127) follows.
      state.error = event.message ?? 'unknown error';
    } else if (event.event === 'exit') {
      this.endServed(id, state, { exitCode: event.exitCode ?? 0, signal: event.signal ?? null });
    }
  }

  private endServed(id: number, state: ServedState, exit: { exitCode: number; signal: number | null }): void {
    this.served.delete(id);
    if (this.served.size === 0 && this.unrefed) this.control.unref();
    state.stdout.end();
    state.stderr.end();
    state.resolve(state.error !== undefined && !state.started ? { ...exit, error: state.error } : exit);
  }

  private send(line: string): void {
    if (!this.control.destroyed && this.control.writable) this.control.write(`${line}\n`);
  }
}

const STANDBY_STDIO: [Stdio, Stdio, Stdio] = ['ignore', 'pipe', 'pipe'];
let standbyEnabled = false;
let standby: ChildProcess | undefined;

/**
 * Keeps one `petri-runner standby` ready for the next `run` with piped output
 * (what the test-suite API starts): the fork of this Node process (which costs
 * more the bigger its heap) and the runner's own start-up happen ahead, not
 * while a test waits for its container. The standby holds nothing open here
 * (unref'd) and dies with this process.
 */
export function useStandbyRunners(enabled = true): void {
  standbyEnabled = enabled;
  if (!enabled && standby) {
    standby.kill('SIGKILL');
    standby = undefined;
  }
}

function takeStandby(): ChildProcess | undefined {
  const child = standby;
  standby = undefined;
  if (!child || child.exitCode !== null || child.signalCode !== null) return undefined;
  const control = child.stdio[3] as Socket | null;
  if (!control || control.destroyed || !control.writable) return undefined;
  return child;
}

function refillStandby(): void {
  // A fork server that is starting will be ready before the next container: no runner spawned ahead then.
  if (!standbyEnabled || standby || runnerServerInUse()) return;
  let child: ChildProcess;
  try {
    child = spawn(runnerPath(), ['standby', '--control-fd', '3'], {
      stdio: [...STANDBY_STDIO, 'pipe'] as StdioOptions,
    });
  } catch {
    return;
  }
  child.on('error', () => {});
  child.once('exit', () => {
    if (standby === child) standby = undefined;
  });
  holdEventLoop(child, false);
  standby = child;
}

/** Whether a child process and its pipes keep this process's event loop alive. */
function holdEventLoop(child: ChildProcess, hold: boolean): void {
  if (hold) child.ref();
  else child.unref();
  for (const stream of child.stdio) {
    const handle = stream as { ref?: () => void; unref?: () => void } | null;
    if (hold) handle?.ref?.();
    else handle?.unref?.();
  }
}

function signalNumber(name: NodeJS.Signals): number {
  return constants.signals[name] ?? 9;
}
