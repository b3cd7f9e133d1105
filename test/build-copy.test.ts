import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import zlib from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type CopyRequest, copyInto, hashSelection, type SelectedEntry, selectSources } from '../src/build/copy.js';
import { ContextView, type FsView, LayeredView, opaqueDirs, readViewFile, resolvePath } from '../src/build/fs-view.js';
import { IgnoreMatcher } from '../src/dockerfile/dockerignore.js';
import { FsOps } from '../src/snapshot/fsops.js';
import { tarStream } from '../src/snapshot/tar-pax.js';

const isRoot = process.getuid?.() === 0;
const suite = (title: string, body: () => void) =>
  isRoot ? describe(title, body) : describe.skip(`${title} [skipped: needs root (chown, mknod)]`, body);

type Spec = Record<string, string | { link: string } | { dir: true } | { fifo: true }>;

/** Writes files (`content`), symlinks (`{link}`) and empty directories (`{dir}`) under `root`. */
function tree(root: string, spec: Spec): void {
  mkdirSync(root, { recursive: true });
  for (const [path, what] of Object.entries(spec)) {
    const full = join(root, path);
    mkdirSync(dirname(full), { recursive: true });
    if (typeof what === 'string') writeFileSync(full, what);
    else if ('link' in what) symlinkSync(what.link, full);
    else if ('dir' in what) mkdirSync(full, { recursive: true });
    else execFileSync('mkfifo', [full]);
  }
}

/** Every path under `dir` (sorted), directories with a trailing `/`, symlinks as `name -> target`. */
function listing(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(dir, prefix)).sort()) {
    const rel = prefix ? `${prefix}/${name}` : name;
    const stat = lstatSync(join(dir, rel));
    if (stat.isDirectory()) out.push(`${rel}/`, ...listing(dir, rel));
    else if (stat.isSymbolicLink()) out.push(`${rel} -> ${readlinkSync(join(dir, rel))}`);
    else out.push(rel);
  }
  return out;
}

const mode = (path: string) => lstatSync(path).mode & 0o7777;
const owner = (path: string) => {
  const s = lstatSync(path);
  return [s.uid, s.gid];
};
const mtime = (path: string) => Math.round(lstatSync(path).mtimeMs / 1000);

