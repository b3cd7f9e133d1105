import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Descriptor, type ImageConfig, ImageStore, MEDIA_TYPES } from '../src/image/index.js';
import { spawnCollect } from './helpers/spawn.js';

let dir: string;
let store: ImageStore;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'petri-image-prune-'));
  store = ImageStore.open(join(dir, 'images'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const HOUR_AGO = new Date(Date.now() - 3600_000);

function config(diffIds: string[]): ImageConfig {
  return { architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: diffIds } };
}

async function makeImage(...contents: string[]) {
  const layers: Descriptor[] = [];
  for (const content of contents) layers.push({ mediaType: MEDIA_TYPES.ociLayer, ...(await store.writeBlob(content)) });
  const written = await store.writeImage({ config: config(layers.map((l) => l.digest)), layers });
  return { ...written, layers: layers.map((l) => l.digest) };
}

function blobNames(): string[] {
  return readdirSync(store.blobsDir).sort();
}

function age(path: string): void {
  utimesSync(path, HOUR_AGO, HOUR_AGO);
}

/** Every tag resolves, and every blob a tag reaches is there and matches its digest. */
async function checkConsistent(): Promise<string[]> {
  const index = JSON.parse(readFileSync(join(store.dir, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  const tags = index.manifests.map((m) => m.annotations?.['org.opencontainers.image.ref.name'] ?? '');
  for (const tag of tags) {
    const image = await store.resolve(tag);
    await store.readBlob(image.manifestDigest);
    await store.readBlob(image.id);
    for (const layer of image.manifest.layers) await store.readBlob(layer.digest);
  }
  return tags;
}

describe('ImageStore.prune', () => {
  it('removes what no tag reaches once past the grace period, and keeps the rest', async () => {
    const kept = await makeImage('shared layer', 'layer a');
    await store.tag('keep:1', kept.manifest);
    const dropped = await makeImage('shared layer', 'layer b');
    await store.tag('drop:1', dropped.manifest);
    await store.removeImage('drop:1');
    const loose = await store.writeBlob('loose blob');
    const held = await store.writeBlob('held by a caller');
    expect(await store.prune()).toEqual({ removed: [], bytes: 0 }); // everything is young

    for (const name of blobNames()) age(join(store.blobsDir, name));
    const dead = join(store.blobsDir, '.tmp-4194999-1-00ff');
    const deadIndex = join(store.dir, '.tmp-4194999-1-ff00');
    const live = join(store.blobsDir, `.tmp-${process.pid}-1-abcd`);
    for (const path of [dead, deadIndex, live]) {
      writeFileSync(path, 'partial');
      age(path);
    }
    const young = await store.writeBlob('written a moment ago');

    const gone = [dropped.manifest.digest, dropped.configDigest, dropped.layers[1] ?? '', loose.digest];
    const bytes = gone.reduce((total, digest) => total + statSync(store.blobPath(digest)).size, 0);
    const result = await store.prune({ keep: new Set([held.digest]) });
    expect(result.removed.sort()).toEqual(gone.sort());
    expect(result.bytes).toBe(bytes + 2 * 'partial'.length);
    for (const digest of gone) expect(store.hasBlob(digest)).toBe(false);
    for (const digest of [kept.manifest.digest, kept.configDigest, ...kept.layers, held.digest, young.digest]) {
      expect(store.hasBlob(digest)).toBe(true);
    }
    expect([existsSync(dead), existsSync(deadIndex), existsSync(live)]).toEqual([false, false, true]);
    rmSync(live);
    expect(await checkConsistent()).toEqual(['keep:1']);
    // A tag after a prune took the image's blobs is refused, not left pointing at nothing.
    await expect(store.tag('drop:1', dropped.manifest)).rejects.toMatchObject({ code: 'ENOBLOB' });

    expect((await store.prune({ graceMs: 0 })).removed.sort()).toEqual([held.digest, young.digest].sort());
    expect(await checkConsistent()).toEqual(['keep:1']);
  });

  it('refuses to prune when a tagged image cannot be read, rather than guess what it needs', async () => {
    const { manifest } = await makeImage('layer');
    await store.tag('broken:1', manifest);
    writeFileSync(store.blobPath(manifest.digest), '{}');
    await expect(store.prune()).rejects.toThrow(
      `cannot prune the image store: image broken:1 is unreadable (blob ${manifest.digest} does not match its digest`,
    );
  });
});

const dist = join(import.meta.dirname, '..', 'dist', 'image', 'index.js');

const writer = `
  import { ImageStore, MEDIA_TYPES } from ${JSON.stringify(dist)};
  const [dir, w] = process.argv.slice(1);
  const store = ImageStore.open(dir);
  let retries = 0;
  for (let n = 0; n < 20; n++) {
    for (let attempt = 1; ; attempt++) {
      try {
        const blobs = [await store.writeBlob('shared layer\\n'), await store.writeBlob('writer ' + w + ' image ' + n)];
        const layers = blobs.map((b) => ({ mediaType: MEDIA_TYPES.ociLayer, ...b }));
        const rootfs = { type: 'layers', diff_ids: layers.map((l) => l.digest) };
        const { manifest } = await store.writeImage({ config: { architecture: 'amd64', os: 'linux', config: {}, rootfs }, layers });
        await store.tag('w' + w + '/img:' + n, manifest);
        await store.tag('shared:latest', manifest);
        break;
      } catch (error) {
        // A prune removed a blob between its write and the tag: write the image again.
        if (error.code !== 'ENOBLOB' || attempt === 20) throw error;
        retries++;
      }
    }
    if (n % 5 === 4) await store.untag('w' + w + '/img:' + n);
  }
  console.log(JSON.stringify({ retries }));
`;

const pruner = `
  import { ImageStore } from ${JSON.stringify(dist)};
  const store = ImageStore.open(process.argv[1]);
  let done = false;
  process.stdin.on('end', () => { done = true; }).resume();
  const removed = [];
  let runs = 0;
  while (!done || runs === 0) {
    removed.push(...(await store.prune()).removed);
    runs++;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  console.log(JSON.stringify({ runs, removed }));
`;

function node(script: string, args: string[]) {
  return spawnCollect(process.execPath, ['--input-type=module', '-e', script, ...args]);
}

describe('ImageStore across processes', () => {
  it('keeps index.json and the blobs consistent while 4 processes write and tag and another prunes', async () => {
    expect(existsSync(dist), `${dist} is missing: build first (npx tsc -p .; npm test does)`).toBe(true);
    // Old content a prune should remove, old content it must keep, and an old unreferenced
    // copy of the layer every writer is about to write (a write refreshes it; a race refuses the tag).
    const garbage = [];
    for (let i = 0; i < 10; i++) garbage.push((await store.writeBlob(`garbage ${i}`)).digest);
    const old = await makeImage('old layer');
    await store.tag('old:1', old.manifest);
    const shared = await store.writeBlob('shared layer\n');
    for (const name of blobNames()) age(join(store.blobsDir, name));
    writeFileSync(join(store.blobsDir, '.tmp-4194999-1-00ff'), 'left by a dead import');
    age(join(store.blobsDir, '.tmp-4194999-1-00ff'));

    const prune = node(pruner, [store.dir]);
    const writers = [0, 1, 2, 3].map((w) => node(writer, [store.dir, String(w)]));
    const results = await Promise.all(writers.map((w) => w.exit));
    prune.child.stdin.end();
    const pruned = await prune.exit;
    for (const result of [...results, pruned]) expect(result.stderr, result.stderr).toBe('');
    for (const result of [...results, pruned]) expect(result.code).toBe(0);
    const { runs, removed } = JSON.parse(pruned.stdout) as { runs: number; removed: string[] };
    expect(runs).toBeGreaterThan(0);
    for (const digest of garbage) expect(removed).toContain(digest);
    expect(removed).not.toContain(old.manifest.digest);

    const expected = ['old:1', 'shared:latest'];
    for (let w = 0; w < 4; w++) for (let n = 0; n < 20; n++) if (n % 5 !== 4) expected.push(`w${w}/img:${n}`);
    expect((await checkConsistent()).sort()).toEqual(expected.sort());
    expect(store.hasBlob(shared.digest)).toBe(true);
    // 16 tagged images per writer and old:1; shared:latest adds one when it names an image whose own tag was removed.
    const onlyShared = (await store.resolve('shared:latest')).tags.length === 1 ? 1 : 0;
    expect((await store.list()).length).toBe(4 * 16 + 1 + onlyShared);
    const leftovers = [...readdirSync(store.dir), ...blobNames()].filter(
      (n) => n.startsWith('.tmp-') || n.endsWith('.lock'),
    );
    expect(leftovers).toEqual([]);
  }, 60_000);
});
