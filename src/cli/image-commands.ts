import { existsSync } from 'node:fs';
import { PetriError } from '../errors.js';
import { loadArchive } from '../image/archive/load.js';
import { saveImages } from '../image/archive/save.js';
import { ImageStore } from '../image/store.js';
import { type OptionSpec, parseArgs } from './args.js';

/** `petri import`, `petri save`, `petri load`: images in and out of the store. */

export const IMPORT_HELP = `usage: petri import ROOTFS_DIR|TARBALL IMAGE[:TAG] [--message M] [--change 'CMD …']

Makes a one-layer image from a root filesystem directory or a tarball (plain
or gzip), like docker import.
  -m, --message M     a comment for the image's history
  -c, --change INSTR  apply a Dockerfile instruction (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, VOLUME)
`;

export async function importMain(argv: string[]): Promise<number> {
  const specs: OptionSpec[] = [
    { name: 'message', short: 'm', value: true },
    { name: 'change', short: 'c', value: true, multiple: true },
    { name: 'help' },
  ];
  const { options, rest } = parseArgs('import', argv, specs);
  if (options.help) return help(IMPORT_HELP);
  if (rest.length !== 2) throw new PetriError('petri import: expected ROOTFS_DIR|TARBALL and IMAGE[:TAG]');
  const { importRootfs } = await import('../harness/import.js');
  const result = await importRootfs(ImageStore.open(), rest[0] as string, rest[1] as string, {
    ...(typeof options.message === 'string' ? { message: options.message } : {}),
    changes: (options.change as string[] | undefined) ?? [],
  });
  process.stdout.write(`${result.id}\n`);
  return 0;
}

export const SAVE_HELP = `usage: petri save IMAGE... -o FILE.tar

Writes images to an archive that docker load, podman load and petri load read
(Docker's manifest.json and an OCI layout in one tar).
  -o, --output FILE   the archive to write (required)
`;

export async function saveMain(argv: string[]): Promise<number> {
  const specs: OptionSpec[] = [{ name: 'output', short: 'o', value: true }, { name: 'help' }];
  const { options, rest } = parseArgs('save', argv, specs);
  if (options.help) return help(SAVE_HELP);
  const output = options.output;
  if (typeof output !== 'string')
    throw new PetriError('petri save: -o FILE.tar is required (where to write the archive)');
  await saveImages(ImageStore.open(), rest, output);
  return 0;
}

export const LOAD_HELP = `usage: petri load -i FILE.tar

Loads images from a Docker archive (docker save, podman save) or an OCI archive
(podman save --format oci-archive), plain or gzip, and prints what it loaded.
  -i, --input FILE   the archive to read (required)
`;

export async function loadMain(argv: string[]): Promise<number> {
  const specs: OptionSpec[] = [{ name: 'input', short: 'i', value: true }, { name: 'help' }];
  const { options } = parseArgs('load', argv, specs);
  if (options.help) return help(LOAD_HELP);
  const input = options.input;
  if (typeof input !== 'string') throw new PetriError('petri load: -i FILE.tar is required (the archive to read)');
  if (!existsSync(input)) throw new PetriError(`petri load: ${input} does not exist`);
  for (const image of await loadArchive(ImageStore.open(), input)) {
    if (image.tags.length === 0) process.stdout.write(`Loaded image ID: ${image.id}\n`);
    for (const tag of image.tags) process.stdout.write(`Loaded image: ${tag}\n`);
  }
  return 0;
}

function help(text: string): number {
  process.stdout.write(text);
  return 0;
}
