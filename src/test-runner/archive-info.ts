import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { errorLine, PetriError } from '../errors.js';
import type { ImageConfig } from '../image/types.js';
import { tarStream } from '../snapshot/tar-pax.js';
import { isGzipFile } from '../util/fs.js';

/** Files larger than this are layers, never the manifest or a config. */
const SMALL = 1024 * 1024;

export interface ArchiveImage {
  tags: string[];
  config: ImageConfig;
}

/**
 * The first image of a Docker archive (`manifest.json`, as `petri save` writes
 * it), read without loading it anywhere: its names and config (labels). For
 * `petri repro --docker`, which needs neither root nor a petri store.
 */
export async function readArchiveImage(file: string): Promise<ArchiveImage> {
  const small = new Map<string, Buffer>();
  const extract = tarStream().extract();
  extract.on('entry', (header, stream, next) => {
    const chunks: Buffer[] = [];
    const keep = header.type === 'file' && (header.size ?? 0) <= SMALL;
    stream.on('data', (chunk: unknown) => {
      if (keep) chunks.push(chunk as Buffer);
    });
    stream.on('end', () => {
      if (keep) small.set(header.name.replace(/^\.\//, ''), Buffer.concat(chunks));
      next();
    });
    stream.resume();
  });
  try {
    const input: Readable = createReadStream(file);
    await pipeline(isGzipFile(file) ? input.pipe(createGunzip()) : input, extract);
    const manifest = JSON.parse(String(small.get('manifest.json') ?? 'null')) as
      | { Config: string; RepoTags?: string[] | null }[]
      | null;
    const first = manifest?.[0];
    const config = first ? small.get(first.Config.replace(/^\.\//, '')) : undefined;
    if (!first || !config) throw new Error('it has no manifest.json naming an image config');
    return { tags: first.RepoTags ?? [], config: JSON.parse(String(config)) as ImageConfig };
  } catch (error) {
    throw new PetriError(`cannot read ${file}: ${errorLine(error)} (is it an archive petri test saved?)`, {
      cause: error,
    });
  }
}
