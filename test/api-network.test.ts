import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { GenericContainer, Network, type StartedContainer, Wait } from '../src/index.js';
import { containerDir } from '../src/runtime/paths.js';
import { sweepContainers } from '../src/runtime/sweep.js';
import { type ApiImages, apiImages } from './helpers/api-image.js';
import { describeKernel, missingForContainers } from './helpers/kernel.js';

let images: ApiImages;
const container = () => new GenericContainer(images.image, { store: images.store, layers: images.layers });

beforeAll(async () => {
  if (!missingForContainers()) images = await apiImages();
});
afterAll(() => images?.remove());

async function sh(c: StartedContainer, script: string): Promise<{ exitCode: number; output: string }> {
  const { exitCode, output } = await c.exec(['sh', '-c', script]);
  return { exitCode, output };
}

const alive = (pid: number) => {
  try {
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
  } catch {
    return false;
  }
};

/** The host's interfaces and routes, which a network must not change. */
const hostNetwork = () => [
  readFileSync('/proc/net/dev', 'utf8')
    .split('\n')
    .map((l) => l.split(':')[0]?.trim()),
  readFileSync('/proc/net/route', 'utf8'),
];

describeKernel('networks: new Network().start(), withNetwork, withNetworkAliases, getIpAddress', () => {
  it('a server and a client reach each other by name and alias; others are not on it; the host is untouched', async () => {
    const before = hostNetwork();
    await using network = await new Network().start();
    await using server = await container()
      .withNetwork(network)
      .withNetworkAliases('web', 'www.test')
      .withName('ptest-net-server')
      .withCopyContentToContainer([{ content: 'from the server\n', target: '/www/index.html' }])
      .withCommand(['httpd', '-f', '-p', '8080', '-h', '/www'])
      .withWaitStrategy(Wait.forListeningPorts(8080))
      .start();
    await using client = await container().withNetwork(network).withNetworkAliases('client').start();

    const serverIp = server.getIpAddress(network.getName());
    expect(serverIp).toMatch(/^10\.\d+\.\d+\.\d+$/);
    expect(client.getIpAddress(network.getName())).not.toBe(serverIp);
    expect(server.getNetworkNames()).toEqual([network.getName()]);
    expect((await sh(client, `ip -4 -o addr show eth0 2>/dev/null || ifconfig eth0`)).output).toContain(
      client.getIpAddress(network.getName()),
    );
    for (const name of ['web', 'www.test', 'ptest-net-server', server.getHostname(), serverIp]) {
      expect(await sh(client, `wget -qO- http://${name}:8080/`)).toEqual({ exitCode: 0, output: 'from the server\n' });
    }
    // The server, started first, knows the client that came after it.
    expect((await sh(server, 'ping -c1 -W2 client')).exitCode).toBe(0);
    // A container on no network has only its loopback.
    await using alone = await container().start();
    expect((await sh(alone, `wget -qO- -T 1 http://${serverIp}:8080/`)).exitCode).not.toBe(0);
    expect(() => alone.getIpAddress(network.getName())).toThrow(
      `container ${alone.getName()} is not on network "${network.getName()}": it is on no network`,
    );
    expect(hostNetwork()).toEqual(before);
  });

  it('a removed container leaves /etc/hosts; the network stops with its holder process gone', async () => {
    const network = await new Network({ name: 'ptest-net' }).start();
    expect(network.getName()).toBe('ptest-net');
    const holder = network.runner.child.pid as number;
    expect(alive(holder)).toBe(true);
    const a = await container().withNetwork(network).withNetworkAliases('first').start();
    const b = await container().withNetwork(network).withNetworkAliases('second').start();
    expect((await sh(a, 'grep -c second /etc/hosts')).output).toBe('1\n');
    await b.stop({ remove: true });
    expect((await sh(a, 'grep -c second /etc/hosts; true')).output).toBe('0\n');
    // A restart keeps its address and its names.
    const ip = a.getIpAddress('ptest-net');
    await a.restart();
    expect((await sh(a, 'ping -c1 -W2 first')).exitCode).toBe(0);
    expect(a.getIpAddress('ptest-net')).toBe(ip);
    await network.stop();
    expect(alive(holder)).toBe(false);
    // Its interface on the network went with it.
    expect((await sh(a, 'cat /sys/class/net/eth0/operstate 2>&1')).exitCode).not.toBe(0);
    await a.stop({ remove: true });
    await expect(container().withNetwork(network).start()).rejects.toThrow('network ptest-net was stopped');
    expect(() => container().withNetwork({} as never)).toThrow('withNetwork: invalid network');
    expect(() => container().withNetworkAliases('bad alias')).toThrow('withNetworkAliases: invalid alias');
    await expect(container().withNetwork(network).withReuse().start()).rejects.toThrow(
      'withReuse() cannot be combined with withNetwork()',
    );
  });
});

describeKernel('networks and ports go with the test process', () => {
  it('when it is SIGKILLed: the network holder, the container and its port forwarder die with it', async () => {
    const dist = join(import.meta.dirname, '..', 'dist', 'lib', 'index.js');
    const script = join(images.dir, 'net-harness.mjs');
    writeFileSync(
      script,
      `
      import { GenericContainer, ImageStore, LayerCache, Network } from ${JSON.stringify(dist)};
      const [storeDir, layersDir] = process.argv.slice(2);
      const network = await new Network().start();
      const c = await new GenericContainer('ptest/api:1', { store: ImageStore.open(storeDir), layers: new LayerCache(layersDir) })
        .withNetwork(network).withExposedPorts(8080).withCommand(['httpd', '-f', '-p', '8080']).start();
      console.log(JSON.stringify({ holder: network.runner.child.pid, id: c.getId(), port: c.getMappedPort(8080) }));
      setInterval(() => {}, 1000);
      `,
    );
    const child = spawn(process.execPath, [script, join(images.dir, 'images'), join(images.dir, 'layers')], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const { holder, id, port } = JSON.parse(
      await new Promise<string>((resolve) => child.stdout.once('data', (chunk) => resolve(String(chunk)))),
    ) as { holder: number; id: string; port: number };
    expect(alive(holder)).toBe(true);
    expect((await fetch(`http://127.0.0.1:${port}/`)).status).toBe(404);
    child.kill('SIGKILL');
    await exited;
    for (let i = 0; i < 100 && alive(holder); i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(alive(holder)).toBe(false);
    let refused = false;
    for (let i = 0; i < 100 && !refused; i++) {
      refused = await fetch(`http://127.0.0.1:${port}/`).then(
        () => false,
        () => true,
      );
      if (!refused) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(refused).toBe(true);
    await sweepContainers();
    expect(existsSync(containerDir(id))).toBe(false);
  });
});
