#!/usr/bin/env node
// Bundles the CLI (tsc's dist/cli/main.js and what it imports) into CommonJS
// files under dist/bin/, as part of `npm run build`: the `petri` command is
// dist/bin/petri.cjs. Start-up is most of a short command's cost and Node 20
// pays ~15 ms for its ESM loader plus ~0.5 ms per ES module (resolution, linking);
// CommonJS chunks skip both (bench/lifecycle.mjs measures `petri run`).
// Each command stays in its own chunk, loaded when used; CommonJS npm
// dependencies stay external (required from node_modules). dist/cli/main.js
// (ES modules) still works the same.
import { chmodSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'rolldown';
import { buildInPlace } from './lib/swap-dir.mjs';

const top = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(top, 'dist', 'bin');
// Built beside it, then swapped in: a petri started meanwhile sees the old or the new bundle, never none.
await buildInPlace(out, async (next) => {
  await build({
    input: join(top, 'dist', 'cli', 'bin.js'),
    platform: 'node',
    // Builtins and CommonJS packages are required at run time, not copied in;
    // ES-module-only packages are bundled, as require() of an ES module is still
    // experimental on Node 20 (it may print a warning).
    external: (id) => {
      if (id.startsWith('.') || id.startsWith('/') || id.startsWith('\0')) return false;
      if (id.startsWith('node:') || builtinModules.includes(id)) return true;
      return !esmOnly(id.startsWith('@') ? id.split('/').slice(0, 2).join('/') : (id.split('/')[0] ?? id));
    },
    logLevel: 'warn',
    output: {
      dir: next,
      format: 'cjs',
      // The package is "type": "module": CommonJS files need the .cjs extension.
      entryFileNames: 'petri.cjs',
      chunkFileNames: '[name]-[hash].cjs',
      // `petri run`'s code (the runtime) in one chunk, as each file required costs
      // a resolution (realpath) and a compile; errors.js apart, as every command
      // loads it and most never need the runtime (child_process).
      codeSplitting: {
        groups: [
          { name: 'errors', test: /[\\/]dist[\\/]errors\.js$/, priority: 2 },
          // What other commands (build, images, test) take from the runtime and util
          // without needing the runtime itself (child_process, net): kept apart.
          {
            name: 'base',
            test: /[\\/]dist[\\/](util[\\/][^\\/]+|runtime[\\/](paths|runner-binary)|cli[\\/]args)\.js$/,
            priority: 2,
          },
          {
            name: 'runtime',
            test: /[\\/]dist[\\/](runtime|util)[\\/]|[\\/]dist[\\/]cli[\\/]run\.js$/,
            priority: 1,
          },
          // The image store and the layer cache, which most commands read: one chunk, not ten small
          // ones (each file required costs ~0.3 ms of resolution, reading and cache lookup). Not the
          // index lock (image/lock.js): its import() of proper-lockfile keeps its chunk out of the
          // compile cache (src/cli/compile-cache.ts), which would then compile the whole store each run.
          // (Its dependencies stay where they are: errors.js in its own chunk, not with the lock.)
          {
            name: 'lock',
            test: /[\\/]dist[\\/]image[\\/]lock\.js$/,
            priority: 3,
            includeDependenciesRecursively: false,
          },
          {
            name: 'store',
            test: /[\\/]dist[\\/](image[\\/](reference|registry[\\/]name|digest|types|temp|layout|blobs|store|platform|apply-config)|snapshot[\\/](whiteouts|layer-meta|layers)|harness[\\/]image-run)\.js$/,
            priority: 2,
          },
          // What writes and reads layer tars (build, commit, save).
          {
            name: 'layer-tar',
            test: /[\\/]dist[\\/]snapshot[\\/](scan|tar-pax|tar-buffer|layer-from-dir)\.js$/,
            priority: 2,
          },
          // The Dockerfile parser; the builder (without what a remembered build needs: result-cache,
          // progress, replay, answered without loading the builder).
          { name: 'dockerfile', test: /[\\/]dist[\\/]dockerfile[\\/]/, priority: 1 },
          {
            name: 'builder',
            test: /[\\/]dist[\\/]build[\\/](?!result-cache|progress|replay|remote-cache|ssh-agent)[^\\/]+\.js$/,
            priority: 1,
          },
        ],
      },
      sourcemap: false,
    },
  });
  chmodSync(join(next, 'petri.cjs'), 0o755);
});
console.log(`bundled ${join(out, 'petri.cjs')}`);

function esmOnly(name) {
  try {
    return JSON.parse(readFileSync(join(top, 'node_modules', name, 'package.json'), 'utf8')).type === 'module';
  } catch {
    return false;
  }
}
