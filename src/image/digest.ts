import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { PetriError } from '../errors.js';

const DIGEST = /^sha256:[a-f0-9]{64}$/;

/** Whether `text` is a `sha256:` digest with 64 lowercase hex digits. */
export function isDigest(text: string): boolean {
  return DIGEST.test(text);
}

/** Returns `text` when it is a valid `sha256:` digest; a PetriError naming `what` otherwise. */
export function validateDigest(text: string, what = 'digest'): string {
  if (!isDigest(text)) {
    throw new PetriError(
      `invalid ${what} "${text}": expected "sha256:" and 64 lowercase hex digits (other algorithms are not supported)`,
      { code: 'EDIGEST' },
    );
  }
  return text;
}

/** The 64 hex digits of a valid digest. */
export function digestHex(digest: string): string {
  return validateDigest(digest).slice('sha256:'.length);
}

/** The `sha256:` digest of some content. */
export function sha256Digest(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** The error for content that does not hash to the digest it claims. */
export function digestMismatch(expected: string, actual: string, where: string): PetriError {
  return new PetriError(`blob ${expected} does not match its digest: the content hashes to ${actual}; ${where}`, {
    code: 'EDIGEST',
  });
}

/** The error for content whose length is not the size its descriptor claims. */
export function sizeMismatch(digest: string, expected: number, actual: number, where: string): PetriError {
  return new PetriError(`blob ${digest} should be ${expected} bytes but is ${actual}; ${where}`, { code: 'EDIGEST' });
}

/** A pass-through stream that hashes and counts what flows through it. */
export class HashingStream extends Transform {
  #hash: Hash = createHash('sha256');
  #size = 0;
  #digest: string | undefined;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#hash.update(chunk);
    this.#size += chunk.length;
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    this.#digest = `sha256:${this.#hash.digest('hex')}`;
    callback();
  }

  /** The digest of everything that passed; only once the stream has ended. */
  get digest(): string {
    if (this.#digest === undefined) throw new Error('HashingStream: digest read before the stream ended');
    return this.#digest;
  }

  /** Bytes that passed so far. */
  get size(): number {
    return this.#size;
  }
}

/**
 * A pass-through stream that fails at its end when what passed does not hash
 * to `expected` (or is not `size` bytes long): a consumer sees the content as it
 * comes, and an error instead of a clean end when it was not what it claimed.
 */
export class VerifyingStream extends HashingStream {
  readonly #expected: string;
  readonly #expectedSize: number | undefined;
  readonly #where: string;

  constructor(expected: string, where: string, size?: number) {
    super();
    this.#expected = validateDigest(expected);
    this.#expectedSize = size;
    this.#where = where;
  }

  override _flush(callback: TransformCallback): void {
    super._flush((error) => {
      if (error) return callback(error);
      if (this.digest !== this.#expected) return callback(digestMismatch(this.#expected, this.digest, this.#where));
      if (this.#expectedSize !== undefined && this.size !== this.#expectedSize) {
        return callback(sizeMismatch(this.#expected, this.#expectedSize, this.size, this.#where));
      }
      callback();
    });
  }
}
