import { encodePax, type TarHeader } from './tar-pax.js';

const BLOCK = 512;
const ZEROS = Buffer.alloc(2 * BLOCK);

/**
 * A tar archive built in memory, byte for byte as tar-stream's `pack()` writes
 * the same entries (its header defaults, ustar headers, PAX headers, padding
 * and end blocks; test/layer-from-dir.test.ts compares them), without loading
 * tar-stream: for small layers, where its streams cost more than the bytes.
 */
export class TarBuffer {
  readonly #chunks: Buffer[] = [];
  #length = 0;

  /** Adds an entry; `body` is a regular file's content (its size is the header's). */
  add(header: TarHeader, body?: Buffer): void {
    // tar-stream's Pack.entry defaults (the header is changed in place there too).
    if (!header.size || header.type === 'symlink') header.size = 0;
    if (!header.mode) header.mode = header.type === 'directory' ? 0o755 : 0o644;
    if (!header.uid) header.uid = 0;
    if (!header.gid) header.gid = 0;
    if (!header.mtime) header.mtime = new Date();
    const isVoid = header.type !== 'file' && header.type !== 'contiguous-file';
    if (body) {
      if (isVoid && body.length > 0) throw new Error('No body allowed for this entry');
      header.size = body.length;
    }
    if (!isVoid && header.size !== (body?.length ?? 0)) throw new Error('Size mismatch');
    this.#encode(header);
    if (body && !isVoid) this.#push(body);
    this.#pad(header.size ?? 0);
  }

  /** The archive, with tar's two zero end blocks. */
  finish(): Buffer {
    this.#push(ZEROS);
    return Buffer.concat(this.#chunks, this.#length);
  }

  /** tar-stream's Pack#_encode: a ustar header, or a PAX header and records before it. */
  #encode(header: TarHeader): void {
    if (!header.pax) {
      const block = ustarHeader(header);
      if (block) {
        this.#push(block);
        return;
      }
    }
    const records = encodePax({ name: header.name, linkname: header.linkname, pax: header.pax ?? null });
    const paxHeader = {
      name: 'PaxHeader',
      mode: header.mode,
      uid: header.uid,
      gid: header.gid,
      size: records.length,
      mtime: header.mtime,
      type: 'pax-header',
      linkname: header.linkname && 'PaxHeader',
      uname: header.uname,
      gname: header.gname,
      devmajor: header.devmajor,
      devminor: header.devminor,
    } as unknown as TarHeader;
    this.#push(ustarHeader(paxHeader) as Buffer);
    this.#push(records);
    this.#pad(records.length);
    paxHeader.size = header.size;
    paxHeader.type = header.type;
    this.#push(ustarHeader(paxHeader) as Buffer);
  }

  #pad(size: number): void {
    const rest = size % BLOCK;
    if (rest) this.#push(ZEROS.subarray(0, BLOCK - rest));
  }

  #push(chunk: Buffer): void {
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }
}

const TYPEFLAGS: Record<string, number> = {
  file: 0,
  link: 1,
  symlink: 2,
  'character-device': 3,
  'block-device': 4,
  directory: 5,
  fifo: 6,
  'contiguous-file': 7,
  'pax-header': 72,
};

/**
 * tar-stream 3's `headers.encode`: a ustar header block, or null when a name
 * is not ASCII or does not fit (name and prefix) or a link target is too long.
 */
function ustarHeader(header: TarHeader): Buffer | null {
  const block = Buffer.alloc(BLOCK);
  let name = header.name;
  let prefix = '';
  if (Buffer.byteLength(name) !== name.length) return null;
  while (Buffer.byteLength(name) > 100) {
    const slash = name.indexOf('/');
    if (slash === -1) return null;
    prefix += prefix ? `/${name.slice(0, slash)}` : name.slice(0, slash);
    name = name.slice(slash + 1);
  }
  if (Buffer.byteLength(name) > 100 || Buffer.byteLength(prefix) > 155) return null;
  if (header.linkname && Buffer.byteLength(header.linkname) > 100) return null;
  block.write(name);
  block.write(octal((header.mode ?? 0) & 0o7777, 6), 100);
  block.write(octal(header.uid ?? 0, 6), 108);
  block.write(octal(header.gid ?? 0, 6), 116);
  const size = header.size ?? 0;
  if (size.toString(8).length > 11) {
    // base-256, as tar-stream writes sizes of 8 GiB and more
    block[124] = 0x80;
    let rest = size;
    for (let i = 11; i > 0; i--) {
      block[124 + i] = rest & 0xff;
      rest = Math.floor(rest / 0x100);
    }
  } else {
    block.write(octal(size, 11), 124);
  }
  block.write(octal(((header.mtime as Date).getTime() / 1000) | 0, 11), 136);
  block[156] = 0x30 + (TYPEFLAGS[header.type as string] ?? 0);
  if (header.linkname) block.write(header.linkname, 157);
  block.write('ustar\u000000', 257, 'latin1');
  if (header.uname) block.write(header.uname, 265);
  if (header.gname) block.write(header.gname, 297);
  block.write(octal(header.devmajor || 0, 6), 329);
  block.write(octal(header.devminor || 0, 6), 337);
  if (prefix) block.write(prefix, 345);
  let sum = 8 * 32;
  for (let i = 0; i < 148; i++) sum += block[i] as number;
  for (let i = 156; i < BLOCK; i++) sum += block[i] as number;
  block.write(octal(sum, 6), 148);
  return block;
}

/** tar-stream's encodeOct: `n` octal digits and a space, all sevens when the value does not fit. */
function octal(value: number, n: number): string {
  const digits = value.toString(8);
  if (digits.length > n) return `${'7'.repeat(n)} `;
  return `${'0'.repeat(n - digits.length)}${digits} `;
}
