import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { PetriError } from '../errors.js';
import { detectCgroupMode, killCgroups } from '../runtime/cgroups/index.js';
import { type ExecProcess, type ExitResult, execInContainer } from '../runtime/container.js';
import { removeContainer } from '../runtime/containers.js';
import type { ExecOptions } from '../runtime/options.js';
import { type PortMapping, processStartTime, readRecord, writeRecord } from '../runtime/record.js';
import { runnerPath } from '../runtime/runner-binary.js';
import type { OciSpec } from '../runtime/spec.js';
import { processRuns } from './cleanup.js';
import type { ContainerHandle } from './container-handle.js';
import type { LogBuffer } from './logs.js';

const LOG_FILE = 'container.log';
const EXIT_FILE = 'exit.json';

/**
 * The parent of a reused container's runner: a small detached Node process
 * (its own session, signals ignored) that outlives the test process, so that
 * the runner's PDEATHSIG does not fire. It appends the container's output to
 * `container.log`, writes the exit event to `exit.json`, passes the runner's
 * events on until nobody reads them, and exits with the runner.
 */
const KEEPER = `
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const [runner, dir, ...args] = process.argv.slice(1);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => {});
process.stdout.on('error', () => {});
const say = (line) => { try { process.stdout.write(line + '\\n'); } catch {} };
const log = fs.openSync(dir + '/${LOG_FILE}', 'a');
const child = spawn(runner, [args[0], '--control-fd', '3', ...args.slice(1)], { stdio: ['ignore', log, log, 'pipe'] });
fs.closeSync(log);
child.on('error', (error) => say(JSON.stringify({ event: 'error', message: error.message })));
const control = child.stdio[3];
control.on('error', () => {});
control.setEncoding('utf8');
let buffered = '';
control.on('data', (chunk) => {
  buffered += chunk;
  for (let i = buffered.indexOf('\\n'); i >= 0; i = buffered.indexOf('\\n')) {
    const line = buffered.slice(0, i);
    buffered = buffered.slice(i + 1);
    try { if (JSON.parse(line).event === 'exit') fs.writeFileSync(dir + '/${EXIT_FILE}', line); } catch {}
    say(line);
  }
});
`;

export interface DetachedInfo {
  id: string;
  name: string;
  dir: string;
  lower: readonly string[];
  cgroupDirs: string[];
  initPid?: number;
  /** The ports asked for (`host` 0: any), and those published while it runs. */
  publish?: { container: number; host: number }[];
  ports?: PortMapping[];
}

/**
 * A container whose runner a keeper process runs (see KEEPER): any petri
 * process can exec in it, read its log, stop and remove it through its record.
 */
export class DetachedHandle implements ContainerHandle {
  readonly id: string;
  readonly name: string;
  readonly dir: string;
  readonly lower: readonly string[];
  readonly spec: OciSpec;
  #info: DetachedInfo;
  #exited: Promise<ExitResult> | undefined;

  constructor(info: DetachedInfo) {
    this.#info = info;
    this.id = info.id;
    this.name = info.name;
    this.dir = info.dir;
    this.lower = info.lower;
    this.spec = JSON.parse(readFileSync(join(info.dir, 'config.json'), 'utf8')) as OciSpec;
  }

  get pid(): number | undefined {
    const pid = this.#info.initPid;
    return pid !== undefined && processRuns(pid) ? pid : undefined;
  }

  get running(): boolean {
    return this.pid !== undefined;
  }

  get cgroupDirs(): string[] {
    return this.#info.cgroupDirs;
  }

