// biome-ignore-all lint/suspicious/noTemplateCurlyInString: a shell script with ${VAR}, not template strings
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { GenericContainer, type StartedContainer, Wait } from '../src/index.js';
import { listContainers } from '../src/runtime/containers.js';
import { type ApiImages, apiImages } from './helpers/api-image.js';
import { describeKernel, missingForContainers } from './helpers/kernel.js';

let images: ApiImages;
const container = () => new GenericContainer(images.image, { store: images.store, layers: images.layers });

beforeAll(async () => {
  if (!missingForContainers()) images = await apiImages();
});
afterAll(() => images?.remove());

/** A busybox httpd on `port` serving `/www` with an index.html of `text`. */
const httpd = (text: string, port = 8080) =>
  container()
    .withCopyContentToContainer([{ content: text, target: '/www/index.html' }])
    .withCommand(['sh', '-c', `sleep 0.2; exec httpd -f -p ${port} -h /www`]);

async function get(port: number, path = '/'): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: response.status, body: await response.text() };
}

/** Sends `data`, half-closes, and collects what comes back until the other side closes. */
function roundTrip(port: number, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket: Socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('error', reject);
    socket.end(data);
  });
}

/** Inodes of the sockets listening on 127.0.0.1:port in this (the host's) network namespace. */
function listeningInodes(port: number): string[] {
  const inodes: string[] = [];
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields[3] !== '0A') continue;
    if (Number.parseInt(fields[1]?.split(':')[1] ?? '', 16) === port) inodes.push(fields[9] as string);
  }
  return inodes;
}

/** Processes holding one of these socket inodes. */
function holders(inodes: string[]): number[] {
  const wanted = new Set(inodes.map((inode) => `socket:[${inode}]`));
  const pids: number[] = [];
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (wanted.has(readlinkSync(`/proc/${pid}/fd/${fd}`))) {
          pids.push(Number(pid));
          break;
        }
      } catch {
        // closed meanwhile
      }
    }
  }
  return pids;
}

const comm = (pid: number) => readFileSync(`/proc/${pid}/comm`, 'utf8').trim();

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** This file's containers (other files' tests run at the same time): those on its own layer cache. */
const ours = () => listContainers().filter((c) => c.lower.some((dir) => dir.startsWith(images.dir)));

async function rejects(start: () => Promise<StartedContainer>): Promise<string> {
  const before = new Set(ours().map((c) => c.id));
  let message = '';
  try {
    await (await start()).stop({ remove: true });
  } catch (error) {
    message = (error as Error).message;
  }
  expect(ours().filter((c) => !before.has(c.id))).toEqual([]);
  return message;
}

