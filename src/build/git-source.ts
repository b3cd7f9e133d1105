import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { PetriError } from '../errors.js';
import { childProcess } from '../util/lazy-builtins.js';

/** `ADD <git ref>`: the repository, and the ref and subdirectory of its fragment (`#ref:subdir`) or query. */
export interface GitRef {
  remote: string;
  /** Branch, tag or commit; the remote's HEAD when absent. */
  ref?: string;
  /** A directory of the repository whose contents are added instead of its root. */
  subdir?: string;
}

/**
 * What BuildKit takes for a git repository in ADD: `git@…`, `git://…`,
 * `ssh://…`, or an http(s) URL whose path ends in `.git` (before a `#`
 * fragment or a `?ref=…&subdir=…` query).
 */
export function isGitSource(source: string): boolean {
  return /^git@|^git:\/\/|^ssh:\/\/|^https?:\/\/[^#?]*\.git([?#]|$)/i.test(source);
}

/** Every URL in `text` with its password (or a token given as the user) hidden, as BuildKit shows them. */
export function redactUrl(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/)([^/@?#\s"'`]*)@/gi, (_all, scheme: string, info: string) => {
    const colon = info.indexOf(':');
    return `${scheme}${colon < 0 ? 'xxxxx' : `${info.slice(0, colon)}:xxxxx`}@`;
  });
}

