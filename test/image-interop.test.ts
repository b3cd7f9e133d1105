import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pack } from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Descriptor, ImageStore, MEDIA_TYPES, sha256Digest } from '../src/image/index.js';
import { isRoot } from './helpers/kernel.js';

function missingTool(tool: string): string | undefined {
  const found = spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
  return found ? undefined : `needs ${tool} (apt-get install ${tool})`;
}

/** `it` that is skipped with the reason in its title when something it needs is missing. */
function itNeeds(missing: string | undefined, title: string, body: () => Promise<void>): void {
  if (missing) it.skip(`${title} [skipped: ${missing}]`, body);
  else it(title, body);
}

let dir: string;
let store: ImageStore;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'petri-image-interop-'));
  store = ImageStore.open(join(dir, 'images'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const HELLO = 'hello from a petri layer\n';

/** A one-layer image (an uncompressed tar holding hello.txt) tagged demo:1. */
async function buildDemo(): Promise<{ manifest: Descriptor; layer: string; configDigest: string }> {
  const tar = pack();
  tar.entry({ name: 'hello.txt', mode: 0o644, mtime: new Date(0) }, HELLO);
  tar.finalize();
  const layer = await store.writeBlobStream(tar);
  const { manifest, configDigest } = await store.writeImage({
    config: {
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: ['/bin/sh'], Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'] },
      // An uncompressed layer's diff id is its digest.
      rootfs: { type: 'layers', diff_ids: [layer.digest] },
      history: [{ created_by: 'petri test: hello.txt' }],
    },
    layers: [{ mediaType: MEDIA_TYPES.ociLayer, ...layer }],
  });
  await store.tag('demo:1', manifest);
  return { manifest, layer: layer.digest, configDigest };
}

describe('the image store as an OCI layout for other tools', () => {
  itNeeds(missingTool('skopeo'), 'skopeo inspects a tagged image and copies one into the store', async () => {
    const { manifest, layer } = await buildDemo();
    const inspect = JSON.parse(execFileSync('skopeo', ['inspect', `oci:${store.dir}:demo:1`], { encoding: 'utf8' }));
    expect(inspect.Digest).toBe(manifest.digest);
    expect(inspect.Layers).toEqual([layer]);
    expect(inspect.Architecture).toBe('amd64');
    expect(inspect.Os).toBe('linux');
    const raw = execFileSync('skopeo', ['inspect', '--raw', `oci:${store.dir}:demo:1`]);
    expect(sha256Digest(raw)).toBe(manifest.digest);

    // The other way round: an image skopeo writes into the layout is one the store resolves and verifies.
    execFileSync('skopeo', ['copy', '-q', `oci:${store.dir}:demo:1`, `oci:${store.dir}:demo:copy`]);
    const copy = await store.resolve('demo:copy');
    expect(copy.manifest.layers.map((l) => l.digest)).toEqual([layer]);
    expect((await store.readBlob(layer)).length).toBeGreaterThan(HELLO.length);
    expect((await store.list()).flatMap((image) => image.tags).sort()).toEqual(['demo:1', 'demo:copy']);
  });

  itNeeds(
    missingTool('umoci') ?? (isRoot ? undefined : 'needs root (umoci unpack keeps file owners)'),
    'umoci unpacks a tagged image into a bundle whose rootfs holds the layer',
    async () => {
      await buildDemo();
      const bundle = join(dir, 'bundle');
      execFileSync('umoci', ['unpack', '--image', `${store.dir}:demo:1`, bundle], { stdio: 'pipe' });
      expect(readFileSync(join(bundle, 'rootfs', 'hello.txt'), 'utf8')).toBe(HELLO);
      const spec = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8'));
      expect(spec.process.args).toEqual(['/bin/sh']);
    },
  );
});
