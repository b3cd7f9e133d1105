import { expect, it } from 'vitest';
import { TarBuffer } from '../src/snapshot/tar-buffer.js';
import { type TarHeader, tarStream } from '../src/snapshot/tar-pax.js';

/** The same entries through tar-stream's pack stream. */
async function packed(entries: [TarHeader, Buffer | undefined][]): Promise<Buffer> {
  const pack = tarStream().pack();
  const chunks: Buffer[] = [];
  pack.on('data', (chunk: Buffer) => chunks.push(chunk));
  const ended = new Promise((resolve) => pack.on('end', resolve));
  for (const [header, body] of entries) {
    await new Promise<void>((resolve, reject) => {
      const done = (error?: Error | null) => (error ? reject(error) : resolve());
      if (body) pack.entry(header as Parameters<typeof pack.entry>[0], body, done);
      else pack.entry(header as Parameters<typeof pack.entry>[0], done);
    });
  }
  pack.finalize();
  await ended;
  return Buffer.concat(chunks);
}

const mtime = new Date(1_650_000_000_123);
const entries = (): [TarHeader, Buffer | undefined][] => [
  [{ name: 'etc/', type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime }, undefined],
  [{ name: 'etc/passwd', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime }, Buffer.from('root:x:0:0\n')],
  [{ name: 'empty', type: 'file', mode: 0, uid: 0, gid: 0, mtime, size: 0 }, Buffer.alloc(0)],
  [{ name: 'run/', type: 'directory', mode: 0, mtime }, undefined],
  [{ name: `${'long-dir/'.repeat(14)}file`, type: 'file', mode: 0o600, uid: 7, gid: 8, mtime }, Buffer.alloc(700, 1)],
  [{ name: `${'x'.repeat(120)}`, type: 'file', mode: 0o644, mtime }, Buffer.from('pax name')],
  [{ name: 'héllo/wörld', type: 'file', mode: 0o644, mtime }, Buffer.from('utf-8 name')],
  [{ name: 'link', type: 'symlink', linkname: 'etc/passwd', mode: 0o777, mtime }, undefined],
  [{ name: 'far', type: 'symlink', linkname: `../${'t'.repeat(110)}`, mode: 0o777, mtime }, undefined],
  [{ name: 'hard', type: 'link', linkname: 'etc/passwd', mode: 0o644, mtime }, undefined],
  [{ name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 1, mode: 0o660, mtime }, undefined],
  [{ name: 'dev/tty', type: 'character-device', devmajor: 4, devminor: 300, mode: 0o620, mtime }, undefined],
  [{ name: 'fifo', type: 'fifo', mode: 0o600, mtime }, undefined],
  [{ name: 'big-id', type: 'file', mode: 0o644, uid: 0o7777777, gid: 3, mtime }, Buffer.from('ids')],
  [
    {
      name: 'caps',
      type: 'file',
      mode: 0o4755,
      mtime,
      pax: { 'SCHILY.xattr.security.capability': Buffer.from([1, 0, 0xff, 0x80]).toString('latin1'), uid: '300000' },
    },
    Buffer.from('#!/bin/sh\n'),
  ],
  [{ name: 'named', type: 'file', mode: 0o644, mtime, uname: 'root', gname: 'wheel' }, Buffer.from('n')],
  [{ name: 'huge-dir/', type: 'directory', mode: 0o755, mtime, size: 2 ** 33 + 5 }, undefined],
  [{ name: 'old', type: 'file', mode: 0o644, mtime: new Date(-1000) }, Buffer.from('before 1970')],
];

it('packs entries byte for byte as tar-stream does', async () => {
  const archive = new TarBuffer();
  for (const [header, body] of entries()) archive.add(header, body);
  expect(archive.finish().equals(await packed(entries()))).toBe(true);
});

it('refuses a body whose size is not the header size', () => {
  expect(() => new TarBuffer().add({ name: 'f', type: 'file', size: 3, mtime } as TarHeader)).toThrow(/Size mismatch/);
});
