import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { PetriError } from '../errors.js';
import { ImageStore } from '../image/store.js';
import type { StoredImage } from '../image/types.js';
import { resolveCapabilities } from '../runtime/capabilities.js';
import { Container } from '../runtime/container.js';
import { useStandbyRunners } from '../runtime/runner-process.js';
import { serverStarting, useRunnerServer } from '../runtime/runner-server.js';
import { LayerCache } from '../snapshot/layers.js';
import { type ContainerHandle, LocalHandle } from './container-handle.js';
import { type ContainerSpec, containerOptions, prepare, stopSignal } from './container-spec.js';
import { GenericContainerBuilder } from './dockerfile-container.js';
import { HealthMonitor, resolveHealthCheck } from './health-check.js';
import { HostsFile, StartedNetwork } from './network.js';
import { type ImagePullPolicy, imageFor, type PullPolicyName, pullPolicyName } from './pull-policy.js';
import { startReused } from './reuse.js';
import { StartedContainer } from './started-container.js';
import type {
  BindMount,
  ContentToCopy,
  DirectoryToCopy,
  Environment,
  ExtraHost,
  FileToCopy,
  HealthCheck,
  Labels,
  PortWithOptionalBinding,
  ResourcesQuota,
  TmpFs,
  Ulimits,
} from './types.js';

export type { ContainerSpec } from './container-spec.js';

import * as check from './validate.js';
import { HostPortWaitStrategy, WaitStrategy } from './wait-strategies.js';

/** Where images come from and where their layers are unpacked (default: `$PETRI_ROOT/images` and `/layers`). */
export interface GenericContainerOptions {
  store?: ImageStore;
  layers?: LayerCache;
  /** Registries a pull may reach over plain HTTP or with any TLS certificate (loopback ones always may). */
  insecureRegistries?: string[];
}

/**
 * A container to start from an image in petri's store, configured with
 * testcontainers-node's builder methods (each checks its value at once) and
 * started with `start()`.
 */
export class GenericContainer {
  /** Builds the image from a Dockerfile first: `.withBuildArgs(…).build(tag?)` gives the GenericContainer. */
  static fromDockerfile(context: string, dockerfile = 'Dockerfile'): GenericContainerBuilder {
    return new GenericContainerBuilder(context, dockerfile);
  }

  protected readonly spec: ContainerSpec;
  protected readonly store: ImageStore | undefined;
  protected readonly layers: LayerCache | undefined;
  protected waitStrategy: WaitStrategy = new HostPortWaitStrategy([], false);
  protected startupTimeout: number | undefined;
  protected logConsumer: ((stream: Readable) => unknown) | undefined;
  protected reuse = false;
  protected networks: StartedNetwork[] = [];
  protected networkAliases: string[] = [];
  protected autoRemove = true;
  protected pullPolicy: PullPolicyName = 'missing';
  protected readonly insecureRegistries: string[];

  constructor(image: string, options: GenericContainerOptions = {}) {
    if (typeof image !== 'string' || image.trim() === '') {
      throw check.invalid(
        'GenericContainer',
        'image',
        image,
        'an image reference like "busybox:latest" or an image id',
      );
    }
    this.spec = {
      image,
      env: {},
      labels: {},
      binds: [],
      tmpfs: {},
      files: [],
      directories: [],
      contents: [],
      ulimits: [],
      capAdd: [],
      capDrop: [],
      privileged: false,
      extraHosts: [],
      ports: [],
    };
    this.store = options.store;
    this.layers = options.layers;
    this.insecureRegistries = options.insecureRegistries ?? [];
  }

  /**
   * When the image is pulled from its registry: `'missing'` (the default: when
   * the store lacks it), `'always'` (at every start), `'never'`; or
   * testcontainers' `PullPolicy.defaultPolicy()` / `PullPolicy.alwaysPull()`.
   */
  withPullPolicy(policy: PullPolicyName | ImagePullPolicy): this {
    const valid =
      policy === 'missing' ||
      policy === 'always' ||
      policy === 'never' ||
      (typeof policy === 'object' && policy !== null && typeof policy.shouldPull === 'function');
    if (!valid) {
      throw check.invalid(
        'withPullPolicy',
        'policy',
        policy,
        "'missing', 'always', 'never', PullPolicy.defaultPolicy() or PullPolicy.alwaysPull()",
      );
    }
    this.pullPolicy = pullPolicyName(policy);
    return this;
  }

  /** Replaces the image's Cmd. */
  withCommand(command: string[]): this {
    this.spec.command = check.stringArray('withCommand', command, 'command');
    return this;
  }

  /** Replaces the image's Entrypoint (and, like Docker, its Cmd unless withCommand is given); [] clears it. */
  withEntrypoint(entrypoint: string[]): this {
    this.spec.entrypoint = check.stringArray('withEntrypoint', entrypoint, 'entrypoint');
    return this;
  }

  withEnvironment(environment: Environment): this {
    Object.assign(this.spec.env, check.environment('withEnvironment', environment));
    return this;
  }

  withWorkingDir(workingDir: string): this {
    this.spec.workingDir = check.absolutePath('withWorkingDir', workingDir, 'working directory');
    return this;
  }

