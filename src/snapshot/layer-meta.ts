import { readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** What the layer cache records of an unpacked layer: `<chain ID hex>/meta.json`, beside its tree `fs`. */
export interface LayerMeta {
  chainId: string;
  diffId: string;
  /** Chain ID of the layer below, null for a base layer. */
  parent: string | null;
  /** Size of the uncompressed archive in bytes. */
  size: number;
  /**
   * The tree's opaque directories (overlayfs' `trusted.overlay.opaque`, the
   * root left out), relative paths, as the layer was written or unpacked:
   * Node cannot read xattrs, so readers take them from here. Missing in layers
   * an older petri unpacked.
   */
  opaque?: string[];
}

export function writeLayerMeta(top: string, meta: LayerMeta): void {
  writeFileSync(join(top, 'meta.json'), `${JSON.stringify(meta)}\n`);
}

/**
 * The opaque directories recorded for `tree` when it is an unpacked layer's
 * tree (`<top>/fs` with `<top>/meta.json`) whose record lists them; else
 * undefined (the caller reads the xattrs).
 */
export function recordedOpaqueDirs(tree: string): string[] | undefined {
  if (basename(tree) !== 'fs') return undefined;
  let meta: LayerMeta;
  try {
    meta = JSON.parse(readFileSync(join(dirname(tree), 'meta.json'), 'utf8')) as LayerMeta;
  } catch {
    return undefined;
  }
  const opaque = meta?.opaque;
  return Array.isArray(opaque) && opaque.every((dir) => typeof dir === 'string') ? opaque : undefined;
}
