import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { rmdir } from 'node:fs/promises';
import { join, posix, resolve } from 'node:path';
import { PassThrough } from 'node:stream';
import { IgnoreMatcher, readDockerignore } from '../dockerfile/dockerignore.js';
import {
  type Dockerfile,
  DockerfileError,
  expandInstruction,
  type Instruction,
  type Mount,
  parseDockerfile,
  processWord,
  type Stage,
} from '../dockerfile/index.js';
import { closest } from '../dockerfile/suggest.js';
import { errorLine, PetriError } from '../errors.js';
import { readFromLayers } from '../harness/image-run.js';
import { resolveUser } from '../image/apply-config.js';
import type { BlobInfo } from '../image/blobs.js';
import { imageArchitecture } from '../image/platform.js';
import type { PullPolicy } from '../image/pull-policy.js';
import { parseReference } from '../image/reference.js';
import { ImageStore } from '../image/store.js';
import {
  type ContainerConfig,
  type HistoryEntry,
  type ImageConfig,
  MEDIA_TYPES,
  type StoredImage,
} from '../image/types.js';
import type { ContainerOptions } from '../runtime/options.js';
import type { FsOps } from '../snapshot/fsops.js';
import type { LayerCache } from '../snapshot/layers.js';
import { removeTree } from '../util/fs.js';
import { childProcess } from '../util/lazy-builtins.js';
import { BuildCache, buildEpoch, type CacheRecord, cacheKey, type LayerRef, stableJson } from './cache.js';
import { envMap, exposedPorts, resolveWorkdir, withEnv } from './config.js';
import {
  type CopyRequest,
  copyInto,
  hashSelection,
  type SelectedEntry,
  selectionLines,
  selectSources,
} from './copy.js';
import type { BuildTrace, TraceFile } from './delta.js';
import { containerTemplates, type EarlyRun, layerTree, optionsHash } from './early.js';
import type { BuildEvent } from './events.js';
import { ContextView, cleanRel, type FsView, LayeredView } from './fs-view.js';
import { redactUrl } from './git-source.js';
import type { CacheExport, CacheImport, RemoteCache } from './remote-cache.js';

export interface BuildOptions {
  /** The build context directory. */
  context: string;
  /** The Dockerfile's path (default: `Dockerfile` in the context). */
  dockerfile?: string;
  /** Names to tag the image with (`name[:tag]`). */
  tags?: string[];
  buildArgs?: Record<string, string>;
  /** The stage to build (default: the last). */
  target?: string;
  /** Run every step, ignoring (but refreshing) the cache. */
  noCache?: boolean;
  /** `RUN --mount=type=secret,id=ID`: ID → a file on the host. Never part of a cache key or a layer. */
  secrets?: Record<string, string>;
  /**
   * `RUN --mount=type=ssh,id=ID`: ID → the socket of an SSH agent on the host
   * (`docker build --ssh`). The step reaches it through a socket of its own.
   */
  ssh?: Record<string, string>;
  /**
   * An image named by FROM, COPY --from or RUN --mount from= that is not in the
   * store is pulled from its registry (`missing`, the default); `always` pulls
   * it even when it is there (a tag that moved); `never` only uses the store.
   */
  pull?: PullPolicy;
  /** Registries a pull may reach over plain HTTP or with any TLS certificate (`--insecure-registry`). */
  insecureRegistries?: string[];
  /** Build caches in registries (`--cache-from`): a step missing from the local cache but found there is a hit. */
  cacheFrom?: CacheImport[];
  /** Where to push the cache of this build (`--cache-to`), once the image is written. */
  cacheTo?: CacheExport[];
  /** Default: the store under PETRI_ROOT. */
  store?: ImageStore;
  layers?: LayerCache;
  cache?: BuildCache;
  onEvent?: (event: BuildEvent) => void;
  /** Filled as the build runs: what each step read of the context and made (the CLI's replay records: delta.ts). */
  trace?: BuildTrace;
  /** A RUN step started early by petri-runner replay (early.ts): taken for its step, or removed unused. */
  early?: EarlyRun;
}

export type { PullPolicy } from '../image/pull-policy.js';

export interface BuildResult {
  /** The image ID (config digest). */
  id: string;
  manifestDigest: string;
  tags: string[];
}

/** Build args every Dockerfile may use without declaring them; they are left out of cache keys, as in BuildKit. */
const PROXY_ARGS = [
  'HTTP_PROXY',
  'http_proxy',
  'HTTPS_PROXY',
  'https_proxy',
  'FTP_PROXY',
  'ftp_proxy',
  'NO_PROXY',
  'no_proxy',
  'ALL_PROXY',
  'all_proxy',
];
const DEFAULT_SHELL = ['/bin/sh', '-c'];
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** A stage's state between instructions: its filesystem (layers and their cache key) and its config. */
interface State {
  /** Cache key of the filesystem: changes only with the steps that make layers. */
  fsKey: string;
  layers: LayerRef[];
  config: ContainerConfig;
  history: HistoryEntry[];
  architecture: string;
  os: string;
  variant?: string;
  created: string;
  /** ARGs declared in the stage so far, with their values (undefined: declared, no value). */
  args: Map<string, string | undefined>;
  /** CMD was set in this stage (a later ENTRYPOINT keeps it). */
  cmdSet?: boolean;
  author?: string;
}

/** Where files are copied or bound from; `key` identifies its content (a stage's filesystem key, or `context`). */
interface Source {
  view: () => Promise<FsView>;
  key: string;
  preserveOwner: boolean;
}

interface StageRun {
  stage: Stage;
  label: string;
  promise?: Promise<State>;
}

/** What a trace keeps of a context COPY's files. */
function traceFiles(entries: readonly SelectedEntry[]): TraceFile[] {
  return entries.flatMap((e, line) =>
    e.type === 'file' && e.hostPath !== undefined && e.digest !== undefined && e.content === undefined
      ? [{ hostPath: e.hostPath, digest: e.digest, size: e.size, line, ...(e.link ? { link: true as const } : {}) }]
      : [],
  );
}

/** Builds an image from a Dockerfile and a context, like `docker build` with BuildKit. */
export async function buildImage(options: BuildOptions): Promise<BuildResult> {
  return new Builder(options).build();
}

/** The most entries a COPY may write for its layer to be read in this process (scanOwnTree). */
const OWN_SCAN_MAX = 1000;

class Builder {
  readonly #options: BuildOptions;
  readonly #store: ImageStore;
  #layers: LayerCache | undefined;
  readonly #cache: BuildCache;
  readonly #file: string;
  readonly #contextDir: string;
  readonly #emit: (event: BuildEvent) => void;
  readonly #epoch: number;
  #dockerfile!: Dockerfile;
  #context!: FsView;
  #stages: StageRun[] = [];
  #metaArgs = new Map<string, string | undefined>();
  #usedArgs = new Set<string>();
  #nextStep = 1;
  #workDirs: string[] = [];
  /** Working directories being removed (see #dropWorkDir). */
  #removals: Promise<void>[] = [];
  /** SSH agent proxies of RUN steps not closed yet (a step that failed before its container). */
  readonly #agents = new Set<{ close(): void }>();
  /**
   * One `petri-runner fsops` process that scans the layers this build writes,
   * started by the first RUN step (or layer petri-runner helped write): a
   * layer that Node wrote alone is read with lstat here (scanOwnTree).
   */
  #scanner: Promise<FsOps> | undefined;
  #pulls = new Map<string, Promise<StoredImage>>();
  /** Base images read from the store, each name once per build (stages FROM the same image share it). */
  #resolved = new Map<string, Promise<StoredImage>>();
  #remote: RemoteCache | undefined;
  /** The steps this build made or took from a cache: key → the record and the key of the filesystem below it. */
  #usedSteps = new Map<string, { record: CacheRecord; parent: string }>();
  #usedSelections = new Map<string, string>();
  /** RUN steps whose container ran early (early.ts). */
  #earlySteps = new Set<number>();

  constructor(options: BuildOptions) {
    this.#options = options;
    this.#store = options.store ?? ImageStore.open();
    this.#layers = options.layers;
    this.#cache = options.cache ?? new BuildCache();
    this.#contextDir = resolve(options.context);
    this.#file = options.dockerfile ?? join(this.#contextDir, 'Dockerfile');
    this.#emit = options.onEvent ?? (() => {});
    this.#epoch = buildEpoch();
  }

