#!/usr/bin/env node
// Bundles the GitHub Action (action.yml) into action/dist/, which is committed:
// a workflow's `uses:` checks the repository out and runs these files as they
// are, without npm install. `npm run build` runs it (`npm run build:action`
// alone); test/action.test.ts fails when the committed files differ from a
// fresh bundle (`node scripts/bundle-action.mjs --out DIR`).
//
// - main.cjs, post.cjs: src/action/{main,post}.ts with @actions/* inlined;
// - petri.cjs: the whole petri command (src/cli/main.ts), every npm dependency
//   inlined, in one file; it finds petri-runner's sources in ../../runner
//   (compiled on first use into $PETRI_ROOT/runner/) or ../../build/petri-runner.
// Bundled from the TypeScript sources (no tsc step), one CommonJS file each,
// not minified (the diffs stay readable), paths relative to the repository.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'rolldown';

const top = join(dirname(fileURLToPath(import.meta.url)), '..');
const outFlag = process.argv.indexOf('--out');
const out = outFlag >= 0 ? resolve(process.argv[outFlag + 1] ?? '') : join(top, 'action', 'dist');
const ENTRIES = { main: 'src/action/main.ts', post: 'src/action/post.ts', petri: 'src/cli/main.ts' };

/**
 * src/snapshot/tar-pax.ts patches tar-stream's header codec, which it finds
 * with require.resolve at run time: in a bundle that would load a second
 * tar-stream from node_modules (absent where the action runs) instead of
 * patching the bundled one. Here the codec is imported instead, so that the
 * bundled tar-stream is the one patched.
 */
const tarHeaders = {
  name: 'petri-tar-stream-headers',
  transform(code, id) {
    if (!id.endsWith(join('src', 'snapshot', 'tar-pax.ts'))) return null;
    const call = "require(join(dirname(require.resolve('tar-stream')), 'headers.js'))";
    if (!code.includes(call)) {
      throw new Error(`bundle-action: ${id} no longer finds tar-stream's headers.js as expected: update this plugin`);
    }
    const headers = join(top, 'node_modules', 'tar-stream', 'headers.js');
    return {
      code: `import __petriTarHeaders from ${JSON.stringify(headers)};\n${code.replace(call, '__petriTarHeaders')}`,
      map: null,
    };
  },
};

// Built aside, then renamed into place file by file: a concurrent reader (a test, another build) never
// sees a missing or half-written file.
mkdirSync(dirname(out), { recursive: true });
const aside = mkdtempSync(`${out}.tmp-`);
let files;
try {
  for (const [name, entry] of Object.entries(ENTRIES)) {
    await build({
      cwd: top,
      input: join(top, entry),
      platform: 'node',
      // Only Node's builtins stay outside; everything else is in the file.
      external: (id) => id.startsWith('node:') || builtinModules.includes(id),
      resolve: { extensionAlias: { '.js': ['.ts', '.js'] } },
      plugins: [tarHeaders],
      logLevel: 'warn',
      output: {
        file: join(aside, `${name}.cjs`),
        format: 'cjs',
        codeSplitting: false,
        sourcemap: false,
      },
    });
  }
  mkdirSync(out, { recursive: true });
  files = readdirSync(aside).sort();
  for (const file of files) renameSync(join(aside, file), join(out, file));
  for (const file of readdirSync(out))
    if (!files.includes(file)) rmSync(join(out, file), { recursive: true, force: true });
} finally {
  rmSync(aside, { recursive: true, force: true });
}
const size = files.reduce((sum, file) => sum + readFileSync(join(out, file)).length, 0);
console.log(`bundled the action into ${out}: ${files.join(', ')} (${(size / 1024 / 1024).toFixed(1)} MB)`);
