import { errorLine, PetriError } from '../errors.js';
import { sha256Digest } from '../image/digest.js';
import type { ImageStore } from '../image/store.js';
import { type Descriptor, type ImageManifest, MEDIA_TYPES } from '../image/types.js';
import type { CacheRecord, LayerRef } from './cache.js';
import { stableJson } from './cache.js';

/** The media type of the cache index (the config blob of a cache manifest). */
export const CACHE_INDEX_MEDIA_TYPE = 'application/vnd.petri.build-cache.index.v1+json';

/** `--cache-from type=registry,ref=R` */
export interface CacheImport {
  type: 'registry';
  ref: string;
}

/** `--cache-to type=registry,ref=R[,mode=min|max][,ignore-error=true]` */
export interface CacheExport {
  type: 'registry';
  ref: string;
  /** min (default, as in BuildKit): the steps of the image built; max: every step of every stage built. */
  mode: 'min' | 'max';
  /** A failed export is a warning instead of a failed build. */
  ignoreError: boolean;
}

/** The cache index: step key → record (its layer is one of the manifest's layers), selection key → content hash. */
export interface CacheIndex {
  schemaVersion: 1;
  steps: Record<string, CacheRecord>;
  selections: Record<string, string>;
}

/**
 * Parses a `--cache-from`/`--cache-to` value as BuildKit writes it
 * (`type=registry,ref=R,…`; a bare `R` is `type=registry,ref=R`).
 */
export function parseCacheSpec(flag: '--cache-from', text: string): CacheImport;
export function parseCacheSpec(flag: '--cache-to', text: string): CacheExport;
export function parseCacheSpec(flag: '--cache-from' | '--cache-to', text: string): CacheImport | CacheExport {
  const fields = new Map<string, string>();
  if (!text.includes('=')) fields.set('type', 'registry').set('ref', text);
  else {
    for (const part of text.split(',')) {
      const eq = part.indexOf('=');
      if (eq <= 0)
        throw new PetriError(
          `petri build: invalid ${flag} ${text}: expected KEY=VALUE fields, such as type=registry,ref=NAME`,
        );
      fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
    }
  }
  const type = fields.get('type') ?? 'registry';
  if (type !== 'registry') {
    throw new PetriError(
      `petri build: ${flag} type=${type} is not supported: petri shares its build cache through a registry only (type=registry,ref=NAME)`,
    );
  }
  const allowed = flag === '--cache-to' ? ['type', 'ref', 'mode', 'ignore-error'] : ['type', 'ref'];
  for (const key of fields.keys()) {
    if (!allowed.includes(key)) {
      throw new PetriError(`petri build: ${flag}: unknown key ${key} (petri knows ${allowed.join(', ')})`);
    }
  }
  const ref = fields.get('ref');
  if (!ref) throw new PetriError(`petri build: ${flag} ${text}: ref=NAME is missing`);
  if (flag === '--cache-from') return { type: 'registry', ref };
  const mode = fields.get('mode') ?? 'min';
  if (mode !== 'min' && mode !== 'max') {
    throw new PetriError(`petri build: --cache-to mode=${mode}: expected min or max`);
  }
  const ignore = fields.get('ignore-error') ?? 'false';
  if (ignore !== 'true' && ignore !== 'false') {
    throw new PetriError(`petri build: --cache-to ignore-error=${ignore}: expected true or false`);
  }
  return { type: 'registry', ref, mode, ignoreError: ignore === 'true' };
}

interface Source {
  client: import('../image/registry/client.js').RegistryClient;
  repository: string;
  layer: Descriptor;
}

/**
 * The caches named by `--cache-from`, once their indexes are read: a key
 * found there is a hit whose layer is downloaded only when something needs
 * it (a step that runs on top of it, the image written, a cache export).
 */