  async build(): Promise<BuildResult> {
    const started = Date.now();
    const tags = (this.#options.tags ?? []).map((tag) => parseReference(tag).ref);
    this.#readInputs();
    try {
      const target = this.#targetStage();
      await this.#loadRemoteCache();
      const needed = this.#plan(target);
      for (const index of needed) this.#startStage(index);
      // Every needed stage runs now; a failure in any fails the build.
      const results = await Promise.allSettled(needed.map((index) => this.#stages[index]?.promise));
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
      const state = await (this.#stages[target.index]?.promise as Promise<State>);
      if (this.#options.trace) {
        this.#options.trace.target = target.index;
        // The step-cache records the image's layers and times came from, top down.
        this.#options.trace.chain = [...this.#stepChain(state).keys()];
      }
      const closing = this.#scanner?.then(
        (scanner) => scanner.close(),
        () => {},
      ); // every layer is written: let it exit meanwhile
      this.#warnUnusedArgs();
      const result = await this.#writeImage(state, tags);
      await this.#exportCache(state);
      this.#emit({ type: 'image', ...result, durationMs: Date.now() - started });
      await closing;
      return result;
    } finally {
      if (this.#options.early) this.#removals.push(this.#options.early.remove());
      await Promise.all(this.#removals);
      for (const agent of this.#agents) agent.close();
      for (const dir of this.#workDirs) removeTree(dir);
      await this.#scanner?.then(
        (scanner) => scanner.close(),
        () => {},
      );
    }
  }

  async #loadRemoteCache(): Promise<void> {
    const sources = this.#options.cacheFrom ?? [];
    if (sources.length === 0 || this.#options.noCache) return;
    const { RemoteCache } = await import('./remote-cache.js');
    this.#remote = await RemoteCache.load(sources, {
      store: this.#store,
      insecureRegistries: this.#options.insecureRegistries ?? [],
      warn: (message) => this.#emit({ type: 'warning', message }),
    });
  }

  /** Pushes the cache of the steps used (`mode=min`: those of the image's filesystem only) to each `--cache-to`. */
  async #exportCache(state: State): Promise<void> {
    const targets = this.#options.cacheTo ?? [];
    if (targets.length === 0) return;
    const { exportCache } = await import('./remote-cache.js');
    const chain = this.#stepChain(state);
    for (const target of targets) {
      const steps =
        target.mode === 'max' ? new Map([...this.#usedSteps].map(([key, used]) => [key, used.record])) : chain;
      try {
        const { digest, layers } = await exportCache(
          target,
          { steps, selections: this.#usedSelections },
          {
            store: this.#store,
            insecureRegistries: this.#options.insecureRegistries ?? [],
            ensure: (layers) => this.#ensureLayers(layers),
          },
        );
        this.#emit({ type: 'cache', action: 'export', ref: target.ref, digest, steps: steps.size, layers });
      } catch (error) {
        const message = `cannot export the build cache to ${target.ref}: ${errorLine(error)}`;
        if (!target.ignoreError) throw new PetriError(message, { cause: error });
        this.#emit({ type: 'warning', message });
      }
    }
  }

  /** The step-cache records a state's filesystem came from (this build's steps), top down. */
  #stepChain(state: State): Map<string, CacheRecord> {
    const chain = new Map<string, CacheRecord>();
    for (
      let key = state.fsKey, used = this.#usedSteps.get(key);
      used;
      key = used.parent, used = this.#usedSteps.get(key)
    )
      chain.set(key, used.record);
    return chain;
  }

  /** Downloads the layers a `--cache-from` hit named and the store still lacks. */
  async #ensureLayers(layers: readonly LayerRef[]): Promise<void> {
    if (this.#remote) await this.#remote.ensure(layers);
  }

  #readInputs(): void {
    if (!existsSync(this.#contextDir) || !lstatSync(this.#contextDir).isDirectory()) {
      throw new PetriError(`the build context ${this.#options.context} is not a directory`);
    }
    let text: string;
    try {
      text = readFileSync(this.#file, 'utf8');
    } catch (error) {
      const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : errorLine(error);
      throw new PetriError(`cannot read the Dockerfile ${this.#file}: ${reason}`);
    }
    this.#dockerfile = parseDockerfile(text, { file: this.#file });
    const ignore = new IgnoreMatcher(readDockerignore(this.#contextDir, this.#file));
    this.#context = new ContextView(this.#contextDir, ignore);
    this.#stages = this.#dockerfile.stages.map((stage) => ({ stage, label: stage.name ?? `stage-${stage.index}` }));
    const platform = platformArgs();
    for (const [key, value] of Object.entries(platform)) this.#metaArgs.set(key, value);
    for (const arg of this.#dockerfile.metaArgs) {
      const expanded = expandInstruction(arg, this.#argEnv(this.#metaArgs), this.#expandOptions());
      for (const { key, value } of expanded.args.args) {
        const given = this.#options.buildArgs?.[key];
        if (given !== undefined) this.#usedArgs.add(key);
        this.#metaArgs.set(key, given ?? value);
      }
    }
  }

  #expandOptions() {
    return { escape: this.#dockerfile.directives.escape, file: this.#file };
  }

  #argEnv(args: Map<string, string | undefined>): Record<string, string> {
    const env: Record<string, string> = {};
    for (const [key, value] of args) if (value !== undefined) env[key] = value;
    return env;
  }

  #targetStage(): Stage {
    const stages = this.#dockerfile.stages;
    const name = this.#options.target;
    if (name === undefined) return stages.at(-1) as Stage;
    const stage = stages.find((s) => s.name === name.toLowerCase());
    if (!stage) {
      const names = stages.flatMap((s) => (s.name ? [s.name] : []));
      const near = closest(name.toLowerCase(), names);
      throw new PetriError(
        `target stage "${name}" could not be found${near ? `: did you mean "${near}"?` : names.length ? ` (stages: ${names.join(', ')})` : ': the Dockerfile names no stages (FROM IMAGE AS NAME)'}`,
      );
    }
    return stage;
  }

  /** The stage a FROM or `--from` names, if any: a stage name (before `before`), or a stage number for `--from`. */
  #stageNamed(name: string, before: number, allowIndex: boolean): Stage | undefined {
    const lower = name.toLowerCase();
    const stages = this.#dockerfile.stages;
    const byName = stages.find((s) => s.name === lower && s.index < before);
    if (byName) return byName;
    if (allowIndex && /^\d+$/.test(name)) {
      const stage = stages[Number(name)];
      if (!stage || stage.index >= before) {
        throw new PetriError(`--from=${name}: stage ${name} does not come before this one (or does not exist)`);
      }
      return stage;
    }
    return undefined;
  }

  /** The stages `target` needs (itself included), in Dockerfile order. */
  #plan(target: Stage): number[] {
    const needed = new Set<number>();
    const visit = (stage: Stage) => {
      if (needed.has(stage.index)) return;
      needed.add(stage.index);
      for (const dep of this.#dependencies(stage)) visit(dep);
    };
    visit(target);
    return [...needed].sort((a, b) => a - b);
  }

  #dependencies(stage: Stage): Stage[] {
    const env = this.#argEnv(this.#metaArgs);
    const word = (text: string) => {
      try {
        return processWord(text, env, { escape: this.#dockerfile.directives.escape });
      } catch {
        return text;
      }
    };
    const deps: Stage[] = [];
    const from = this.#stageNamed(word(stage.from.args.image), stage.index, false);
    if (from) deps.push(from);
    for (const instruction of stage.instructions) {
      const refs: string[] = [];
      if (instruction.keyword === 'COPY' && instruction.flags.from) refs.push(instruction.flags.from);
      if (instruction.keyword === 'RUN') {
        for (const mount of instruction.flags.mounts ?? []) if (mount.from) refs.push(mount.from);
      }
      for (const ref of refs) {
        const dep = this.#stageNamed(word(ref), stage.index, true);
        if (dep) deps.push(dep);
      }
    }
    return deps;
  }

  #startStage(index: number): Promise<State> {
    const run = this.#stages[index] as StageRun;
    if (!run.promise) {
      run.promise = this.#buildStage(run);
      run.promise.catch(() => {}); // awaited by whoever needs it
    }
    return run.promise;
  }

  async #buildStage(run: StageRun): Promise<State> {
    const { stage } = run;
    const total = stage.instructions.length + 1;
    const from = expandInstruction(stage.from, this.#argEnv(this.#metaArgs), this.#expandOptions());
    const imageName = from.args.image;
    let state = await this.#step(
      run,
      1,
      total,
      `FROM ${imageName}${stage.name ? ` AS ${stage.name}` : ''}`,
      from,
      async (stepId) => {
        const base = await this.#baseState(imageName, stage.index, stepId);
        return { state: base, cached: false, quiet: true };
      },
    );
    const triggers = state.config.OnBuild ?? [];
    if (triggers.length > 0) {
      state = { ...state, config: { ...state.config, OnBuild: null as unknown as undefined } };
      delete state.config.OnBuild;
      for (const trigger of triggers) {
        const parsed = parseDockerfile(`FROM scratch\n${trigger}\n`, { file: `${imageName} ONBUILD` });
        const instruction = parsed.stages[0]?.instructions[0];
        if (!instruction) continue;
        state = await this.#step(run, 1, total, `ONBUILD ${trigger}`, instruction, (id) =>
          this.#apply(state, instruction, run, id),
        );
      }
    }
    for (const [i, instruction] of stage.instructions.entries()) {
      const current = state;
      const text = `${instruction.keyword} ${shownArgs(instruction)}`;
      state = await this.#step(run, i + 2, total, text, instruction, (id) =>
        this.#apply(current, instruction, run, id),
      );
    }
    return state;
  }

  async #step(
    run: StageRun,
    index: number,
    total: number,
    text: string,
    instruction: Instruction,
    body: (stepId: number) => Promise<{ state: State; cached: boolean; quiet?: boolean }>,
  ): Promise<State> {
    const id = this.#nextStep++;
    const started = Date.now();
    const base = { type: 'step' as const, id, stage: run.label, index, total, text: oneLine(text) };
    this.#emit({ ...base, status: 'start' });
    try {
      const result = await body.call(this, id);
      const trace = this.#options.trace;
      trace?.steps.push({
        id,
        stage: run.stage.index,
        keyword: instruction.keyword,
        layers: result.state.layers.length,
        history: result.state.history.length,
        ...(trace.reads.has(id) ? { reads: trace.reads.get(id) } : {}),
      });
      this.#emit({
        ...base,
        status: result.cached ? 'cached' : 'done',
        durationMs: Date.now() - started,
        ...(this.#earlySteps.has(id) ? { early: true as const } : {}),
      });
      return result.state;
    } catch (error) {
      const located =
        error instanceof PetriError && !(error instanceof DockerfileError)
          ? new PetriError(
              `${this.#file}:${instruction.line}: ${instruction.keyword}: ${error.message.replace(`${instruction.keyword} failed: `, '')}`,
              {
                code: error.code,
                cause: error,
              },
            )
          : error;
      this.#emit({ ...base, status: 'error', durationMs: Date.now() - started, error: errorLine(located) });
      throw located;
    }
  }

  async #baseState(name: string, index: number, stepId?: number): Promise<State> {
    const args = new Map<string, string | undefined>();
    if (name === 'scratch') {
      const created = new Date(this.#epoch * 1000).toISOString();
      return {
        fsKey: cacheKey('', { from: 'scratch' }),
        layers: [],
        config: { Env: [`PATH=${DEFAULT_PATH}`] },
        history: [],
        architecture: imageArchitecture(),
        os: 'linux',
        created,
        args,
      };
    }
    const stage = this.#stageNamed(name, index, false);
    if (stage) {
      const parent = await this.#startStage(stage.index);
      return { ...parent, args, cmdSet: false };
    }
    const image = await this.#baseImage(name, stepId);
    const layers = image.manifest.layers.map((layer, i) => ({
      digest: layer.digest,
      size: layer.size,
      mediaType: layer.mediaType,
      diffId: image.config.rootfs.diff_ids[i] as string,
    }));
    return {
      fsKey: cacheKey('', { from: image.id }),
      layers,
      config: structuredClone(image.config.config ?? {}),
      history: [...(image.config.history ?? [])],
      architecture: image.config.architecture,
      os: image.config.os,
      ...(image.config.variant ? { variant: image.config.variant } : {}),
      created: image.config.created ?? new Date(0).toISOString(),
      args,
    };
  }

  /** An image from the store, pulled from its registry first as the pull policy says (each name once per build). */
  async #baseImage(name: string, stepId: number | undefined): Promise<StoredImage> {
    const image = await this.#storedBase(name, stepId);
    const trace = this.#options.trace;
    if (trace) {
      trace.bases ??= [];
      trace.bases.push(image.manifestDigest);
    }
    return image;
  }

