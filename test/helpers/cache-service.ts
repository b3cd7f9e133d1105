import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A local stand-in for the GitHub Actions cache service (v2) as @actions/cache
 * v6 uses it when the runner sets ACTIONS_CACHE_SERVICE_V2: the results
 * service's twirp calls on ACTIONS_RESULTS_URL, with ACTIONS_RUNTIME_TOKEN as
 * a bearer token (`/twirp/github.actions.results.api.v1.CacheService/`
 * `GetCacheEntryDownloadURL`, `CreateCacheEntry`, `FinalizeCacheEntryUpload`,
 * JSON with the protobuf field names), the Azure blob upload of the archive
 * at the signed URL CreateCacheEntry returns (one `PUT`, or `PUT ?comp=block`
 * per block then `PUT ?comp=blocklist`), and its download from the signed URL
 * GetCacheEntryDownloadURL returns (a plain `GET`, as the host is not
 * `*.blob.core.windows.net`). Like the real service, an entry is found only
 * with the same version (a hash of the cached paths and the compression), by
 * its exact key or else by the newest entry whose key starts with a restore
 * key, only once finalized, and a key is written once. Nothing leaves the machine.
 */
export interface CacheService {
  /** ACTIONS_RESULTS_URL. */
  url: string;
  /** ACTIONS_RUNTIME_TOKEN (a JWT, which @actions/cache only passes on). */
  token: string;
  /** The entries, by key. */
  entries: Map<string, CacheEntry>;
  /** Every twirp call, in order: its method, its request and the reply. */
  calls: CacheCall[];
  /** How many times an entry's archive was downloaded. */
  downloads: number;
  /** Environment variables that point @actions/cache (v2) at this service. */
  env: Record<string, string>;
  close(): Promise<void>;
}

export interface CacheEntry {
  key: string;
  version: string;
  /** The archive (a tar, compressed with zstd or gzip), once uploaded. */
  blob?: Buffer;
  /** FinalizeCacheEntryUpload's size_bytes; an entry is found only once finalized. */
  finalizedSize?: number;
  created: number;
}

export interface CacheCall {
  method: string;
  request: Record<string, unknown>;
  reply: Record<string, unknown>;
  authorization?: string;
}

const SERVICE = '/twirp/github.actions.results.api.v1.CacheService/';

