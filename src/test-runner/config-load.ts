import { existsSync, readFileSync } from 'node:fs';
import { extname, join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { errorLine, PetriError } from '../errors.js';
import { type TestConfig, validateConfig } from './config-validate.js';

/** The names `petri test` looks for in the current directory, in this order. */
export const CONFIG_NAMES = [
  'petri.config.ts',
  'petri.config.js',
  'petri.config.mjs',
  'petri.config.json',
  'petri.config.yaml',
  'petri.config.yml',
];

/** The config file in `dir`: exactly one of CONFIG_NAMES. */
export function findConfig(dir: string): string {
  const found = CONFIG_NAMES.filter((name) => existsSync(join(dir, name)));
  if (found.length === 0) {
    throw new PetriError(
      `no petri.config.{js,mjs,json,yaml,yml} in ${dir}: write one (see the README's petri test section), or pass --config FILE`,
      { code: 'ECONFIG' },
    );
  }
  if (found.length > 1) {
    throw new PetriError(`${dir} has several config files (${found.join(', ')}): keep one, or pass --config FILE`, {
      code: 'ECONFIG',
    });
  }
  return join(dir, found[0] as string);
}

/** Reads, parses and validates a config file (JSON, YAML, or a JavaScript module whose default export is the config). */
export async function loadConfig(path: string, cwd = process.cwd()): Promise<TestConfig> {
  const file = resolve(cwd, path);
  const shown = relative(cwd, file) || file;
  if (!existsSync(file)) throw new PetriError(`config file ${shown} does not exist`, { code: 'ECONFIG' });
  const ext = extname(file);
  let raw: unknown;
  if (ext === '.json') raw = parseText(shown, file, (text) => JSON.parse(text));
  else if (ext === '.yaml' || ext === '.yml') {
    const { parse } = await import('yaml');
    raw = parseText(shown, file, (text) => parse(text, { prettyErrors: false }));
  } else if (ext === '.js' || ext === '.mjs' || ext === '.cjs' || ext === '.ts' || ext === '.mts') {
    raw = await importModule(shown, file, ext);
  } else {
    throw new PetriError(`${shown}: unknown config format "${ext}": use .js, .mjs, .json, .yaml or .yml`, {
      code: 'ECONFIG',
    });
  }
  return validateConfig(raw, file, cwd);
}

function parseText(shown: string, file: string, parse: (text: string) => unknown): unknown {
  try {
    return parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new PetriError(`${shown}: cannot parse: ${errorLine(error)}`, { code: 'ECONFIG', cause: error });
  }
}

async function importModule(shown: string, file: string, ext: string): Promise<unknown> {
  let module: { default?: unknown };
  try {
    module = await import(pathToFileURL(file).href);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if ((ext === '.ts' || ext === '.mts') && code === 'ERR_UNKNOWN_FILE_EXTENSION') {
      throw new PetriError(
        `${shown}: Node ${process.versions.node} cannot load TypeScript without a loader (Node 22.18+ strips types itself): write petri.config.js or .mjs (with defineConfig from 'petri' for types), .json or .yaml`,
        { code: 'ECONFIG' },
      );
    }
    throw new PetriError(`${shown}: cannot load: ${errorLine(error)}`, { code: 'ECONFIG', cause: error });
  }
  let config: unknown = module.default ?? module;
  if (typeof config === 'function') config = await (config as () => unknown)();
  return config;
}
