import { existsSync, statSync } from 'node:fs';
import { PetriError } from '../errors.js';
import { Container } from '../runtime/container.js';
import type { ContainerOptions } from '../runtime/options.js';
import { parseUlimit } from '../runtime/ulimits.js';
import { formatDuration, parseCpus, parseDuration, parseSize } from '../util/units.js';
import { type OptionSpec, parseArgs } from './args.js';

const OPTIONS: OptionSpec[] = [
  { name: 'rootfs', value: true },
  { name: 'entrypoint', value: true },
  { name: 'rm' },
  { name: 'name', value: true },
  { name: 'memory', short: 'm', value: true },
  { name: 'pids', value: true },
  { name: 'pids-limit', value: true },
  { name: 'cpus', value: true },
  { name: 'env', short: 'e', value: true, multiple: true },
  { name: 'workdir', short: 'w', value: true },
  { name: 'user', short: 'u', value: true },
  { name: 'hostname', value: true },
  { name: 'timeout', value: true },
  { name: 'interactive', short: 'i' },
  { name: 'no-init' },
  { name: 'cap-add', value: true, multiple: true },
  { name: 'cap-drop', value: true, multiple: true },
  { name: 'privileged' },
  { name: 'no-new-privileges' },
  { name: 'read-only' },
  { name: 'tmpfs', value: true, multiple: true },
  { name: 'volume', short: 'v', value: true, multiple: true },
  { name: 'ulimit', value: true, multiple: true },
  { name: 'network', value: true },
  { name: 'help' },
];

export const HELP = `usage: petri run [options] IMAGE [CMD [ARGS…]]
       petri run --rootfs DIR [options] [--] CMD [ARGS…]

Runs a command in a container from IMAGE (its Entrypoint/Cmd, Env, WorkingDir
and User applied, like docker run) or whose root is an overlay on DIR (DIR is
never written), streams its output and exits with its exit code (128+N when a
signal N killed it, 124 when --timeout killed it).

options:
  --rootfs DIR           run on a root filesystem directory instead of an image
  --entrypoint CMD       replace the image's Entrypoint ("" clears it)
  --rm                   remove the container when it exits (otherwise it is kept
                         until petri rm, like docker run)
  --name NAME            a unique name for the container
  -m, --memory SIZE      memory limit, like 64m or 1g (no swap beyond it)
  --pids N               limit on processes and threads (alias --pids-limit)
  --cpus N               CPU quota in CPUs, like 0.5
  -e, --env K=V          set an environment variable (K alone copies it from petri's)
  -w, --workdir DIR      working directory inside the container
  -u, --user USER[:GROUP]  user and group (names from the image, or numbers)
  --hostname NAME        container hostname (default: the short id)
  --timeout DURATION     kill the whole container after 500ms, 10s, 1m…
  -i, --interactive      pass petri's stdin to the command (otherwise /dev/null)
  --no-init              run CMD as PID 1 instead of under petri's init
  --cap-add CAP          add a capability (NET_ADMIN, SYS_PTRACE, ALL…)
  --cap-drop CAP         drop a capability
  --privileged           all capabilities, no seccomp, no masked paths, all devices
  --no-new-privileges    set no_new_privs (setuid programs no longer gain privileges)
  --read-only            mount the root filesystem read-only
  --tmpfs PATH[:OPTS]    mount a tmpfs, like --tmpfs /run:size=64m
  -v, --volume SRC:DST[:ro]  bind-mount a host path
  --ulimit NAME=S[:H]    lower a resource limit, like nofile=1024:1024 (never raises)
  --network none|host    own network namespace with only lo (default), or the host's
`;

