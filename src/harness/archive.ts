import {
  constants,
  lstatSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  type Stats,
  statfsSync,
  statSync,
} from 'node:fs';
import { open } from 'node:fs/promises';
import { basename, join, posix } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Pack } from 'tar-stream';
import { PetriError } from '../errors.js';
import { EntryWriter } from '../snapshot/entry-writer.js';
import { cleanEntryPath } from '../snapshot/safe-path.js';
import { type TarHeader, tarStream } from '../snapshot/tar-pax.js';
import { WHITEOUT_PREFIX } from '../snapshot/whiteouts.js';
import { devMajor, devMinor } from '../util/dev.js';
import { type FsView, LayeredView, resolveParent, splitPath } from './fs-view.js';
import type { Content, ContentToCopy, FileToCopy } from './types.js';

/**
 * Tar archives in and out of a container, like Docker's archive endpoints:
 * `extractArchive` writes one into the container at a directory (parents
 * resolved inside the container's root, missing ones made), `archivePath`
 * reads a path out (entries named from its last component).
 */

/** A tar of files, directories and contents to copy, named by their absolute targets (root-owned, like `docker cp`). */
export function copyArchive(files: FileToCopy[], directories: FileToCopy[], contents: ContentToCopy[]): Readable {
  const pack = tarStream().pack();
  void (async () => {
    for (const file of files) {
      const stat = statSync(file.source); // the file a link given here points to
      await addFile(pack, header(file.target, stat, file.mode), realpathSync(file.source));
    }
    for (const dir of directories) await addTree(pack, dir.source, dir.target, dir.mode);
    for (const item of contents) {
      const data = await contentBuffer(item.content);
      await add(pack, { ...plainHeader(item.target), mode: item.mode ?? 0o644, size: data.length }, data);
    }
    pack.finalize();
  })().catch((error: Error) => pack.destroy(error));
  return Readable.from(pack as AsyncIterable<Buffer>);
}

/** A host directory and all in it (`mode`, when given, for every entry, as testcontainers' archiver does). */
async function addTree(pack: Pack, source: string, target: string, mode: number | undefined): Promise<void> {
  const stat = statSync(source);
  await add(pack, { ...header(target, stat, mode), type: 'directory', size: 0 });
  for (const name of readdirSync(source).sort()) {
    const path = join(source, name);
    const child = lstatSync(path);
    const inner = posix.join(target, name);
    if (child.isDirectory()) await addTree(pack, path, inner, mode);
    else if (child.isSymbolicLink()) {
      await add(pack, { ...header(inner, child), type: 'symlink', linkname: readlinkSync(path), size: 0 });
    } else if (child.isFile()) await addFile(pack, header(inner, child, mode), path);
    // devices, fifos and sockets of a host directory are not copied
  }
}

function plainHeader(target: string): TarHeader {
  return {
    name: target.replace(/^\/+/, ''),
    type: 'file',
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: new Date(),
  } as TarHeader;
}

function header(target: string, stat: Stats, mode?: number): TarHeader {
  return { ...plainHeader(target), mode: mode ?? stat.mode & 0o7777, mtime: stat.mtime, size: stat.size };
}

/** A stream's content, read once: a GenericContainer may be started more than once. */
const streamed = new WeakMap<Readable, Promise<Buffer>>();

function contentBuffer(content: Content): Promise<Buffer> {
  if (typeof content === 'string') return Promise.resolve(Buffer.from(content));
  if (Buffer.isBuffer(content)) return Promise.resolve(content);
  let data = streamed.get(content);
  if (!data) {
    data = (async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of content) chunks.push(Buffer.from(chunk));
      return Buffer.concat(chunks);
    })();
    streamed.set(content, data);
  }
  return data;
}

/**
 * Writes the entries of `tar` into the container seen through `view` (a
 * running or stopped container's mounted root, or the layers of one not
 * started yet, whose upper dir gets the entries), at directory `at`.
 */
export async function extractArchive(view: FsView, root: string, tar: Readable, at = '/'): Promise<void> {
  const writer = new EntryWriter(root);
  const extract = tarStream().extract();
  const feeding = pipeline(tar, extract as unknown as NodeJS.WritableStream);
  feeding.catch(() => {}); // awaited below
  const base = splitPath(at);
  try {
    for await (const entry of extract) {
      const header = entry.header as TarHeader;
      const name = cleanEntryPath(header.name);
      if (name === '' && header.type === 'directory') {
        entry.resume();
        continue;
      }
      if (basename(name).startsWith(WHITEOUT_PREFIX)) {
        throw new PetriError(
          `"${header.name}": names starting with ${WHITEOUT_PREFIX} are overlay whiteouts, not files`,
        );
      }
      const placed = place(view, [...base, name].join('/'));
      const linkname =
        header.type === 'link' && header.linkname
          ? place(view, [...base, cleanEntryPath(header.linkname)].join('/'))
          : header.linkname;
      await writer.write({ ...header, name: placed, linkname }, entry as unknown as Readable);
    }
    await feeding;
    writer.finish();
  } catch (error) {
    tar.destroy();
    const fed = await feeding.then(
      () => undefined,
      (e: NodeJS.ErrnoException) => e,
    );
    const cause = fed && fed.code !== 'ERR_STREAM_PREMATURE_CLOSE' ? fed : error;
    throw new PetriError((cause as Error).message.replace(/^layer entry /, 'entry '), {
      cause,
      code: (cause as PetriError).code,
    });
  } finally {
    await writer.close();
  }
}

