import { writeFileSync } from 'node:fs';
import { PetriError } from '../errors.js';
import { RunnerProcess } from '../runtime/runner-process.js';
import { randomHex } from '../util/fs.js';
import type { ExtraHost } from './types.js';
import * as check from './validate.js';

/**
 * Networks between containers, like `docker network create`: a bridge inside
 * a network namespace petri owns (a `petri-runner network` process keeps it
 * while it runs), and each container on it attached with a veth pair, its
 * address from the network's /24. Names resolve through /etc/hosts: every
 * member's lists every member (its name, hostname and aliases), rewritten
 * when one joins or leaves. Nothing of the host's network configuration
 * changes. The holder dies with this process (PDEATHSIG), so a network never
 * outlives the test process that made it.
 */
export class Network {
  readonly #name: string | undefined;

  constructor(options: { name?: string } = {}) {
    if (options.name !== undefined) check.containerName('Network', options.name);
    this.#name = options.name;
  }

  async start(): Promise<StartedNetwork> {
    if (process.getuid?.() !== 0) {
      throw new PetriError('petri must run as root to create a network (a network namespace); try sudo');
    }
    const id = randomHex(6);
    const subnet = nextSubnet();
    const runner = new RunnerProcess(['network', '--address', `${subnet}.1/24`], ['ignore', 'ignore', 'pipe']);
    try {
      await runner.started;
    } catch {
      const exit = await runner.exited;
      throw new PetriError(
        `cannot start network: ${exit.error ?? `petri-runner network exited with ${exit.exitCode}`}`,
      );
    }
    // Like a container: a running network does not keep the process alive.
    runner.unref();
    return new StartedNetwork(id, this.#name ?? `petri-net-${id}`, subnet, runner);
  }
}

/** One container on a network, as the others' /etc/hosts name it. */
interface Member {
  ip: string;
  names: string[];
  hosts: HostsFile;
}

export class StartedNetwork implements AsyncDisposable {
  readonly #members = new Map<string, Member>();
  readonly #used = new Set<number>();
  #stopped: Promise<void> | undefined;

  /** @internal Use `new Network().start()`. */
  constructor(
    readonly id: string,
    readonly name: string,
    /** The first three octets of its /24. */
    readonly subnet: string,
    readonly runner: RunnerProcess,
  ) {}

  getId(): string {
    return this.id;
  }

  getName(): string {
    return this.name;
  }

  /** @internal The pid of the process that keeps its namespace. */
  get holderPid(): number {
    const pid = this.runner.child?.pid;
    if (pid === undefined || this.#stopped) {
      throw new PetriError(`network ${this.name} was stopped`, { code: 'ESTATE' });
    }
    return pid;
  }

  /** @internal An address for a new member. */
  allocate(): string {
    for (let host = 2; host < 255; host++) {
      if (this.#used.has(host)) continue;
      this.#used.add(host);
      return `${this.subnet}.${host}`;
    }
    throw new PetriError(`network ${this.name} is full: 253 containers are on it`);
  }

  /** @internal An address allocated for a container that did not join after all. */
  release(ip: string): void {
    if (![...this.#members.values()].some((member) => member.ip === ip)) this.#used.delete(Number(ip.split('.')[3]));
  }

  /** @internal */
  join(id: string, member: Member): void {
    this.#members.set(id, member);
    member.hosts.networks.add(this);
    this.#rewrite();
  }

  /** @internal The container left (was removed): its address is free, the others' /etc/hosts forget it. */
  leave(id: string): void {
    const member = this.#members.get(id);
    if (!member) return;
    this.#members.delete(id);
    member.hosts.networks.delete(this);
    this.#used.delete(Number(member.ip.split('.')[3]));
    this.#rewrite();
  }

  /** @internal */
  members(): Member[] {
    return [...this.#members.values()];
  }

  #rewrite(): void {
    for (const member of this.#members.values()) member.hosts.write();
  }

  /** Removes the network: the containers still on it lose their interface on it. */
  stop(): Promise<void> {
    this.#stopped ??= (async () => {
      const timer = setInterval(() => {}, 60_000); // the holder does not keep the process alive by itself
      try {
        this.runner.kill();
        await this.runner.exited;
      } finally {
        clearInterval(timer);
      }
    })();
    return this.#stopped;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

const BASE_HOSTS = [
  '127.0.0.1\tlocalhost',
  '::1\tlocalhost ip6-localhost ip6-loopback',
  'fe00::\tip6-localnet',
  'ff00::\tip6-mcastprefix',
  'ff02::1\tip6-allnodes',
  'ff02::2\tip6-allrouters',
];

/**
 * A container's /etc/hosts (its bundle's `hosts`, bind-mounted): the usual
 * lines, withExtraHosts, then the members of its networks. Written in place,
 * so that the bind mount sees each new version.
 */
export class HostsFile {
  readonly networks = new Set<StartedNetwork>();

  constructor(
    readonly path: string,
    readonly extraHosts: ExtraHost[],
  ) {}

  write(): void {
    const lines = [...BASE_HOSTS, ...this.extraHosts.map(({ host, ipAddress }) => `${ipAddress}\t${host}`)];
    for (const network of this.networks) {
      for (const member of network.members()) lines.push(`${member.ip}\t${member.names.join(' ')}`);
    }
    writeFileSync(this.path, `${lines.join('\n')}\n`, { mode: 0o644 });
  }
}

let subnetCounter = Math.floor(Math.random() * 0xffff);

/** `10.X.Y` for a new network: each network has a namespace of its own, so only a container on two of them needs them to differ. */
function nextSubnet(): string {
  subnetCounter = (subnetCounter + 1) % 0xffff;
  return `10.${(subnetCounter >> 8) & 0xff}.${subnetCounter & 0xff}`;
}
