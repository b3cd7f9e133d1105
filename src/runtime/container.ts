import { spawn } from 'node:child_process';
import { promises as fsp, mkdirSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { PetriError, withCleanupError } from '../errors.js';
import { randomHex, removeTree, rmdirQuietly, unlinkQuietly } from '../util/fs.js';
import { type CgroupMode, type ContainerCgroups, createCgroups, detectCgroupMode } from './cgroups/index.js';
import { checkNameFree, releaseName, reserveName } from './names.js';
import type { ContainerOptions, ExecOptions } from './options.js';
import { containerDir, containersDir, petriRoot } from './paths.js';
import {
  type ContainerRecord,
  createRecordAsync,
  type PortMapping,
  rewriteRecordInPlace,
  selfIdentity,
  writeRecord,
  writeRecordAsync,
} from './record.js';
import { RunnerProcess, type Stdio } from './runner-process.js';
import { retireToSpare, reuseSpare, spareCount } from './spares.js';
import { createSpec, type OciProcess, type OciSpec } from './spec.js';
import { sweepOnce } from './sweep.js';

/** Longer lower-dir lists go through short links (a mount's options must fit in a page). */
const MAX_LOWER_OPTION = 2048;

export type ContainerState = 'created' | 'running' | 'exited' | 'removed';

export interface ExitResult {
  exitCode: number;
  /** The signal number that killed the command, if one did. */
  signal: number | null;
  oomKilled: boolean;
  timedOut: boolean;
  durationMs: number;
}

export interface StdioOptions {
  stdin?: Stdio;
  stdout?: Stdio;
  stderr?: Stdio;
  /**
   * Called with the command's stdout and stderr as soon as the runner is
   * spawned, before anything of it can end: a consumer attached later may miss
   * the output of a command that exits at once (Node drops what unconsumed
   * child streams hold when the child exits).
   */
  onOutput?: (stdout: Readable | null, stderr: Readable | null) => void;
}

/** A process started with `exec`: its streams and its result. */
export interface ExecProcess {
  stdin: Writable | null;
  stdout: Readable | null;
  stderr: Readable | null;
  result: Promise<{ exitCode: number; signal: number | null; durationMs: number }>;
  /** SIGKILLs the process (its own children stay, reaped by the container's init). */
  kill(): void;
}

/**
 * One container: created (record, bundle, cgroups), started (petri-runner),
 * exited, removed. Operations check the state and name it when it is wrong.
 */
export class Container {
  readonly id: string;
  readonly name: string;
  readonly dir: string;
  readonly spec: OciSpec;
  stdin: Writable | null = null;
  stdout: Readable | null = null;
  stderr: Readable | null = null;
  private currentState: ContainerState = 'created';
  private cgroups!: ContainerCgroups;
  private readonly cgroupMode: CgroupMode;
  private readonly record: ContainerRecord;
  private readonly lower: string[];
  private readonly deep: boolean;
  /** The record's writes, in order (a later one must not land before an earlier one). */
  private recordWrites: Promise<void> = Promise.resolve();
  private pendingRecordWrites = 0;
  /** The record file's length: an in-place rewrite pads to it. */
  private recordBytes = 0;
  private readonly options: ContainerOptions;
  private runner: RunnerProcess | undefined;
  private result: Promise<ExitResult> | undefined;
  private timedOut = false;

  private constructor(id: string, options: ContainerOptions) {
    this.id = id;
    this.name = options.name ?? id;
    this.options = options;
    this.dir = containerDir(id);
    this.cgroupMode = detectCgroupMode();
    const lower = typeof options.rootfs === 'string' ? [options.rootfs] : options.rootfs;
    if (lower.length === 0) throw new PetriError('cannot create a container without a root filesystem');
    const inPlace = options.rootfsInPlace === true;
    if (inPlace && lower.length !== 1) throw new PetriError('rootfsInPlace needs exactly one root directory');
    const deep = !inPlace && lower.join(':').length > MAX_LOWER_OPTION;
    this.spec = createSpec(options, {
      id,
      rootPath: inPlace ? (lower[0] as string) : join(this.dir, 'rootfs'),
      ...(inPlace
        ? {}
        : {
            overlay: {
              // Deep images: short names, linked from the container's `l/` dir, keep the option under a page.
              lower: deep ? lower.map((_, i) => i.toString(36)) : lower,
              upper: join(this.dir, 'upper'),
              work: join(this.dir, 'work'),
              ...(deep ? { lowerBase: join(this.dir, 'l') } : {}),
            },
          }),
      cgroupMount: this.cgroupMode === 'v2',
    });
    this.lower = lower;
    this.deep = deep;
    this.record = {
      id,
      name: this.name,
      createdAt: new Date().toISOString(),
      owner: selfIdentity(),
      cgroupDirs: [],
      state: 'created',
      command: options.command,
      lower,
      ...(options.keep ? { keep: true } : {}),
      ...(options.ports?.length
        ? { publish: options.ports.map((p) => ({ container: p.container, host: p.host ?? 0 })) }
        : {}),
      ...(options.image ? { image: options.image.ref, imageId: options.image.id } : {}),
    };
  }

  /** Makes its directory, cgroups, record and bundle (synchronously). */
  private materialize(): void {
    containersMade++;
    ensureContainersDir();
    if (this.materializeFromSpare()) return;
    try {
      mkdirSync(this.dir);
    } catch (error) {
      this.dropCgroups();
      throw error;
    }
    try {
      this.cgroups ??= this.createCgroups();
      this.record.cgroupDirs = this.cgroups.dirs;
      this.recordBytes = writeRecord(this.dir, this.record);
      if (!this.options.rootfsInPlace) for (const sub of ['rootfs', 'upper', 'work']) mkdirSync(join(this.dir, sub));
      if (this.deep) {
        mkdirSync(join(this.dir, 'l'));
        for (const [i, dir] of this.lower.entries()) symlinkSync(dir, join(this.dir, 'l', i.toString(36)));
      }
      writeFileSync(join(this.dir, 'config.json'), JSON.stringify(this.spec));
      // Once the record is there: another process finding the name's link reads it.
      if (this.options.name !== undefined) reserveName(this.options.name, this.id);
    } catch (error) {
      if (this.cgroups) void this.cgroups.remove().catch(() => {});
      removeTree(this.dir);
      throw error;
    }
  }

  /** The same as `materialize`, with the filesystem work off the event loop (the cgroups are made synchronously). */
  private async materializeAsync(): Promise<void> {
    containersMade++;
    await ensureContainersDirAsync();
    if (this.materializeFromSpare()) return;
    try {
      await fsp.mkdir(this.dir);
    } catch (error) {
      this.dropCgroups();
      throw error;
    }
    try {
      this.cgroups ??= this.createCgroups();
      this.record.cgroupDirs = this.cgroups.dirs;
      const dir = this.dir;
      const work: Promise<unknown>[] = [
        createRecordAsync(dir, this.record).then((bytes) => {
          this.recordBytes = bytes;
        }),
        fsp.writeFile(join(dir, 'config.json'), JSON.stringify(this.spec)),
      ];
      if (!this.options.rootfsInPlace)
        for (const sub of ['rootfs', 'upper', 'work']) work.push(fsp.mkdir(join(dir, sub)));
      if (this.deep) {
        work.push(
          fsp
            .mkdir(join(dir, 'l'))
            .then(() => Promise.all(this.lower.map((layer, i) => fsp.symlink(layer, join(dir, 'l', i.toString(36)))))),
        );
      }
      const settled = await Promise.allSettled(work);
      const failed = settled.find((result) => result.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
      if (this.options.name !== undefined) reserveName(this.options.name, this.id);
    } catch (error) {
      if (this.cgroups) await this.cgroups.remove().catch(() => {});
      await fsp.rm(this.dir, { recursive: true, force: true }).catch(() => {});
      throw error;
    }
  }

  /**
   * Makes the directory from a spare one this process kept (spares.ts), when it
   * has one: renamed and rewritten in place (microseconds, synchronously), no
   * inode made. False when there is none or the layout differs (the caller
   * makes the directory).
   */
  private materializeFromSpare(): boolean {
    if (this.options.rootfsInPlace || this.deep || spareCount() === 0) return false;
    this.cgroups = this.createCgroups();
    this.record.cgroupDirs = this.cgroups.dirs;
    const record = JSON.stringify(this.record);
    if (!reuseSpare(this.dir, record, JSON.stringify(this.spec))) return false; // its cgroups are kept for the caller
    this.recordBytes = Buffer.byteLength(record);
    try {
      if (this.options.name !== undefined) reserveName(this.options.name, this.id);
    } catch (error) {
      void this.cgroups.remove().catch(() => {});
      removeTree(this.dir);
      throw error;
    }
    return true;
  }

  /** The cgroups a spare that could not be used left made, before the directory failed too. */
  private dropCgroups(): void {
    if (this.cgroups) void this.cgroups.remove().catch(() => {});
  }

  private createCgroups(): ContainerCgroups {
    const { memory, pids, cpus } = this.options;
    return createCgroups(this.id, { memory, pids, cpus, devices: this.spec.linux.resources.devices }, this.cgroupMode);
  }

  /** Creates a container (nothing runs yet). Sweeps what crashed petri processes left, once per process. */
  static create(options: ContainerOptions): Container {
    Container.check(options);
    for (let attempt = 0; ; attempt++) {
      const container = new Container(randomHex(6), options);
      try {
        container.materialize();
        return container;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EEXIST' && attempt < 3) continue;
        throw error;
      }
    }
  }

  /**
   * `create`, with its filesystem work (directories, record, bundle) done off
   * the event loop: for callers that start many containers at once.
   */
  static async createAsync(options: ContainerOptions): Promise<Container> {
    Container.check(options);
    for (let attempt = 0; ; attempt++) {
      const container = new Container(randomHex(6), options);
      try {
        await container.materializeAsync();
        return container;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EEXIST' && attempt < 3) continue;
        throw error;
      }
    }
  }

  private static check(options: ContainerOptions): void {
    checkRoot();
    validateOptions(options);
    sweepOnce();
    if (options.name !== undefined) {
      checkNameValid(options.name);
      checkNameFree(options.name);
    }
  }

  get state(): ContainerState {
    return this.currentState;
  }

  /** The cgroup directories its processes join, in every hierarchy it uses (they change on a kept container's restart). */
  get cgroupDirs(): string[] {
    return this.cgroups.dirs;
  }

  /** Host pid of the container's PID 1 while it runs. */
  get pid(): number | undefined {
    return this.runner?.pid;
  }

  /** What the runner said of the upper dir when the command ended (ContainerOptions.reportUpper). */
  get upper(): { plain: boolean; entries?: number } | undefined {
    return this.runner?.upper;
  }

  /** The published ports of the current run (host ports on 127.0.0.1), once started. */
  get ports(): PortMapping[] {
    return this.currentState === 'running' ? (this.runner?.ports ?? []) : [];
  }

  /** The runner's command line that starts it (`petri-runner run …`, without the control fd). */
  runnerArgs(): string[] {
    const args = ['run'];
    if (this.options.init === false) args.push('--no-init');
    const { cloneIntoDir, deviceBpfDir } = this.cgroups;
    if (cloneIntoDir) args.push('--clone-into', cloneIntoDir);
    for (const dir of this.cgroups.dirs) if (dir !== cloneIntoDir) args.push('--cgroup', dir);
    if (deviceBpfDir) args.push('--device-bpf', deviceBpfDir);
    for (const port of this.options.ports ?? []) args.push('--publish', `${port.host ?? 0}:${port.container}`);
    for (const network of this.options.networks ?? []) {
      args.push('--network', `${network.holderPid}:${network.address}`);
    }
    args.push(this.dir);
    return args;
  }

  /** Starts the command; resolves once it runs, rejects (exit code in `.exitCode`) when setup fails. */
  async start(io: StdioOptions = {}): Promise<void> {
    this.expectState('start', ['created']);
    this.currentState = 'running';
    const startedAt = monotonicMs();
    const runner = new RunnerProcess(this.runnerArgs(), [
      io.stdin ?? 'ignore',
      io.stdout ?? 'pipe',
      io.stderr ?? 'pipe',
    ]);
    this.runner = runner;
    this.stdin = runner.stdin;
    this.stdout = runner.stdout;
    this.stderr = runner.stderr;
    io.onOutput?.(this.stdout, this.stderr);
    let timer: NodeJS.Timeout | undefined;
    if (this.options.timeoutMs) {
      timer = setTimeout(() => {
        this.timedOut = true;
        runner.kill();
      }, this.options.timeoutMs);
    }
    this.result = runner.exited.then(async (exit) => {
      if (timer) clearTimeout(timer);
      if (this.currentState === 'running') this.currentState = 'exited';
      const result = {
        exitCode: exit.exitCode,
        signal: exit.signal,
        oomKilled: this.cgroups.oomKilled(),
        timedOut: this.timedOut,
        durationMs: Math.round(monotonicMs() - startedAt),
      };
      if (this.options.keep && this.currentState === 'exited') await this.settleKept(result);
      return result;
    });
    try {
      await runner.started;
    } catch {
      const exit = await runner.exited;
      await this.result;
      const reason = explainSetupError(exit.error ?? `petri-runner exited with ${exit.exitCode}`);
      throw Object.assign(new PetriError(`cannot start container ${this.id}: ${reason}`), { exitCode: exit.exitCode });
    }
    this.record.state = 'running';
    this.record.initPid = runner.pid;
    if (runner.ports.length > 0) this.record.ports = runner.ports;
    if (this.currentState !== 'running') return;
    if (this.pendingRecordWrites === 0) {
      // Nothing queued: written now, synchronously and in place (tens of µs, where
      // the async write's thread-pool round trips cost milliseconds of latency).
      this.recordBytes = rewriteRecordInPlace(this.dir, this.record, this.recordBytes);
      return;
    }
    await this.saveRecord();
  }

  /** Writes the record as it is now, after the writes before it; rejects with this write's error. */
  private saveRecord(): Promise<void> {
    const snapshot = JSON.stringify(this.record);
    this.pendingRecordWrites++;
    const write = this.recordWrites
      .then(() => writeRecordAsync(this.dir, snapshot))
      .then((bytes) => {
        this.recordBytes = bytes;
      })
      .finally(() => {
        this.pendingRecordWrites--;
      });
    this.recordWrites = write.catch(() => {});
    return write;
  }

  /**
   * Starts an exited container again, like `docker start`: the same id, bundle
   * and writable layer (a kept container gets its cgroups back first).
   */
  async restart(io: StdioOptions = {}): Promise<void> {
    this.expectState('restart', ['exited']);
    await this.result;
    if (this.options.keep) {
      this.cgroups = this.createCgroups();
      this.record.cgroupDirs = this.cgroups.dirs;
      delete this.record.exit;
    }
    this.currentState = 'created';
    this.timedOut = false;
    await this.start(io);
  }

  /** A kept container that exited: no processes, no cgroups; its record and upper dir stay. */
  private async settleKept(result: Omit<ExitResult, 'durationMs'>): Promise<void> {
    await this.cgroups.remove();
    this.record.state = 'exited';
    delete this.record.initPid;
    delete this.record.ports;
    const { exitCode, signal, oomKilled, timedOut } = result;
    this.record.exit = { exitCode, signal, oomKilled, timedOut, finishedAt: new Date().toISOString() };
    try {
      await this.saveRecord();
    } catch (error) {
      // `petri rm -f` in another process removed the container meanwhile: nothing left to record.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }

  /**
   * Lets this process end while the container runs (its runner's pipes no
   * longer hold the event loop): the container then dies with the runner.
   */
  unref(): void {
    this.runner?.unref();
  }

  /** Waits for the command to end. */
  wait(): Promise<ExitResult> {
    if (!this.result) this.expectState('wait for', ['running', 'exited']);
    return this.result as Promise<ExitResult>;
  }

  /** Sends a signal to the command (SIGKILL kills the whole container at once). */
  kill(signal: NodeJS.Signals | number = 'SIGKILL'): void {
    this.expectState('kill', ['running']);
    const number = typeof signal === 'number' ? signal : signalNumber(signal);
    if (number === 9) this.runner?.kill();
    else this.runner?.signal(number);
  }

  /** Runs another process inside the running container, with the container's security profile. */
  exec(command: string[], options: ExecOptions & StdioOptions = {}): ExecProcess {
    this.expectState('exec in', ['running']);
    // Until the runner reports the command started, the container's root is not in place yet.
    if (this.runner?.pid === undefined) {
      throw new PetriError(`cannot exec in container ${this.id}: it is still starting`, { code: 'ESTATE' });
    }
    const target = {
      id: this.id,
      dir: this.dir,
      spec: this.spec,
      pid: this.runner?.pid,
      cgroupDirs: this.cgroups.dirs,
    };
    // Output to collect and no stdin: the runner forks the process itself (no spawn here).
    const served =
      this.runner !== undefined &&
      (options.stdin ?? 'ignore') === 'ignore' &&
      (options.stdout ?? 'pipe') === 'pipe' &&
      (options.stderr ?? 'pipe') === 'pipe';
    return execInContainer(target, command, options, served ? this.runner : undefined);
  }

  /** Kills what still runs and removes the container's cgroups and directory. */
  async remove(): Promise<void> {
    if (this.currentState === 'removed') return;
    if (this.currentState === 'running') {
      this.runner?.kill();
      await this.result;
    }
    this.currentState = 'removed';
    await this.recordWrites;
    let failure: unknown;
    try {
      releaseName(this.name, this.id);
    } catch (error) {
      failure = error;
    }
    try {
      await this.cgroups.remove();
    } catch (error) {
      failure = failure ? withCleanupError(failure, error) : error;
    }
    try {
      // The dirs it made, and overlayfs's work/work; l/ (deep images) holds links: listed.
      if (this.deep) removeTree(join(this.dir, 'l'));
      // A spare is for the next container: only worth keeping in a process that makes more than one, and
      // never after a failure (a process that outlived its cgroup's removal may still hold the old overlay).
      const spare = !this.options.rootfsInPlace && !failure && containersMade >= 2;
      if (!spare || !(await retireToSpare(this.dir))) {
        await removeContainerDir(this.dir, this.options.rootfsInPlace ? [] : ['rootfs', 'work/work', 'work']);
      }
    } catch (error) {
      failure = failure ? withCleanupError(failure, error) : error;
    }
    if (failure) {
      throw new PetriError(`cannot remove container ${this.id}: ${(failure as Error).message}`, { cause: failure });
    }
  }

  private expectState(action: string, allowed: ContainerState[]): void {
    if (!allowed.includes(this.currentState)) {
      throw new PetriError(`cannot ${action} container ${this.id}: it is ${this.currentState}`, { code: 'ESTATE' });
    }
  }
}

/**
 * Removes a container's directory. What a container without output files
 * leaves (a record, a bundle, empty dirs) goes synchronously, where fs.rm's
 * thread-pool round trips would cost more than the work; a writable layer with
 * files in it goes through fs.rm, off the event loop.
 */
async function removeContainerDir(dir: string, subdirs: string[]): Promise<void> {
  const upper = join(dir, 'upper');
  try {
    rmdirSync(upper);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') await fsp.rm(upper, { recursive: true, force: true, maxRetries: 3 });
    else if (code !== 'ENOENT') throw error;
  }
  // What petri made, by name (no directory listings); anything else there, by listing.
  try {
    for (const sub of subdirs) rmdirQuietly(join(dir, sub));
    for (const file of ['record.json', 'config.json']) unlinkQuietly(join(dir, file));
    rmdirSync(dir);
  } catch {
    try {
      removeTree(dir);
    } catch {
      await fsp.rm(dir, { recursive: true, force: true, maxRetries: 3 });
    }
  }
}

function checkNameValid(name: string): void {
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(name)) {
    throw new PetriError(
      `invalid container name "${name}": use letters, digits, _ . and -, starting with a letter or digit`,
    );
  }
}

/** Adds the fix to setup errors whose cause is the host rather than the container. */
function explainSetupError(message: string): string {
  if (/^mount overlay on .*: No such device/.test(message)) {
    return `${message}: this kernel has no overlayfs (modprobe overlay, or a kernel with CONFIG_OVERLAY_FS)`;
  }
  if (/^mount overlay on /.test(message)) {
    return `${message}: ${petriRoot()} is on a filesystem overlayfs cannot use for a container's writable layer (overlayfs itself, NFS, FAT?); set PETRI_ROOT to a directory on ext4, xfs, btrfs or tmpfs`;
  }
  return message;
}

let containersDirReady = false;
/** How many containers this process has made (a spare is kept only once there were two). */
let containersMade = 0;

function ensureContainersDir(): void {
  if (containersDirReady) return;
  if (mkdirSync(containersDir(), { recursive: true, mode: 0o700 }) !== undefined) spreadSubdirs(containersDir());
  containersDirReady = true;
}

async function ensureContainersDirAsync(): Promise<void> {
  if (containersDirReady) return;
  if ((await fsp.mkdir(containersDir(), { recursive: true, mode: 0o700 })) !== undefined) {
    spreadSubdirs(containersDir());
  }
  containersDirReady = true;
}

/**
 * Marks the new containers directory as the top of its own hierarchies for
 * ext4's Orlov allocator (`chattr +T`): each container's directory then goes
 * to a block group of its own choosing, with its files, instead of all into
 * this directory's group. There, on ext4 without a journal, every inode
 * allocation walked past the group's recently freed inodes one by one
 * (`recently_deleted`), a cost that grows with churn: 11 % of the CPU of 100
 * containers in a row, 0.1 % with the flag. Best effort, in the background:
 * other filesystems and a missing chattr change nothing.
 */
function spreadSubdirs(dir: string): void {
  try {
    const chattr = spawn('chattr', ['+T', dir], { stdio: 'ignore' });
    chattr.on('error', () => {});
    chattr.unref();
  } catch {
    // no chattr: the directory works the same
  }
}

/** What `exec` needs of a running container: also enough for one another petri process runs (a reused one). */
export interface ExecTarget {
  id: string;
  dir: string;
  spec: OciSpec;
  /** Host pid of its init. */
  pid: number | undefined;
  cgroupDirs: string[];
}

/** Runs a process in a running container (joining its namespaces and cgroups), with the container's security profile. */
export function execInContainer(
  target: ExecTarget,
  command: string[],
  options: ExecOptions & StdioOptions = {},
  /** The container's own run runner, when this process started it: the exec goes through it. */
  through?: RunnerProcess,
): ExecProcess {
  if (command.length === 0) throw new PetriError(`cannot exec in container ${target.id}: no command given`);
  const processSpec: OciProcess = {
    ...target.spec.process,
    args: command,
    cwd: options.workdir ?? target.spec.process.cwd,
    env: mergeEnv(target.spec.process.env, options.env),
  };
  if (options.user) {
    const root = options.user.uid === 0;
    const caps = target.spec.process.capabilities.bounding;
    processSpec.user = {
      uid: options.user.uid,
      gid: options.user.gid,
      additionalGids: options.user.additionalGids ?? [],
    };
    processSpec.capabilities = {
      ...processSpec.capabilities,
      effective: root ? caps : [],
      permitted: root ? caps : [],
    };
  }
  const startedAt = monotonicMs();
  const processJson = JSON.stringify(processSpec);
  // The runner reads control lines of up to 64 KiB: a bigger process (a huge env) is spawned instead.
  if (through && Buffer.byteLength(processJson) < 60_000) {
    const served = through.exec(processJson);
    return {
      stdin: null,
      stdout: served.stdout,
      stderr: served.stderr,
      kill: () => served.signal(9),
      result: served.result.then((exit) => {
        if (exit.error !== undefined) {
          throw Object.assign(new PetriError(`cannot exec in container ${target.id}: ${exit.error}`), {
            exitCode: exit.exitCode,
          });
        }
        return { exitCode: exit.exitCode, signal: exit.signal, durationMs: Math.round(monotonicMs() - startedAt) };
      }),
    };
  }
  const args = ['exec', '--pid', String(target.pid), '--config', join(target.dir, 'config.json')];
  for (const dir of target.cgroupDirs) args.push('--cgroup', dir);
  args.push('--process', processJson);
  const runner = new RunnerProcess(args, [
    options.stdin ?? 'ignore',
    options.stdout ?? 'pipe',
    options.stderr ?? 'pipe',
  ]);
  return {
    stdin: runner.stdin,
    stdout: runner.stdout,
    stderr: runner.stderr,
    kill: () => runner.kill(),
    result: runner.exited.then((exit) => {
      if (exit.error !== undefined && runner.pid === undefined) {
        throw Object.assign(new PetriError(`cannot exec in container ${target.id}: ${exit.error}`), {
          exitCode: exit.exitCode,
        });
      }
      return { exitCode: exit.exitCode, signal: exit.signal, durationMs: Math.round(monotonicMs() - startedAt) };
    }),
  };
}

function mergeEnv(base: string[], extra: Record<string, string> = {}): string[] {
  const env = new Map(base.map((entry) => [entry.slice(0, entry.indexOf('=')), entry] as const));
  for (const [key, value] of Object.entries(extra)) env.set(key, `${key}=${value}`);
  return [...env.values()];
}

function signalNumber(signal: NodeJS.Signals): number {
  const number = (constants.signals as Record<string, number>)[signal];
  if (number === undefined) throw new PetriError(`unknown signal "${signal}"`);
  return number;
}

/** Milliseconds from a monotonic clock (the `performance` global loads perf_hooks on first use). */
function monotonicMs(): number {
  const [seconds, nanoseconds] = process.hrtime();
  return seconds * 1e3 + nanoseconds / 1e6;
}

function checkRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new PetriError('petri must run as root to create containers (namespaces, mounts, cgroups); try sudo');
  }
}

function validateOptions(options: ContainerOptions): void {
  if (!Array.isArray(options.command) || options.command.length === 0) {
    throw new PetriError('no command given: pass the command to run in the container');
  }
  for (const [key, value] of [
    ['memory', options.memory],
    ['pids', options.pids],
  ] as const) {
    if (value !== undefined && (!Number.isSafeInteger(value) || value <= 0)) {
      throw new PetriError(`invalid ${key} limit ${value}: expected a positive integer`);
    }
  }
  if (options.cpus !== undefined && !(options.cpus > 0)) {
    throw new PetriError(`invalid cpus ${options.cpus}: expected a positive number like 0.5`);
  }
  for (const port of options.ports ?? []) {
    const valid = (n: unknown, min: number) => Number.isInteger(n) && (n as number) >= min && (n as number) <= 65535;
    if (!valid(port?.container, 1) || (port.host !== undefined && !valid(port.host, 0))) {
      throw new PetriError(
        `invalid port ${JSON.stringify(port)}: expected { container, host? } with TCP port numbers (host 0: any free port)`,
      );
    }
  }
  if (options.workdir !== undefined && !options.workdir.startsWith('/')) {
    throw new PetriError(`invalid working directory "${options.workdir}": it must be an absolute path`);
  }
}
