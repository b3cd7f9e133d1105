import { fstatSync, statSync, writeSync } from 'node:fs';
import { resolve } from 'node:path';
import type { BuildEvent } from '../build/events.js';
import type { ProgressOut } from '../build/progress.js';
import type { CacheExport, CacheImport } from '../build/remote-cache.js';
import { errorLine, PetriError } from '../errors.js';
import { PULL_POLICIES, type PullPolicy } from '../image/pull-policy.js';
import { tty } from '../util/lazy-builtins.js';
import { type OptionSpec, parseArgs } from './args.js';

export const HELP = `usage: petri build [options] CONTEXT

Builds an image from a Dockerfile and a context directory, like docker build
with BuildKit: only the stages the target needs are built, independent stages
in parallel, each step cached (a fully cached build runs nothing and writes no
layer). Progress goes to stderr; the image ID is printed on stdout.

  -t, --tag NAME[:TAG]     name the image (repeatable)
  -f, --file FILE          the Dockerfile (default: CONTEXT/Dockerfile)
      --build-arg K[=V]    set a build arg; K alone takes V from the environment (repeatable)
      --target STAGE       build this stage instead of the last
      --no-cache           run every step, ignoring the cache
      --secret id=ID,src=FILE
                           a secret for RUN --mount=type=secret,id=ID (repeatable);
                           never stored in a layer or a cache key
      --ssh ID[=SOCKET]    an SSH agent for RUN --mount=type=ssh,id=ID (default: the
                           agent of $SSH_AUTH_SOCK); the step gets a socket of its own
                           (SSH_AUTH_SOCK in its environment) (repeatable)
      --progress MODE      auto (default: tty on a terminal, else plain), plain, tty, json, quiet
      --pull POLICY        base images (FROM, COPY --from) not in the store: missing (default:
                           pull them), always (pull even when there), never (store only);
                           --pull alone, as in docker build, is always
      --insecure-registry HOST
                           allow plain HTTP or any TLS certificate for HOST when pulling (repeatable)
      --cache-to type=registry,ref=NAME[,mode=min|max][,ignore-error=true]
                           push this build's cache (its layers and an index from cache keys
                           to layers) to a registry as an OCI manifest; mode=min (default):
                           the steps of the image built, mode=max: of every stage built
      --cache-from type=registry,ref=NAME
                           use a cache pushed with --cache-to: a step missing from the local
                           cache but found there is CACHED, and only the layers needed are
                           downloaded; a cache that cannot be read is a warning (repeatable)
  -q, --quiet              same as --progress quiet
Set SOURCE_DATE_EPOCH to choose the time in layers and history (default: 0,
so the same inputs give the same layer digests on any machine).
`;

const SPECS: OptionSpec[] = [
  { name: 'tag', short: 't', value: true, multiple: true },
  { name: 'file', short: 'f', value: true },
  { name: 'build-arg', value: true, multiple: true },
  { name: 'target', value: true },
  { name: 'no-cache' },
  { name: 'secret', value: true, multiple: true },
  { name: 'ssh', value: true, multiple: true },
  { name: 'progress', value: true },
  { name: 'pull', value: true },
  { name: 'insecure-registry', value: true, multiple: true },
  { name: 'cache-to', value: true, multiple: true },
  { name: 'cache-from', value: true, multiple: true },
  { name: 'quiet', short: 'q' },
  { name: 'help' },
];

const MODES = ['auto', 'plain', 'tty', 'json', 'quiet'] as const;

export async function main(argv: string[]): Promise<number> {
  // A RUN step petri-runner replay started while Node started (build/early.ts): the builder takes it or it is removed.
  const early =
    process.env.PETRI_EARLY_RUN === undefined
      ? undefined
      : (await import('../build/early.js')).EarlyRun.fromEnv((await import('../runtime/paths.js')).containersDir());
  try {
    return await build(argv, early);
  } finally {
    await early?.remove();
  }
}

