// Registries for test/registry.test.ts: Debian's docker-registry (the CNCF
// distribution registry) on 127.0.0.1, a counting proxy in front of one, a
// token server for docker-registry's bearer flow, and a small fake registry in
// Node that serves an image from a petri store with faults on demand (corrupt
// blobs, dropped connections, 429s, bearer tokens).
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createPrivateKey, randomBytes, sign, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as netServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ImageStore } from '../../src/image/store.js';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = netServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

export function missingTool(tool: string, pkg = tool): string | undefined {
  const found = spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
  return found ? undefined : `needs ${tool} (apt-get install ${pkg})`;
}

export interface RunningRegistry {
  /** `127.0.0.1:PORT` */
  host: string;
  port: number;
  stop(): Promise<void>;
}

/**
 * Starts `docker-registry serve` on a free loopback port with storage under
 * `dir`; optionally with htpasswd auth, or with bearer tokens from `token`.
 */
export async function startRegistry(
  dir: string,
  options: { htpasswd?: string; token?: TokenServer } = {},
): Promise<RunningRegistry> {
  const port = await freePort();
  const token = options.token;
  const auth = options.htpasswd
    ? `auth:\n  htpasswd:\n    realm: petri-test\n    path: ${options.htpasswd}\n`
    : token
      ? `auth:\n  token:\n    realm: ${token.realm}\n    service: ${token.service}\n    issuer: ${token.issuer}\n    rootcertbundle: ${token.certificate}\n`
      : '';
  const config = join(dir, 'config.yml');
  writeFileSync(
    config,
    `version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'data')}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n  secret: petri-test\n${auth}`,
  );
  const child = spawn('docker-registry', ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const stop = () => stopChild(child);
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited ${child.exitCode}: ${stderr}`);
    const status = await new Promise<number>((resolve) => {
      http
        .get(`http://127.0.0.1:${port}/v2/`, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        })
        .on('error', () => resolve(0));
    });
    if (status === 200 || status === 401) return { host: `127.0.0.1:${port}`, port, stop };
    await sleep(100);
  }
  await stop();
  throw new Error(`docker-registry did not start on port ${port}: ${stderr}`);
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

export interface CountingProxy {
  host: string;
  /** `METHOD /path` of every request since the last reset. */
  requests: string[];
  /** Blob GETs are held this long before they go upstream (default 0). */
  blobDelayMs: number;
  close(): Promise<void>;
}