/** Splits `REMOTE#REF:SUBDIR` (or `REMOTE?ref=REF&subdir=SUBDIR`); a bad ref or subdirectory is a one-line error. */
export function parseGitRef(source: string): GitRef {
  const shown = redactUrl(source);
  let remote = source;
  let ref = '';
  let subdir = '';
  const hash = source.indexOf('#');
  if (hash >= 0) {
    remote = source.slice(0, hash);
    const fragment = source.slice(hash + 1);
    const colon = fragment.indexOf(':');
    ref = colon < 0 ? fragment : fragment.slice(0, colon);
    subdir = colon < 0 ? '' : fragment.slice(colon + 1);
  }
  const query = /^([^?]*\.git)\?(.*)$/i.exec(remote);
  if (query) {
    remote = query[1] as string;
    for (const [key, value] of new URLSearchParams(query[2])) {
      if (key === 'ref' || key === 'tag' || key === 'branch') ref = value;
      else if (key === 'subdir') subdir = value;
      else throw new PetriError(`ADD ${shown}: unknown query key ${key} (ref, tag, branch or subdir)`);
    }
  }
  if (ref.startsWith('-') || /[\s\\~^?*[:]|\.\.|@\{/.test(ref)) {
    throw new PetriError(`ADD ${shown}: "${ref}" is not a git ref (a branch, tag or commit)`);
  }
  if (subdir.split('/').includes('..')) {
    throw new PetriError(`ADD ${shown}: the subdirectory "${subdir}" leaves the repository`);
  }
  subdir = subdir.replace(/^\/+|\/+$/g, '');
  return { remote, ...(ref ? { ref } : {}), ...(subdir ? { subdir } : {}) };
}

/**
 * A checked-out commit: its tree in `dir` (with `.git`), its full id, its
 * committer time (seconds), and the subdirectory the source asked for.
 */
export interface GitCheckout {
  dir: string;
  commit: string;
  time: number;
  subdir?: string;
}

const FULL_COMMIT = /^([0-9a-f]{40}|[0-9a-f]{64})$/;
const COMMIT_ID = /^[0-9a-f]{7,64}$/;

/**
 * Fetches `ref` (the remote's HEAD when absent) of `remote` with the host's
 * git, as BuildKit's git source does on the daemon's host: one commit deep
 * (the whole history only when a server will not hand out a bare commit),
 * submodules too, into `dir` (empty), checked out with umask 022. The host's
 * credentials and ssh setup apply; git never prompts, runs no hooks, keeps
 * line endings and Git LFS pointers as committed. With `checksum` (hex), the
 * commit, or the annotated tag, must start with it (`ADD --checksum`). With
 * `keepGitDir`, `.git` is left as a clone's: an `origin` remote (password
 * hidden) and the tag or branch fetched.
 */
export async function checkoutGit(
  source: string,
  dir: string,
  options: { checksum?: string; keepGitDir?: boolean } = {},
): Promise<GitCheckout> {
  const { remote, ref, subdir } = parseGitRef(source);
  const shown = redactUrl(source);
  const checksum = options.checksum?.toLowerCase();
  if (checksum !== undefined && !/^[0-9a-f]{4,64}$/.test(checksum)) {
    throw new PetriError(`ADD --checksum=${options.checksum}: expected the hex id of a commit (or a tag) for ${shown}`);
  }
  const env = await gitEnvironment(remote);
  const git = (args: string[]) => runGit(shown, dir, args, env);
  await git(['init', '-q', '.']);
  const wanted = ref ?? 'HEAD';
  // Where the fetched ref goes, so that a kept .git has it as a clone would.
  const kind = options.keepGitDir && ref && !COMMIT_ID.test(ref) ? await refKind(git, remote, ref) : undefined;
  const refspec = kind ? `+refs/${kind}/${ref}:refs/${kind === 'heads' ? 'remotes/origin' : 'tags'}/${ref}` : wanted;
  let target = 'FETCH_HEAD';
  try {
    await git(['fetch', '-q', '--depth=1', '--no-tags', '--', remote, refspec]);
  } catch (error) {
    // A commit id (maybe shortened) that the server does not hand out by itself: the whole history has it,
    // if anything does.
    if (!ref || !COMMIT_ID.test(ref)) throw error;
    await git(['fetch', '-q', '--', remote, '+refs/heads/*:refs/remotes/origin/*', '+refs/tags/*:refs/tags/*']);
    target = ref;
  }
  const fetched = (await git(['rev-parse', '--verify', '--quiet', target]).catch(() => '')).trim();
  const commit = (await git(['rev-parse', '--verify', '--quiet', `${target}^{commit}`]).catch(() => '')).trim();
  if (!FULL_COMMIT.test(commit)) throw new PetriError(`ADD ${shown}: no commit ${wanted} there`);
  if (checksum !== undefined && !commit.startsWith(checksum) && !fetched.startsWith(checksum)) {
    throw new PetriError(`ADD ${shown}: --checksum wants ${options.checksum}, but ${wanted} is commit ${commit}`);
  }
  await git(['-c', 'advice.detachedHead=false', 'checkout', '-q', '--detach', commit]);
  if (existsSync(join(dir, '.gitmodules'))) {
    await git(['submodule', 'update', '-q', '--init', '--recursive', '--depth=1']);
  }
  const time = Number((await git(['log', '-1', '--format=%ct', commit])).trim());
  if (options.keepGitDir) {
    await git(['remote', 'add', 'origin', redactUrl(remote)]);
    rmSync(join(dir, '.git', 'FETCH_HEAD'), { force: true });
  }
  return { dir, commit, time, ...(subdir ? { subdir } : {}) };
}

/** Whether `ref` is a tag or a branch of the remote (tags first, as git resolves them); undefined when neither. */
async function refKind(
  git: (args: string[]) => Promise<string>,
  remote: string,
  ref: string,
): Promise<'tags' | 'heads' | undefined> {
  const listed = await git(['ls-remote', '--', remote, `refs/tags/${ref}`, `refs/heads/${ref}`]);
  if (listed.includes(`\trefs/tags/${ref}\n`)) return 'tags';
  if (listed.includes(`\trefs/heads/${ref}\n`)) return 'heads';
  return undefined;
}

/**
 * git's environment: the user's, without what would point it at another
 * repository (a git hook's GIT_DIR, GIT_INDEX_FILE…), never prompting, C
 * messages, Git LFS files left as pointers; for an ssh remote, ssh in batch
 * mode unless the user set up ssh for git (GIT_SSH_COMMAND, GIT_SSH,
 * core.sshCommand).
 */
async function gitEnvironment(remote: string): Promise<NodeJS.ProcessEnv> {
  const env: NodeJS.ProcessEnv = { ...process.env, GIT_TERMINAL_PROMPT: '0', LC_ALL: 'C', GIT_LFS_SKIP_SMUDGE: '1' };
  for (const name of [
    'GIT_DIR',
    'GIT_WORK_TREE',
    'GIT_INDEX_FILE',
    'GIT_INDEX_VERSION',
    'GIT_OBJECT_DIRECTORY',
    'GIT_ALTERNATE_OBJECT_DIRECTORIES',
    'GIT_COMMON_DIR',
    'GIT_NAMESPACE',
    'GIT_PREFIX',
    'GIT_QUARANTINE_PATH',
    'GIT_CEILING_DIRECTORIES',
    'GIT_DISCOVERY_ACROSS_FILESYSTEM',
  ]) {
    delete env[name];
  }
  const ssh = /^git@|^ssh:\/\//i.test(remote);
  if (ssh && env.GIT_SSH_COMMAND === undefined && env.GIT_SSH === undefined) {
    const configured = await runGit(
      redactUrl(remote),
      '/',
      ['config', '--global', '--get', 'core.sshCommand'],
      env,
    ).catch(() => '');
    if (!configured.trim()) env.GIT_SSH_COMMAND = 'ssh -o BatchMode=yes';
  }
  return env;
}

/** Runs git in `dir` with umask 022, no hooks, no line-ending conversion; a failure is one line with git's error. */
function runGit(shown: string, dir: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const settings = ['-c', 'core.hooksPath=/dev/null', '-c', 'core.autocrlf=false'];
  return new Promise((resolve, reject) => {
    const child = childProcess().spawn('/bin/sh', ['-c', 'umask 022 && exec git "$@"', 'sh', ...settings, ...args], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk;
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk).slice(-8000);
    });
    child.once('error', (error) => reject(new PetriError(`ADD ${shown}: cannot run git: ${error.message}`)));
    child.once('close', (code) => {
      if (code === 0) return resolve(stdout);
      if (code === 127) {
        return reject(new PetriError(`ADD ${shown} needs git on this machine (Debian: apt-get install git)`));
      }
      const lines = stderr.split('\n').map((line) => line.trim());
      const error = lines.filter((line) => /^(fatal|error): /.test(line)).at(-1) ?? lines.filter(Boolean).at(-1);
      const why = redactUrl(error?.replace(/^(fatal|error): /, '') ?? `exit code ${code}`);
      const command = args.find((arg, i) => !arg.startsWith('-') && args[i - 1] !== '-c') ?? 'git';
      reject(new PetriError(`ADD ${shown}: git ${command} failed: ${why}`));
    });
  });
}
