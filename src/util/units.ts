import { PetriError } from '../errors.js';

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
};

/** Parses a size like Docker's `--memory`: `64m`, `1g`, `512k`, `1048576`. Units are powers of 1024. */
export function parseSize(value: string | number, what = 'size'): number {
  if (typeof value === 'number') return checkPositiveInteger(value, what);
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value);
  const unit = match ? SIZE_UNITS[match[2]?.toLowerCase() ?? ''] : undefined;
  if (!match || unit === undefined) {
    throw new PetriError(`invalid ${what} "${value}": expected a number with an optional unit b, k, m or g (like 64m)`);
  }
  return checkPositiveInteger(Math.floor(Number(match[1]) * unit), what, value);
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses a duration like `10s`, `500ms`, `1m30s`, `2h`; a bare number means seconds. Returns milliseconds. */
export function parseDuration(value: string | number, what = 'duration'): number {
  if (typeof value === 'number') return checkPositiveInteger(Math.round(value * 1000), what, String(value));
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return checkPositiveInteger(Math.round(Number(text) * 1000), what, value);
  let total = 0;
  let rest = text;
  while (rest.length > 0) {
    const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)/.exec(rest);
    if (!match) throw new PetriError(`invalid ${what} "${value}": expected a duration like 500ms, 10s, 1m30s or 2h`);
    total += Number(match[1]) * (DURATION_UNITS[match[2] as string] as number);
    rest = rest.slice(match[0].length);
  }
  return checkPositiveInteger(Math.round(total), what, value);
}

/** Parses a CPU count like Docker's `--cpus`: a positive decimal such as 0.5 or 2. */
export function parseCpus(value: string | number): number {
  const cpus = typeof value === 'number' ? value : Number(value);
  if (!Number.isFinite(cpus) || cpus <= 0 || (typeof value === 'string' && !/^\s*\d+(\.\d+)?\s*$/.test(value))) {
    throw new PetriError(`invalid cpus "${value}": expected a positive number like 0.5 or 2`);
  }
  return cpus;
}

/** Formats milliseconds for people: 850ms, 12.3s, 2m05s. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)}s`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Math.round((ms % 60_000) / 1000);
  return `${minutes}m${String(seconds).padStart(2, '0')}s`;
}

function checkPositiveInteger(n: number, what: string, shown: string = String(n)): number {
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw new PetriError(`invalid ${what} "${shown}": expected a positive value`);
  }
  return n;
}
