import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRoot } from './helpers/kernel.js';
import { replayPackage, settle } from './helpers/replay-package.js';

const _top = join(import.meta.dirname, '..');

/**
 * The replay's delta (src/build/delta.ts, runner/replay.c): a build whose only
 * change is the content of files its last COPY steps alone read is redone by
 * petri-runner without Node, to the image Node would have built. Node is kept
 * off PATH where the runner must answer (else "cannot run node", exit 127), and
 * each image is compared with the one Node builds from the same files in a
 * store of its own.
 */
(isRoot ? describe : describe.skip)(
  `petri build replay delta${isRoot ? '' : ' [skipped: needs root (petri build)]'}`,
  () => {
    let dir: string;
    let pkg: string;
    let noNode: string;
    const env: Record<string, string> = {};

    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'ptest-delta-'));
      ({ pkg, noNode } = replayPackage(dir));
      Object.assign(env, process.env);
      delete env.SOURCE_DATE_EPOCH;
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    const petri = (args: string[], options: { node?: boolean; root: string; extra?: object }) =>
      spawnSync(join(pkg, 'bin', 'petri'), args, {
        encoding: 'utf8',
        cwd: dir,
        env: {
          ...env,
          PETRI_ROOT: join(dir, options.root),
          ...options.extra,
          ...(options.node === false ? { PATH: noNode } : {}),
        },
      });
    const ok = (result: ReturnType<typeof petri>) => {
      expect(result.stderr).not.toContain('cannot run node');
      expect(result.status, result.stderr).toBe(0);
      return result;
    };
    /** Node builds, then builds again out of the racy window: the result cache remembers, the replay record is written. */
    const _remember = (args: string[], options: { root: string; extra?: object }) => {
      ok(petri(args, options));
      settle();
      ok(petri(args, options));
    };
    /** Node builds, then builds again out of the racy window: the result cache remembers, the replay record is written. */
    const remember = (args: string[], options: { root: string; extra?: object }) => {
      ok(petri(args, options));
      settle();
      ok(petri(args, options));
    };
    const refused = (result: ReturnType<typeof petri>) => {
      expect(result.stderr).toBe('petri: cannot run node: No such file or directory\n');
      expect(result.status).toBe(127);
    };
    const context = (name: string, dockerfile: string, files: Record<string, string>) => {
      const ctx = join(dir, name);
      mkdirSync(ctx);
      writeFileSync(join(ctx, 'Dockerfile'), dockerfile);
      for (const [file, content] of Object.entries(files)) writeFileSync(join(ctx, file), content);
      settle();
      return ctx;
    };
    /** The image's config and manifest, from a store's blobs. */
    const image = (root: string, id: string) => {
      const blobs = join(dir, root, 'images', 'blobs', 'sha256');
      const config = JSON.parse(readFileSync(join(blobs, id.slice(7)), 'utf8'));
      const index = JSON.parse(readFileSync(join(dir, root, 'images', 'index.json'), 'utf8'));
      return { config, index };
    };

    const DOCKERFILE = [
      'FROM scratch',
      'COPY shared.txt /shared.txt',
      'WORKDIR /app',
      'COPY a.txt b.txt ./',
      'ENV X=1',
      'COPY c.txt /c/',
      'LABEL l=1',
      '',
    ].join('\n');

    it('redoes the last COPY steps in C, to the image Node builds from the same files', () => {
      const ctx = context('same', DOCKERFILE, { 'shared.txt': 's\n', 'a.txt': 'a\n', 'b.txt': 'b\n', 'c.txt': 'c\n' });
      const extra = { SOURCE_DATE_EPOCH: '1700000000' };
      const args = ['build', '--progress', 'plain', '-t', 'ptest/delta', ctx];
      const node = (root: string) => ok(petri(args, { root, extra })).stdout;
      node('r1');
      node('r1');
      const c = (expected: string) => {
        const result = ok(petri(args, { root: 'r1', extra, node: false }));
        // Node, in a store of its own, from the same files: the same image.
        expect(result.stdout).toBe(node(`r-${expected}`));
        return result;
      };
      writeFileSync(join(ctx, 'b.txt'), 'b, longer now: a new size\n');
      let result = c('b');
      expect(result.stderr).toContain('#4 [stage-0 4/7] COPY a.txt b.txt ./\n#4 DONE 0.0s\n');
      expect(result.stderr).toContain('#6 [stage-0 6/7] COPY c.txt /c/\n#6 DONE 0.0s\n');
      expect(result.stderr).toContain('#3 [stage-0 3/7] WORKDIR /app\n#3 CACHED\n');
      expect(result.stderr).toMatch(/image sha256:[a-f0-9]{64} \(ptest\/delta:latest\) built in 0\.\ds\n$/);
      // Only the second COPY's file: the first stays cached.
      writeFileSync(join(ctx, 'c.txt'), 'c'.repeat(1500));
      result = c('c');
      expect(result.stderr).toContain('#4 [stage-0 4/7] COPY a.txt b.txt ./\n#4 CACHED\n');
      expect(result.stderr).toContain('#6 [stage-0 6/7] COPY c.txt /c/\n#6 DONE 0.0s\n');
      // Both files of one COPY, one shorter.
      writeFileSync(join(ctx, 'a.txt'), '');
      writeFileSync(join(ctx, 'b.txt'), 'B'.repeat(513));
      const both = c('ab');
      // The same build again: replayed whole (the record the runner wrote), or, within the racy window, redone
      // to the same image.
      expect(ok(petri(args, { root: 'r1', extra, node: false })).stdout).toBe(both.stdout);
      settle();
      result = ok(petri(args, { root: 'r1', extra, node: false }));
      expect(result.stdout).toBe(both.stdout);
      expect(result.stderr).toContain('#6 CACHED\n');
      // A touched file: the same content, the same image, every step cached.
      const later = new Date(Date.now() + 5000);
      utimesSync(join(ctx, 'c.txt'), later, later);
      result = ok(petri(args, { root: 'r1', extra, node: false }));
      expect(result.stdout).toBe(both.stdout);
      expect(result.stderr).toContain('#4 CACHED\n');
      expect(result.stderr).toContain('#6 CACHED\n');
      // What the runner wrote is a whole image: Node sees the same (its result cache misses; the step cache decides).
      expect(node('r1')).toBe(both.stdout);
    });

    it('without SOURCE_DATE_EPOCH: the same layers as Node, the new steps timed now', () => {
      const ctx = context('now', DOCKERFILE, { 'shared.txt': 's\n', 'a.txt': 'a\n', 'b.txt': 'b\n', 'c.txt': 'c\n' });
      const args = ['build', '--progress', 'json', '-t', 'ptest/now', ctx];
      ok(petri(args, { root: 'n1' }));
      const previous = image('n1', ok(petri(args, { root: 'n1' })).stdout.trim()).config;
      settle();
      writeFileSync(join(ctx, 'c.txt'), 'c2\n');
      const before = Date.now();
      const redone = ok(petri(args, { root: 'n1', node: false }));
      const id = redone.stdout.trim();
      const other = ok(petri(args, { root: 'n2' })).stdout.trim();
      const mine = image('n1', id);
      const theirs = image('n2', other);
      expect(mine.config.rootfs).toEqual(theirs.config.rootfs);
      const times = (config: { history: { created: string }[] }) => config.history.map((h) => h.created);
      const created = times(mine.config);
      // The last COPY and the LABEL after it are new; the steps before keep their cached times.
      expect(Date.parse(created.at(-1) as string)).toBeGreaterThanOrEqual(before - 1);
      expect(created.at(-2)).toBe(created.at(-1));
      expect(created.slice(0, -2)).toEqual(times(previous).slice(0, -2));
      expect(Date.parse(times(previous).at(-1) as string)).toBeLessThan(before);
      expect(mine.config.created).toBe(created.at(-1));
      const strip = (config: { created: string; history: object[] }) => ({
        ...config,
        created: undefined,
        history: config.history.map((h) => ({ ...h, created: undefined })),
      });
      expect(strip(mine.config)).toEqual(strip(theirs.config));
      const named = mine.index.manifests.filter(
        (m: { annotations?: Record<string, string> }) =>
          m.annotations?.['org.opencontainers.image.ref.name'] === 'ptest/now:latest',
      );
      expect(named).toHaveLength(1);
      // The JSON events: the image event is a build's (no resultCache), the redone COPY done.
      const events = redone.stderr
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line));
      expect(events.at(-1)).toMatchObject({ type: 'image', id, tags: ['ptest/now:latest'] });
      expect(events.at(-1).resultCache).toBeUndefined();
      // The same build again: replayed from the runner's record, as a build prints it (Node's result cache has no
      // record of the runner's build: it would build, every step cached).
      settle();
      const again = ok(petri(args, { root: 'n1', node: false }))
        .stderr.trim()
        .split('\n')
        .map((line) => JSON.parse(line));
      expect(again.at(-1)).toMatchObject({ type: 'image', id });
      expect(again.at(-1).resultCache).toBeUndefined();
      expect(events.at(-1).durationMs).toBeLessThan(1000);
      expect(events.filter((e) => e.type === 'step' && e.text === 'COPY c.txt /c/').map((e) => e.status)).toEqual([
        'start',
        'done',
      ]);
    });

    it('leaves to Node what the delta cannot vouch for', () => {
      const ctx = context('refused', DOCKERFILE, {
        'shared.txt': 's\n',
        'a.txt': 'same\n',
        'b.txt': 'same\n',
        'c.txt': 'c\n',
      });
      const args = ['build', '--progress', 'plain', '-t', 'ptest/refused', ctx];
      const refresh = () => remember(args, { root: 'x' });
      refresh();
      // A file an earlier step read too.
      writeFileSync(join(ctx, 'shared.txt'), 's2\n');
      refused(petri(args, { root: 'x', node: false }));
      refresh();
      // Two files of one COPY with the same content: which entry is whose is not certain.
      writeFileSync(join(ctx, 'a.txt'), 'other\n');
      refused(petri(args, { root: 'x', node: false }));
      refresh();
      // A new mode, a new file.
      chmodSync(join(ctx, 'c.txt'), 0o600);
      refused(petri(args, { root: 'x', node: false }));
      refresh();
      writeFileSync(join(ctx, 'd.txt'), 'd\n');
      refused(petri(args, { root: 'x', node: false }));
      refresh();
      // The index locked by another petri: Node waits for it.
      writeFileSync(join(ctx, 'c.txt'), 'c3\n');
      const lock = join(dir, 'x', 'images', 'index.json.lock');
      mkdirSync(lock);
      refused(petri(args, { root: 'x', node: false }));
      rmSync(lock, { recursive: true });
      expect(ok(petri(args, { root: 'x', node: false })).stdout).toMatch(/^sha256:/);
      expect(existsSync(lock)).toBe(false);
    });

    it('keeps the step cache as the builder does: earlier contents come back cached, Node finds the steps C made', () => {
      const ctx = context('steps', DOCKERFILE, { 'shared.txt': 's\n', 'a.txt': 'a\n', 'b.txt': 'b\n', 'c.txt': 'c\n' });
      const args = ['build', '--progress', 'plain', '-t', 'ptest/steps', '-t', 'ptest/steps', ctx];
      ok(petri(args, { root: 's' }));
      const x = ok(petri(args, { root: 's' })).stdout;
      settle();
      writeFileSync(join(ctx, 'c.txt'), 'y\n');
      const y = ok(petri(args, { root: 's', node: false }));
      expect(y.stdout).not.toBe(x);
      expect(y.stderr).toContain('#6 DONE 0.0s\n');
      // The tag given twice names the image once.
      const named = image('s', y.stdout.trim()).index.manifests.filter(
        (m: { annotations?: Record<string, string> }) =>
          m.annotations?.['org.opencontainers.image.ref.name'] === 'ptest/steps:latest',
      );
      expect(named).toHaveLength(1);
      // Back to the first content: the step cache has that COPY, so it is the first image again, the COPY cached
      // (without SOURCE_DATE_EPOCH too: the image's times are the cached step's).
      writeFileSync(join(ctx, 'c.txt'), 'c\n');
      const back = ok(petri(args, { root: 's', node: false }));
      expect(back.stdout).toBe(x);
      expect(back.stderr).toContain('#6 [stage-0 6/7] COPY c.txt /c/\n#6 CACHED\n');
      // Node (its result cache misses: another fingerprint) finds the step the runner made, and the same image.
      writeFileSync(join(ctx, 'c.txt'), 'y\n');
      const node = spawnSync('node', [join(pkg, 'dist', 'bin', 'petri.cjs'), ...args], {
        encoding: 'utf8',
        cwd: dir,
        env: { ...env, PETRI_ROOT: join(dir, 's') },
      });
      expect(node.status, node.stderr).toBe(0);
      expect(node.stdout).toBe(y.stdout);
      expect(node.stderr).toContain('#6 CACHED\n');
      // A touched file, in JSON: a build's image event (no result cache answered it), every step cached.
      const json = [...args, '--progress', 'json'];
      settle();
      ok(petri(json, { root: 's' }));
      ok(petri(json, { root: 's' }));
      const later = new Date(Date.now() + 5000);
      utimesSync(join(ctx, 'a.txt'), later, later);
      const events = ok(petri(json, { root: 's', node: false }))
        .stderr.trim()
        .split('\n')
        .map((line) => JSON.parse(line));
      expect(events.at(-1)).toMatchObject({ type: 'image', id: y.stdout.trim() });
      expect(events.at(-1).resultCache).toBeUndefined();
      expect(events.filter((e) => e.status === 'done' && /^COPY/.test(e.text))).toEqual([]);
    });

    it('leaves to Node a delta whose files or layers it cannot vouch for', () => {
      const ctx = context('vouch', DOCKERFILE, { 'shared.txt': 's\n', 'a.txt': 'a\n', 'b.txt': 'b\n', 'c.txt': 'c\n' });
      const args = ['build', '--progress', 'plain', '-t', 'ptest/vouch', ctx];
      const refresh = () => remember(args, { root: 'v' });
      refresh();
      const blobs = join(dir, 'v', 'images', 'blobs', 'sha256');
      const layers = (id: string) => image('v', id).config.rootfs.diff_ids.map((d: string) => join(blobs, d.slice(7)));
      // The last layer's blob changed in the store: its digest no longer holds.
      const id = ok(petri(args, { root: 'v', node: false })).stdout.trim();
      const last = layers(id).at(-1) as string;
      const bytes = readFileSync(last);
      bytes[600] = (bytes[600] as number) ^ 1;
      writeFileSync(last, bytes);
      writeFileSync(join(ctx, 'c.txt'), 'c2\n');
      refused(petri(args, { root: 'v', node: false }));
      rmSync(last);
      refresh();
      // A layer below the tail gone from the store (a prune): the image would not be whole.
      const below = layers(ok(petri(args, { root: 'v', node: false })).stdout.trim())[1] as string;
      const kept = readFileSync(below);
      rmSync(below);
      writeFileSync(join(ctx, 'c.txt'), 'c3\n');
      refused(petri(args, { root: 'v', node: false }));
      writeFileSync(below, kept);
    });

    it('has no delta where a tail COPY depends on more than its own files', () => {
      // A later COPY's --chown by name reads the /etc/passwd an earlier one wrote.
      let ctx = context('chown', 'FROM scratch\nWORKDIR /w\nCOPY passwd /etc/passwd\nCOPY --chown=app x.txt /x.txt\n', {
        passwd: 'app:x:1000:1000::/:/bin/sh\n',
        'x.txt': 'x\n',
      });
      let args = ['build', '--progress', 'plain', '-t', 'ptest/chown', ctx];
      remember(args, { root: 'c' });
      writeFileSync(join(ctx, 'passwd'), 'app:x:3000:3000::/:/bin/sh\n');
      refused(petri(args, { root: 'c', node: false }));
      // A heredoc of the same name and content over a file: which entry is the file's is not certain.
      ctx = context('heredoc', 'FROM scratch\nWORKDIR /w\nCOPY a.txt <<a.txt /d/\nsame\na.txt\n', {
        'a.txt': 'same\n',
      });
      args = ['build', '--progress', 'plain', '-t', 'ptest/heredoc', ctx];
      remember(args, { root: 'c' });
      writeFileSync(join(ctx, 'a.txt'), 'different\n');
      refused(petri(args, { root: 'c', node: false }));
      // A name with a newline in the context: the fingerprint's lines are no longer one per name.
      ctx = context('newline', DOCKERFILE, { 'shared.txt': 's\n', 'a.txt': 'a\n', 'b.txt': 'b\n', 'c.txt': 'c\n' });
      writeFileSync(join(ctx, 'x\nc.txt'), 'n\n');
      settle();
      args = ['build', '--progress', 'plain', '-t', 'ptest/newline', ctx];
      remember(args, { root: 'c' });
      writeFileSync(join(ctx, 'c.txt'), 'c2\n');
      refused(petri(args, { root: 'c', node: false }));
    });

    it('reads a name that starts with a space as it is', () => {
      const dockerfile = 'FROM scratch\nWORKDIR /w\nCOPY a.txt /early\nCOPY [" a.txt", "/late"]\n';
      const ctx = context('space', dockerfile, { 'a.txt': 'a\n', ' a.txt': 'spaced\n' });
      const extra = { SOURCE_DATE_EPOCH: '1700000000' };
      const args = ['build', '--progress', 'plain', '-t', 'ptest/space', ctx];
      remember(args, { root: 'p', extra });
      writeFileSync(join(ctx, 'a.txt'), 'a2\n');
      const c = ok(petri(args, { root: 'p', extra, node: false })).stdout;
      expect(c).toBe(ok(petri(args, { root: 'p-node', extra })).stdout);
    });

    it('takes a tail of 4 COPY steps; one of 5 has no delta, but its same build again is still replayed', () => {
      for (const copies of [4, 5]) {
        const lines = ['FROM scratch', 'WORKDIR /w'];
        const files: Record<string, string> = {};
        for (let i = 0; i < copies; i++) {
          lines.push(`COPY f${i}.txt /d/`, `LABEL n${i}=${i}`);
          files[`f${i}.txt`] = `file ${i}\n`;
        }
        const ctx = context(`tail-${copies}`, `${lines.join('\n')}\n`, files);
        const args = ['build', '--progress', 'plain', '-t', `ptest/tail-${copies}`, ctx];
        ok(petri(args, { root: 't' }));
        const first = ok(petri(args, { root: 't' })).stdout;
        expect(ok(petri(args, { root: 't', node: false })).stdout).toBe(first);
        writeFileSync(join(ctx, 'f1.txt'), 'changed\n');
        if (copies === 4) {
          const changed = ok(petri(args, { root: 't', node: false }));
          expect(changed.stdout).not.toBe(first);
          expect(changed.stderr).toContain('#3 CACHED\n');
          expect(changed.stderr).toContain('#5 DONE 0.0s\n');
        } else refused(petri(args, { root: 't', node: false }));
      }
    });

    it('leaves to Node a step cache it would read otherwise: a record for the key with another layer, rewritten records below', () => {
      const ctx = context('records', DOCKERFILE, {
        'shared.txt': 's\n',
        'a.txt': 'a\n',
        'b.txt': 'b\n',
        'c.txt': 'c\n',
      });
      const extra = { SOURCE_DATE_EPOCH: '1700000000' };
      const args = ['build', '--progress', 'plain', '-t', 'ptest/records', ctx];
      const node = (more: string[] = []) => {
        const r = spawnSync('node', [join(pkg, 'dist', 'bin', 'petri.cjs'), 'build', '-q', ...more, ctx], {
          encoding: 'utf8',
          env: { ...env, PETRI_ROOT: join(dir, 'rec'), ...extra },
        });
        expect(r.status, r.stderr).toBe(0);
      };
      remember(args, { root: 'rec', extra });
      // An untagged build of c.txt's next content with an old mtime (kept in the layer: it is before the epoch):
      // the step cache has that key with another layer than the runner would make, which the builder would take.
      writeFileSync(join(ctx, 'c.txt'), 'c2\n');
      const old = new Date('2020-01-01T00:00:00Z');
      utimesSync(join(ctx, 'c.txt'), old, old);
      node();
      const now = new Date();
      utimesSync(join(ctx, 'c.txt'), now, now);
      refused(petri(args, { root: 'rec', extra, node: false }));
      // Records below the tail rewritten by an untagged --no-cache build (no tag moves, the index stays), with
      // new times (no SOURCE_DATE_EPOCH).
      // (A store of its own: the step cache keys no SOURCE_DATE_EPOCH, so the layers above came with its mtimes.)
      writeFileSync(join(ctx, 'c.txt'), 'c\n');
      settle();
      remember(args, { root: 'rec2' });
      writeFileSync(join(ctx, 'c.txt'), 'c2\n');
      expect(ok(petri(args, { root: 'rec2', node: false })).stdout).toMatch(/^sha256:/);
      const noCache = spawnSync('node', [join(pkg, 'dist', 'bin', 'petri.cjs'), 'build', '-q', '--no-cache', ctx], {
        encoding: 'utf8',
        env: { ...env, PETRI_ROOT: join(dir, 'rec2') },
      });
      expect(noCache.status, noCache.stderr).toBe(0);
      writeFileSync(join(ctx, 'c.txt'), 'c3\n');
      refused(petri(args, { root: 'rec2', node: false }));
    });

    it('has no delta for a build whose context an ADD reads', () => {
      const ctx = context('add', 'FROM scratch\nADD x.txt /x\nWORKDIR /w\nCOPY a.txt /a\n', {
        'x.txt': 'x\n',
        'a.txt': 'a\n',
      });
      const args = ['build', '--progress', 'plain', '-t', 'ptest/add', ctx];
      remember(args, { root: 'y' });
      writeFileSync(join(ctx, 'a.txt'), 'a2\n');
      refused(petri(args, { root: 'y', node: false }));
    });
  },
);