export async function startCacheService(): Promise<CacheService> {
  const entries = new Map<string, CacheEntry>();
  const blocks = new Map<string, Map<string, Buffer>>();
  const calls: CacheCall[] = [];
  let base = '';
  let sequence = 0;
  const service = { downloads: 0 };
  const blobUrl = (key: string) => `${base}/devaccount/cache/${encodeURIComponent(key)}?sig=not-a-secret`;

  const twirp = (method: string, request: Record<string, unknown>): Record<string, unknown> => {
    const version = String(request.version ?? '');
    if (method === 'GetCacheEntryDownloadURL') {
      const usable = [...entries.values()].filter((e) => e.version === version && e.finalizedSize !== undefined);
      const key = String(request.key ?? '');
      const restoreKeys = Array.isArray(request.restore_keys) ? request.restore_keys.map(String) : [];
      let found = usable.find((e) => e.key === key);
      for (const prefix of restoreKeys) {
        if (found) break;
        found =
          usable.find((e) => e.key === prefix) ??
          usable.filter((e) => e.key.startsWith(prefix)).sort((a, b) => b.created - a.created)[0];
      }
      return found ? { ok: true, signed_download_url: blobUrl(found.key), matched_key: found.key } : { ok: false };
    }
    if (method === 'CreateCacheEntry') {
      const key = String(request.key ?? '');
      if (entries.has(key)) return { ok: false, message: `cache entry ${key} already exists` };
      entries.set(key, { key, version, created: ++sequence });
      blocks.set(key, new Map());
      return { ok: true, signed_upload_url: blobUrl(key) };
    }
    if (method === 'FinalizeCacheEntryUpload') {
      const entry = entries.get(String(request.key ?? ''));
      if (!entry || entry.version !== version || !entry.blob) return { ok: false, message: 'no such upload' };
      if (Number(request.size_bytes) !== entry.blob.length) {
        return { ok: false, message: `size_bytes ${request.size_bytes} is not the ${entry.blob.length} uploaded` };
      }
      entry.finalizedSize = entry.blob.length;
      return { ok: true, entry_id: String(entry.created) };
    }
    throw new Error(`unknown method ${method}`);
  };

  const server: Server = createServer((req, res) => {
    void body(req).then((data) => {
      const url = new URL(req.url ?? '/', base);
      const reply = (
        status: number,
        payload?: Buffer | Record<string, unknown>,
        headers: Record<string, string> = {},
      ) => {
        const bytes = Buffer.isBuffer(payload) ? payload : Buffer.from(payload ? JSON.stringify(payload) : '');
        res.writeHead(status, {
          'content-type': Buffer.isBuffer(payload) ? 'application/octet-stream' : 'application/json',
          'content-length': String(bytes.length),
          ...headers,
        });
        res.end(bytes);
      };
      if (req.method === 'POST' && url.pathname.startsWith(SERVICE)) {
        const method = url.pathname.slice(SERVICE.length);
        let request: Record<string, unknown>;
        try {
          request = JSON.parse(data.toString('utf8')) as Record<string, unknown>;
        } catch {
          return reply(400, { code: 'malformed', msg: 'the body is not JSON' });
        }
        if (!['GetCacheEntryDownloadURL', 'CreateCacheEntry', 'FinalizeCacheEntryUpload'].includes(method)) {
          return reply(404, { code: 'bad_route', msg: `no method ${method}` });
        }
        const answer = twirp(method, request);
        calls.push({
          method,
          request,
          reply: answer,
          ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
        });
        return reply(200, answer);
      }
      if (url.pathname.startsWith('/devaccount/cache/')) {
        const key = decodeURIComponent(url.pathname.slice('/devaccount/cache/'.length));
        const entry = entries.get(key);
        if (!entry) return reply(404);
        if (req.method === 'GET' || req.method === 'HEAD') {
          if (entry.finalizedSize === undefined || !entry.blob) return reply(404);
          if (req.method === 'GET') service.downloads++;
          return reply(200, req.method === 'GET' ? entry.blob : undefined, {
            'content-length': String(entry.blob.length),
          });
        }
        if (req.method !== 'PUT' || entry.finalizedSize !== undefined) return reply(409);
        const parts = blocks.get(key) ?? new Map<string, Buffer>();
        const comp = url.searchParams.get('comp');
        if (comp === 'block') parts.set(url.searchParams.get('blockid') ?? '', data);
        else if (comp === 'blocklist') {
          const ids = [...data.toString('utf8').matchAll(/<(?:Latest|Uncommitted|Committed)>([^<]*)</g)].map(
            (m) => m[1] ?? '',
          );
          entry.blob = Buffer.concat(ids.map((id) => parts.get(id) ?? Buffer.alloc(0)));
        } else entry.blob = data;
        return reply(201, undefined, {
          etag: '"0x1"',
          'last-modified': new Date().toUTCString(),
          'x-ms-request-server-encrypted': 'true',
        });
      }
      reply(404, { code: 'not_found', msg: `${req.method} ${url.pathname}` });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const token = `${encode({ alg: 'none', typ: 'JWT' })}.${encode({ scp: 'Actions.Results:run-backend-id:job-backend-id' })}.x`;
  return {
    url: `${base}/`,
    token,
    entries,
    calls,
    get downloads() {
      return service.downloads;
    },
    env: { ACTIONS_RESULTS_URL: `${base}/`, ACTIONS_RUNTIME_TOKEN: token, ACTIONS_CACHE_SERVICE_V2: 'True' },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function body(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}