suite('COPY/ADD file engine', () => {
  let tmp: string;
  let ctx: string;
  let n = 0;
  beforeEach(() => {
    tmp = mkdtempSync(join(tmpdir(), 'ptest-copy-'));
    ctx = join(tmp, 'ctx');
    tree(ctx, {
      'a.txt': 'A',
      'b.txt': 'B',
      'c.md': 'C',
      'dir/x.txt': 'X',
      'dir/sub/y.txt': 'Y',
      'dir/sub/keep': 'K',
      'dir/rel-link': { link: 'x.txt' },
      link: { link: 'a.txt' },
      'packages/foo/package.json': '{"name":"foo"}',
      'packages/foo/src/index.js': 'foo',
      'packages/bar/package.json': '{"name":"bar"}',
    });
    // Context files belong to whoever checked them out: COPY makes them 0:0.
    for (const f of ['a.txt', 'dir/x.txt', 'dir']) chownSync(join(ctx, f), 1234, 1234);
    chmodSync(join(ctx, 'b.txt'), 0o741);
    utimesSync(join(ctx, 'a.txt'), 1_500_000_000, 1_500_000_000);
  });
  afterEach(() => rmSync(tmp, { recursive: true, force: true }));

  const fresh = () => {
    const dir = join(tmp, `upper-${n++}`);
    mkdirSync(dir);
    return dir;
  };
  const context = (ignore: string[] = []) => new ContextView(ctx, new IgnoreMatcher(ignore));
  const request = (sources: string[], dest: string, extra: Partial<CopyRequest> = {}): CopyRequest => ({
    from: context(),
    sources,
    dest,
    workdir: '/',
    preserveOwner: false,
    ...extra,
  });
  async function copy(req: CopyRequest, lower: string[] | LayeredView = [], upper = fresh()) {
    const entries = await selectSources(req);
    await copyInto(req, entries, lower, upper);
    return { upper, entries };
  }

  describe('sources and destinations', () => {
    it('copies a file into a directory dest, with its mode and mtime, owned by 0:0', async () => {
      const { upper } = await copy(request(['a.txt', 'b.txt'], '/app/'));
      expect(listing(upper)).toEqual(['app/', 'app/a.txt', 'app/b.txt']);
      expect(readFileSync(join(upper, 'app/a.txt'), 'utf8')).toBe('A');
      expect(owner(join(upper, 'app/a.txt'))).toEqual([0, 0]);
      expect(mtime(join(upper, 'app/a.txt'))).toBe(1_500_000_000);
      expect(mode(join(upper, 'app/b.txt'))).toBe(0o741);
      expect(mode(join(upper, 'app'))).toBe(0o755);
    });

    it('copies a single file to dest as its new name, relative to WORKDIR', async () => {
      const { upper } = await copy(request(['a.txt'], 'conf/renamed', { workdir: '/srv' }));
      expect(listing(upper)).toEqual(['srv/', 'srv/conf/', 'srv/conf/renamed']);
    });

    it('copies a file into a dest that is a directory below, even without a trailing slash', async () => {
      const lower = join(tmp, 'lower');
      tree(lower, { 'etc/passwd': 'root:x:0:0::/root:/bin/sh\n' });
      const { upper } = await copy(request(['a.txt'], '/etc'), [lower]);
      expect(listing(upper)).toEqual(['etc/', 'etc/a.txt']);
    });

    it('copies the contents of a source directory, not the directory itself', async () => {
      const { upper } = await copy(request(['dir'], '/dst'));
      expect(listing(upper)).toEqual([
        'dst/',
        'dst/rel-link -> x.txt',
        'dst/sub/',
        'dst/sub/keep',
        'dst/sub/y.txt',
        'dst/x.txt',
      ]);
      expect(owner(join(upper, 'dst/x.txt'))).toEqual([0, 0]);
      expect(owner(join(upper, 'dst/rel-link'))).toEqual([0, 0]);
      // A dest made for a directory source gets the source directory's mtime.
      expect(mtime(join(upper, 'dst'))).toBe(mtime(join(ctx, 'dir')));
    });

    it('expands wildcards per path segment; a wildcard makes dest a directory and copies matched directories’ contents', async () => {
      const { upper } = await copy(request(['*.txt'], '/w'));
      expect(listing(upper)).toEqual(['w/', 'w/a.txt', 'w/b.txt']);
      const nested = await copy(request(['dir/*/y.txt', 'di?'], '/n/'));
      expect(listing(nested.upper)).toEqual([
        'n/',
        'n/rel-link -> x.txt',
        'n/sub/',
        'n/sub/keep',
        'n/sub/y.txt',
        'n/x.txt',
        'n/y.txt',
      ]);
      const classes = await copy(request(['[ab].txt'], '/c/'));
      expect(listing(classes.upper)).toEqual(['c/', 'c/a.txt', 'c/b.txt']);
    });

    it('accepts a wildcard that matches nothing, like BuildKit, and writes nothing', async () => {
      const { upper, entries } = await copy(request(['*.nothing'], '/x/'));
      expect(entries).toEqual([]);
      expect(listing(upper)).toEqual([]);
    });

    it('fails on a missing source with one line naming it', async () => {
      await expect(selectSources(request(['nope'], '/x'))).rejects.toThrow(
        /^COPY failed: file not found in build context: stat nope: file does not exist$/,
      );
      const ignored = { ...request(['a.txt'], '/x'), from: context(['*.txt']) };
      await expect(selectSources(ignored)).rejects.toThrow(
        'COPY failed: file not found in build context or excluded by .dockerignore: stat a.txt: file does not exist',
      );
      await expect(selectSources(request(['nope'], '/x', { add: true }))).rejects.toThrow(/^ADD failed/);
    });

    it('follows a symlink given as the source, and keeps symlinks inside directories', async () => {
      const { upper } = await copy(request(['link'], '/l'));
      expect(lstatSync(join(upper, 'l')).isFile()).toBe(true);
      expect(readFileSync(join(upper, 'l'), 'utf8')).toBe('A');
      const named = await copy(request(['link'], '/d/'));
      expect(listing(named.upper)).toEqual(['d/', 'd/link']); // lands under the name it was given
    });

    it('writes heredocs as files (0644 unless told), named after the heredoc in a directory dest', async () => {
      const req = request([], '/etc/motd', { inline: [{ name: 'EOF', content: 'hello\n' }] });
      const { upper } = await copy(req);
      expect(readFileSync(join(upper, 'etc/motd'), 'utf8')).toBe('hello\n');
      expect(mode(join(upper, 'etc/motd'))).toBe(0o644);
      const two = await copy(
        request([], '/s/', {
          inline: [
            { name: 'one.sh', content: 'echo 1\n', mode: 0o755 },
            { name: 'two', content: '2' },
          ],
        }),
      );
      expect(listing(two.upper)).toEqual(['s/', 's/one.sh', 's/two']);
      expect(mode(join(two.upper, 's/one.sh'))).toBe(0o755);
    });

    it('copies into an empty lower (FROM scratch) and keeps hard links within one copy', async () => {
      linkSync(join(ctx, 'dir/x.txt'), join(ctx, 'dir/x-hard.txt'));
      const { upper } = await copy(request(['dir'], '/'));
      expect(statSync(join(upper, 'x.txt')).ino).toBe(statSync(join(upper, 'x-hard.txt')).ino);
    });

    it('refuses to put a directory on a file or a file on a directory', async () => {
      const lower = join(tmp, 'lower');
      tree(lower, { 'etc/file': 'f', 'etc/dir/inner': 'i' });
      await expect(copy(request(['dir'], '/etc/file'), [lower])).rejects.toThrow(
        'COPY failed: cannot copy to non-directory: /etc/file',
      );
      tree(join(tmp, 'ctx2'), { 'x/dir': 'now a file' });
      const req = { ...request(['x'], '/etc'), from: new ContextView(join(tmp, 'ctx2')) };
      await expect(copy(req, [lower])).rejects.toThrow('cannot replace the directory /etc/dir with a file');
    });
  });

  describe('--parents and --exclude', () => {
    it('keeps the sources’ paths with --parents, from the root or from a /./ pivot', async () => {
      const { upper } = await copy(request(['packages/*/package.json', 'dir/sub/y.txt'], '/app/', { parents: true }));
      expect(listing(upper)).toEqual([
        'app/',
        'app/dir/',
        'app/dir/sub/',
        'app/dir/sub/y.txt',
        'app/packages/',
        'app/packages/bar/',
        'app/packages/bar/package.json',
        'app/packages/foo/',
        'app/packages/foo/package.json',
      ]);
      const pivot = await copy(request(['dir/./sub/y.txt', 'packages/./foo'], '/p/', { parents: true }));
      expect(listing(pivot.upper)).toEqual([
        'p/',
        'p/foo/',
        'p/foo/package.json',
        'p/foo/src/',
        'p/foo/src/index.js',
        'p/sub/',
        'p/sub/y.txt',
      ]);
      const wildPivot = await copy(request(['pack*/./*/package.json'], '/w/', { parents: true }));
      expect(listing(wildPivot.upper)).toEqual(['w/', 'w/bar/', 'w/bar/package.json', 'w/foo/', 'w/foo/package.json']);
      await expect(selectSources(request(['dir/nope'], '/p/', { parents: true }))).rejects.toThrow(
        'stat dir/nope: file does not exist',
      );
    });

    it('excludes below each source with .dockerignore syntax, exceptions re-including', async () => {
      const shallow = await copy(request(['dir'], '/e', { exclude: ['*.txt'] }));
      expect(listing(shallow.upper)).toEqual(['e/', 'e/rel-link -> x.txt', 'e/sub/', 'e/sub/keep', 'e/sub/y.txt']);
      const deep = await copy(request(['dir'], '/e', { exclude: ['**/*.txt', 'rel-link'] }));
      expect(listing(deep.upper)).toEqual(['e/', 'e/sub/', 'e/sub/keep']);
      const except = await copy(request(['dir'], '/e', { exclude: ['sub', '!sub/keep'] }));
      expect(listing(except.upper)).toEqual(['e/', 'e/rel-link -> x.txt', 'e/sub/', 'e/sub/keep', 'e/x.txt']);
      const wild = await copy(request(['*'], '/w/', { exclude: ['*.txt', 'packages', 'link'] }));
      expect(listing(wild.upper)).toContain('w/c.md');
      expect(listing(wild.upper)).not.toContain('w/a.txt');
      expect(listing(wild.upper)).not.toContain('w/packages/');
    });
  });

  describe('the build context and .dockerignore', () => {
    it('hides ignored paths, re-includes exceptions with their parent directories', async () => {
      const view = context(['*.txt', '!b.txt', 'dir', '!dir/sub/y.txt', 'packages', 'link']);
      expect(view.readdir('')).toEqual(['b.txt', 'c.md', 'dir']);
      expect(view.readdir('dir')).toEqual(['sub']);
      expect(view.lstat('dir/x.txt')).toBeUndefined();
      expect(view.lstat('a.txt')).toBeUndefined();
      const { upper } = await copy({ ...request(['.'], '/c/'), from: view });
      expect(listing(upper)).toEqual(['c/', 'c/b.txt', 'c/c.md', 'c/dir/', 'c/dir/sub/', 'c/dir/sub/y.txt']);
    });

    it('does not look inside an ignored directory for an exception that does not name it (Docker)', () => {
      const view = context(['dir', '!**/keep']);
      expect(view.readdir('')).not.toContain('dir');
    });

    it('resolves paths inside the view: absolute symlinks and .. stay in the root', () => {
      tree(ctx, { 'abs-link': { link: '/dir/sub' }, 'up-link': { link: '../../../dir' }, loop: { link: 'loop' } });
      const view = context();
      expect(resolvePath(view, 'abs-link/y.txt')).toBe('dir/sub/y.txt');
      expect(resolvePath(view, 'up-link/x.txt')).toBe('dir/x.txt');
      expect(resolvePath(view, '../../a.txt')).toBe('a.txt');
      expect(readViewFile(view, '/abs-link/../x.txt')?.toString()).toBe('X');
      expect(() => resolvePath(view, 'loop')).toThrow('too many levels of symbolic links');
    });
  });

  describe('layered views', () => {
    /** Three layers: base, one with a whiteout and an opaque directory, a top one. */
    async function layers(): Promise<string[]> {
      const [l0, l1, l2] = ['l0', 'l1', 'l2'].map((l) => join(tmp, l)) as [string, string, string];
      tree(l0, {
        'etc/a': 'a0',
        'etc/b': 'b0',
        'opq/old1': 'o1',
        'opq/old/deep': 'd',
        'usr/bin/tool': 'tool',
        'usr/local': { link: '/opt' },
        'opt/readme': 'r',
        'gone/inner': 'i',
        'file-then-dir': 'f',
      });
      tree(l1, { 'opq/new1': 'n1', 'etc/b': 'b1', 'file-then-dir/x': 'x' });
      tree(l2, { 'etc/c': 'c2', gone: 'now a file' });
      const ops = new FsOps();
      try {
        await ops.whiteout(join(l1, 'etc/a'));
        await ops.opaque(join(l1, 'opq'));
      } finally {
        await ops.close();
      }
      for (const l of [l0, l1]) chownSync(join(l, 'etc/b'), 123, 456);
      return [l2, l1, l0];
    }

    it('merges layers with whiteouts, opaque directories and non-directories hiding what is below', async () => {
      const lower = await layers();
      expect([...opaqueDirs(lower[1] as string)]).toEqual(['opq']);
      const view = new LayeredView(lower);
      expect(view.readdir('')).toEqual(['etc', 'file-then-dir', 'gone', 'opq', 'opt', 'usr']);
      expect(view.readdir('etc')).toEqual(['b', 'c']);
      expect(view.lstat('etc/a')).toBeUndefined();
      expect(readFileSync(view.hostPath('etc/b'), 'utf8')).toBe('b1');
      expect(view.readdir('opq')).toEqual(['new1']);
      expect(view.lstat('opq/old1')).toBeUndefined();
      expect(view.lstat('gone')?.isFile()).toBe(true);
      expect(view.lstat('gone/inner')).toBeUndefined();
      expect(view.lstat('file-then-dir')?.isDirectory()).toBe(true);
      expect(view.readdir('file-then-dir')).toEqual(['x']);
      expect(readViewFile(view, 'usr/local/readme')?.toString()).toBe('r');
    });

    it('copies --from a stage with owners kept and whited-out files absent', async () => {
      const lower = await layers();
      const req: CopyRequest = { ...request(['/etc', '/usr/local/readme'], '/out/'), from: new LayeredView(lower) };
      req.preserveOwner = true;
      const { upper } = await copy(req);
      expect(listing(upper)).toEqual(['out/', 'out/b', 'out/c', 'out/readme']);
      expect(owner(join(upper, 'out/b'))).toEqual([123, 456]);
      expect(readFileSync(join(upper, 'out/b'), 'utf8')).toBe('b1');
    });

    it('copies device nodes and fifos from a stage', async () => {
      const l = join(tmp, 'dev-layer');
      tree(l, { 'dev/fifo': { fifo: true } });
      const ops = new FsOps();
      try {
        await ops.mknod(join(l, 'dev/null'), 'c', 1, 3, 0o666);
      } finally {
        await ops.close();
      }
      const req: CopyRequest = { ...request(['/dev'], '/dev'), from: new LayeredView([l]), preserveOwner: true };
      const { upper } = await copy(req);
      const nul = lstatSync(join(upper, 'dev/null'));
      expect(nul.isCharacterDevice()).toBe(true);
      expect(nul.rdev).toBe(lstatSync('/dev/null').rdev);
      expect(lstatSync(join(upper, 'dev/fifo')).isFIFO()).toBe(true);
    });
  });

  describe('the upper dir over the lower ones', () => {
    it('copies existing parents up with their mode, owner and mtime; makes missing ones 0755 root', async () => {
      const lower = join(tmp, 'lower');
      tree(lower, { 'usr/share/x': 'x' });
      chmodSync(join(lower, 'usr/share'), 0o750);
      chownSync(join(lower, 'usr/share'), 5, 6);
      utimesSync(join(lower, 'usr/share'), 1_400_000_000, 1_400_000_000);
      utimesSync(join(lower, 'usr'), 1_300_000_000, 1_300_000_000);
      chmodSync(lower, 0o755);
      const { upper } = await copy(request(['a.txt'], '/usr/share/doc/new/'), [lower]);
      expect(listing(upper)).toEqual([
        'usr/',
        'usr/share/',
        'usr/share/doc/',
        'usr/share/doc/new/',
        'usr/share/doc/new/a.txt',
      ]);
      expect([mode(join(upper, 'usr/share')), ...owner(join(upper, 'usr/share'))]).toEqual([0o750, 5, 6]);
      expect(mtime(join(upper, 'usr/share'))).toBe(1_400_000_000);
      expect(mtime(join(upper, 'usr'))).toBe(1_300_000_000);
      expect([mode(join(upper, 'usr/share/doc')), ...owner(join(upper, 'usr/share/doc'))]).toEqual([0o755, 0, 0]);
      expect(mode(upper)).toBe(0o755); // the root, copied up too
    });

    it('keeps an existing dest directory’s mode and owner, giving it the source directory’s mtime (BuildKit)', async () => {
      const lower = join(tmp, 'lower');
      tree(lower, { 'app/old': 'o' });
      chmodSync(join(lower, 'app'), 0o700);
      chownSync(join(lower, 'app'), 5, 5);
      utimesSync(join(ctx, 'dir'), 1_450_000_000, 1_450_000_000);
      const { upper } = await copy(request(['dir'], '/app'), [lower]);
      expect([mode(join(upper, 'app')), ...owner(join(upper, 'app'))]).toEqual([0o700, 5, 5]);
      expect(mtime(join(upper, 'app'))).toBe(1_450_000_000);
      expect(existsSync(join(upper, 'app/old'))).toBe(false); // still in the lower dir, not copied up
    });

    it('follows symlinked parents of the destination inside the root', async () => {
      const lower = join(tmp, 'lower');
      tree(lower, {
        'opt/keep': 'k',
        'usr/local': { link: '/opt' },
        'usr/rel': { link: '../opt' },
        'usr/out': { link: '../../../../../../tmp/ptest-never-here' },
      });
      const { upper } = await copy(request(['a.txt'], '/usr/local/bin/'), [lower]);
      expect(listing(upper)).toEqual(['opt/', 'opt/bin/', 'opt/bin/a.txt']);
      const rel = await copy(request(['a.txt'], '/usr/rel/b.txt'), [lower]);
      expect(listing(rel.upper)).toEqual(['opt/', 'opt/b.txt']);
      const out = await copy(request(['a.txt'], '/usr/out/'), [lower]);
      expect(listing(out.upper)).toEqual(['tmp/', 'tmp/ptest-never-here/', 'tmp/ptest-never-here/a.txt']);
      expect(existsSync('/tmp/ptest-never-here')).toBe(false);
    });

    it('applies --chown and --chmod to what is copied and to the directories it makes (BuildKit)', async () => {
      const req = request(['dir'], '/new/deep/', { chown: { uid: 1000, gid: 1001 }, chmod: 0o750 });
      const { upper } = await copy(req);
      for (const path of ['new', 'new/deep', 'new/deep/x.txt', 'new/deep/sub', 'new/deep/sub/y.txt']) {
        expect([path, mode(join(upper, path)), ...owner(join(upper, path))]).toEqual([path, 0o750, 1000, 1001]);
      }
      expect(owner(join(upper, 'new/deep/rel-link'))).toEqual([1000, 1001]);
      expect(lstatSync(join(upper, 'new/deep/rel-link')).isSymbolicLink()).toBe(true);
    });

    it('keeps writes inside the upper dir whatever the dest or the lower symlinks say', async () => {
      const host = mkdtempSync(join(tmpdir(), 'ptest-host-'));
      try {
        const lower = join(tmp, 'lower');
        tree(lower, { 'evil-abs': { link: host }, 'evil-rel': { link: `../../../../../../..${host}` } });
        const targets = ['/evil-abs/a', '/evil-rel/b', '../../../../../..'];
        for (const dest of targets) {
          const { upper } = await copy(request(['a.txt'], dest, { workdir: '/w' }), [lower]);
          expect(listing(upper).length).toBeGreaterThan(0);
        }
        expect(readdirSync(host)).toEqual([]);
        tree(ctx, { 'out-abs': { link: '/etc/passwd' }, 'out-rel': { link: '../../../../../etc' } });
        await expect(selectSources(request(['out-abs'], '/x'))).rejects.toThrow('stat out-abs: file does not exist');
        await expect(selectSources(request(['out-rel/passwd'], '/x'))).rejects.toThrow('file does not exist');
        await expect(selectSources(request(['../../../../etc/passwd'], '/x'))).rejects.toThrow('file does not exist');
      } finally {
        rmSync(host, { recursive: true, force: true });
      }
    });
  });

  describe('ADD', () => {
    async function tarball(
      items: { name: string; type?: string; body?: string; linkname?: string; uid?: number; mode?: number }[],
    ) {
      const pack = tarStream().pack();
      const chunks: Buffer[] = [];
      const collected = (async () => {
        for await (const chunk of pack) chunks.push(chunk as Buffer);
      })();
      for (const { body, ...header } of items) {
        await new Promise<void>((resolve, reject) => {
          const h = { mtime: new Date(1_600_000_000_000), mode: 0o644, uid: 7, gid: 8, ...header };
          pack.entry(h as never, body ?? '', (error) => (error ? reject(error) : resolve()));
        });
      }
      pack.finalize();
      await collected;
      return Buffer.concat(chunks);
    }

    it('extracts local tar archives (plain and gzip) into dest, owners from the archive unless --chown', async () => {
      const tar = await tarball([
        { name: 'pkg/', type: 'directory', mode: 0o700 },
        { name: 'pkg/bin/tool', body: '#!/bin/sh\n', mode: 0o755 },
        { name: 'pkg/link', type: 'symlink', linkname: 'bin/tool' },
        { name: 'pkg/hard', type: 'link', linkname: 'pkg/bin/tool' },
      ]);
      writeFileSync(join(ctx, 'plain.tar'), tar);
      writeFileSync(join(ctx, 'packed.tgz'), zlib.gzipSync(tar));
      const { upper, entries } = await copy(request(['plain.tar'], '/opt', { add: true }));
      expect(entries[0]?.archive).toBe('tar');
      expect(listing(upper)).toEqual([
        'opt/',
        'opt/pkg/',
        'opt/pkg/bin/',
        'opt/pkg/bin/tool',
        'opt/pkg/hard',
        'opt/pkg/link -> bin/tool',
      ]);
      expect([mode(join(upper, 'opt/pkg')), ...owner(join(upper, 'opt/pkg'))]).toEqual([0o700, 7, 8]);
      expect(mtime(join(upper, 'opt/pkg'))).toBe(1_600_000_000);
      expect(owner(join(upper, 'opt/pkg/bin'))).toEqual([0, 0]); // made, not in the archive
      expect(statSync(join(upper, 'opt/pkg/hard')).ino).toBe(statSync(join(upper, 'opt/pkg/bin/tool')).ino);
      const gz = await copy(request(['packed.tgz'], '/opt/', { add: true, chown: { uid: 1, gid: 2 } }));
      expect(listing(gz.upper)).toContain('opt/pkg/bin/tool');
      expect(owner(join(gz.upper, 'opt/pkg/bin/tool'))).toEqual([1, 2]);
      // COPY never extracts; ADD of a file that is not an archive copies it.
      const plain = await copy(request(['plain.tar', 'a.txt'], '/c/', { add: false }));
      expect(listing(plain.upper)).toEqual(['c/', 'c/a.txt', 'c/plain.tar']);
      const notTar = await copy(request(['a.txt'], '/n/', { add: true }));
      expect(listing(notTar.upper)).toEqual(['n/', 'n/a.txt']);
    });

    it('refuses archive entries that climb out of dest, and archives it cannot decompress', async () => {
      writeFileSync(join(ctx, 'evil.tar'), await tarball([{ name: '../../../etc/evil', body: 'x' }]));
      await expect(copy(request(['evil.tar'], '/opt/', { add: true }))).rejects.toThrow(
        'climbs out of the destination',
      );
      // A file that only starts like bzip2 is no archive: copied as it is, like Docker.
      writeFileSync(join(ctx, 'x.tar.bz2'), Buffer.concat([Buffer.from('BZh91AY&SY'), Buffer.alloc(600)]));
      const notBzip2 = await copy(request(['x.tar.bz2'], '/opt/', { add: true }));
      expect(listing(notBzip2.upper)).toEqual(['opt/', 'opt/x.tar.bz2']);
      // A real xz archive without the xz command: said, with the package to install.
      writeFileSync(
        join(ctx, 'y.tar.xz'),
        spawnSync('xz', ['-c'], { input: await tarball([{ name: 'f', body: 'x' }]) }).stdout,
      );
      const path = process.env.PATH;
      process.env.PATH = ctx;
      try {
        await expect(selectSources(request(['y.tar.xz'], '/opt/', { add: true }))).rejects.toThrow(
          'ADD y.tar.xz: xz archives need the xz command on this machine (Debian and Ubuntu: apt-get install xz-utils)',
        );
      } finally {
        process.env.PATH = path;
      }
    });

    it('extracts bzip2 and xz tars with the machine’s bzip2 and xz, as Docker does', async () => {
      const tar = await tarball([
        { name: 'pkg/', type: 'directory', mode: 0o750 },
        { name: 'pkg/data', body: 'x'.repeat(100_000), mode: 0o640 },
        { name: 'pkg/link', type: 'symlink', linkname: 'data' },
      ]);
      for (const [command, file] of [
        ['bzip2', 'p.tar.bz2'],
        ['xz', 'p.tar.xz'],
      ] as const) {
        const packed = spawnSync(command, ['-c'], { input: tar, maxBuffer: 1 << 24 });
        expect(packed.status).toBe(0);
        writeFileSync(join(ctx, file), packed.stdout);
        const { upper, entries } = await copy(request([file], '/opt', { add: true }));
        expect(entries[0]?.archive).toBe(command);
        expect(listing(upper)).toEqual(['opt/', 'opt/pkg/', 'opt/pkg/data', 'opt/pkg/link -> data']);
        expect(readFileSync(join(upper, 'opt/pkg/data'), 'utf8')).toBe('x'.repeat(100_000));
        expect(mode(join(upper, 'opt/pkg'))).toBe(0o750);
        // Cut short (past bzip2's first 900 kB block, so that it starts as an archive): an error naming the command.
        const big = await tarball([{ name: 'big', body: randomBytes(1_500_000).toString('base64') }]);
        const whole = spawnSync(command, ['-c'], { input: big, maxBuffer: 1 << 24 }).stdout;
        writeFileSync(join(ctx, `cut-${file}`), whole.subarray(0, whole.length - 1000));
        await expect(copy(request([`cut-${file}`], '/cut', { add: true }))).rejects.toThrow(`${command} -d failed`);
      }
    });

    it('downloads http URLs as files named after the URL, mode 0600, never extracted', async () => {
      const tar = zlib.gzipSync(await tarball([{ name: 'f', body: 'x' }]));
      const server = createServer((_req, res) => {
        res.writeHead(200, { 'last-modified': new Date(1_700_000_000_000).toUTCString() });
        res.end(tar);
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      try {
        const { port } = server.address() as AddressInfo;
        const url = `http://127.0.0.1:${port}/files/release.tar.gz?x=1`;
        const { upper } = await copy(request([url], '/dl/', { add: true }));
        expect(listing(upper)).toEqual(['dl/', 'dl/release.tar.gz']);
        expect(mode(join(upper, 'dl/release.tar.gz'))).toBe(0o600);
        expect(mtime(join(upper, 'dl/release.tar.gz'))).toBe(1_700_000_000);
        await expect(selectSources(request([url], '/dl/'))).rejects.toThrow('COPY cannot copy from a URL');
      } finally {
        server.close();
      }
    });
  });

  describe('hashSelection', () => {
    const key = async (req: CopyRequest) => hashSelection(await selectSources(req));

    it('ignores mtimes but changes with content, mode, owner and link targets', async () => {
      const base = await key(request(['dir'], '/d'));
      utimesSync(join(ctx, 'dir/x.txt'), 1_000_000, 1_000_000);
      expect(await key(request(['dir'], '/d'))).toBe(base);
      writeFileSync(join(ctx, 'dir/x.txt'), 'X2');
      const content = await key(request(['dir'], '/d'));
      expect(content).not.toBe(base);
      chmodSync(join(ctx, 'dir/x.txt'), 0o600);
      const modeKey = await key(request(['dir'], '/d'));
      expect(modeKey).not.toBe(content);
      expect(await key(request(['dir'], '/d', { chown: { uid: 1, gid: 1 } }))).not.toBe(modeKey);
      expect(await key(request(['dir'], '/d', { chmod: 0o644 }))).not.toBe(modeKey);
      rmSync(join(ctx, 'dir/rel-link'));
      symlinkSync('sub', join(ctx, 'dir/rel-link'));
      expect(await key(request(['dir'], '/d'))).not.toBe(modeKey);
    });

    it('sees owners only where they are kept (--from), and the selection, not the dest', async () => {
      const lower = join(tmp, 'l');
      tree(lower, { 'f/x': 'x' });
      const view: FsView = new LayeredView([lower]);
      const from = (preserveOwner: boolean) => ({ ...request(['/f'], '/d'), from: view, preserveOwner });
      const before = [await key(from(true)), await key(from(false))];
      chownSync(join(lower, 'f/x'), 99, 99);
      expect(await key(from(true))).not.toBe(before[0]);
      expect(await key(from(false))).toBe(before[1]);
      const entries: SelectedEntry[] = await selectSources(request(['a.txt'], '/x'));
      expect(entries.map((e) => [e.role, e.target, e.digest?.slice(0, 7)])).toEqual([['top-file', 'a.txt', 'sha256:']]);
    });
  });
});