  /** `user`, `uid`, `user:group` or `uid:gid`; names are looked up in the image's /etc/passwd and /etc/group. */
  withUser(user: string): this {
    this.spec.user = check.user('withUser', user);
    return this;
  }

  withName(name: string): this {
    this.spec.name = check.containerName('withName', name);
    return this;
  }

  withLabels(labels: Labels): this {
    Object.assign(this.spec.labels, check.labels('withLabels', labels));
    return this;
  }

  withHostname(hostname: string): this {
    this.spec.hostname = check.hostname('withHostname', hostname);
    return this;
  }

  /**
   * Publishes TCP ports on the host's 127.0.0.1: `5432` (or `"5432/tcp"`) on a
   * free port, which `getMappedPort(5432)` gives once started, or
   * `{ container: 5432, host: 15432 }` on that one. The runner forwards each
   * connection into the container's network namespace, to its 127.0.0.1 (or
   * ::1); nothing of the host's network configuration changes. The default wait
   * strategy then waits until the exposed ports listen in the container.
   */
  withExposedPorts(...ports: PortWithOptionalBinding[]): this {
    for (const port of check.exposedPorts('withExposedPorts', ports)) {
      this.spec.ports = [...this.spec.ports.filter((p) => p.container !== port.container), port];
    }
    return this;
  }

  /**
   * Puts the container on a petri network (`await new Network().start()`),
   * instead of its own loopback only: the others there reach it by its name,
   * its hostname and its aliases.
   */
  withNetwork(network: StartedNetwork): this {
    if (!(network instanceof StartedNetwork)) {
      throw check.invalid('withNetwork', 'network', network, 'a started network (await new Network().start())');
    }
    this.networks = [network];
    return this;
  }

  /** More names the container has on its networks. */
  withNetworkAliases(...aliases: string[]): this {
    for (const alias of aliases) this.networkAliases.push(check.hostname('withNetworkAliases', alias, 'alias'));
    return this;
  }

  withBindMounts(bindMounts: BindMount[]): this {
    this.spec.binds.push(...check.bindMounts('withBindMounts', bindMounts));
    return this;
  }

  withTmpFs(tmpFs: TmpFs): this {
    Object.assign(this.spec.tmpfs, check.tmpfs('withTmpFs', tmpFs));
    return this;
  }

  /** Files copied in before the command starts (root-owned; mode: the source's unless given). */
  withCopyFilesToContainer(files: FileToCopy[]): this {
    this.spec.files.push(...check.filesToCopy('withCopyFilesToContainer', files, 'file'));
    return this;
  }

  withCopyDirectoriesToContainer(directories: DirectoryToCopy[]): this {
    this.spec.directories.push(...check.filesToCopy('withCopyDirectoriesToContainer', directories, 'directory'));
    return this;
  }

  withCopyContentToContainer(contents: ContentToCopy[]): this {
    this.spec.contents.push(...check.contentsToCopy('withCopyContentToContainer', contents));
    return this;
  }

  /** `memory` in gigabytes (GiB), `cpu` in CPUs, as testcontainers has them. */
  withResourcesQuota(quota: ResourcesQuota): this {
    const { memory, cpus } = check.resourcesQuota('withResourcesQuota', quota);
    this.spec.memory = memory;
    this.spec.cpus = cpus;
    return this;
  }

  /** Lowers resource limits (`{ nofile: { soft: 1024, hard: 1024 } }`); raising one above petri's own is an error. */
  withUlimits(ulimits: Ulimits): this {
    const checked = check.ulimits('withUlimits', ulimits);
    this.spec.ulimits = [...this.spec.ulimits.filter((u) => !checked.some((c) => c.name === u.name)), ...checked];
    return this;
  }

  withAddedCapabilities(...capabilities: string[]): this {
    const caps = check.capabilities('withAddedCapabilities', capabilities);
    try {
      resolveCapabilities(caps, []);
    } catch (error) {
      throw new PetriError(`withAddedCapabilities: ${(error as Error).message}`, { code: 'EINVAL', cause: error });
    }
    this.spec.capAdd.push(...caps);
    return this;
  }

  withDroppedCapabilities(...capabilities: string[]): this {
    this.spec.capDrop.push(...check.capabilities('withDroppedCapabilities', capabilities));
    return this;
  }

  /** All capabilities, no seccomp filter, no masked paths, all devices. */
  withPrivilegedMode(): this {
    this.spec.privileged = true;
    return this;
  }

  /** Lines added to the container's /etc/hosts (which petri then writes, as Docker does). */
  withExtraHosts(extraHosts: ExtraHost[]): this {
    this.spec.extraHosts.push(...check.extraHosts('withExtraHosts', extraHosts));
    return this;
  }

  withWaitStrategy(waitStrategy: WaitStrategy): this {
    if (!(waitStrategy instanceof WaitStrategy)) {
      throw check.invalid('withWaitStrategy', 'wait strategy', waitStrategy, 'one of Wait.for…()');
    }
    this.waitStrategy = waitStrategy;
    return this;
  }

