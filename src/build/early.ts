import {
  closeSync,
  existsSync,
  lstatSync,
  openSync,
  readdirSync,
  readFile,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { rmdir } from 'node:fs/promises';
import { basename, dirname, join, relative, sep } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { containersDir, petriRoot } from '../runtime/paths.js';
import { removeTree } from '../util/fs.js';
import { cacheKey, stableJson } from './cache.js';
import { type BuildTrace, count, sha256hex, type TraceCopy, type TraceStep } from './delta.js';
import { LayeredView } from './fs-view.js';

/**
 * Early runs: the RUN step right after a context COPY, started by `petri-runner
 * replay` (runner/replay.c) while Node starts, when the only change since the
 * build its replay record remembers is the content of files that COPY reads.
 *
 * A build that ran such a RUN keeps its plan with the replay record
 * (`replay-<key>.early`): what the COPY's layer holds (directories and the
 * context files, with their modes, owners and times), how the COPY's and the
 * RUN's cache keys are made (templates, as a delta's), and the container the
 * RUN ran in: its record, OCI bundle, cgroups and runner command line, with
 * markers for what differs from one container to the next. The C side lays
 * out the COPY's layer anew from the context (a staging directory), makes the
 * RUN's cache key, and when the step cache has no such step, creates that
 * container over the staging directory and starts its runner, output to
 * files; it passes the runner's control socket to Node (PETRI_EARLY_RUN).
 *
 * Node stays the judge: the builder takes the early run for the step only when
 * the step's cache key is the one the C side made, the container options are
 * the planned ones, and the staging directory is the COPY's layer as Node
 * made it (every entry's type, mode, owner, size and mtime); otherwise, and
 * when the build does not get to that step, the early run is killed and
 * removed unused.
 */

const MARK = '@@petri:';
/** At most this many entries, and bytes of file content, in the COPY's layer. */
const MAX_ENTRIES = 64;
const MAX_BYTES = 8 << 20;

/** One entry of the COPY's layer, as it was unpacked (parents first). */
export interface EarlyEntry {
  path: string;
  type: 'dir' | 'file';
  mode: number;
  uid: number;
  gid: number;
  mtimeNs: string;
  size: number;
  /** A file's content digest (hex). */
  digest?: string;
  /** A directory the COPY made (none below it): its time is the build's own, compared with nothing. */
  fresh?: true;
}

/** The RUN's container: whether it has a resolv.conf copy, its options' hash, and its templates (containerTemplates). */
interface EarlyContainer {
  resolv: boolean;
  options: string;
  config: string;
  record: string;
  args: string[];
  cgroups: string[];
}

/** What the builder notes of a RUN that ran over a COPY's layer (BuildTrace.early). */
export interface EarlyCandidate extends EarlyContainer {
  runStep: number;
  /** The RUN's cache key, the key below it (the COPY's), and its step as hashed (stableJson). */
  key: string;
  parent: string;
  stepText: string;
  tree: EarlyEntry[];
}

/** The plan of an early run (kept in the result cache with the build's record, written beside the replay record). */
export interface EarlyPlan extends EarlyContainer {
  /** The store's index entries of the images the build took (as index.json holds them): none moved since. */
  index: string[];
  copyParent: string;
  copyStep: string;
  copyHash: string;
  files: { label: string; digest: string }[];
  runStep: string;
  tree: (EarlyEntry & { file?: number })[];
}

/** The hash of a RUN container's options with its top layer and resolv.conf copy left out: the same RUN, the same hash. */
export function optionsHash(options: object, lowerTop: string, resolv: string | undefined): string {
  const inJson = (path: string) => JSON.stringify(path).slice(1, -1);
  let text = stableJson(options).split(inJson(lowerTop)).join(`${MARK}LOWER@@`);
  if (resolv !== undefined) text = text.split(inJson(resolv)).join(`${MARK}RESOLV@@`);
  return sha256hex(text);
}

/**
 * The entries of a layer's tree (dirs and regular files only, at most
 * MAX_ENTRIES), or undefined; with the layers below it, its directories
 * that none of them has are marked fresh.
 */
export function layerTree(dir: string, below?: readonly string[], digests = true): EarlyEntry[] | undefined {
  const view = below && new LayeredView(below);
  const out: EarlyEntry[] = [];
  let bytes = 0;
  const walk = (rel: string): boolean => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const path = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(dir, path), { bigint: true });
      const type = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : undefined;
      if (!type || out.length >= MAX_ENTRIES || /[\t\n\\"]/.test(path) || st.nlink > (type === 'dir' ? 1n << 30n : 1n))
        return false;
      const entry: EarlyEntry = {
        path,
        type,
        mode: Number(st.mode & 0o7777n),
        uid: Number(st.uid),
        gid: Number(st.gid),
        mtimeNs: String(st.mtimeNs),
        size: type === 'file' ? Number(st.size) : 0,
      };
      if (type === 'dir' && view && !view.lstat(path)?.isDirectory()) entry.fresh = true;
      if (type === 'file') {
        bytes += entry.size;
        if (bytes > MAX_BYTES) return false;
        if (digests) entry.digest = sha256hex(readFileSync(join(dir, path)));
      }
      out.push(entry);
      if (type === 'dir' && !walk(path)) return false;
    }
    return true;
  };
  try {
    return walk('') && out.length > 0 ? out : undefined;
  } catch {
    return undefined;
  }
}

