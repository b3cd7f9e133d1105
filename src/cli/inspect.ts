import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PetriError } from '../errors.js';
import { ImageStore } from '../image/store.js';
import { findContainer } from '../runtime/containers.js';
import { type OptionSpec, parseArgs } from './args.js';

const OPTIONS: OptionSpec[] = [{ name: 'help' }];

export const HELP = `usage: petri inspect IMAGE|CONTAINER...

Prints a JSON array with one object per image (Id, RepoTags, RepoDigests,
Created, Architecture, Os, Config, RootFS, Layers, Size, History) or container
(Id, Name, State, Image, Config, Mounts), like docker inspect.
`;

export async function main(argv: string[]): Promise<number> {
  const { options, rest } = parseArgs('inspect', argv, OPTIONS);
  if (options.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (rest.length === 0) throw new PetriError('petri inspect: no image or container given');
  const store = ImageStore.open();
  const out: unknown[] = [];
  for (const ref of rest) out.push(await inspectOne(store, ref));
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  return 0;
}

async function inspectOne(store: ImageStore, ref: string): Promise<unknown> {
  try {
    const image = await store.resolve(ref);
    return {
      Id: image.id,
      RepoTags: image.tags,
      RepoDigests: image.tags.map((tag) => `${tag.slice(0, tag.lastIndexOf(':'))}@${image.manifestDigest}`),
      ManifestDigest: image.manifestDigest,
      Created: image.config.created,
      Author: image.config.author,
      Architecture: image.config.architecture,
      Os: image.config.os,
      Config: image.config.config,
      RootFS: { Type: 'layers', Layers: image.config.rootfs.diff_ids },
      Layers: image.manifest.layers,
      Size: image.size,
      History: image.config.history ?? [],
    };
  } catch (error) {
    if ((error as PetriError).code !== 'ENOIMAGE') throw error;
  }
  try {
    const container = findContainer(ref);
    const spec = JSON.parse(readFileSync(join(container.dir, 'config.json'), 'utf8'));
    return {
      Id: container.id,
      Name: container.name,
      Created: container.createdAt,
      State: { Status: container.status, Pid: container.initPid ?? 0, ...(container.exit ?? {}) },
      Image: container.imageId ?? '',
      ImageName: container.image ?? '',
      Config: {
        Cmd: container.command,
        Env: spec.process.env,
        WorkingDir: spec.process.cwd,
        User: spec.process.user,
        Hostname: spec.hostname,
        Labels: Object.fromEntries(
          Object.entries(spec.annotations ?? {}).filter(([key]) => !key.startsWith('org.petri.')),
        ),
      },
      GraphDriver: {
        Name: 'overlay',
        Data: { LowerDir: container.lower.join(':'), UpperDir: join(container.dir, 'upper') },
      },
    };
  } catch (error) {
    if ((error as PetriError).code !== 'ENOCONTAINER') throw error;
  }
  throw new PetriError(`no such image or container: ${ref}`);
}
