import { constants, lchownSync, linkSync, lstatSync, lutimesSync, mkdirSync, symlinkSync, unlinkSync } from 'node:fs';
import { chmod, open } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { PetriError } from '../errors.js';
import { removeTree } from '../util/fs.js';
import { FsOps } from './fsops.js';
import { cleanEntryPath, resolveInRoot } from './safe-path.js';
import { type TarHeader, XATTR_PAX_PREFIX } from './tar-pax.js';
import { OPAQUE_WHITEOUT, OVERLAY_XATTR_PREFIX, WHITEOUT_META_PREFIX, WHITEOUT_PREFIX } from './whiteouts.js';

/** Errors with which a filesystem refuses an xattr: skipped, like Docker does. */
const XATTR_REFUSED = new Set(['EOPNOTSUPP', 'ENOTSUP', 'EPERM', 'EACCES']);
const DEVICE_TYPES = { 'character-device': 'c', 'block-device': 'b', fifo: 'p' } as const;

/**
 * Writes the entries of one layer archive into `root`, one at a time, never
 * outside it (see safe-path.ts). OCI whiteouts become overlayfs ones, so `root`
 * can be an overlay lowerdir as it is. Device nodes, fifos, whiteouts and xattrs
 * go through one `petri-runner fsops` process, started when first needed.
 * Call `finish()` after the last entry (directory times) and `close()` always.
 */
export class EntryWriter {
  readonly #root: string;
  readonly #fsops = new FsOps();
  /** Directory mtimes, set at the end: writing into a directory changes its mtime. */
  readonly #dirTimes = new Map<string, Date>();
  /** Host paths of the directories made opaque (below the root) and still there. */
  readonly #opaque = new Set<string>();

  constructor(root: string) {
    this.#root = resolve(root);
    mkdirSync(this.#root, { recursive: true, mode: 0o755 });
  }

  /** Writes one entry; `body` is its content (consumed here whatever the type). */
  async write(header: TarHeader, body: Readable): Promise<void> {
    try {
      await this.#write(header, body);
    } catch (error) {
      if (error instanceof PetriError && error.message.includes(`"${header.name}"`)) throw error;
      throw new PetriError(`layer entry "${header.name}": ${(error as Error).message}`, {
        cause: error,
        code: (error as PetriError).code,
      });
    } finally {
      body.resume();
    }
  }

  async #write(header: TarHeader, body: Readable): Promise<void> {
    const rel = cleanEntryPath(header.name);
    const base = basename(rel);
    if (base.startsWith(WHITEOUT_PREFIX)) return this.#whiteout(rel, base);
    const type = header.type;
    if (rel === '' && type !== 'directory') throw new PetriError('the layer root can only be a directory');
    switch (type) {
      case 'directory':
        return this.#directory(rel, header);
      case 'file':
      case 'contiguous-file':
        return this.#file(rel, header, body);
      case 'symlink':
        return this.#symlink(rel, header);
      case 'link':
        return this.#hardlink(rel, header);
      case 'character-device':
      case 'block-device':
      case 'fifo': {
        const path = this.#place(rel, false);
        await this.#fsops.mknod(path, DEVICE_TYPES[type], header.devmajor ?? 0, header.devminor ?? 0, 0o600);
        return this.#attributes(path, header);
      }
      default:
        return; // GNU sparse/volume headers and the like: not in OCI layers
    }
  }

