import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type Descriptor,
  HashingStream,
  type ImageConfig,
  ImageStore,
  MEDIA_TYPES,
  sha256Digest,
  validateDigest,
} from '../src/image/index.js';

let dir: string;
let store: ImageStore;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'petri-image-store-'));
  store = ImageStore.open(join(dir, 'images'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const EMPTY = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

function config(diffIds: string[], label = 'x'): ImageConfig {
  return {
    architecture: 'amd64',
    os: 'linux',
    config: { Labels: { label } },
    rootfs: { type: 'layers', diff_ids: diffIds },
  };
}

/** An image with one layer of `content` (and its own config label); its manifest descriptor and ids. */
async function makeImage(content: string, label = content) {
  const layer = await store.writeBlob(content);
  const layers: Descriptor[] = [{ mediaType: MEDIA_TYPES.ociLayer, ...layer }];
  const written = await store.writeImage({ config: config([layer.digest], label), layers });
  return { ...written, layer: layer.digest };
}

function leftovers(): string[] {
  const images = join(dir, 'images');
  return [...readdirSync(images), ...readdirSync(join(images, 'blobs', 'sha256'))].filter(
    (name) => name.startsWith('.tmp-') || name.endsWith('.lock'),
  );
}

describe('digests', () => {
  it('computes, validates and streams sha256 digests', async () => {
    expect(sha256Digest('')).toBe(EMPTY);
    expect(validateDigest(EMPTY)).toBe(EMPTY);
    for (const bad of ['sha256:abc', `sha512:${'a'.repeat(64)}`, `sha256:${'A'.repeat(64)}`, EMPTY.slice(7)]) {
      expect(() => validateDigest(bad)).toThrow(`invalid digest "${bad}": expected "sha256:" and 64 lowercase hex`);
    }
    const hashing = new HashingStream();
    const chunks: Buffer[] = [];
    hashing.on('data', (chunk: Buffer) => chunks.push(chunk));
    await new Promise((resolve) => hashing.on('end', resolve).end('hello'));
    expect(hashing.digest).toBe(sha256Digest('hello'));
    expect(hashing.size).toBe(5);
    expect(Buffer.concat(chunks).toString()).toBe('hello');
  });
});

describe('ImageStore blobs', () => {
  it('creates an OCI layout and keeps it when opened again', async () => {
    const images = join(dir, 'images');
    expect(JSON.parse(readFileSync(join(images, 'oci-layout'), 'utf8'))).toEqual({ imageLayoutVersion: '1.0.0' });
    expect(JSON.parse(readFileSync(join(images, 'index.json'), 'utf8'))).toEqual({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [],
    });
    const { manifest } = await makeImage('layer');
    await store.tag('demo:1', manifest);
    const again = ImageStore.open(images);
    expect((await again.resolve('demo:1')).manifestDigest).toBe(manifest.digest);
  });

  it('round-trips blobs from buffers, strings, streams and files', async () => {
    const data = Buffer.from('some layer bytes\n');
    const written = await store.writeBlob(data);
    expect(written).toEqual({ digest: sha256Digest(data), size: data.length });
    expect(store.blobPath(written.digest)).toBe(join(dir, 'images/blobs/sha256', written.digest.slice(7)));
    expect(store.hasBlob(written.digest)).toBe(true);
    expect(await store.readBlob(written.digest)).toEqual(data);
    expect(await store.writeBlob('some layer bytes\n', written.digest)).toEqual(written); // again: kept

    const big = Buffer.alloc(3 * 1024 * 1024 + 7, 'x');
    const streamed = await store.writeBlobStream(Readable.from([big.subarray(0, 1000), big.subarray(1000)]), {
      digest: sha256Digest(big),
      size: big.length,
    });
    expect(streamed.digest).toBe(sha256Digest(big));
    const chunks: Buffer[] = [];
    for await (const chunk of store.openBlob(streamed.digest)) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).equals(big)).toBe(true);

    writeFileSync(join(dir, 'file'), '{"a":1}');
    const copied = await store.ingestFile(join(dir, 'file'), sha256Digest('{"a":1}'));
    expect(await store.readJson(copied.digest)).toEqual({ a: 1 });
    writeFileSync(join(dir, 'linked'), 'linked content');
    const linked = await store.ingestFile(join(dir, 'linked'), {}, { link: true });
    expect((await store.readBlob(linked.digest)).toString()).toBe('linked content');
    await expect(store.ingestFile(join(dir, 'missing'))).rejects.toThrow(/cannot bring .*missing into the image store/);
    expect(store.hasBlob(EMPTY)).toBe(false);
    await expect(store.readBlob(EMPTY)).rejects.toThrow(`blob ${EMPTY} is not in the image store`);
    expect(leftovers()).toEqual([]);
  });

  it('refuses content that does not match the expected digest or size, and leaves no temp file', async () => {
    const claimed = sha256Digest('what was promised');
    const actual = sha256Digest('what came');
    const message = `blob ${claimed} does not match its digest: the content hashes to ${actual}; the source is corrupt or was tampered with`;
    await expect(store.writeBlob('what came', claimed)).rejects.toThrow(message);
    await expect(store.writeBlobStream(Readable.from([Buffer.from('what came')]), { digest: claimed })).rejects.toThrow(
      message,
    );
    writeFileSync(join(dir, 'file'), 'what came');
    await expect(store.ingestFile(join(dir, 'file'), claimed)).rejects.toThrow(message);
    await expect(store.writeBlobStream(Readable.from([Buffer.from('what came')]), { size: 3 })).rejects.toThrow(
      `blob ${actual} should be 3 bytes but is 9`,
    );
    await expect(store.writeBlob('x', 'sha256:nothex')).rejects.toThrow('invalid digest "sha256:nothex"');
    expect(store.hasBlob(claimed) || store.hasBlob(actual)).toBe(false);
    expect(leftovers()).toEqual([]);
  });

  it('refuses a blob corrupted on disk on every kind of read, naming it', async () => {
    const { manifest, configDigest } = await makeImage('layer');
    await store.tag('demo:1', manifest);
    const layer = await store.writeBlob('precious layer');
    writeFileSync(store.blobPath(layer.digest), 'tampered layer');
    writeFileSync(store.blobPath(configDigest), '{"architecture":"evil"}');
    const corrupt = new RegExp(
      `blob ${layer.digest} does not match its digest: the content hashes to sha256:[a-f0-9]{64}; the store's copy .* is corrupt`,
    );
    await expect(store.readBlob(layer.digest)).rejects.toThrow(corrupt);
    await expect(store.readJson(configDigest)).rejects.toThrow(`blob ${configDigest} does not match its digest`);
    await expect(store.resolve('demo:1')).rejects.toThrow(`blob ${configDigest} does not match its digest`);
    const chunks: Buffer[] = [];
    const read = (async () => {
      for await (const chunk of store.openBlob(layer.digest)) chunks.push(chunk as Buffer);
    })();
    await expect(read).rejects.toThrow(corrupt);
  });
});

