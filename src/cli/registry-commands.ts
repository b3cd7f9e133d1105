import { PetriError } from '../errors.js';
import { type OptionSpec, parseArgs } from './args.js';
import { size } from './format.js';

/** `petri pull`, `petri push`, `petri login`, `petri logout`: images to and from registries. */

const INSECURE: OptionSpec = { name: 'insecure-registry', value: true, multiple: true };

export const PULL_HELP = `usage: petri pull [options] IMAGE

Downloads an image from its registry into the store, like docker pull:
busybox is docker.io/library/busybox:latest; name@sha256:… pins a digest.
Layers the store has are not downloaded again; run as root, layers are
unpacked while they download, so the image is ready to run. Progress goes to
stderr, the full reference to stdout.
      --platform OS/ARCH[/VARIANT]   from a multi-platform image (default: this machine's)
      --insecure-registry HOST       allow plain HTTP or any TLS certificate for HOST (repeatable)
  -q, --quiet                        print only the reference
Credentials come from petri login / docker login (~/.docker/config.json, DOCKER_CONFIG).
`;

export async function pullMain(argv: string[]): Promise<number> {
  const specs: OptionSpec[] = [
    { name: 'platform', value: true },
    INSECURE,
    { name: 'quiet', short: 'q' },
    { name: 'help' },
  ];
  const { options, rest } = parseArgs('pull', argv, specs);
  if (options.help) return help(PULL_HELP);
  if (rest.length !== 1) throw new PetriError('petri pull: expected one IMAGE (see petri pull --help)');
  const [{ ImageStore }, registry, { LayerCache }] = await Promise.all([
    import('../image/store.js'),
    import('../image/registry/index.js'),
    import('../snapshot/layers.js'),
  ]);
  const platform = typeof options.platform === 'string' ? registry.parsePlatform(options.platform) : undefined;
  const quiet = options.quiet === true;
  const log = (line: string) => {
    if (!quiet) process.stderr.write(`${line}\n`);
  };
  const result = await registry.pullImage(ImageStore.open(), rest[0] as string, {
    ...(platform ? { platform } : {}),
    // Unpacked as they download, ready to run (as root: unpacking needs to set owners and devices).
    ...(process.getuid?.() === 0 ? { layers: new LayerCache() } : {}),
    insecureRegistries: (options['insecure-registry'] as string[] | undefined) ?? [],
    onProgress: (event) => {
      if (event.type === 'resolved') {
        log(`Pulling ${event.reference}${event.platform ? ` (${event.platform} from index ${event.index})` : ''}`);
      } else if (event.type === 'blob' && event.role === 'layer') {
        log(
          `${event.digest.slice(7, 19)}: ${event.status === 'exists' ? 'already exists' : `downloaded ${size(event.size)}`}`,
        );
      } else if (event.type === 'retry') {
        log(`${event.digest.slice(7, 19)}: retrying: ${event.reason}`);
      } else if (event.type === 'wait') {
        log(`${event.digest.slice(7, 19)}: waiting for another petri process that is downloading it`);
      } else if (event.type === 'warning') {
        process.stderr.write(`petri: warning: ${event.message}\n`);
      }
    },
  });
  log(`Digest: ${result.image.manifestDigest}`);
  const name = result.tag ?? result.reference;
  log(
    result.downloaded.blobs > 0
      ? `Status: downloaded newer image for ${name} (${size(result.downloaded.bytes)})`
      : `Status: image is up to date for ${name}`,
  );
  process.stdout.write(`${result.reference}\n`);
  return 0;
}

export const PUSH_HELP = `usage: petri push [options] IMAGE [DESTINATION]

Uploads an image from the store to a registry, like docker push: to IMAGE's own
name (localhost:5000/app:1, ghcr.io/org/app:1), or to DESTINATION. Blobs the
registry has are skipped, blobs another repository of the same registry holds
are mounted, the manifest goes last (its digest is the store's).
      --insecure-registry HOST       allow plain HTTP or any TLS certificate for HOST (repeatable)
  -q, --quiet                        print only the digest line
`;

export async function pushMain(argv: string[]): Promise<number> {
  const specs: OptionSpec[] = [INSECURE, { name: 'quiet', short: 'q' }, { name: 'help' }];
  const { options, rest } = parseArgs('push', argv, specs);
  if (options.help) return help(PUSH_HELP);
  if (rest.length < 1 || rest.length > 2) {
    throw new PetriError('petri push: expected IMAGE and optionally DESTINATION (see petri push --help)');
  }
  const [{ ImageStore }, registry] = await Promise.all([
    import('../image/store.js'),
    import('../image/registry/index.js'),
  ]);
  const quiet = options.quiet === true;
  const log = (line: string) => {
    if (!quiet) process.stderr.write(`${line}\n`);
  };
  const source = rest[0] as string;
  const destination = rest[1] ?? source;
  log(`Pushing ${registry.canonicalString(registry.normalizeReference(destination))}`);
  const result = await registry.pushImage(ImageStore.open(), source, destination, {
    insecureRegistries: (options['insecure-registry'] as string[] | undefined) ?? [],
    onProgress: (event) => {
      const short = event.digest.slice(7, 19);
      if (event.type === 'retry') log(`${short}: retrying: ${event.reason}`);
      else if (event.status === 'exists') log(`${short}: layer already exists`);
      else if (event.status === 'mounted') log(`${short}: mounted from ${event.from}`);
      else log(`${short}: pushed ${size(event.size)}`);
    },
  });
  const ref = registry.normalizeReference(destination);
  process.stdout.write(`${ref.tag ?? ref.digest}: digest: ${result.digest} size: ${result.size}\n`);
  return 0;
}