/** Two trees the same but for file content (the cache key vouches for that). */
function sameTree(a: EarlyEntry[], b: EarlyEntry[]): boolean {
  if (a.length !== b.length) return false;
  return a.every((x, i) => {
    const y = b[i] as EarlyEntry;
    return (
      x.path === y.path &&
      x.type === y.type &&
      x.mode === y.mode &&
      x.uid === y.uid &&
      x.gid === y.gid &&
      (x.mtimeNs === y.mtimeNs || x.fresh || y.fresh) &&
      x.size === y.size
    );
  });
}

/**
 * A RUN container's templates: its files with what differs from one container
 * to the next marked (runner/replay.c fills them in). Undefined when the text
 * holds something that cannot be marked safely.
 */
export function containerTemplates(c: {
  id: string;
  dir: string;
  lowerTop: string;
  resolv: string | undefined;
  config: string;
  record: string;
  args: string[];
  cgroups: string[];
}): Omit<EarlyContainer, 'resolv' | 'options'> | undefined {
  const plain = (s: string) => JSON.stringify(s) === `"${s}"`;
  if (![c.dir, c.lowerTop, c.resolv ?? ''].every(plain)) return undefined;
  const all = [c.config, c.record, ...c.args, ...c.cgroups];
  if (all.some((t) => t.includes(MARK) || t.includes('\0'))) return undefined;
  const mark = (text: string) => {
    let t = text.split(c.dir).join(`${MARK}DIR@@`);
    t = t.split(c.lowerTop).join(`${MARK}LOWER@@`);
    if (c.resolv !== undefined) t = t.split(c.resolv).join(`${MARK}RESOLV@@`);
    return t.split(c.id).join(`${MARK}ID@@`);
  };
  const record = JSON.parse(c.record) as Record<string, unknown>;
  record.createdAt = `${MARK}CREATED@@`;
  record.owner = `${MARK}OWNER@@`;
  const recordText = mark(JSON.stringify(record)).replace(`"${MARK}OWNER@@"`, `${MARK}OWNER@@`);
  const out = { config: mark(c.config), record: recordText, args: c.args.map(mark), cgroups: c.cgroups.map(mark) };
  // Nothing of this build's own (its pid in a working directory's name) may remain.
  const work = c.resolv === undefined ? undefined : c.resolv.slice(0, c.resolv.lastIndexOf('/'));
  const texts = [out.config, out.record, ...out.args, ...out.cgroups];
  if (work && texts.some((t) => t.includes(work))) return undefined;
  if (!out.args.includes(`${MARK}DIR@@`) || !out.config.includes(`${MARK}LOWER@@`)) return undefined;
  return out;
}

/** The early run's plan of a build that ended, from its trace; undefined when it has none. Never throws. */
export function earlyPlan(trace: BuildTrace, context: string): EarlyPlan | undefined {
  try {
    for (const candidate of trace.early ?? []) {
      const plan = planOf(trace, candidate, context);
      if (plan) return plan;
    }
  } catch {
    // none
  }
  return undefined;
}

