import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { petriRoot } from '../runtime/paths.js';
import { fnvName } from '../util/fnv.js';
import type { DeltaPlan } from './delta.js';
import type { EarlyPlan } from './early.js';
import type { BuildEvent } from './events.js';

/**
 * The build's own result cache, for `petri build` (the CLI): a build whose
 * every step was cached is remembered with what it depended on, so that the
 * same build again, with nothing changed, answers without loading the
 * builder, parsing the Dockerfile or hashing the context: a few stat calls.
 *
 * What it depended on, all of which must be exactly as they were:
 *  - the inputs: context and Dockerfile paths, target, build args, tags,
 *    SOURCE_DATE_EPOCH, and this petri (its version and bundle);
 *  - every file in the context (and the Dockerfile and its
 *    `Dockerfile.dockerignore`) by its lstat: type, mode, owner, size, inode,
 *    mtime and ctime in nanoseconds (a write, chmod, chown or rename changes
 *    ctime, which nobody can set back);
 *  - the image store's index.json, byte for byte: every name the build
 *    resolved (FROM, COPY --from) and the tags it set are as they were.
 *
 * Anything else (a touched file, another tag, a pull) falls back to the
 * builder, whose step cache decides as BuildKit does. Every successful build
 * is remembered (a --no-cache one too: its steps are in the step cache now).
 * Builds with --no-cache are never answered here, nor are builds with
 * --pull always, secrets or registry caches, or with ADD of a URL. Records
 * live in `$PETRI_ROOT/build-cache/results/`.
 */

const VERSION = 1;
/** A context with more entries than this is not fingerprinted (the builder's cache handles it). */
const MAX_ENTRIES = 20_000;
/** The steps that make a layer: in a fully cached build each of them says `cached`. */
const LAYER_STEP = /^(RUN|COPY|ADD|WORKDIR)\b/i;
/** How close to the fingerprint a file's change makes it "racy" (timestamps move by clock ticks). */
const RACY_NS = 100_000_000n;

/**
 * Whether a Dockerfile may download something on each build (an ADD of a URL
 * or a git repository, or an ADD whose source comes from a variable): such a
 * build is never remembered, as BuildKit checks those sources every time.
 */
function fetchesUrls(dockerfile: string): boolean {
  return dockerfile
    .replace(/\\\r?\n/g, ' ')
    .split('\n')
    .some((line) => /^\s*(ONBUILD\s+)?ADD\b/i.test(line) && /:\/\/|git@|\$/.test(line));
}

export interface ResultInputs {
  context: string;
  dockerfile: string;
  target?: string;
  buildArgs: Record<string, string>;
  tags: string[];
  /** What tells this petri apart from another build of it (version, bundle file's mtime). */
  petri: string;
}

interface ResultRecord {
  key: string;
  files: string;
  index: string;
  id: string;
  manifestDigest: string;
  tags: string[];
  events: BuildEvent[];
  /** What a replay record's delta needs (delta.ts), when the build has one. */
  delta?: DeltaPlan;
  /** What an early run of one of its RUN steps needs (early.ts), when the build has one. */
  early?: EarlyPlan;
}

export interface ResultHit {
  id: string;
  manifestDigest: string;
  tags: string[];
  events: BuildEvent[];
}

/** What a hit or a remembered build stood on, and what it showed: for a replay record (replay.ts). */
export type ResultState = Omit<ResultRecord, 'key'>;

export class ResultCache {
  /** Set by a hit (`lookup`) or by `remember` once it has written its record. */
  verified: ResultState | undefined;
  readonly #key: string;
  readonly #file: string;
  readonly #context: string;
  readonly #dockerfile: string;
  readonly #indexFile: string;
  readonly #blobs: string;
  #before: { files: string | undefined; index: string; at: bigint } | undefined;
  /** The newest ctime the last fingerprint saw (ns). */
  #newest = 0n;

