import { closeSync, constants, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { PetriError } from '../errors.js';
import { resolveUser } from '../image/apply-config.js';
import { parseReference } from '../image/reference.js';
import type { ImageStore } from '../image/store.js';
import type { ExecOptions as RuntimeExecOptions } from '../runtime/options.js';
import { scanTree } from '../snapshot/scan.js';
import { OVERLAY_OPAQUE_XATTR } from '../snapshot/whiteouts.js';
import { archivePath, copyArchive, extractArchive } from './archive.js';
import { type Disposable, track, untrack } from './cleanup.js';
import { commitContainer } from './commit.js';
import type { ContainerHandle } from './container-handle.js';
import { whileFrozen } from './freeze.js';
import { type FsView, LayeredView, RootView, resolveParent } from './fs-view.js';
import type { HealthMonitor } from './health-check.js';
import { LogBuffer } from './logs.js';
import type { StartedNetwork } from './network.js';
import { StoppedContainer } from './stopped-container.js';
import type {
  CommitOptions,
  ContentToCopy,
  DirectoryToCopy,
  ExecOptions,
  ExecResult,
  FileToCopy,
  Labels,
  LogOptions,
  RestartOptions,
  StopOptions,
} from './types.js';
import * as check from './validate.js';
import { waitForContainer } from './wait-for-container.js';
import type { WaitStrategy, WaitTarget } from './wait-strategies.js';

/** How GenericContainer hands a created container over. */
export interface StartedContainerInit {
  handle: ContainerHandle;
  store: ImageStore;
  /** The image as the caller named it. */
  image: string;
  labels: Labels;
  waitStrategy: WaitStrategy;
  startupTimeout: number | undefined;
  /** The networks it is on, with its address on each. */
  networks: { network: StartedNetwork; ip: string }[];
  /** The container ports given to withExposedPorts, in order. */
  exposedPorts: number[];
  stopSignal: NodeJS.Signals;
  autoRemove: boolean;
  reused: boolean;
  health?: (container: StartedContainer) => HealthMonitor | undefined;
  logConsumer?: (stream: Readable) => unknown;
}

const OPAQUE = Buffer.from('y').toString('base64');

/**
 * A running container, as `GenericContainer.start()` returns it (with
 * testcontainers-node's methods). Its root filesystem stays reachable after it
 * stops (an open directory of its overlay), so a stopped container can still
 * be copied from and committed.
 */
export class StartedContainer implements AsyncDisposable {
  readonly #handle: ContainerHandle;
  readonly #init: StartedContainerInit;
  readonly #logs = new LogBuffer();
  readonly #tracker: Disposable;
  #health: HealthMonitor | undefined;
  #rootFd: number | undefined;
  #stopping: Promise<StoppedContainer> | undefined;
  #removed = false;
  #runs = 0;

  /** @internal Use `GenericContainer.start()`. */
  constructor(init: StartedContainerInit) {
    this.#init = init;
    this.#handle = init.handle;
    this.#tracker = {
      dir: init.handle.dir,
      keep: !init.autoRemove,
      cleanup: () => (init.autoRemove ? this.#remove() : this.#kill(0)),
      release: () => this.#releaseRoot(),
    };
    if (!init.reused) track(this.#tracker);
  }

  /** @internal Starts the container (again) and waits until its wait strategy says it is ready. */
  async run(first: boolean): Promise<void> {
    await this.#handle.start(this.#logs);
    this.#holdRoot();
    if (first && this.#init.logConsumer) this.#init.logConsumer(this.#logs.stream());
    if (first) this.#health = this.#init.health?.(this);
    const health = this.#health;
    const run = ++this.#runs;
    health?.start();
    void this.#handle.wait().then(() => {
      if (run === this.#runs) health?.stop(); // checks end with the container
    });
    await waitForContainer(this.#init.waitStrategy, this.#waitTarget(), this.#init.image, this.#init.startupTimeout);
  }

  getHost(): string {
    return '127.0.0.1';
  }

  getHostname(): string {
    return this.#handle.spec.hostname;
  }

  getId(): string {
    return this.#handle.id;
  }

  getName(): string {
    return this.#handle.name;
  }

  getLabels(): Labels {
    return { ...this.#init.labels };
  }

  /**
   * The host port (on `getHost()`, 127.0.0.1) that container port `port`
   * (`5432` or `"5432/tcp"`) is published on. A restart may publish it on another
   * one (unless it was given a fixed host port), as with Docker.
   */
  getMappedPort(port: number | `${number}/tcp`, protocol = 'tcp'): number {
    if (typeof protocol !== 'string' || protocol.toLowerCase() !== 'tcp') {
      throw check.invalid('getMappedPort', 'protocol', protocol, 'tcp: petri forwards TCP only');
    }
    const wanted = check.port('getMappedPort', port);
    const found = this.#handle.ports.find((mapping) => mapping.container === wanted);
    if (found) return found.host;
    const exposed = this.#exposed();
    const reason = exposed.includes(wanted)
      ? 'it is not running'
      : exposed.length > 0
        ? `it exposes only ${exposed.join(', ')}; add withExposedPorts(${wanted})`
        : `it exposes no ports; add withExposedPorts(${wanted})`;
    throw new PetriError(`container ${this.getName()} has no mapped port for ${wanted}: ${reason}`, {
      code: 'ENOPORT',
    });
  }

  /** The host port of the first port given to withExposedPorts. */
  getFirstMappedPort(): number {
    const first = this.#exposed()[0];
    if (first === undefined) {
      throw new PetriError(`container ${this.getName()} has no mapped ports: it exposes none (withExposedPorts)`, {
        code: 'ENOPORT',
      });
    }
    return this.getMappedPort(first);
  }

  #exposed(): number[] {
    return this.#init.exposedPorts;
  }

  /** The names of the networks it is on (withNetwork). */
  getNetworkNames(): string[] {
    return this.#init.networks.map(({ network }) => network.getName());
  }

  /** Its address on a network it is on (by the network's name). */
  getIpAddress(networkName: string): string {
    const found = this.#init.networks.find(({ network }) => network.getName() === networkName);
    if (found) return found.ip;
    const on = this.getNetworkNames();
    throw new PetriError(
      `container ${this.getName()} is not on network "${networkName}": ${on.length ? `it is on ${on.join(', ')}` : 'it is on no network (withNetwork), only its own loopback interface'}`,
      { code: 'ENONETWORK' },
    );
  }

  /** Runs a command in the container; a command that cannot start gives exit code 126/127 and the reason on stderr. */
  async exec(command: string | string[], options: Partial<ExecOptions> = {}): Promise<ExecResult> {
    const args =
      typeof command === 'string'
        ? command.split(/\s+/).filter(Boolean)
        : check.stringArray('exec', command, 'command');
    if (args.length === 0) throw check.invalid('exec', 'command', command, 'a non-empty command');
    const runtime: RuntimeExecOptions = {};
    if (options.workingDir !== undefined)
      runtime.workdir = check.absolutePath('exec', options.workingDir, 'workingDir');
    if (options.env !== undefined) runtime.env = check.environment('exec', options.env);
    if (options.user !== undefined) {
      const resolved = resolveUser(check.user('exec', options.user), (path) => this.#readFile(path));
      runtime.user = { uid: resolved.uid, gid: resolved.gid, additionalGids: resolved.additionalGids };
      if (resolved.home && runtime.env?.HOME === undefined) runtime.env = { ...runtime.env, HOME: resolved.home };
    }
    this.#assertLive('exec in');
    return this.#exec(args, runtime);
  }

  async #exec(args: string[], options: RuntimeExecOptions, timeoutMs?: number): Promise<ExecResult> {
    const proc = this.#handle.exec(args, options);
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    const output: Buffer[] = [];
    proc.stdout?.on('data', (chunk: Buffer) => stdout.push(chunk) && output.push(chunk));
    proc.stderr?.on('data', (chunk: Buffer) => stderr.push(chunk) && output.push(chunk));
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => proc.kill(), timeoutMs);
    let exitCode: number;
    try {
      exitCode = (await proc.result).exitCode;
    } catch (error) {
      const code = (error as { exitCode?: number }).exitCode;
      if (code === undefined) throw error;
      const message = Buffer.from(`${(error as Error).message}\n`);
      stderr.push(message);
      output.push(message);
      exitCode = code;
    } finally {
      clearTimeout(timer);
    }
    const text = (chunks: Buffer[]) => Buffer.concat(chunks).toString('utf8');
    return { output: text(output), stdout: text(stdout), stderr: text(stderr), exitCode };
  }

  /** @internal For health checks: a command with a time limit. */
  execWithTimeout(command: string[], timeoutMs: number): Promise<ExecResult> {
    return this.#exec(command, {}, timeoutMs);
  }

  /** Its output (stdout and stderr) so far, then as it comes until the container stops, like `docker logs -f`. */
  async logs(options: LogOptions = {}): Promise<Readable> {
    return this.#logs.stream(options);
  }

  copyFilesToContainer(files: FileToCopy[]): Promise<void> {
    const checked = check.filesToCopy('copyFilesToContainer', files, 'file');
    return this.copyArchiveToContainer(copyArchive(checked, [], []));
  }

  copyDirectoriesToContainer(directories: DirectoryToCopy[]): Promise<void> {
    const checked = check.filesToCopy('copyDirectoriesToContainer', directories, 'directory');
    return this.copyArchiveToContainer(copyArchive([], checked, []));
  }

  copyContentToContainer(contents: ContentToCopy[]): Promise<void> {
    const checked = check.contentsToCopy('copyContentToContainer', contents);
    return this.copyArchiveToContainer(copyArchive([], [], checked));
  }

  /**
   * Writes a tar archive's entries into the container at `target` (a directory;
   * parents resolved inside the container, missing ones made). A running
   * container is frozen meanwhile, so that nothing in it can move a path.
   */
  async copyArchiveToContainer(tar: Readable, target = '/'): Promise<void> {
    this.#assertLive('copy into');
    check.absolutePath('copyArchiveToContainer', target, 'target');
    try {
      if (this.#rootFd !== undefined) {
        const root = `/proc/self/fd/${this.#rootFd}`;
        const frozen = this.#handle.running ? this.#handle.cgroupDirs : [];
        await whileFrozen(frozen, () => extractArchive(new RootView(root), root, tar, target));
      } else if (!this.#handle.running) {
        const upper = join(this.#handle.dir, 'upper');
        await extractArchive(new LayeredView([upper, ...this.#handle.lower]), upper, tar, target);
      } else {
        throw new PetriError('its root filesystem cannot be reached from here');
      }
    } catch (error) {
      throw new PetriError(`cannot copy into container ${this.getName()}: ${(error as Error).message}`, {
        cause: error,
        code: (error as PetriError).code,
      });
    }
  }

  /** A tar archive of `path` in the container (a directory with all below it), like `docker cp`. */
  async copyArchiveFromContainer(path: string): Promise<Readable> {
    this.#assertLive('copy from');
    check.absolutePath('copyArchiveFromContainer', path);
    try {
      return archivePath(await this.#view(true), path);
    } catch (error) {
      throw new PetriError(`cannot copy ${path} from container ${this.getName()}: ${(error as Error).message}`, {
        cause: error,
        code: (error as PetriError).code,
      });
    }
  }

  /**
   * Makes an image of the container's changes on top of its image (`repo:tag`
   * in the store), with its labels; a running container is frozen meanwhile
   * (`pause: false` to not). Returns the image id.
   */
  async commit(options: CommitOptions): Promise<string> {
    this.#assertLive('commit');
    if (typeof options !== 'object' || options === null)
      throw check.invalid('commit', 'options', options, '{ repo, tag }');
    const { repo, tag = 'latest' } = options;
    let ref: string;
    try {
      ref = parseReference(`${repo}:${tag}`).ref;
    } catch (error) {
      throw check.invalid(
        'commit',
        'repo and tag',
        `${repo}:${tag}`,
        `an image name and tag (${(error as Error).message})`,
      );
    }
    const message = options.message ?? options.comment;
    const commit = () =>
      commitContainer(this.#init.store, this.getId(), {
        ref,
        ...(message !== undefined ? { message } : {}),
        ...(options.author !== undefined ? { author: options.author } : {}),
        ...(options.changes !== undefined ? { changes: check.stringArray('commit', options.changes, 'changes') } : {}),
        labels: this.#init.labels,
      });
    const frozen = options.pause !== false && this.#handle.running ? this.#handle.cgroupDirs : [];
    return (await whileFrozen(frozen, commit)).id;
  }

  /** Stops the command (after `timeout` ms of the stop signal, or at once) and starts it again, waiting as at start. */
  async restart(options: Partial<RestartOptions> = {}): Promise<void> {
    this.#assertLive('restart');
    if (this.#stopping) throw new PetriError(`cannot restart container ${this.getName()}: it was stopped`);
    const timeout = check.milliseconds('restart', options.timeout ?? 0, 'timeout', true);
    this.#health?.stop();
    await this.#kill(timeout);
    this.#releaseRoot();
    await this.run(false);
  }

  /**
   * Stops the command (SIGKILL at once, or the image's stop signal and SIGKILL
   * after `timeout` ms). The stopped container keeps its filesystem, to commit
   * or copy from, until it is removed (`remove: true`, its `remove()`, or the
   * end of this process; a `withAutoRemove(false)` container stays after that).
   * A reused container is removed at once.
   */
  stop(options: Partial<StopOptions> = {}): Promise<StoppedContainer> {
    const timeout = check.milliseconds('stop', options.timeout ?? 0, 'timeout', true);
    this.#stopping ??= (async () => {
      this.#health?.stop();
      await this.#kill(timeout);
      // Nothing removes a stopped reused container later: stopping one ends it.
      if (options.remove ?? this.#init.reused) await this.#remove();
      return new StoppedContainer(this, this.#init.autoRemove);
    })();
    return this.#stopping;
  }

  /** `await using`: stops and removes it (a reused container stays; a withAutoRemove(false) one is kept). */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#init.reused) return;
    await this.stop({ remove: this.#init.autoRemove });
  }

  /** @internal */
  async remove(): Promise<void> {
    await this.#remove();
  }

  async #remove(): Promise<void> {
    if (this.#removed) return;
    this.#removed = true;
    this.#health?.stop();
    for (const { network } of this.#init.networks) network.leave(this.getId());
    this.#releaseRoot();
    try {
      await keepAlive(this.#handle.remove());
    } finally {
      untrack(this.#tracker);
    }
  }

  async #kill(timeout: number): Promise<void> {
    if (!this.#handle.running) return;
    if (timeout > 0) {
      this.#handle.kill(this.#init.stopSignal);
      await Promise.race([this.#handle.wait(), sleep(timeout)]);
    }
    this.#handle.kill('SIGKILL');
    await keepAlive(this.#handle.wait());
  }

  /** Opens the container's root (its overlay's top directory), which keeps the overlay alive after the container ends. */
  #holdRoot(): void {
    this.#releaseRoot();
    const pid = this.#handle.pid;
    if (pid === undefined) return;
    try {
      this.#rootFd = openSync(`/proc/${pid}/root`, constants.O_RDONLY | constants.O_DIRECTORY);
    } catch {
      // it ended already: its layers are read instead
    }
  }

  #releaseRoot(): void {
    if (this.#rootFd === undefined) return;
    closeSync(this.#rootFd);
    this.#rootFd = undefined;
  }

  /** Its root filesystem: the held overlay, else its layers (opaque directories of the upper one read when `exact`). */
  async #view(exact = false): Promise<FsView> {
    if (this.#rootFd !== undefined) return new RootView(`/proc/self/fd/${this.#rootFd}`);
    const upper = join(this.#handle.dir, 'upper');
    const opaque = new Set<string>();
    if (exact) {
      for (const entry of await scanTree(upper)) {
        if (entry.type === 'd' && entry.xattrs?.[OVERLAY_OPAQUE_XATTR] === OPAQUE) opaque.add(entry.path);
      }
    }
    return new LayeredView([upper, ...this.#handle.lower], opaque);
  }

  #readFile(path: string): string | undefined {
    const view =
      this.#rootFd !== undefined
        ? new RootView(`/proc/self/fd/${this.#rootFd}`)
        : new LayeredView([join(this.#handle.dir, 'upper'), ...this.#handle.lower]);
    try {
      const { parent, name } = resolveParent(view, path);
      const found = view.lstat([...parent, name]);
      return found?.stat.isFile() ? readFileSync(found.path, 'utf8') : undefined;
    } catch {
      return undefined;
    }
  }

  #assertLive(action: string): void {
    if (this.#removed) {
      throw new PetriError(`cannot ${action} container ${this.getName()}: it was removed`, { code: 'ESTATE' });
    }
  }

  #waitTarget(): WaitTarget {
    const handle = this.#handle;
    const exited = handle.wait();
    return {
      name: handle.name,
      get pid() {
        return handle.pid;
      },
      exited,
      logs: this.#logs,
      health: this.#health,
      exposedPorts: this.#init.exposedPorts,
      mappedPort: (port) => handle.ports.find((mapping) => mapping.container === port)?.host,
      exec: (command) => this.#exec(command, {}),
    };
  }
}

/**
 * Keeps the event loop alive until `promise` settles: a container's runner
 * does not hold it (see LocalHandle), so awaiting its end alone would let the
 * process exit in the middle.
 */
function keepAlive<T>(promise: Promise<T>): Promise<T> {
  const timer = setInterval(() => {}, 60_000);
  return promise.finally(() => clearInterval(timer));
}
