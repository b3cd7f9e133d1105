import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { errorLine, PetriError } from '../../errors.js';
import { DOCKER_HUB, DOCKER_HUB_AUTH_KEY, registryName } from './name.js';

/** What a registry gets to know who we are. */
export interface Credentials {
  username: string;
  /** A password or an access token. */
  password: string;
  /** An OAuth2 refresh token (Docker's `identitytoken`), used instead of the password at the token server. */
  identityToken?: string;
}

/** Docker's `config.json`: the parts petri reads and writes; everything else is kept as it is. */
interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
  [key: string]: unknown;
}

/** Where Docker keeps its client config: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
export function dockerConfigPath(): string {
  const dir = process.env.DOCKER_CONFIG || join(process.env.HOME || homedir(), '.docker');
  return join(dir, 'config.json');
}

function readConfig(path = dockerConfigPath()): DockerConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new PetriError(`cannot read ${path}: ${errorLine(error)}`, { cause: error });
  }
  if (text.trim() === '') return {};
  try {
    const config = JSON.parse(text) as DockerConfig;
    if (config === null || typeof config !== 'object' || Array.isArray(config)) throw new Error('not a JSON object');
    return config;
  } catch (error) {
    throw new PetriError(`${path} is not valid JSON (${errorLine(error)}): fix or remove it`, { cause: error });
  }
}

function writeConfig(config: DockerConfig, path = dockerConfigPath()): void {
  try {
    mkdirSync(join(path, '..'), { recursive: true, mode: 0o700 });
    const temp = `${path}.${process.pid}.tmp`;
    writeFileSync(temp, `${JSON.stringify(config, null, '\t')}\n`, { mode: 0o600 });
    renameSync(temp, path);
  } catch (error) {
    throw new PetriError(`cannot write ${path}: ${errorLine(error)}`, { cause: error });
  }
}

/** The keys a registry's entry may have in `auths` (Docker Hub's is `https://index.docker.io/v1/`). */
function authKeys(registry: string): string[] {
  if (registry === DOCKER_HUB) {
    return [DOCKER_HUB_AUTH_KEY, 'index.docker.io', 'docker.io', 'registry-1.docker.io', 'https://index.docker.io/v1'];
  }
  return [registry, `https://${registry}`, `http://${registry}`, `https://${registry}/`, `https://${registry}/v1/`];
}

function findAuth(
  config: DockerConfig,
  registry: string,
): [string, NonNullable<DockerConfig['auths']>[string]] | undefined {
  const auths = config.auths ?? {};
  for (const key of authKeys(registry)) if (auths[key]) return [key, auths[key]];
  // Any other spelling of the same host (a path, a trailing slash).
  for (const [key, value] of Object.entries(auths)) {
    try {
      if (registryName(key) === registry) return [key, value];
    } catch {
      // not a registry key
    }
  }
  return undefined;
}

/** The server name credential helpers know a registry by (Docker's convention: Docker Hub's is its v1 URL). */
function helperServer(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_AUTH_KEY : registry;
}

function helperFor(config: DockerConfig, registry: string): string | undefined {
  const helpers = config.credHelpers ?? {};
  return helpers[registry] ?? (registry === DOCKER_HUB ? helpers['index.docker.io'] : undefined) ?? config.credsStore;
}

/**
 * The credentials Docker users already have for a registry: `credHelpers` /
 * `credsStore` through `docker-credential-NAME get`, then `auths` (base64
 * `user:password`, or `identitytoken`). Undefined when there are none.
 */
export async function lookupCredentials(registry: string): Promise<Credentials | undefined> {
  const config = readConfig();
  const helper = helperFor(config, registry);
  if (helper) {
    const found = await runHelper(helper, 'get', helperServer(registry)).then(
      (out) => parseHelperOutput(out, helper),
      (error: unknown) => {
        if (error instanceof HelperNotFound) return undefined;
        throw error;
      },
    );
    if (found) return found;
  }
  const entry = findAuth(config, registry)?.[1];
  if (!entry) return undefined;
  let username = entry.username ?? '';
  let password = entry.password ?? '';
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0)
      throw new PetriError(`${dockerConfigPath()}: the auth for ${registry} is not base64 of user:password`);
    username = decoded.slice(0, colon);
    password = decoded.slice(colon + 1);
  }
  if (entry.identitytoken) return { username, password, identityToken: entry.identitytoken };
  return username || password ? { username, password } : undefined;
}

/** Saves credentials as `docker login` does: in the registry's credential helper when one is set, else in `auths`. */
export async function storeCredentials(registry: string, credentials: Credentials): Promise<string> {
  const config = readConfig();
  const helper = helperFor(config, registry);
  if (helper) {
    const payload = JSON.stringify({
      ServerURL: helperServer(registry),
      Username: credentials.username,
      Secret: credentials.password,
    });
    await runHelper(helper, 'store', payload);
    return `docker-credential-${helper}`;
  }
  config.auths ??= {};
  const existing = findAuth(config, registry)?.[0];
  const key = existing ?? (registry === DOCKER_HUB ? DOCKER_HUB_AUTH_KEY : registry);
  config.auths[key] = { auth: Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64') };
  writeConfig(config);
  return dockerConfigPath();
}

/** Removes a registry's credentials (helper and `auths`); whether there were any. */
export async function eraseCredentials(registry: string): Promise<boolean> {
  const config = readConfig();
  let erased = false;
  const helper = helperFor(config, registry);
  if (helper) {
    erased = await runHelper(helper, 'erase', helperServer(registry)).then(
      () => true,
      (error: unknown) => {
        if (error instanceof HelperNotFound || /not found/i.test(errorLine(error))) return false;
        throw error;
      },
    );
  }
  const found = findAuth(config, registry);
  if (found && config.auths) {
    delete config.auths[found[0]];
    writeConfig(config);
    erased = true;
  }
  return erased;
}

class HelperNotFound extends PetriError {}

function parseHelperOutput(out: string, helper: string): Credentials | undefined {
  let parsed: { Username?: string; Secret?: string };
  try {
    parsed = JSON.parse(out) as typeof parsed;
  } catch {
    throw new PetriError(`docker-credential-${helper} get printed something that is not JSON: ${out.slice(0, 100)}`);
  }
  if (!parsed.Secret) return undefined;
  // Docker's convention: the user `<token>` marks an identity (refresh) token.
  if (parsed.Username === '<token>') return { username: '', password: '', identityToken: parsed.Secret };
  return { username: parsed.Username ?? '', password: parsed.Secret };
}

/** Runs `docker-credential-NAME ACTION` with `input` on stdin (Docker's credential helper protocol). */
function runHelper(name: string, action: 'get' | 'store' | 'erase', input: string): Promise<string> {
  const program = `docker-credential-${name}`;
  return new Promise((resolve, reject) => {
    const child = spawn(program, [action], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString();
    });
    child.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') {
        reject(new HelperNotFound(`${program} is not installed (${dockerConfigPath()} names it)`));
      } else reject(new PetriError(`cannot run ${program}: ${errorLine(error)}`, { cause: error }));
    });
    child.stdin.on('error', () => {});
    child.on('close', (code) => {
      if (code === 0) return resolve(out.trim());
      const message = (out.trim() || err.trim()).split('\n')[0] ?? '';
      // "credentials not found in native keychain": no credentials, not an error.
      if (action === 'get' && /credentials not found/i.test(message)) return resolve('{}');
      reject(new PetriError(`${program} ${action} failed (exit ${code}): ${message}`));
    });
    child.stdin.end(input);
  });
}
