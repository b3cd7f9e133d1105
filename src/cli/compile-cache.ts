import {
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import module from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';
import { petriRoot } from '../runtime/paths.js';

/**
 * Keeps V8's compiled code of the CLI's CommonJS files (its bundle chunks and
 * the npm packages it requires) between runs, in `$PETRI_ROOT/compile-cache`:
 * a short command spends much of its time compiling them otherwise. Node ≥ 22.1
 * does it itself (`module.enableCompileCache`); on Node 20 a `_compile` hook
 * compiles through `vm.Script` with `cachedData`. The directory must be the
 * caller's own and closed to others (compiled code is trusted as it is), else
 * nothing is cached; so is it with NODE_DISABLE_COMPILE_CACHE set.
 */
export function enableCompileCache(): void {
  if (enabled) return;
  enabled = true;
  if (process.env.NODE_DISABLE_COMPILE_CACHE) return;
  const dir = ownDir(join(petriRoot(), 'compile-cache'));
  if (!dir) return;
  const builtin = (module as { enableCompileCache?: (dir: string) => unknown }).enableCompileCache;
  if (builtin) builtin(dir);
  else if (!process.execArgv.some((arg) => arg.startsWith('--inspect-brk'))) hookCompile(dir);
}

let enabled = false;

/** `dir`, created (0700) when missing, when it is a directory of this user's that no one else may write; else undefined. */
function ownDir(dir: string): string | undefined {
  const mine = (path: string) => {
    const stat = lstatSync(path);
    return stat.isDirectory() && stat.uid === process.getuid?.() && (stat.mode & 0o022) === 0;
  };
  try {
    if (!mine(dirname(dir))) return undefined;
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') return undefined;
    }
    return mine(dir) ? dir : undefined;
  } catch {
    return undefined;
  }
}

interface CjsModule {
  exports: unknown;
  require(id: string): unknown;
}
interface ModuleStatics {
  prototype: CjsModule & { _compile(content: string, filename: string, format?: string): unknown };
  wrap(source: string): string;
  _resolveFilename(request: string, parent: CjsModule, isMain: boolean, options?: object): string;
  _resolveLookupPaths(request: string, parent: CjsModule): string[] | null;
  _extensions: object;
  _cache: object;
}

/** The directory of petri's own files (the bundle's chunks, or tsc's output). */
const OWN_DIR = dirname(fileURLToPath(import.meta.url));
/** Files the hook caches: petri's own CommonJS files and npm packages' (never a user's config file). */
const cached = (file: string) =>
  (file.startsWith(`${OWN_DIR}/`) && file.endsWith('.cjs')) || /[\\/]node_modules[\\/].*\.c?js$/.test(file);
/** At most this many cache files; beyond it, those not used by this run are removed when it writes. */
const MAX_FILES = 400;

function hookCompile(dir: string): void {
  const Module = module as unknown as ModuleStatics;
  const original = Module.prototype._compile;
  const stale: { file: string; key: string; script: Script }[] = [];
  const used = new Set<string>();
  Module.prototype._compile = function (this: CjsModule, content: string, filename: string, format?: string) {
    // import() needs a callback that Node gives vm.Script only experimentally (and not with cached data).
    if (format === 'module' || !cached(filename) || content.includes('import(')) {
      return original.call(this, content, filename, format);
    }
    let key: string;
    try {
      const st = statSync(filename);
      key = `${filename}\0${st.size}\0${st.mtimeMs}\0${st.ino}\0${process.version}\0${process.arch}`;
    } catch {
      return original.call(this, content, filename, format);
    }
    const file = join(dir, `${fnv1a(filename)}-${fnv1a(key)}`);
    used.add(file);
    const cachedData = readEntry(file, key);
    const script = new Script(Module.wrap(content), { filename, ...(cachedData ? { cachedData } : {}) });
    if (!cachedData || script.cachedDataRejected) stale.push({ file, key, script });
    const wrapper = script.runInThisContext({ displayErrors: true }) as (...args: unknown[]) => unknown;
    return wrapper.call(this.exports, this.exports, makeRequire(Module, this), this, filename, dirname(filename));
  };
  // Written once the code ran: the cache then holds the functions it compiled too.
  process.once('exit', () => {
    if (stale.length === 0) return;
    for (const { file, key, script } of stale) writeEntry(file, key, script.createCachedData());
    trim(dir, used);
  });
}

/** `require` as Node gives a CommonJS module. */
function makeRequire(Module: ModuleStatics, mod: CjsModule): NodeJS.Require {
  const require = ((id: string) => mod.require(id)) as NodeJS.Require;
  const resolve = ((request: string, options?: object) =>
    Module._resolveFilename(request, mod, false, options)) as NodeJS.RequireResolve;
  resolve.paths = (request: string) => Module._resolveLookupPaths(request, mod);
  require.resolve = resolve;
  require.main = process.mainModule;
  require.extensions = Module._extensions as NodeJS.Require['extensions'];
  require.cache = Module._cache as NodeJS.Require['cache'];
  return require;
}

/** A cache file: the key's length (4 bytes), the key, V8's cached data. */
function readEntry(file: string, key: string): Buffer | undefined {
  let data: Buffer;
  try {
    data = readFileSync(file);
  } catch {
    return undefined;
  }
  const length = data.length >= 4 ? data.readUInt32LE(0) : -1;
  if (length < 0 || 4 + length > data.length || data.toString('utf8', 4, 4 + length) !== key) return undefined;
  return data.subarray(4 + length);
}

/** Written beside, then renamed into place: a reader sees a whole file, whoever writes at once. */
function writeEntry(file: string, key: string, cachedData: Buffer): void {
  const head = Buffer.alloc(4);
  const keyBytes = Buffer.from(key);
  head.writeUInt32LE(keyBytes.length, 0);
  const temp = `${file}.${process.pid}.tmp`;
  try {
    writeFileSync(temp, Buffer.concat([head, keyBytes, cachedData]), { mode: 0o600 });
    renameSync(temp, file);
  } catch {
    try {
      unlinkSync(temp);
    } catch {}
  }
}

/** Keeps the directory small: past MAX_FILES, what this run did not use goes (older bundles, crashed writes). */
function trim(dir: string, used: Set<string>): void {
  try {
    const names = readdirSync(dir);
    if (names.length <= MAX_FILES) return;
    for (const name of names) {
      const file = join(dir, name);
      if (!/^[0-9a-f]{8}-[0-9a-f]{8}/.test(name) || used.has(file)) continue;
      try {
        unlinkSync(file);
      } catch {
        // another process trims at once
      }
    }
  } catch {
    // gone meanwhile
  }
}

/** 32-bit FNV-1a of a string's UTF-16 code units, as 8 hex digits: a file name, not a check (the key is compared). */
function fnv1a(text: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0).toString(16).padStart(8, '0');
}
