import { setTimeout as sleep } from 'node:timers/promises';
import { errorLine, PetriError } from '../../errors.js';
import { basicHeader, type Challenge, fetchToken, parseChallenge, type Token } from './auth.js';
import { type Credentials, lookupCredentials } from './credentials.js';
import {
  ConnectionError,
  discard,
  type HttpRequest,
  type HttpResponse,
  isTlsError,
  isTransient,
  readText,
  send,
} from './http.js';
import { apiHost, DOCKER_HUB, isLoopback, registryName } from './name.js';

export interface RegistryOptions {
  /** Registries that may be reached over plain HTTP, or over TLS with any certificate (`--insecure-registry`). */
  insecureRegistries?: readonly string[];
  /** Credentials to use instead of those in Docker's config (`petri login` checks new ones this way). */
  credentials?: Credentials;
  /** Retries after a connection error, a 429 or a 5xx (default 4). */
  retries?: number;
  /** The first retry's delay in ms, doubled each time (default 250). */
  backoffMs?: number;
  /** The longest Retry-After petri waits for before giving up on a 429 (default 60 s). */
  maxRetryAfterMs?: number;
}

export interface RegistryRequest {
  method: HttpRequest['method'];
  /** A path under the registry (`/v2/…`) or an absolute URL (an upload's Location). */
  path: string;
  /** The token scopes this request needs: `repository:NAME:pull`, `repository:NAME:pull,push`. */
  scopes: readonly string[];
  headers?: Record<string, string>;
  body?: HttpRequest['body'];
  /** Retry after a connection error or a 5xx (default: for GET and HEAD). */
  idempotent?: boolean;
}