function planOf(trace: BuildTrace, c: EarlyCandidate, context: string): EarlyPlan | undefined {
  const run = trace.steps.find((s) => s.id === c.runStep);
  if (!run) return undefined;
  const stage = trace.steps.filter((s) => s.stage === run.stage && s.id < run.id);
  const copy = stage.at(-1) as TraceStep | undefined;
  const below = stage.at(-2);
  if (copy?.keyword !== 'COPY' || typeof copy.reads !== 'object' || copy.reads === null) return undefined;
  const reads = copy.reads as TraceCopy;
  // The COPY made the RUN's top layer, on the filesystem its trace names.
  if (below && copy.layers !== below.layers + 1) return undefined;
  if (cacheKey(reads.parent, JSON.parse(reads.step)) !== c.parent) return undefined;
  if (cacheKey(c.parent, JSON.parse(c.stepText)) !== c.key) return undefined;
  // Its files: read by no other step.
  for (const step of trace.steps) {
    if (step.id === copy.id || step.reads === undefined) continue;
    if (step.reads === 'other') return undefined;
    const others = new Set(step.reads.files.map((f) => f.hostPath));
    if (reads.files.some((f) => others.has(f.hostPath))) return undefined;
  }
  const text = reads.lines.join('');
  const content = `sha256:${sha256hex(text)}`;
  if (count(reads.step, `"content":"${content}"`) !== 1) return undefined;
  const lines = [...reads.lines];
  const files: EarlyPlan['files'] = [];
  const tree: EarlyPlan['tree'] = [];
  for (const entry of c.tree) {
    if (entry.type !== 'file') {
      tree.push(entry);
      continue;
    }
    // Each file of the layer is one context file of the COPY, the only one with its content.
    const digest = `sha256:${entry.digest}`;
    const holding = reads.files.filter((f) => f.digest === digest);
    const file = holding[0];
    if (holding.length !== 1 || !file || file.link || reads.digests.filter((d) => d === digest).length !== 1)
      return undefined;
    const label = relative(context, file.hostPath);
    if (label.startsWith('..') || label === '' || sep !== '/' || /[\t\n]/.test(label)) return undefined;
    if (count(lines[file.line] ?? '', `"${digest}"`) !== 1) return undefined;
    const n = files.length;
    lines[file.line] = (lines[file.line] as string).replace(`"${digest}"`, `"sha256:${MARK}digest:${n}@@"`);
    files.push({ label, digest: entry.digest as string });
    tree.push({ ...entry, file: n });
  }
  if (files.length === 0 || files.length !== reads.files.length) return undefined;
  // The images it stood on, as the store's index names them now: a tag moved since, no early run.
  const indexText = readFileSync(join(petriRoot(), 'images', 'index.json'), 'utf8');
  const entries = (JSON.parse(indexText) as { manifests?: { digest?: string }[] }).manifests ?? [];
  const index: string[] = [];
  for (const digest of new Set(trace.bases ?? [])) {
    const texts = entries.filter((e) => e.digest === digest).map((e) => JSON.stringify(e));
    if (texts.length === 0 || texts.some((t) => !indexText.includes(t) || /[\t\n]/.test(t))) return undefined;
    index.push(...texts);
  }
  return {
    index,
    copyParent: reads.parent,
    copyStep: reads.step.replace(`"content":"${content}"`, `"content":"sha256:${MARK}content:0@@"`),
    copyHash: lines.join(''),
    files,
    runStep: c.stepText,
    tree,
    resolv: c.resolv,
    options: c.options,
    config: c.config,
    record: c.record,
    args: c.args,
    cgroups: c.cgroups,
  };
}

/**
 * How this Node sets a copied file's time (copy.ts: lutimesSync(mtimeMs / 1000)):
 * libuv before 1.52 truncates the double's nanoseconds to microseconds, later
 * ones keep them (runner/replay.c lays the COPY's files out so).
 */
function copyTimes(): 'us' | 'ns' {
  const [major = 0, minor = 0] = process.versions.uv.split('.').map(Number);
  return major > 1 || (major === 1 && minor >= 52) ? 'ns' : 'us';
}

