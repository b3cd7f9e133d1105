import { posix } from 'node:path';
import type { ContainerConfig } from '../image/types.js';

/** Env entries (`K=V`) as a map, in order. */
export function envMap(config: ContainerConfig): Map<string, string> {
  const env = new Map<string, string>();
  for (const entry of config.Env ?? []) {
    const eq = entry.indexOf('=');
    if (eq > 0) env.set(entry.slice(0, eq), entry.slice(eq + 1));
    else if (entry !== '') env.set(entry, '');
  }
  return env;
}

/** Sets (replacing in place, or appending) environment variables in a config's Env. */
export function withEnv(config: ContainerConfig, pairs: [string, string][]): ContainerConfig {
  const env = envMap(config);
  for (const [key, value] of pairs) env.set(key, value);
  return { ...config, Env: [...env].map(([key, value]) => `${key}=${value}`) };
}

/** A WORKDIR: absolute paths replace, relative ones extend the current one; cleaned like Go's path.Clean. */
export function resolveWorkdir(current: string | undefined, path: string): string {
  return posix.resolve(current || '/', path);
}

/** `80`, `80/udp`, `8000-8002/tcp` → ExposedPorts keys (`80/tcp`), ranges expanded as Docker does. */
export function exposedPorts(ports: string[]): string[] {
  const keys: string[] = [];
  for (const port of ports) {
    const [range = '', proto = 'tcp'] = port.split('/');
    const match = /^(\d+)(?:-(\d+))?$/.exec(range);
    if (!match) {
      keys.push(`${range}/${proto.toLowerCase()}`);
      continue;
    }
    const start = Number(match[1]);
    const end = match[2] === undefined ? start : Number(match[2]);
    for (let p = start; p <= end; p++) keys.push(`${p}/${proto.toLowerCase()}`);
  }
  return keys;
}
