import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GenericContainer } from '../src/harness/generic-container.js';
import { importRootfs } from '../src/harness/import.js';
import { PullPolicy } from '../src/harness/pull-policy.js';
import { sha256Digest } from '../src/image/digest.js';
import { parseChallenge } from '../src/image/registry/auth.js';
import {
  canonicalString,
  normalizeReference,
  parsePlatform,
  pullImage,
  pushImage,
  RegistryClient,
  storeTag,
} from '../src/image/registry/index.js';
import { selectManifest } from '../src/image/registry/platform.js';
import { ImageStore } from '../src/image/store.js';
import { type ImageIndex, MEDIA_TYPES } from '../src/image/types.js';
import { LayerCache } from '../src/snapshot/layers.js';
import { isRoot, missingForContainers } from './helpers/kernel.js';
import {
  type CountingProxy,
  countingProxy,
  type FakeRegistry,
  fakeRegistry,
  missingTool,
  type RunningRegistry,
  startRegistry,
  tokenServer,
} from './helpers/registry.js';

const petriBin = join(import.meta.dirname, '..', 'dist', 'cli', 'main.js');
/** The bundled CLI, as installed (package.json's bin). */
const petriBundle = join(import.meta.dirname, '..', 'dist', 'bin', 'petri.cjs');

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

describe('registry names, platforms and challenges', () => {
  it('normalises names as Docker does', () => {
    expect(canonicalString(normalizeReference('busybox'))).toBe('docker.io/library/busybox:latest');
    expect(canonicalString(normalizeReference('node:22'))).toBe('docker.io/library/node:22');
    expect(canonicalString(normalizeReference('org/app:1'))).toBe('docker.io/org/app:1');
    expect(canonicalString(normalizeReference('index.docker.io/library/busybox'))).toBe(
      'docker.io/library/busybox:latest',
    );
    expect(normalizeReference('localhost:5000/x')).toEqual({
      registry: 'localhost:5000',
      repository: 'x',
      tag: 'latest',
    });
    expect(normalizeReference('localhost/x/y:2')).toEqual({ registry: 'localhost', repository: 'x/y', tag: '2' });
    const digest = `sha256:${'a'.repeat(64)}`;
    expect(normalizeReference(`ghcr.io/o/r:1@${digest}`)).toEqual({ registry: 'ghcr.io', repository: 'o/r', digest });
    expect(storeTag(normalizeReference('docker.io/library/busybox:1'))).toBe('busybox:1');
    expect(storeTag(normalizeReference('docker.io/org/app'))).toBe('org/app:latest');
    expect(storeTag(normalizeReference('127.0.0.1:5000/a/b:c'))).toBe('127.0.0.1:5000/a/b:c');
    expect(() => normalizeReference('Busybox')).toThrow(/invalid image reference/);
  });

  it('parses platforms and picks from an index', () => {
    expect(parsePlatform('linux/arm64')).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
    expect(parsePlatform('linux/x86_64')).toEqual({ os: 'linux', architecture: 'amd64' });
    expect(parsePlatform('linux/arm/v6')).toEqual({ os: 'linux', architecture: 'arm', variant: 'v6' });
    expect(() => parsePlatform('linux/amd64/v2/x')).toThrow(/invalid platform/);
    const entry = (architecture: string, variant?: string) => ({
      mediaType: MEDIA_TYPES.ociManifest,
      digest: `sha256:${architecture}${variant ?? ''}`,
      size: 1,
      platform: { os: 'linux', architecture, ...(variant ? { variant } : {}) },
    });
    const manifests = [entry('amd64'), entry('arm64', 'v8'), entry('arm', 'v6')];
    expect(selectManifest(manifests, parsePlatform('linux/arm64'))?.digest).toBe('sha256:arm64v8');
    expect(selectManifest(manifests, parsePlatform('linux/arm/v7'))?.digest).toBe('sha256:armv6');
    expect(selectManifest(manifests, parsePlatform('linux/s390x'))).toBeUndefined();
  });

  it('parses WWW-Authenticate challenges', () => {
    expect(
      parseChallenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push"',
      ),
    ).toEqual({
      scheme: 'bearer',
      params: {
        realm: 'https://auth.docker.io/token',
        service: 'registry.docker.io',
        scope: 'repository:a/b:pull,push',
      },
    });
    expect(parseChallenge('Basic realm="x"')).toEqual({ scheme: 'basic', params: { realm: 'x' } });
    expect(parseChallenge('Negotiate')).toBeUndefined();
  });
});

const missingRegistry =
  missingTool('docker-registry') ?? missingTool('skopeo') ?? missingTool('htpasswd', 'apache2-utils');
const describeRegistry = missingRegistry ? describe.skip : describe;
const kernelMissing = missingForContainers();

