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
// Bundled with esbuild from the TypeScript sources (no tsc step), one CommonJS
// file each, not minified (the diffs stay readable), paths relative to the
// repository; esbuild's output depends on nothing but its version and the
// sources, so a fresh bundle is byte for byte the committed one. (The CLI's
// bundle, scripts/bundle-cli.mjs, stays on rolldown: it splits CommonJS into
// chunks, which esbuild does not.) esbuild's platform binary comes from its
// optional @esbuild/<platform> package: no install script is needed.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

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
  setup(bundle) {
    bundle.onLoad({ filter: /[\\/]src[\\/]snapshot[\\/]tar-pax\.ts$/ }, (args) => {
      const code = readFileSync(args.path, 'utf8');
      const call = "load(join(dirname(load.resolve('tar-stream')), 'headers.js'))";
      const main = "load('tar-stream')";
      if (!code.includes(call) || !code.includes(main)) {
        throw new Error(
          `bundle-action: ${args.path} no longer loads tar-stream and its headers.js as expected: update this plugin`,
        );
      }
      const headers = join(top, 'node_modules', 'tar-stream', 'headers.js');
      const imports = `import __petriTarHeaders from ${JSON.stringify(headers)};\nimport __petriTarStream from 'tar-stream';\n`;
      return {
        contents: `${imports}${code.replace(call, '__petriTarHeaders').replace(main, '__petriTarStream')}`,
        loader: 'ts',
        resolveDir: dirname(args.path),
      };
    });
  },
};

/**
 * `import.meta.url` as esbuild's documentation has it for CommonJS output: an
 * injected module that computes it from __filename (a virtual one, so that no
 * temporary path shows in the bundle). Through esbuild rather than a banner,
 * so that a module's own `__filename` variable is renamed apart from Node's.
 */
const IMPORT_META_URL = 'petri:import-meta-url';
const importMetaUrl = {
  name: 'petri-import-meta-url',
  setup(bundle) {
    bundle.onResolve({ filter: /^petri:import-meta-url$/ }, () => ({ path: 'import-meta-url', namespace: 'petri' }));
    bundle.onLoad({ filter: /^import-meta-url$/, namespace: 'petri' }, () => ({
      contents:
        "import { pathToFileURL } from 'node:url';\nexport const petri_import_meta_url = pathToFileURL(__filename).href;\n",
      loader: 'js',
    }));
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
      absWorkingDir: top,
      entryPoints: [join(top, entry)],
      outfile: join(aside, `${name}.cjs`),
      bundle: true,
      // Only Node's builtins stay outside (platform node); everything else is in the file.
      platform: 'node',
      format: 'cjs',
      // The oldest node petri supports (package.json's engines); action.yml runs it on node24.
      target: 'node20.19',
      // Bundled modules' top-level names may be renamed apart: keep what Function.name and
      // error names say (@actions/cache compares error.name with its classes' names).
      keepNames: true,
      // CommonJS has no import.meta: the file's own path instead, for the sources and the
      // dependencies that find files beside themselves (the runner's sources, package.json).
      define: {
        'import.meta.dirname': '__dirname',
        'import.meta.filename': '__filename',
        'import.meta.url': 'petri_import_meta_url',
      },
      inject: [IMPORT_META_URL],
      plugins: [importMetaUrl, tarHeaders],
      sourcemap: false,
      // The dependencies' license notices stay where they are.
      legalComments: 'inline',
      logLevel: 'warning',
    }).then((result) => {
      // A warning (an import.meta left empty, a require that cannot be bundled…) would go unseen in a CI log.
      if (result.warnings.length > 0) throw new Error(`bundle-action: ${name}: esbuild warned (above)`);
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
