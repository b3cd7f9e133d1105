import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { namedEntry } from '../image/layout.js';
import { MEDIA_TYPES, REF_NAME_ANNOTATION } from '../image/types.js';
import { petriRoot } from '../runtime/paths.js';
import { buildEpoch, cacheKey } from './cache.js';
import type { BuildEvent } from './events.js';
import { progressRenderer } from './progress.js';

/**
 * The delta of a replay record: what lets `petri-runner replay` (runner/replay.c)
 * redo, in C, a build whose only change is the content of files that its last
 * COPY steps alone read from the context. For each such COPY the C side swaps
 * the new content into the old layer's tar (same headers, new size and
 * checksum) and hashes it, makes the step's cache key again from templates
 * made here (the selection's hash with the files' new digests, the step on the
 * key below), and asks the step cache as the builder would: a record means
 * the step is cached (its layer and time), none that it is redone (now), and
 * its record is written. Then the config, manifest and index from templates.
 * What a build in Node would have done, as the tests check, but for one thing:
 * no unpacked copy of a new layer in the layer cache (unpacked when first run).
 *
 * The tail: the target stage's last steps, each a COPY from the context (not
 * ADD, which may unpack what it reads) or a step that makes no layer (ENV,
 * LABEL, CMD …), from the first such COPY on; no later COPY with `--chown` by
 * name (it reads /etc/passwd, which an earlier one may write). A file is in
 * the delta when a tail COPY copied it, no other step of the build read it
 * (another COPY or ADD from the context, a RUN with the context bind-mounted:
 * then no delta at all), and its layer entry is certain: the only entry of
 * that layer with its content, and no other file or heredoc of that COPY with
 * the same content, its mtime clamped to SOURCE_DATE_EPOCH.
 */

/** What a build traced (BuildOptions.trace): each step in the order it ended, and what it read of the context. */
export interface BuildTrace {
  target?: number;
  /** The keys of the step-cache records the target's layers and times came from, top down. */
  chain?: string[];
  steps: TraceStep[];
  /** Step id → what a context COPY selected, or 'other' for a step that read the context otherwise. */
  reads: Map<number, TraceRead>;
  /** RUN steps that ran over a context COPY's layer: what an early run of them needs (early.ts). */
  early?: import('./early.js').EarlyCandidate[];
  /** The manifest digests of the images the build took from the store (FROM, COPY --from, RUN --mount from). */
  bases?: string[];
}

export interface TraceStep {
  id: number;
  stage: number;
  keyword: string;
  /** The stage's layer and history counts after the step. */
  layers: number;
  history: number;
  reads?: TraceRead;
}

/** A context file a COPY selected (`line`: its entry's index in the selection). */
export interface TraceFile {
  hostPath: string;
  digest: string;
  size: number;
  line: number;
  /** One of several hard links: the layer may hold a link entry. */
  link?: true;
}

/** A context COPY: its files, the digests of all its files (heredocs too), and how its cache key was made. */
export interface TraceCopy {
  files: TraceFile[];
  digests: string[];
  /** What its content hash hashed (copy.ts: selectionLines), the key of the filesystem below it, its step (stableJson). */
  lines: string[];
  parent: string;
  step: string;
  createdBy: string;
  /** `--chown` by name: resolved in the /etc/passwd and /etc/group below it. */
  namedChown: boolean;
}

export type TraceRead = 'other' | TraceCopy;

/** What the result cache keeps for the replay record's delta (JSON). */
export interface DeltaPlan {
  /** The cache key of the filesystem below the tail's first COPY. */
  parent: string;
  /** The keys of the step-cache records below it (the builder reads them again: so does the runner). */
  below: string[];
  /**
   * Each COPY of the tail: its step id, its layer's index in the image, its first history entry's index, and
   * its cache key's making with `@@petri:digest:N@@` (plan.files[N]'s content) and `@@petri:content:G@@`.
   */
  groups: {
    step: number;
    layer: number;
    history: number;
    stepTemplate: string;
    hashTemplate: string;
    createdBy: string;
  }[];
  /** The files in the delta: context-relative path, group, its tar header's offset in the group's layer, its digest. */
  files: { label: string; group: number; offset: number; digest: string }[];
}

