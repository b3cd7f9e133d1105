import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { onJsonEvents } from './json-events.js';
import { runnerPath } from './runner-binary.js';
import type { Stdio } from './runner-process.js';

/** How a served runner ended: its exit code, or the signal that killed it. */
export interface ServedExit {
  code: number | null;
  signal: number | null;
}

/** A runner forked by the server: its control socket and stdio connections. */
export interface ServedLaunch {
  control: Socket;
  stdin: Socket | null;
  stdout: Socket | null;
  stderr: Socket | null;
  /** Resolves when the runner has ended and its control socket and output are closed (ChildProcess 'close'). */
  closed: Promise<ServedExit>;
  /** Whether this launch keeps the event loop alive. */
  hold(hold: boolean): void;
}

/**
 * `petri-runner serve` (runner/serve.c): one fork server per harness process,
 * already running from its sealed copy, forks each runner, so starting a
 * container forks no Node (a fork of a big Node process costs milliseconds of
 * main-thread time) and no runner executes itself twice. Streams are
 * connections to its abstract socket, which only this process may use.
 */
class RunnerServer {
  readonly child: ChildProcess;
  private readonly name = `petri-runner-${process.pid}-${randomBytes(6).toString('hex')}`;
  private readonly channel: Socket;
  ready = false;
  private dead = false;
  /** Resolves once the server is ready or dead. */
  readonly settled: Promise<void>;
  /** A wait for it timed out: nobody waits for this one again (runners are spawned until it is ready). */
  slow = false;
  private settle!: () => void;
  private readonly reaped = new Map<number, (exit: ServedExit) => void>();
  private nextId = 1;
  private holds = 0;

  constructor() {
    this.settled = new Promise((resolve) => {
      this.settle = resolve;
    });
    this.child = spawn(runnerPath(), ['serve', '--socket', this.name, '--control-fd', '3'], {
      stdio: ['ignore', 'inherit', 'inherit', 'pipe'],
    });
    this.child.on('error', () => this.die());
    this.child.on('exit', () => this.die());
    this.channel = this.child.stdio[3] as Socket;
    this.channel.on('error', () => {});
    onJsonEvents<{ event?: string; id?: number; exitCode?: number | null; signal?: number | null }>(
      this.channel,
      (event) => {
        if (event.event === 'ready') {
          this.ready = true;
          this.settle();
        } else if (event.event === 'reaped' && event.id !== undefined) {
          const resolve = this.reaped.get(event.id);
          this.reaped.delete(event.id);
          resolve?.({ code: event.exitCode ?? null, signal: event.signal ?? null });
        } else if (event.event === 'error') {
          this.die();
        }
      },
    );
    this.updateHold();
  }

  get alive(): boolean {
    return !this.dead;
  }

  private die(): void {
    if (this.dead) return;
    this.dead = true;
    this.settle();
    if (server === this) server = undefined;
    for (const [id, resolve] of this.reaped) {
      this.reaped.delete(id);
      resolve({ code: null, signal: 9 });
    }
    this.child.kill('SIGKILL');
  }

  private updateHold(): void {
    const hold = this.holds > 0;
    if (hold) this.child.ref();
    else this.child.unref();
    const handle = this.channel as unknown as { ref(): void; unref(): void };
    if (hold) handle.ref();
    else handle.unref();
  }

  launch(argv: string[], stdio: [Stdio, Stdio, Stdio]): ServedLaunch {
    const id = this.nextId++;
    const roles = stdio.map((s, k) => (s === 'pipe' ? String(k) : s === 'inherit' && k > 0 ? 'i' : '')).join('') || '-';
    const args = Buffer.from(`${argv.join('\0')}\0`);
    const sockets: Socket[] = [];
    const open = (header: Buffer | string): Socket => {
      const socket = connect(`\0${this.name}`);
      socket.on('error', () => {});
      socket.write(header);
      sockets.push(socket);
      return socket;
    };
    const streams = stdio.map((s, k) => (s === 'pipe' ? open(`${id} ${k}\n`) : null)) as [
      Socket | null,
      Socket | null,
      Socket | null,
    ];
    const control = open(Buffer.concat([Buffer.from(`${id} ctl ${roles} ${args.length}\n`), args]));
    const exit = new Promise<ServedExit>((resolve) => {
      if (this.dead) resolve({ code: 125, signal: null });
      else this.reaped.set(id, resolve);
    });
    const ends = sockets.map((socket) => new Promise<void>((resolve) => socket.once('close', () => resolve())));
    const closed = Promise.all([exit, ...ends]).then(([result]) => result);
    let held = false;
    const hold = (on: boolean) => {
      if (on === held) return;
      held = on;
      this.holds += on ? 1 : -1;
      this.updateHold();
      for (const socket of sockets) {
        if (on) socket.ref();
        else socket.unref();
      }
    };
    hold(true);
    closed.then(() => hold(false));
    return { control, stdin: streams[0], stdout: streams[1], stderr: streams[2], closed, hold };
  }
}

let server: RunnerServer | undefined;
let enabled = false;

/**
 * Starts runners through a fork server from now on (petri test, the
 * test-suite API): spawned at once, so that it is ready by the first container.
 */
export function useRunnerServer(on = true): void {
  enabled = on;
  if (on) sharedServer();
  else if (server) {
    server.child.kill('SIGKILL');
    server = undefined;
  }
}

function sharedServer(): RunnerServer | undefined {
  if (!enabled) return undefined;
  if (!server?.alive) {
    try {
      server = new RunnerServer();
    } catch {
      server = undefined;
    }
  }
  return server;
}

/**
 * The fork server when it is in use and ready (a new one is started after a
 * dead one); until it is ready, runners are spawned as usual.
 */
export function readyServer(): RunnerServer | undefined {
  const current = sharedServer();
  return current?.ready ? current : undefined;
}

/**
 * While a fork server is starting: a promise that resolves once it is ready
 * or dead, or after `timeoutMs`, so that the first container of a process is
 * forked by it rather than spawned from Node (the server's `ready` line is
 * usually already there, unread while the main thread was busy). Undefined
 * when there is nothing to wait for. Callers wait before `Container.start`,
 * never in it: its callers read the new runner's streams at once.
 */
export function serverStarting(timeoutMs = 1000): Promise<void> | undefined {
  const current = enabled ? server : undefined;
  if (!current?.alive || current.ready || current.slow) return undefined;
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    current.settled,
    // a held timer: the server's channel is unreferenced, and the caller waits on it
    new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        current.slow = true;
        resolve();
      }, timeoutMs);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Whether runners go through a fork server (it may still be starting). */
export function runnerServerInUse(): boolean {
  return enabled && server?.alive === true;
}

/** Whether a runner with this stdio can be forked by the server (its stdin cannot be ours). */
export function servable(stdio: [Stdio, Stdio, Stdio]): boolean {
  return stdio[0] !== 'inherit';
}