/** Writes the plan beside the replay record (`<record>.early`), tied to the record by its checksum; else removes it. */
export function writeEarlyPlan(file: string, recordSum: string, plan: EarlyPlan | undefined): void {
  try {
    if (!plan) {
      rmSync(file, { force: true });
      return;
    }
    const spec = [
      'petri-early 1',
      `parent\t${plan.copyParent}`,
      ...plan.index.map((entry) => `index\t${entry}`),
      `containers\t${containersDir()}`,
      `layers\t${join(petriRoot(), 'layers')}`,
      ...plan.files.map((f) => `src\t${f.digest}\t${f.label}`),
      ...plan.tree.map(
        (e) =>
          `${e.type}\t${e.mode}\t${e.uid}\t${e.gid}\t${e.fresh ? 'now' : e.mtimeNs}\t${e.file ?? '-'}\t${e.digest ?? '-'}\t${e.path}`,
      ),
      `resolv\t${plan.resolv ? 1 : 0}`,
      `mtimes\t${copyTimes()}`,
      `options\t${plan.options}`,
      ...plan.cgroups.map((c) => `cgroup\t${c}`),
    ].join('\n');
    const fields = [recordSum, `${spec}\n`, plan.copyStep, plan.copyHash, plan.runStep, plan.config, plan.record];
    fields.push(plan.args.join('\0'));
    const body = Buffer.concat(
      fields.flatMap((field) => {
        const bytes = Buffer.from(field);
        return [Buffer.from(`${bytes.length}\n`), bytes, Buffer.from('\n')];
      }),
    );
    const head = Buffer.from(`petri-early 1 ${sha256hex(body)}\n`);
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, Buffer.concat([head, body]));
    renameSync(tmp, file);
  } catch {
    // no early run next time
  }
}

/** The result of an early run's runner, from its control socket's events. */
interface EarlyExit {
  exitCode: number;
  signal: number | null;
  /** Whether the command started (then a run that ended without its exit is the step's failure, not redone). */
  started: boolean;
  error?: string;
  upper?: { plain: boolean; entries?: number };
}

/** An early run handed to this process (PETRI_EARLY_RUN), until the builder takes it or drops it. */
export class EarlyRun {
  readonly id: string;
  readonly dir: string;
  readonly staging: string;
  readonly key: string;
  readonly options: string;
  readonly #fd: number;
  #taken = false;
  #events: Promise<string> | undefined;
  #done: Promise<void> | undefined;

  private constructor(fd: number, id: string, staging: string, key: string, options: string, dir: string) {
    this.#fd = fd;
    this.id = id;
    this.staging = staging;
    this.key = key;
    this.options = options;
    this.dir = dir;
  }

