import { PetriError } from '../errors.js';
import { ImageStore } from '../image/store.js';
import { type OptionSpec, parseArgs } from './args.js';

export const HELP = `usage: petri tag SOURCE_IMAGE TARGET_IMAGE[:TAG]

Gives an image another name (the tag moves if it named another image).
`;

export async function main(argv: string[]): Promise<number> {
  const { options, rest } = parseArgs('tag', argv, [{ name: 'help' }] as OptionSpec[]);
  if (options.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (rest.length !== 2) throw new PetriError('petri tag: expected SOURCE_IMAGE and TARGET_IMAGE[:TAG]');
  const store = ImageStore.open();
  const image = await store.resolve(rest[0] as string);
  await store.tag(rest[1] as string, image.manifestDigest);
  return 0;
}