/** A plain HTTP proxy to `target` (`127.0.0.1:PORT`) that records each request. */
export async function countingProxy(target: string): Promise<CountingProxy> {
  const [targetHost, targetPort] = target.split(':');
  const requests: string[] = [];
  const proxy = { blobDelayMs: 0 };
  const server = http.createServer(async (req, res) => {
    const path = (req.url ?? '').split('?')[0] ?? '';
    requests.push(`${req.method} ${path}`);
    if (proxy.blobDelayMs > 0 && req.method === 'GET' && /\/blobs\/sha256:/.test(path)) await sleep(proxy.blobDelayMs);
    const upstream = http.request(
      { host: targetHost, port: Number(targetPort), method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  const port = await listen(server);
  return Object.assign(proxy, { host: `127.0.0.1:${port}`, requests, close: () => closeServer(server) });
}

export interface TokenServer {
  /** `http://127.0.0.1:PORT/token` */
  realm: string;
  service: string;
  issuer: string;
  /** The PEM certificate whose key signs the tokens: the registry's `rootcertbundle`. */
  certificate: string;
  /** One line per token request: `USER|anonymous SCOPE…` (`-` when refused). */
  requests: string[];
  close(): Promise<void>;
}

/**
 * A token server for docker-registry's `auth: token:` (the distribution token
 * spec): it checks basic credentials against `users` and issues RS256 JWTs
 * signed with a key whose self-signed certificate (made with openssl, under
 * `dir`) travels in the header's `x5c`, as distribution verifies against its
 * rootcertbundle. Anyone may pull the repositories in `publicRepos`; a user
 * may pull and push anything; what is not granted is left out of the token
 * (the registry then answers 401, as Docker Hub's does).
 */
export async function tokenServer(
  dir: string,
  options: { users: Record<string, string>; publicRepos: string[] },
): Promise<TokenServer> {
  const keyPath = join(dir, 'token-key.pem');
  const certificate = join(dir, 'token-cert.pem');
  const made = spawnSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certificate].concat([
      '-days',
      '2',
      '-subj',
      '/CN=petri-test-token-issuer',
    ]),
    { encoding: 'utf8' },
  );
  if (made.status !== 0) throw new Error(`openssl req exited ${made.status}: ${made.stderr}`);
  const key = createPrivateKey(readFileSync(keyPath));
  const x5c = [new X509Certificate(readFileSync(certificate)).raw.toString('base64')];
  const service = 'petri-test-registry';
  const issuer = 'petri-test-issuer';
  const requests: string[] = [];
  const b64url = (data: string | Buffer) => Buffer.from(data).toString('base64url');
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://token');
    if (url.pathname !== '/token') return send(res, 404, '{}');
    const scopes = url.searchParams.getAll('scope').flatMap((scope) => scope.split(' '));
    let user: string | undefined;
    const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (basic) {
      const [name = '', ...rest] = Buffer.from(basic, 'base64').toString('utf8').split(':');
      if (options.users[name] === undefined || options.users[name] !== rest.join(':')) {
        requests.push(`- ${name} ${scopes.join(' ')}`.trimEnd());
        return send(res, 401, '{"details":"incorrect username or password"}');
      }
      user = name;
    }
    requests.push(`${user ?? 'anonymous'} ${scopes.join(' ')}`.trimEnd());
    const access = scopes.flatMap((scope) => {
      const [type, name, actions = ''] = scope.split(':');
      if (type !== 'repository' || !name) return [];
      const wanted = actions.split(',');
      const granted = user
        ? wanted.filter((a) => a === 'pull' || a === 'push')
        : options.publicRepos.includes(name)
          ? wanted.filter((a) => a === 'pull')
          : [];
      return granted.length > 0 ? [{ type, name, actions: granted }] : [];
    });
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'RS256', x5c };
    const claims = {
      iss: issuer,
      sub: user ?? '',
      aud: service,
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: randomBytes(8).toString('hex'),
      access,
    };
    const signed = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const token = `${signed}.${b64url(sign('sha256', Buffer.from(signed), key))}`;
    return send(res, 200, JSON.stringify({ token, access_token: token, expires_in: 300 }));
  });
  const port = await listen(server);
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certificate,
    requests,
    close: () => closeServer(server),
  };
}

function listen(server: http.Server): Promise<number> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : 0);
    });
  });
}