  constructor(inputs: ResultInputs, root = petriRoot()) {
    this.#key = JSON.stringify([
      VERSION,
      inputs.petri,
      inputs.context,
      inputs.dockerfile,
      inputs.target ?? null,
      Object.entries(inputs.buildArgs).sort(([a], [b]) => (a < b ? -1 : 1)),
      [...inputs.tags].sort(),
      process.env.SOURCE_DATE_EPOCH ?? null,
    ]);
    this.#file = join(root, 'build-cache', 'results', `${fnvName(this.#key)}.json`);
    this.#context = inputs.context;
    this.#dockerfile = inputs.dockerfile;
    this.#indexFile = join(root, 'images', 'index.json');
    this.#blobs = join(root, 'images', 'blobs');
  }

  /** Notes the context and the store's index as they are before a build (what `remember` records). */
  begin(): void {
    const at = BigInt(Date.now()) * 1_000_000n;
    this.#before = { files: this.#fingerprint(), index: readText(this.#indexFile) ?? '', at };
  }

  /** The remembered result when nothing it depended on changed; else undefined (then build, and `remember`). */
  lookup(): ResultHit | undefined {
    this.begin();
    const now = this.#before as { files: string | undefined; index: string; at: bigint };
    if (now.files === undefined) return undefined;
    const text = readText(this.#file);
    if (text === undefined) return undefined;
    let record: ResultRecord;
    try {
      record = JSON.parse(text) as ResultRecord;
    } catch {
      return undefined;
    }
    if (record.key !== this.#key || record.files !== now.files || record.index !== now.index) return undefined;
    const hex = /^sha256:([a-f0-9]{64})$/.exec(record.manifestDigest)?.[1];
    if (!hex || !existsSync(join(this.#blobs, 'sha256', hex))) return undefined;
    this.verified = record; // its files and index are now's: compared above
    return { id: record.id, manifestDigest: record.manifestDigest, tags: record.tags, events: record.events };
  }

  /**
   * After a successful build: remembers it, as the same build again would now
   * find every step in the step cache. Its steps are recorded as that build
   * would show them (layer steps `CACHED`, no output). Not when something
   * came from a URL, or when the context, or the store's index other than
   * this build's own tags, changed while it ran. Never throws: the cache is
   * an optimisation.
   */
  remember(
    events: BuildEvent[],
    result: { id: string; manifestDigest: string; tags: string[] },
    delta?: DeltaPlan,
    early?: EarlyPlan,
  ): void {
    const before = this.#before;
    if (!before || before.files === undefined) return;
    const steps = events.filter((e): e is Extract<BuildEvent, { type: 'step' }> => e.type === 'step');
    if (steps.some((e) => /^ADD\b.*\bhttps?:\/\//i.test(e.text) || e.status === 'error')) return;
    if (events.some((e) => e.type === 'cache')) return;
    // A file changed within a clock tick of the fingerprint could change again with the same lstat: git's
    // "racily clean" case. Not remembered then (the next build is).
    if (this.#newest > before.at - RACY_NS) return;
    if (fetchesUrls(readText(this.#dockerfile) ?? '')) return;
    try {
      const after = readText(this.#indexFile) ?? '';
      if (this.#fingerprint() !== before.files || !sameBesides(before.index, after, result.tags)) return;
      const record: ResultRecord = {
        key: this.#key,
        files: before.files,
        index: after,
        id: result.id,
        manifestDigest: result.manifestDigest,
        tags: result.tags,
        events: events.flatMap((e): BuildEvent[] => {
          if (e.type === 'warning') return [e];
          if (e.type !== 'step') return [];
          if (LAYER_STEP.test(e.text) && e.status === 'done') {
            const { early: _, ...step } = e;
            return [{ ...step, status: 'cached', durationMs: 0 }];
          }
          return [e];
        }),
        ...(delta ? { delta } : {}),
        ...(early ? { early } : {}),
      };
      mkdirSync(join(this.#file, '..'), { recursive: true });
      const tmp = `${this.#file}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify(record));
      renameSync(tmp, this.#file);
      this.verified = record;
    } catch {
      // not remembered: the next build asks the builder again
    }
  }

  /** The lstat of every entry of the context, the Dockerfile and its .dockerignore; undefined for a context too big. */
  #fingerprint(): string | undefined {
    const lines: string[] = [];
    const add = (label: string, path: string): boolean => {
      let st: import('node:fs').BigIntStats;
      try {
        st = lstatSync(path, { bigint: true });
      } catch {
        lines.push(`${label}\0-`);
        return false;
      }
      lines.push(
        `${label}\0${st.mode}\0${st.uid}\0${st.gid}\0${st.size}\0${st.dev}\0${st.ino}\0${st.mtimeNs}\0${st.ctimeNs}`,
      );
      // ctime: every write, chmod or rename sets it to now (an mtime can be set to anything).
      if (st.ctimeNs > this.#newest) this.#newest = st.ctimeNs;
      return st.isDirectory();
    };
    this.#newest = 0n;
    // The Dockerfile and its .dockerignore are read through symlinks: their targets count too.
    for (const [label, path] of [
      ['@dockerfile', this.#dockerfile],
      ['@dockerignore', `${this.#dockerfile}.dockerignore`],
    ] as const) {
      if (add(label, path) || lines.at(-1)?.endsWith('\0-')) continue;
      if (lstatSync(path).isSymbolicLink()) {
        try {
          add(`${label}-target`, realpathSync(path));
        } catch {
          lines.push(`${label}-target\0-`);
        }
      }
    }
    if (!add('.', this.#context)) return undefined;
    const walk = (dir: string, rel: string): boolean => {
      let names: string[];
      try {
        names = readdirSync(dir).sort();
      } catch {
        return false;
      }
      for (const name of names) {
        if (lines.length > MAX_ENTRIES) return false;
        const path = join(dir, name);
        const relPath = rel ? `${rel}/${name}` : name;
        if (add(relPath, path) && !walk(path, relPath)) return false;
      }
      return true;
    };
    return walk(this.#context, '') ? lines.join('\n') : undefined;
  }
}

/** Whether two index.json texts name the same images, once the entries named by `tags` are left out of both. */
function sameBesides(before: string, after: string, tags: string[]): boolean {
  if (before === after) return true;
  const others = (text: string): string | undefined => {
    try {
      const index = JSON.parse(text) as { manifests?: { annotations?: Record<string, string> }[] };
      const name = (m: { annotations?: Record<string, string> }) =>
        m.annotations?.['org.opencontainers.image.ref.name'];
      return JSON.stringify((index.manifests ?? []).filter((m) => !tags.includes(name(m) ?? '')));
    } catch {
      return undefined;
    }
  };
  const a = others(before);
  return a !== undefined && a === others(after);
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}
