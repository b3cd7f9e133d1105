import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import ts from 'typescript';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { runnerPath } from '../src/runtime/runner-binary.js';
import { chainIds, LayerCache, type LayerSource } from '../src/snapshot/index.js';
import { recordedOpaqueDirs } from '../src/snapshot/layer-meta.js';
import { tarStream } from '../src/snapshot/tar-pax.js';
import { describeKernel } from './helpers/kernel.js';

const sha256 = (data: Buffer | string) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

async function tarOf(files: Record<string, string>): Promise<Buffer> {
  const pack = tarStream().pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of pack) chunks.push(chunk as Buffer);
  })();
  for (const [name, body] of Object.entries(files)) pack.entry({ name, mtime: new Date(0) }, body);
  pack.finalize();
  await collected;
  return Buffer.concat(chunks);
}

/** A layer as the image store would hand it over: gzip blob, diffID of the tar. */
function layerOf(tar: Buffer, open?: () => Readable): LayerSource {
  const blob = zlib.gzipSync(tar);
  return {
    digest: sha256(blob),
    mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
    diffId: sha256(tar),
    open: open ?? (() => Readable.from([blob])),
  };
}

/**
 * Transpiles `entry` and the local modules it imports into `outDir` as ESM, for
 * child processes (Node 20 cannot run TypeScript itself).
 */
function transpile(entry: string, outDir: string): void {
  const srcRoot = resolve(import.meta.dirname, '..', 'src');
  const queue = [entry];
  const seen = new Set<string>();
  for (let file = queue.pop(); file !== undefined; file = queue.pop()) {
    if (seen.has(file)) continue;
    seen.add(file);
    const source = readFileSync(file, 'utf8');
    const { outputText } = ts.transpileModule(source, {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    });
    const out = join(outDir, relative(srcRoot, file).replace(/\.ts$/, '.js'));
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, outputText);
    for (const [, , spec] of source.matchAll(/(from |import\()'(\.[^']+)\.js'/g)) {
      queue.push(resolve(dirname(file), `${spec}.ts`));
    }
  }
  writeFileSync(join(outDir, 'package.json'), '{"type":"module"}\n');
  symlinkSync(resolve(import.meta.dirname, '..', 'node_modules'), join(outDir, 'node_modules'));
}

it('computes OCI chain IDs', () => {
  const [a, b, c] = ['a', 'b', 'c'].map((x) => sha256(x)) as [string, string, string];
  // Independently of the code under test: sha256sum over "<parent> <diffID>".
  const shell = (text: string) =>
    `sha256:${execFileSync('sha256sum', { input: text, encoding: 'utf8' }).split(' ')[0]}`;
  const ab = shell(`${a} ${b}`);
  expect(chainIds([])).toEqual([]);
  expect(chainIds([a])).toEqual([a]);
  expect(chainIds([a, b, c])).toEqual([a, ab, shell(`${ab} ${c}`)]);
});