describe('ImageStore tags and lookups', () => {
  it('tags, resolves by tag, digest, id and id prefix, lists, moves and removes tags', async () => {
    const a = await makeImage('layer a');
    const b = await makeImage('layer b');
    await store.tag('demo:1', a.manifest);
    await store.tag('registry.local:5000/team/demo', a.manifest);
    await store.tag('other:2', b.manifest);

    const image = await store.resolve('demo:1');
    expect(image.id).toBe(a.configDigest);
    expect(image.manifestDigest).toBe(a.manifest.digest);
    expect(image.tags).toEqual(['demo:1', 'registry.local:5000/team/demo:latest']);
    expect(image.manifest.layers.map((l) => l.digest)).toEqual([a.layer]);
    expect(image.config.rootfs.diff_ids).toEqual([a.layer]);
    expect(image.size).toBe(image.manifest.config.size + 'layer a'.length);
    const hex = a.configDigest.slice(7);
    for (const key of [
      'registry.local:5000/team/demo:latest',
      'registry.local:5000/team/demo',
      a.manifest.digest,
      `demo@${a.manifest.digest}`,
      a.configDigest,
      hex,
      hex.slice(0, 12),
      `sha256:${hex.slice(0, 8)}`,
    ]) {
      expect((await store.resolve(key)).id, key).toBe(a.configDigest);
    }
    // The index holds one entry per tag, each naming it in the annotation skopeo and umoci read.
    const index = JSON.parse(readFileSync(join(dir, 'images/index.json'), 'utf8'));
    expect(index.manifests.map((m: Descriptor) => m.annotations?.['org.opencontainers.image.ref.name'])).toEqual([
      'demo:1',
      'registry.local:5000/team/demo:latest',
      'other:2',
    ]);
    expect(index.manifests[0]).toMatchObject({ mediaType: MEDIA_TYPES.ociManifest, digest: a.manifest.digest });

    for (const missing of ['demo', 'demo:2', 'nothing', `sha256:${'0'.repeat(64)}`, 'ffff0000']) {
      await expect(store.resolve(missing)).rejects.toMatchObject({
        message: `no such image: ${missing}`,
        code: 'ENOIMAGE',
      });
    }
    expect((await store.list()).map((i) => [i.id, i.tags])).toEqual([
      [a.configDigest, ['demo:1', 'registry.local:5000/team/demo:latest']],
      [b.configDigest, ['other:2']],
    ]);

    await store.tag('demo:1', b.manifest); // the tag moves
    expect((await store.resolve('demo:1')).id).toBe(b.configDigest);
    await store.tag('copy:1', 'other:2'); // tag an image already in the store
    expect((await store.resolve('copy:1')).tags).toEqual(['other:2', 'demo:1', 'copy:1']);
    expect(await store.untag('copy:1')).toBe(true);
    expect(await store.untag('copy:1')).toBe(false);
    await expect(store.removeImage(b.configDigest)).rejects.toThrow(
      `image ${b.configDigest} has several tags (other:2, demo:1): remove them one by one, or force the removal`,
    );
    expect(await store.removeImage('other:2')).toEqual(['other:2']);
    expect(await store.removeImage(b.configDigest.slice(7, 19))).toEqual(['demo:1']);
    expect(await store.removeImage('registry.local:5000/team/demo')).toEqual(['registry.local:5000/team/demo:latest']);
    expect(await store.list()).toEqual([]);
    expect(store.hasBlob(a.manifest.digest)).toBe(true); // blobs stay until a prune
  });

  it('refuses an ambiguous id prefix', async () => {
    // Two configs whose ids share their first 4 hex digits (found by hashing, then written).
    const seen = new Map<string, number>();
    let pair: [number, number] | undefined;
    for (let i = 0; !pair; i++) {
      const prefix = createHash('sha256')
        .update(JSON.stringify(config([EMPTY], String(i))))
        .digest('hex')
        .slice(0, 4);
      const other = seen.get(prefix);
      if (other !== undefined) pair = [other, i];
      seen.set(prefix, i);
    }
    const empty = await store.writeBlob('');
    const layers = [{ mediaType: MEDIA_TYPES.ociLayer, ...empty }];
    const first = await store.writeImage({ config: config([EMPTY], String(pair[0])), layers });
    const second = await store.writeImage({ config: config([EMPTY], String(pair[1])), layers });
    await store.tag('one', first.manifest);
    await store.tag('two', second.manifest);
    const prefix = first.configDigest.slice(7, 11);
    await expect(store.resolve(prefix)).rejects.toThrow(`image id prefix ${prefix} is ambiguous: it matches`);
    expect((await store.resolve(first.configDigest.slice(7, 30))).tags).toEqual(['one:latest']);
  });

  it('refuses to tag an image whose blobs are missing, and to write one whose layers are', async () => {
    const { manifest, layer } = await makeImage('layer');
    rmSync(store.blobPath(layer));
    await expect(store.tag('demo:1', manifest)).rejects.toMatchObject({
      code: 'ENOBLOB',
      message: `cannot tag demo:1: its layer ${layer} is not in the image store (pruned, or never written); write the image again and tag it`,
    });
    await expect(
      store.writeImage({
        config: config([layer]),
        layers: [{ mediaType: MEDIA_TYPES.ociLayer, digest: layer, size: 5 }],
      }),
    ).rejects.toThrow(`layer ${layer} is not in the image store: write its blob before the image`);
    await expect(store.tag('Bad:1', manifest)).rejects.toThrow('invalid image reference "Bad:1"');
    await expect(store.tag(`demo@${EMPTY}`, manifest)).rejects.toThrow(`invalid tag "demo@${EMPTY}"`);
    expect(await store.list()).toEqual([]);
  });
});
