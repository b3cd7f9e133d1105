#!/usr/bin/env node
// Bundles the library's two entry points, `petri` (tsc's dist/index.js) and `petri/vitest`
// (dist/vitest/index.js), into ES modules under dist/lib/, as part of `npm run build`: package.json's
// "exports" point there. A test file imports petri in every vitest worker, and Node 20 spends ~0.5 ms per
// ES module it resolves and links: ~80 files took ~85 ms, the bundle ~45. One build for both entries,
// so that what they share (the cleanup of started containers, the fork server, PetriError) is one
// module in one chunk, never two copies. What the entries load only when used (the builder, the
// registry client, archives) stays in chunks of its own, imported on first use. Built-ins and npm
// packages are imported at run time, as before. dist/index.js (tsc's) still works the same.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'rolldown';
import { buildInPlace } from './lib/swap-dir.mjs';

const top = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(top, 'dist', 'lib');
// Built beside it, then swapped in: a process importing petri meanwhile sees the old or the new bundle.
await buildInPlace(out, (next) =>
  build({
    input: { index: join(top, 'dist', 'index.js'), vitest: join(top, 'dist', 'vitest', 'index.js') },
    platform: 'node',
    // Only petri's own files are bundled: built-ins and npm packages (vitest among them) are the user's.
    external: (id) => !(id.startsWith('.') || id.startsWith('/') || id.startsWith('\0')),
    logLevel: 'warn',
    output: {
      dir: next,
      format: 'esm',
      entryFileNames: '[name].js',
      chunkFileNames: '[name]-[hash].js',
      sourcemap: false,
    },
  }),
);
console.log(`bundled ${join(out, 'index.js')} and ${join(out, 'vitest.js')}`);