describeKernel('LayerCache', () => {
  let dir: string;
  let cache: LayerCache;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ptest-layers-'));
    cache = new LayerCache(join(dir, 'layers'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('adopts a working directory in place: it becomes the layer, or goes when the layer is there', () => {
    const adopt = (content: string) => {
      const work = cache.workDir();
      mkdirSync(join(work, 'fs'));
      writeFileSync(join(work, 'fs', 'f'), content);
      const diffId = sha256(content);
      return { work, tree: cache.adopt(join(work, 'fs'), { diffId, size: 1, opaque: [] }, null, { inPlace: true }) };
    };
    const first = adopt('a');
    expect(first.tree).toBe(join(cache.dir, sha256('a').slice(7), 'fs'));
    expect(readFileSync(join(first.tree, 'f'), 'utf8')).toBe('a');
    expect(existsSync(first.work)).toBe(false);
    expect(JSON.parse(readFileSync(join(first.tree, '..', 'meta.json'), 'utf8')).diffId).toBe(sha256('a'));
    const again = adopt('a');
    expect(again.tree).toBe(first.tree);
    expect(existsSync(again.work)).toBe(false);
    expect(readdirSync(cache.dir)).toEqual([sha256('a').slice(7)]);
  });

  it('unpacks each layer once, keyed by chain ID, and lists and removes them', async () => {
    const base = layerOf(await tarOf({ 'etc/os': 'base\n', 'bin/sh': 'sh' }));
    const top = layerOf(await tarOf({ 'etc/os': 'top\n' }));
    const [baseId, topId] = chainIds([base.diffId, top.diffId]) as [string, string];
    const dirs = await cache.prepare([base, top]);
    expect(dirs).toEqual([join(cache.dir, topId.slice(7), 'fs'), join(cache.dir, baseId.slice(7), 'fs')]);
    expect(readFileSync(join(dirs[0] as string, 'etc/os'), 'utf8')).toBe('top\n');
    expect(readFileSync(join(dirs[1] as string, 'bin/sh'), 'utf8')).toBe('sh');
    expect(JSON.parse(readFileSync(join(cache.dir, topId.slice(7), 'meta.json'), 'utf8'))).toEqual({
      diffId: top.diffId,
      chainId: topId,
      parent: baseId,
      size: expect.any(Number),
      opaque: [],
    });
    expect(recordedOpaqueDirs(dirs[0] as string)).toEqual([]);
    expect(statSync(cache.dir).mode & 0o777).toBe(0o700);

    // Prepared again: no blob is opened, nothing new appears.
    const before = readdirSync(cache.dir).sort();
    const untouchable = (layer: LayerSource): LayerSource => ({
      ...layer,
      open: () => {
        throw new Error('opened a layer that is already unpacked');
      },
    });
    expect(await cache.prepare([untouchable(base), untouchable(top)])).toEqual(dirs);
    expect(readdirSync(cache.dir).sort()).toEqual(before);
    expect(before.some((name) => name.startsWith('.tmp'))).toBe(false);

    // The same top layer on another base is another chain: unpacked separately.
    const other = layerOf(await tarOf({ 'etc/os': 'other base\n' }));
    const otherDirs = await cache.prepare([other, top]);
    expect(otherDirs[0]).not.toBe(dirs[0]);

    expect(
      cache
        .list()
        .map((r) => r.chainId)
        .sort(),
    ).toEqual([baseId, topId, ...chainIds([other.diffId, top.diffId])].sort());
    cache.remove([topId, baseId]);
    expect(existsSync(dirs[0] as string)).toBe(false);
    expect(cache.list()).toHaveLength(2);
    expect(readdirSync(cache.dir)).toHaveLength(2);
  });

  it('refuses a layer whose content does not match its diffID, leaving nothing', async () => {
    const layer = { ...layerOf(await tarOf({ f: 'x' })), diffId: sha256('something else') };
    await expect(cache.prepare([layer])).rejects.toThrow(
      new RegExp(
        `layer ${layer.digest} unpacks to content with digest sha256:[0-9a-f]{64}, but the image says its diffID is ${layer.diffId}`,
      ),
    );
    expect(readdirSync(cache.dir)).toEqual([]);
    await expect(cache.prepare([{ ...layer, diffId: 'sha256:../../etc' }])).rejects.toThrow(/bad diffID/);
  });

  it('lets two processes prepare the same layer at once: both succeed with one copy', async () => {
    const files: Record<string, string> = {};
    for (let i = 0; i < 40; i++) files[`d/f${i}`] = `${i}`.repeat(500);
    const tar = await tarOf(files);
    const tarPath = join(dir, 'layer.tar');
    writeFileSync(tarPath, tar);
    const lib = join(dir, 'lib');
    transpile(resolve(import.meta.dirname, '..', 'src', 'snapshot', 'layers.ts'), lib);
    const script = join(lib, 'prepare.mjs');
    // A slow blob, so that both processes are unpacking at the same time.
    writeFileSync(
      script,
      `import { createReadStream, existsSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { LayerCache } from './snapshot/layers.js';
const [cacheDir, tarPath, diffId] = process.argv.slice(2);
const slow = () => Readable.from((async function* () {
  for await (const chunk of createReadStream(tarPath, { highWaterMark: 2048 })) {
    await new Promise((resolve) => setTimeout(resolve, 15));
    yield chunk;
  }
})());
const cached = existsSync(join(cacheDir, diffId.slice(7), 'meta.json'));
const dirs = await new LayerCache(cacheDir).prepare([{ digest: diffId, mediaType: 'x', diffId, open: slow }]);
console.log(JSON.stringify({ cached, dirs }));
`,
    );
    const run = () =>
      new Promise<{ cached: boolean; dirs: string[] }>((resolvePromise, reject) => {
        const child = spawn(process.execPath, [script, cache.dir, tarPath, sha256(tar)], {
          env: { ...process.env, PETRI_RUNNER: runnerPath() },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d;
        });
        child.stderr.on('data', (d: Buffer) => {
          err += d;
        });
        child.on('error', reject);
        child.on('close', (code) =>
          code === 0 ? resolvePromise(JSON.parse(out)) : reject(new Error(`prepare exited ${code}: ${err}`)),
        );
      });
    const [one, two] = await Promise.all([run(), run()]);
    expect(one.cached || two.cached).toBe(false); // both really unpacked
    expect(one.dirs).toEqual(two.dirs);
    expect(one.dirs).toEqual([join(cache.dir, sha256(tar).slice(7), 'fs')]);
    expect(readdirSync(cache.dir)).toEqual([sha256(tar).slice(7)]); // the loser's copy is gone
    expect(readdirSync(join(one.dirs[0] as string, 'd'))).toHaveLength(40);
    expect(readFileSync(join(one.dirs[0] as string, 'd', 'f7'), 'utf8')).toBe('7'.repeat(500));
  });
});
