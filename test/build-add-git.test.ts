import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:http';
import { type AddressInfo, createServer as createTcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CopyRequest, copyInto, hashSelection, selectSources } from '../src/build/copy.js';
import { ContextView } from '../src/build/fs-view.js';
import { parseGitRef, redactUrl } from '../src/build/git-source.js';
import { ImageStore } from '../src/image/store.js';
import { LayerCache } from '../src/snapshot/layers.js';
import { spawnCollect } from './helpers/spawn.js';

const gitDaemon = '/usr/lib/git-core/git-daemon';
const missing =
  process.getuid?.() !== 0
    ? 'needs root (the COPY engine writes owners)'
    : spawnSync('git', ['--version']).status !== 0
      ? 'needs git'
      : spawnSync(gitDaemon, ['--help']).error
        ? `needs git's daemon (${gitDaemon})`
        : undefined;
const suite = missing ? describe.skip : describe;

/** The committer time of the repository's commits, as git stores it (seconds). */
const T1 = 1_577_934_245; // 2020-01-02T03:04:05Z
const T2 = 1_600_000_000;

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, { cwd, encoding: 'utf8', env: gitEnv() });
}

/** A fixed author and committer (and date, when given), no system or user configuration. */
function gitEnv(date?: number): NodeJS.ProcessEnv {
  const when = date === undefined ? {} : { GIT_AUTHOR_DATE: `@${date} +0000`, GIT_COMMITTER_DATE: `@${date} +0000` };
  return {
    ...process.env,
    GIT_AUTHOR_NAME: 't',
    GIT_AUTHOR_EMAIL: 't@t',
    GIT_COMMITTER_NAME: 't',
    GIT_COMMITTER_EMAIL: 't@t',
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    ...when,
  };
}

function commit(cwd: string, message: string, date: number): void {
  git(cwd, 'add', '-A');
  execFileSync('git', ['commit', '-q', '-m', message], { cwd, env: gitEnv(date) });
}