describeKernel('ports: withExposedPorts, getMappedPort, the runner forwarding into the container', () => {
  it('a server in the container is reached on 127.0.0.1:<mapped port>; the default strategy waits for it', async () => {
    await using c = await httpd('hello from the container\n').withExposedPorts(8080).start();
    const port = c.getMappedPort(8080);
    expect(port).toBeGreaterThan(0);
    expect(c.getMappedPort('8080/tcp')).toBe(port);
    expect(c.getFirstMappedPort()).toBe(port);
    expect(c.getHost()).toBe('127.0.0.1');
    // no retry: the default wait strategy waited until 8080 listened in the container
    expect(await get(port)).toEqual({ status: 200, body: 'hello from the container\n' });
    expect((await get(port, '/nope')).status).toBe(404);
    // Many connections at once.
    const many = await Promise.all(Array.from({ length: 20 }, () => get(port)));
    expect(many.every((r) => r.body === 'hello from the container\n')).toBe(true);
    expect(() => c.getMappedPort(5432)).toThrow(
      `container ${c.getName()} has no mapped port for 5432: it exposes only 8080; add withExposedPorts(5432)`,
    );
  });

  it('relays both ways with half-close, large data intact; a port nothing listens on resets the connection', async () => {
    // nc -ll: a persistent server; each connection runs cat, which answers after the client's EOF.
    await using c = await container()
      .withCommand(['nc', '-ll', '-p', '7000', '-e', 'sh', '-c', 'cat; echo " (done)"'])
      .withExposedPorts(7000, '7001/tcp')
      .withWaitStrategy(Wait.forListeningPorts(7000))
      .start();
    const port = c.getMappedPort(7000);
    expect(c.getFirstMappedPort()).toBe(port);
    expect((await roundTrip(port, Buffer.from('ping'))).toString()).toBe('ping (done)\n');
    const big = randomBytes(8 << 20);
    const back = await roundTrip(port, big);
    expect(back.length).toBe(big.length + ' (done)\n'.length);
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    expect(sha(back.subarray(0, big.length))).toBe(sha(big));
    // 7001 is published but nothing listens there in the container.
    await expect(roundTrip(c.getMappedPort(7001), Buffer.from('x'))).rejects.toThrow(/ECONNRESET/);
  });

  it('containers with the same container port, started in parallel, get different host ports', async () => {
    const started = await Promise.all(
      ['one', 'two', 'three'].map((name) => httpd(`${name}\n`).withExposedPorts(8080).start()),
    );
    try {
      const ports = started.map((c) => c.getMappedPort(8080));
      expect(new Set(ports).size).toBe(3);
      expect(await Promise.all(ports.map(async (port) => (await get(port)).body))).toEqual([
        'one\n',
        'two\n',
        'three\n',
      ]);
    } finally {
      await Promise.all(started.map((c) => c.stop({ remove: true })));
    }
  });

  it('a fixed host port; taken, start fails naming it', async () => {
    const fixed = await freePort();
    await using c = await httpd('fixed\n').withExposedPorts({ container: 8080, host: fixed }).start();
    expect(c.getMappedPort(8080)).toBe(fixed);
    expect((await get(fixed)).body).toBe('fixed\n');
    const message = await rejects(() => httpd('x').withExposedPorts({ container: 8080, host: fixed }).start());
    expect(message).toMatch(
      new RegExp(`cannot start container \\w+: publish port 8080 on 127\\.0\\.0\\.1:${fixed}: Address already in use`),
    );
  });

  it('options are checked when set', () => {
    const c = container();
    expect(() => c.withExposedPorts(0)).toThrow('withExposedPorts: invalid port 0: expected a TCP port number');
    expect(() => c.withExposedPorts('53/udp' as never)).toThrow(
      'withExposedPorts: invalid port "53/udp": expected a TCP port: petri forwards TCP only',
    );
    expect(() => c.withExposedPorts({ container: 80, host: 70000 })).toThrow(
      'withExposedPorts: invalid host port 70000: expected a TCP port number from 1 to 65535',
    );
    expect(() => c.withExposedPorts({ container: 80 } as never)).toThrow('withExposedPorts: invalid host port');
    expect(() => Wait.forHttp('health', 80)).toThrow('Wait.forHttp: invalid path "health": expected a path starting');
    expect(() => Wait.forHttp('/', 80).forStatusCode(42)).toThrow('forStatusCode: invalid status code 42');
    expect(() => Wait.forHttp('/', 80).withHeaders({ 'X-A': 'b\nc' })).toThrow('withHeaders: invalid value of X-A');
  });

  it('the forwarder and its listening sockets are gone once the container stops; a restart publishes again', async () => {
    const c = await httpd('again\n').withExposedPorts(8080).start();
    const port = c.getMappedPort(8080);
    const inodes = listeningInodes(port);
    expect(inodes).toHaveLength(1);
    const forwarders = holders(inodes);
    expect(forwarders.map(comm)).toEqual(['petri-forward']);

    await c.restart();
    const again = c.getMappedPort(8080);
    expect((await get(again)).body).toBe('again\n');
    expect(holders(inodes)).toEqual([]);

    const stopped = await c.stop();
    const after = listeningInodes(again);
    expect(after).toEqual([]);
    expect(forwarders.filter((pid) => readdirSync('/proc').includes(String(pid)))).toEqual([]);
    await expect(get(again)).rejects.toThrow();
    expect(() => c.getMappedPort(8080)).toThrow(
      `container ${c.getName()} has no mapped port for 8080: it is not running`,
    );
    await stopped.remove();
  });

  it('a reused container keeps its ports for whoever attaches to it', async () => {
    const make = () => httpd('reused\n').withExposedPorts(8080).withReuse();
    const first = await make().start();
    const port = first.getMappedPort(8080);
    try {
      const second = await make().start();
      expect(second.getId()).toBe(first.getId());
      expect(second.getMappedPort(8080)).toBe(port);
      expect((await get(port)).body).toBe('reused\n');
    } finally {
      await first.stop();
    }
    expect(listeningInodes(port)).toEqual([]);
  });
});