export const LOGIN_HELP = `usage: petri login [options] [SERVER]

Checks credentials against a registry (default: Docker Hub) and saves them
where docker login does: the credential helper config.json names
(credHelpers, credsStore), else config.json's auths (base64, like Docker), in
$DOCKER_CONFIG/config.json or ~/.docker/config.json.
  -u, --username USER
  -p, --password PASS                a password or access token (prefer --password-stdin)
      --password-stdin               read the password from stdin
      --insecure-registry HOST       allow plain HTTP or any TLS certificate for HOST (repeatable)
Without -u or a password, petri asks on the terminal.
`;

export async function loginMain(argv: string[]): Promise<number> {
  const specs: OptionSpec[] = [
    { name: 'username', short: 'u', value: true },
    { name: 'password', short: 'p', value: true },
    { name: 'password-stdin' },
    INSECURE,
    { name: 'help' },
  ];
  const { options, rest } = parseArgs('login', argv, specs);
  if (options.help) return help(LOGIN_HELP);
  if (rest.length > 1) throw new PetriError('petri login: expected at most one SERVER (see petri login --help)');
  const registry = await import('../image/registry/index.js');
  const server = registry.registryName(rest[0] ?? registry.DOCKER_HUB);
  let username = typeof options.username === 'string' ? options.username : undefined;
  let password = typeof options.password === 'string' ? options.password : undefined;
  if (password !== undefined && options['password-stdin']) {
    throw new PetriError('petri login: --password and --password-stdin cannot be used together');
  }
  if (password !== undefined) {
    process.stderr.write('WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n');
  }
  if (options['password-stdin']) {
    if (username === undefined) throw new PetriError('petri login: --password-stdin needs --username');
    password = (await readStdin()).replace(/\r?\n$/, '');
  }
  if (username === undefined) username = await prompt('Username: ', false);
  if (password === undefined) password = await prompt('Password: ', true);
  if (!username) throw new PetriError('petri login: the username is empty');
  if (!password) throw new PetriError('petri login: the password is empty');
  const client = new registry.RegistryClient(server, {
    credentials: { username, password },
    insecureRegistries: (options['insecure-registry'] as string[] | undefined) ?? [],
  });
  await client.checkLogin();
  const where = await registry.storeCredentials(server, { username, password });
  process.stderr.write(`Credentials saved in ${where}\n`);
  process.stdout.write('Login Succeeded\n');
  return 0;
}

export const LOGOUT_HELP = `usage: petri logout [SERVER]

Removes the credentials petri login (or docker login) saved for SERVER (default: Docker Hub).
`;

export async function logoutMain(argv: string[]): Promise<number> {
  const { options, rest } = parseArgs('logout', argv, [{ name: 'help' }]);
  if (options.help) return help(LOGOUT_HELP);
  if (rest.length > 1) throw new PetriError('petri logout: expected at most one SERVER');
  const registry = await import('../image/registry/index.js');
  const server = registry.registryName(rest[0] ?? registry.DOCKER_HUB);
  if (await registry.eraseCredentials(server)) process.stdout.write(`Removing login credentials for ${server}\n`);
  else process.stdout.write(`Not logged in to ${server}\n`);
  return 0;
}

function help(text: string): number {
  process.stdout.write(text);
  return 0;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Asks on the terminal (without echo for a password); an error when there is none. */
async function prompt(question: string, secret: boolean): Promise<string> {
  if (!process.stdin.isTTY) {
    throw new PetriError(
      `petri login: no terminal to ask for the ${secret ? 'password' : 'username'}: pass ${secret ? '--password-stdin' : '--username'}`,
    );
  }
  process.stderr.write(question);
  const stdin = process.stdin;
  stdin.setRawMode(secret);
  stdin.resume();
  return new Promise((resolve, reject) => {
    let answer = '';
    const done = (error?: Error) => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      if (secret) process.stderr.write('\n');
      if (error) reject(error);
      else resolve(answer.trim());
    };
    const onData = (chunk: Buffer) => {
      for (const char of chunk.toString('utf8')) {
        if (char === '\u0003') return done(new PetriError('petri login: interrupted'));
        if (char === '\r' || char === '\n') return done();
        if (char === '\u007f' || char === '\b') answer = answer.slice(0, -1);
        else answer += char;
      }
    };
    stdin.on('data', onData);
  });
}
