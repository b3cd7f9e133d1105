import type { Readable } from 'node:stream';

/** The last `limit` bytes written to it: a job's output kept for reports. */
export class TailBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  /** Bytes dropped from the front. */
  dropped = 0;

  constructor(private readonly limit: number) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size - (this.chunks[0]?.length ?? 0) >= this.limit && this.chunks.length > 1) {
      const first = this.chunks.shift() as Buffer;
      this.size -= first.length;
      this.dropped += first.length;
    }
  }

  /** The kept bytes as text; cut at `limit` bytes from the end (a split character becomes U+FFFD). */
  text(limit = this.limit): string {
    const all = Buffer.concat(this.chunks);
    return all.subarray(Math.max(0, all.length - limit)).toString('utf8');
  }
}

/** Splits a stream's bytes into lines (a very long line is cut every `max` bytes); `end` flushes the last one. */
export class LineSplitter {
  private partial = '';

  constructor(
    private readonly onLine: (line: string) => void,
    private readonly max = 16_384,
  ) {}

  push(text: string): void {
    let rest = this.partial + text;
    let newline = rest.indexOf('\n');
    while (newline >= 0) {
      this.onLine(rest.slice(0, newline).replace(/\r$/, ''));
      rest = rest.slice(newline + 1);
      newline = rest.indexOf('\n');
    }
    while (rest.length > this.max) {
      this.onLine(rest.slice(0, this.max));
      rest = rest.slice(this.max);
    }
    this.partial = rest;
  }

  end(): void {
    if (this.partial !== '') this.onLine(this.partial);
    this.partial = '';
  }
}

/** Reads a stream to its end, giving every chunk to `onData`; resolves when it has ended (or closed). */
export function drain(stream: Readable | null, onData: (chunk: Buffer) => void): Promise<void> {
  if (!stream) return Promise.resolve();
  return new Promise((resolve) => {
    stream.on('data', (chunk: Buffer) => onData(chunk));
    stream.once('end', resolve);
    stream.once('close', resolve);
    stream.once('error', () => resolve());
  });
}

/** Text that is valid in XML 1.0 whatever it was: characters XML cannot hold (controls, lone surrogates) dropped. */
export function xmlSafe(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: these are the characters XML 1.0 forbids
  return text.replace(/[^\x09\x0A\x0D\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/gu, '');
}
