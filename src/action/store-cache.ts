import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { IgnoreMatcher, readDockerignore } from '../dockerfile/dockerignore.js';
import { errorLine } from '../errors.js';
import type { TestConfig } from '../test-runner/config-validate.js';
import { existsAsRoot, giveBack, type RootAccess, runAsRoot } from './root.js';

/** The parts of petri's store worth carrying between workflow runs: the images and the build cache's records. */
const STORE_PARTS = ['images', 'build-cache/steps', 'build-cache/selections'];
/** A context bigger than this is hashed by its first files only (the key is a best effort: the build cache decides). */
const MAX_FILES = 20_000;
const KEY_PREFIX = `petri-store-v1-${process.platform}-${process.arch}-`;

/**
 * The cache key of a config's images: a hash of the config file and, for each
 * image built from a Dockerfile, its Dockerfile, build args, target and the
 * content of its context (what .dockerignore leaves). Images taken from the
 * store count by name.
 */
export function storeCacheKey(config: TestConfig): string {
  const hash = createHash('sha256');
  hash.update(readFileSync(config.file)).update('\0');
  for (const image of [...config.images.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (image.kind === 'store') {
      hash.update(`store ${image.name} ${image.ref}\0`);
      continue;
    }
    const dockerfile = image.dockerfile ?? join(image.context, 'Dockerfile');
    hash.update(`build ${image.name} ${JSON.stringify([image.buildArgs, image.target ?? null])}\0`);
    hash.update(existsSync(dockerfile) ? readFileSync(dockerfile) : 'no dockerfile').update('\0');
    let ignore: IgnoreMatcher;
    try {
      ignore = new IgnoreMatcher(readDockerignore(image.context, dockerfile));
    } catch {
      ignore = new IgnoreMatcher([]);
    }
    let files = 0;
    const walk = (dir: string) => {
      let entries: import('node:fs').Dirent[];
      try {
        entries = readdirSync(dir, { withFileTypes: true });
      } catch {
        return;
      }
      for (const entry of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
        if (files >= MAX_FILES) return;
        const path = join(dir, entry.name);
        const rel = relative(image.context, path);
        if (entry.name === '.git' || ignore.matches(rel)) continue;
        if (entry.isDirectory()) walk(path);
        else if (entry.isFile()) {
          files++;
          hash.update(`${rel}\0`);
          try {
            hash.update(readFileSync(path));
          } catch {
            hash.update('unreadable');
          }
          hash.update('\0');
        } else hash.update(`${rel} ${entry.isSymbolicLink() ? 'link' : 'other'}\0`);
      }
    };
    walk(image.context);
  }
  return `${KEY_PREFIX}${hash.digest('hex').slice(0, 40)}`;
}

export interface StoreCacheOptions {
  access: RootAccess;
  /** `$PETRI_ROOT`. */
  root: string;
  /** A directory the action's user owns, the same in every run (it is part of the cache's version). */
  staging: string;
  log: (line: string) => void;
}

/**
 * Restores the store from the Actions cache: the exact key, else the newest
 * entry of an earlier key (the build cache reuses what still fits). Only into
 * a store without images (a fresh runner): an existing store is never
 * overwritten, and then the cache is only asked whether it has the key.
 * Returns the key restored, if any, and whether the cache has this key (then
 * there is nothing to save: an entry is written once).
 */
export async function restoreStore(
  key: string,
  options: StoreCacheOptions,
): Promise<{ restored?: string; cached: boolean }> {
  const cache = await import('@actions/cache');
  mkdirSync(options.staging, { recursive: true });
  if (existsAsRoot(options.access, join(options.root, 'images', 'index.json'))) {
    options.log(`cache: ${options.root} already has images: not restoring over them`);
    const found = await cache.restoreCache([options.staging], key, [], { lookupOnly: true });
    return { cached: found === key };
  }
  const hit = await cache.restoreCache([options.staging], key, [KEY_PREFIX]);
  const archive = join(options.staging, 'store.tar');
  if (!hit || !existsSync(archive)) {
    options.log(`cache: no entry for ${key}`);
    return { cached: false };
  }
  try {
    runAsRoot(options.access, ['mkdir', '-p', options.root]);
    runAsRoot(options.access, ['tar', '-x', '-f', archive, '-C', options.root]);
  } finally {
    rmSync(archive, { force: true });
  }
  options.log(`cache: restored petri's store from ${hit}${hit === key ? '' : ` (for ${key})`}`);
  return { restored: hit, cached: hit === key };
}

/** Saves the store's images and build cache under `key`, unless the cache has that key already. */
export async function saveStore(key: string, cached: boolean, options: StoreCacheOptions): Promise<void> {
  if (cached) {
    options.log(`cache: the cache has ${key} already: nothing to save`);
    return;
  }
  const parts = STORE_PARTS.filter((part) => existsAsRoot(options.access, join(options.root, part)));
  if (parts.length === 0) {
    options.log(`cache: ${options.root} has no images or build cache: nothing to save`);
    return;
  }
  const cache = await import('@actions/cache');
  mkdirSync(options.staging, { recursive: true });
  const archive = join(options.staging, 'store.tar');
  try {
    runAsRoot(options.access, ['tar', '-c', '-f', archive, '-C', options.root, ...parts]);
    giveBack(options.access, [archive]);
    // -1: not saved, and @actions/cache said why (another job saves the same key, the cache is read-only…).
    const id = await cache.saveCache([options.staging], key);
    options.log(id === -1 ? `cache: not saved as ${key}` : `cache: saved petri's store as ${key}`);
  } catch (error) {
    options.log(`cache: not saved: ${errorLine(error)}`);
  } finally {
    rmSync(archive, { force: true });
  }
}
