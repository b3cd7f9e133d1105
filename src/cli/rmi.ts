import { PetriError } from '../errors.js';
import { ImageStore } from '../image/store.js';
import { listContainers } from '../runtime/containers.js';
import { type OptionSpec, parseArgs } from './args.js';

export const HELP = `usage: petri rmi [-f] IMAGE...

Removes image names (and with -f or an id, every name of the image). The
content stays until petri prune finds nothing using it.
  -f, --force   remove every tag of an image given by id, or the last name of an
                image a container uses
`;

export async function main(argv: string[]): Promise<number> {
  const { options, rest } = parseArgs('rmi', argv, [{ name: 'force', short: 'f' }, { name: 'help' }] as OptionSpec[]);
  if (options.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (rest.length === 0) throw new PetriError('petri rmi: no image given (petri rmi IMAGE...)');
  const store = ImageStore.open();
  let failed = 0;
  for (const ref of rest) {
    try {
      const image = await store.resolve(ref);
      const user = listContainers().find((c) => c.imageId === image.id);
      const lastName = image.tags.length <= 1 || !image.tags.includes(ref);
      if (user && lastName && !options.force) {
        throw new PetriError(
          `unable to remove image ${ref}: container ${user.name} uses it; remove the container first (petri rm ${user.name}) or force it with -f`,
        );
      }
      for (const removed of await store.removeImage(ref, { force: options.force === true })) {
        process.stdout.write(`Untagged: ${removed}\n`);
      }
    } catch (error) {
      if (!(error instanceof PetriError)) throw error;
      process.stderr.write(`petri: ${error.message}\n`);
      failed++;
    }
  }
  return failed ? 1 : 0;
}
