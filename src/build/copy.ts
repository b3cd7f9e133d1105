import { createHash } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  constants,
  createReadStream,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  readlinkSync,
  type Stats,
  symlinkSync,
  unlinkSync,
} from 'node:fs';
import { copyFile, open, readFile } from 'node:fs/promises';
import { join, posix, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { cleanPath, goMatch, hasWildcards, IgnoreMatcher } from '../dockerfile/dockerignore.js';
import { PetriError } from '../errors.js';
import type { FsOps } from '../snapshot/fsops.js';
import type { TarHeader } from '../snapshot/tar-pax.js';
import { OVERLAY_XATTR_PREFIX, WHITEOUT_META_PREFIX, WHITEOUT_PREFIX } from '../snapshot/whiteouts.js';
import { devMajor, devMinor } from '../util/dev.js';
import { removeTree } from '../util/fs.js';
import { type Compression, cannotDecompress, compressionOf, decompressor } from './decompress.js';
import { ContextView, cleanRel, type FsView, LayeredView, resolvePath } from './fs-view.js';
import { checkoutGit, isGitSource, redactUrl } from './git-source.js';

/** One COPY or ADD, its words expanded (see builder.ts). */
export interface CopyRequest {
  /** Where the sources are: the build context or a stage's or image's layers. */
  from: FsView;
  /** As written; relative to the view's root whatever their leading `/`; may hold wildcards (Go's filepath.Match per segment). */
  sources: string[];
  /** `COPY <<EOF` heredocs, already expanded: files named `name` (mode 0644 unless given). */
  inline?: { name: string; content: string; mode?: number }[];
  /** As written; relative to `workdir` unless absolute. A trailing `/` makes it a directory. */
  dest: string;
  /** The stage's WORKDIR (absolute). */
  workdir: string;
  /** `--chown`, resolved to numbers: the owner of everything copied and of the directories made. */
  chown?: { uid: number; gid: number };
  /** `--chmod`: the mode of everything copied but symlinks (and of the directories made). */
  chmod?: number;
  /** `--exclude` patterns (.dockerignore syntax), matched below each source. */
  exclude?: string[];
  /** `--parents`: keep the sources' paths (from the root, or from a `/./` pivot) under dest. */
  parents?: boolean;
  /** Keep the sources' owners (`--from`); otherwise 0:0 (the build context) unless `chown`. */
  preserveOwner: boolean;
  /** ADD: local tar archives are extracted, http(s) URLs downloaded, git repositories checked out. */
  add?: boolean;
  /** ADD `--checksum`: the digest of the one URL's content (`sha256:…`), or the git repository's commit. */
  checksum?: string;
  /** ADD `--keep-git-dir`: a git repository's `.git` is added too. */
  keepGitDir?: boolean;
  /** A fresh empty directory for a git checkout, removed after the build (ADD of a git repository needs one). */
  scratch?: () => Promise<string>;
}

export type EntryType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';

/**
 * One thing a COPY writes, with the metadata it gets (chown/chmod/owner rules
 * applied). `top-file`: a source that is not a directory (or a heredoc, a
 * download, an archive), landing at dest itself, or at dest/`target` when dest
 * is a directory. `top-dir`: a source directory, whose contents land in dest
 * (`target` is `''`). `child`: lands at dest/`target`.
 */
export interface SelectedEntry {
  role: 'top-file' | 'top-dir' | 'child';
  target: string;
  /** Its path in the source view (a URL for a download, `<<name` for a heredoc): messages and the cache key. */
  source: string;
  type: EntryType;
  /** Permission bits with setuid, setgid and sticky, as written. */
  mode: number;
  uid: number;
  gid: number;
  /** Kept, never hashed. */
  mtimeMs: number;
  size: number;
  /** `sha256:…` of a file's content. */
  digest?: string;
  linkname?: string;
  /** Device numbers of a device node. */
  rdev?: number;
  /** The host file to copy the content from. */
  hostPath?: string;
  /** Content held in memory (heredocs, downloads). */
  content?: Buffer;
  /** ADD: a tar archive to extract into dest, and how it is compressed. */
  archive?: 'tar' | Compression;
  /** `dev:ino` of a source file with several links: the links within one COPY stay links. */
  link?: string;
}

const isUrl = (source: string) => /^https?:\/\//i.test(source);
const word = (req: CopyRequest) => (req.add ? 'ADD' : 'COPY');

/**
 * Expands the sources of a COPY/ADD in its view, as BuildKit does: wildcards
 * (an empty match is no error), symlinks followed inside the view for the
 * sources themselves (never below them), directories walked in name order,
 * `--exclude` and `--parents` applied; reads every file's content digest, and
 * downloads ADD's URLs. A missing source fails with one line naming it.
 */
export async function selectSources(req: CopyRequest): Promise<SelectedEntry[]> {
  const selection = new Selection(req);
  if (req.checksum !== undefined) {
    const [only, ...more] = req.sources;
    if (only === undefined || more.length > 0 || (req.inline ?? []).length > 0) {
      throw new PetriError(`ADD --checksum needs exactly one source (an http(s) URL or a git repository)`);
    }
    if (!isUrl(only) && !isGitSource(only)) {
      throw new PetriError(`ADD --checksum needs an http(s) URL or a git repository; ${redactUrl(only)} is neither`);
    }
  }
  for (const source of req.sources) {
    if (isUrl(source) || isGitSource(source)) {
      if (!req.add)
        throw new PetriError(`COPY cannot copy from a URL (${redactUrl(source)}): use ADD, or download it in a RUN`);
      if (isGitSource(source)) await selection.git(source);
      else selection.entries.push(await download(req, source));
    } else if (req.parents) selection.parents(source);
    else if (hasWildcards(source)) selection.wildcard(source);
    else selection.path(source);
  }
  for (const doc of req.inline ?? []) {
    const content = Buffer.from(doc.content);
    selection.entries.push({
      role: 'top-file',
      target: posix.basename(doc.name) || doc.name,
      source: `<<${doc.name}`,
      type: 'file',
      mode: req.chmod ?? doc.mode ?? 0o644,
      ...(req.chown ?? { uid: 0, gid: 0 }),
      mtimeMs: Date.now(),
      size: content.length,
      content,
      digest: `sha256:${createHash('sha256').update(content).digest('hex')}`,
    });
  }
  await selection.finish();
  return selection.entries;
}

/**
 * The cache key of a COPY/ADD's content: sha256 over its entries in selection
 * order (which is deterministic: sources in order, names sorted), each with
 * role, source and target paths, type, mode, owner, content digest, link
 * target, device numbers. Never mtimes.
 */
export function hashSelection(entries: readonly SelectedEntry[]): string {
  const hash = createHash('sha256');
  for (const line of selectionLines(entries)) hash.update(line);
  return `sha256:${hash.digest('hex')}`;
}

/** What hashSelection hashes: a JSON line per entry (runner/replay.c hashes them again from delta.ts's template). */
export function selectionLines(entries: readonly SelectedEntry[]): string[] {
  return entries.map((e) => {
    const fields = [e.role, e.source, e.target, e.type, e.mode, e.uid, e.gid, e.digest, e.linkname, e.rdev, e.archive];
    return `${JSON.stringify(fields.map((f) => f ?? null))}\n`;
  });
}

/** Builds the entry list of one request. */
class Selection {
  readonly entries: SelectedEntry[] = [];
  readonly #req: CopyRequest;
  readonly #view: FsView;
  readonly #exclude: IgnoreMatcher | undefined;
  /** Excluded directories entered because an exception may re-include something below: added when it does. */
  readonly #pending: SelectedEntry[] = [];
  readonly #archives: SelectedEntry[] = [];

  constructor(req: CopyRequest) {
    this.#req = req;
    this.#view = req.from;
    this.#exclude = req.exclude?.length ? new IgnoreMatcher(req.exclude, `${word(req)} --exclude`) : undefined;
  }

  /**
   * ADD of a git repository: the commit checked out (git-source.ts), then its
   * tree (or the fragment's subdirectory) added as a directory's contents,
   * without `.git` unless `--keep-git-dir`. Every entry gets the commit's
   * time as its mtime, so that the same commit gives the same layer.
   */
  async git(source: string): Promise<void> {
    const req = this.#req;
    if (!req.scratch) throw new PetriError(`ADD ${redactUrl(source)}: a git repository cannot be added here`);
    const { dir, commit, time, subdir } = await checkoutGit(source, await req.scratch(), {
      ...(req.checksum !== undefined ? { checksum: req.checksum } : {}),
      ...(req.keepGitDir ? { keepGitDir: true } : {}),
    });
    const view = new ContextView(dir, new IgnoreMatcher(req.keepGitDir ? [] : ['.git']));
    const root = cleanRel(subdir ?? '.');
    if (!view.lstat(root)?.isDirectory()) {
      throw new PetriError(`ADD ${redactUrl(source)}: commit ${commit} has no directory ${subdir}`);
    }
    const { add: _add, checksum: _checksum, ...rest } = req;
    const tree = new Selection({ ...rest, from: view, sources: [root], inline: [] });
    tree.path(root === '' ? '.' : root);
    await tree.finish();
    // A kept .git differs from checkout to checkout (its index holds inode numbers and times): its
    // files count as the commit in the cache key, so that the same commit is a cache hit.
    const inGitDir = (path: string) => /^(\.\/)?\.git(\/|$)/.test(path);
    for (const entry of tree.entries) {
      const digest = entry.type === 'file' && inGitDir(entry.source) ? { digest: `git:${commit}` } : {};
      this.entries.push({ ...entry, ...digest, mtimeMs: time * 1000 });
    }
  }

  /** A source without wildcards: must exist. */
  path(source: string): void {
    const named = cleanRel(source);
    const rel = resolvePath(this.#view, named);
    const stat = this.#view.lstat(rel);
    if (!stat) throw this.#notFound(source);
    this.#match(rel, stat, posix.basename(named), undefined);
  }

  /** A source with wildcards, resolved like BuildKit: a walk below the part before the first wildcard segment. */
  wildcard(source: string): void {
    for (const match of this.#expand(source)) {
      const rel = resolvePath(this.#view, match.rel);
      const stat = this.#view.lstat(rel);
      if (!stat) throw this.#notFound(match.rel);
      this.#match(rel, stat, posix.basename(match.rel), match.name);
    }
  }

  /** `--parents`: everything the pattern after the pivot (`a/./b/*`) matches, landing at its path from the pivot. */
  parents(source: string): void {
    const cut = source.indexOf('/./');
    const [pivotPath, pattern] = cut < 0 ? ['/', source] : [source.slice(0, cut), source.slice(cut + 3)];
    const wanted = cleanRel(pattern);
    const pivots = hasWildcards(pivotPath)
      ? this.#expand(pivotPath).map((m) => resolvePath(this.#view, m.rel))
      : [resolvePath(this.#view, cleanRel(pivotPath))];
    if (!hasWildcards(pivotPath) && !hasWildcards(pattern)) {
      if (!this.#view.lstat(resolvePath(this.#view, join2(pivots[0] as string, wanted)))) throw this.#notFound(source);
    }
    const include = wanted === '' ? undefined : new IgnoreMatcher([wanted], `${word(this.#req)} --parents`);
    for (const pivot of pivots) if (this.#view.lstat(pivot)?.isDirectory()) this.#walk(pivot, '', include);
  }

  /** The paths a wildcard source matches (Go's filepath.Match per segment, symlinked directories not entered), sorted. */
  #expand(source: string): { rel: string; name: string }[] {
    const segments = cleanRel(source).split('/');
    const first = segments.findIndex(hasWildcards);
    const base = resolvePath(this.#view, segments.slice(0, first).join('/'));
    const patterns = segments.slice(first);
    let frontier = [{ rel: base, name: '' }];
    for (const [depth, pattern] of patterns.entries()) {
      const next: { rel: string; name: string }[] = [];
      for (const dir of frontier) {
        for (const entry of this.#view.readdir(dir.rel)) {
          if (goMatch(pattern, entry)) next.push({ rel: join2(dir.rel, entry), name: join2(dir.name, entry) });
        }
      }
      frontier = depth < patterns.length - 1 ? next.filter((n) => this.#view.lstat(n.rel)?.isDirectory()) : next;
    }
    return frontier;
  }

  async finish(): Promise<void> {
    await digestFiles(this.entries);
    for (const entry of this.#archives) entry.archive = await archiveKind(entry);
  }

  /** A matched source: `name` is where a file lands in a directory dest, `excludeName` its path for --exclude (wildcards only). */
  #match(rel: string, stat: Stats, name: string, excludeName: string | undefined): void {
    if (excludeName !== undefined && this.#exclude?.matches(excludeName)) return;
    if (stat.isDirectory()) {
      this.entries.push(this.#entry('top-dir', '', rel, stat));
      this.#walk(rel, '', undefined);
      return;
    }
    const entry = this.#entry('top-file', name, rel, stat);
    this.entries.push(entry);
    if (this.#req.add && entry.type === 'file') this.#archives.push(entry);
  }

  /**
   * Adds what is below `base/sub` as children (targets relative to `base`), in
   * name order, skipping --exclude'd paths. With `include` (--parents) only
   * what it matches, and the directories on the way there.
   */
  #walk(base: string, sub: string, include: IgnoreMatcher | undefined): void {
    for (const name of this.#view.readdir(join2(base, sub))) {
      const path = join2(sub, name);
      const rel = join2(base, path);
      const stat = this.#view.lstat(rel);
      if (!stat) continue;
      const included = include === undefined || include.matches(path);
      const excluded = this.#exclude?.matches(path) ?? false;
      const entry = () => this.#entry('child', path, rel, stat);
      if (!stat.isDirectory()) {
        if (included && !excluded) this.#add(entry());
        continue;
      }
      if (included && !excluded) {
        this.#add(entry());
        this.#walk(base, path, include);
        continue;
      }
      const enter = included ? this.#exclude?.hasExceptions : include?.mayMatchBelow(path);
      if (!enter) continue;
      const pending = entry();
      this.#pending.push(pending);
      this.#walk(base, path, include);
      if (this.#pending.at(-1) === pending) this.#pending.pop();
    }
  }

  #add(entry: SelectedEntry): void {
    this.entries.push(...this.#pending.splice(0), entry);
  }

  #entry(role: SelectedEntry['role'], target: string, rel: string, stat: Stats): SelectedEntry {
    const req = this.#req;
    const type = typeOf(stat);
    const owner = req.chown ?? (req.preserveOwner ? { uid: stat.uid, gid: stat.gid } : { uid: 0, gid: 0 });
    const entry: SelectedEntry = {
      role,
      target,
      source: rel,
      type,
      mode: req.chmod !== undefined && type !== 'symlink' ? req.chmod & 0o7777 : stat.mode & 0o7777,
      uid: owner.uid,
      gid: owner.gid,
      mtimeMs: stat.mtimeMs,
      size: type === 'file' ? stat.size : 0,
    };
    if (type === 'file') {
      entry.hostPath = this.#view.hostPath(rel);
      if (stat.nlink > 1) entry.link = `${stat.dev}:${stat.ino}`;
      statOf.set(entry, stat);
    } else if (type === 'symlink') entry.linkname = this.#view.readlink(rel);
    else if (type === 'char' || type === 'block') entry.rdev = stat.rdev;
    return entry;
  }

  #notFound(source: string): PetriError {
    const where =
      this.#view instanceof ContextView
        ? `build context${this.#view.ignore.empty ? '' : ' or excluded by .dockerignore'}`
        : this.#view.description;
    return new PetriError(`${word(this.#req)} failed: file not found in ${where}: stat ${source}: file does not exist`);
  }
}

const join2 = (a: string, b: string) => (a === '' ? b : b === '' ? a : `${a}/${b}`);

function typeOf(stat: Stats): EntryType {
  if (stat.isFile()) return 'file';
  if (stat.isDirectory()) return 'dir';
  if (stat.isSymbolicLink()) return 'symlink';
  if (stat.isCharacterDevice()) return 'char';
  if (stat.isBlockDevice()) return 'block';
  if (stat.isFIFO()) return 'fifo';
  return 'socket';
}

/** The stat each file entry was selected with: keys the digest cache. */
const statOf = new WeakMap<SelectedEntry, Stats>();
/** Content digests by file identity (device, inode, size, mtime, ctime): a second COPY of the same files reads nothing. */
const digestCache = new Map<string, string>();
const SMALL_FILE = 1 << 20;

async function digestFiles(entries: readonly SelectedEntry[]): Promise<void> {
  const files = entries.filter((e) => e.type === 'file' && e.digest === undefined && e.hostPath !== undefined);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < files.length; i = next++) {
      const entry = files[i] as SelectedEntry;
      entry.digest = await fileDigest(entry.hostPath as string, statOf.get(entry));
    }
  };
  await Promise.all(Array.from({ length: Math.min(8, files.length) }, worker));
}

async function fileDigest(path: string, stat: Stats | undefined): Promise<string> {
  const key = stat && `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeMs}:${stat.ctimeMs}`;
  const known = key && digestCache.get(key);
  if (known) return known;
  const hash = createHash('sha256');
  try {
    if ((stat?.size ?? 0) < SMALL_FILE) hash.update(await readFile(path));
    else for await (const chunk of createReadStream(path, { highWaterMark: SMALL_FILE })) hash.update(chunk as Buffer);
  } catch (error) {
    throw new PetriError(`cannot read ${path}: ${(error as Error).message}`);
  }
  const digest = `sha256:${hash.digest('hex')}`;
  if (key) digestCache.set(key, digest);
  return digest;
}

/** ADD of an http(s) URL: the file, named after the URL's last path segment, mode 0600 (like Docker), never extracted. */
async function download(req: CopyRequest, url: string): Promise<SelectedEntry> {
  let response: Response;
  let content: Buffer;
  try {
    // A user and password in the URL go as basic auth, as BuildKit sends them (fetch refuses such URLs).
    const target = new URL(url);
    const headers: Record<string, string> = {};
    if (target.username || target.password) {
      const user = decodeURIComponent(target.username);
      const password = decodeURIComponent(target.password);
      headers.authorization = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
      target.username = '';
      target.password = '';
    }
    response = await fetch(target, { redirect: 'follow', headers });
    if (!response.ok) throw new Error(`HTTP ${response.status} ${response.statusText}`.trim());
    content = Buffer.from(await response.arrayBuffer());
  } catch (error) {
    throw new PetriError(`ADD failed: cannot download ${redactUrl(url)}: ${redactUrl((error as Error).message)}`);
  }
  if (req.checksum !== undefined) checkDigest(url, content, req.checksum);
  let name = '__unnamed__';
  try {
    const base = posix.basename(decodeURIComponent(new URL(url).pathname));
    if (base !== '' && base !== '.' && base !== '/') name = base;
  } catch {}
  const modified = Date.parse(response.headers.get('last-modified') ?? '');
  return {
    role: 'top-file',
    target: name,
    source: url,
    type: 'file',
    mode: req.chmod ?? 0o600,
    ...(req.chown ?? { uid: 0, gid: 0 }),
    mtimeMs: Number.isNaN(modified) ? Date.now() : modified,
    size: content.length,
    content,
    digest: `sha256:${createHash('sha256').update(content).digest('hex')}`,
  };
}

/** ADD --checksum of a download: `sha256:`, `sha384:` or `sha512:` and the hex digest of its content. */
function checkDigest(url: string, content: Buffer, checksum: string): void {
  const match = /^(sha256|sha384|sha512):([0-9a-fA-F]+)$/.exec(checksum);
  const lengths = { sha256: 64, sha384: 96, sha512: 128 } as const;
  const algorithm = match?.[1] as keyof typeof lengths | undefined;
  if (!match || !algorithm || (match[2] as string).length !== lengths[algorithm]) {
    throw new PetriError(
      `ADD --checksum=${checksum}: expected a digest, sha256: and 64 hex digits (or sha384:, sha512:)`,
    );
  }
  const actual = `${algorithm}:${createHash(algorithm).update(content).digest('hex')}`;
  if (actual !== checksum.toLowerCase()) {
    throw new PetriError(`ADD ${redactUrl(url)}: the content's digest is ${actual}, not ${checksum} (--checksum)`);
  }
}

/** ADD: whether a file is a tar archive (plain, gzip, bzip2, xz, zstd) that Docker would extract. */
async function archiveKind(entry: SelectedEntry): Promise<SelectedEntry['archive']> {
  const what = `ADD ${entry.source}`;
  const head = await readHead(entry.hostPath as string, 512);
  const compression = compressionOf(head);
  if (compression) {
    const why = cannotDecompress(compression, what);
    if (why) throw new PetriError(why);
  }
  const header = compression ? await decompressedHead(entry.hostPath as string, compression, what) : head;
  if (!isTarHeader(header)) return undefined;
  return compression ?? 'tar';
}

async function readHead(path: string, size: number): Promise<Buffer> {
  const file = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(size);
    const { bytesRead } = await file.read(buffer, 0, size, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await file.close();
  }
}

async function decompressedHead(path: string, compression: Compression, what: string): Promise<Buffer> {
  const input = createReadStream(path);
  const stream = decompressor(compression, what);
  input.on('error', (error) => (stream as unknown as Readable).destroy(error));
  input.pipe(stream as unknown as NodeJS.WritableStream);
  let head = Buffer.alloc(0);
  try {
    for await (const chunk of stream as unknown as AsyncIterable<Buffer>) {
      head = Buffer.concat([head, chunk]);
      if (head.length >= 512) break;
    }
  } catch (error) {
    // A missing decompressor is the machine's, not the file's: said. Anything else: not an archive, copied as it is.
    if (error instanceof PetriError) throw error;
  } finally {
    input.destroy();
    (stream as unknown as Readable).destroy();
  }
  return head;
}

/** Whether a block is a tar header, as Go's archive/tar checks it: not all zeros, a matching checksum. */
function isTarHeader(block: Buffer): boolean {
  if (block.length < 512 || block.subarray(0, 512).every((b) => b === 0)) return false;
  const field = block.subarray(148, 156).toString('latin1').replace(/\0.*$/s, '').trim();
  if (!/^[0-7]+$/.test(field)) return false;
  const stored = Number.parseInt(field, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < 512; i++) {
    const byte = i >= 148 && i < 156 ? 0x20 : (block[i] as number);
    unsigned += byte;
    signed += byte > 127 ? byte - 256 : byte;
  }
  return stored === unsigned || stored === signed;
}

/**
 * Writes a selection as the overlay upper dir `upper` (a fresh directory, the
 * step's layer) over `lower` (the parent snapshot's lower dirs, top first, or a
 * view of them), with BuildKit's rules: dest is a directory when it ends in
 * `/`, when there are several sources or a wildcard, or when it is one already;
 * a source directory's contents go into dest; existing parents of what is
 * written are copied up with their metadata, missing ones made 0755 (the
 * --chmod mode, the --chown owner). Never writes outside `upper`.
 */
export async function copyInto(
  req: CopyRequest,
  entries: readonly SelectedEntry[],
  lower: readonly string[] | LayeredView,
  upper: string,
): Promise<{ helper: boolean; entries: number }> {
  const writer = new UpperWriter(req, lower instanceof LayeredView ? lower : new LayeredView(lower), upper);
  try {
    await writer.write(entries);
    writer.finish();
  } finally {
    await writer.close();
  }
  return { helper: writer.helper, entries: writer.written };
}

/**
 * The merged tree of an upper dir being written over its lower dirs, as a view
 * (for resolving paths), and the writes into the upper dir. Every directory a
 * write goes through is made a real directory in `upper` first, so no write
 * ever follows a symlink.
 */
class UpperWriter implements FsView {
  readonly description = 'the destination';
  readonly #req: CopyRequest;
  readonly #lower: LayeredView;
  readonly #upper: string;
  /** The `petri-runner fsops` process for device nodes, fifos and xattrs: started by the first of them. */
  #fsops: FsOps | undefined;
  /** Entries written so far (files, directories, links, an archive's members). */
  written = 0;
  /** rel → what `upper/rel` is: a real directory (reached through real directories), missing, or something else. */
  readonly #state = new Map<string, 'dir' | 'missing' | 'other'>();
  /** Directory times to set at the end (writing into a directory changes its mtime). */
  readonly #times = new Map<string, number>();
  /** Source `dev:ino` → the upper path it was first written to. */
  readonly #links = new Map<string, string>();
  readonly #now = Date.now();
  /** Mode and owner of the directories a COPY makes (BuildKit: the --chmod mode, the --chown owner). */
  readonly #made: { mode: number; uid: number; gid: number };

  constructor(req: CopyRequest, lower: LayeredView, upper: string) {
    this.#req = req;
    this.#lower = lower;
    this.#upper = resolve(upper);
    mkdirSync(this.#upper, { recursive: true, mode: 0o755 });
    this.#made = { mode: req.chmod === undefined ? 0o755 : req.chmod & 0o777, ...(req.chown ?? { uid: 0, gid: 0 }) };
  }

  // FsView over the merged tree: upper first, then the lower dirs.
  lstat(path: string): Stats | undefined {
    const rel = cleanRel(path);
    if (rel === '') return lstatOrUndefined(this.#upper);
    const parent = this.#stateOf(parentOf(rel));
    if (parent === 'other') return undefined;
    if (parent === 'dir') {
      const stat = lstatOrUndefined(join(this.#upper, rel));
      if (stat) return stat;
    }
    return this.#lower.lstat(rel);
  }

  readdir(): string[] {
    return [];
  }

  hostPath(path: string): string {
    const rel = cleanRel(path);
    if (this.#inUpper(rel)) return join(this.#upper, rel);
    return this.#lower.hostPath(rel);
  }

  readlink(path: string): string {
    return readlinkSync(this.hostPath(path), 'utf8');
  }

  async write(entries: readonly SelectedEntry[]): Promise<void> {
    if (entries.length === 0) return;
    this.#copyUpRoot();
    const req = this.#req;
    const dest = posix.resolve('/', req.workdir || '/', req.dest);
    const sources = req.sources.length + (req.inline?.length ?? 0);
    const destIsDir =
      req.dest === '' ||
      req.dest === '.' ||
      req.dest.endsWith('/') ||
      req.dest.endsWith('/.') ||
      sources > 1 ||
      req.parents === true ||
      req.sources.some((s) => !isUrl(s) && hasWildcards(s));
    let current = req.dest;
    try {
      const destRel = resolvePath(this, dest);
      if (destIsDir) this.#ensureDir(destRel);
      for (const entry of entries) {
        current = entry.source || entry.target;
        await this.#place(entry, destRel, destIsDir);
      }
    } catch (error) {
      if (error instanceof PetriError) throw error;
      throw new PetriError(`${word(req)} failed: ${current}: ${(error as Error).message}`, { cause: error });
    }
  }

  /** Sets the times of the directories written: their source's, or as they were below, or now for new ones. */
  finish(): void {
    for (const [rel, ms] of this.#times) {
      const path = rel === '' ? this.#upper : join(this.#upper, rel);
      if (lstatOrUndefined(path)?.isDirectory()) lutimesSync(path, ms / 1000, ms / 1000);
    }
  }

  close(): Promise<void> {
    return this.#fsops?.close() ?? Promise.resolve();
  }

  /** Whether petri-runner made some of what was written (device nodes, fifos, xattrs), which Node's lstat cannot read back. */
  get helper(): boolean {
    return this.#fsops !== undefined;
  }

  async #ops(): Promise<FsOps> {
    if (!this.#fsops) {
      const { FsOps } = await import('../snapshot/fsops.js');
      this.#fsops ??= new FsOps();
    }
    return this.#fsops;
  }

  async #place(entry: SelectedEntry, destRel: string, destIsDir: boolean): Promise<void> {
    if (entry.role === 'top-file' && entry.archive) {
      this.#ensureDir(destRel);
      return this.#extract(entry, destRel);
    }
    if (entry.role === 'top-file') {
      const intoDir = destIsDir || this.lstat(destRel)?.isDirectory() === true;
      if (intoDir) this.#ensureDir(destRel);
      else this.#ensureDir(parentOf(destRel));
      return this.#writeEntry(intoDir ? join2(destRel, entry.target) : destRel, entry);
    }
    if (entry.role === 'top-dir') {
      const existing = this.lstat(destRel);
      if (existing && !existing.isDirectory()) throw this.#fail(`cannot copy to non-directory: /${destRel}`);
      this.#ensureDir(destRel);
      this.#times.set(destRel, entry.mtimeMs);
      return;
    }
    const rel = join2(destRel, entry.target);
    this.#ensureDir(parentOf(rel));
    return this.#writeEntry(rel, entry);
  }

  async #writeEntry(rel: string, entry: SelectedEntry): Promise<void> {
    this.written++;
    const path = join(this.#upper, rel);
    const existing = this.lstat(rel);
    if (entry.type === 'dir') {
      if (existing && !existing.isDirectory()) throw this.#fail(`cannot copy to non-directory: /${rel}`);
      if (!this.#inUpper(rel)) mkdirSync(path, { mode: 0o700 });
      this.#state.set(rel, 'dir');
      this.#attributes(path, entry);
      this.#times.set(rel, entry.mtimeMs);
      return;
    }
    if (existing?.isDirectory()) throw this.#fail(`cannot replace the directory /${rel} with a file`);
    this.#checkName(rel);
    this.#remove(rel);
    switch (entry.type) {
      case 'file': {
        const first = entry.link && this.#links.get(entry.link);
        if (first && lstatOrUndefined(first)?.isFile()) {
          linkSync(first, path);
          this.#state.set(rel, 'other');
          return;
        }
        if (entry.content) {
          const file = await open(
            path,
            constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
            0o600,
          );
          try {
            await file.writeFile(entry.content);
          } finally {
            await file.close();
          }
        } else {
          await copyFile(entry.hostPath as string, path, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
        }
        if (entry.link) this.#links.set(entry.link, path);
        break;
      }
      case 'symlink':
        symlinkSync(entry.linkname as string, path);
        break;
      case 'char':
      case 'block':
      case 'fifo': {
        const rdev = entry.rdev ?? 0;
        const type = entry.type === 'char' ? 'c' : entry.type === 'block' ? 'b' : 'p';
        await (await this.#ops()).mknod(path, type, devMajor(rdev), devMinor(rdev), entry.mode);
        break;
      }
      default:
        return; // sockets: nothing to copy
    }
    this.#state.set(rel, 'other');
    this.#attributes(path, entry);
    const seconds = entry.mtimeMs / 1000;
    lutimesSync(path, seconds, seconds);
  }

  /** Owner, then mode (chown clears setuid): never on a symlink's target. */
  #attributes(path: string, entry: { type: EntryType; uid: number; gid: number; mode: number }): void {
    lchownSync(path, entry.uid, entry.gid);
    if (entry.type !== 'symlink') chmodSync(path, entry.mode);
  }

  /**
   * Makes `rel` (resolved, in the merged tree) a real directory in `upper`:
   * components that exist below are copied up with their mode, owner and mtime;
   * missing ones are made with the COPY's directory mode and owner.
   */
  #ensureDir(rel: string, made = this.#made): void {
    if (rel === '') return;
    let current = '';
    for (const part of rel.split('/')) {
      current = join2(current, part);
      if (this.#stateOf(current) === 'dir') continue;
      const stat = this.lstat(current);
      if (stat && !stat.isDirectory()) throw this.#fail(`/${current} is not a directory`);
      const path = join(this.#upper, current);
      mkdirSync(path, { mode: 0o700 });
      this.#state.set(current, 'dir');
      if (stat) {
        chownSync(path, stat.uid, stat.gid);
        chmodSync(path, stat.mode & 0o7777);
        this.#times.set(current, stat.mtimeMs);
      } else {
        chownSync(path, made.uid, made.gid);
        chmodSync(path, made.mode);
        this.#times.set(current, this.#now);
      }
    }
  }

  /** overlayfs shows the upper dir's own mode and owner for `/`: give it the lower root's. */
  #copyUpRoot(): void {
    const below = this.#lower.lstat('');
    if (!below) return;
    chownSync(this.#upper, below.uid, below.gid);
    chmodSync(this.#upper, below.mode & 0o7777);
    this.#times.set('', below.mtimeMs);
  }

  /** Removes what `upper/rel` holds (the lower dirs' entry needs nothing: the new one hides it). */
  #remove(rel: string): void {
    const path = join(this.#upper, rel);
    const stat = this.#inUpper(rel) ? lstatOrUndefined(path) : undefined;
    if (!stat) return;
    if (stat.isDirectory()) {
      removeTree(path);
      this.#state.clear();
      for (const key of this.#times.keys()) if (key === rel || key.startsWith(`${rel}/`)) this.#times.delete(key);
    } else unlinkSync(path);
  }

  /** An upper dir holds overlay whiteouts, never files named like the OCI ones: those would delete when exported. */
  #checkName(rel: string): void {
    if (posix.basename(rel).startsWith(WHITEOUT_PREFIX)) {
      throw this.#fail(`/${rel}: names starting with ${WHITEOUT_PREFIX} are reserved for layer whiteouts`);
    }
  }

  #inUpper(rel: string): boolean {
    if (rel === '') return true;
    return this.#stateOf(parentOf(rel)) === 'dir' && lstatOrUndefined(join(this.#upper, rel)) !== undefined;
  }

  #stateOf(rel: string): 'dir' | 'missing' | 'other' {
    if (rel === '') return 'dir';
    const known = this.#state.get(rel);
    if (known) return known;
    const parent = this.#stateOf(parentOf(rel));
    let state: 'dir' | 'missing' | 'other' = parent;
    if (parent === 'dir') {
      const stat = lstatOrUndefined(join(this.#upper, rel));
      state = !stat ? 'missing' : stat.isDirectory() ? 'dir' : 'other';
    }
    this.#state.set(rel, state);
    return state;
  }

  #fail(message: string): PetriError {
    return new PetriError(`${word(this.#req)} failed: ${message}`);
  }

  /** ADD of a local tar: its entries written into dest, like Docker's untar (owners kept unless --chown). */
  async #extract(entry: SelectedEntry, destRel: string): Promise<void> {
    // tar-stream is loaded only when an archive is extracted: a cached build never needs it.
    const { tarStream } = await import('../snapshot/tar-pax.js');
    const stages: NodeJS.ReadWriteStream[] = [];
    if (entry.archive && entry.archive !== 'tar') stages.push(decompressor(entry.archive, `ADD ${entry.source}`));
    const extract = tarStream().extract();
    const input = createReadStream(entry.hostPath as string);
    const feeding = pipeline([input, ...stages, extract as unknown as NodeJS.WritableStream]);
    feeding.catch(() => {}); // awaited below
    const dirTimes: [string, number][] = [];
    try {
      for await (const item of extract) {
        const body = item as unknown as Readable;
        try {
          await this.#untarEntry(entry, destRel, item.header as TarHeader, body, dirTimes);
        } finally {
          body.resume();
        }
      }
      await feeding;
    } catch (error) {
      const fed = await feeding.then(
        () => undefined,
        (e: NodeJS.ErrnoException) => e,
      );
      const cause = fed && fed.code !== 'ERR_STREAM_PREMATURE_CLOSE' ? fed : error;
      if (cause instanceof PetriError) throw cause;
      throw this.#fail(`cannot extract ${entry.source}: ${(cause as Error).message}`);
    }
    for (const [rel, ms] of dirTimes) this.#times.set(rel, ms);
  }

  async #untarEntry(
    archive: SelectedEntry,
    destRel: string,
    header: TarHeader,
    body: Readable,
    dirTimes: [string, number][],
  ): Promise<void> {
    this.written++;
    const name = cleanPath(header.name);
    if (name === '..' || name.startsWith('../') || name.startsWith('/../')) {
      throw this.#fail(`${archive.source}: the archive entry "${header.name}" climbs out of the destination`);
    }
    const inside = name === '.' || name === '/' ? '' : name.replace(/^\/+/, '');
    const base = posix.basename(inside);
    if (base.startsWith(WHITEOUT_META_PREFIX)) return;
    // Docker untars chrooted into dest: symlinks in the entries' parents resolve inside dest.
    const dest = this.#subView(destRel);
    const parent = join2(destRel, resolvePath(dest, parentOf(inside)));
    this.#ensureDir(parent, { mode: 0o755, uid: 0, gid: 0 });
    const rel = inside === '' ? destRel : join2(parent, base);
    const path = rel === '' ? this.#upper : join(this.#upper, rel);
    const owner = this.#req.chown ?? tarOwner(header);
    const mode = (header.mode ?? 0o644) & 0o7777;
    const mtimeMs = (header.mtime ?? new Date(0)).getTime();
    if (header.type === 'directory') {
      const existing = this.lstat(rel);
      if (existing && !existing.isDirectory()) this.#remove(rel);
      if (!this.#inUpper(rel) || !lstatOrUndefined(path)?.isDirectory()) mkdirSync(path, { mode: 0o700 });
      this.#state.set(rel, 'dir');
      this.#attributes(path, { type: 'dir', mode, ...owner });
      await this.#xattrs(path, header);
      dirTimes.push([rel, mtimeMs]);
      return;
    }
    if (rel === destRel) throw this.#fail(`${archive.source}: the archive's root is not a directory`);
    this.#checkName(rel);
    this.#remove(rel);
    this.#state.set(rel, 'other');
    switch (header.type) {
      case 'file':
      case 'contiguous-file': {
        const file = await open(
          path,
          constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
          0o600,
        );
        try {
          for await (const chunk of body as AsyncIterable<Buffer>) {
            for (let offset = 0; offset < chunk.length; ) offset += (await file.write(chunk, offset)).bytesWritten;
          }
        } finally {
          await file.close();
        }
        break;
      }
      case 'symlink':
        symlinkSync(header.linkname ?? '', path);
        break;
      case 'link': {
        const targetRel = join2(destRel, resolvePath(dest, cleanRel(header.linkname ?? ''), false));
        const target = this.lstat(targetRel);
        if (!target || target.isDirectory()) {
          throw this.#fail(
            `${archive.source}: the hard link "${header.name}" points to "${header.linkname}", which is not an earlier file`,
          );
        }
        if (this.#inUpper(targetRel)) linkSync(join(this.#upper, targetRel), path);
        else {
          await copyFile(this.#lower.hostPath(targetRel), path, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
          this.#attributes(path, { type: 'file', mode: target.mode & 0o7777, uid: target.uid, gid: target.gid });
          lutimesSync(path, target.mtimeMs / 1000, target.mtimeMs / 1000);
        }
        return;
      }
      case 'character-device':
      case 'block-device':
      case 'fifo': {
        const type = header.type === 'fifo' ? 'p' : header.type === 'block-device' ? 'b' : 'c';
        await (await this.#ops()).mknod(path, type, header.devmajor ?? 0, header.devminor ?? 0, mode);
        break;
      }
      default:
        this.#state.delete(rel);
        return;
    }
    const kind = header.type === 'symlink' ? 'symlink' : 'file';
    this.#attributes(path, { type: kind, mode, ...owner });
    await this.#xattrs(path, header);
    lutimesSync(path, mtimeMs / 1000, mtimeMs / 1000);
  }

  /** The merged tree below `rel`, as a view rooted there. */
  #subView(rel: string): FsView {
    return {
      description: `/${rel}`,
      lstat: (path) => this.lstat(join2(rel, cleanRel(path))),
      readdir: () => [],
      hostPath: (path) => this.hostPath(join2(rel, cleanRel(path))),
      readlink: (path) => this.readlink(join2(rel, cleanRel(path))),
    };
  }

  /** PAX xattrs, best effort as Docker does (overlayfs' own never). */
  async #xattrs(path: string, header: TarHeader): Promise<void> {
    const { XATTR_PAX_PREFIX } = await import('../snapshot/tar-pax.js');
    for (const [key, value] of Object.entries(header.pax ?? {})) {
      if (!key.startsWith(XATTR_PAX_PREFIX)) continue;
      const name = key.slice(XATTR_PAX_PREFIX.length);
      if (name.startsWith(OVERLAY_XATTR_PREFIX)) continue;
      await (await this.#ops()).setxattr(path, name, Buffer.from(value, 'latin1')).catch(() => {});
    }
  }
}

function tarOwner(header: TarHeader): { uid: number; gid: number } {
  const uid = header.pax?.uid === undefined ? header.uid : Number(header.pax.uid);
  const gid = header.pax?.gid === undefined ? header.gid : Number(header.pax.gid);
  return { uid: Number.isSafeInteger(uid) ? (uid as number) : 0, gid: Number.isSafeInteger(gid) ? (gid as number) : 0 };
}

const parentOf = (rel: string) => {
  const slash = rel.lastIndexOf('/');
  return slash < 0 ? '' : rel.slice(0, slash);
};

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path, { throwIfNoEntry: false });
  } catch {
    return undefined; // ENOTDIR, EACCES…
  }
}