async function build(argv: string[], early: import('../build/early.js').EarlyRun | undefined): Promise<number> {
  const startedAt = Date.now();
  const { options, rest } = parseArgs('build', argv, SPECS);
  let pull = options.pull as string | undefined;
  // `docker build --pull CONTEXT`: a bare --pull took the context as its value.
  if (pull !== undefined && rest.length === 0 && !(PULL_POLICIES as readonly string[]).includes(pull)) {
    rest.push(pull);
    pull = 'always';
  }
  if (pull !== undefined && !(PULL_POLICIES as readonly string[]).includes(pull)) {
    throw new PetriError(`petri build: invalid --pull ${pull}: expected one of ${PULL_POLICIES.join(', ')}`);
  }
  if (options.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (rest.length !== 1) throw new PetriError('petri build: expected one CONTEXT directory (see petri build --help)');
  const asked = (options.progress as string | undefined) ?? 'auto';
  if (!(MODES as readonly string[]).includes(asked)) {
    throw new PetriError(`petri build: invalid --progress ${asked}: expected one of ${MODES.join(', ')}`);
  }
  const progress = options.quiet ? 'quiet' : asked;
  const buildArgs: Record<string, string> = {};
  for (const arg of (options['build-arg'] as string[] | undefined) ?? []) {
    const eq = arg.indexOf('=');
    const key = eq < 0 ? arg : arg.slice(0, eq);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
      throw new PetriError(`petri build: invalid --build-arg ${arg}: expected NAME=VALUE`);
    }
    const value = eq < 0 ? process.env[key] : arg.slice(eq + 1);
    if (value !== undefined) buildArgs[key] = value;
  }
  const secrets: Record<string, string> = {};
  for (const spec of (options.secret as string[] | undefined) ?? []) {
    const fields = Object.fromEntries(
      spec.split(',').map((field) => {
        const eq = field.indexOf('=');
        return eq < 0 ? [field, ''] : [field.slice(0, eq), field.slice(eq + 1)];
      }),
    );
    const id = fields.id;
    const src = fields.src ?? fields.source;
    if (!id || !src) throw new PetriError(`petri build: invalid --secret ${spec}: expected id=ID,src=FILE`);
    secrets[id] = resolve(src);
  }
  const ssh: Record<string, string> = {};
  for (const spec of (options.ssh as string[] | undefined) ?? []) {
    const { parseSshSpec } = await import('../build/ssh-agent.js');
    const [id, socket] = parseSshSpec(spec);
    ssh[id] = socket;
  }
  const cacheTo = (options['cache-to'] as string[] | undefined) ?? [];
  const cacheFrom = (options['cache-from'] as string[] | undefined) ?? [];
  const context = resolve(rest[0] as string);
  const dockerfile = typeof options.file === 'string' ? resolve(options.file) : undefined;
  const tags = (options.tag as string[] | undefined) ?? [];
  // The same build again with nothing changed: answered from the result cache, without the builder.
  let results: import('../build/result-cache.js').ResultCache | undefined;
  if (
    pull !== 'always' &&
    cacheTo.length + cacheFrom.length === 0 &&
    Object.keys({ ...secrets, ...ssh }).length === 0
  ) {
    const { ResultCache } = await import('../build/result-cache.js');
    results = new ResultCache({
      context,
      dockerfile: dockerfile ?? resolve(context, 'Dockerfile'),
      ...(typeof options.target === 'string' ? { target: options.target } : {}),
      buildArgs,
      tags,
      petri: petriIdentity(),
    });
  }
  if (results && options['no-cache'] === true) results.begin();
  else if (results) {
    const hit = results.lookup();
    if (hit) {
      // fs.writeSync, not process.stdout/stderr: creating those streams loads node:stream (~4 ms), most of this path.
      const { progressRenderer } = await import('../build/progress.js');
      const render = progressRenderer(progress as (typeof MODES)[number], stderrOut());
      for (const event of hit.events) render(event);
      render({
        type: 'image',
        id: hit.id,
        manifestDigest: hit.manifestDigest,
        tags: hit.tags,
        durationMs: Date.now() - startedAt,
        resultCache: true,
      });
      writeOut(1, `${hit.id}\n`);
      await saveReplay(argv, options, progress, context, dockerfile, results);
      return 0;
    }
  }
  const [{ buildImage }, { progressRenderer }, { ImageStore }, remote] = await Promise.all([
    import('../build/builder.js'),
    import('../build/progress.js'),
    import('../image/store.js'),
    cacheTo.length + cacheFrom.length > 0 ? import('../build/remote-cache.js') : undefined,
  ]);
  const caches = {
    cacheTo: cacheTo.map((spec) => remote?.parseCacheSpec('--cache-to', spec) as CacheExport),
    cacheFrom: cacheFrom.map((spec) => remote?.parseCacheSpec('--cache-from', spec) as CacheImport),
  };
  const renderer = progressRenderer(progress as (typeof MODES)[number], stderrOut());
  const seen: BuildEvent[] = [];
  const render = (event: BuildEvent) => {
    if (results) seen.push(event);
    renderer(event);
  };
  let result: Awaited<ReturnType<typeof buildImage>>;
  const trace: import('../build/delta.js').BuildTrace | undefined = results
    ? { steps: [], reads: new Map() }
    : undefined;
  try {
    result = await buildImage({
      context,
      ...(dockerfile ? { dockerfile } : {}),
      tags,
      buildArgs,
      ...(typeof options.target === 'string' ? { target: options.target } : {}),
      noCache: options['no-cache'] === true,
      secrets,
      ssh,
      ...(pull ? { pull: pull as PullPolicy } : {}),
      insecureRegistries: (options['insecure-registry'] as string[] | undefined) ?? [],
      ...caches,
      store: ImageStore.open(),
      onEvent: render,
      ...(trace ? { trace } : {}),
      ...(early ? { early } : {}),
    });
  } catch (error) {
    // Like docker build: a build that fails (a step, the Dockerfile, the context) exits 1.
    if (!(error instanceof PetriError)) throw error;
    writeOut(2, `petri: ${errorLine(error)}\n`);
    return 1;
  }
  if (results) {
    const [{ deltaPlan }, { earlyPlan }] = await Promise.all([
      import('../build/delta.js'),
      import('../build/early.js'),
    ]);
    results.remember(
      seen,
      result,
      trace && deltaPlan(trace, result.manifestDigest, context),
      trace && earlyPlan(trace, context),
    );
  }
  writeOut(1, `${result.id}\n`);
  if (results) await saveReplay(argv, options, progress, context, dockerfile, results);
  return 0;
}