/** Where an entry goes: its parents resolved in the container's root (and copied up, for layers). */
function place(view: FsView, path: string): string {
  const { parent, name } = resolveParent(view, `/${path}`);
  if (view instanceof LayeredView) view.copyUp(parent);
  return [...parent, name].join('/');
}

/** A tar of `path` in the container (a directory with everything under it), entries named from its last component. */
export function archivePath(view: FsView, path: string): Readable {
  const { parent, name } = resolveParent(view, path);
  const top = view.lstat(name === '' ? parent : [...parent, name]);
  if (!top) throw new PetriError(`no such file or directory: ${path}`, { code: 'ENOENT' });
  const pack = tarStream().pack();
  const links = new Map<string, string>();
  const walk = async (parts: string[], entryName: string, found: { path: string; stat: Stats }): Promise<void> => {
    const { stat } = found;
    const base = { ...header(entryName, stat), uid: stat.uid, gid: stat.gid, size: 0 };
    if (stat.isDirectory()) {
      if (entryName !== '') await add(pack, { ...base, name: `${entryName}/`, type: 'directory' });
      if (stat.dev !== top.stat.dev && isKernelFilesystem(found.path)) return; // /proc, /sys: their mount point only
      for (const child of view.readdir(parts).sort()) {
        const childFound = view.lstat([...parts, child]);
        if (childFound) await walk([...parts, child], entryName === '' ? child : `${entryName}/${child}`, childFound);
      }
    } else if (stat.isSymbolicLink()) {
      await add(pack, { ...base, type: 'symlink', linkname: readlinkSync(found.path) });
    } else if (stat.isFile()) {
      const key = `${stat.dev}:${stat.ino}`;
      const first = stat.nlink > 1 ? links.get(key) : undefined;
      if (first !== undefined) await add(pack, { ...base, type: 'link', linkname: first });
      else {
        if (stat.nlink > 1) links.set(key, entryName);
        await addFile(pack, { ...base, size: stat.size }, found.path);
      }
    } else if (stat.isCharacterDevice() || stat.isBlockDevice() || stat.isFIFO()) {
      const type = stat.isFIFO() ? 'fifo' : stat.isCharacterDevice() ? 'character-device' : 'block-device';
      await add(pack, { ...base, type, devmajor: devMajor(stat.rdev), devminor: devMinor(stat.rdev) });
    }
  };
  void walk(name === '' ? parent : [...parent, name], name, top)
    .then(() => pack.finalize())
    .catch((error: Error) => pack.destroy(error));
  const out = new PassThrough();
  pipeline(pack as unknown as NodeJS.ReadableStream, out).catch(() => {});
  return out;
}

/** procfs, sysfs, cgroup, devpts, mqueue, … : what a running container has mounted that is no file to copy. */
const KERNEL_FILESYSTEMS = new Set([
  0x9fa0, // proc
  0x62656572, // sysfs
  0x63677270, // cgroup2
  0x27e0eb, // cgroup
  0x1cd1, // devpts
  0x19800202, // mqueue
  0x64626720, // debugfs
  0x74726163, // tracefs
  0x73636673, // securityfs
]);

function isKernelFilesystem(path: string): boolean {
  try {
    return KERNEL_FILESYSTEMS.has(statfsSync(path).type);
  } catch {
    return false;
  }
}

function add(pack: Pack, header: TarHeader, data?: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const callback = (error?: Error | null) => (error ? reject(error) : resolve());
    const h = header as Parameters<Pack['entry']>[0];
    if (header.type === 'file') pack.entry(h, data ?? Buffer.alloc(0), callback);
    else pack.entry(h, callback);
  });
}

/** A regular file's content, read without following a symlink put in its place. */
async function addFile(pack: Pack, header: TarHeader, path: string): Promise<void> {
  if (header.size === 0) return add(pack, header);
  const file = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    let finish!: (error?: Error | null) => void;
    const done = new Promise<void>((resolve, reject) => {
      finish = (error) => (error ? reject(error) : resolve());
    });
    const sink = pack.entry(header as Parameters<Pack['entry']>[0], (error) => finish(error));
    await Promise.all([
      pipeline(
        file.createReadStream({ autoClose: false, start: 0, end: (header.size ?? 0) - 1 }),
        sink as unknown as NodeJS.WritableStream,
      ),
      done,
    ]);
  } finally {
    await file.close();
  }
}
