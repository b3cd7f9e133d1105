/** Linux's dev_t encoding, as glibc's gnu_dev_major and gnu_dev_minor read it (a Node stat's `rdev`). */
export function devMajor(rdev: number): number {
  const dev = BigInt(rdev);
  return Number(((dev & 0xfff00n) >> 8n) | ((dev & 0xfffff00000000000n) >> 32n));
}

export function devMinor(rdev: number): number {
  const dev = BigInt(rdev);
  return Number((dev & 0xffn) | ((dev & 0xffffff00000n) >> 12n));
}
