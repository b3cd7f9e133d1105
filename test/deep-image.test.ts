import { spawnSync } from 'node:child_process';
import { release } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import tar from 'tar-stream';
import { afterAll, expect, it } from 'vitest';
import { ImageStore } from '../src/image/store.js';
import { type Descriptor, MEDIA_TYPES } from '../src/image/types.js';
import { describeKernel } from './helpers/kernel.js';
import { busyboxRootfs } from './helpers/rootfs.js';

const petri = join(import.meta.dirname, '..', 'dist', 'cli', 'main.js');
const LAYERS = 120;

/** A layer tar holding one file, `/layers/N`. */
async function layerWith(store: ImageStore, n: number): Promise<{ descriptor: Descriptor; diffId: string }> {
  const pack = tar.pack();
  pack.entry({ name: 'layers/', type: 'directory', mode: 0o755, mtime: new Date(0) });
  pack.entry({ name: `layers/${n}`, mode: 0o644, mtime: new Date(0) }, `layer ${n}\n`);
  pack.finalize();
  const info = await store.writeBlobStream(pack.pipe(new PassThrough()));
  return { descriptor: { mediaType: MEDIA_TYPES.ociLayer, digest: info.digest, size: info.size }, diffId: info.digest };
}

describeKernel(`deep images (Linux ${release()})`, () => {
  afterAll(() => {
    spawnSync(process.execPath, [petri, 'rmi', 'ptest/deep:1', 'ptest/deep-base:1']);
  });

  it(`runs an image of ${LAYERS} layers, more than one overlay option string holds`, async () => {
    const store = ImageStore.open();
    const imported = spawnSync(process.execPath, [petri, 'import', await busyboxRootfs(), 'ptest/deep-base:1']);
    expect(imported.status).toBe(0);
    const base = await store.resolve('ptest/deep-base:1');
    const extra = [];
    for (let n = 1; n < LAYERS; n++) extra.push(await layerWith(store, n));
    const config = {
      ...base.config,
      rootfs: { type: 'layers' as const, diff_ids: [...base.config.rootfs.diff_ids, ...extra.map((l) => l.diffId)] },
    };
    const { manifest } = await store.writeImage({
      config,
      layers: [...base.manifest.layers, ...extra.map((l) => l.descriptor)],
    });
    await store.tag('ptest/deep:1', manifest);
    const run = spawnSync(
      process.execPath,
      [petri, 'run', '--rm', 'ptest/deep:1', 'sh', '-c', 'ls /layers | wc -l; cat /layers/1 /layers/119'],
      {
        encoding: 'utf8',
      },
    );
    expect(run.stderr).toBe('');
    expect(run.stdout).toBe(`${LAYERS - 1}\nlayer 1\nlayer 119\n`);
  }, 60_000);
});
