import { spawnSync } from 'node:child_process';
import { PetriError } from '../errors.js';

/**
 * How the action gets root for petri: it is root already (a container job, a
 * self-hosted runner run as root), or it has passwordless sudo (GitHub-hosted
 * runners), when commands run through `sudo -n -E` (the environment kept:
 * PETRI_ROOT, GITHUB_*, the jobs' passEnv).
 */
export type RootAccess = { kind: 'root' } | { kind: 'sudo'; uid: number; gid: number };

export function rootAccess(): RootAccess {
  if (process.getuid?.() === 0) return { kind: 'root' };
  const probe = spawnSync('sudo', ['-n', 'true'], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
  if (probe.status === 0) return { kind: 'sudo', uid: process.getuid?.() ?? -1, gid: process.getgid?.() ?? -1 };
  const why = probe.error
    ? 'sudo is not installed'
    : (probe.stderr.trim().split('\n')[0] ?? '') || `sudo -n true exited ${probe.status}`;
  throw new PetriError(
    `petri needs root (namespaces, mounts, cgroups), and this job runs as uid ${process.getuid?.()} without passwordless sudo (${why}): use a GitHub-hosted runner, or give the runner's user passwordless sudo, or run the job as root`,
  );
}

/** The argv that runs `argv` as root: itself, or through `sudo -n -E`. */
export function asRoot(access: RootAccess, argv: string[]): string[] {
  return access.kind === 'root' ? argv : ['sudo', '-n', '-E', ...argv];
}

/** Runs a short command as root; its stderr's first line in the error when it fails. */
export function runAsRoot(access: RootAccess, argv: string[]): void {
  const [command, ...args] = asRoot(access, argv) as [string, ...string[]];
  const result = spawnSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
  if (result.status !== 0) {
    const why = result.error?.message ?? (result.stderr.trim().split('\n')[0] || `exit code ${result.status}`);
    throw new PetriError(`${argv.join(' ')} failed: ${why}`);
  }
}

/** Gives files petri wrote as root back to the action's user (so later steps and uploads can read and remove them). */
export function giveBack(access: RootAccess, paths: string[]): void {
  if (access.kind !== 'sudo' || paths.length === 0) return;
  runAsRoot(access, ['chown', '-R', `${access.uid}:${access.gid}`, '--', ...paths]);
}

/** Whether a path exists, as root sees it (petri's store is root's alone). */
export function existsAsRoot(access: RootAccess, path: string): boolean {
  const [command, ...args] = asRoot(access, ['test', '-e', path]) as [string, ...string[]];
  return spawnSync(command, args, { stdio: 'ignore' }).status === 0;
}
