import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import { FsOps } from '../src/snapshot/fsops.js';
import { type ScanEntry, scanTree, unpackLayer } from '../src/snapshot/index.js';
import { type TarHeader, tarStream } from '../src/snapshot/tar-pax.js';
import { describeKernel } from './helpers/kernel.js';

type Item = Partial<TarHeader> & { name: string; body?: string };

/** A tar archive built in memory with tar-stream. */
async function tarOf(items: Item[]): Promise<Buffer> {
  const pack = tarStream().pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of pack) chunks.push(chunk as Buffer);
  })();
  for (const { body, ...header } of items) {
    await new Promise<void>((resolve, reject) => {
      const h = { mtime: new Date(1_600_000_000_000), ...header } as Parameters<typeof pack.entry>[0];
      pack.entry(h, body ?? '', (error) => (error ? reject(error) : resolve()));
    });
  }
  pack.finalize();
  await collected;
  return Buffer.concat(chunks);
}

const unpack = (tar: Buffer, target: string, mediaType = 'application/vnd.oci.image.layer.v1.tar') =>
  unpackLayer(Readable.from([tar]), mediaType, target);

const byPath = (entries: ScanEntry[]) => new Map(entries.map((e) => [e.path, e]));
const b64 = (bytes: Buffer | string) => Buffer.from(bytes).toString('base64');

// A valid VFS_CAP_REVISION_2 value: cap_net_raw (13) permitted and effective.
const CAPABILITY = Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const BINARY = Buffer.from([0, 1, 2, 0xff, 0x80, 0x0a, 0x3d]);

