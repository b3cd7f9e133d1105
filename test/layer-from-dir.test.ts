import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chownSync,
  createReadStream,
  createWriteStream,
  linkSync,
  lutimesSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { Container } from '../src/runtime/container.js';
import { FsOps } from '../src/snapshot/fsops.js';
import { diffUpper, type ScanEntry, scanTree, unpackLayer, writeLayer } from '../src/snapshot/index.js';
import { scanOwnTree } from '../src/snapshot/scan.js';
import { type TarHeader, tarStream } from '../src/snapshot/tar-pax.js';
import { describeKernel } from './helpers/kernel.js';
import { busyboxRootfs } from './helpers/rootfs.js';

const CAPABILITY = Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const BINARY = Buffer.from([0, 1, 2, 0xff, 0x80, 0x0a, 0x3d]);
const b64 = (bytes: Buffer | string) => Buffer.from(bytes).toString('base64');

/** A tree with every kind of entry petri carries; all mtimes `mtime` (seconds). */
async function makeTree(root: string, mtime: number): Promise<void> {
  const fsops = new FsOps();
  mkdirSync(join(root, 'bin'), { recursive: true });
  writeFileSync(join(root, 'bin/su'), '#!/bin/sh\n', { mode: 0o4755 });
  mkdirSync(join(root, 'home/user'), { recursive: true, mode: 0o700 });
  writeFileSync(join(root, 'home/user/file'), 'data');
  chownSync(join(root, 'home/user'), 1000, 1000);
  chownSync(join(root, 'home/user/file'), 1000, 1001);
  await fsops.setxattr(join(root, 'home/user/file'), 'user.note', Buffer.from('text'));
  await fsops.setxattr(join(root, 'home/user/file'), 'trusted.bin', BINARY);
  await fsops.setxattr(join(root, 'home/user/file'), 'security.capability', CAPABILITY);
  mkdirSync(join(root, 'lib'));
  writeFileSync(join(root, 'lib/a'), 'shared');
  linkSync(join(root, 'lib/a'), join(root, 'lib/b'));
  symlinkSync('a', join(root, 'lib/link'));
  mkdirSync(join(root, 'dev'));
  await fsops.mknod(join(root, 'dev/tty0'), 'c', 4, 0, 0o620);
  await fsops.mknod(join(root, 'dev/sda'), 'b', 8, 0, 0o660);
  mkdirSync(join(root, 'run'));
  await fsops.mknod(join(root, 'run/fifo'), 'p', 0, 0, 0o600);
  writeFileSync(join(root, 'big'), 'big uid');
  chownSync(join(root, 'big'), 300_000, 300_001);
  await fsops.close();
  for (const entry of (await scanTree(root)).reverse()) {
    const path = join(root, entry.path);
    if (entry.type === 'l') lutimesSync(path, mtime, mtime);
    else utimesSync(path, mtime, mtime);
  }
}

/** What must survive a round trip (inodes compared as hard-link groups). */
function comparable(entries: ScanEntry[]) {
  const firstOfInode = new Map<number, string>();
  return entries.map(({ ino, size, ...rest }) => {
    if (!firstOfInode.has(ino)) firstOfInode.set(ino, rest.path);
    return { ...rest, size: rest.type === 'd' ? 0 : size, sameAs: firstOfInode.get(ino) };
  });
}

async function writeTo(dir: string, file: string, epoch?: number) {
  const out = createWriteStream(file);
  return writeLayer(dir, out, epoch === undefined ? {} : { sourceDateEpoch: epoch });
}

async function tarEntries(file: string): Promise<TarHeader[]> {
  const headers: TarHeader[] = [];
  const extract = tarStream().extract();
  createReadStream(file).pipe(extract as unknown as NodeJS.WritableStream);
  for await (const entry of extract) {
    headers.push(entry.header as TarHeader);
    entry.resume();
  }
  return headers;
}