  /** Sets the directory times (deepest first does not matter: utimes leaves the parent alone). */
  finish(): void {
    for (const [path, mtime] of this.#dirTimes) {
      try {
        if (lstatSync(path).isDirectory()) lutimesSync(path, mtime, mtime);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
    }
  }

  /** The opaque directories written, relative to the root, sorted. */
  opaqueDirs(): string[] {
    return [...this.#opaque].map((path) => path.slice(this.#root.length + 1)).sort();
  }

  close(): Promise<void> {
    return this.#fsops.close();
  }

  /** Where to create entry `rel`: parents made, a conflicting entry removed (a directory is kept for a directory). */
  #place(rel: string, directory: boolean): string {
    const path = resolveInRoot(this.#root, rel);
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    let existing: import('node:fs').Stats | undefined;
    try {
      existing = lstatSync(path);
    } catch {
      return path;
    }
    if (directory && existing.isDirectory()) return path;
    if (existing.isDirectory()) {
      removeTree(path);
      for (const dir of this.#opaque) if (dir === path || dir.startsWith(`${path}/`)) this.#opaque.delete(dir);
    } else unlinkSync(path);
    return path;
  }

  async #whiteout(rel: string, base: string): Promise<void> {
    const parent = dirname(rel) === '.' ? '' : dirname(rel);
    if (base === OPAQUE_WHITEOUT) {
      const dir = parent === '' ? this.#root : this.#place(parent, true);
      mkdirSync(dir, { recursive: true, mode: 0o755 });
      await this.#fsops.opaque(dir);
      if (dir !== this.#root) this.#opaque.add(dir);
      return;
    }
    if (base.startsWith(WHITEOUT_META_PREFIX)) return;
    const name = base.slice(WHITEOUT_PREFIX.length);
    if (name === '' || name === '.' || name === '..') throw new PetriError('a whiteout must name an entry');
    return this.#fsops.whiteout(this.#place(parent ? `${parent}/${name}` : name, false));
  }

  async #directory(rel: string, header: TarHeader): Promise<void> {
    const path = rel === '' ? this.#root : this.#place(rel, true);
    mkdirSync(path, { recursive: true, mode: 0o700 });
    await this.#attributes(path, header);
    this.#dirTimes.set(path, mtimeOf(header));
  }

  async #file(rel: string, header: TarHeader, body: Readable): Promise<void> {
    const path = this.#place(rel, false);
    const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
    const file = await open(path, flags, 0o600);
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        for (let offset = 0; offset < chunk.length; ) offset += (await file.write(chunk, offset)).bytesWritten;
      }
      await file.chown(...owner(header));
      await file.chmod((header.mode ?? 0o644) & 0o7777);
      await this.#xattrs(path, header);
      await file.utimes(mtimeOf(header), mtimeOf(header));
    } finally {
      await file.close();
    }
  }

  async #symlink(rel: string, header: TarHeader): Promise<void> {
    if (!header.linkname) throw new PetriError('a symlink needs a target');
    const path = this.#place(rel, false);
    symlinkSync(header.linkname, path);
    lchownSync(path, ...owner(header));
    await this.#xattrs(path, header);
    lutimesSync(path, mtimeOf(header), mtimeOf(header));
  }

  async #hardlink(rel: string, header: TarHeader): Promise<void> {
    const targetRel = cleanEntryPath(header.linkname ?? '');
    const target = resolveInRoot(this.#root, targetRel);
    let stat: import('node:fs').Stats;
    try {
      stat = lstatSync(target);
    } catch {
      throw new PetriError(`its hard link target "${header.linkname}" is not in the layer (an earlier entry)`);
    }
    if (stat.isDirectory()) throw new PetriError(`its hard link target "${header.linkname}" is a directory`);
    const path = resolveInRoot(this.#root, rel);
    if (path === target) return;
    linkSync(target, this.#place(rel, false));
  }

  /** Owner, mode (after the owner: chown clears setuid), xattrs, mtime of a non-file entry. */
  async #attributes(path: string, header: TarHeader): Promise<void> {
    lchownSync(path, ...owner(header));
    await chmod(path, (header.mode ?? 0o755) & 0o7777);
    await this.#xattrs(path, header);
    lutimesSync(path, mtimeOf(header), mtimeOf(header));
  }

  async #xattrs(path: string, header: TarHeader): Promise<void> {
    for (const [key, value] of Object.entries(header.pax ?? {})) {
      if (!key.startsWith(XATTR_PAX_PREFIX)) continue;
      const name = key.slice(XATTR_PAX_PREFIX.length);
      // overlayfs' own attributes would change what the overlay shows (redirects, metacopy): never from an archive.
      if (name.startsWith(OVERLAY_XATTR_PREFIX)) continue;
      try {
        await this.#fsops.setxattr(path, name, Buffer.from(value, 'latin1'));
      } catch (error) {
        if (!XATTR_REFUSED.has((error as PetriError).code)) throw error;
      }
    }
  }
}

function owner(header: TarHeader): [number, number] {
  const uid = header.pax?.uid === undefined ? header.uid : Number(header.pax.uid);
  const gid = header.pax?.gid === undefined ? header.gid : Number(header.pax.gid);
  return [Number.isSafeInteger(uid) ? (uid as number) : 0, Number.isSafeInteger(gid) ? (gid as number) : 0];
}

function mtimeOf(header: TarHeader): Date {
  const pax = header.pax?.mtime === undefined ? Number.NaN : Number(header.pax.mtime);
  if (Number.isFinite(pax)) return new Date(pax * 1000);
  return header.mtime ?? new Date(0);
}