/** The most COPY steps and files a delta has (runner/replay.c: MAX_GROUPS, MAX_FILES). */
const MAX_GROUPS = 4;
const MAX_FILES = 64;
/** Tail layers bigger than this together are not patched (each delta reads and writes them whole). */
const MAX_TAIL_BYTES = 8 << 20;
/** A COPY selecting more than this (its cache key's input) has no delta. */
const MAX_SELECTION_TEXT = 256 << 10;
const META = new Set([
  'ARG',
  'ENV',
  'LABEL',
  'MAINTAINER',
  'EXPOSE',
  'VOLUME',
  'STOPSIGNAL',
  'USER',
  'SHELL',
  'ONBUILD',
  'CMD',
  'ENTRYPOINT',
  'HEALTHCHECK',
]);
const LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';
const MARK = '@@petri:';
export const sha256hex = (text: string | Buffer) => createHash('sha256').update(text).digest('hex');
/** How often `part` occurs in `text`. */
export const count = (text: string, part: string) => text.split(part).length - 1;

/** The delta plan of a build that ended with `manifestDigest`, or undefined when it has none. Never throws. */
export function deltaPlan(trace: BuildTrace, manifestDigest: string, context: string): DeltaPlan | undefined {
  try {
    return plan(trace, manifestDigest, context);
  } catch {
    return undefined;
  }
}

function plan(trace: BuildTrace, manifestDigest: string, context: string): DeltaPlan | undefined {
  const steps = trace.steps.filter((s) => s.stage === trace.target);
  let start = steps.length;
  while (start > 0) {
    const step = steps[start - 1] as TraceStep;
    const before = steps[start - 2];
    const copy = step.keyword === 'COPY' && typeof step.reads === 'object';
    const meta = META.has(step.keyword) && step.reads === undefined && before?.layers === step.layers;
    if (!copy && !meta) break;
    start--;
  }
  while (start < steps.length && steps[start]?.keyword !== 'COPY') start++;
  const tail = steps.slice(start);
  if (tail.length === 0 || start === 0) return undefined;
  const copies = tail.filter((s) => s.keyword === 'COPY');
  // A later COPY's --chown by name reads /etc/passwd and /etc/group, which an earlier one may have written.
  if (copies.length > MAX_GROUPS || copies.slice(1).some((s) => (s.reads as TraceCopy).namedChown)) return undefined;
  const tailIds = new Set(tail.map((s) => s.id));
  const elsewhere = new Set<string>();
  for (const step of trace.steps) {
    if (tailIds.has(step.id) || step.reads === undefined) continue;
    if (step.reads === 'other') return undefined;
    for (const file of step.reads.files) elsewhere.add(file.hostPath);
  }
  const store = join(petriRoot(), 'images', 'blobs', 'sha256');
  const blob = (digest: string) => readFileSync(join(store, digest.replace(/^sha256:/, '')));
  const manifest = JSON.parse(blob(manifestDigest).toString('utf8')) as {
    config: { digest: string };
    layers: { digest: string; mediaType: string; size: number }[];
  };
  const config = JSON.parse(blob(manifest.config.digest).toString('utf8')) as { rootfs: { diff_ids: string[] } };
  const epoch = buildEpoch();
  const result: DeltaPlan = { parent: '', below: [], groups: [], files: [] };
  let bytes = 0;
  let previous = steps[start - 1] as TraceStep;
  let below: TraceCopy | undefined;
  for (const step of tail) {
    if (step.keyword === 'COPY') {
      const reads = step.reads as TraceCopy;
      const layer = step.layers - 1;
      const ref = manifest.layers[layer];
      // Every tail COPY made a layer, uncompressed (its digest is its diffID), as the image's last ones.
      if (step.layers !== previous.layers + 1 || !ref || ref.mediaType !== LAYER_TAR) return undefined;
      if (config.rootfs.diff_ids[layer] !== ref.digest || step.layers > manifest.layers.length) return undefined;
      bytes += ref.size;
      const text = reads.lines.join('');
      if (bytes > MAX_TAIL_BYTES || text.length > MAX_SELECTION_TEXT) return undefined;
      // Its key is made on the one below (ENV, LABEL … change no filesystem).
      if (below ? reads.parent !== cacheKey(below.parent, JSON.parse(below.step)) : false) return undefined;
      if (!below) result.parent = reads.parent;
      below = reads;
      const content = `sha256:${sha256hex(text)}`;
      if (count(reads.step, `"content":"${content}"`) !== 1) return undefined;
      const group = result.groups.length;
      const entries = tarEntries(blob(ref.digest));
      const found: { label: string; offset: number; digest: string; line: number }[] = [];
      for (const file of reads.files) {
        const label = relative(context, file.hostPath);
        if (label.startsWith('..') || label === '' || label === '.dockerignore' || /[\t\n]/.test(label)) continue;
        if (sep !== '/' || file.link || elsewhere.has(file.hostPath)) continue;
        // Certain only when one file of this COPY (heredocs too) has this content and one entry of its layer holds it.
        if (reads.digests.filter((d) => d === file.digest).length !== 1) continue;
        const holding = entries.filter((e) => e.digest === file.digest);
        const entry = holding[0];
        if (holding.length !== 1 || !entry || !entry.patchable || entry.mtime !== epoch) continue;
        if (entry.size !== file.size || count(reads.lines[file.line] ?? '', `"${file.digest}"`) !== 1) continue;
        found.push({ label, offset: entry.offset, digest: file.digest, line: file.line });
      }
      // In the layer's order (runner/replay.c patches from its start).
      found.sort((a, b) => a.offset - b.offset);
      const lines = [...reads.lines];
      for (const file of found.slice(0, Math.max(0, MAX_FILES - result.files.length))) {
        const n = result.files.length;
        result.files.push({ label: file.label, group, offset: file.offset, digest: file.digest.slice(7) });
        lines[file.line] = (lines[file.line] as string).replace(`"${file.digest}"`, `"sha256:${MARK}digest:${n}@@"`);
      }
      result.groups.push({
        step: step.id,
        layer,
        history: previous.history,
        stepTemplate: reads.step.replace(`"content":"${content}"`, `"content":"sha256:${MARK}content:${group}@@"`),
        hashTemplate: lines.join(''),
        createdBy: reads.createdBy,
      });
    }
    previous = step;
  }
  if (result.files.length === 0 || !trace.chain) return undefined;
  const at = trace.chain.indexOf(result.parent);
  if (at >= 0) result.below = trace.chain.slice(at);
  else if (trace.chain.length > result.groups.length) return undefined; // the chain must hold every layer step
  // The tail's layers are the image's last ones.
  if ((result.groups.at(-1) as { layer: number }).layer !== manifest.layers.length - 1) return undefined;
  return result;
}

