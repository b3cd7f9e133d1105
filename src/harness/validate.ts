import { existsSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { Readable } from 'node:stream';
import { PetriError } from '../errors.js';
import { normalizeCapability } from '../runtime/capabilities.js';
import { resolveUlimits } from '../runtime/ulimits.js';
import type {
  BindMount,
  ContentToCopy,
  Environment,
  ExtraHost,
  FileToCopy,
  HealthCheck,
  Labels,
  PortWithOptionalBinding,
  ResourcesQuota,
  TmpFs,
  Ulimits,
} from './types.js';

/**
 * Checks for the builder's options, run when an option is set: a bad value
 * throws at once, naming the option, the value and what was expected.
 */

/** `withX: invalid … VALUE: expected …` */
export function invalid(option: string, what: string, value: unknown, expected: string): PetriError {
  return new PetriError(`${option}: invalid ${what} ${show(value)}: expected ${expected}`, { code: 'EINVAL' });
}

/** A value as an error message shows it: strings quoted, objects as JSON, short. */
export function show(value: unknown): string {
  let text: string;
  if (typeof value === 'string') text = JSON.stringify(value);
  else if (typeof value === 'function') text = 'a function';
  else if (value instanceof Readable) text = 'a stream';
  else if (Buffer.isBuffer(value)) text = `a Buffer of ${value.length} bytes`;
  else {
    try {
      text = JSON.stringify(value) ?? String(value);
    } catch {
      text = String(value);
    }
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

export function stringArray(option: string, value: unknown, what = 'argument list'): string[] {
  if (!Array.isArray(value) || value.some((item) => typeof item !== 'string')) {
    throw invalid(option, what, value, 'an array of strings, like ["sh", "-c", "echo hi"]');
  }
  return [...value];
}

export function record(option: string, value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalid(option, what, value, 'an object of names to values');
  }
  return value as Record<string, unknown>;
}

export function environment(option: string, value: unknown): Environment {
  const env: Environment = {};
  for (const [key, item] of Object.entries(record(option, value, 'environment'))) {
    if (key === '' || key.includes('=') || key.includes('\0')) {
      throw invalid(option, 'variable name', key, 'a name without "=" or NUL, like DATABASE_URL');
    }
    if (typeof item !== 'string' || item.includes('\0')) {
      throw invalid(option, `value of ${key}`, item, 'a string without NUL (numbers too must be given as strings)');
    }
    env[key] = item;
  }
  return env;
}

export function labels(option: string, value: unknown): Labels {
  const out: Labels = {};
  for (const [key, item] of Object.entries(record(option, value, 'labels'))) {
    if (key === '') throw invalid(option, 'label name', key, 'a non-empty name, like com.example.role');
    if (key.startsWith('org.petri.')) {
      throw invalid(option, 'label name', key, 'a name outside org.petri.*, which petri keeps for itself');
    }
    if (typeof item !== 'string') throw invalid(option, `value of label ${key}`, item, 'a string');
    out[key] = item;
  }
  return out;
}

export function absolutePath(option: string, value: unknown, what = 'path'): string {
  if (typeof value !== 'string' || !value.startsWith('/') || value.includes('\0')) {
    throw invalid(option, what, value, 'an absolute path in the container, like /app');
  }
  return value;
}

export function hostPath(option: string, value: unknown, kind: 'file' | 'directory' | 'any'): string {
  if (typeof value !== 'string' || !value.startsWith('/')) {
    throw invalid(option, 'host path', value, 'an absolute path on this machine');
  }
  if (!existsSync(value)) throw invalid(option, 'host path', value, `an existing ${kind === 'any' ? 'path' : kind}`);
  const stat = statSync(value);
  if (kind === 'file' && stat.isDirectory()) {
    throw invalid(option, 'source', value, 'a file (use withCopyDirectoriesToContainer for a directory)');
  }
  if (kind === 'directory' && !stat.isDirectory()) throw invalid(option, 'source', value, 'a directory');
  return value;
}

export function fileMode(option: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (!Number.isInteger(value) || (value as number) < 0 || (value as number) > 0o7777) {
    throw invalid(option, 'mode', value, 'permission bits from 0 to 0o7777, like 0o644');
  }
  return value as number;
}

const USER = /^([a-z_][a-z0-9_.-]*\$?|\d+)(?::([a-z_][a-z0-9_.-]*|\d+))?$/i;

export function user(option: string, value: unknown): string {
  if (typeof value !== 'string' || !USER.test(value)) {
    throw invalid(option, 'user', value, 'a user name or uid, optionally with :group or :gid (like 1000:1000)');
  }
  return value;
}

export function containerName(option: string, value: unknown): string {
  if (typeof value !== 'string' || !/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(value) || value.length > 128) {
    throw invalid(option, 'name', value, 'letters, digits, _ . and -, starting with a letter or digit');
  }
  return value;
}

const HOST_LABEL = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;

export function hostname(option: string, value: unknown, what = 'hostname'): string {
  if (typeof value !== 'string' || value.length > 253 || !value.split('.').every((part) => HOST_LABEL.test(part))) {
    throw invalid(option, what, value, 'a host name of letters, digits and hyphens, dot-separated (like db.local)');
  }
  return value;
}

export function bindMounts(option: string, value: unknown): { source: string; target: string; readonly: boolean }[] {
  if (!Array.isArray(value)) throw invalid(option, 'bind mounts', value, 'an array of { source, target, mode? }');
  return (value as BindMount[]).map((bind) => {
    if (typeof bind !== 'object' || bind === null)
      throw invalid(option, 'bind mount', bind, '{ source, target, mode? }');
    const source = hostPath(option, bind.source, 'any');
    const target = absolutePath(option, bind.target, 'target');
    if (bind.mode !== undefined && !['rw', 'ro', 'z', 'Z'].includes(bind.mode)) {
      throw invalid(option, `mode of ${target}`, bind.mode, '"rw" or "ro"');
    }
    return { source, target, readonly: bind.mode === 'ro' };
  });
}

export function tmpfs(option: string, value: unknown): TmpFs {
  const out: TmpFs = {};
  for (const [path, options] of Object.entries(record(option, value, 'tmpfs mounts'))) {
    absolutePath(option, path, 'tmpfs path');
    if (typeof options !== 'string' || /\s/.test(options)) {
      throw invalid(option, `options of ${path}`, options, 'mount options like "size=64m,mode=1777", or ""');
    }
    out[path] = options;
  }
  return out;
}

export function filesToCopy(option: string, value: unknown, kind: 'file' | 'directory'): FileToCopy[] {
  if (!Array.isArray(value)) throw invalid(option, `${kind}s`, value, 'an array of { source, target, mode? }');
  return (value as FileToCopy[]).map((item) => {
    if (typeof item !== 'object' || item === null) throw invalid(option, kind, item, '{ source, target, mode? }');
    const source = hostPath(option, item.source, kind);
    const target = absolutePath(option, item.target, 'target');
    const mode = fileMode(option, item.mode);
    return mode === undefined ? { source, target } : { source, target, mode };
  });
}

export function contentsToCopy(option: string, value: unknown): ContentToCopy[] {
  if (!Array.isArray(value)) throw invalid(option, 'contents', value, 'an array of { content, target, mode? }');
  return (value as ContentToCopy[]).map((item) => {
    if (typeof item !== 'object' || item === null) throw invalid(option, 'content', item, '{ content, target, mode? }');
    const { content } = item;
    if (typeof content !== 'string' && !Buffer.isBuffer(content) && !(content instanceof Readable)) {
      throw invalid(option, `content for ${item.target}`, content, 'a string, a Buffer or a Readable stream');
    }
    const target = absolutePath(option, item.target, 'target');
    const mode = fileMode(option, item.mode);
    return mode === undefined ? { content, target } : { content, target, mode };
  });
}

/** Docker's smallest memory limit. */
const MIN_MEMORY = 6 * 1024 * 1024;

export function resourcesQuota(option: string, value: unknown): { memory?: number; cpus?: number } {
  const quota = record(option, value, 'quota') as ResourcesQuota;
  const out: { memory?: number; cpus?: number } = {};
  if (quota.memory !== undefined) {
    const bytes = Math.round(Number(quota.memory) * 1024 ** 3);
    if (typeof quota.memory !== 'number' || !Number.isFinite(quota.memory) || bytes < MIN_MEMORY) {
      throw invalid(option, 'memory', quota.memory, 'a number of gigabytes of at least 0.006 (6 MiB), like 0.5');
    }
    out.memory = bytes;
  }
  if (quota.cpu !== undefined) {
    if (typeof quota.cpu !== 'number' || !Number.isFinite(quota.cpu) || quota.cpu <= 0) {
      throw invalid(option, 'cpu', quota.cpu, 'a positive number of CPUs, like 0.5 or 2');
    }
    out.cpus = quota.cpu;
  }
  return out;
}

export function ulimits(option: string, value: unknown): { name: string; soft: number; hard: number }[] {
  const out: { name: string; soft: number; hard: number }[] = [];
  for (const [name, limits] of Object.entries(record(option, value, 'ulimits') as Ulimits)) {
    if (typeof limits !== 'object' || limits === null)
      throw invalid(option, `ulimit ${name}`, limits, '{ hard, soft }');
    const soft = limits.soft ?? limits.hard;
    const hard = limits.hard ?? limits.soft;
    for (const [which, n] of [
      ['soft', soft],
      ['hard', hard],
    ] as const) {
      if (!Number.isSafeInteger(n) || (n as number) < 0) {
        throw invalid(option, `${which} limit of ${name}`, n, 'a non-negative integer');
      }
    }
    out.push({ name, soft: soft as number, hard: hard as number });
  }
  try {
    resolveUlimits(out); // unknown names, soft above hard, and raising above petri's own limits fail here
  } catch (error) {
    throw new PetriError(`${option}: ${(error as Error).message}`, { code: 'EINVAL', cause: error });
  }
  return out;
}

export function capabilities(option: string, value: unknown[]): string[] {
  return value.map((cap) => {
    if (typeof cap !== 'string') throw invalid(option, 'capability', cap, 'a name like NET_ADMIN');
    try {
      return normalizeCapability(cap);
    } catch (error) {
      throw new PetriError(`${option}: ${(error as Error).message}`, { code: 'EINVAL', cause: error });
    }
  });
}

export function extraHosts(option: string, value: unknown): ExtraHost[] {
  if (!Array.isArray(value)) throw invalid(option, 'extra hosts', value, 'an array of { host, ipAddress }');
  return (value as ExtraHost[]).map((item) => {
    if (typeof item !== 'object' || item === null) throw invalid(option, 'extra host', item, '{ host, ipAddress }');
    const host = hostname(option, item.host, 'host');
    if (typeof item.ipAddress !== 'string' || isIP(item.ipAddress) === 0) {
      throw invalid(option, `ipAddress of ${host}`, item.ipAddress, 'an IPv4 or IPv6 address, like 10.0.0.2');
    }
    return { host, ipAddress: item.ipAddress };
  });
}

export function milliseconds(option: string, value: unknown, what = 'duration', allowZero = false): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) {
    throw invalid(option, what, value, `a ${allowZero ? 'non-negative' : 'positive'} number of milliseconds`);
  }
  return value;
}

