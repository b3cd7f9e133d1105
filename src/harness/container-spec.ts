import { writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import { PetriError } from '../errors.js';
import type { ImageStore } from '../image/store.js';
import type { StoredImage } from '../image/types.js';
import type { ContainerOptions } from '../runtime/options.js';
import type { LayerCache } from '../snapshot/layers.js';
import { copyArchive, extractArchive } from './archive.js';
import { LayeredView } from './fs-view.js';
import { imageContainerOptions } from './image-run.js';
import type {
  ContentToCopy,
  DirectoryToCopy,
  Environment,
  ExtraHost,
  FileToCopy,
  HealthCheck,
  Labels,
  TmpFs,
} from './types.js';

/** Everything a container is started with: what `withReuse` hashes. */
export interface ContainerSpec {
  image: string;
  command?: string[];
  entrypoint?: string[];
  env: Environment;
  workingDir?: string;
  user?: string;
  name?: string;
  hostname?: string;
  labels: Labels;
  binds: { source: string; target: string; readonly: boolean }[];
  tmpfs: TmpFs;
  files: FileToCopy[];
  directories: DirectoryToCopy[];
  contents: ContentToCopy[];
  memory?: number;
  cpus?: number;
  ulimits: { name: string; soft: number; hard: number }[];
  capAdd: string[];
  capDrop: string[];
  privileged: boolean;
  extraHosts: ExtraHost[];
  /** Exposed TCP ports and the host port each is published on (0: any free one). */
  ports: { container: number; host: number }[];
  healthCheck?: HealthCheck;
}

/** The runtime's options for a container of `spec`: the image's config applied, then the caller's. */
export async function containerOptions(
  spec: ContainerSpec,
  store: ImageStore,
  layers: LayerCache,
  extra: Partial<ContainerOptions> = {},
  image?: StoredImage,
): Promise<ContainerOptions> {
  const binds = [...spec.binds];
  if (spec.extraHosts.length > 0 || (extra.networks?.length ?? 0) > 0) {
    binds.push({ source: HOSTS_FILE, target: '/etc/hosts', readonly: false });
  }
  return imageContainerOptions(
    store,
    layers,
    spec.image,
    {
      ...extra,
      labels: { ...spec.labels, ...extra.labels },
      name: extra.name ?? spec.name,
      ...(spec.command ? { command: spec.command } : {}),
      ...(spec.entrypoint ? { entrypoint: spec.entrypoint } : {}),
      env: spec.env,
      workdir: spec.workingDir,
      user: spec.user,
      hostname: spec.hostname,
      binds,
      tmpfs: spec.tmpfs,
      memory: spec.memory,
      cpus: spec.cpus,
      ulimits: spec.ulimits,
      capAdd: spec.capAdd,
      capDrop: spec.capDrop,
      privileged: spec.privileged,
      ports: spec.ports,
    },
    image,
  );
}

/** Relative to the bundle: the runner binds the container's own copy. */
const HOSTS_FILE = 'hosts';

/** Before the first start: /etc/hosts written, files copied into the upper dir (parents resolved through the layers). */
export async function prepare(spec: ContainerSpec, dir: string, lower: string[]): Promise<void> {
  if (spec.extraHosts.length > 0) {
    const lines = [
      '127.0.0.1\tlocalhost',
      '::1\tlocalhost ip6-localhost ip6-loopback',
      'fe00::\tip6-localnet',
      'ff00::\tip6-mcastprefix',
      'ff02::1\tip6-allnodes',
      'ff02::2\tip6-allrouters',
      ...spec.extraHosts.map(({ host, ipAddress }) => `${ipAddress}\t${host}`),
    ];
    writeFileSync(join(dir, HOSTS_FILE), `${lines.join('\n')}\n`, { mode: 0o644 });
  }
  if (spec.files.length + spec.directories.length + spec.contents.length > 0) {
    const upper = join(dir, 'upper');
    try {
      await extractArchive(
        new LayeredView([upper, ...lower]),
        upper,
        copyArchive(spec.files, spec.directories, spec.contents),
      );
    } catch (error) {
      throw new PetriError(`cannot copy files into the container: ${(error as Error).message}`, { cause: error });
    }
  }
}

/** The image's STOPSIGNAL (`SIGQUIT`, `QUIT`, `3`), else SIGTERM. */
export function stopSignal(image: StoredImage): NodeJS.Signals {
  const signal = image.config.config?.StopSignal?.trim().toUpperCase();
  if (!signal) return 'SIGTERM';
  const signals = constants.signals as Record<string, number>;
  if (/^\d+$/.test(signal)) {
    const name = Object.keys(signals).find((key) => signals[key] === Number(signal));
    return (name ?? 'SIGTERM') as NodeJS.Signals;
  }
  const name = signal.startsWith('SIG') ? signal : `SIG${signal}`;
  return (name in signals ? name : 'SIGTERM') as NodeJS.Signals;
}
