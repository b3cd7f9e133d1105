import { type TarHeader, tarHeaders } from './tar-pax.js';

const BLOCK = 512;
const ZEROS = Buffer.alloc(2 * BLOCK);

/**
 * A tar archive built in memory, byte for byte as tar-stream's `pack()` writes
 * the same entries (its defaults, PAX headers, padding and end blocks), without
 * its streams: for small layers, where the streams cost more than the bytes.
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

  #encode(header: TarHeader): void {
    const codec = tarHeaders();
    if (!header.pax) {
      const block = codec.encode(header);
      if (block) {
        this.#push(block);
        return;
      }
    }
    const records = codec.encodePax({ name: header.name, linkname: header.linkname, pax: header.pax ?? null });
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
    this.#push(codec.encode(paxHeader) as Buffer);
    this.#push(records);
    this.#pad(records.length);
    paxHeader.size = header.size;
    paxHeader.type = header.type;
    this.#push(codec.encode(paxHeader) as Buffer);
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