/** The replay record for bin/petri (src/build/replay.ts), once the result cache vouches for this build. */
async function saveReplay(
  argv: string[],
  options: Record<string, string | boolean | string[]>,
  progress: string,
  context: string,
  dockerfile: string | undefined,
  results: import('../build/result-cache.js').ResultCache,
): Promise<void> {
  if (!results.verified) return;
  const { writeReplay } = await import('../build/replay.js');
  const envArgs = ((options['build-arg'] as string[] | undefined) ?? []).filter((arg) => !arg.includes('='));
  writeReplay(
    {
      argv: ['build', ...argv],
      envArgs,
      progress,
      context,
      dockerfile: dockerfile ?? resolve(context, 'Dockerfile'),
      self: import.meta.filename,
    },
    results.verified,
  );
}

/** This petri, as the result cache tells builds apart: its build module's file, size and mtime (a rebuild or an upgrade changes them). */
function petriIdentity(): string {
  try {
    const st = statSync(import.meta.filename);
    return `${import.meta.filename}:${st.size}:${st.mtimeMs}`;
  } catch {
    return `${import.meta.filename}:${Date.now()}:${Math.random()}`;
  }
}

/**
 * Where progress goes: fd 2 written directly (creating process.stderr loads
 * node:net and costs milliseconds), with whether it is a terminal (node:tty
 * is loaded only for a character device, which a terminal is).
 */
function stderrOut(): ProgressOut {
  let isTTY = false;
  try {
    isTTY = fstatSync(2).isCharacterDevice() && tty().isatty(2);
  } catch {
    // fd 2 closed: nothing is a terminal
  }
  return { isTTY, write: (text) => writeOut(2, text) };
}

/**
 * Writes to fd 1 or 2 without creating process.stdout/stderr. When the fd
 * would block (EAGAIN: a non-blocking pipe), the rest and every later write to
 * it go through process.stdout/stderr, in order; the image ID then waits for
 * the progress before it (a reader of both, `2>&1`). Progress whose fd fails
 * otherwise (a reader gone, a terminal hung up, a full disk) is dropped and
 * the build goes on; so is the ID when its reader is gone (EPIPE).
 */
function writeOut(fd: 1 | 2, text: string | Uint8Array): boolean {
  if (gone.has(fd)) return false;
  const data = typeof text === 'string' ? Buffer.from(text) : text;
  const stream = () => (fd === 1 ? process.stdout : process.stderr);
  if (streamed.has(fd)) return stream().write(data);
  if (fd === 1 && streamed.has(2) && process.stderr.writableLength > 0) {
    process.stderr.write(Buffer.alloc(0), () => writeOut(1, data));
    return true;
  }
  let offset = 0;
  try {
    while (offset < data.length) offset += writeSync(fd, data, offset);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EAGAIN') {
      streamed.add(fd);
      stream().on('error', () => gone.add(fd)); // failing later: as below
      stream().write(data.subarray(offset));
      return true;
    }
    if (code !== 'EPIPE' && fd === 1) throw error;
    gone.add(fd);
    return false;
  }
  return true;
}

/** The fds that went through their stream once (writeOut). */
const streamed = new Set<number>();
/** The fds whose reader went away. */
const gone = new Set<number>();
