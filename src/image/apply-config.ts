import { PetriError } from '../errors.js';
import type { ContainerConfig } from './types.js';

/**
 * What a container started from an image gets from the image's config, the
 * way `docker run` applies it: Entrypoint + Cmd (a command given replaces Cmd,
 * `--entrypoint` replaces Entrypoint and clears Cmd), Env, WorkingDir, User.
 */

export interface RunOverrides {
  command?: string[];
  entrypoint?: string[];
  env?: Record<string, string>;
  workdir?: string;
  user?: string;
}

export function imageCommand(config: ContainerConfig, overrides: RunOverrides, image: string): string[] {
  const entrypoint = overrides.entrypoint ?? config.Entrypoint ?? [];
  const cmd = overrides.command?.length ? overrides.command : overrides.entrypoint ? [] : (config.Cmd ?? []);
  const command = [...entrypoint, ...cmd];
  if (command.length === 0) {
    throw new PetriError(`no command given and image ${image} has neither Entrypoint nor Cmd: pass a command to run`);
  }
  return command;
}

/** The image's Env with the caller's variables on top. */
export function imageEnv(config: ContainerConfig, extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const entry of config.Env ?? []) {
    const eq = entry.indexOf('=');
    if (eq > 0) env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return { ...env, ...extra };
}

export interface ResolvedUser {
  uid: number;
  gid: number;
  additionalGids: number[];
  home?: string;
}

/**
 * Resolves `user`, `uid`, `user:group`, `uid:gid` (names from the image's
 * /etc/passwd and /etc/group, read through `readFile`) like Docker: a name must
 * exist; a number need not; supplementary groups come from /etc/group.
 */
export function resolveUser(spec: string | undefined, readFile: (path: string) => string | undefined): ResolvedUser {
  if (!spec) spec = '0';
  const [userPart = '', groupPart] = spec.split(':');
  const passwd = parseDb(readFile('/etc/passwd'));
  const groups = parseDb(readFile('/etc/group'));
  let uid: number;
  let gid: number | undefined;
  let name: string | undefined;
  let home: string | undefined;
  if (/^\d+$/.test(userPart)) {
    uid = Number(userPart);
    const entry = passwd.find((fields) => fields[2] === userPart);
    if (entry) [name, gid, home] = [entry[0], Number(entry[3]), entry[5]];
  } else {
    const entry = passwd.find((fields) => fields[0] === userPart);
    if (!entry) throw new PetriError(`unable to find user ${userPart}: no matching entries in the image's /etc/passwd`);
    [name, uid, gid, home] = [userPart, Number(entry[2]), Number(entry[3]), entry[5]];
  }
  if (groupPart !== undefined && groupPart !== '') {
    if (/^\d+$/.test(groupPart)) gid = Number(groupPart);
    else {
      const entry = groups.find((fields) => fields[0] === groupPart);
      if (!entry)
        throw new PetriError(`unable to find group ${groupPart}: no matching entries in the image's /etc/group`);
      gid = Number(entry[2]);
    }
  }
  gid ??= uid === 0 ? 0 : uid;
  const additionalGids =
    name === undefined || groupPart
      ? []
      : groups
          .filter((fields) => (fields[3] ?? '').split(',').includes(name as string))
          .map((fields) => Number(fields[2]))
          .filter((g) => g !== gid);
  return { uid, gid, additionalGids, ...(home ? { home } : {}) };
}

function parseDb(text: string | undefined): string[][] {
  if (!text) return [];
  return text
    .split('\n')
    .filter((line) => line && !line.startsWith('#'))
    .map((line) => line.split(':'));
}