/** Writes the tree's layer with petri-runner's scan and with scanOwnTree, checks they match; the first tar's path. */
async function sameLayerFromEitherScan(root: string, dir: string): Promise<string> {
  const [byC, byNode] = [join(dir, 'c.tar'), join(dir, 'node.tar')];
  const c = await writeLayer(root, createWriteStream(byC), { sourceDateEpoch: 1 });
  const node = await writeLayer(root, createWriteStream(byNode), {
    sourceDateEpoch: 1,
    scan: async (d) => scanOwnTree(d),
  });
  expect(node).toEqual(c);
  expect(readFileSync(byNode).equals(readFileSync(byC))).toBe(true);
  return byC;
}

describeKernel('writeLayer and diffUpper', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ptest-commit-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('round-trips a tree: dir -> layer tar -> unpack -> the same tree', async () => {
    const src = join(dir, 'src');
    await makeTree(src, 1_650_000_000);
    const tar = join(dir, 'layer.tar');
    const written = await writeTo(src, tar);
    const bytes = readFileSync(tar);
    expect(written).toEqual({
      diffId: `sha256:${createHash('sha256').update(bytes).digest('hex')}`,
      size: bytes.length,
      opaque: [],
    });

    const out = join(dir, 'out');
    expect(await unpackLayer(createReadStream(tar), 'application/vnd.oci.image.layer.v1.tar', out)).toEqual(written);
    const before = comparable(await scanTree(src));
    expect(comparable(await scanTree(out))).toEqual(before);
    expect(before.find((e) => e.path === 'lib/b')?.sameAs).toBe('lib/a');
    expect(before.find((e) => e.path === 'home/user/file')?.xattrs?.['security.capability']).toBe(b64(CAPABILITY));

    // GNU tar reads it the same way (binary xattrs, big ids, devices, hard links).
    const gnu = join(dir, 'gnu');
    mkdirSync(gnu);
    execFileSync('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', tar, '-C', gnu]);
    const byGnu = comparable(await scanTree(gnu));
    const pick = (entries: typeof before, path: string) => entries.find((e) => e.path === path);
    for (const path of ['home/user/file', 'big', 'lib/b', 'dev/sda', 'bin/su', 'run/fifo']) {
      expect(pick(byGnu, path)).toEqual(pick(before, path));
    }
  });

  it('writes the same bytes in memory as through tar-stream, and scans through an FsOps too', async () => {
    const root = join(dir, 'tree');
    await makeTree(root, 1_650_000_000);
    const long = `${'deep/'.repeat(30)}name-longer-than-a-ustar-header-holds`;
    mkdirSync(join(root, long, '..'), { recursive: true });
    writeFileSync(join(root, long), 'x'.repeat(1000));
    symlinkSync(`../${'t'.repeat(120)}`, join(root, 'lib/long-link'));
    const fsops = new FsOps();
    await fsops.whiteout(join(root, 'lib/gone'));
    await fsops.opaque(join(root, 'deep'));
    const [streamed, inMemory, scanned] = [join(dir, 's.tar'), join(dir, 'm.tar'), join(dir, 'f.tar')];
    const a = await writeLayer(root, createWriteStream(streamed), { sourceDateEpoch: 1, inMemoryMax: 0 });
    const b = await writeLayer(root, createWriteStream(inMemory), { sourceDateEpoch: 1 });
    await expect(fsops.scan(join(dir, 'missing'))).rejects.toThrow(/cannot read the directory tree .*missing: scan/);
    const c = await writeLayer(root, createWriteStream(scanned), { sourceDateEpoch: 1, scan: (d) => fsops.scan(d) });
    await fsops.close();
    expect(readFileSync(inMemory).equals(readFileSync(streamed))).toBe(true);
    expect(readFileSync(scanned).equals(readFileSync(streamed))).toBe(true);
    expect(b).toEqual(a);
    expect(c).toEqual(a);
    expect(a.opaque).toEqual(['deep']);
    expect((await tarEntries(inMemory)).map((h) => h.name)).toContain(long);
  });

  it('reads a tree in Node (scanOwnTree) as petri-runner scan does, xattrs aside', async () => {
    const root = join(dir, 'tree');
    await makeTree(root, 1_650_000_000);
    // Names whose order differs between UTF-16 (JavaScript's sort) and UTF-8 bytes (strcmp), and case.
    for (const name of ['Z', 'a', 'é', '\u{1F600}', '\uE000', 'a b', 'a-b', 'a.b'])
      writeFileSync(join(root, name), name);
    mkdirSync(join(root, 'e\u0301'));
    // A time before 1970 with a fraction: whole seconds rounded down, as tv_sec.
    execFileSync('touch', ['-h', '-d', '@-1.5', join(root, 'a')]); // Node's utimes cannot set it
    utimesSync(join(root, 'Z'), 1_650_000_000.999, 1_650_000_000.999);
    const byRunner = await scanTree(root);
    expect(byRunner.find((e) => e.path === 'a')?.mtime).toBe(-2);
    const names = byRunner.filter((e) => !e.path.includes('/')).map((e) => e.path);
    expect(names.indexOf('\uE000')).toBeLessThan(names.indexOf('\u{1F600}'));
    const withoutXattrs = byRunner.map(({ xattrs: _, ...rest }) => rest);
    expect(scanOwnTree(root)).toEqual(withoutXattrs);
    expect(() => scanOwnTree(join(dir, 'missing'))).toThrow(/cannot read the directory tree .*missing: ENOENT/);
    // The layer it writes is then the same, once the xattrs are gone from the tree.
    const file = join(root, 'home/user/file');
    rmSync(file);
    writeFileSync(file, 'data');
    chownSync(file, 1000, 1001);
    await sameLayerFromEitherScan(root, dir);
  });

  it("reads a container's upper dir in Node when its runner found nothing lstat misses (the RUN step's report)", async () => {
    const rootfs = await busyboxRootfs();
    // A lower layer of its own, with a directory to replace and files to change and delete.
    const lower = join(dir, 'lower');
    mkdirSync(join(lower, 'data', 'sub'), { recursive: true });
    writeFileSync(join(lower, 'data', 'old.txt'), 'old\n');
    writeFileSync(join(lower, 'data', 'sub', 'deep.txt'), 'deep\n');
    // Files, a directory, a symlink, a changed file (its directory copied up, with overlayfs' origin xattr), a
    // deleted one (a whiteout).
    const container = Container.create({
      rootfs: [lower, rootfs],
      command: [
        '/bin/sh',
        '-c',
        'mkdir -p /made/d && echo x > /made/f && ln -s f /made/l && echo new >> /data/old.txt && rm /data/sub/deep.txt',
      ],
      keep: true,
      reportUpper: true,
    });
    try {
      await container.start({ stdin: 'ignore' });
      expect((await container.wait()).exitCode).toBe(0);
      const upper = join(container.dir, 'upper');
      const entries = execFileSync('find', [upper, '-mindepth', '1'], { encoding: 'utf8' }).trim().split('\n');
      expect(container.upper).toEqual({ plain: true, entries: entries.length });
      for (const stub of ['proc', 'sys', 'dev']) rmSync(join(upper, stub), { recursive: true, force: true });
      await sameLayerFromEitherScan(upper, dir);
    } finally {
      await container.remove();
    }
    // What lstat misses: a directory replaced (overlayfs marks it opaque), a name that is not UTF-8, too many.
    for (const script of [
      'rm -rf /data && mkdir /data',
      `touch "$(printf '/\\377')"`,
      'mkdir /many && cd /many && touch $(seq 1 1001)',
      // deeper than Node's lstat of whole paths can go (directories only: petri-runner reads them relatively)
      `N=$(printf '%0250d' 0); for i in $(seq 14); do mkdir $N && cd $N || exit 1; done`,
    ]) {
      const other = Container.create({
        rootfs: [lower, rootfs],
        command: ['/bin/sh', '-c', script],
        keep: true,
        reportUpper: true,
      });
      try {
        await other.start({ stdin: 'ignore' });
        expect((await other.wait()).exitCode).toBe(0);
        expect(other.upper, script).toEqual({ plain: false });
      } finally {
        await other.remove();
      }
    }
  });

  it('leaves out the xattrs the host adds by itself (an inherited ACL): the same layer from either scan', async () => {
    const root = join(dir, 'tree');
    mkdirSync(root);
    // A default ACL (user::rwx user:1000:r-x group::r-x mask::r-x other::r-x), as a PETRI_ROOT may have.
    const entry = (tag: number, perm: number, id = 0xffffffff) => {
      const bytes = Buffer.alloc(8);
      bytes.writeUInt16LE(tag, 0);
      bytes.writeUInt16LE(perm, 2);
      bytes.writeUInt32LE(id, 4);
      return bytes;
    };
    const acl = Buffer.concat([
      Buffer.from([2, 0, 0, 0]),
      entry(0x01, 7),
      entry(0x02, 5, 1000),
      entry(0x04, 5),
      entry(0x10, 5),
      entry(0x20, 5),
    ]);
    const fsops = new FsOps();
    await fsops.setxattr(root, 'system.posix_acl_default', acl);
    await fsops.close();
    mkdirSync(join(root, 'sub'));
    writeFileSync(join(root, 'sub/file'), 'inherits the ACL');
    const byRunner = await scanTree(root);
    expect(Object.keys(byRunner.find((e) => e.path === 'sub/file')?.xattrs ?? {})).toContain('system.posix_acl_access');
    const byC = await sameLayerFromEitherScan(root, dir);
    const pax = (await tarEntries(byC)).flatMap((h) => Object.keys(h.pax ?? {}));
    expect(pax.filter((key) => key.includes('acl'))).toEqual([]);
    // user.* xattrs are kept (read by petri-runner's scan, written into the layer).
    const top = join(dir, 'top');
    mkdirSync(top);
    writeFileSync(join(top, 'f'), 'x');
    const ops = new FsOps();
    await ops.setxattr(join(top, 'f'), 'user.kept', Buffer.from('yes'));
    await ops.close();
    await writeLayer(top, createWriteStream(join(dir, 'kept.tar')));
    expect((await tarEntries(join(dir, 'kept.tar'))).find((h) => h.name === 'f')?.pax).toHaveProperty(
      'SCHILY.xattr.user.kept',
      'yes',
    );
  });

  it('answers a scan that fails mid-entry (a name that is not UTF-8) with an error, not silence', async () => {
    const bad = join(dir, 'bad');
    mkdirSync(bad);
    // A newline in it too: the error line that names it must stay one line.
    writeFileSync(Buffer.concat([Buffer.from(`${bad}/`), Buffer.from([0x61, 0x0a, 0xff])]), 'x');
    mkdirSync(join(dir, 'ok'));
    writeFileSync(join(dir, 'ok/good'), 'g');
    const fsops = new FsOps();
    await expect(fsops.scan(bad)).rejects.toThrow(/not UTF-8/);
    // The process still answers in step.
    expect((await fsops.scan(join(dir, 'ok'))).map((e) => e.path)).toEqual(['good']);
    await fsops.close();
  });

  it('turns overlay whiteouts and opaque dirs into OCI ones, and back', async () => {
    const upper = join(dir, 'upper');
    mkdirSync(join(upper, 'a'), { recursive: true });
    mkdirSync(join(upper, 'o'));
    writeFileSync(join(upper, 'o/new'), 'n');
    const fsops = new FsOps();
    await fsops.whiteout(join(upper, 'a/gone'));
    await fsops.opaque(join(upper, 'o'));
    await fsops.close();
    const tar = join(dir, 'layer.tar');
    const written = await writeTo(upper, tar, 1_000_000_000);
    expect(written.opaque).toEqual(['o']);
    const headers = await tarEntries(tar);
    expect(headers.map((h) => h.name)).toEqual(['a/', 'a/.wh.gone', 'o/', 'o/.wh..wh..opq', 'o/new']);
    expect(headers.find((h) => h.name === 'a/.wh.gone')).toMatchObject({ type: 'file', size: 0 });
    expect(headers.every((h) => !Object.keys(h.pax ?? {}).some((k) => k.includes('overlay')))).toBe(true);
    expect(headers.every((h) => h.uname === '' && h.gname === '')).toBe(true);

    const out = join(dir, 'out');
    const unpacked = await unpackLayer(createReadStream(tar), 'application/vnd.oci.image.layer.v1.tar', out);
    expect(unpacked.opaque).toEqual(['o']);
    const tree = new Map((await scanTree(out)).map((e) => [e.path, e]));
    expect(tree.get('a/gone')).toMatchObject({ type: 'c', rdev: [0, 0] });
    expect(tree.get('o')?.xattrs).toEqual({ 'trusted.overlay.opaque': b64('y') });
  });

  it('gives the same digest for the same change made at different times', async () => {
    const epoch = 1_700_000_000;
    const [one, two] = [join(dir, 'one'), join(dir, 'two')];
    await makeTree(one, epoch + 100);
    await makeTree(two, epoch + 5000);
    const first = await writeTo(one, join(dir, 'one.tar'), epoch);
    const second = await writeTo(two, join(dir, 'two.tar'), epoch);
    expect(second.diffId).toBe(first.diffId);
    const headers = await tarEntries(join(dir, 'one.tar'));
    expect(headers.every((h) => h.mtime.getTime() <= epoch * 1000)).toBe(true);
    // Without the clamp the times show, and the digests differ.
    expect((await writeTo(one, join(dir, 'three.tar'))).diffId).not.toBe(first.diffId);
  });

  it('lists changes like docker diff', async () => {
    const [base, mid, upper] = [join(dir, 'base'), join(dir, 'mid'), join(dir, 'upper')];
    const files = (root: string, paths: string[]) => {
      for (const path of paths) {
        mkdirSync(path.endsWith('/') ? join(root, path) : join(root, path, '..'), { recursive: true });
        if (!path.endsWith('/')) writeFileSync(join(root, path), path);
      }
    };
    files(base, ['etc/passwd', 'etc/hostname', 'etc/motd', 'usr/bin/ls', 'var/log/', 'srv/old']);
    files(mid, ['etc/issue']);
    files(upper, ['etc/passwd', 'etc/new', 'etc/motd', 'etc/issue', 'opt/app/file', 'var/log/x', 'srv/new']);
    const fsops = new FsOps();
    await fsops.whiteout(join(mid, 'etc/motd')); // deleted in the middle layer: new again on top
    await fsops.whiteout(join(upper, 'etc/hostname'));
    await fsops.opaque(join(upper, 'srv'));
    await fsops.close();
    expect(await diffUpper(upper, [mid, base])).toEqual([
      { kind: 'C', path: '/etc' },
      { kind: 'D', path: '/etc/hostname' },
      { kind: 'C', path: '/etc/issue' },
      { kind: 'A', path: '/etc/motd' },
      { kind: 'A', path: '/etc/new' },
      { kind: 'C', path: '/etc/passwd' },
      { kind: 'A', path: '/opt' },
      { kind: 'A', path: '/opt/app' },
      { kind: 'A', path: '/opt/app/file' },
      { kind: 'C', path: '/srv' },
      { kind: 'A', path: '/srv/new' },
      { kind: 'C', path: '/var' },
      { kind: 'C', path: '/var/log' },
      { kind: 'A', path: '/var/log/x' },
    ]);
  });
});