async function freePort(): Promise<number> {
  const server = createTcpServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

suite(`ADD of a git repository and ADD --checksum${missing ? ` [skipped: ${missing}]` : ''}`, () => {
  let tmp: string;
  let daemon: ChildProcess | undefined;
  let http: Server | undefined;
  let base: string; // git://127.0.0.1:PORT
  let first: string; // the commit tagged v1
  let head: string;
  let n = 0;

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'ptest-git-'));
    mkdirSync(join(tmp, 'ctx-empty'));
    const served = join(tmp, 'served');
    mkdirSync(served);
    const port = await freePort();
    base = `git://127.0.0.1:${port}`;
    daemon = spawn(
      gitDaemon,
      ['--reuseaddr', '--export-all', `--base-path=${served}`, '--listen=127.0.0.1', `--port=${port}`, served],
      { stdio: 'ignore' },
    );
    // A submodule, served.
    const lib = join(tmp, 'lib');
    mkdirSync(lib);
    git(lib, 'init', '-q', '-b', 'main');
    writeFileSync(join(lib, 'lib.txt'), 'from the submodule\n');
    commit(lib, 'lib', T1);
    git(tmp, 'clone', '-q', '--bare', lib, join(served, 'lib.git'));
    for (let i = 0; i < 100; i++) {
      if (spawnSync('git', ['ls-remote', `${base}/lib.git`], { timeout: 5000 }).status === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    // The repository: a tag v1 (a.txt, sub/, run.sh, link), then a second commit on main with the submodule.
    const src = join(tmp, 'src');
    mkdirSync(join(src, 'sub', 'deep'), { recursive: true });
    git(src, 'init', '-q', '-b', 'main');
    writeFileSync(join(src, 'a.txt'), 'one\n');
    writeFileSync(join(src, 'sub', 'deep', 'd.txt'), 'deep\n');
    writeFileSync(join(src, 'run.sh'), '#!/bin/sh\necho run\n', { mode: 0o755 });
    symlinkSync('a.txt', join(src, 'link'));
    commit(src, 'one', T1);
    git(src, 'tag', 'v1');
    writeFileSync(join(src, 'a.txt'), 'two\n');
    git(src, 'submodule', 'add', '-q', `${base}/lib.git`, 'vendor/lib');
    commit(src, 'two', T2);
    first = git(src, 'rev-parse', 'v1^{commit}').trim();
    head = git(src, 'rev-parse', 'HEAD').trim();
    git(tmp, 'clone', '-q', '--bare', src, join(served, 'repo.git'));
  }, 60_000);

  afterAll(async () => {
    daemon?.kill('SIGTERM');
    http?.close();
    if (daemon && daemon.exitCode === null) await new Promise((resolve) => daemon?.once('exit', resolve));
    rmSync(tmp, { recursive: true, force: true });
  });

  const scratch = async () => {
    const dir = join(tmp, `scratch-${n++}`);
    mkdirSync(dir);
    return dir;
  };
  const request = (sources: string[], dest: string, extra: Partial<CopyRequest> = {}): CopyRequest => ({
    from: new ContextView(join(tmp, 'ctx-empty')),
    sources,
    dest,
    workdir: '/',
    preserveOwner: false,
    add: true,
    scratch,
    ...extra,
  });
  async function add(req: CopyRequest) {
    const upper = join(tmp, `upper-${n++}`);
    mkdirSync(upper);
    const entries = await selectSources(req);
    await copyInto(req, entries, [], upper);
    return { upper, entries };
  }
  const mtime = (path: string) => Math.round(lstatSync(path).mtimeMs / 1000);

  it('parses the fragment: ref and subdirectory; refuses what is no ref or leaves the repository', () => {
    expect(parseGitRef('https://example.com/r.git#v1:sub/dir')).toEqual({
      remote: 'https://example.com/r.git',
      ref: 'v1',
      subdir: 'sub/dir',
    });
    expect(parseGitRef('git@example.com:o/r.git')).toEqual({ remote: 'git@example.com:o/r.git' });
    expect(parseGitRef('git://h/r.git#:sub')).toEqual({ remote: 'git://h/r.git', subdir: 'sub' });
    expect(parseGitRef('https://h/r.git?ref=v1&subdir=a/b')).toEqual({
      remote: 'https://h/r.git',
      ref: 'v1',
      subdir: 'a/b',
    });
    expect(() => parseGitRef('git://h/r.git#--upload-pack=x')).toThrow('is not a git ref');
    expect(() => parseGitRef('git://h/r.git#v1:../x')).toThrow('leaves the repository');
    expect(() => parseGitRef('https://u:s3cret@h/r.git?x=1')).toThrow(
      'ADD https://u:xxxxx@h/r.git?x=1: unknown query key x',
    );
    expect(redactUrl('https://oauth2:t0ken@host/r.git#main')).toBe('https://oauth2:xxxxx@host/r.git#main');
    expect(redactUrl('https://t0ken@host/r.git')).toBe('https://xxxxx@host/r.git');
    expect(redactUrl('git@host:o/r.git')).toBe('git@host:o/r.git');
    expect(redactUrl('["https://me:s3cret@h/r.git", "/src"] and http://t0k@h/x')).toBe(
      '["https://me:xxxxx@h/r.git", "/src"] and http://xxxxx@h/x',
    );
  });

  it("adds the default branch's tree with its submodules, modes and links, without .git, at the commit's time", async () => {
    const { upper } = await add(request([`${base}/repo.git`], '/src'));
    expect(readFileSync(join(upper, 'src/a.txt'), 'utf8')).toBe('two\n');
    expect(readFileSync(join(upper, 'src/vendor/lib/lib.txt'), 'utf8')).toBe('from the submodule\n');
    expect(readlinkSync(join(upper, 'src/link'))).toBe('a.txt');
    expect(lstatSync(join(upper, 'src/run.sh')).mode & 0o777).toBe(0o755);
    expect(lstatSync(join(upper, 'src/a.txt')).mode & 0o777).toBe(0o644);
    expect(lstatSync(join(upper, 'src/a.txt')).uid).toBe(0);
    expect(() => lstatSync(join(upper, 'src/.git'))).toThrow();
    expect(mtime(join(upper, 'src/a.txt'))).toBe(T2);
  });

  it('a tag and a subdirectory: only its contents; a commit id works as the ref too', async () => {
    const { upper } = await add(request([`${base}/repo.git#v1:sub`], '/s/'));
    expect(readFileSync(join(upper, 's/deep/d.txt'), 'utf8')).toBe('deep\n');
    expect(() => lstatSync(join(upper, 's/a.txt'))).toThrow();
    expect(mtime(join(upper, 's/deep/d.txt'))).toBe(T1);
    const byId = await add(request([`${base}/repo.git#${first}`], '/c'));
    expect(readFileSync(join(byId.upper, 'c/a.txt'), 'utf8')).toBe('one\n');
    const byQuery = await add(request([`${base}/repo.git?ref=v1&subdir=sub`], '/q/'));
    expect(readFileSync(join(byQuery.upper, 'q/deep/d.txt'), 'utf8')).toBe('deep\n');
  });

  it("ignores a git hook's GIT_DIR and GIT_INDEX_FILE: the user's own repository is left alone", async () => {
    const mine = join(tmp, 'mine');
    mkdirSync(mine);
    git(mine, 'init', '-q', '-b', 'main');
    writeFileSync(join(mine, 'f'), 'mine\n');
    commit(mine, 'mine', T1);
    const before = git(mine, 'rev-parse', 'HEAD');
    const saved = { dir: process.env.GIT_DIR, index: process.env.GIT_INDEX_FILE };
    process.env.GIT_DIR = join(mine, '.git');
    process.env.GIT_INDEX_FILE = join(mine, '.git', 'index');
    try {
      const { upper } = await add(request([`${base}/repo.git#v1`], '/h'));
      expect(readFileSync(join(upper, 'h/a.txt'), 'utf8')).toBe('one\n');
    } finally {
      if (saved.dir === undefined) delete process.env.GIT_DIR;
      else process.env.GIT_DIR = saved.dir;
      if (saved.index === undefined) delete process.env.GIT_INDEX_FILE;
      else process.env.GIT_INDEX_FILE = saved.index;
    }
    expect(git(mine, 'rev-parse', 'HEAD')).toBe(before);
    expect(git(mine, 'status', '--porcelain')).toBe('');
  });

  it('--keep-git-dir keeps .git, and the same commit is the same cache key; another commit is another', async () => {
    const { upper, entries } = await add(request([`${base}/repo.git`], '/k', { keepGitDir: true }));
    expect(git(join(upper, 'k'), 'rev-parse', 'HEAD').trim()).toBe(head);
    // as a clone has it: the remote, the fetched tag; no FETCH_HEAD
    expect(git(join(upper, 'k'), 'remote', 'get-url', 'origin').trim()).toBe(`${base}/repo.git`);
    const tagged = await add(request([`${base}/repo.git#v1`], '/t', { keepGitDir: true }));
    expect(git(join(tagged.upper, 't'), 'describe', '--tags').trim()).toBe('v1');
    expect(() => lstatSync(join(tagged.upper, 't/.git/FETCH_HEAD'))).toThrow();
    const again = await selectSources(request([`${base}/repo.git`], '/k', { keepGitDir: true }));
    expect(hashSelection(again)).toBe(hashSelection(entries));
    const other = await selectSources(request([`${base}/repo.git#v1`], '/k', { keepGitDir: true }));
    expect(hashSelection(other)).not.toBe(hashSelection(entries));
    // without .git, the key is the tree's content
    const plain = await selectSources(request([`${base}/repo.git`], '/k'));
    expect(hashSelection(plain)).not.toBe(hashSelection(entries));
  });

  it('--checksum: the commit for a repository, the digest for a URL; a mismatch or a local source fails', async () => {
    await add(request([`${base}/repo.git#v1`], '/ok', { checksum: first }));
    await add(request([`${base}/repo.git#v1`], '/ok2', { checksum: first.slice(0, 12) }));
    await expect(add(request([`${base}/repo.git#v1`], '/x', { checksum: head }))).rejects.toThrow(
      `--checksum wants ${head}, but v1 is commit ${first}`,
    );
    await expect(add(request([`${base}/repo.git#v1`], '/x', { checksum: 'sha256:abc' }))).rejects.toThrow(
      'expected the hex id of a commit',
    );
    const body = Buffer.from('payload\n');
    // a user and password in the URL are sent as basic auth
    const basic = `Basic ${Buffer.from('me:pw').toString('base64')}`;
    http = createServer((req, res) => {
      if (req.url === '/private.txt' && req.headers.authorization !== basic) res.writeHead(401).end();
      else res.end(body);
    });
    await new Promise<void>((resolve) => http?.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}/file.txt`;
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    const { upper } = await add(request([url], '/dl/', { checksum: digest }));
    expect(readFileSync(join(upper, 'dl/file.txt'), 'utf8')).toBe('payload\n');
    const port = (http.address() as AddressInfo).port;
    const authorized = await add(request([`http://me:pw@127.0.0.1:${port}/private.txt`], '/p/'));
    expect(readFileSync(join(authorized.upper, 'p/private.txt'), 'utf8')).toBe('payload\n');
    const refused = await add(request([`http://me:wrong@127.0.0.1:${port}/private.txt`], '/p/')).catch((e) => e);
    expect(String(refused)).toContain(`cannot download http://me:xxxxx@127.0.0.1:${port}/private.txt: HTTP 401`);
    const wrong = `sha256:${'0'.repeat(64)}`;
    await expect(add(request([url], '/dl/', { checksum: wrong }))).rejects.toThrow(`not ${wrong} (--checksum)`);
    await expect(add(request([url], '/dl/', { checksum: 'md5:abc' }))).rejects.toThrow('expected a digest');
    await expect(add(request(['a.txt'], '/x', { checksum: digest }))).rejects.toThrow(
      'needs an http(s) URL or a git repository; a.txt is neither',
    );
    await expect(add(request([url, url], '/x', { checksum: digest }))).rejects.toThrow('exactly one source');
  });

  it('fails in one line: no such repository, ref or subdirectory; COPY of a repository', async () => {
    await expect(add(request([`${base}/nothing.git`], '/x'))).rejects.toThrow(
      /^ADD git:\/\/127\.0\.0\.1:\d+\/nothing\.git: git fetch failed: /,
    );
    // a password or token in the URL never shows
    const closed = await freePort();
    const failure = await add(request([`http://me:s3cr3t@127.0.0.1:${closed}/r.git`], '/x')).catch((e: Error) => e);
    expect(String(failure)).toContain(`ADD http://me:xxxxx@127.0.0.1:${closed}/r.git: git `);
    expect(String(failure)).not.toContain('s3cr3t');
    await expect(add(request([`${base}/repo.git#no-such-branch`], '/x'))).rejects.toThrow('git fetch failed');
    await expect(add(request([`${base}/repo.git#v1:nowhere`], '/x'))).rejects.toThrow(
      `commit ${first} has no directory nowhere`,
    );
    await expect(selectSources(request([`${base}/repo.git`], '/x', { add: false }))).rejects.toThrow(
      'COPY cannot copy from a URL',
    );
  });

  it('petri build: ADD of a repository lands in the image; the rebuild is cached, and the checkout is gone', async () => {
    const ctx = join(tmp, 'ctx');
    mkdirSync(ctx, { recursive: true });
    writeFileSync(
      join(ctx, 'Dockerfile'),
      // the last ADD's password must show nowhere: not in the progress, not in the image's history
      `FROM scratch\nADD ${base}/repo.git#v1:sub /sub\nADD --keep-git-dir=true ${base}/repo.git /repo\n` +
        `ADD ["http://me:pw@127.0.0.1:${(http?.address() as AddressInfo).port}/private.txt", "/p/"]\n`,
    );
    const root = join(tmp, 'root');
    // not spawnSync: this process serves the download
    const main = join(import.meta.dirname, '..', 'dist', 'cli', 'main.js');
    const build = () =>
      spawnCollect(process.execPath, [main, 'build', '--progress', 'plain', '-t', 'gitadd:1', ctx], {
        env: { ...process.env, PETRI_ROOT: root },
      }).exit;
    const r = await build();
    expect(r.stderr).not.toContain('error');
    expect(r.code).toBe(0);
    const image = await ImageStore.open(join(root, 'images')).resolve('gitadd:1');
    const layers = new LayerCache(join(root, 'layers'));
    const [, repoLayer, downloadLayer] = [1, 2, 3].map(
      (n) => layers.stackPath(image.config.rootfs.diff_ids.slice(0, n)) as string,
    );
    expect(readFileSync(join(repoLayer as string, 'repo', 'a.txt'), 'utf8')).toBe('two\n');
    expect(git(join(repoLayer as string, 'repo'), 'rev-parse', 'HEAD').trim()).toBe(head);
    expect(readFileSync(join(downloadLayer as string, 'p', 'private.txt'), 'utf8')).toBe('payload\n');
    expect(r.stderr).toContain('me:xxxxx@');
    expect(r.stderr).not.toContain('me:pw@');
    const history = image.config.history?.map((h) => h.created_by ?? '') ?? [];
    expect(history.some((line) => line.includes('me:xxxxx@'))).toBe(true);
    expect(history.join('\n')).not.toContain('me:pw@');
    const again = await build();
    expect(again.code).toBe(0);
    expect(again.stderr.match(/ CACHED$/gm)?.length).toBe(3);
    expect(again.stdout).toBe(r.stdout);
    // the checkouts were in the layer cache's scratch directories, removed with the build
    expect(readdirSync(join(root, 'layers')).filter((name) => name.startsWith('.tmp-'))).toEqual([]);
  });
});