export function healthCheck(option: string, value: unknown): HealthCheck {
  const check = record(option, value, 'health check') as unknown as HealthCheck;
  const test = check.test as unknown;
  const kind = Array.isArray(test) ? test[0] : undefined;
  const valid =
    Array.isArray(test) &&
    test.every((item) => typeof item === 'string') &&
    ((kind === 'CMD' && test.length > 1) || (kind === 'CMD-SHELL' && test.length === 2) || kind === 'NONE');
  if (!valid) {
    throw invalid(option, 'test', test, '["CMD-SHELL", "command"], ["CMD", "program", "arg"…] or ["NONE"]');
  }
  for (const key of ['interval', 'timeout', 'startPeriod', 'startInterval'] as const) {
    if (check[key] !== undefined) milliseconds(option, check[key], key, key === 'startPeriod');
  }
  if (check.retries !== undefined && (!Number.isSafeInteger(check.retries) || check.retries < 0)) {
    throw invalid(option, 'retries', check.retries, 'a non-negative integer');
  }
  return { ...check };
}

const PORT_EXPECTED = 'a TCP port number from 1 to 65535, "5432/tcp", or { container: 5432, host: 15432 }';

/** A container port: a number or `"5432/tcp"` (petri forwards TCP only). */
export function port(option: string, value: unknown, what = 'port'): number {
  let number: unknown = value;
  if (typeof value === 'string') {
    const match = /^(\d+)(?:\/(tcp|udp|sctp))?$/i.exec(value.trim());
    if (match?.[2] && match[2].toLowerCase() !== 'tcp') {
      throw invalid(option, what, value, 'a TCP port: petri forwards TCP only');
    }
    number = match ? Number(match[1]) : Number.NaN;
  }
  if (!Number.isInteger(number) || (number as number) < 1 || (number as number) > 65535) {
    throw invalid(option, what, value, 'a TCP port number from 1 to 65535 (or "5432/tcp")');
  }
  return number as number;
}

/** withExposedPorts: each port with the host port it is published on (0: any free port). */
export function exposedPorts(option: string, values: unknown[]): { container: number; host: number }[] {
  return values.map((value: unknown) => {
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
      const { container, host, protocol } = value as Exclude<PortWithOptionalBinding, number | string>;
      if (protocol !== undefined && String(protocol).toLowerCase() !== 'tcp') {
        throw invalid(option, 'protocol', protocol, 'tcp: petri forwards TCP only');
      }
      if (!Number.isInteger(host) || host < 1 || host > 65535) {
        throw invalid(option, 'host port', host, 'a TCP port number from 1 to 65535');
      }
      return { container: port(option, container, 'container port'), host };
    }
    if (typeof value !== 'number' && typeof value !== 'string') throw invalid(option, 'port', value, PORT_EXPECTED);
    return { container: port(option, value), host: 0 };
  });
}
