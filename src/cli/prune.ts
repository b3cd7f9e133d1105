import { ImageStore } from '../image/store.js';
import { listContainers } from '../runtime/containers.js';
import { sweepContainers } from '../runtime/sweep.js';
import { LayerCache } from '../snapshot/layers.js';
import { type OptionSpec, parseArgs } from './args.js';
import { size } from './format.js';

export const HELP = `usage: petri prune

Removes what nothing uses: leftovers of crashed petri processes, image blobs no
tagged image references (older than 10 minutes, so a concurrent import is safe),
and unpacked layers no image or container uses. Never what a container uses.
`;

export async function main(argv: string[]): Promise<number> {
  const { options } = parseArgs('prune', argv, [{ name: 'help' }] as OptionSpec[]);
  if (options.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const swept = await sweepContainers();
  const store = ImageStore.open();
  const containers = listContainers();
  const keep = new Set<string>();
  for (const container of containers) {
    if (!container.imageId) continue;
    try {
      const image = await store.resolve(container.imageId);
      for (const digest of [
        image.manifestDigest,
        image.manifest.config.digest,
        ...image.manifest.layers.map((l) => l.digest),
      ]) {
        keep.add(digest);
      }
    } catch {
      // its image is gone already
    }
  }
  const blobs = await store.prune({ keep });
  const cache = new LayerCache();
  const used = new Set(containers.flatMap((c) => c.lower));
  const { chainIds } = await import('../snapshot/layers.js');
  const wanted = new Set<string>();
  for (const image of await store.list()) for (const id of chainIds(image.config.rootfs.diff_ids)) wanted.add(id);
  const unused = cache.list().filter((layer) => !wanted.has(layer.chainId) && !used.has(layer.dir));
  cache.remove(unused.map((layer) => layer.chainId));
  process.stdout.write(
    `removed ${swept.length} leftover containers, ${blobs.removed.length} blobs (${size(blobs.bytes)}), ${unused.length} unpacked layers\n`,
  );
  return 0;
}