  async #storedBase(name: string, stepId: number | undefined): Promise<StoredImage> {
    const policy = this.#options.pull ?? 'missing';
    let missing: unknown;
    if (policy !== 'always') {
      let resolved = this.#resolved.get(name);
      if (!resolved) {
        resolved = this.#store.resolve(name);
        this.#resolved.set(name, resolved);
      }
      try {
        return await resolved;
      } catch (error) {
        missing = error;
      }
      const absent = missing instanceof PetriError && missing.code === 'ENOIMAGE';
      if (policy === 'never' || !absent) {
        throw new PetriError(
          `base image ${name} is not in petri's image store (${errorLine(missing)}): build it (petri build -t ${name} …), load it (petri load) or import it first`,
          { cause: missing },
        );
      }
    }
    let pulled = this.#pulls.get(name);
    if (!pulled) {
      pulled = this.#pull(name, stepId);
      this.#pulls.set(name, pulled);
    }
    try {
      return await pulled;
    } catch (error) {
      if (policy === 'always') {
        throw new PetriError(`base image ${name} could not be pulled (--pull always): ${errorLine(error)}`, {
          cause: error,
        });
      }
      throw new PetriError(
        `base image ${name} is not in petri's image store (${errorLine(missing)}) and pulling it failed (${errorLine(error)}): build it (petri build -t ${name} …), load it (petri load), import it or pull it first`,
        { cause: error },
      );
    }
  }

  async #pull(name: string, stepId: number | undefined): Promise<StoredImage> {
    const { pullImage } = await import('../image/registry/pull.js');
    const say = (data: string) => {
      if (stepId !== undefined) this.#emit({ type: 'output', id: stepId, stream: 'stderr', data: `${data}\n` });
    };
    // With a --cache-from cache, a base image's layers are fetched only when a step needs them.
    const remote = this.#remote;
    const result = await pullImage(this.#store, name, {
      insecureRegistries: this.#options.insecureRegistries ?? [],
      // Else the layers unpack while they download, as RUN steps will need them.
      ...(remote ? { metadataOnly: true } : { layers: await this.#layerCache() }),
      onProgress: (event) => {
        if (event.type === 'resolved') say(`pulling ${event.reference} (${event.digest})`);
        else if (event.type === 'blob' && event.status === 'done') say(`${event.digest.slice(7, 19)}: downloaded`);
        else if (event.type === 'retry') say(`${event.digest.slice(7, 19)}: retrying: ${event.reason}`);
        else if (event.type === 'warning') this.#emit({ type: 'warning', message: event.message });
      },
    });
    if (remote) {
      for (const layer of result.image.manifest.layers) {
        remote.addLayerSource(layer, result.source.client, result.source.repository);
      }
      say(`${result.reference}: layers fetched when a step needs them`);
    }
    return result.image;
  }

  /** What variables an instruction expands with: the stage's ARGs, then its ENV over them. */
  #expansionEnv(state: State): Record<string, string> {
    return { ...this.#argEnv(state.args), ...Object.fromEntries(envMap(state.config)) };
  }

  async #apply(
    state: State,
    raw: Instruction,
    run: StageRun,
    stepId: number,
  ): Promise<{ state: State; cached: boolean }> {
    const instruction = expandInstruction(raw, this.#expansionEnv(state), this.#expandOptions());
    const meta = (config: ContainerConfig, createdBy: string, extra: Partial<State> = {}) => ({
      state: {
        ...state,
        ...extra,
        config,
        history: [...state.history, { created: state.created, created_by: createdBy, empty_layer: true }],
      },
      cached: false,
    });
    const c = state.config;
    switch (instruction.keyword) {
      case 'ARG': {
        const args = new Map(state.args);
        for (const { key, value } of instruction.args.args) {
          const given = this.#options.buildArgs?.[key];
          if (given !== undefined) this.#usedArgs.add(key);
          const inherited = value === undefined && this.#metaArgs.has(key) ? this.#metaArgs.get(key) : undefined;
          args.set(key, given ?? value ?? inherited);
        }
        return { state: { ...state, args }, cached: false };
      }
      case 'ENV': {
        const pairs = instruction.args.pairs.map(({ key, value }) => [key, value] as [string, string]);
        return meta(withEnv(c, pairs), `ENV ${pairs.map(([k, v]) => `${k}=${v}`).join(' ')}`);
      }
      case 'LABEL': {
        const labels = { ...c.Labels };
        for (const { key, value } of instruction.args.pairs) labels[key] = value;
        return meta(
          { ...c, Labels: labels },
          `LABEL ${instruction.args.pairs.map((p) => `${p.key}=${p.value}`).join(' ')}`,
        );
      }
      case 'MAINTAINER':
        return meta(c, `MAINTAINER ${instruction.args.name}`, { author: instruction.args.name });
      case 'EXPOSE': {
        const ports = { ...c.ExposedPorts };
        for (const port of exposedPorts(instruction.args.ports)) ports[port] = {};
        return meta({ ...c, ExposedPorts: ports }, `EXPOSE map[${Object.keys(ports).join(' ')}]`);
      }
      case 'VOLUME': {
        const volumes = { ...c.Volumes };
        for (const path of instruction.args.paths) {
          if (path.trim() === '') throw new PetriError('VOLUME specified can not be an empty string');
          volumes[path] = {};
        }
        return meta({ ...c, Volumes: volumes }, `VOLUME [${instruction.args.paths.join(' ')}]`);
      }
      case 'STOPSIGNAL':
        return meta({ ...c, StopSignal: instruction.args.signal }, `STOPSIGNAL ${instruction.args.signal}`);
      case 'USER':
        return meta({ ...c, User: instruction.args.user }, `USER ${instruction.args.user}`);
      case 'SHELL':
        return meta({ ...c, Shell: instruction.args.shell }, `SHELL [${instruction.args.shell.join(' ')}]`);
      case 'ONBUILD':
        return meta(
          { ...c, OnBuild: [...(c.OnBuild ?? []), instruction.args.expression] },
          `ONBUILD ${instruction.args.expression}`,
        );
      case 'CMD': {
        const cmd = this.#command(state, instruction.args);
        return meta({ ...c, Cmd: cmd }, `CMD [${cmd.map((a) => JSON.stringify(a)).join(' ')}]`, { cmdSet: true });
      }
      case 'ENTRYPOINT': {
        const entrypoint = this.#command(state, instruction.args);
        // Like Docker: a new ENTRYPOINT drops the Cmd inherited from the base image.
        const config = { ...c, Entrypoint: entrypoint };
        if (!state.cmdSet) config.Cmd = null;
        return meta(config, `ENTRYPOINT [${entrypoint.map((a) => JSON.stringify(a)).join(' ')}]`);
      }
      case 'HEALTHCHECK': {
        const { flags, args } = instruction;
        const ns = (ms: number | undefined) => (ms === undefined ? undefined : ms * 1_000_000);
        const healthcheck: NonNullable<ContainerConfig['Healthcheck']> & { StartInterval?: number } = {
          Test: args.test,
        };
        if (args.test[0] !== 'NONE') {
          if (flags.interval !== undefined) healthcheck.Interval = ns(flags.interval) as number;
          if (flags.timeout !== undefined) healthcheck.Timeout = ns(flags.timeout) as number;
          if (flags.startPeriod !== undefined) healthcheck.StartPeriod = ns(flags.startPeriod) as number;
          if (flags.startInterval !== undefined) healthcheck.StartInterval = ns(flags.startInterval) as number;
          if (flags.retries !== undefined) healthcheck.Retries = flags.retries;
        }
        return meta({ ...c, Healthcheck: healthcheck }, `HEALTHCHECK ${JSON.stringify(args.test)}`);
      }
      case 'WORKDIR':
        return this.#workdir(state, instruction.args.path);
      case 'RUN':
        return this.#run(state, instruction, run, stepId);
      case 'COPY':
      case 'ADD':
        return this.#copy(state, instruction, run, stepId);
      case 'FROM':
        throw new PetriError('FROM inside a stage');
    }
  }

  /** CMD/ENTRYPOINT/RUN argv: exec form as written, shell form through the stage's SHELL. */
  #command(state: State, args: { cmd: string[]; prependShell: boolean }): string[] {
    return args.prependShell ? [...(state.config.Shell ?? DEFAULT_SHELL), args.cmd.join(' ')] : args.cmd;
  }

  /** The lower dirs of a state's filesystem (top first), unpacking what the layer cache lacks. */
  async #lower(state: State): Promise<string[]> {
    await this.#ensureLayers(state.layers);
    return (await this.#layerCache()).prepare(
      state.layers.map((layer) => ({
        digest: layer.digest,
        mediaType: layer.mediaType,
        diffId: layer.diffId,
        open: () => this.#store.openBlob(layer.digest),
      })),
    );
  }

  /** The layer cache, loaded on first use (a fully cached build never needs it). */
  async #layerCache(): Promise<LayerCache> {
    if (!this.#layers) {
      const { LayerCache } = await import('../snapshot/layers.js');
      this.#layers = new LayerCache();
    }
    return this.#layers;
  }

  /**
   * Removes a step's working directory, empty once its upper dir became the
   * layer, in the thread pool while the build goes on; one that is not empty
   * (or not removed) is left to the end of the build.
   */
  #dropWorkDir(dir: string): void {
    const index = this.#workDirs.indexOf(dir);
    if (index < 0) return;
    this.#workDirs.splice(index, 1);
    this.#removals.push(rmdir(dir).catch(() => void this.#workDirs.push(dir)));
  }

  async #workDir(): Promise<string> {
    const dir = (await this.#layerCache()).workDir();
    this.#workDirs.push(dir);
    return dir;
  }

  /**
   * A step that may make a layer: its key is the filesystem's key plus `step`;
   * on a hit the recorded layer is reused (nothing runs, nothing is written),
   * else `make` fills a fresh upper dir, which becomes the layer unless empty.
   * `make` resolves to `{ helper, entries }` when this process wrote the upper
   * dir with its own fs calls, `helper` telling whether petri-runner made some
   * of it (device nodes, fifos, xattrs), or when a container wrote it and its
   * runner saw that lstat reads it whole; to nothing otherwise.
   */
  async #layerStep(
    state: State,
    step: object,
    createdBy: string,
    make: (lower: string[], upper: string) => Promise<{ helper: boolean; entries: number } | undefined>,
    extra: Partial<State> = {},
  ): Promise<{ state: State; cached: boolean }> {
    const key = cacheKey(state.fsKey, step);
    let record = this.#options.noCache ? undefined : this.#cache.get(key);
    if (record?.layer && !this.#store.hasBlob(record.layer.digest)) record = undefined;
    if (!record && this.#remote) {
      // A hit in a --cache-from cache: its layer is downloaded when something needs it.
      record = this.#remote.get(key);
      if (record) this.#cache.set(key, record);
    }
    const cached = record !== undefined;
    if (cached) this.#options.early?.drop(key); // an early run for a step the cache has (never started so)
    if (!record) {
      const lower = await this.#lower(state);
      const work = await this.#workDir();
      // `fs`: the layer cache takes the working directory as the layer's (LayerCache.adopt, in place).
      const upper = join(work, 'fs');
      mkdirSync(upper);
      const written = await make(lower, upper);
      // What Node wrote alone has nothing lstat cannot see (no device nodes; no xattrs but those the host adds,
      // which layers leave out), nor has what a container wrote when its runner found no xattr and no name
      // JSON cannot carry: read here, without a process, unless it is big enough for the walk to hold up the
      // other stages (petri-runner reads it beside them).
      const own = written !== undefined && !written.helper && written.entries <= OWN_SCAN_MAX;
      const layer = readdirSync(upper).length === 0 ? null : await this.#commitLayer(state, upper, own);
      const created = new Date(Date.now()).toISOString();
      record = {
        layer,
        created: this.#epoch ? new Date(this.#epoch * 1000).toISOString() : created,
        createdBy,
      } satisfies CacheRecord;
      this.#cache.set(key, record);
      if (layer)
        this.#workDirs.splice(this.#workDirs.indexOf(work), 1); // the layer cache's now
      else this.#dropWorkDir(work);
    }
    this.#usedSteps.set(key, { record, parent: state.fsKey });
    const entry: HistoryEntry = { created: record.created, created_by: createdBy };
    if (!record.layer) entry.empty_layer = true;
    return {
      state: {
        ...state,
        ...extra,
        fsKey: key,
        layers: record.layer ? [...state.layers, record.layer] : state.layers,
        history: [...state.history, entry],
        created: record.created,
      },
      cached,
    };
  }

  /** The fsops process, started now when no step has yet (a RUN step starts it ahead of its container). */
  #startScanner(): Promise<FsOps> {
    this.#scanner ??= import('../snapshot/fsops.js').then(({ FsOps }) => {
      const scanner = new FsOps();
      scanner.start();
      return scanner;
    });
    return this.#scanner;
  }

  async #commitLayer(state: State, upper: string, own: boolean): Promise<LayerRef> {
    let stored: Promise<BlobInfo> | undefined;
    const sink = {
      whole: async (tar: Buffer) => {
        stored = this.#store.writeBlob(tar);
        await stored;
      },
      stream: () => {
        const stream = new PassThrough();
        stored = this.#store.writeBlobStream(stream);
        stored.catch(() => {});
        return stream;
      },
    };
    const { writeLayer } = await import('../snapshot/layer-from-dir.js');
    const { scanOwnTree } = await import('../snapshot/scan.js');
    const { diffId, size, opaque } = await writeLayer(upper, sink, {
      sourceDateEpoch: this.#epoch,
      scan: own ? async (dir) => scanOwnTree(dir) : async (dir) => (await this.#startScanner()).scan(dir),
    });
    const blob = await (stored as Promise<BlobInfo>);
    const { chainIds } = await import('../snapshot/layers.js');
    const parent = chainIds(state.layers.map((l) => l.diffId)).at(-1) ?? null;
    (await this.#layerCache()).adopt(upper, { diffId, size, opaque }, parent, { inPlace: true });
    return { digest: blob.digest, size: blob.size, mediaType: MEDIA_TYPES.ociLayer, diffId };
  }

  async #workdir(state: State, path: string): Promise<{ state: State; cached: boolean }> {
    const dir = resolveWorkdir(state.config.WorkingDir, path);
    const config = { ...state.config, WorkingDir: dir };
    const user = state.config.User ?? '';
    return this.#layerStep(
      state,
      { op: 'WORKDIR', dir, user },
      `WORKDIR ${dir}`,
      async (lower, upper) => {
        const owner = user ? resolveUser(user, (p) => readFromLayers(lower, p)) : { uid: 0, gid: 0 };
        makeDirs(new LayeredView(lower), upper, dir, owner);
        return { helper: false, entries: 1 };
      },
      { config },
    );
  }

  /** Where COPY --from / RUN --mount from read: the context, or a stage's or image's filesystem (unpacked only when read). */
  async #sourceView(from: string | undefined, run: StageRun): Promise<Source> {
    if (from === undefined) {
      const view = this.#context;
      return { view: async () => view, key: 'context', preserveOwner: false };
    }
    const stage = this.#stageNamed(from, run.stage.index, true);
    let source: State;
    if (stage) source = await this.#startStage(stage.index);
    else source = await this.#baseState(from, -1);
    let view: Promise<FsView> | undefined;
    return {
      view: () => {
        view ??= this.#lower(source).then((lower) => new LayeredView(lower));
        return view;
      },
      key: source.fsKey,
      preserveOwner: true,
    };
  }

  /**
   * The files a COPY or bind mount selects, and their content hash (the cache
   * key's part). The hash of a selection from a stage or image is remembered
   * under the stage's key, so a cached build does not read that filesystem.
   */
  async #selection(
    source: Source,
    request: Omit<CopyRequest, 'from'>,
  ): Promise<{ hash: string; request: () => Promise<CopyRequest>; entries: () => Promise<SelectedEntry[]> }> {
    let full: Promise<CopyRequest> | undefined;
    let entries: Promise<SelectedEntry[]> | undefined;
    const getRequest = () => {
      full ??= source.view().then((from) => ({ ...request, from }));
      return full;
    };
    const getEntries = () => {
      entries ??= getRequest().then(selectSources);
      return entries;
    };
    if (source.key === 'context')
      return { hash: hashSelection(await getEntries()), request: getRequest, entries: getEntries };
    const key = cacheKey(source.key, { selection: request });
    let hash = this.#options.noCache ? undefined : this.#cache.getSelection(key);
    if (hash === undefined && this.#remote) {
      hash = this.#remote.getSelection(key);
      if (hash !== undefined) this.#cache.setSelection(key, hash);
    }
    if (hash === undefined) {
      hash = hashSelection(await getEntries());
      this.#cache.setSelection(key, hash);
    }
    this.#usedSelections.set(key, hash);
    return { hash, request: getRequest, entries: getEntries };
  }

  async #copy(
    state: State,
    instruction: Extract<Instruction, { keyword: 'COPY' | 'ADD' }>,
    run: StageRun,
    stepId: number,
  ): Promise<{ state: State; cached: boolean }> {
    const { flags, args } = instruction;
    const from = instruction.keyword === 'COPY' ? instruction.flags.from : undefined;
    const source = await this.#sourceView(from, run);
    const env = this.#expansionEnv(state);
    const inline = instruction.heredocs.map((h) => ({
      name: h.name,
      content: h.expand ? expandHeredoc(h.content, env) : h.content,
    }));
    const workdir = state.config.WorkingDir || '/';
    const chmod = flags.chmod === undefined ? undefined : parseMode(flags.chmod);
    const request: Omit<CopyRequest, 'from'> = {
      sources: args.sources,
      inline,
      dest: args.dest,
      workdir,
      ...(chmod === undefined ? {} : { chmod }),
      ...(flags.exclude ? { exclude: flags.exclude } : {}),
      ...(instruction.keyword === 'COPY' && instruction.flags.parents ? { parents: true } : {}),
      preserveOwner: source.preserveOwner,
      ...(instruction.keyword === 'ADD'
        ? {
            add: true,
            ...(instruction.flags.checksum !== undefined ? { checksum: instruction.flags.checksum } : {}),
            ...(instruction.flags.keepGitDir ? { keepGitDir: true } : {}),
            scratch: () => this.#workDir(),
          }
        : {}),
    };
    if (flags.chown !== undefined) {
      // Names resolve in the destination's /etc/passwd and /etc/group; numbers need no lookup.
      const lower = /^\d+(:\d+)?$/.test(flags.chown) ? undefined : await this.#lower(state);
      request.chown = parseChown(flags.chown, lower);
    }
    const selection = await this.#selection(source, request);
    const step = {
      op: instruction.keyword,
      source: source.key,
      content: selection.hash,
      inline,
      dest: args.dest,
      workdir,
      chown: request.chown ?? null,
      chmod: chmod ?? null,
      exclude: flags.exclude ?? [],
      parents: request.parents ?? false,
    };
    const createdBy = `${instruction.keyword} ${shownArgs(instruction)} # buildkit`;
    if (this.#options.trace && source.key === 'context') {
      // A context COPY: its files (their digests were needed for the key), and how its key is made, for
      // runner/replay.c to make it again. An ADD may unpack what it reads.
      const entries = instruction.keyword === 'COPY' ? await selection.entries() : undefined;
      this.#options.trace.reads.set(
        stepId,
        entries
          ? {
              files: traceFiles(entries),
              digests: entries.flatMap((e) => (e.type === 'file' && e.digest ? [e.digest] : [])),
              lines: selectionLines(entries),
              parent: state.fsKey,
              step: stableJson(step),
              createdBy,
              namedChown: flags.chown !== undefined && !/^\d+(:\d+)?$/.test(flags.chown),
            }
          : 'other',
      );
    }
    return this.#layerStep(state, step, createdBy, async (lower, upper) =>
      copyInto(await selection.request(), await selection.entries(), lower, upper),
    );
  }

  async #run(
    state: State,
    instruction: Extract<Instruction, { keyword: 'RUN' }>,
    run: StageRun,
    stepId: number,
  ): Promise<{ state: State; cached: boolean }> {
    const { args, flags, heredocs } = instruction;
    const shell = state.config.Shell ?? DEFAULT_SHELL;
    let command: string[];
    const scripts: { target: string; content: string }[] = [];
    const only = heredocs.length === 1 ? heredocs[0] : undefined;
    const quoted = only ? new RegExp(`^<<-?(["']?)${escapeRegExp(only.name)}\\1$`) : undefined;
    if (only && args.prependShell && quoted?.test(args.cmd.join(' ').trim())) {
      // `RUN <<EOF`: the body is the script (a file run directly when it has a #! line).
      const body = (heredocs[0] as { content: string }).content;
      if (body.startsWith('#!')) {
        const target = `/dev/.petri-heredoc-${scripts.length}`;
        scripts.push({ target, content: body });
        command = [target];
      } else command = [...shell, body];
    } else if (heredocs.length > 0 && args.prependShell) {
      // The heredocs feed the command: the shell reads them from the script itself.
      const script = [args.cmd.join(' '), ...heredocs.map((h) => `${h.content}${h.name}`)].join('\n');
      command = [...shell, script];
    } else command = this.#command(state, args);

    const workdir = state.config.WorkingDir || '/';
    const network = flags.network === 'none' ? 'none' : 'host';
    const runEnv = new Map<string, string>();
    const keyEnv: string[] = [];
    for (const [key, value] of state.args) {
      if (value !== undefined) runEnv.set(key, value);
    }
    for (const key of PROXY_ARGS) {
      const value = this.#options.buildArgs?.[key];
      if (value !== undefined && !state.args.has(key)) {
        runEnv.set(key, value);
        this.#usedArgs.add(key);
      }
    }
    for (const [key, value] of envMap(state.config)) runEnv.set(key, value);
    for (const [key, value] of runEnv)
      if (!PROXY_ARGS.includes(key) || state.args.has(key)) keyEnv.push(`${key}=${value}`);

    const mounts = flags.mounts ?? [];
    const mountKeys: object[] = [];
    // A bind mount of the context: the step may read any of it.
    if (mounts.some((m) => m.type === 'bind' && m.from === undefined)) this.#options.trace?.reads.set(stepId, 'other');
    for (const mount of mounts) mountKeys.push(await this.#mountKey(mount, run, state));
    const step = {
      op: 'RUN',
      command,
      scripts,
      env: keyEnv.sort(),
      user: state.config.User ?? '',
      workdir,
      mounts: mountKeys,
      network,
      security: flags.security ?? 'sandbox',
      // The layer is the upper dir whole (runner/mounts.c: no overlay redirects): a RUN layer from before, where
      // the kernel redirected by default, may have lost a renamed directory's contents, so it is not reused.
      upper: 'whole',
    };
    const createdBy = `RUN ${command.join(' ')} # buildkit`;
    const stepText = stableJson(step);
    const key = { key: cacheKey(state.fsKey, step), parent: state.fsKey, stepText };
    return this.#layerStep(state, step, createdBy, async (lower, upper) => {
      // What the runner saw of the upper dir: lstat reads it whole, so it is scanned here (no fsops process).
      const seen = await this.#runContainer(state, {
        stepId,
        command,
        scripts,
        env: runEnv,
        workdir,
        network,
        mounts,
        run,
        lower,
        upper,
        privileged: flags.security === 'insecure',
        key,
      });
      // Else (xattrs, names that are not UTF-8, many entries) petri-runner fsops reads it.
      return seen?.plain && seen.entries !== undefined ? { helper: false, entries: seen.entries } : undefined;
    });
  }

  async #mountKey(mount: Mount, run: StageRun, state: State): Promise<object> {
    switch (mount.type) {
      case 'cache':
        return { type: 'cache', target: mount.target, id: mount.id ?? mount.target, readonly: mount.readonly };
      case 'tmpfs':
        return { type: 'tmpfs', target: mount.target, size: mount.size ?? null };
      case 'secret':
        return { type: 'secret', target: mount.target ?? null, id: mount.id ?? null };
      case 'ssh':
        return {
          type: 'ssh',
          target: mount.target,
          id: mount.id ?? 'default',
          uid: mount.uid ?? 0,
          gid: mount.gid ?? 0,
          mode: mount.mode ?? 0o600,
          required: mount.required ?? false,
        };
      case 'bind': {
        const expanded = mount.from === undefined ? undefined : processWord(mount.from, this.#expansionEnv(state), {});
        const source = await this.#sourceView(expanded, run);
        const selection = await this.#selection(source, {
          sources: [mount.source ?? '/'],
          dest: '/',
          workdir: '/',
          preserveOwner: true,
        });
        return {
          type: 'bind',
          target: mount.target,
          from: source.key,
          content: selection.hash,
          readonly: mount.readonly,
        };
      }
    }
  }

  async #runContainer(
    state: State,
    job: {
      stepId: number;
      command: string[];
      scripts: { target: string; content: string }[];
      env: Map<string, string>;
      workdir: string;
      network: 'none' | 'host';
      mounts: Mount[];
      run: StageRun;
      lower: string[];
      upper: string;
      privileged: boolean;
      /** The step's cache key, the key below it and the step as hashed: for early runs (early.ts). */
      key: { key: string; parent: string; stepText: string };
    },
  ): Promise<import('../runtime/container.js').Container['upper']> {
    const { lower } = job;
    const readFile = (p: string) => readFromLayers(lower, p);
    const user = resolveUser(state.config.User || undefined, readFile);
    const env = Object.fromEntries(job.env);
    if (env.PATH === undefined) env.PATH = DEFAULT_PATH;
    if (env.HOME === undefined && user.home) env.HOME = user.home;
    const work = await this.#workDir();
    const binds: NonNullable<ContainerOptions['binds']> = [];
    const tmpfs: Record<string, string> = {};
    for (const [i, script] of job.scripts.entries()) {
      const file = join(work, `script-${i}`);
      writeFileSync(file, script.content, { mode: 0o755 });
      binds.push({ source: file, target: script.target, readonly: true });
    }
    const mountTargets: string[] = [];
    /** The SSH agent proxies of the step's ssh mounts: closed when it ends (or with the build, if it fails first). */
    const agents: { close(): void }[] = [];
    let sshSeen = false;
    // With the host's network, the host's DNS too, as BuildKit does: a copy of its resolv.conf (what the
    // step writes there goes nowhere), over the image's; not part of the layer.
    if (job.network === 'host' && !job.mounts.some((m) => posix.normalize(m.target ?? '') === '/etc/resolv.conf')) {
      let resolvConf: Buffer | undefined;
      try {
        resolvConf = readFileSync('/etc/resolv.conf');
      } catch {
        // none on this host: the image's own, if any
      }
      if (resolvConf) {
        const file = join(work, 'resolv.conf');
        writeFileSync(file, resolvConf, { mode: 0o644 });
        binds.push({ source: file, target: '/etc/resolv.conf', readonly: false });
        mountTargets.push('/etc/resolv.conf');
      }
    }
    for (const [i, mount] of job.mounts.entries()) {
      const target = posix.resolve(
        job.workdir,
        mount.target ?? (mount.type === 'secret' ? `/run/secrets/${mount.id}` : ''),
      );
      if (mount.type === 'cache') {
        const dir = this.#cache.mountDir(mount.id ?? target, {
          uid: mount.uid ?? 0,
          gid: mount.gid ?? 0,
          mode: mount.mode ?? 0o755,
        });
        binds.push({ source: dir, target, readonly: mount.readonly });
      } else if (mount.type === 'tmpfs') {
        tmpfs[target] = mount.size ? `size=${mount.size}` : '';
      } else if (mount.type === 'secret') {
        const id = mount.id ?? posix.basename(target);
        const secrets = this.#options.secrets;
        const file = secrets && Object.hasOwn(secrets, id) ? secrets[id] : undefined;
        if (file === undefined) {
          if (mount.required)
            throw new PetriError(`secret ${id} is required but was not given: pass --secret id=${id},src=FILE`);
          continue;
        }
        const copy = join(work, `secret-${i}`);
        writeFileSync(copy, readFileSync(file), { mode: mount.mode ?? 0o400 });
        chownSync(copy, mount.uid ?? 0, mount.gid ?? 0);
        if (mount.env) env[mount.env] = readFileSync(file, 'utf8');
        if (mount.target !== undefined || !mount.env) binds.push({ source: copy, target, readonly: true });
        else continue;
      } else if (mount.type === 'ssh') {
        const id = mount.id ?? 'default';
        // As BuildKit: the step's SSH_AUTH_SOCK is its first ssh mount's, given or not.
        if (!sshSeen) env.SSH_AUTH_SOCK = target;
        sshSeen = true;
        const ssh = this.#options.ssh;
        const agent = ssh && Object.hasOwn(ssh, id) ? ssh[id] : undefined;
        if (agent === undefined) {
          if (mount.required) throw new PetriError(`ssh ${id} is required but was not given: pass --ssh ${id}`);
          continue;
        }
        const { agentProxy } = await import('./ssh-agent.js');
        const owner = { uid: mount.uid ?? 0, gid: mount.gid ?? 0, mode: mount.mode ?? 0o600 };
        const proxy = await agentProxy(agent, work, `ssh-${i}.sock`, owner);
        agents.push(proxy);
        this.#agents.add(proxy);
        binds.push({ source: proxy.path, target, readonly: false });
      } else if (mount.type === 'bind') {
        const expanded = mount.from === undefined ? undefined : processWord(mount.from, this.#expansionEnv(state), {});
        const source = await this.#sourceView(expanded, job.run);
        const dir = join(work, `bind-${i}`);
        mkdirSync(dir);
        const request: CopyRequest = {
          from: await source.view(),
          sources: [mount.source ?? '/'],
          dest: '/',
          workdir: '/',
          preserveOwner: true,
        };
        await copyInto(request, await selectSources(request), [], dir);
        // A file (not a directory) is bound as itself.
        const single = readdirSync(dir);
        const file = single.length === 1 ? join(dir, single[0] as string) : undefined;
        const isFile =
          file !== undefined &&
          mount.source !== undefined &&
          !lstatSync(file).isDirectory() &&
          request.from.lstat(cleanRel(mount.source))?.isDirectory() === false;
        binds.push({ source: isFile ? file : dir, target, readonly: mount.readonly });
      }
      mountTargets.push(target);
    }
    mountTargets.push(...job.scripts.map((s) => s.target));

    const root = lower.length > 0 ? lower : [this.#emptyDir(work)];
    const options: ContainerOptions = {
      rootfs: root,
      command: job.command,
      env,
      workdir: job.workdir,
      user: { uid: user.uid, gid: user.gid, additionalGids: user.additionalGids },
      hostname: 'buildkitsandbox',
      reportUpper: true,
      network: job.network,
      binds,
      tmpfs,
      ...(job.privileged ? { privileged: true } : {}),
    };
    // An early run (early.ts) is for a RUN with no mounts of its own over a layer of files: this one, maybe.
    const resolvBind = binds.find((b) => b.target === '/etc/resolv.conf');
    const top = lower[0];
    const plain =
      top !== undefined &&
      job.scripts.length === 0 &&
      job.mounts.length === 0 &&
      !job.privileged &&
      binds.length === (resolvBind ? 1 : 0) &&
      Object.keys(tmpfs).length === 0;
    const hash = plain ? optionsHash(options, top, resolvBind?.source) : '';
    const trace = this.#options.trace;
    /** What an early run of this step needs next time: the layer below and the templates of a container for it. */
    const note = (c: { id: string; dir: string; lowerTop: string; resolv: string | undefined; args: string[] }) => {
      if (!plain || !trace || !c.args.includes('--clone-into')) return;
      const tree = layerTree(top as string, lower.slice(1));
      const record = readFileSync(join(c.dir, 'record.json'), 'utf8');
      const cgroups = (JSON.parse(record) as { cgroupDirs: string[] }).cgroupDirs;
      const config = readFileSync(join(c.dir, 'config.json'), 'utf8');
      const templates = tree && containerTemplates({ ...c, config, record, cgroups });
      if (!tree || !templates) return;
      trace.early ??= [];
      trace.early.push({ runStep: job.stepId, ...job.key, tree, resolv: !!resolvBind, options: hash, ...templates });
    };
    const early = this.#options.early;
    if (plain && early?.take(job.key.key, hash, lower, resolvBind && readFileSync(resolvBind.source))) {
      const seen = await this.#adoptEarly(early, job, lower, mountTargets, () =>
        note({ ...early, lowerTop: early.lowerTop, resolv: resolvBind && early.resolvPath, args: early.args() }),
      );
      if (seen !== false) return seen;
    }
    // Started for this step but not the step's own: killed now, before this step runs its own.
    early?.drop(job.key.key);
    const { Container } = await import('../runtime/container.js');
    // Not kept (ContainerOptions.keep): its upper is read before remove(), and wait() ends with the runner (no
    // record to rewrite, no cgroups to remove first); a build killed meanwhile leaves it to a sweep, which removes it.
    const container = Container.create(options);
    note({
      id: container.id,
      dir: container.dir,
      lowerTop: top ?? '',
      resolv: resolvBind?.source,
      args: container.runnerArgs(),
    });
    const tail: string[] = [];
    try {
      // The streams exist once start() is called; read them before it resolves (a quick command may be done by then).
      const starting = container.start({ stdin: 'ignore' });
      const id = job.stepId;
      const pump = (stream: NodeJS.ReadableStream | null, name: 'stdout' | 'stderr') =>
        new Promise<void>((done) => {
          if (!stream) return done();
          stream.on('data', (chunk: Buffer) => {
            const data = chunk.toString('utf8');
            for (const line of data.split('\n')) if (line !== '') tail.push(line);
            if (tail.length > 10) tail.splice(0, tail.length - 10);
            this.#emit({ type: 'output', id, stream: name, data });
          });
          stream.on('end', () => done());
          stream.on('close', () => done());
          stream.on('error', () => done());
        });
      const pumps = Promise.all([pump(container.stdout, 'stdout'), pump(container.stderr, 'stderr')]);
      await starting;
      const exit = await container.wait();
      await pumps;
      if (exit.exitCode !== 0 || exit.signal !== null) {
        const how = exit.signal !== null ? `signal ${exit.signal}` : `exit code: ${exit.exitCode}`;
        throw new PetriError(
          `process "${job.command.join(' ')}" did not complete successfully: ${how}${tail.length ? ` (last output: ${tail.slice(-3).join(' | ')})` : ''}`,
          { code: 'ERUN' },
        );
      }
      const upper = join(container.dir, 'upper');
      removeMountpoints(upper, lower, mountTargets);
      moveContents(upper, job.upper);
      return container.upper;
    } finally {
      for (const agent of agents) {
        agent.close();
        this.#agents.delete(agent);
      }
      // Off the step's critical path (its layer is in job.upper): the build waits for it before it ends.
      const removal = container.remove();
      removal.catch(() => {}); // awaited with the others in build()
      this.#removals.push(removal);
    }
  }

  /**
   * The step's container, run early (early.ts): its output shown, its upper
   * dir taken as this one's would be. False when its runner could not start
   * the container (then the step runs its own).
   */
  async #adoptEarly(
    early: EarlyRun,
    job: { stepId: number; command: string[]; upper: string },
    lower: string[],
    mountTargets: string[],
    note: () => void,
  ): Promise<import('../runtime/container.js').Container['upper'] | false> {
    try {
      const exit = await early.exit();
      // A runner that could not start the container: the step runs its own. One that ended after the command
      // started, without its exit: the step failed, as it would have with its own container.
      if (exit.error !== undefined && !exit.started) return false;
      if (exit.error !== undefined) throw new PetriError(`the early run's runner failed: ${exit.error}`);
      const tail: string[] = [];
      for (const stream of ['stdout', 'stderr'] as const) {
        const data = early.output(stream);
        if (data === '') continue;
        for (const line of data.split('\n')) if (line !== '') tail.push(line);
        this.#emit({ type: 'output', id: job.stepId, stream, data });
      }
      if (exit.exitCode !== 0 || exit.signal !== null) {
        const how = exit.signal !== null ? `signal ${exit.signal}` : `exit code: ${exit.exitCode}`;
        const last = tail.slice(-3);
        throw new PetriError(
          `process "${job.command.join(' ')}" did not complete successfully: ${how}${last.length ? ` (last output: ${last.join(' | ')})` : ''}`,
          { code: 'ERUN' },
        );
      }
      const upper = join(early.dir, 'upper');
      removeMountpoints(upper, lower, mountTargets);
      moveContents(upper, job.upper);
      note();
      this.#earlySteps.add(job.stepId);
      return exit.upper;
    } finally {
      const removal = early.remove();
      removal.catch(() => {});
      this.#removals.push(removal);
    }
  }

  #emptyDir(work: string): string {
    const dir = join(work, 'empty-root');
    mkdirSync(dir, { recursive: true });
    return dir;
  }

  #warnUnusedArgs(): void {
    const unused = Object.keys(this.#options.buildArgs ?? {}).filter(
      (key) => !this.#usedArgs.has(key) && !this.#metaArgs.has(key),
    );
    if (unused.length > 0) {
      this.#emit({ type: 'warning', message: `one or more build-args [${unused.sort().join(' ')}] were not consumed` });
    }
  }

  async #writeImage(state: State, tags: string[]): Promise<BuildResult> {
    const config: ImageConfig = {
      created: state.created,
      ...(state.author ? { author: state.author } : {}),
      architecture: state.architecture,
      os: state.os,
      ...(state.variant ? { variant: state.variant } : {}),
      config: state.config,
      rootfs: { type: 'layers', diff_ids: state.layers.map((l) => l.diffId) },
      history: state.history,
    };
    await this.#ensureLayers(state.layers);
    const layers = state.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size }));
    const { manifest, configDigest } = await this.#store.writeImage({ config, layers });
    for (const tag of tags) await this.#store.tag(tag, manifest);
    return { id: configDigest, manifestDigest: manifest.digest, tags };
  }
}

