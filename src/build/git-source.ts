import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { PetriError } from '../errors.js';

/** `ADD <git ref>`: the repository, and the fragment's ref and subdirectory (`#ref:subdir`). */
export interface GitRef {
  remote: string;
  /** Branch, tag or commit; the remote's HEAD when absent. */
  ref?: string;
  /** A directory of the repository whose contents are added instead of its root. */
  subdir?: string;
}

/** What BuildKit takes for a git repository in ADD: `git@…`, `git://…`, `ssh://…`, or an http(s) URL ending in `.git`. */
export function isGitSource(source: string): boolean {
  return /^git@|^git:\/\/|^ssh:\/\/|^https?:\/\/[^#]*\.git(#|$)/i.test(source);
}

/** Splits `REMOTE#REF:SUBDIR`; a bad fragment is a one-line error. */
export function parseGitRef(source: string): GitRef {
  const hash = source.indexOf('#');
  if (hash < 0) return { remote: source };
  const remote = source.slice(0, hash);
  const fragment = source.slice(hash + 1);
  const colon = fragment.indexOf(':');
  const ref = colon < 0 ? fragment : fragment.slice(0, colon);
  const subdir = colon < 0 ? '' : fragment.slice(colon + 1);
  if (ref.startsWith('-') || /[\s\\~^?*[]|\.\.|@\{/.test(ref)) {
    throw new PetriError(`ADD ${source}: "${ref}" is not a git ref (a branch, tag or commit)`);
  }
  if (subdir.split('/').includes('..')) {
    throw new PetriError(`ADD ${source}: the subdirectory "${subdir}" leaves the repository`);
  }
  return { remote, ...(ref ? { ref } : {}), ...(subdir.replace(/^\/+|\/+$/g, '') ? { subdir } : {}) };
}

/** A checked-out commit: its tree in `dir` (with `.git`), its full id and its committer time (seconds). */
export interface GitCheckout {
  dir: string;
  commit: string;
  time: number;
}

const FULL_COMMIT = /^([0-9a-f]{40}|[0-9a-f]{64})$/;

/**
 * Fetches `ref` (the remote's HEAD when absent) of `remote` with the host's
 * git, as BuildKit's git source does on the daemon's host: one commit deep
 * (the whole history only when a server will not hand out a bare commit),
 * submodules too, into `dir` (empty), checked out with umask 022. The
 * host's git configuration and credentials apply; git never prompts. With
 * `checksum`, the commit must be that one (`ADD --checksum=<commit>`).
 */
export async function checkoutGit(source: string, dir: string, checksum?: string): Promise<GitCheckout> {
  const { remote, ref } = parseGitRef(source);
  const git = (args: string[]) => runGit(source, dir, args);
  await git(['init', '-q', '.']);
  const wanted = ref ?? 'HEAD';
  let target = 'FETCH_HEAD';
  try {
    await git(['fetch', '-q', '--depth=1', '--no-tags', '--', remote, wanted]);
  } catch (error) {
    // A commit id (maybe shortened) that the server does not hand out by itself: the whole history has it,
    // if anything does.
    if (!ref || !/^[0-9a-f]{7,64}$/.test(ref)) throw error;
    await git(['fetch', '-q', '--', remote, '+refs/heads/*:refs/remotes/origin/*', '+refs/tags/*:refs/tags/*']);
    target = ref;
  }
  const commit = (await git(['rev-parse', '--verify', '--quiet', `${target}^{commit}`]).catch(() => '')).trim();
  if (!FULL_COMMIT.test(commit)) throw new PetriError(`ADD ${source}: no commit ${wanted} in ${remote}`);
  if (checksum !== undefined && checksum.toLowerCase() !== commit) {
    throw new PetriError(`ADD ${source}: --checksum wants commit ${checksum}, but ${wanted} is ${commit}`);
  }
  await git(['-c', 'advice.detachedHead=false', 'checkout', '-q', '--detach', commit]);
  if (existsSync(join(dir, '.gitmodules'))) {
    await git(['submodule', 'update', '-q', '--init', '--recursive', '--depth=1']);
  }
  const time = Number((await git(['log', '-1', '--format=%ct', commit])).trim());
  return { dir, commit, time };
}

/** Runs git in `dir` with umask 022, no prompt, C messages; a failure is one line with git's last message. */
function runGit(source: string, dir: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', 'umask 022 && exec git "$@"', 'sh', ...args], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, GIT_TERMINAL_PROMPT: '0', LC_ALL: 'C', GIT_SSH_COMMAND: sshCommand() },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk;
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk).slice(-4000);
    });
    child.once('error', (error) => reject(new PetriError(`ADD ${source}: cannot run git: ${error.message}`)));
    child.once('close', (code) => {
      if (code === 0) return resolve(stdout);
      if (code === 127) {
        return reject(new PetriError(`ADD ${source} needs git on this machine (Debian: apt-get install git)`));
      }
      const last = stderr
        .split('\n')
        .map((line) => line.replace(/^(fatal|error): /, '').trim())
        .filter(Boolean)
        .at(-1);
      reject(new PetriError(`ADD ${source}: git ${args[0]} failed: ${last ?? `exit code ${code}`}`));
    });
  });
}

/** ssh as the user set it up, but never asking anything (BatchMode), like a CI job. */
function sshCommand(): string {
  return process.env.GIT_SSH_COMMAND ?? 'ssh -o BatchMode=yes';
}
