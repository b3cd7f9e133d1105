import http, { type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';

/** One HTTP request to a registry (or its token server, or a blob's redirect target). */
export interface HttpRequest {
  method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  url: URL;
  headers?: Record<string, string>;
  /** The body; a function so that a retried request sends it again from the start. */
  body?: () => Readable | Buffer;
  /** Accept any TLS certificate (an `--insecure-registry`). */
  insecureTls?: boolean;
  /** Give up when the connection is idle this long (default 60 s). */
  idleTimeoutMs?: number;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** Where the response came from, after redirects. */
  url: URL;
  body: IncomingMessage;
}

/** A request that never got a (complete) response: the network, not the server, said no. */
export class ConnectionError extends Error {
  override name = 'ConnectionError';
  readonly code: string;
  constructor(message: string, code: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

const MAX_REDIRECTS = 10;
const agents = {
  http: new http.Agent({ keepAlive: true, maxSockets: 16 }),
  https: new https.Agent({ keepAlive: true, maxSockets: 16 }),
  httpsInsecure: new https.Agent({ keepAlive: true, maxSockets: 16, rejectUnauthorized: false }),
};

/**
 * Sends a request and resolves with the response once its headers arrive (the
 * body is left to the caller, who must read or `discard` it). GET and HEAD
 * follow redirects (blob downloads are often redirected to a CDN), dropping the
 * Authorization header when the redirect leaves the registry's origin.
 */
export async function send(request: HttpRequest): Promise<HttpResponse> {
  let url = request.url;
  let headers = { ...request.headers };
  for (let hop = 0; ; hop++) {
    const response = await sendOnce({ ...request, url, headers });
    const location = response.headers.location;
    const redirect = [301, 302, 303, 307, 308].includes(response.status) && location !== undefined;
    if (!redirect || (request.method !== 'GET' && request.method !== 'HEAD') || hop >= MAX_REDIRECTS) {
      return response;
    }
    discard(response);
    const next = new URL(location, url);
    if (next.origin !== url.origin) {
      headers = Object.fromEntries(Object.entries(headers).filter(([k]) => k.toLowerCase() !== 'authorization'));
    }
    url = next;
  }
}

function sendOnce(request: HttpRequest): Promise<HttpResponse> {
  const { url } = request;
  const secure = url.protocol === 'https:';
  const agent = secure ? (request.insecureTls ? agents.httpsInsecure : agents.https) : agents.http;
  const body = request.body?.();
  const headers: Record<string, string> = { 'User-Agent': 'petri', ...request.headers };
  if (Buffer.isBuffer(body)) headers['Content-Length'] = String(body.length);
  else if (body === undefined && ['POST', 'PUT', 'PATCH'].includes(request.method)) headers['Content-Length'] = '0';
  const timeout = request.idleTimeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const fail = (error: Error) => {
      if (body instanceof Readable) body.destroy();
      reject(asConnectionError(error, url));
    };
    const req = (secure ? https : http).request(
      url,
      { method: request.method, headers, agent, timeout },
      (res: IncomingMessage) => {
        req.setTimeout(0);
        // An idle body (a stalled download) fails instead of hanging.
        res.setTimeout?.(timeout, () =>
          res.destroy(new ConnectionError(`no data for ${timeout / 1000}s`, 'ETIMEDOUT')),
        );
        resolve({ status: res.statusCode ?? 0, headers: res.headers, url, body: res });
      },
    );
    req.on('timeout', () => req.destroy(new ConnectionError(`no response for ${timeout / 1000}s`, 'ETIMEDOUT')));
    req.on('error', fail);
    if (body instanceof Readable) {
      body.on('error', (error) => req.destroy(error));
      body.pipe(req);
    } else {
      req.end(body);
    }
  });
}

/** Reads a (small) response body as text, at most `limit` bytes. */
export async function readText(response: HttpResponse, limit = 4 << 20): Promise<string> {
  return (await readBytes(response, limit)).toString('utf8');
}

export async function readBytes(response: HttpResponse, limit = 4 << 20): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of response.body) {
      size += (chunk as Buffer).length;
      if (size > limit) {
        response.body.destroy();
        throw new ConnectionError(`the response from ${response.url.host} is larger than ${limit} bytes`, 'ETOOBIG');
      }
      chunks.push(chunk as Buffer);
    }
  } catch (error) {
    throw asConnectionError(error as Error, response.url);
  }
  return Buffer.concat(chunks);
}

/** Throws a response's body away (so that its connection can be reused). */
export function discard(response: HttpResponse): void {
  response.body.on('error', () => {});
  response.body.resume();
}

/** A network-level error as a ConnectionError with a code (ECONNRESET, ETIMEDOUT, …) and the host. */
export function asConnectionError(error: Error, url: URL): Error {
  if (error instanceof ConnectionError) return error;
  const code = (error as NodeJS.ErrnoException).code ?? (error.message === 'aborted' ? 'ECONNRESET' : 'ENET');
  return new ConnectionError(`${url.host}: ${error.message}`, code, { cause: error });
}

/** Network errors worth another try: the connection broke or stalled, not "no such host". */
export function isTransient(error: unknown): boolean {
  if (!(error instanceof ConnectionError)) return false;
  return !['ENOTFOUND', 'EAI_NONAME', 'ETOOBIG'].includes(error.code) && !isTlsError(error);
}

export function isTlsError(error: unknown): boolean {
  const code = (error as { code?: string }).code ?? '';
  const cause = (error as { cause?: { code?: string } }).cause?.code ?? '';
  return (
    [code, cause].some((c) => c.startsWith('ERR_SSL') || c.startsWith('ERR_TLS') || c === 'EPROTO') ||
    /certificate|SSL|TLS/i.test((error as Error).message ?? '')
  );
}
