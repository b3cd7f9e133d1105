import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { inflateRawSync } from 'node:zlib';

/**
 * A local stand-in for the GitHub Actions artifact service (v4) as
 * @actions/artifact uses it for an upload: the results service's twirp calls
 * (`CreateArtifact`, `FinalizeArtifact` on
 * `/twirp/github.actions.results.api.v1.ArtifactService/`, at ACTIONS_RESULTS_URL,
 * with ACTIONS_RUNTIME_TOKEN as a bearer JWT whose `scp` names the run and job)
 * and the Azure blob upload at the signed URL CreateArtifact returns (`PUT
 * ?comp=block` per block, then `PUT ?comp=blocklist`). Nothing leaves the machine.
 */
export interface ArtifactService {
  url: string;
  /** A token @actions/artifact accepts (it only decodes it). */
  token: string;
  artifacts: Map<string, UploadedArtifact>;
  close(): Promise<void>;
}

export interface UploadedArtifact {
  name: string;
  created: Record<string, unknown>;
  finalized?: Record<string, unknown>;
  authorization?: string;
  /** The uploaded blob (a zip), once its block list is committed. */
  blob?: Buffer;
}

const SERVICE = '/twirp/github.actions.results.api.v1.ArtifactService/';

export async function startArtifactService(): Promise<ArtifactService> {
  const artifacts = new Map<string, UploadedArtifact>();
  const blocks = new Map<string, Map<string, Buffer>>();
  let nextId = 1;
  let base = '';
  const server: Server = createServer((req, res) => {
    void body(req).then((data) => {
      const url = new URL(req.url ?? '/', base);
      const reply = (status: number, json?: unknown, headers: Record<string, string> = {}) => {
        res.writeHead(status, { 'content-type': 'application/json', ...headers });
        res.end(json === undefined ? '' : JSON.stringify(json));
      };
      if (req.method === 'POST' && url.pathname === `${SERVICE}CreateArtifact`) {
        const request = JSON.parse(data.toString('utf8')) as Record<string, unknown>;
        const name = String(request.name);
        // As the service: a workflow run keeps each artifact name once (a re-run's attempt too).
        if (artifacts.has(name)) {
          return reply(409, {
            code: 'already_exists',
            msg: `an artifact with this name already exists on the workflow run`,
          });
        }
        artifacts.set(name, {
          name,
          created: request,
          ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
        });
        blocks.set(name, new Map());
        reply(200, { ok: true, signed_upload_url: `${base}/devaccount/artifacts/${encodeURIComponent(name)}?sig=x` });
      } else if (req.method === 'POST' && url.pathname === `${SERVICE}FinalizeArtifact`) {
        const request = JSON.parse(data.toString('utf8')) as Record<string, unknown>;
        const artifact = artifacts.get(String(request.name));
        if (!artifact) return reply(404, { code: 'not_found', msg: 'no such artifact' });
        artifact.finalized = request;
        reply(200, { ok: true, artifact_id: String(nextId++) });
      } else if (req.method === 'PUT' && url.pathname.startsWith('/devaccount/artifacts/')) {
        const name = decodeURIComponent(url.pathname.slice('/devaccount/artifacts/'.length));
        const parts = blocks.get(name);
        const artifact = artifacts.get(name);
        if (!parts || !artifact) return reply(404);
        const comp = url.searchParams.get('comp');
        if (comp === 'block') parts.set(url.searchParams.get('blockid') ?? '', data);
        else if (comp === 'blocklist') {
          const ids = [...data.toString('utf8').matchAll(/<(?:Latest|Uncommitted|Committed)>([^<]*)</g)].map(
            (m) => m[1] ?? '',
          );
          artifact.blob = Buffer.concat(ids.map((id) => parts.get(id) ?? Buffer.alloc(0)));
        } else artifact.blob = data;
        reply(201, undefined, {
          etag: '"0x1"',
          'last-modified': new Date().toUTCString(),
          'x-ms-request-server-encrypted': 'true',
        });
      } else reply(404, { code: 'not_found', msg: `${req.method} ${url.pathname}` });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const claims = { scp: 'Actions.ExampleScope Actions.Results:run-backend-id:job-backend-id' };
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return {
    url: `${base}/`,
    token: `${encode({ alg: 'none', typ: 'JWT' })}.${encode(claims)}.x`,
    artifacts,
    close: () => new Promise((resolve) => server.close(() => resolve())),
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

/** The files of a zip archive (stored or deflated), by name, read through its central directory. */
export function unzip(zip: Buffer): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  const end = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  if (end < 0) throw new Error('not a zip: no end of central directory');
  let offset = zip.readUInt32LE(end + 16);
  const count = zip.readUInt16LE(end + 10);
  for (let i = 0; i < count; i++) {
    if (zip.readUInt32LE(offset) !== 0x02014b50) throw new Error('bad central directory entry');
    const method = zip.readUInt16LE(offset + 10);
    const compressed = zip.readUInt32LE(offset + 20);
    const nameLength = zip.readUInt16LE(offset + 28);
    const extraLength = zip.readUInt16LE(offset + 30);
    const commentLength = zip.readUInt16LE(offset + 32);
    const local = zip.readUInt32LE(offset + 42);
    const name = zip.toString('utf8', offset + 46, offset + 46 + nameLength);
    const dataStart = local + 30 + zip.readUInt16LE(local + 26) + zip.readUInt16LE(local + 28);
    const data = zip.subarray(dataStart, dataStart + compressed);
    files.set(name, method === 8 ? inflateRawSync(data) : Buffer.from(data));
    offset += 46 + nameLength + extraLength + commentLength;
  }
  return files;
}
