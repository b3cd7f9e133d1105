/**
 * FNV-1a in two 32-bit lanes over a text's UTF-8 bytes, as 16 hex digits: a
 * file name for a key whose record holds the key itself (compared in full).
 * runner/replay.c computes the same for the replay records.
 */
export function fnvName(data: string | Uint8Array): string {
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ 0x5bd1e995;
  for (const c of bytes) {
    const old = b;
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x01000193) ^ (old >>> 13);
  }
  return (a >>> 0).toString(16).padStart(8, '0') + (b >>> 0).toString(16).padStart(8, '0');
}