  get ports(): readonly PortMapping[] {
    return this.running ? (this.#info.ports ?? []) : [];
  }

  async start(logs: LogBuffer): Promise<void> {
    if (!this.running) await this.#spawn();
    const pid = this.#info.initPid as number;
    const startedAt = Date.now();
    this.#exited = (async () => {
      while (processRuns(pid)) await sleep(50, undefined, { ref: false });
      return this.#exitResult(startedAt);
    })();
    void logs.attach(followFile(join(this.dir, LOG_FILE), this.#exited), null);
  }

  /** Starts the runner under a keeper, and records the keeper as the container's owner. */
  async #spawn(): Promise<void> {
    rmSync(join(this.dir, EXIT_FILE), { force: true });
    const keeper = spawn(process.execPath, ['-e', KEEPER, runnerPath(), this.dir, ...this.#runArgs()], {
      detached: true,
      cwd: '/',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const events = keeper.stdout;
    let error: string | undefined;
    let pid: number | undefined;
    let ports: PortMapping[] = [];
    let buffered = '';
    await new Promise<void>((resolve) => {
      events.setEncoding('utf8');
      events.on('data', (chunk: string) => {
        buffered += chunk;
        for (let i = buffered.indexOf('\n'); i >= 0; i = buffered.indexOf('\n')) {
          const line = buffered.slice(0, i);
          buffered = buffered.slice(i + 1);
          try {
            const event = JSON.parse(line) as { event: string; pid?: number; message?: string; ports?: PortMapping[] };
            if (event.event === 'started') pid = event.pid;
            if (event.event === 'ports') ports = event.ports ?? [];
            if (event.event === 'error') error = event.message;
          } catch {
            // not an event
          }
          if (pid !== undefined || error !== undefined) resolve();
        }
      });
      events.once('close', () => resolve());
      keeper.once('error', (e) => {
        error ??= e.message;
        resolve();
      });
    });
    events.destroy();
    keeper.unref();
    if (pid === undefined) {
      throw new PetriError(`cannot start container ${this.id}: ${error ?? 'its runner ended before starting it'}`);
    }
    const record = readRecord(this.dir);
    const startTime = keeper.pid === undefined ? undefined : processStartTime(keeper.pid);
    if (!record || keeper.pid === undefined || startTime === undefined) {
      throw new PetriError(`cannot start container ${this.id}: its record or its keeper process is gone`);
    }
    record.owner = { pid: keeper.pid, startTime };
    record.state = 'running';
    record.initPid = pid;
    if (ports.length > 0) record.ports = ports;
    else delete record.ports;
    delete record.exit;
    writeRecord(this.dir, record);
    this.#info = { ...this.#info, initPid: pid, cgroupDirs: record.cgroupDirs, ports };
  }

  /** What `Container.start` passes the runner, from the record: the cgroups and the bundle. */
  #runArgs(): string[] {
    const dirs = this.#info.cgroupDirs;
    const mode = detectCgroupMode();
    const cloneInto =
      mode === 'v2' ? dirs[0] : mode === 'hybrid' ? dirs.find((d) => d.includes('/unified/')) : undefined;
    const args = ['run'];
    if (cloneInto) args.push('--clone-into', cloneInto);
    for (const dir of dirs) if (dir !== cloneInto) args.push('--cgroup', dir);
    if (cloneInto) args.push('--device-bpf', cloneInto);
    for (const port of this.#info.publish ?? []) args.push('--publish', `${port.host}:${port.container}`);
    args.push(this.dir);
    return args;
  }

  async #exitResult(startedAt: number): Promise<ExitResult> {
    for (let i = 0; i < 20; i++) {
      try {
        const exit = JSON.parse(readFileSync(join(this.dir, EXIT_FILE), 'utf8')) as {
          exitCode: number;
          signal: number | null;
        };
        return { ...exit, oomKilled: false, timedOut: false, durationMs: Date.now() - startedAt };
      } catch {
        await sleep(25, undefined, { ref: false });
      }
    }
    return { exitCode: 137, signal: 9, oomKilled: false, timedOut: false, durationMs: Date.now() - startedAt };
  }

  wait(): Promise<ExitResult> {
    return this.#exited ?? this.#exitResult(Date.now());
  }

  kill(signal: NodeJS.Signals): void {
    const pid = this.pid;
    if (pid === undefined) return;
    if (signal === 'SIGKILL') killCgroups(this.cgroupDirs);
    else process.kill(pid, signal); // init passes it on to the command
  }

  exec(command: string[], options: ExecOptions): ExecProcess {
    const pid = this.pid;
    if (pid === undefined) {
      throw new PetriError(`cannot exec in container ${this.id}: it is exited`, { code: 'ESTATE' });
    }
    return execInContainer(
      { id: this.id, dir: this.dir, spec: this.spec, pid, cgroupDirs: this.cgroupDirs },
      command,
      options,
    );
  }

  async remove(): Promise<void> {
    try {
      await removeContainer(this.id, { force: true });
    } catch (error) {
      if ((error as PetriError).code !== 'ENOCONTAINER') throw error;
    }
  }
}

/** A file as it grows, until `ended` settles (then what is left is read). */
function followFile(path: string, ended: Promise<unknown>): Readable {
  let offset = 0;
  let done = false;
  void ended.finally(() => {
    done = true;
  });
  const buffer = Buffer.alloc(64 * 1024);
  const readMore = (): Buffer | undefined => {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch {
      return undefined;
    }
    try {
      const n = readSync(fd, buffer, 0, buffer.length, offset);
      offset += n;
      return n > 0 ? Buffer.from(buffer.subarray(0, n)) : undefined;
    } finally {
      closeSync(fd);
    }
  };
  return Readable.from(
    (async function* () {
      for (;;) {
        const finished = done;
        for (let chunk = readMore(); chunk; chunk = readMore()) yield chunk;
        if (finished) return;
        await sleep(100, undefined, { ref: false });
      }
    })(),
  );
}