export class RemoteCache {
  readonly #store: ImageStore;
  readonly #steps = new Map<string, CacheRecord>();
  readonly #selections = new Map<string, string>();
  readonly #layers = new Map<string, Source>();
  readonly #downloads = new Map<string, Promise<void>>();
  /** Layers downloaded so far. */
  downloaded = 0;

  private constructor(store: ImageStore) {
    this.#store = store;
  }

  /** Reads the index of each source; one that cannot be read is a warning (as in BuildKit), not an error. */
  static async load(
    sources: CacheImport[],
    options: { store: ImageStore; insecureRegistries?: string[]; warn: (message: string) => void },
  ): Promise<RemoteCache> {
    const cache = new RemoteCache(options.store);
    const { RegistryClient } = await import('../image/registry/client.js');
    const { normalizeReference } = await import('../image/registry/name.js');
    const loaded = await Promise.allSettled(
      sources.map(async (source) => {
        const ref = normalizeReference(source.ref);
        const client = new RegistryClient(ref.registry, { insecureRegistries: options.insecureRegistries ?? [] });
        return {
          ref,
          client,
          index: await readIndex(client, options.store, ref.repository, ref.digest ?? (ref.tag as string)),
        };
      }),
    );
    for (const [i, result] of loaded.entries()) {
      const name = (sources[i] as CacheImport).ref;
      if (result.status === 'rejected') {
        options.warn(`cannot import the build cache ${name}: ${errorLine(result.reason)}`);
        continue;
      }
      const { client, ref, index } = result.value;
      for (const layer of index.layers) {
        if (!cache.#layers.has(layer.digest))
          cache.#layers.set(layer.digest, { client, repository: ref.repository, layer });
      }
      for (const [key, record] of Object.entries(index.index.steps)) {
        if (cache.#steps.has(key)) continue;
        if (record.layer && !cache.#layers.has(record.layer.digest)) continue;
        cache.#steps.set(key, record);
      }
      for (const [key, hash] of Object.entries(index.index.selections)) {
        if (!cache.#selections.has(key)) cache.#selections.set(key, hash);
      }
    }
    return cache;
  }

  get size(): number {
    return this.#steps.size;
  }

  get(key: string): CacheRecord | undefined {
    return this.#steps.get(key);
  }

  getSelection(key: string): string | undefined {
    return this.#selections.get(key);
  }

  /** Adds a layer this cache may fetch from a registry (a base image's, pulled without its layers). */
  addLayerSource(layer: Descriptor, client: Source['client'], repository: string): void {
    if (!this.#layers.has(layer.digest)) this.#layers.set(layer.digest, { client, repository, layer });
  }

  /** Whether the cache can fetch this layer. */
  has(digest: string): boolean {
    return this.#layers.has(digest);
  }

  /** Downloads the layers the store lacks (each once, however many ask); a layer it does not know is left alone. */
  async ensure(layers: readonly { digest: string }[]): Promise<void> {
    await Promise.all(
      layers.map((layer) => {
        if (this.#store.hasBlob(layer.digest)) return undefined;
        const source = this.#layers.get(layer.digest);
        if (!source) return undefined;
        let download = this.#downloads.get(layer.digest);
        if (!download) {
          download = (async () => {
            const { downloadBlob } = await import('../image/registry/blob-download.js');
            try {
              await downloadBlob(source.client, this.#store, source.repository, source.layer);
            } catch (error) {
              throw new PetriError(
                `cannot download layer ${layer.digest} from the build cache ${source.client.registry}/${source.repository}: ${errorLine(error)}`,
                { cause: error },
              );
            }
            this.downloaded++;
          })();
          this.#downloads.set(layer.digest, download);
          download.catch(() => this.#downloads.delete(layer.digest));
        }
        return download;
      }),
    );
  }
}

/** The cache manifest at `reference` and its index (the config blob, read into memory and checked against its digest). */
async function readIndex(
  client: import('../image/registry/client.js').RegistryClient,
  store: ImageStore,
  repository: string,
  reference: string,
): Promise<{ layers: Descriptor[]; index: CacheIndex }> {
  const { fetchManifest, pullScope } = await import('../image/registry/manifest.js');
  const { readBytes } = await import('../image/registry/http.js');
  const raw = await fetchManifest(client, store, repository, reference);
  const manifest = JSON.parse(raw.raw.toString('utf8')) as ImageManifest;
  if (raw.kind !== 'manifest' || manifest.config?.mediaType !== CACHE_INDEX_MEDIA_TYPE) {
    throw new PetriError(
      `it is not a petri build cache (its config is ${manifest.config?.mediaType ?? 'missing'}, not ${CACHE_INDEX_MEDIA_TYPE})`,
    );
  }
  const response = await client.request({
    method: 'GET',
    path: `/v2/${repository}/blobs/${manifest.config.digest}`,
    scopes: [pullScope(repository)],
  });
  if (response.status !== 200) throw await client.unexpected(response, `GET the cache index ${manifest.config.digest}`);
  const body = await readBytes(response, 256 << 20);
  if (sha256Digest(body) !== manifest.config.digest) {
    throw new PetriError(`the cache index does not match its digest ${manifest.config.digest}`, { code: 'EDIGEST' });
  }
  const index = JSON.parse(body.toString('utf8')) as CacheIndex;
  if (index.schemaVersion !== 1 || typeof index.steps !== 'object' || typeof index.selections !== 'object') {
    throw new PetriError('its cache index is of a version this petri does not read');
  }
  return { layers: manifest.layers, index };
}

/**
 * Pushes a build cache to `target.ref`: the layers of the records (those the
 * registry lacks; `ensure` fetches one the store lacks first) and a manifest
 * whose config is the index. Returns the manifest's digest.
 */
export async function exportCache(
  target: CacheExport,
  content: { steps: Map<string, CacheRecord>; selections: Map<string, string> },
  options: {
    store: ImageStore;
    insecureRegistries?: string[];
    ensure: (layers: LayerRef[]) => Promise<void>;
  },
): Promise<{ digest: string; layers: number }> {
  const { RegistryClient } = await import('../image/registry/client.js');
  const { normalizeReference } = await import('../image/registry/name.js');
  const { pushBlobs, putManifest } = await import('../image/registry/push.js');
  const ref = normalizeReference(target.ref);
  const client = new RegistryClient(ref.registry, { insecureRegistries: options.insecureRegistries ?? [] });
  const steps = [...content.steps].sort(([a], [b]) => (a < b ? -1 : 1));
  const index: CacheIndex = {
    schemaVersion: 1,
    steps: Object.fromEntries(steps),
    selections: Object.fromEntries([...content.selections].sort(([a], [b]) => (a < b ? -1 : 1))),
  };
  const layers = new Map<string, LayerRef>();
  for (const [, record] of steps) if (record.layer) layers.set(record.layer.digest, record.layer);
  const config = await options.store.writeBlob(stableJson(index));
  const descriptors: Descriptor[] = [...layers.values()].map((l) => ({
    mediaType: l.mediaType,
    digest: l.digest,
    size: l.size,
  }));
  const configDescriptor: Descriptor = { mediaType: CACHE_INDEX_MEDIA_TYPE, digest: config.digest, size: config.size };
  await pushBlobs(options.store, client, ref, [...descriptors, configDescriptor], {
    ensure: async (blob) => {
      const layer = layers.get(blob.digest);
      if (layer) await options.ensure([layer]);
    },
  });
  const manifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociManifest,
    config: configDescriptor,
    layers: descriptors,
    annotations: { 'org.opencontainers.image.created': new Date().toISOString() },
  };
  const raw = Buffer.from(JSON.stringify(manifest));
  const digest = sha256Digest(raw);
  await putManifest(client, ref, raw, MEDIA_TYPES.ociManifest, digest);
  return { digest, layers: descriptors.length };
}