interface TarEntry {
  offset: number;
  type: string;
  size: number;
  mtime: number;
  /** A plain ustar header for a regular file (no pax or GNU header before it, an octal size). */
  patchable: boolean;
  digest?: string;
}

/** The entries of an uncompressed tar (regular files with their content's digest). */
function tarEntries(tar: Buffer): TarEntry[] {
  const entries: TarEntry[] = [];
  let offset = 0;
  let extended = false;
  while (offset + 512 <= tar.length) {
    const header = tar.subarray(offset, offset + 512);
    if (header.every((b) => b === 0)) break;
    const type = String.fromCharCode(header[156] || 0x30);
    const octalSize = (header[124] as number) < 0x80;
    const size = octalSize ? Number.parseInt(header.toString('latin1', 124, 136).trim() || '0', 8) : Number.NaN;
    const mtime = Number.parseInt(header.toString('latin1', 136, 148).trim() || '0', 8);
    if (!Number.isFinite(size)) return [];
    const entry: TarEntry = { offset, type, size, mtime, patchable: type === '0' && !extended && octalSize };
    if (type === '0') entry.digest = `sha256:${sha256hex(tar.subarray(offset + 512, offset + 512 + size))}`;
    entries.push(entry);
    extended = type === 'x' || type === 'L' || type === 'K';
    offset += 512 + Math.ceil(size / 512) * 512;
  }
  return entries;
}

/** `text` with its `@@petri:NAME@@` markers replaced, as runner/replay.c does (undefined for one not in `values`). */
function expand(text: string, values: Record<string, string>): string | undefined {
  let missing = false;
  const out = text.replace(/@@petri:([a-z0-9:-]+)@@/g, (_m, name: string) => {
    const value = values[name];
    if (value === undefined) missing = true;
    return value ?? '';
  });
  return missing ? undefined : out;
}