export async function main(argv: string[]): Promise<number> {
  const { options, rest } = parseArgs('run', argv, OPTIONS);
  if (options.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const containerOptions = await toContainerOptions(options, rest);
  const container = Container.create(containerOptions);
  const forward = (signal: NodeJS.Signals) => {
    if (container.state === 'running') container.kill(signal);
  };
  const onInt = () => setTimeout(() => forward('SIGINT'), 100).unref();
  const onTerm = () => forward('SIGTERM');
  const onHup = () => forward('SIGHUP');
  process.on('SIGINT', onInt).on('SIGTERM', onTerm).on('SIGHUP', onHup);
  try {
    await container.start({ stdin: options.interactive ? 'inherit' : 'ignore', stdout: 'inherit', stderr: 'inherit' });
    const result = await container.wait();
    if (result.timedOut) {
      process.stderr.write(
        `petri: container ${container.id} timed out after ${formatDuration(containerOptions.timeoutMs ?? 0)} and was killed\n`,
      );
      return 124;
    }
    if (result.oomKilled) {
      process.stderr.write(
        `petri: container ${container.id} ran out of memory (limit ${options.memory}) and was killed\n`,
      );
    }
    return result.exitCode;
  } finally {
    process.off('SIGINT', onInt).off('SIGTERM', onTerm).off('SIGHUP', onHup);
    if (!containerOptions.keep || container.state !== 'exited') await container.remove();
  }
}

async function toContainerOptions(
  options: Record<string, string | boolean | string[]>,
  rest: string[],
): Promise<ContainerOptions> {
  const str = (key: string) => (typeof options[key] === 'string' ? (options[key] as string) : undefined);
  const rootfs = str('rootfs');
  if (rootfs !== undefined) {
    if (!existsSync(rootfs) || !statSync(rootfs).isDirectory()) {
      throw new PetriError(`petri run: root filesystem ${rootfs} does not exist or is not a directory`);
    }
    if (rest.length === 0) throw new PetriError('petri run: no command given (petri run --rootfs DIR -- CMD [ARGS…])');
    const user = str('user');
    return { ...commonOptions(options), rootfs, command: rest, user: user === undefined ? undefined : parseUser(user) };
  }
  const [image, ...command] = rest;
  if (image === undefined) {
    throw new PetriError('petri run: no image given (petri run IMAGE [CMD…], or petri run --rootfs DIR CMD…)');
  }
  const [{ ImageStore }, { LayerCache }, { imageContainerOptions }] = await Promise.all([
    import('../image/store.js'),
    import('../snapshot/layers.js'),
    import('../harness/image-run.js'),
  ]);
  const { env, ...common } = commonOptions(options);
  const entrypoint = str('entrypoint');
  return imageContainerOptions(ImageStore.open(), new LayerCache(), image, {
    ...common,
    command,
    env,
    ...(entrypoint !== undefined ? { entrypoint: entrypoint === '' ? [] : [entrypoint] } : {}),
    user: str('user'),
    workdir: str('workdir'),
  });
}

/** The options that do not depend on where the root filesystem comes from. */
type CommonOptions = Omit<ContainerOptions, 'rootfs' | 'command' | 'user'> & { env: Record<string, string> };

function commonOptions(options: Record<string, string | boolean | string[]>): CommonOptions {
  const str = (key: string) => (typeof options[key] === 'string' ? (options[key] as string) : undefined);
  const list = (key: string) => (options[key] as string[] | undefined) ?? [];
  const network = str('network');
  if (network !== undefined && network !== 'none' && network !== 'host') {
    throw new PetriError(`petri run: invalid --network "${network}": expected none or host`);
  }
  const pids = str('pids') ?? str('pids-limit');
  const memory = str('memory');
  const cpus = str('cpus');
  const timeout = str('timeout');
  return {
    name: str('name'),
    keep: options.rm !== true,
    env: parseEnv(list('env')),
    workdir: str('workdir'),
    hostname: str('hostname'),
    memory: memory === undefined ? undefined : parseSize(memory, 'memory limit'),
    pids: pids === undefined ? undefined : parsePids(pids),
    cpus: cpus === undefined ? undefined : parseCpus(cpus),
    timeoutMs: timeout === undefined ? undefined : parseDuration(timeout, 'timeout'),
    init: !options['no-init'],
    capAdd: list('cap-add'),
    capDrop: list('cap-drop'),
    privileged: options.privileged === true,
    noNewPrivileges: options['no-new-privileges'] === true,
    readonlyRootfs: options['read-only'] === true,
    tmpfs: Object.fromEntries(list('tmpfs').map(parseTmpfs)),
    binds: list('volume').map(parseVolume),
    ulimits: list('ulimit').map(parseUlimit),
    network: network as 'none' | 'host' | undefined,
  };
}

function parseEnv(entries: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const entry of entries) {
    const eq = entry.indexOf('=');
    if (eq === 0) throw new PetriError(`petri run: invalid --env "${entry}": expected K=V`);
    if (eq < 0) {
      const value = process.env[entry];
      if (value !== undefined) env[entry] = value;
    } else {
      env[entry.slice(0, eq)] = entry.slice(eq + 1);
    }
  }
  return env;
}

function parseUser(text: string): { uid: number; gid: number } {
  const match = /^(\d+)(?::(\d+))?$/.exec(text);
  if (!match) throw new PetriError(`petri run: invalid --user "${text}": expected UID or UID:GID (numbers)`);
  const uid = Number(match[1]);
  return { uid, gid: match[2] === undefined ? uid : Number(match[2]) };
}

function parsePids(text: string): number {
  if (!/^\d+$/.test(text) || Number(text) <= 0) {
    throw new PetriError(`petri run: invalid --pids "${text}": expected a positive integer`);
  }
  return Number(text);
}

function parseTmpfs(text: string): [string, string] {
  const colon = text.indexOf(':');
  const path = colon < 0 ? text : text.slice(0, colon);
  if (!path.startsWith('/')) throw new PetriError(`petri run: invalid --tmpfs "${text}": the path must be absolute`);
  return [path, colon < 0 ? '' : text.slice(colon + 1)];
}

function parseVolume(text: string): { source: string; target: string; readonly: boolean } {
  const parts = text.split(':');
  const [source, target, mode] = parts;
  if (
    parts.length < 2 ||
    parts.length > 3 ||
    !source?.startsWith('/') ||
    !target?.startsWith('/') ||
    (mode !== undefined && mode !== 'ro' && mode !== 'rw')
  ) {
    throw new PetriError(`petri run: invalid --volume "${text}": expected /host/path:/container/path[:ro]`);
  }
  if (!existsSync(source)) throw new PetriError(`petri run: volume source ${source} does not exist`);
  return { source, target, readonly: mode === 'ro' };
}
