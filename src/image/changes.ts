import { PetriError } from '../errors.js';
import type { ContainerConfig } from './types.js';

const SUPPORTED = ['CMD', 'ENTRYPOINT', 'ENV', 'EXPOSE', 'LABEL', 'ONBUILD', 'STOPSIGNAL', 'USER', 'VOLUME', 'WORKDIR'];

/**
 * Applies `--change` instructions (`CMD ["x"]`, `ENV K=V`, `WORKDIR /app`, …),
 * the Dockerfile subset `docker commit --change` accepts, to an image config.
 */
export function applyChanges(config: ContainerConfig, changes: string[]): ContainerConfig {
  const out: ContainerConfig = structuredClone(config);
  for (const change of changes) {
    const match = /^\s*(\w+)\s+([\s\S]*?)\s*$/.exec(change);
    const keyword = match?.[1]?.toUpperCase();
    const args = match?.[2] ?? '';
    if (!match || !keyword || !SUPPORTED.includes(keyword) || args === '') {
      throw new PetriError(`invalid --change "${change}": expected one of ${SUPPORTED.join(', ')} with its arguments`);
    }
    switch (keyword) {
      case 'CMD':
        out.Cmd = commandForm(args);
        break;
      case 'ENTRYPOINT':
        out.Entrypoint = commandForm(args);
        break;
      case 'ENV':
        out.Env = mergeEnv(out.Env ?? [], keyValues(args, change));
        break;
      case 'LABEL':
        out.Labels = { ...out.Labels, ...Object.fromEntries(keyValues(args, change)) };
        break;
      case 'EXPOSE':
        out.ExposedPorts = { ...out.ExposedPorts };
        for (const port of args.split(/\s+/)) out.ExposedPorts[port.includes('/') ? port : `${port}/tcp`] = {};
        break;
      case 'VOLUME':
        out.Volumes = { ...out.Volumes };
        for (const path of args.startsWith('[') ? (JSON.parse(args) as string[]) : args.split(/\s+/))
          out.Volumes[path] = {};
        break;
      case 'WORKDIR':
        out.WorkingDir = args;
        break;
      case 'USER':
        out.User = args;
        break;
      case 'STOPSIGNAL':
        out.StopSignal = args;
        break;
      case 'ONBUILD':
        out.OnBuild = [...(out.OnBuild ?? []), args];
        break;
    }
  }
  return out;
}

function commandForm(args: string): string[] {
  if (args.startsWith('[')) {
    try {
      const parsed = JSON.parse(args);
      if (Array.isArray(parsed) && parsed.every((a) => typeof a === 'string')) return parsed;
    } catch {
      // not JSON: shell form, like BuildKit
    }
  }
  return ['/bin/sh', '-c', args];
}

function keyValues(args: string, change: string): [string, string][] {
  if (!args.includes('=')) {
    const [key, ...value] = args.split(/\s+/);
    if (!key || value.length === 0) throw new PetriError(`invalid --change "${change}": expected KEY=VALUE`);
    return [[key, value.join(' ')]];
  }
  const pairs: [string, string][] = [];
  for (const match of args.matchAll(/([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)/g)) {
    const raw = match[2] as string;
    pairs.push([match[1] as string, raw.startsWith('"') ? (JSON.parse(raw) as string) : raw]);
  }
  return pairs;
}

function mergeEnv(env: string[], pairs: [string, string][]): string[] {
  const map = new Map(env.map((entry) => [entry.slice(0, entry.indexOf('=')), entry] as const));
  for (const [key, value] of pairs) map.set(key, `${key}=${value}`);
  return [...map.values()];
}