  /** The early run the environment names (once: the variable is removed), or undefined. */
  static fromEnv(containersDir: string): EarlyRun | undefined {
    const value = process.env.PETRI_EARLY_RUN;
    if (value === undefined) return undefined;
    delete process.env.PETRI_EARLY_RUN;
    const m = /^(\d+):([0-9a-f]{12}):(\/[^\0:]+):(sha256:[0-9a-f]{64}):([0-9a-f]{64})$/.exec(value);
    if (!m) return undefined;
    const [, given, id, staging, key, options] = m as unknown as [string, string, string, string, string, string];
    // The pipe's read end, opened again close-on-exec (as Node opens files): no other child of this process
    // holds it. The inherited one is closed.
    let fd: number;
    try {
      fd = openSync(`/proc/self/fd/${given}`, 'r');
    } catch {
      fd = Number(given);
    }
    if (fd !== Number(given)) closeSync(Number(given));
    const run = new EarlyRun(fd, id, staging, key, options, join(containersDir, id));
    // Its runner's events, read from now on (a thread waits for the pipe's end: the runner's exit).
    run.#events = new Promise<string>((resolve, reject) =>
      readFile(run.#fd, 'utf8', (error, text) => (error ? reject(error) : resolve(text))),
    ).finally(() => {
      try {
        closeSync(run.#fd);
      } catch {
        // closed
      }
    });
    run.#events.catch(() => {});
    return run;
  }

  /**
   * The early run, when it is the one the builder is about to start: the same
   * step key and container options, over the COPY layer `lowerTop` as
   * unpacked here (`lower`: top first), with the same resolv.conf copy
   * (`resolv`). Taken once.
   */
  take(key: string, options: string, lower: readonly string[], resolv: Buffer | undefined): boolean {
    if (this.#taken || key !== this.key || options !== this.options) return false;
    // Content is the cache key's (the C side hashed what it laid out); the rest is compared here.
    const staged = layerTree(join(this.staging, 'fs'), undefined, false);
    const own = layerTree(lower[0] as string, lower.slice(1), false);
    if (!staged || !own || !sameTree(staged, own)) return false;
    let copy: Buffer | undefined;
    try {
      copy = readFileSync(join(this.staging, 'resolv.conf'));
    } catch {
      copy = undefined;
    }
    if ((resolv === undefined) !== (copy === undefined) || (resolv && copy && !resolv.equals(copy))) return false;
    this.#taken = true;
    return true;
  }

  /** Paths of the staging directory as the container saw them (its top layer, its resolv.conf copy). */
  get lowerTop(): string {
    return join(this.staging, 'fs');
  }

  get resolvPath(): string {
    return join(this.staging, 'resolv.conf');
  }

  /** How the runner ended (once it has), from its events. */
  async exit(): Promise<EarlyExit> {
    let text = '';
    try {
      text = await (this.#events as Promise<string>);
    } catch {
      // no events: a runner that failed to start
    }
    const exit: EarlyExit = {
      exitCode: 125,
      signal: null,
      started: false,
      error: 'petri-runner ended without an exit event',
    };
    for (const line of text.split('\n')) {
      if (!line.startsWith('{')) continue;
      let event: Record<string, unknown>;
      try {
        event = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if (event.event === 'started') exit.started = true;
      else if (event.event === 'upper')
        exit.upper = {
          plain: event.plain === true,
          ...(typeof event.entries === 'number' ? { entries: event.entries } : {}),
        };
      else if (event.event === 'error') exit.error = String(event.message ?? 'unknown error');
      else if (event.event === 'exit') {
        exit.exitCode = typeof event.exitCode === 'number' ? event.exitCode : 0;
        exit.signal = typeof event.signal === 'number' ? event.signal : null;
        if (!text.includes('"event":"error"')) delete exit.error;
      }
    }
    return exit;
  }

  /** The runner's command line (without its control fd), as the C side wrote it down. */
  args(): string[] {
    try {
      return readFileSync(join(this.staging, 'args'), 'utf8').split('\0');
    } catch {
      return [];
    }
  }

  /** What the command wrote (files in the staging directory). */
  output(stream: 'stdout' | 'stderr'): string {
    try {
      return readFileSync(join(this.staging, stream), 'utf8');
    } catch {
      return '';
    }
  }

  /**
   * A taken run's cgroups, its runner gone (they are empty): removed here, as
   * the runtime's removeCgroups would, with the `petri` parent when it is
   * left empty; else, or when one is still busy, by the runtime (its module
   * is not loaded on the build's path otherwise).
   */
  async #removeCgroups(cgroups: string[]): Promise<void> {
    if (this.#taken) {
      await this.exit();
      let busy = false;
      for (const dir of cgroups) {
        await rmdir(dir).catch((error: NodeJS.ErrnoException) => {
          if (error.code !== 'ENOENT') busy = true;
        });
      }
      if (!busy) {
        for (const parent of new Set(cgroups.map((dir) => dirname(dir))))
          if (basename(parent) === 'petri') await rmdir(parent).catch(() => {});
        return;
      }
    }
    const { killCgroups, removeCgroups } = await import('../runtime/cgroups/index.js');
    if (!this.#taken) killCgroups(cgroups);
    await this.exit();
    await removeCgroups(cgroups).catch(() => {});
  }

  /** Removes it now when it is for this step key but was not taken (or the step is cached): it must not run on. */
  drop(key: string): void {
    if (!this.#taken && key === this.key) void this.remove().catch(() => {});
  }

  /** Kills what still runs (an early run not taken), waits for the runner, and removes the container and the staging directory. */
  remove(): Promise<void> {
    this.#done ??= (async () => {
      // Its record names its cgroups; the C side writes it before it makes them. Not there yet (this process
      // was quick): wait for it, or for the end of the run (the C side failed, or was done and undid it).
      let ended = false;
      void this.exit().then(() => {
        ended = true;
      });
      const record = join(this.dir, 'record.json');
      for (let i = 0; !this.#taken && !ended && !existsSync(record) && i < 2000; i++) await sleep(5);
      await this.#removeCgroups(this.#cgroups());
      removeTree(this.dir);
      removeTree(this.staging);
    })();
    return this.#done;
  }

  #cgroups(): string[] {
    try {
      return (JSON.parse(readFileSync(join(this.dir, 'record.json'), 'utf8')) as { cgroupDirs: string[] }).cgroupDirs;
    } catch {
      return []; // no record: the C side made no cgroups
    }
  }
}