describeKernel('Wait.forHttp through the mapped port', () => {
  /** A tiny HTTP server (nc -ll + sh): 200 "ok TOKEN" for GET /ready with X-Token, 201 for POST, 503 before /tmp/up exists. */
  const HANDLER = [
    '#!/bin/sh',
    'read -r method path _',
    'token=',
    'while read -r line; do',
    '  line=$(printf %s "$line" | tr -d "\\r")',
    '  [ -z "$line" ] && break',
    '  case "$line" in X-Token:*) token=${line#X-Token: } ;; esac',
    'done',
    'reply() { printf "HTTP/1.0 %s\\r\\nContent-Type: text/plain\\r\\nContent-Length: %s\\r\\n\\r\\n%s" "$1" "${#2}" "$2"; }',
    'if [ ! -e /tmp/up ]; then reply "503 Service Unavailable" "starting"',
    'elif [ "$method" = POST ]; then reply "201 Created" "posted $path"',
    'elif [ "$path" = /ready ]; then reply "200 OK" "ok $token"',
    'else reply "404 Not Found" "no $path"; fi',
  ].join('\n');

  const server = () =>
    container()
      .withCopyContentToContainer([{ content: `${HANDLER}\n`, target: '/handler', mode: 0o755 }])
      .withCommand(['sh', '-c', '(sleep 0.3; touch /tmp/up) & exec nc -ll -p 8080 -e /handler'])
      .withExposedPorts(8080);

  it('succeeds on the status (default 200, given, or a predicate), the body, the method and headers', async () => {
    await using c = await server()
      .withWaitStrategy(
        Wait.forHttp('/ready', 8080)
          .withHeaders({ 'X-Token': 'secret' })
          .forResponsePredicate((body) => body === 'ok secret'),
      )
      .start();
    expect((await get(c.getMappedPort(8080), '/ready')).body).toBe('ok ');
    await using posted = await server()
      .withWaitStrategy(
        Wait.forHttp('/things', 8080)
          .withMethod('post')
          .forStatusCodeMatching((status) => status >= 200 && status < 300),
      )
      .start();
    expect(posted.getFirstMappedPort()).toBeGreaterThan(0);
    await using missing = await server().withWaitStrategy(Wait.forHttp('/other', 8080).forStatusCode(404)).start();
    expect(missing.getFirstMappedPort()).toBeGreaterThan(0);
  });

  it('fails usefully: the last answer, a body that does not match, nothing listening, a port not exposed', async () => {
    const wrongStatus = await rejects(() =>
      server().withWaitStrategy(Wait.forHttp('/other', 8080)).withStartupTimeout(1500).start(),
    );
    expect(wrongStatus).toMatch(
      /did not start: waiting for HTTP GET \/other on port 8080 to answer with status 200 timed out after [\d.]+m?s \(\d+ attempts to 127\.0\.0\.1:\d+, the last got status 404 Not Found: no \/other\); the container is still running/,
    );
    const wrongBody = await rejects(() =>
      server()
        .withWaitStrategy(Wait.forHttp('/ready', 8080).forResponsePredicate((body) => body.includes('never')))
        .withStartupTimeout(1000)
        .start(),
    );
    expect(wrongBody).toMatch(
      /waiting for HTTP GET \/ready on port 8080 to answer with status 200 and a body the predicate accepts timed out after .*the last got status 200, but the body did not satisfy the predicate: ok\)/,
    );
    const nothing = await rejects(() =>
      container().withExposedPorts(8080).withWaitStrategy(Wait.forHttp('/', 8080)).withStartupTimeout(800).start(),
    );
    expect(nothing).toMatch(
      /timed out after .*the last got the connection closed without an answer \(nothing listens on the port in the container\?\)\)/,
    );
    const notExposed = await rejects(() => container().withWaitStrategy(Wait.forHttp('/', 9999)).start());
    expect(notExposed).toMatch(
      /waiting for HTTP GET \/ on port 9999 to answer with status 200 failed after \d+ms: port 9999 is not exposed \(it exposes none\): add withExposedPorts\(9999\)/,
    );
  });
});