function closeServer(server: http.Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

export interface Faults {
  /** Blobs served with one byte changed. */
  corrupt: Set<string>;
  /** Blobs whose next GET sends half and then drops the connection (the count is per blob). */
  drop: Map<string, number>;
  /** Whether Range requests are honoured (206) or answered with the whole blob (200). */
  ranges: boolean;
  /** This many 429 answers (Retry-After: `retryAfter`) before requests succeed again. */
  tooMany: number;
  retryAfter?: string;
  /** Docker Hub's "pull quota used up" headers on the 429s. */
  quota: boolean;
  /** Require a bearer token from /token (which wants these basic credentials when set). */
  bearer?: { user?: string; password?: string };
}

export interface FakeRegistry {
  host: string;
  faults: Faults;
  requests: string[];
  close(): Promise<void>;
}

/**
 * Serves the images of `store` (tags as `REPO:TAG` → manifest) read-only over
 * the distribution API: manifests by tag or digest, blobs with Range support.
 */
export async function fakeRegistry(store: ImageStore, images: Record<string, string>): Promise<FakeRegistry> {
  const faults: Faults = { corrupt: new Set(), drop: new Map(), ranges: true, tooMany: 0, quota: false };
  const requests: string[] = [];
  const tokens = new Set<string>();
  let host = '';
  const manifests = new Map<string, { digest: string; type: string }>();
  for (const [name, ref] of Object.entries(images)) {
    const image = await store.resolve(ref);
    manifests.set(name, { digest: image.manifestDigest, type: image.manifest.mediaType });
  }
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', `http://${host}`);
    requests.push(`${req.method} ${url.pathname}`);
    if (url.pathname === '/token') {
      const want = faults.bearer;
      const basic = `Basic ${Buffer.from(`${want?.user}:${want?.password}`).toString('base64')}`;
      if (want?.user && req.headers.authorization !== basic) return send(res, 401, '{"details":"bad credentials"}');
      const token = `t${tokens.size}-${url.searchParams.getAll('scope').join('+')}`;
      tokens.add(token);
      return send(res, 200, JSON.stringify({ token, expires_in: 300 }), { 'Content-Type': 'application/json' });
    }
    if (faults.bearer) {
      const token = (req.headers.authorization ?? '').replace(/^Bearer /, '');
      if (!tokens.has(token)) {
        const scope = /^\/v2\/(.+)\/(?:manifests|blobs)\//.exec(url.pathname)?.[1];
        const challenge = `Bearer realm="http://${host}/token",service="fake"${scope ? `,scope="repository:${scope}:pull"` : ''}`;
        return send(res, 401, '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}', {
          'WWW-Authenticate': challenge,
        });
      }
    }
    if (faults.tooMany > 0 && url.pathname !== '/v2/') {
      faults.tooMany--;
      const headers: Record<string, string> = {};
      if (faults.retryAfter !== undefined) headers['Retry-After'] = faults.retryAfter;
      if (faults.quota)
        Object.assign(headers, { 'RateLimit-Limit': '100;w=21600', 'RateLimit-Remaining': '0;w=21600' });
      return send(
        res,
        429,
        '{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit"}]}',
        headers,
      );
    }
    if (url.pathname === '/v2/') return send(res, 200, '{}');
    const manifest = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(url.pathname);
    if (manifest) {
      const [, repo, ref] = manifest as unknown as [string, string, string];
      const found = ref.startsWith('sha256:')
        ? {
            digest: ref,
            type: (JSON.parse(readFileSync(store.blobPath(ref), 'utf8')) as { mediaType: string }).mediaType,
          }
        : manifests.get(`${repo}:${ref}`);
      if (!found || !store.hasBlob(found.digest)) return send(res, 404, '{"errors":[{"code":"MANIFEST_UNKNOWN"}]}');
      const body = readFileSync(store.blobPath(found.digest));
      return send(res, 200, req.method === 'HEAD' ? '' : body, {
        'Content-Type': found.type,
        'Docker-Content-Digest': found.digest,
        'Content-Length': String(body.length),
      });
    }
    const blob = /^\/v2\/.+\/blobs\/(sha256:[a-f0-9]{64})$/.exec(url.pathname);
    if (blob && store.hasBlob(blob[1] as string)) {
      const digest = blob[1] as string;
      let body = readFileSync(store.blobPath(digest));
      if (faults.corrupt.has(digest)) {
        body = Buffer.from(body);
        body[body.length >> 1] = (body[body.length >> 1] as number) ^ 0xff;
      }
      const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
      const drops = faults.drop.get(digest) ?? 0;
      if (drops > 0) {
        faults.drop.set(digest, drops - 1);
        const start = range && faults.ranges ? Number(range[1]) : 0;
        res.writeHead(start > 0 ? 206 : 200, {
          'Content-Length': String(body.length - start),
          ...(start > 0 ? { 'Content-Range': `bytes ${start}-${body.length - 1}/${body.length}` } : {}),
        });
        res.write(body.subarray(start, start + ((body.length - start) >> 1)));
        setTimeout(() => res.socket?.destroy(), 20);
        return;
      }
      if (range && faults.ranges) {
        const start = Number(range[1]);
        return send(res, 206, body.subarray(start), {
          'Content-Range': `bytes ${start}-${body.length - 1}/${body.length}`,
        });
      }
      return send(res, 200, req.method === 'HEAD' ? '' : body, { 'Content-Length': String(body.length) });
    }
    return send(res, 404, '{"errors":[{"code":"BLOB_UNKNOWN"}]}');
  };
  const server = http.createServer(handle);
  const port = await listen(server);
  host = `127.0.0.1:${port}`;
  return { host, faults, requests, close: () => closeServer(server) };
}

function send(res: ServerResponse, status: number, body: string | Buffer, headers: Record<string, string> = {}) {
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
  res.end(body);
}