describeKernel('unpackLayer', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ptest-unpack-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const regular: Item[] = [
    { name: './', type: 'directory', mode: 0o751 },
    { name: 'etc/', type: 'directory', mode: 0o755 },
    {
      name: 'etc/hello',
      body: 'hello\n',
      mode: 0o640,
      uid: 1000,
      gid: 2000,
      mtime: new Date(1_500_000_000_000),
      pax: {
        'SCHILY.xattr.user.note': 'text',
        'SCHILY.xattr.trusted.bin': BINARY.toString('latin1'),
        'SCHILY.xattr.security.capability': CAPABILITY.toString('latin1'),
      },
    },
    { name: 'etc/link', type: 'symlink', linkname: 'hello', uid: 5, gid: 6 },
    { name: 'etc/hard', type: 'link', linkname: 'etc/hello' },
    { name: 'run/fifo', type: 'fifo', mode: 0o620 },
    { name: 'dev/null2', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
    { name: './bin/su', body: '#!/bin/sh\n', mode: 0o4755 },
    { name: 'tmp/', type: 'directory', mode: 0o1777, mtime: new Date(1_400_000_000_000) },
  ];

  for (const compression of ['plain', 'gzip'] as const) {
    it(`writes files, dirs, links, devices, modes, owners, times and xattrs (${compression})`, async () => {
      const tar = await tarOf(regular);
      const blob = compression === 'gzip' ? zlib.gzipSync(tar) : tar;
      const target = join(dir, 'layer');
      const result = await unpack(blob, target, 'application/vnd.oci.image.layer.v1.tar');
      expect(result).toEqual({
        diffId: `sha256:${createHash('sha256').update(tar).digest('hex')}`,
        size: tar.length,
        opaque: [],
      });

      const tree = byPath(await scanTree(target));
      expect([...tree.keys()].sort()).toEqual(
        [
          'bin',
          'bin/su',
          'dev',
          'dev/null2',
          'etc',
          'etc/hard',
          'etc/hello',
          'etc/link',
          'run',
          'run/fifo',
          'tmp',
        ].sort(),
      );
      expect(readFileSync(join(target, 'etc/hello'), 'utf8')).toBe('hello\n');
      expect(tree.get('etc/hello')).toMatchObject({
        type: 'f',
        mode: 0o640,
        uid: 1000,
        gid: 2000,
        mtime: 1_500_000_000,
        nlink: 2,
        xattrs: { 'user.note': b64('text'), 'trusted.bin': b64(BINARY), 'security.capability': b64(CAPABILITY) },
      });
      expect(tree.get('etc/hard')?.ino).toBe(tree.get('etc/hello')?.ino);
      expect(tree.get('etc/link')).toMatchObject({ type: 'l', link: 'hello', uid: 5, gid: 6, mtime: 1_600_000_000 });
      expect(tree.get('run/fifo')).toMatchObject({ type: 'p', mode: 0o620 });
      expect(tree.get('dev/null2')).toMatchObject({ type: 'c', rdev: [1, 3], mode: 0o666 });
      expect(tree.get('bin/su')).toMatchObject({ type: 'f', mode: 0o4755 });
      expect(tree.get('tmp')).toMatchObject({ type: 'd', mode: 0o1777, mtime: 1_400_000_000 });
      expect(tree.get('etc')).toMatchObject({ type: 'd', mode: 0o755, mtime: 1_600_000_000 });
      expect(statSync(target).mode & 0o7777).toBe(0o751);
    });
  }

  it('reads binary xattrs byte for byte as GNU tar writes them', async () => {
    const src = join(dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'f'), 'f');
    const fsops = new FsOps();
    await fsops.setxattr(join(src, 'f'), 'trusted.bin', BINARY);
    await fsops.setxattr(join(src, 'f'), 'security.capability', CAPABILITY);
    await fsops.close();
    const tar = execFileSync('tar', ['--xattrs', '--xattrs-include=*', '-C', src, '-cf', '-', 'f']);
    await unpack(tar, join(dir, 'layer'));
    expect(byPath(await scanTree(join(dir, 'layer'))).get('f')?.xattrs).toEqual({
      'trusted.bin': b64(BINARY),
      'security.capability': b64(CAPABILITY),
    });
  });

  it('reports corrupt and truncated archives', async () => {
    const tar = await tarOf([{ name: 'f', body: 'x'.repeat(3000) }]);
    const gzip = zlib.gzipSync(tar);
    gzip[20] = (gzip[20] as number) ^ 0xff;
    await expect(unpack(gzip, join(dir, 'a'))).rejects.toThrow(/cannot unpack a layer .* into .*: /);
    await expect(unpack(tar.subarray(0, 1024), join(dir, 'b'))).rejects.toThrow(/Unexpected end of data/);
    await expect(unpack(Buffer.from('not a tar at all'.repeat(64)), join(dir, 'c'))).rejects.toThrow(/Invalid tar/);
  });

  it('refuses zstd clearly where Node.js cannot decompress it, and unpacks it where it can', async () => {
    const tar = await tarOf([{ name: 'f', body: 'z' }]);
    const zstd = zlib as unknown as { zstdCompressSync?: (b: Buffer) => Buffer };
    if (zstd.zstdCompressSync) {
      await unpack(zstd.zstdCompressSync(tar), join(dir, 'z'), 'application/vnd.oci.image.layer.v1.tar+zstd');
      expect(readFileSync(join(dir, 'z', 'f'), 'utf8')).toBe('z');
    } else {
      const fake = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), randomBytes(64)]);
      await expect(unpack(fake, join(dir, 'z'))).rejects.toThrow(/zstd-compressed, which needs Node.js 22.15/);
    }
  });

  it('reports the opaque directories it made, not the root nor one replaced later', async () => {
    const unpacked = await unpack(
      await tarOf([
        { name: '.wh..wh..opq' },
        { name: 'o/.wh..wh..opq' },
        { name: 'p/q/.wh..wh..opq' },
        { name: 'p', body: 'now a file' },
        { name: 'r/.wh..wh..opq' },
        { name: 'r/', type: 'directory' },
      ]),
      join(dir, 'layer'),
    );
    expect(unpacked.opaque).toEqual(['o', 'r']);
  });

  it('turns OCI whiteouts into overlay ones that hide the lower layer in a mounted overlay', async () => {
    const lower = join(dir, 'lower');
    const upper = join(dir, 'upper');
    await unpack(
      await tarOf([
        { name: 'a/keep', body: 'k' },
        { name: 'a/gone', body: 'g' },
        { name: 'o/old1', body: '1' },
        { name: 'o/sub/old2', body: '2' },
      ]),
      lower,
    );
    const unpacked = await unpack(
      await tarOf([
        { name: 'a/', type: 'directory' },
        { name: 'a/.wh.gone' },
        { name: 'o/', type: 'directory' },
        { name: 'o/.wh..wh..opq' },
        { name: 'o/new', body: 'n' },
      ]),
      upper,
    );
    expect(unpacked.opaque).toEqual(['o']);
    const tree = byPath(await scanTree(upper));
    expect(tree.get('a/gone')).toMatchObject({ type: 'c', rdev: [0, 0] });
    expect(tree.get('o')?.xattrs).toEqual({ 'trusted.overlay.opaque': b64('y') });
    expect([...tree.keys()].filter((p) => p.includes('.wh.'))).toEqual([]);

    const merged = join(dir, 'merged');
    mkdirSync(merged);
    const script = `mount -t overlay overlay -o lowerdir=${upper}:${lower} ${merged} && cd ${merged} && find . | sort`;
    const listing = execFileSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], {
      encoding: 'utf8',
    });
    expect(listing.trim().split('\n')).toEqual(['.', './a', './a/keep', './o', './o/new']);
  });

  describe('hostile archives', () => {
    let sentinel: string;
    let target: string;
    beforeEach(() => {
      sentinel = join(dir, 'sentinel');
      target = join(dir, 'root');
      mkdirSync(sentinel);
      writeFileSync(join(sentinel, 'keep'), 'keep');
    });
    afterEach(() => {
      // Whatever the archive did, nothing outside the target changed.
      try {
        expect(readdirSync(sentinel)).toEqual(['keep']);
        expect(readFileSync(join(sentinel, 'keep'), 'utf8')).toBe('keep');
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('refuses ".." that climbs out', async () => {
      const up = `../sentinel/pwned`;
      await expect(unpack(await tarOf([{ name: up, body: 'x' }]), target)).rejects.toThrow(
        /layer entry "\.\.\/sentinel\/pwned" climbs out/,
      );
      await expect(unpack(await tarOf([{ name: 'a/../../../etc/x', body: 'x' }]), target)).rejects.toThrow(
        /climbs out/,
      );
      await expect(unpack(await tarOf([{ name: '../.wh.keep' }]), target)).rejects.toThrow(/climbs out/);
    });

    it('puts absolute paths inside the root', async () => {
      await unpack(await tarOf([{ name: `${sentinel}/pwned`, body: 'x' }]), target);
      expect(readFileSync(join(target, sentinel, 'pwned'), 'utf8')).toBe('x');
    });

    it('resolves symlinked parents inside the root', async () => {
      const name = `ptest-pwned-${randomBytes(4).toString('hex')}`;
      onTestFinished(() => rmSync(join(tmpdir(), name), { force: true }));
      await unpack(
        await tarOf([
          { name: 'evil', type: 'symlink', linkname: '/' },
          { name: `evil/tmp/${name}`, body: 'x' },
          { name: 'abs', type: 'symlink', linkname: sentinel },
          { name: 'abs/pwned', body: 'x' },
          { name: 'abs/.wh.keep' },
          { name: 'up', type: 'symlink', linkname: '../..' },
          { name: 'up/sentinel/pwned', body: 'x' },
          { name: 'deep/', type: 'directory' },
          { name: 'deep/rel', type: 'symlink', linkname: '../../../../../sentinel' },
          { name: 'deep/rel/pwned', body: 'x' },
        ]),
        target,
      );
      expect(existsSync(join(tmpdir(), name))).toBe(false);
      expect(readFileSync(join(target, 'tmp', name), 'utf8')).toBe('x');
      expect(readFileSync(join(target, sentinel, 'pwned'), 'utf8')).toBe('x');
      expect(statSync(join(target, sentinel, 'keep')).isCharacterDevice()).toBe(true); // the whiteout, inside
      expect(readFileSync(join(target, 'sentinel', 'pwned'), 'utf8')).toBe('x');
    });

    it('refuses hard links to anything outside the layer', async () => {
      const passwdLinks = statSync('/etc/passwd').nlink;
      await expect(
        unpack(await tarOf([{ name: 'pw', type: 'link', linkname: '/etc/passwd' }]), join(dir, 'r1')),
      ).rejects.toThrow(/layer entry "pw": its hard link target "\/etc\/passwd" is not in the layer/);
      await expect(
        unpack(await tarOf([{ name: 'x', type: 'link', linkname: '../../sentinel/keep' }]), join(dir, 'r2')),
      ).rejects.toThrow(/climbs out/);
      await expect(
        unpack(
          await tarOf([
            { name: 'evil', type: 'symlink', linkname: sentinel },
            { name: 'x', type: 'link', linkname: 'evil/keep' },
          ]),
          join(dir, 'r3'),
        ),
      ).rejects.toThrow(/is not in the layer/);
      expect(statSync('/etc/passwd').nlink).toBe(passwdLinks);
    });

    it('replaces a directory holding a symlink without following it', async () => {
      await unpack(
        await tarOf([
          { name: 'd/', type: 'directory' },
          { name: 'd/l', type: 'symlink', linkname: sentinel },
          { name: 'd', body: 'now a file' },
          { name: 'd/', type: 'directory' },
          { name: 'd/l/pwned', body: 'x' },
          { name: 's', type: 'symlink', linkname: sentinel },
          { name: 's', body: 'replaces the link, not its target' },
        ]),
        target,
      );
      expect(readFileSync(join(target, 'd/l/pwned'), 'utf8')).toBe('x');
      expect(readFileSync(join(target, 's'), 'utf8')).toBe('replaces the link, not its target');
    });
  });
});