function platformArgs(): Record<string, string> {
  const arch = imageArchitecture();
  const platform = `linux/${arch}`;
  return {
    TARGETPLATFORM: platform,
    TARGETOS: 'linux',
    TARGETARCH: arch,
    TARGETVARIANT: '',
    BUILDPLATFORM: platform,
    BUILDOS: 'linux',
    BUILDARCH: arch,
    BUILDVARIANT: '',
  };
}

function displayArgs(instruction: Instruction): string {
  const { flags, args } = instruction.source;
  return [...flags, args].filter((s) => s !== '').join(' ');
}

/** As displayArgs, with the password or token of an ADD's URL hidden: never in progress or the image's history. */
function shownArgs(instruction: Instruction): string {
  const text = displayArgs(instruction);
  return instruction.keyword === 'ADD' ? redactUrl(text) : text;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function oneLine(text: string): string {
  const line = text.replace(/\s*\n\s*/g, ' ');
  return line.length > 200 ? `${line.slice(0, 197)}...` : line;
}

function parseMode(text: string): number {
  if (!/^[0-7]{1,4}$/.test(text)) throw new PetriError(`invalid --chmod=${text}: expected an octal mode such as 755`);
  return Number.parseInt(text, 8);
}

/** `--chown=user[:group]`: names from the destination's passwd/group files; a lone user means gid = uid, like Docker. */
function parseChown(text: string, lower: string[] | undefined): { uid: number; gid: number } {
  const [userPart = '', groupPart] = text.split(':');
  const read = (path: string) => (lower ? readFromLayers(lower, path) : undefined);
  const lookup = (file: string, name: string, what: string): number => {
    if (/^\d+$/.test(name)) return Number(name);
    const line = (read(file) ?? '').split('\n').find((l) => l.split(':')[0] === name);
    const id = line?.split(':')[2];
    if (id === undefined || !/^\d+$/.test(id)) {
      throw new PetriError(`--chown=${text}: no ${what} named ${name} in the image's ${file}`);
    }
    return Number(id);
  };
  if (userPart === '') throw new PetriError(`invalid --chown=${text}: expected USER[:GROUP]`);
  const uid = lookup('/etc/passwd', userPart, 'user');
  const gid = groupPart === undefined || groupPart === '' ? uid : lookup('/etc/group', groupPart, 'group');
  return { uid, gid };
}

/** Creates `dir` (absolute) in `upper`: components that exist below are copied up with their metadata, new ones 0755. */
function makeDirs(view: FsView, upper: string, dir: string, owner: { uid: number; gid: number }): void {
  const parts = dir.split('/').filter(Boolean);
  let rel = '';
  let created = false;
  for (const [i, part] of parts.entries()) {
    rel = rel ? `${rel}/${part}` : part;
    const stat = view.lstat(rel);
    if (stat?.isDirectory() && !created) {
      if (i === parts.length - 1) return; // exists already: no layer
      continue;
    }
    if (stat && !stat.isDirectory()) {
      throw new PetriError(`cannot make the directory /${rel}: a file is in the way in the image`);
    }
    if (!created) {
      // Copy up the existing parents so the layer has them with their metadata.
      let parentRel = '';
      for (const parent of parts.slice(0, i)) {
        parentRel = parentRel ? `${parentRel}/${parent}` : parent;
        const ps = view.lstat(parentRel) as NonNullable<ReturnType<FsView['lstat']>>;
        const path = join(upper, parentRel);
        mkdirSync(path);
        chownSync(path, ps.uid, ps.gid);
        chmodSync(path, ps.mode & 0o7777);
        utimesSync(path, ps.atime, ps.mtime);
      }
    }
    created = true;
    const path = join(upper, rel);
    mkdirSync(path, { mode: 0o755 });
    chmodSync(path, 0o755);
    if (i === parts.length - 1) chownSync(path, owner.uid, owner.gid);
  }
}

/** Removes the mountpoints the runtime made for a RUN's mounts (and the parents it made for them) from its upper dir. */
function removeMountpoints(upper: string, lower: string[], targets: string[]): void {
  const view = new LayeredView(lower);
  for (const target of targets) {
    let rel = target.replace(/^\/+/, '');
    while (rel !== '' && rel !== '.') {
      if (view.lstat(rel)) break; // it was in the image: keep what the command did to it
      const path = join(upper, rel);
      try {
        const stat = lstatSync(path);
        if (stat.isDirectory()) {
          if (readdirSync(path).length > 0) break;
          rmdirSync(path);
        } else if (stat.isFile() && stat.size === 0) unlinkSync(path);
        else break;
      } catch {
        break;
      }
      rel = posix.dirname(rel);
    }
  }
}

/** Moves every entry of `from` into the (empty) directory `to` (copying, with cp -a, across filesystems). */
function moveContents(from: string, to: string): void {
  for (const name of readdirSync(from)) {
    try {
      renameSync(join(from, name), join(to, name));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EXDEV') throw error;
      const copied = childProcess().spawnSync('cp', ['-a', '--', join(from, name), join(to, name)], {
        encoding: 'utf8',
      });
      if (copied.status !== 0) throw new PetriError(`cannot move the step's changes: ${copied.stderr.trim()}`);
    }
  }
  const stat = lstatSync(from);
  chmodSync(to, stat.mode & 0o7777);
}

/** A heredoc body's variables (`$VAR`, `${VAR}`), quotes untouched, like BuildKit's heredoc expansion. */
function expandHeredoc(text: string, env: Record<string, string>): string {
  return text.replace(/\\\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (match, a, b) => {
    if (match === '\\$') return '$';
    return env[(a ?? b) as string] ?? '';
  });
}
