import { ImageStore } from '../image/store.js';
import { type OptionSpec, parseArgs } from './args.js';
import { ago, size, table } from './format.js';

const OPTIONS: OptionSpec[] = [{ name: 'quiet', short: 'q' }, { name: 'help' }];

export const HELP = `usage: petri images [-q]

Lists the images in the store: REPOSITORY, TAG, IMAGE ID, CREATED, SIZE.
  -q, --quiet   print only image ids
`;

export async function main(argv: string[]): Promise<number> {
  const { options } = parseArgs('images', argv, OPTIONS);
  if (options.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const images = await ImageStore.open().list();
  if (options.quiet) {
    for (const id of new Set(images.map((image) => image.id.slice(7, 19)))) process.stdout.write(`${id}\n`);
    return 0;
  }
  const rows: string[][] = [];
  for (const image of images) {
    const names = image.tags.length ? image.tags : ['<none>:<none>'];
    for (const name of names) {
      const colon = name.lastIndexOf(':');
      rows.push([
        name.slice(0, colon),
        name.slice(colon + 1),
        image.id.slice(7, 19),
        image.config.created ? ago(image.config.created) : '-',
        size(image.size),
      ]);
    }
  }
  process.stdout.write(table(['REPOSITORY', 'TAG', 'IMAGE ID', 'CREATED', 'SIZE'], rows));
  return 0;
}
