import { createHash } from 'node:crypto';
import { closeSync, constants, openSync, readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import type { Pack } from 'tar-stream';
import { PetriError } from '../errors.js';
import { HashingStream } from '../image/digest.js';
import { type ScanEntry, scanTree } from './scan.js';
import { TarBuffer } from './tar-buffer.js';
import { type TarHeader, tarStream, XATTR_PAX_PREFIX } from './tar-pax.js';
import { OPAQUE_WHITEOUT, OVERLAY_OPAQUE_XATTR, OVERLAY_XATTR_PREFIX, WHITEOUT_PREFIX } from './whiteouts.js';

export interface WriteLayerOptions {
  /** Clamp every mtime to this (seconds since the epoch), like SOURCE_DATE_EPOCH: reproducible layers. */
  sourceDateEpoch?: number;
  /** Reads the tree (default: scanTree, a `petri-runner scan` process; a builder passes its FsOps' scan). */
  scan?: (dir: string) => Promise<ScanEntry[]>;
  /**
   * A layer whose regular files hold at most this many bytes (default 4 MiB)
   * is built in memory, without tar-stream's streams (the same bytes); 0
   * streams every layer.
   */
  inMemoryMax?: number;
}

/**
 * Whether a layer keeps an xattr: `user.*`, `trusted.*` (but overlayfs' own)
 * and `security.capability`. The others are what a host gives files by itself:
 * POSIX ACLs inherited from a default ACL (on PETRI_ROOT, say), SELinux or
 * Smack labels, IMA/EVM, btrfs properties. They are left out (Docker keeps
 * only security.capability), so that a layer's bytes depend neither on the
 * host's set-up nor on which reader scanned the tree (scanOwnTree in Node
 * cannot see xattrs).
 */
function keptXattr(name: string): boolean {
  if (name.startsWith(OVERLAY_XATTR_PREFIX)) return false;
  return name.startsWith('user.') || name.startsWith('trusted.') || name === 'security.capability';
}

/** The most a ustar header holds for uid/gid (7 octal digits); above it they go into PAX records. */
const USTAR_MAX_ID = 0o777777;
const OPAQUE_VALUE = Buffer.from('y').toString('base64');

/**
 * Where a layer goes: a small one's whole archive at once (`whole`), a big
 * one's through a stream (`stream()`, ended when done, destroyed on failure).
 */
export interface LayerSink {
  whole(tar: Buffer): Promise<void>;
  stream(): Writable;
}

/**
 * Writes `upperDir` (a container's overlay upper dir, or a plain root filesystem)
 * as an OCI layer tar to `out` (a stream, ended when done, destroyed on
 * failure, or a LayerSink): overlay whiteouts become
 * `.wh.NAME` files, opaque directories get a `.wh..wh..opq` entry, hard links
 * stay links, device nodes, fifos and symlinks are kept, owners are numeric,
 * the xattrs it keeps (keptXattr) become PAX `SCHILY.xattr.*` records. Entries come
 * in a fixed order (depth first, by name) with no user/group names or atimes, so
 * the same tree with mtimes clamped by `sourceDateEpoch` gives the same digest.
 * Returns the diffID and size of the tar, and the opaque directories it marked
 * (relative paths). Sockets are skipped, as Docker does.
 */
export async function writeLayer(
  upperDir: string,
  out: Writable | LayerSink,
  options: WriteLayerOptions = {},
): Promise<{ diffId: string; size: number; opaque: string[] }> {
  const sink: LayerSink =
    'whole' in out
      ? out
      : {
          whole: async (tar) => {
            out.end(tar);
            await finished(out);
          },
          stream: () => out,
        };
  let entries: ScanEntry[];
  try {
    entries = await (options.scan ?? scanTree)(upperDir);
  } catch (error) {
    if (!('whole' in out)) out.destroy(error as Error);
    throw error;
  }
  const opaque = entries.filter(isOpaqueDir).map((entry) => entry.path);
  const bytes = entries.reduce((sum, entry) => sum + (entry.type === 'f' ? entry.size : 0), 0);
  if (bytes <= (options.inMemoryMax ?? 4 << 20) && options.inMemoryMax !== 0) {
    let tar: Buffer;
    try {
      const archive = new TarBuffer();
      await addEntries(bufferPacker(archive), upperDir, entries, options.sourceDateEpoch);
      tar = archive.finish();
    } catch (error) {
      if (!('whole' in out)) out.destroy(error as Error);
      throw layerError(upperDir, error);
    }
    await sink.whole(tar);
    return { diffId: `sha256:${createHash('sha256').update(tar).digest('hex')}`, size: tar.length, opaque };
  }
  const pack = tarStream().pack();
  const counter = new HashingStream();
  const writing = pipeline(pack as unknown as NodeJS.ReadableStream, counter, sink.stream());
  writing.catch(() => {}); // awaited below
  try {
    await addEntries(streamPacker(pack), upperDir, entries, options.sourceDateEpoch);
    pack.finalize();
    await writing;
  } catch (error) {
    pack.destroy(error as Error);
    await writing.catch(() => {});
    throw layerError(upperDir, error);
  }
  return { diffId: counter.digest, size: counter.size, opaque };
}

function layerError(upperDir: string, error: unknown): Error {
  if (error instanceof PetriError) return error;
  return new PetriError(`cannot write ${upperDir} as a layer: ${(error as Error).message}`, { cause: error });
}

/** Where the entries go: tar-stream's pack stream, or a TarBuffer. */
interface Packer {
  add(header: TarHeader): Promise<void>;
  /** A regular file, its content read from `path` without following a symlink put in its place. */
  addFile(header: TarHeader, path: string): Promise<void>;
}

function streamPacker(pack: Pack): Packer {
  return { add: (header) => add(pack, header), addFile: (header, path) => addFile(pack, header, path) };
}

function bufferPacker(archive: TarBuffer): Packer {
  return {
    add: async (header) => archive.add(header, header.type === 'file' ? Buffer.alloc(0) : undefined),
    addFile: async (header, path) => {
      const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
      try {
        archive.add(header, readFileSync(fd));
      } finally {
        closeSync(fd);
      }
    },
  };
}

function isOpaqueDir(entry: ScanEntry): boolean {
  return entry.type === 'd' && entry.xattrs?.[OVERLAY_OPAQUE_XATTR] === OPAQUE_VALUE;
}

async function addEntries(pack: Packer, root: string, entries: ScanEntry[], epoch: number | undefined): Promise<void> {
  const firstPathOfInode = new Map<number, string>();
  for (const entry of entries) {
    const mtime = new Date((epoch === undefined ? entry.mtime : Math.min(entry.mtime, epoch)) * 1000);
    const base: TarHeader = { ...emptyHeader(entry.path, mtime), ...ids(entry), mode: entry.mode };
    const pax = xattrRecords(entry);
    if (pax) base.pax = { ...base.pax, ...pax };
    switch (entry.type) {
      case 'c':
      case 'b':
        if (entry.type === 'c' && entry.rdev[0] === 0 && entry.rdev[1] === 0) {
          const parent = dirname(entry.path);
          await pack.add(emptyHeader(join(parent === '.' ? '' : parent, `${WHITEOUT_PREFIX}${nameOf(entry)}`), mtime));
          break;
        }
        await pack.add({
          ...base,
          type: entry.type === 'c' ? 'character-device' : 'block-device',
          devmajor: entry.rdev[0],
          devminor: entry.rdev[1],
        });
        break;
      case 'p':
        await pack.add({ ...base, type: 'fifo' });
        break;
      case 'd':
        await pack.add({ ...base, name: `${entry.path}/`, type: 'directory' });
        if (isOpaqueDir(entry)) {
          await pack.add(emptyHeader(`${entry.path}/${OPAQUE_WHITEOUT}`, mtime));
        }
        break;
      case 'l':
        await pack.add({ ...base, type: 'symlink', linkname: entry.link ?? '' });
        break;
      case 'f': {
        const first = entry.nlink > 1 ? firstPathOfInode.get(entry.ino) : undefined;
        if (first !== undefined) {
          await pack.add({ ...base, type: 'link', linkname: first });
          break;
        }
        if (entry.nlink > 1) firstPathOfInode.set(entry.ino, entry.path);
        await pack.addFile({ ...base, type: 'file', size: entry.size }, join(root, entry.path));
        break;
      }
      default:
        break; // sockets
    }
  }
}

function emptyHeader(name: string, mtime: Date): TarHeader {
  return { name, mtime, type: 'file', size: 0, mode: 0, uid: 0, gid: 0 } as TarHeader;
}

function nameOf(entry: ScanEntry): string {
  return entry.path.slice(entry.path.lastIndexOf('/') + 1);
}

function ids(entry: ScanEntry): Pick<TarHeader, 'uid' | 'gid' | 'pax'> {
  if (entry.uid <= USTAR_MAX_ID && entry.gid <= USTAR_MAX_ID) return { uid: entry.uid, gid: entry.gid };
  return { uid: 0, gid: 0, pax: { uid: String(entry.uid), gid: String(entry.gid) } };
}

function xattrRecords(entry: ScanEntry): Record<string, string> | undefined {
  const names = Object.keys(entry.xattrs ?? {})
    .filter(keptXattr)
    .sort();
  if (names.length === 0) return undefined;
  const records: Record<string, string> = {};
  for (const name of names) {
    records[`${XATTR_PAX_PREFIX}${name}`] = Buffer.from(entry.xattrs?.[name] ?? '', 'base64').toString('latin1');
  }
  return records;
}

function add(pack: Pack, header: TarHeader): Promise<void> {
  return new Promise((resolve, reject) => {
    const callback = (error?: Error | null) => (error ? reject(error) : resolve());
    // An empty regular file still needs its (empty) content, or tar-stream waits for it.
    if (header.type === 'file') pack.entry(header as Parameters<Pack['entry']>[0], Buffer.alloc(0), callback);
    else pack.entry(header as Parameters<Pack['entry']>[0], callback);
  });
}

/** Adds a regular file's content, read without following a symlink put in its place. */
async function addFile(pack: Pack, header: TarHeader, path: string): Promise<void> {
  let finish!: (error?: Error | null) => void;
  const done = new Promise<void>((resolve, reject) => {
    finish = (error) => (error ? reject(error) : resolve());
  });
  const sink = pack.entry(header as Parameters<Pack['entry']>[0], (error) => finish(error));
  const file = (await open(path, constants.O_RDONLY | constants.O_NOFOLLOW)).createReadStream();
  await Promise.all([pipeline(file, sink as unknown as NodeJS.WritableStream), done]);
}