  /** How long the wait strategy may take (default: its own, 60 s). */
  withStartupTimeout(startupTimeoutMs: number): this {
    this.startupTimeout = check.milliseconds('withStartupTimeout', startupTimeoutMs, 'timeout');
    return this;
  }

  /** Replaces the image's HEALTHCHECK (durations in ms), for Wait.forHealthCheck(). */
  withHealthCheck(healthCheck: HealthCheck): this {
    this.spec.healthCheck = check.healthCheck('withHealthCheck', healthCheck);
    return this;
  }

  /** Called at start with a stream of the container's output (stdout and stderr). */
  withLogConsumer(logConsumer: (stream: Readable) => unknown): this {
    if (typeof logConsumer !== 'function') {
      throw check.invalid('withLogConsumer', 'consumer', logConsumer, 'a function taking a Readable');
    }
    this.logConsumer = logConsumer;
    return this;
  }

  /**
   * Keeps the container running after this process ends, and starts no new one
   * while one started with the same configuration (a hash of it) still runs.
   */
  withReuse(): this {
    this.reuse = true;
    return this;
  }

  /**
   * Whether petri removes the container once stopped (default true). With
   * false, a stopped (or, at exit, killed) container keeps its record and
   * writable layer, like `docker run` without `--rm`, for `petri commit`,
   * `petri diff` or `petri rm`.
   */
  withAutoRemove(autoRemove: boolean): this {
    if (typeof autoRemove !== 'boolean') throw check.invalid('withAutoRemove', 'value', autoRemove, 'true or false');
    this.autoRemove = autoRemove;
    return this;
  }

  /** Creates the container, copies files in, starts it and waits until its wait strategy says it is ready. */
  async start(): Promise<StartedContainer> {
    // Runners are forked by the fork server once it is ready; until then the
    // next one is spawned ahead, while this one is used.
    if (process.env.PETRI_RUNNER_SERVER !== '0') useRunnerServer();
    useStandbyRunners();
    const store = this.store ?? ImageStore.open();
    const layers = this.layers ?? new LayerCache();
    if (this.networks.length > 0 && this.reuse) {
      throw new PetriError('withReuse() cannot be combined with withNetwork(): a network ends with its process', {
        code: 'EINVAL',
      });
    }
    const image = await imageFor(store, this.spec.image, this.pullPolicy, {
      insecureRegistries: this.insecureRegistries,
      layers,
    });
    if (this.reuse) {
      return startReused(this.spec, image, {
        store,
        layers,
        options: (labels, name) => containerOptions(this.spec, store, layers, { labels, name }),
        prepare: (dir, lower) => prepare(this.spec, dir, lower),
        wrap: (handle) => this.#wrap(handle, store, image, true),
      });
    }
    const addresses = this.networks.map((network) => ({ network, ip: network.allocate() }));
    const release = () => {
      for (const { network, ip } of addresses) network.release(ip);
    };
    let options: Awaited<ReturnType<typeof containerOptions>>;
    let container: Container;
    try {
      options = await containerOptions(
        this.spec,
        store,
        layers,
        {
          keep: !this.autoRemove,
          ...(addresses.length > 0
            ? { networks: addresses.map(({ network, ip }) => ({ holderPid: network.holderPid, address: `${ip}/24` })) }
            : {}),
        },
        image,
      );
      container = Container.create(options);
    } catch (error) {
      release();
      throw error;
    }
    const started = this.#wrap(new LocalHandle(container, options.rootfs as string[]), store, image, false, addresses);
    try {
      await prepare(this.spec, container.dir, options.rootfs as string[]);
      if (addresses.length > 0) {
        const hosts = new HostsFile(join(container.dir, 'hosts'), this.spec.extraHosts);
        const names = [...new Set([container.name, container.spec.hostname, ...this.networkAliases])];
        for (const { network, ip } of addresses) network.join(container.id, { ip, names, hosts });
      }
      // The first container of a process is forked by the fork server start() launched, rather than
      // spawned from Node: its `ready` line is usually there, only unread.
      await serverStarting();
      await started.run(true);
    } catch (error) {
      await started.remove().catch(() => {});
      release();
      throw error;
    }
    return started;
  }

  #wrap(
    handle: ContainerHandle,
    store: ImageStore,
    image: StoredImage,
    reused: boolean,
    networks: { network: StartedNetwork; ip: string }[] = [],
  ): StartedContainer {
    const healthCheck = resolveHealthCheck(this.spec.healthCheck, image.config.config?.Healthcheck);
    return new StartedContainer({
      handle,
      store,
      image: this.spec.image,
      labels: { ...this.spec.labels },
      waitStrategy: this.waitStrategy,
      startupTimeout: this.startupTimeout,
      exposedPorts: this.spec.ports.map((port) => port.container),
      stopSignal: stopSignal(image),
      autoRemove: this.autoRemove,
      reused,
      networks,
      ...(healthCheck
        ? {
            health: (container: StartedContainer) =>
              new HealthMonitor(healthCheck, (command, timeout) => container.execWithTimeout(command, timeout)),
          }
        : {}),
      ...(this.logConsumer ? { logConsumer: this.logConsumer } : {}),
    });
  }
}