describeRegistry(
  `pull, push and login against docker-registry${missingRegistry ? ` [skipped: ${missingRegistry}]` : ''}`,
  () => {
    let work: string;
    let seed: ImageStore;
    let plain: RunningRegistry;
    let secured: RunningRegistry;
    let proxy: CountingProxy;
    let root: string;
    let dockerConfig: string;
    /** Runs a program without blocking this process (the counting proxy and the token server live in it). */
    const runAsync = (command: string, args: string[], env: NodeJS.ProcessEnv, input = '') =>
      new Promise<Result>((resolve, reject) => {
        const child = spawn(command, args, { env });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (chunk: Buffer) => {
          stdout += chunk.toString();
        });
        child.stderr.on('data', (chunk: Buffer) => {
          stderr += chunk.toString();
        });
        const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
        child.on('error', reject);
        child.on('close', (status) => {
          clearTimeout(timer);
          resolve({ status, stdout, stderr });
        });
        child.stdin.end(input);
      });
    /** Runs the petri CLI. */
    const petri = (
      args: string[],
      options: { root?: string; input?: string; env?: Record<string, string>; bin?: string } = {},
    ) =>
      runAsync(
        process.execPath,
        [options.bin ?? petriBin, ...args],
        { ...process.env, PETRI_ROOT: options.root ?? root, DOCKER_CONFIG: dockerConfig, ...options.env },
        options.input,
      );
    const ok = async (args: string[], options: Parameters<typeof petri>[1] = {}): Promise<Result> => {
      const r = await petri(args, options);
      if (r.status !== 0) throw new Error(`petri ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
      return r;
    };
    const skopeo = (...args: string[]) => {
      const r = spawnSync('skopeo', args, { encoding: 'utf8', timeout: 120_000 });
      if (r.status !== 0) throw new Error(`skopeo ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
      return r.stdout;
    };
    /** skopeo without blocking this process (for registries whose token server lives in it). */
    const skopeoAsync = async (...args: string[]) => {
      const r = await runAsync('skopeo', args, process.env);
      if (r.status !== 0) throw new Error(`skopeo ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
      return r.stdout;
    };
    const freshRoot = (name: string) => {
      const dir = join(work, name);
      mkdirSync(dir, { recursive: true });
      return dir;
    };

    beforeAll(async () => {
      work = mkdtempSync(join(tmpdir(), 'ptest-registry-'));
      dockerConfig = join(work, 'docker');
      root = freshRoot('root');
      // A busybox root filesystem, imported by petri: the image every test starts from.
      const rootfs = join(work, 'rootfs');
      mkdirSync(join(rootfs, 'bin'), { recursive: true });
      mkdirSync(join(rootfs, 'tmp'));
      cpSync('/bin/busybox', join(rootfs, 'bin', 'busybox'));
      for (const applet of ['sh', 'cat', 'echo']) symlinkSync('busybox', join(rootfs, 'bin', applet));
      seed = ImageStore.open(join(work, 'seed', 'images'));
      await importRootfs(seed, rootfs, 'seed:1', { changes: ['CMD ["sh"]'] });

      plain = await startRegistry(freshRoot('registry-plain'));
      proxy = await countingProxy(plain.host);
      writeFileSync(join(work, 'htpasswd'), '');
      const htpasswd = spawnSync('htpasswd', ['-Bbc', join(work, 'htpasswd'), 'ptest', 'secret-pw'], {
        encoding: 'utf8',
      });
      if (htpasswd.status !== 0) throw new Error(`htpasswd failed: ${htpasswd.stderr}`);
      secured = await startRegistry(freshRoot('registry-auth'), { htpasswd: join(work, 'htpasswd') });

      // Seeded by an independent client: skopeo (which gzips the layer on the way).
      skopeo(
        'copy',
        '-q',
        '--dest-tls-verify=false',
        `oci:${seed.dir}:seed:1`,
        `docker://${plain.host}/ptest/busybox:1`,
      );
      skopeo(
        'copy',
        '-q',
        '--dest-tls-verify=false',
        '--dest-creds',
        'ptest:secret-pw',
        `oci:${seed.dir}:seed:1`,
        `docker://${secured.host}/ptest/private:1`,
      );
    }, 120_000);

    afterAll(async () => {
      await proxy?.close();
      await plain?.stop();
      await secured?.stop();
      if (work) rmSync(work, { recursive: true, force: true });
    });

    const inspect = async (ref: string, options: Parameters<typeof petri>[1] = {}) =>
      JSON.parse((await ok(['inspect', ref], options)).stdout)[0];

    it('pulls an image skopeo pushed (gzip layer), then pulls it again without fetching a blob', async () => {
      const ref = `${proxy.host}/ptest/busybox:1`;
      proxy.requests.length = 0;
      const first = await ok(['pull', ref]);
      expect(first.stdout).toBe(`${ref}\n`);
      expect(first.stderr).toMatch(/: downloaded /);
      // The config and the layer.
      expect(proxy.requests.filter((r) => r.startsWith('GET /v2/ptest/busybox/blobs/'))).toHaveLength(2);
      const image = await inspect(ref);
      expect(image.RepoTags).toEqual([ref]);
      expect(image.Config.Cmd).toEqual(['sh']);
      if (isRoot) {
        // Unpacked while it downloaded: ready to run, as after docker pull.
        const tree = new LayerCache(join(root, 'layers')).stackPath(image.RootFS.Layers);
        expect(tree && existsSync(join(tree, 'bin', 'busybox'))).toBe(true);
      }
      const remote = JSON.parse(skopeo('inspect', '--tls-verify=false', `docker://${plain.host}/ptest/busybox:1`));
      const raw = skopeo('inspect', '--raw', '--tls-verify=false', `docker://${plain.host}/ptest/busybox:1`);
      expect(JSON.parse(raw).layers[0].mediaType).toMatch(/gzip/);
      // The manifest is kept byte for byte: the registry's digest names it in the store.
      expect((await inspect(`${ref.slice(0, -2)}@${remote.Digest}`)).Id).toBe(image.Id);
      if (isRoot && !kernelMissing) {
        expect((await ok(['run', '--rm', ref, 'echo', 'from the registry'])).stdout).toBe('from the registry\n');
      }

      proxy.requests.length = 0;
      const again = await ok(['pull', ref]);
      expect(again.stderr).toMatch(/already exists/);
      expect(again.stderr).toMatch(/up to date/);
      // Only the tag is checked (a HEAD); no manifest or blob is downloaded again.
      expect(proxy.requests.filter((r) => r.startsWith('GET /v2/ptest'))).toEqual([]);
      expect(proxy.requests.filter((r) => r.startsWith('HEAD'))).toEqual(['HEAD /v2/ptest/busybox/manifests/1']);

      // By digest: kept without a name, found by the digest.
      const byDigestRoot = freshRoot('by-digest');
      const byDigest = await ok(['pull', `${plain.host}/ptest/busybox@${remote.Digest}`], { root: byDigestRoot });
      expect(byDigest.stdout).toBe(`${plain.host}/ptest/busybox@${remote.Digest}\n`);
      expect((await inspect(`${plain.host}/ptest/busybox@${remote.Digest}`, { root: byDigestRoot })).Id).toBe(image.Id);
      expect((await ok(['images'], { root: byDigestRoot })).stdout).toContain('<none>');
    });

    it('pulls the wanted platform of a multi-platform index', async () => {
      const amd = await seed.resolve('seed:1');
      const armConfig = { ...amd.config, architecture: 'arm64', variant: 'v8' };
      const arm = await seed.writeImage({ config: armConfig, layers: amd.manifest.layers });
      await seed.tag('seed:arm64', arm.manifest);
      await pushImage(seed, 'seed:1', `${plain.host}/ptest/multi@${amd.manifestDigest}`);
      await pushImage(seed, 'seed:arm64', `${plain.host}/ptest/multi@${arm.manifest.digest}`);
      const amdSize = readFileSync(seed.blobPath(amd.manifestDigest)).length;
      const index: ImageIndex = {
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.ociIndex,
        manifests: [
          {
            mediaType: MEDIA_TYPES.ociManifest,
            digest: amd.manifestDigest,
            size: amdSize,
            platform: { os: 'linux', architecture: 'amd64' },
          },
          { ...arm.manifest, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
          // An attestation-like entry, as BuildKit adds: never chosen.
          {
            mediaType: MEDIA_TYPES.ociManifest,
            digest: amd.manifestDigest,
            size: amdSize,
            platform: { os: 'unknown', architecture: 'unknown' },
          },
        ],
      };
      const body = JSON.stringify(index);
      await putManifest(plain.host, 'ptest/multi', '1', MEDIA_TYPES.ociIndex, body);
      const indexDigest = sha256Digest(body);
      const ref = `${plain.host}/ptest/multi:1`;

      const armRoot = freshRoot('multi-arm');
      await ok(['pull', '--platform', 'linux/arm64', ref], { root: armRoot });
      const pulledArm = await inspect(ref, { root: armRoot });
      expect(pulledArm.Architecture).toBe('arm64');
      expect(pulledArm.Id).toBe(arm.configDigest);

      const hostRoot = freshRoot('multi-host');
      const pulled = await ok(['pull', ref], { root: hostRoot });
      expect(pulled.stderr).toContain(`from index ${indexDigest}`);
      if (process.arch === 'x64') {
        expect((await inspect(ref, { root: hostRoot })).Id).toBe(amd.id);
        // The index's digest names the image chosen from it.
        expect((await inspect(`${plain.host}/ptest/multi@${indexDigest}`, { root: hostRoot })).Id).toBe(amd.id);
      }

      const none = await petri(['pull', '--platform', 'linux/s390x', ref], { root: hostRoot });
      expect(none.status).toBe(125);
      expect(none.stderr).toMatch(
        /has no image for linux\/s390x: it offers linux\/amd64, linux\/arm64\/v8; choose one with --platform\n$/,
      );
    });

    it('pushes an image (skopeo inspect sees it), mounts blobs across repositories and uploads in chunks', async () => {
      // A push of a petri image (an uncompressed layer), one PUT per blob.
      const pushRoot = freshRoot('push');
      cpSync(join(work, 'seed'), pushRoot, { recursive: true });
      await ok(['tag', 'seed:1', `${plain.host}/ptest/pushed:1`], { root: pushRoot });
      const pushed = await ok(['push', `${plain.host}/ptest/pushed:1`], { root: pushRoot });
      const local = await inspect('seed:1', { root: pushRoot });
      const remote = JSON.parse(skopeo('inspect', '--tls-verify=false', `docker://${plain.host}/ptest/pushed:1`));
      expect(pushed.stdout).toMatch(/^1: digest: sha256:[a-f0-9]{64} size: \d+\n$/);
      const digest = /digest: (sha256:[a-f0-9]{64})/.exec(pushed.stdout)?.[1];
      expect(remote.Digest).toBe(digest);
      expect(remote.Layers).toEqual(
        JSON.parse(readFileSync(seed.blobPath(digest as string), 'utf8')).layers.map(
          (l: { digest: string }) => l.digest,
        ),
      );
      expect(remote.Architecture).toBe(local.Architecture);
      expect(pushed.stderr).toMatch(/: pushed /);

      // Pushed again: every blob is there already.
      const again = await ok(['push', `${plain.host}/ptest/pushed:1`], { root: pushRoot });
      expect(again.stderr).not.toMatch(/: pushed /);
      expect(again.stderr).toMatch(/already exists/);

      // To another repository of the same registry: the blobs are mounted, not uploaded.
      await ok(['tag', 'seed:1', `${plain.host}/ptest/copy:1`], { root: pushRoot });
      const copy = await ok(['push', `${plain.host}/ptest/copy:1`], { root: pushRoot });
      expect(copy.stderr).toMatch(/mounted from ptest\/pushed/);
      expect(copy.stderr).not.toMatch(/: pushed /);
      expect(JSON.parse(skopeo('inspect', '--tls-verify=false', `docker://${plain.host}/ptest/copy:1`)).Digest).toBe(
        digest,
      );

      // Chunked (PATCH … PUT, 64 KiB at a time) for a new layer; a fresh store pulls it back.
      const store = ImageStore.open(join(pushRoot, 'images'));
      const rootfs = join(work, 'chunked-rootfs');
      mkdirSync(rootfs);
      writeFileSync(join(rootfs, 'random'), randomBytes(300_000));
      const made = await importRootfs(store, rootfs, 'chunked:1');
      proxy.requests.length = 0;
      const result = await pushImage(store, 'chunked:1', `${proxy.host}/ptest/chunked:1`, { chunkSize: 64 << 10 });
      expect(result.uploaded.blobs).toBe(2);
      // The layer (~300 kB) in 5 PATCHes, the small config in one PUT; the manifest last.
      expect(proxy.requests.filter((r) => r.startsWith('PATCH '))).toHaveLength(5);
      expect(proxy.requests.at(-1)).toBe('PUT /v2/ptest/chunked/manifests/1');
      const back = ImageStore.open(join(work, 'chunked-back', 'images'));
      const pulled = await pullImage(back, `${plain.host}/ptest/chunked:1`);
      expect(pulled.image.manifestDigest).toBe(result.digest);
      expect(pulled.image.id).toBe(made.id);
    });

    it('two petri pull processes pulling the same image at once download each blob once', async () => {
      const shared = freshRoot('two-at-once');
      const ref = `${proxy.host}/ptest/busybox:1`;
      proxy.requests.length = 0;
      // Each blob held a while at the proxy, so that both processes are at it at the same time.
      proxy.blobDelayMs = 400;
      let both: Result[];
      try {
        both = await Promise.all([
          ok(['pull', ref], { root: shared, bin: petriBundle }),
          ok(['pull', ref], { root: shared, bin: petriBundle }),
        ]);
      } finally {
        proxy.blobDelayMs = 0;
      }
      const blobGets = proxy.requests.filter((r) => r.startsWith('GET /v2/ptest/busybox/blobs/'));
      // The config and the layer, each once.
      expect(blobGets).toHaveLength(2);
      expect(new Set(blobGets).size).toBe(2);
      for (const r of both) expect(r.stdout).toBe(`${ref}\n`);
      // One downloaded the layer; the other (told to wait, when it came while the first was at it) found it there.
      const layerLines = both.map((r) =>
        (/^[0-9a-f]{12}: ((?!waiting).*)$/m.exec(r.stderr)?.[1] ?? r.stderr).replace(/ \d.*$/, ''),
      );
      expect(layerLines.sort()).toEqual(['already exists', 'downloaded']);
      const waited = both.filter((r) => /: waiting for another petri process that is downloading it$/m.test(r.stderr));
      expect(waited.length).toBeLessThanOrEqual(1);
      // The locks are gone; the image is there once, its layer unpacked once.
      expect(readdirSync(join(shared, 'images', 'locks'))).toEqual([]);
      const image = await inspect(ref, { root: shared });
      expect(image.RepoTags).toEqual([ref]);
      if (isRoot) {
        expect(readdirSync(join(shared, 'layers'))).toEqual([image.RootFS.Layers[0].slice(7)]);
      }
    });

    it.skipIf(missingTool('openssl') !== undefined)(
      `bearer tokens from a token server (docker-registry with auth: token): anonymous pull of a public repository, 401 for a private one, then login, push and pull${missingTool('openssl') ? ` [skipped: ${missingTool('openssl')}]` : ''}`,
      async () => {
        const dir = freshRoot('token');
        const tokens = await tokenServer(dir, { users: { ptest: 'token-pw' }, publicRepos: ['ptest/public'] });
        let registry: RunningRegistry | undefined;
        try {
          registry = await startRegistry(freshRoot('token-registry'), { token: tokens });
          const host = registry.host;
          // Seeded by skopeo, through the same token flow, with the user's credentials.
          for (const repo of ['public', 'private']) {
            await skopeoAsync(
              'copy',
              '-q',
              '--dest-tls-verify=false',
              '--dest-creds',
              'ptest:token-pw',
              `oci:${seed.dir}:seed:1`,
              `docker://${host}/ptest/${repo}:1`,
            );
          }
          const env = { DOCKER_CONFIG: join(dir, 'docker') };

          // Anonymous: the token server grants pull on the public repository.
          tokens.requests.length = 0;
          const anonRoot = freshRoot('token-anon');
          const pulled = await ok(['pull', `${host}/ptest/public:1`], { root: anonRoot, env });
          expect(pulled.stdout).toBe(`${host}/ptest/public:1\n`);
          expect(tokens.requests).toContain('anonymous repository:ptest/public:pull');
          expect((await inspect(`${host}/ptest/public:1`, { root: anonRoot })).Config.Cmd).toEqual(['sh']);

          // The private one: a token without access, so the registry's 401 stands.
          const denied = await petri(['pull', `${host}/ptest/private:1`], { root: anonRoot, env });
          expect(denied.status).toBe(125);
          expect(denied.stderr).toMatch(
            new RegExp(`^petri: pull access denied for ${host}/ptest/private:1: .*petri login ${host}\\)?\\n$`),
          );
          expect(tokens.requests).toContain('anonymous repository:ptest/private:pull');

          const wrong = await petri(['login', '-u', 'ptest', '--password-stdin', host], { input: 'nope\n', env });
          expect(wrong.status).not.toBe(0);
          expect(wrong.stderr).toMatch(/refused the credentials of ptest/);
          const login = await ok(['login', '-u', 'ptest', '--password-stdin', host], { input: 'token-pw\n', env });
          expect(login.stdout).toBe('Login Succeeded\n');

          // Logged in: pull the private image, push one (skopeo, with the credentials, sees it).
          const userRoot = freshRoot('token-user');
          await ok(['pull', `${host}/ptest/private:1`], { root: userRoot, env });
          expect((await inspect(`${host}/ptest/private:1`, { root: userRoot })).Config.Cmd).toEqual(['sh']);
          await ok(['tag', `${host}/ptest/private:1`, `${host}/ptest/private:pushed`], { root: userRoot, env });
          const pushed = await ok(['push', `${host}/ptest/private:pushed`], { root: userRoot, env });
          const digest = /digest: (sha256:[a-f0-9]{64})/.exec(pushed.stdout)?.[1];
          expect(digest).toBeDefined();
          const remote = JSON.parse(
            await skopeoAsync(
              'inspect',
              '--tls-verify=false',
              '--creds',
              'ptest:token-pw',
              `docker://${host}/ptest/private:pushed`,
            ),
          );
          expect(remote.Digest).toBe(digest);
          expect(tokens.requests.some((r) => r.startsWith('ptest ') && r.includes('ptest/private:pull,push'))).toBe(
            true,
          );

          // Logged out: anonymous again, denied again.
          await ok(['logout', host], { env });
          expect(
            (await petri(['pull', `${host}/ptest/private:pushed`], { root: freshRoot('token-out'), env })).status,
          ).toBe(125);
        } finally {
          await registry?.stop();
          await tokens.close();
        }
      },
    );

    it('needs a login for an htpasswd registry: 401, petri login, pull, logout', async () => {
      const ref = `${secured.host}/ptest/private:1`;
      const loginRoot = freshRoot('login');
      const denied = await petri(['pull', ref], { root: loginRoot });
      expect(denied.status).toBe(125);
      expect(denied.stderr).toMatch(
        new RegExp(
          `^petri: pull access denied for ${ref}: .*authentication required.*: log in with petri login ${secured.host}\\)\\n$`,
        ),
      );

      const wrong = await petri(['login', '-u', 'ptest', '--password-stdin', secured.host], { input: 'nope\n' });
      expect(wrong.status).not.toBe(0);
      expect(wrong.stderr).toMatch(/refused the credentials of ptest/);
      expect(existsSync(join(dockerConfig, 'config.json'))).toBe(false);

      const login = await ok(['login', '-u', 'ptest', '--password-stdin', secured.host], { input: 'secret-pw\n' });
      expect(login.stdout).toBe('Login Succeeded\n');
      const config = JSON.parse(readFileSync(join(dockerConfig, 'config.json'), 'utf8'));
      expect(config.auths[secured.host].auth).toBe(Buffer.from('ptest:secret-pw').toString('base64'));

      await ok(['pull', ref], { root: loginRoot });
      expect((await inspect(ref, { root: loginRoot })).RepoTags).toEqual([ref]);

      expect((await ok(['logout', secured.host])).stdout).toBe(`Removing login credentials for ${secured.host}\n`);
      expect(JSON.parse(readFileSync(join(dockerConfig, 'config.json'), 'utf8')).auths).toEqual({});
      expect((await petri(['pull', ref], { root: freshRoot('login-after') })).status).toBe(125);
    });

    it('takes credentials from a docker-credential helper named in credHelpers', async () => {
      const helperDir = join(work, 'helper-bin');
      mkdirSync(helperDir, { recursive: true });
      const helper = join(helperDir, 'docker-credential-ptest');
      writeFileSync(
        helper,
        `#!/bin/sh\nread server\n[ "$1" = get ] && [ "$server" = "${secured.host}" ] && echo '{"ServerURL":"${secured.host}","Username":"ptest","Secret":"secret-pw"}' && exit 0\necho "credentials not found in native keychain"; exit 1\n`,
      );
      chmodSync(helper, 0o755);
      const config = join(work, 'docker-helper');
      mkdirSync(config);
      writeFileSync(join(config, 'config.json'), JSON.stringify({ credHelpers: { [secured.host]: 'ptest' } }));
      const env = { DOCKER_CONFIG: config, PATH: `${helperDir}:${process.env.PATH}` };
      const pulled = await ok(['pull', `${secured.host}/ptest/private:1`], { root: freshRoot('helper'), env });
      expect(pulled.stdout).toBe(`${secured.host}/ptest/private:1\n`);
    });

    it.skipIf(kernelMissing !== undefined)(
      `FROM an image only in the registry is pulled by petri build${kernelMissing ? ` [skipped: ${kernelMissing}]` : ''}`,
      async () => {
        const buildRoot = freshRoot('build');
        const context = join(work, 'context');
        mkdirSync(context, { recursive: true });
        writeFileSync(join(context, 'Dockerfile'), `FROM ${proxy.host}/ptest/busybox:1\nRUN echo built > /built\n`);
        const never = await petri(['build', '--pull', 'never', '-q', context], { root: buildRoot });
        expect(never.status).toBe(1);
        expect(never.stderr).toMatch(/base image .*ptest\/busybox:1 is not in petri's image store \(no such image/);

        const built = await ok(['build', '--progress', 'plain', '-t', 'ptest/built', context], { root: buildRoot });
        expect(built.stderr).toMatch(/pulling .*ptest\/busybox:1/);
        expect((await ok(['run', '--rm', 'ptest/built', 'cat', '/built'], { root: buildRoot })).stdout).toBe('built\n');
        expect((await ok(['images'], { root: buildRoot })).stdout).toContain(`${proxy.host}/ptest/busybox`);

        // Built again: the base is in the store, the registry is not asked (policy missing).
        proxy.requests.length = 0;
        await ok(['build', '-q', '-t', 'ptest/built', context], { root: buildRoot });
        expect(proxy.requests).toEqual([]);
        // --pull always checks the tag (a HEAD) and downloads nothing.
        await ok(['build', '-q', '--pull', 'always', '-t', 'ptest/built', context], { root: buildRoot });
        expect(proxy.requests.filter((r) => r !== 'GET /v2/')).toEqual(['HEAD /v2/ptest/busybox/manifests/1']);

        writeFileSync(join(context, 'Dockerfile'), `FROM ${plain.host}/ptest/not-there:1\n`);
        const missing = await petri(['build', '-q', context], { root: buildRoot });
        expect(missing.status).toBe(1);
        expect(missing.stderr).toMatch(
          /base image .*ptest\/not-there:1 is not in petri's image store \(no such image: .*\) and pulling it failed \(image .* not found in the registry.*\): build it/,
        );
      },
    );

    it.skipIf(kernelMissing !== undefined)(
      `shares a build cache through the registry: --cache-to on store A, --cache-from on an empty store B${kernelMissing ? ` [skipped: ${kernelMissing}]` : ''}`,
      async () => {
        const context = join(work, 'cache-context');
        mkdirSync(context, { recursive: true });
        cpSync('/bin/busybox', join(context, 'busybox'));
        writeFileSync(join(context, 'hello.txt'), 'hello\n');
        // The builder's output is random: a step run again would give another layer and another image.
        writeFileSync(
          join(context, 'Dockerfile'),
          [
            'FROM scratch AS base',
            'COPY busybox /bin/busybox',
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]',
            'FROM base AS builder',
            'RUN head -c 16 /dev/urandom | od -An -tx1 > /artifact && head -c 200000 /dev/urandom > /big',
            'FROM base AS unused',
            'RUN echo never > /never',
            // A base image from the registry whose layer the final image does not hold.
            `FROM ${plain.host}/ptest/busybox:1 AS fetched`,
            'RUN echo fetched > /fetched',
            'FROM base',
            'WORKDIR /app',
            'COPY --from=builder /artifact /app/artifact',
            'COPY --from=fetched /fetched /app/fetched',
            'COPY hello.txt /app/',
            'RUN cat /app/artifact /app/hello.txt > /app/copy',
            'CMD ["cat", "/app/copy"]',
            '',
          ].join('\n'),
        );
        const cacheRef = `${plain.host}/ptest/cache:app`;
        const steps = (stderr: string) =>
          stderr
            .split('\n')
            .filter((l) => l.startsWith('{'))
            .map((l) => JSON.parse(l))
            .filter((e) => e.type === 'step' && e.status !== 'start' && /^(RUN|COPY|WORKDIR)\b/.test(e.text))
            .map((e) => `${e.text.split(' ')[0]}:${e.status}`);
        const layersOf = async (r: string) => (await inspect('app', { root: r })).RootFS.Layers as string[];

        // Store A: the cache ref does not exist yet (a warning, as in BuildKit), then the cache goes up.
        const rootA = freshRoot('cache-a');
        const built = await ok(
          [
            'build',
            '--progress',
            'json',
            '-t',
            'app',
            '--cache-from',
            `type=registry,ref=${cacheRef}`,
            '--cache-to',
            `type=registry,ref=${cacheRef},mode=max`,
            context,
          ],
          { root: rootA },
        );
        expect(built.stderr).toMatch(/"type":"warning","message":"cannot import the build cache .*not found/);
        expect(steps(built.stderr).every((s) => s.endsWith(':done'))).toBe(true);
        const exported = JSON.parse(built.stderr.split('\n').find((l) => l.includes('"type":"cache"')) as string);
        expect(exported).toMatchObject({ action: 'export', ref: cacheRef, steps: 9, layers: 9 });
        // An OCI image manifest whose config is the index, the layers its layers; skopeo reads it.
        const manifest = JSON.parse(skopeo('inspect', '--raw', '--tls-verify=false', `docker://${cacheRef}`));
        expect(manifest.config.mediaType).toBe('application/vnd.petri.build-cache.index.v1+json');
        expect(manifest.layers).toHaveLength(9);
        const runA = (await ok(['run', '--rm', 'app'], { root: rootA })).stdout;
        expect(runA).toMatch(/^( [0-9a-f]{2}){16}\nhello\n$/);

        // Store B, empty: every step is a hit, only the final image's layers are downloaded.
        const rootB = freshRoot('cache-b');
        const again = await ok(
          ['build', '--progress', 'json', '-t', 'app', '--cache-from', `type=registry,ref=${cacheRef}`, context],
          { root: rootB },
        );
        expect(steps(again.stderr).sort()).toEqual([
          'COPY:cached',
          'COPY:cached',
          'COPY:cached',
          'COPY:cached',
          'RUN:cached',
          'RUN:cached',
          'RUN:cached',
          'RUN:cached',
          'WORKDIR:cached',
        ]);
        expect(await layersOf(rootB)).toEqual(await layersOf(rootA));
        expect(again.stdout).toBe(built.stdout);
        const imageB = await inspect('app', { root: rootB });
        const blobs = readdirSync(join(rootB, 'images', 'blobs', 'sha256'));
        // The image's 7 layers, its config and manifest, and the config of the registry's base image:
        // neither the builder's layer nor that base image's.
        expect(imageB.RootFS.Layers).toHaveLength(7);
        expect(blobs).toHaveLength(10);
        const baseLayer = JSON.parse(
          skopeo('inspect', '--raw', '--tls-verify=false', `docker://${plain.host}/ptest/busybox:1`),
        ).layers[0].digest as string;
        expect(blobs).not.toContain(baseLayer.slice(7));
        expect(readdirSync(join(rootA, 'images', 'blobs', 'sha256'))).toContain(baseLayer.slice(7));
        expect((await ok(['run', '--rm', 'app'], { root: rootB })).stdout).toBe(runA);

        // mode=min (the default): only the steps of the image's filesystem.
        const minRef = `${plain.host}/ptest/cache:min`;
        await ok(['build', '-q', '-t', 'app', '--cache-to', `type=registry,ref=${minRef}`, context], { root: rootA });
        expect(JSON.parse(skopeo('inspect', '--raw', '--tls-verify=false', `docker://${minRef}`)).layers).toHaveLength(
          7,
        );

        // Bad specs: one clear line each.
        const badType = await petri(['build', '--cache-to', 'type=local,dest=/tmp/x', context], { root: rootB });
        expect(badType.status).not.toBe(0);
        expect(badType.stderr).toMatch(/--cache-to type=local is not supported/);
        const badKey = await petri(
          ['build', '--cache-from', `type=registry,ref=${cacheRef},compression=zstd`, context],
          {
            root: rootB,
          },
        );
        expect(badKey.status).not.toBe(0);
        expect(badKey.stderr).toMatch(/--cache-from: unknown key compression/);
      },
    );

    it.skipIf(kernelMissing !== undefined)(
      `GenericContainer pulls its image when the store lacks it; pull policies always and never${kernelMissing ? ` [skipped: ${kernelMissing}]` : ''}`,
      async () => {
        const dir = freshRoot('generic');
        const store = ImageStore.open(join(dir, 'images'));
        const layers = new LayerCache(join(dir, 'layers'));
        const ref = `${proxy.host}/ptest/busybox:1`;
        const sleeper = () => new GenericContainer(ref, { store, layers }).withCommand(['/bin/busybox', 'sleep', '30']);
        await expect(sleeper().withPullPolicy('never').start()).rejects.toThrow(
          /is not in petri's image store and the pull policy is never/,
        );
        expect(() => sleeper().withPullPolicy('sometimes' as never)).toThrow(/withPullPolicy: invalid policy/);

        proxy.requests.length = 0;
        // Two at once: one pull.
        const [first, second] = await Promise.all([sleeper().start(), sleeper().start()]);
        try {
          expect((await first.exec(['echo', 'pulled'])).stdout).toBe('pulled\n');
        } finally {
          await Promise.all([first.stop(), second.stop()]);
        }
        expect(proxy.requests.filter((r) => r.startsWith('GET /v2/ptest/busybox/blobs/'))).toHaveLength(2);
        expect((await store.resolve(ref)).tags).toEqual([ref]);

        // In the store now: the registry is not asked (policy missing).
        proxy.requests.length = 0;
        await (await sleeper().start()).stop();
        expect(proxy.requests).toEqual([]);
        // testcontainers' PullPolicy.alwaysPull(): the tag is checked (a HEAD), nothing downloaded.
        await (await sleeper().withPullPolicy(PullPolicy.alwaysPull()).start()).stop();
        expect(proxy.requests.filter((r) => r !== 'GET /v2/')).toEqual(['HEAD /v2/ptest/busybox/manifests/1']);

        await expect(new GenericContainer(`${plain.host}/ptest/nope:1`, { store, layers }).start()).rejects.toThrow(
          /ptest\/nope:1 is not in petri's image store and pulling it failed: image .* not found in the registry/,
        );
      },
    );

    it('uses plain HTTP only for loopback and --insecure-registry hosts', async () => {
      expect(new RegistryClient('127.0.0.1:5000').allowsInsecure).toBe(true);
      expect(new RegistryClient('localhost:5000').allowsInsecure).toBe(true);
      expect(new RegistryClient('[::1]:5000').allowsInsecure).toBe(true);
      expect(new RegistryClient('registry.example:5000').allowsInsecure).toBe(false);
      expect(
        new RegistryClient('registry.example:5000', { insecureRegistries: ['registry.example:5000'] }).allowsInsecure,
      ).toBe(true);
      const r = await petri(['pull', 'petri-test.invalid:5000/x:1'], { root: freshRoot('unknown-host') });
      expect(r.status).toBe(125);
      expect(r.stderr).toBe(
        'petri: cannot reach registry petri-test.invalid:5000: the host petri-test.invalid is unknown (ENOTFOUND)\n',
      );
    });
  },
);

describe('pulling from a registry that misbehaves (a fake one in Node)', () => {
  let work: string;
  let seed: ImageStore;
  let fake: FakeRegistry;
  let layer: string;
  const fresh = (name: string) => ImageStore.open(join(work, name, 'images'));
  const fast = { backoffMs: 5 };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'ptest-registry-fake-'));
    const rootfs = join(work, 'rootfs');
    mkdirSync(rootfs);
    writeFileSync(join(rootfs, 'data'), Buffer.alloc(300_000, 7));
    seed = ImageStore.open(join(work, 'seed', 'images'));
    await importRootfs(seed, rootfs, 'seed:1');
    layer = (await seed.resolve('seed:1')).manifest.layers[0]?.digest as string;
    fake = await fakeRegistry(seed, { 'ptest/img:1': 'seed:1' });
  });
  afterAll(async () => {
    await fake?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const reset = () => {
    Object.assign(fake.faults, { tooMany: 0, quota: false, ranges: true, bearer: undefined, retryAfter: undefined });
    fake.faults.corrupt.clear();
    fake.faults.drop.clear();
    fake.requests.length = 0;
  };

  it('refuses a layer that does not match its digest, and keeps nothing of it', async () => {
    reset();
    fake.faults.corrupt.add(layer);
    const store = fresh('corrupt');
    await expect(pullImage(store, `${fake.host}/ptest/img:1`, fast)).rejects.toThrow(
      new RegExp(`blob ${layer} does not match its digest`),
    );
    expect(store.hasBlob(layer)).toBe(false);
    expect(readdirSync(store.blobsDir).filter((name) => name.startsWith('.tmp-'))).toEqual([]);
    expect(await store.list()).toEqual([]);
  });

  it.skipIf(!isRoot)(
    `unpacks each layer into the layer cache while it downloads, also across a resumed or restarted download${isRoot ? '' : ' [skipped: needs root (unpacked files keep their owners)]'}`,
    async () => {
      reset();
      const layers = new LayerCache(join(work, 'unpack-layers'));
      const store = fresh('unpack');
      const result = await pullImage(store, `${fake.host}/ptest/img:1`, { ...fast, layers });
      const diffIds = result.image.config.rootfs.diff_ids;
      const tree = layers.stackPath(diffIds);
      expect(tree).toBeDefined();
      expect(readFileSync(join(tree as string, 'data'))).toEqual(Buffer.alloc(300_000, 7));
      // Ready to run: preparing the image's layers unpacks nothing more (the same tree, at once).
      const opened: string[] = [];
      const prepared = await layers.prepare(
        result.image.manifest.layers.map((layer, i) => ({
          digest: layer.digest,
          mediaType: layer.mediaType,
          diffId: diffIds[i] as string,
          open: () => {
            opened.push(layer.digest);
            return store.openBlob(layer.digest);
          },
        })),
      );
      expect(prepared).toEqual([tree]);
      expect(opened).toEqual([]);

      // A pull of what the store has but the cache lacks unpacks from the store, downloading nothing.
      const other = new LayerCache(join(work, 'unpack-layers-2'));
      fake.requests.length = 0;
      const again = await pullImage(store, `${fake.host}/ptest/img:1`, { ...fast, layers: other });
      expect(again.downloaded.blobs).toBe(0);
      expect(fake.requests.filter((r) => r.includes('/blobs/'))).toEqual([]);
      expect(readFileSync(join(other.stackPath(diffIds) as string, 'data')).length).toBe(300_000);

      // Dropped mid-layer: resumed (the unpacker reads on), or started again (a fresh unpack).
      for (const ranges of [true, false]) {
        reset();
        fake.faults.ranges = ranges;
        fake.faults.drop.set(layer, 1);
        const cache = new LayerCache(join(work, `unpack-drop-${ranges}`));
        const dropped = await pullImage(fresh(`unpack-drop-${ranges}`), `${fake.host}/ptest/img:1`, {
          ...fast,
          layers: cache,
        });
        expect(dropped.image.id).toBe(result.image.id);
        expect(readFileSync(join(cache.stackPath(diffIds) as string, 'data'))).toEqual(Buffer.alloc(300_000, 7));
        expect(readdirSync(cache.dir).filter((name) => name.startsWith('.tmp-'))).toEqual([]);
      }
    },
  );

  it.skipIf(!isRoot)(
    `a layer that does not match its digest leaves nothing behind: no blob, no unpacked layer${isRoot ? '' : ' [skipped: needs root]'}`,
    async () => {
      reset();
      fake.faults.corrupt.add(layer);
      const layers = new LayerCache(join(work, 'corrupt-layers'));
      const store = fresh('corrupt-unpack');
      await expect(pullImage(store, `${fake.host}/ptest/img:1`, { ...fast, layers })).rejects.toThrow(
        new RegExp(`blob ${layer} does not match its digest`),
      );
      expect(store.hasBlob(layer)).toBe(false);
      expect(readdirSync(store.blobsDir).filter((name) => name.startsWith('.tmp-'))).toEqual([]);
      expect(readdirSync(join(store.dir, 'locks'))).toEqual([]);
      expect(readdirSync(layers.dir)).toEqual([]);
      expect(await store.list()).toEqual([]);
    },
  );

  it('resumes a layer whose connection dropped mid-way (Range), or starts it again', async () => {
    reset();
    fake.faults.drop.set(layer, 2);
    const events: string[] = [];
    const store = fresh('drop');
    const result = await pullImage(store, `${fake.host}/ptest/img:1`, {
      ...fast,
      onProgress: (e) => e.type === 'retry' && events.push(e.reason),
    });
    expect(result.image.manifest.layers[0]?.digest).toBe(layer);
    expect(events.length).toBe(2);
    expect(events[0]).toMatch(/resuming at byte \d+/);
    expect(fake.requests.filter((r) => r.includes(`/blobs/${layer}`))).toHaveLength(3);

    reset();
    fake.faults.ranges = false;
    fake.faults.drop.set(layer, 1);
    const again = await pullImage(fresh('drop-norange'), `${fake.host}/ptest/img:1`, fast);
    expect(again.image.id).toBe(result.image.id);
  });

  it('waits out a 429 and succeeds; a used-up quota is one clear message', async () => {
    reset();
    fake.faults.tooMany = 2;
    fake.faults.retryAfter = '0';
    const result = await pullImage(fresh('429'), `${fake.host}/ptest/img:1`, fast);
    expect(result.downloaded.blobs).toBe(2);
    expect(fake.requests.filter((r) => r.startsWith('HEAD /v2/ptest/img/manifests/1'))).toHaveLength(3);

    reset();
    fake.faults.tooMany = 100;
    fake.faults.quota = true;
    const error = await pullImage(fresh('quota'), `${fake.host}/ptest/img:1`, fast).catch((e: Error) => e);
    expect((error as Error).message).toBe(
      `${fake.host} refused with 429 Too Many Requests: rate limit reached; retry within 6 h (a limit of 100 pulls per window), or log in (petri login ${fake.host}) for a higher limit`,
    );
    expect(fake.requests.filter((r) => r.startsWith('HEAD'))).toHaveLength(1);
  });

  it('gets bearer tokens from the challenge, anonymously or with credentials', async () => {
    reset();
    fake.faults.bearer = {};
    await pullImage(fresh('bearer'), `${fake.host}/ptest/img:1`, fast);
    expect(fake.requests.filter((r) => r === 'GET /token')).toHaveLength(1);

    reset();
    fake.faults.bearer = { user: 'u', password: 'p' };
    await expect(pullImage(fresh('bearer-anon'), `${fake.host}/ptest/img:1`, fast)).rejects.toThrow(
      /token server .* refused an anonymous token/,
    );
    const result = await pullImage(fresh('bearer-creds'), `${fake.host}/ptest/img:1`, {
      ...fast,
      credentials: { username: 'u', password: 'p' },
    });
    expect(result.downloaded.blobs).toBe(2);
  });
});

function putManifest(host: string, repository: string, tag: string, type: string, body: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `http://${host}/v2/${repository}/manifests/${tag}`,
      { method: 'PUT', headers: { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) } },
      (res) => {
        let text = '';
        res.on('data', (chunk) => {
          text += chunk;
        });
        res.on('end', () =>
          res.statusCode === 201 ? resolve() : reject(new Error(`PUT manifest: ${res.statusCode} ${text}`)),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}