/** The fields a replay record's delta adds (runner/replay.c reads them in this order), or undefined. */
export function deltaFields(
  plan: DeltaPlan,
  state: {
    index: string;
    manifestDigest: string;
    id: string;
    tags: string[];
    events: BuildEvent[];
    files: string;
  },
  mode: 'plain' | 'json' | 'quiet',
  sentinelMs: number,
  err: string,
  root = petriRoot(),
): (string | Buffer)[] | undefined {
  const blobs = join(root, 'images', 'blobs', 'sha256');
  const text = (digest: string) => readFileSync(join(blobs, digest.replace(/^sha256:/, '')), 'utf8');
  const manifestText = text(state.manifestDigest);
  const manifest = JSON.parse(manifestText) as {
    config: { digest: string; size: number };
    layers: { digest: string; size: number }[];
  };
  const configText = text(manifest.config.digest);
  const config = JSON.parse(configText) as {
    created?: string;
    architecture: string;
    os: string;
    variant?: string;
    rootfs: { diff_ids: string[] };
    history?: { created?: string }[];
  };
  if (JSON.stringify(manifest) !== manifestText || JSON.stringify(config) !== configText) return undefined;
  const index = JSON.parse(state.index) as { manifests: { digest: string; size: number; annotations?: object }[] };
  if (JSON.stringify(index) !== state.index) return undefined;
  if ([manifestText, configText, state.index, err].some((t) => t.includes(MARK))) return undefined;
  // runner/replay.c reads the fingerprint line by line: a name with a newline in it would split one.
  const wellFormed = /^[^\0\n]*\0(-|\d+\0\d+\0\d+\0\d+\0\d+\0\d+\0\d+\0\d+)$/;
  if (!state.files.split('\n').every((line) => wellFormed.test(line))) return undefined;

  const history = config.history ?? [];
  const epoch = buildEpoch();
  const lines = ['petri-delta 1', 'full 1', `epoch\t${epoch}`, `parent\t${plan.parent}`];
  // The records below the tail, as they are: another build may rewrite one (--no-cache) without a tag moving.
  const below = createHash('sha256');
  for (const key of plan.below) {
    below
      .update(`${key}\n`)
      .update(readFileSync(join(root, 'build-cache', 'steps', key.slice(7))))
      .update('\n');
    lines.push(`below\t${key.slice(7)}`);
  }
  lines.push(`belowhash\t${below.digest('hex')}`);
  const values: Record<string, string> = {};
  for (const [n, file] of plan.files.entries()) values[`digest:${n}`] = file.digest;
  const recordTemplates: string[] = [];
  let parent = plan.parent;
  let lastCreated = '';
  for (const [g, group] of plan.groups.entries()) {
    const layer = manifest.layers[group.layer] as { digest: string; size: number };
    const end = plan.groups[g + 1]?.history ?? history.length;
    const created = history[group.history]?.created;
    if (!created || !/^[\d:.TZ-]+$/.test(created)) return undefined;
    for (let h = group.history; h < end; h++) {
      const entry = history[h];
      if (!entry || entry.created !== created) return undefined; // the steps after a COPY take its time
      entry.created = `${MARK}created:${g}@@`;
    }
    config.rootfs.diff_ids[group.layer] = `sha256:${MARK}layer:${g}@@`;
    manifest.layers[group.layer] = { ...layer, digest: `sha256:${MARK}layer:${g}@@`, size: -(g + 1) };
    lines.push(`group\t${layer.digest.slice(7)}\t${layer.size}\t${created}`);
    lastCreated = created;
    // The step's cache record, as BuildCache.set writes it; the templates must give back the key and record
    // this build used.
    const record = JSON.stringify({
      layer: {
        digest: `sha256:${MARK}layer:${g}@@`,
        size: -1,
        mediaType: LAYER_TAR,
        diffId: `sha256:${MARK}layer:${g}@@`,
      },
      created: `${MARK}created:${g}@@`,
      createdBy: group.createdBy,
    }).replace('"size":-1', `"size":${MARK}layer-size:${g}@@`);
    const hashText = expand(group.hashTemplate, values);
    values[`content:${g}`] = hashText === undefined ? '' : sha256hex(hashText);
    const stepText = expand(group.stepTemplate, values);
    if (hashText === undefined || stepText === undefined) return undefined;
    const key = `sha256:${sha256hex(`${parent}\0${stepText}`)}`;
    const actual = { ...values, [`layer:${g}`]: layer.digest.slice(7), [`layer-size:${g}`]: String(layer.size) };
    const onDisk = readFileSync(join(root, 'build-cache', 'steps', key.slice(7)), 'utf8');
    if (expand(record, { ...actual, [`created:${g}`]: created }) !== onDisk) return undefined;
    recordTemplates.push(record);
    parent = key;
  }
  // The image's time is its last step's.
  if (config.created !== undefined) {
    if (config.created !== lastCreated) return undefined;
    config.created = `${MARK}created:${plan.groups.length - 1}@@`;
  }
  for (const file of plan.files) {
    lines.push(`file\t${file.group}\t${file.offset}\t${file.digest}\t${file.label}`);
  }
  manifest.config = { ...manifest.config, digest: `sha256:${MARK}id@@`, size: -1000 };
  // Sizes are numbers: their markers go in without quotes.
  const sizes = (json: string) =>
    json.replace(/"size":-(\d+)/g, (_m, n: string) =>
      n === '1000' ? `"size":${MARK}config-size@@` : `"size":${MARK}layer-size:${Number(n) - 1}@@`,
    );
  // The tags move to the new manifest, last in the index, as ImageStore.tag leaves them (each name once).
  const tags = [...new Set(state.tags)];
  const ref = (m: { annotations?: object }) =>
    (m.annotations as Record<string, string> | undefined)?.[REF_NAME_ANNOTATION];
  if (!tags.every((tag) => index.manifests.some((m) => ref(m) === tag && m.digest === state.manifestDigest))) {
    return undefined;
  }
  const platform = config.variant
    ? { architecture: config.architecture, os: config.os, variant: config.variant }
    : { architecture: config.architecture, os: config.os };
  const descriptor = {
    mediaType: MEDIA_TYPES.ociManifest,
    digest: `sha256:${MARK}manifest@@`,
    size: -1,
    platform,
  };
  index.manifests = [
    ...index.manifests.filter((m) => !tags.includes(ref(m) ?? '')),
    ...tags.map((tag) => namedEntry(descriptor, tag)),
  ];
  const indexTemplate = JSON.stringify(index).replace(/"size":-1\b/g, `"size":${MARK}manifest-size@@`);

  // stderr in pieces: before the tail, each group as cached and as redone, and the image line either way.
  const pieces: string[] = [];
  const render = progressRenderer(mode, { write: (t: string) => void pieces.push(t) });
  const chunk = (event: BuildEvent): string => {
    pieces.length = 0;
    render(event);
    return pieces.join('');
  };
  const first = state.events.findIndex((e) => e.type === 'step' && e.id === plan.groups[0]?.step);
  if (first < 0) return undefined;
  let prefix = '';
  for (const event of state.events.slice(0, first)) prefix += chunk(event);
  const cached = plan.groups.map(() => '');
  const redone = plan.groups.map(() => '');
  let g = 0;
  for (const event of state.events.slice(first)) {
    if (event.type === 'step') {
      let next = -1;
      for (const [i, group] of plan.groups.entries()) if (group.step <= event.id) next = i;
      if (next < g) return undefined;
      g = next;
    } else if (event.type !== 'warning') return undefined;
    cached[g] += chunk(event);
    const done = event.type === 'step' && event.status === 'cached' ? { ...event, status: 'done' as const } : event;
    redone[g] += chunk(done);
  }
  const image = {
    type: 'image' as const,
    id: `sha256:${MARK}id@@`,
    manifestDigest: `sha256:${MARK}manifest@@`,
    tags: state.tags,
    durationMs: sentinelMs,
  };
  const suffixCached = chunk({ ...image, resultCache: true });
  const suffixBuilt = chunk(image);
  const ids = (t: string) =>
    t.replaceAll(`${MARK}id@@`, state.id.slice(7)).replaceAll(`${MARK}manifest@@`, state.manifestDigest.slice(7));
  // The pieces must give back what the record says the build printed.
  if (prefix + cached.join('') + ids(suffixCached) !== err) return undefined;
  return [
    `${lines.join('\n')}\n`,
    JSON.stringify(config),
    sizes(JSON.stringify(manifest)),
    indexTemplate,
    `sha256:${MARK}id@@\n`,
    prefix,
    ...plan.groups.flatMap((group, i) => [
      cached[i] as string,
      redone[i] as string,
      group.stepTemplate,
      group.hashTemplate,
      recordTemplates[i] as string,
    ]),
    suffixCached,
    suffixBuilt,
  ];
}
