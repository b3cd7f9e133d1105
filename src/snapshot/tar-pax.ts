import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type tar from 'tar-stream';
import type { Header } from 'tar-stream';

/** PAX keys whose values are raw bytes (extended attributes, as GNU tar and Go's archive/tar write them). */
export const XATTR_PAX_PREFIX = 'SCHILY.xattr.';

type PaxRecords = Record<string, string>;
interface HeaderCodec {
  encodePax(opts: { name?: string; linkname?: string | null; pax?: PaxRecords | null }): Buffer;
  decodePax(buf: Buffer): PaxRecords;
}

/** A tar header as tar-stream reads and writes it, with the PAX records its typings leave out. */
export type TarHeader = Omit<Header, 'pax'> & { pax?: PaxRecords | null };

// Loaded when first used: a small layer is packed without tar-stream (tar-buffer.ts).
const load = createRequire(import.meta.url);
let patched = false;

/**
 * tar-stream with binary-safe PAX records. tar-stream decodes and encodes every
 * PAX value as UTF-8, which mangles binary xattr values (`security.capability`);
 * here the values of `SCHILY.xattr.*` records are latin1 strings instead, one
 * character per byte: `Buffer.from(value, 'latin1')` gives the bytes back, and
 * a latin1 string written as such a value is stored byte for byte. Other records
 * stay UTF-8. Patches tar-stream's header codec once (the test suite checks a
 * binary xattr round trip, so a tar-stream that changes its internals is caught).
 */
export function tarStream(): typeof tar {
  if (!patched) {
    const codec = load(join(dirname(load.resolve('tar-stream')), 'headers.js')) as HeaderCodec;
    codec.decodePax = decodePax;
    codec.encodePax = encodePax;
    patched = true;
  }
  return load('tar-stream') as typeof tar;
}

function encoding(key: string): BufferEncoding {
  return key.startsWith(XATTR_PAX_PREFIX) ? 'latin1' : 'utf8';
}

function decodePax(buf: Buffer): PaxRecords {
  const result: PaxRecords = {};
  let offset = 0;
  while (offset < buf.length) {
    const space = buf.indexOf(0x20, offset);
    if (space < 0) break;
    const length = Number.parseInt(buf.toString('utf8', offset, space), 10);
    if (!length || offset + length > buf.length) break;
    const record = buf.subarray(space + 1, offset + length - 1); // without the trailing newline
    const equals = record.indexOf(0x3d);
    if (equals < 0) break;
    const key = record.toString('utf8', 0, equals);
    if (key !== '__proto__') result[key] = record.toString(encoding(key), equals + 1);
    offset += length;
  }
  return result;
}

/** PAX records as tar-stream's patched codec encodes them (path, linkpath, then the records in order). */
export function encodePax(opts: { name?: string; linkname?: string | null; pax?: PaxRecords | null }): Buffer {
  const records: Buffer[] = [];
  const add = (key: string, value: Buffer) => {
    const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
    // The length prefix counts itself.
    let length = body.length + 1;
    while (String(length).length + body.length !== length) length = String(length).length + body.length;
    records.push(Buffer.from(String(length)), body);
  };
  if (opts.name) add('path', Buffer.from(opts.name));
  if (opts.linkname) add('linkpath', Buffer.from(opts.linkname));
  for (const [key, value] of Object.entries(opts.pax ?? {})) add(key, Buffer.from(value, encoding(key)));
  return Buffer.concat(records);
}
