import { Duplex, PassThrough } from 'node:stream';
import { PetriError } from '../errors.js';
import { childProcess, zlib } from '../util/lazy-builtins.js';

/** The compressions of a tar that ADD extracts, as Docker's: gzip, bzip2, xz, and zstd. */
export type Compression = 'gzip' | 'zstd' | 'bzip2' | 'xz';

const MAGIC: [Compression, Buffer][] = [
  ['gzip', Buffer.from([0x1f, 0x8b])],
  ['zstd', Buffer.from([0x28, 0xb5, 0x2f, 0xfd])],
  ['bzip2', Buffer.from('BZh')],
  ['xz', Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])],
];

/** The compression a file's first bytes announce, if any. */
export function compressionOf(head: Buffer): Compression | undefined {
  return MAGIC.find(([, magic]) => head.subarray(0, magic.length).equals(magic))?.[0];
}

const zstd = () => (zlib() as unknown as { createZstdDecompress?: () => NodeJS.ReadWriteStream }).createZstdDecompress;

/** Why this machine cannot decompress `kind`, or undefined when it can (`what` names the source in the message). */
export function cannotDecompress(kind: Compression, what: string): string | undefined {
  if (kind === 'zstd' && !zstd()) {
    return `${what}: zstd archives need Node.js 22.15 or newer (this is ${process.version}): use a gzip tar`;
  }
  return undefined;
}

/**
 * A stream that decompresses `kind`. gzip and zstd in-process (zlib); bzip2
 * and xz by the machine's `bzip2 -d` and `xz -d` (Node has neither; Docker's
 * own archive code runs `xz` too). A missing command is a PetriError naming
 * the package; a failed one, an error with what it printed.
 */
export function decompressor(kind: Compression, what: string): NodeJS.ReadWriteStream {
  if (kind === 'gzip') return zlib().createGunzip();
  if (kind === 'zstd') return (zstd() as () => NodeJS.ReadWriteStream)();
  const command = kind === 'xz' ? 'xz' : 'bzip2';
  const child = childProcess().spawn(command, ['-d', '-c'], { stdio: ['pipe', 'pipe', 'pipe'] });
  // The output ends only once the command has said it succeeded: a damaged archive is an error, not a short one.
  const output = new PassThrough();
  child.stdout.pipe(output, { end: false });
  // The input through a stream of ours: the command stopping early (EPIPE) is said by its exit, with its message.
  const input = new PassThrough();
  input.pipe(child.stdin);
  // Once the command reads no more (done, or failed), what is left of the input is dropped, never stuck.
  child.stdin.on('close', () => {
    input.unpipe(child.stdin);
    input.resume();
  });
  const stream = Duplex.from({ writable: input, readable: output });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => {
    stderr += text;
  });
  child.on('error', (error: NodeJS.ErrnoException) => {
    stream.destroy(
      error.code === 'ENOENT'
        ? new PetriError(
            `${what}: ${kind} archives need the ${command} command on this machine (Debian and Ubuntu: apt-get install ${kind === 'xz' ? 'xz-utils' : 'bzip2'})`,
          )
        : error,
    );
  });
  child.on('close', (code, signal) => {
    if (code === 0) output.end();
    else if (!stream.destroyed) {
      stream.destroy(new Error(`${command} -d failed (${signal ?? `exit status ${code}`}): ${stderr.trim()}`));
    }
  });
  // Nothing reads any more (the caller stopped, or failed): the command goes too, and its pipes.
  stream.on('close', () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const pipe of [child.stdin, child.stdout, child.stderr]) pipe.destroy();
  });
  child.stdin.on('error', () => {}); // EPIPE once the command is gone: its close says why
  return stream;
}