/** Registries named by `PETRI_INSECURE_REGISTRIES` (comma-separated) are insecure too. */
function envInsecure(): string[] {
  return (process.env.PETRI_INSECURE_REGISTRIES ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/**
 * One registry's OCI distribution API: the base URL (HTTPS; plain HTTP only
 * for loopback and insecure registries), authentication (the challenge from
 * `GET /v2/`, bearer tokens per scope, basic auth), and retries with
 * exponential backoff on connection errors, 429 and 5xx.
 */
export class RegistryClient {
  readonly registry: string;
  readonly #insecure: boolean;
  readonly #options: RegistryOptions;
  #base: Promise<URL> | undefined;
  #challenge: Challenge | undefined;
  #credentials: Promise<Credentials | undefined> | undefined;
  readonly #tokens = new Map<string, Promise<Token>>();

  constructor(registry: string, options: RegistryOptions = {}) {
    this.registry = registry;
    this.#options = options;
    const insecure = [...(options.insecureRegistries ?? []), ...envInsecure()].map((r) => registryName(r));
    this.#insecure = insecure.includes(registry) || insecure.includes(registry.split(':')[0] as string);
    if (options.credentials) this.#credentials = Promise.resolve(options.credentials);
  }

  /** Whether a plain-HTTP or unverified-TLS connection is allowed. */
  get allowsInsecure(): boolean {
    return this.#insecure || isLoopback(this.registry);
  }

  /** `https://host/` (or `http://` for a loopback or insecure registry that does not speak TLS). */
  base(): Promise<URL> {
    this.#base ??= this.#ping();
    this.#base.catch(() => {
      this.#base = undefined;
    });
    return this.#base;
  }

  /** Checks that the registry answers and that credentials (if any) are accepted: what `petri login` does. */
  async checkLogin(): Promise<void> {
    const base = await this.base();
    const credentials = await this.credentials();
    if (this.#challenge?.scheme === 'bearer') {
      await fetchToken(this.registry, this.#challenge, [], credentials, this.allowsInsecure);
      return;
    }
    if (!this.#challenge) return;
    const response = await this.#send({ method: 'GET', url: new URL('/v2/', base), headers: this.#basic(credentials) });
    discard(response);
    if (response.status === 401) {
      throw new PetriError(`${this.registry}: the registry refused the credentials of ${credentials?.username} (401)`, {
        code: 'EAUTH',
      });
    }
  }

  credentials(): Promise<Credentials | undefined> {
    this.#credentials ??= lookupCredentials(this.registry);
    return this.#credentials;
  }

  /**
   * Sends a request with authentication and retries; returns the response for
   * any status but 401, 429 and retried 5xx (the caller reads or discards its
   * body). A 401 that new credentials cannot fix, a rate limit and a registry
   * that keeps failing are PetriErrors.
   */
  async request(request: RegistryRequest): Promise<HttpResponse> {
    const base = await this.base();
    const url = new URL(request.path, base);
    const retries = this.#options.retries ?? 4;
    const idempotent = request.idempotent ?? (request.method === 'GET' || request.method === 'HEAD');
    let authRetried = false;
    for (let attempt = 0; ; attempt++) {
      const headers = { ...request.headers, ...(await this.#authHeaders(request.scopes)) };
      let response: HttpResponse;
      try {
        response = await this.#send({ method: request.method, url, headers, body: request.body });
      } catch (error) {
        if (idempotent && isTransient(error) && attempt < retries) {
          await this.#backoff(attempt);
          continue;
        }
        throw this.#networkError(error, url);
      }
      if (response.status === 401) {
        const challenge = parseChallenge(headerOf(response, 'www-authenticate'));
        const detail = await errorDetail(response);
        if (!authRetried && challenge && (await this.#answer(challenge, request.scopes, headers))) {
          authRetried = true;
          attempt--;
          continue;
        }
        throw await this.#unauthorized(detail);
      }
      if (response.status === 429) {
        const wait = this.#rateLimitWait(response, attempt);
        const detail = await errorDetail(response);
        if (wait === undefined || attempt >= retries) throw this.#rateLimited(response, detail);
        await sleep(wait);
        continue;
      }
      if (response.status >= 500 && response.status !== 501 && idempotent && attempt < retries) {
        discard(response);
        await this.#backoff(attempt);
        continue;
      }
      return response;
    }
  }

  /** The error for a response a caller did not expect: `HOST: what (HTTP n, CODE: message)`. */
  async unexpected(response: HttpResponse, what: string): Promise<PetriError> {
    const detail = await errorDetail(response);
    return new PetriError(`${this.registry}: ${what} failed: HTTP ${response.status}${detail ? ` (${detail})` : ''}`, {
      code: response.status === 404 ? 'ENOTFOUND' : response.status === 403 ? 'EDENIED' : 'EREGISTRY',
    });
  }

  /** A wait between retries: 250 ms, 500 ms, 1 s, 2 s… with jitter. */
  async #backoff(attempt: number): Promise<void> {
    const base = this.#options.backoffMs ?? 250;
    await sleep(Math.min(8000, base * 2 ** attempt) * (0.75 + Math.random() / 2));
  }

  /** Exposed for blob downloads that resume after a broken connection. */
  backoff(attempt: number): Promise<void> {
    return this.#backoff(attempt);
  }

  get retries(): number {
    return this.#options.retries ?? 4;
  }

  #send(request: Omit<HttpRequest, 'insecureTls'>): Promise<HttpResponse> {
    return send({ ...request, insecureTls: this.allowsInsecure });
  }

  /** `GET /v2/` over HTTPS, then (loopback or insecure only) plain HTTP; remembers the auth challenge. */
  async #ping(): Promise<URL> {
    const host = apiHost(this.registry);
    const schemes = this.allowsInsecure ? ['https', 'http'] : ['https'];
    let lastError: unknown;
    for (const scheme of schemes) {
      const base = new URL(`${scheme}://${host}/`);
      for (let attempt = 0; ; attempt++) {
        try {
          const response = await this.#send({ method: 'GET', url: new URL('/v2/', base), idleTimeoutMs: 30_000 });
          discard(response);
          if (response.status === 401) this.#challenge = parseChallenge(headerOf(response, 'www-authenticate'));
          else if (response.status >= 500 && attempt < this.retries) {
            await this.#backoff(attempt);
            continue;
          } else if (response.status !== 200) {
            throw new PetriError(
              `${this.registry} is not an OCI registry: GET ${base.origin}/v2/ answered HTTP ${response.status}`,
              { code: 'EREGISTRY' },
            );
          }
          return base;
        } catch (error) {
          if (error instanceof PetriError) throw error;
          lastError = error;
          const code = (error as { code?: string }).code;
          // Refused or unknown: nothing listens there, whatever the scheme.
          if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EAI_AGAIN') break;
          // A registry that does not answer at all (a firewall, no network) fails at once: a build
          // FROM a local image must not wait minutes for a pull that cannot happen.
          const retry = isTransient(error) && code !== 'ETIMEDOUT';
          if (retry && attempt < this.retries && scheme === schemes.at(-1)) {
            await this.#backoff(attempt);
            continue;
          }
          break;
        }
      }
      const code = (lastError as { code?: string }).code;
      if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EAI_AGAIN') break;
    }
    throw this.#networkError(lastError, new URL(`https://${host}/v2/`));
  }

  #networkError(error: unknown, url: URL): PetriError {
    if (error instanceof PetriError) return error;
    const code = (error as { code?: string }).code;
    if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
      return new PetriError(`cannot reach registry ${this.registry}: the host ${url.hostname} is unknown (${code})`, {
        code: 'ENETWORK',
        cause: error,
      });
    }
    if (isTlsError(error) && !this.allowsInsecure) {
      return new PetriError(
        `cannot reach registry ${this.registry} over HTTPS (${errorLine(error)}); if it serves plain HTTP or a self-signed certificate, pass --insecure-registry ${this.registry}`,
        { code: 'ENETWORK', cause: error },
      );
    }
    const what = error instanceof ConnectionError ? error.message.replace(`${url.host}: `, '') : errorLine(error);
    return new PetriError(`cannot reach registry ${this.registry} (${url.origin}): ${what}`, {
      code: 'ENETWORK',
      cause: error,
    });
  }

  #basic(credentials: Credentials | undefined): Record<string, string> {
    return credentials && !credentials.identityToken ? { Authorization: basicHeader(credentials) } : {};
  }

  async #authHeaders(scopes: readonly string[]): Promise<Record<string, string>> {
    const challenge = this.#challenge;
    if (!challenge) return {};
    if (challenge.scheme === 'basic') return this.#basic(await this.credentials());
    const token = await this.#token(challenge, scopes);
    return { Authorization: `Bearer ${token.token}` };
  }

  #token(challenge: Challenge, scopes: readonly string[]): Promise<Token> {
    const key = [...scopes].sort().join(' ');
    const cached = this.#tokens.get(key);
    if (cached) {
      return cached.then((token) => (token.expires > Date.now() ? token : this.#newToken(challenge, scopes, key)));
    }
    return this.#newToken(challenge, scopes, key);
  }

  #newToken(challenge: Challenge, scopes: readonly string[], key: string): Promise<Token> {
    const promise = this.credentials().then((credentials) =>
      fetchToken(this.registry, challenge, scopes, credentials, this.allowsInsecure),
    );
    this.#tokens.set(key, promise);
    promise.catch(() => this.#tokens.delete(key));
    return promise;
  }

  /** A 401 came: whether a new challenge (or scope) gives a different Authorization to try once more. */
  async #answer(challenge: Challenge, scopes: readonly string[], sent: Record<string, string>): Promise<boolean> {
    this.#challenge = challenge;
    if (challenge.scheme === 'basic') {
      const credentials = await this.credentials();
      return !!credentials && sent.Authorization === undefined;
    }
    const wanted = new Set(scopes);
    for (const scope of (challenge.params.scope ?? '').split(' ').filter(Boolean)) wanted.add(scope);
    const key = [...wanted].sort().join(' ');
    this.#tokens.delete(key);
    const token = await this.#newToken(challenge, [...wanted], key);
    return `Bearer ${token.token}` !== sent.Authorization;
  }

  async #unauthorized(detail: string): Promise<PetriError> {
    const credentials = await this.credentials();
    const why = detail ? ` (${detail})` : '';
    if (!credentials) {
      return new PetriError(
        `${this.registry}: authentication required${why}: log in with petri login ${this.registry === DOCKER_HUB ? '' : this.registry}`.trimEnd(),
        { code: 'EAUTH' },
      );
    }
    return new PetriError(
      `${this.registry}: access refused for ${credentials.username || 'the saved token'}${why}: check the name, or log in again with petri login ${this.registry}`,
      { code: 'EAUTH' },
    );
  }

  /** How long to wait before retrying a 429, or undefined when the limit will not lift soon. */
  #rateLimitWait(response: HttpResponse, attempt: number): number | undefined {
    const remaining = headerOf(response, 'ratelimit-remaining');
    if (remaining !== undefined && /^0\b/.test(remaining)) return undefined; // Docker Hub's pull quota is used up
    const after = retryAfterMs(headerOf(response, 'retry-after'));
    if (after !== undefined) return after <= (this.#options.maxRetryAfterMs ?? 60_000) ? after : undefined;
    const base = this.#options.backoffMs ?? 250;
    return Math.min(8000, base * 2 ** attempt);
  }

  #rateLimited(response: HttpResponse, detail: string): PetriError {
    const after = retryAfterMs(headerOf(response, 'retry-after'));
    const limit = headerOf(response, 'ratelimit-limit');
    const window = /w=(\d+)/.exec(limit ?? '')?.[1];
    let when = 'later';
    if (after !== undefined) when = `in ${formatWait(after)}`;
    else if (window)
      when = `within ${formatWait(Number(window) * 1000)} (a limit of ${limit?.split(';')[0]} pulls per window)`;
    return new PetriError(
      `${this.registry} refused with 429 Too Many Requests: rate limit reached${detail ? ` (${detail})` : ''}; retry ${when}, or log in (petri login ${this.registry}) for a higher limit`,
      { code: 'ERATELIMIT' },
    );
  }
}

export function headerOf(response: HttpResponse, name: string): string | undefined {
  const value = response.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** The registry's own explanation of an error response: `CODE: message` from `{errors: […]}`, or the start of the body. */
export async function errorDetail(response: HttpResponse): Promise<string> {
  let text: string;
  try {
    text = await readText(response, 65536);
  } catch {
    return '';
  }
  try {
    const parsed = JSON.parse(text) as { errors?: { code?: string; message?: string }[] };
    const errors = (parsed.errors ?? []).map((e) => [e.code, e.message].filter(Boolean).join(': '));
    if (errors.length > 0) return errors.join('; ');
  } catch {
    // not JSON
  }
  return text.replace(/\s+/g, ' ').trim().slice(0, 200);
}

function retryAfterMs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

function formatWait(ms: number): string {
  if (ms < 90_000) return `${Math.ceil(ms / 1000)}s`;
  if (ms < 90 * 60_000) return `${Math.round(ms / 60_000)} min`;
  return `${Math.round(ms / 3_600_000)} h`;
}
