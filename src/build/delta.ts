import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { petriRoot } from '../runtime/paths.js';
import type { BuildEvent } from './events.js';
import { progressRenderer } from './progress.js';

/**
 * The delta of a replay record: what lets `petri-runner replay` (runner/replay.c)
 * redo, in C, a build whose only change is the content of files that its last
 * COPY steps alone read from the context. The C side swaps the new content into
 * the old layer's tar (same headers, new size and checksum), hashes it, and
 * writes the layer, config, manifest and index from templates made here; what a
 * full build would have written, as the tests check, with two gaps: no step
 * cache records for the redone steps (a later build in Node redoes them, to the
 * same layers) and no unpacked copy of the new layer (unpacked when first run).
 *
 * The tail: the target stage's last steps, each a COPY from the context (not
 * ADD, which may unpack what it reads) or a step that makes no layer (ENV,
 * LABEL, CMD …), from the first such COPY on. A file is in the delta when a
 * tail COPY copied it, no other step of the build read it (another COPY or ADD
 * from the context, a RUN with the context bind-mounted: then no delta at all),
 * and its layer entry is certain: the only entry of that layer with its
 * content, whose mtime the build clamped to SOURCE_DATE_EPOCH.
 */

/** What a build traced (BuildOptions.trace): each step in the order it ended, and what it read of the context. */
export interface BuildTrace {
  target?: number;
  steps: TraceStep[];
  /** Step id → the files a context COPY selected, or 'other' for a step that read the context otherwise. */
  reads: Map<number, TraceRead>;
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

export interface TraceFile {
  hostPath: string;
  digest: string;
  mode: number;
  size: number;
  /** One of several hard links: the layer may hold a link entry. */
  link?: true;
}

export type TraceRead = 'other' | { files: TraceFile[] };

export function newTrace(): BuildTrace {
  return { steps: [], reads: new Map() };
}

/** What the result cache keeps for the replay record's delta (JSON). */
export interface DeltaPlan {
  /** Each COPY of the tail: its step id, its layer's index in the image, its first history entry's index. */
  groups: { step: number; layer: number; history: number }[];
  /** The files in the delta: context-relative path, group, the offset of its tar header in the group's layer. */
  files: { label: string; group: number; offset: number }[];
}

/** The most COPY steps and files a delta has (runner/replay.c: MAX_GROUPS, its file table). */
const MAX_GROUPS = 4;
const MAX_FILES = 64;
/** Tail layers bigger than this together are not patched (each delta reads and writes them whole). */
const MAX_TAIL_BYTES = 8 << 20;
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
  const epochText = process.env.SOURCE_DATE_EPOCH;
  const epoch = epochText && /^\d+$/.test(epochText) ? Number(epochText) : 0;
  const groups: DeltaPlan['groups'] = [];
  const files: DeltaPlan['files'] = [];
  let bytes = 0;
  let previous = steps[start - 1] as TraceStep;
  for (const step of tail) {
    if (step.keyword === 'COPY') {
      const layer = step.layers - 1;
      const ref = manifest.layers[layer];
      // Every tail COPY made a layer, uncompressed (its digest is its diffID), as the image's last ones.
      if (step.layers !== previous.layers + 1 || !ref || ref.mediaType !== LAYER_TAR) return undefined;
      if (config.rootfs.diff_ids[layer] !== ref.digest || step.layers > manifest.layers.length) return undefined;
      bytes += ref.size;
      if (bytes > MAX_TAIL_BYTES) return undefined;
      const group = groups.length;
      groups.push({ step: step.id, layer, history: previous.history });
      const entries = tarEntries(blob(ref.digest));
      const selected = (step.reads as { files: TraceFile[] }).files;
      for (const file of selected) {
        const label = relative(context, file.hostPath);
        if (label.startsWith('..') || label === '' || label === '.dockerignore' || /[\t\n]/.test(label)) continue;
        if (sep !== '/' || file.link || elsewhere.has(file.hostPath)) continue;
        // Certain only when one file of this COPY has this content and one entry of its layer holds it.
        if (selected.filter((f) => f.digest === file.digest).length !== 1) continue;
        const holding = entries.filter((e) => e.digest === file.digest);
        const entry = holding[0];
        if (holding.length !== 1 || !entry || !entry.patchable || entry.mtime !== epoch) continue;
        if (entry.size !== file.size) continue;
        files.push({ label, group, offset: entry.offset });
      }
    }
    previous = step;
  }
  // runner/replay.c takes at most 4 groups and 64 files (a file left out is one whose change goes to Node).
  if (files.length === 0 || groups.length > MAX_GROUPS) return undefined;
  files.splice(MAX_FILES);
  // The tail's layers are the image's last ones.
  if ((groups.at(-1) as { layer: number }).layer !== manifest.layers.length - 1) return undefined;
  return { groups, files };
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
    if (type === '0') {
      entry.digest = `sha256:${createHash('sha256')
        .update(tar.subarray(offset + 512, offset + 512 + size))
        .digest('hex')}`;
    }
    entries.push(entry);
    extended = type === 'x' || type === 'L' || type === 'K';
    offset += 512 + Math.ceil(size / 512) * 512;
  }
  return entries;
}

/** The fields a replay record's delta adds (runner/replay.c reads them in this order), or undefined. */
export function deltaFields(
  plan: DeltaPlan,
  state: { index: string; manifestDigest: string; id: string; tags: string[]; events: BuildEvent[] },
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
    rootfs: { diff_ids: string[] };
    history?: { created?: string }[];
  };
  if (JSON.stringify(manifest) !== manifestText || JSON.stringify(config) !== configText) return undefined;
  const index = JSON.parse(state.index) as { manifests: { digest: string; size: number; annotations?: object }[] };
  if (JSON.stringify(index) !== state.index) return undefined;
  if ([manifestText, configText, state.index, err].some((t) => t.includes(MARK))) return undefined;

  const history = config.history ?? [];
  const epochText = process.env.SOURCE_DATE_EPOCH;
  const epoch = epochText && /^\d+$/.test(epochText) ? Number(epochText) : 0;
  const lines = ['petri-delta 1', 'full 1', `epoch\t${epoch}`];
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
  }
  // The image's time is its last step's.
  if (config.created !== undefined) {
    if (config.created !== lastCreated) return undefined;
    config.created = `${MARK}created:${plan.groups.length - 1}@@`;
  }
  for (const file of plan.files) lines.push(`file\t${file.group}\t${file.offset}\t${file.label}`);
  manifest.config = { ...manifest.config, digest: `sha256:${MARK}id@@`, size: -1000 };
  // Sizes are numbers: their markers go in without quotes.
  const sizes = (json: string) =>
    json.replace(/"size":-(\d+)/g, (_m, n: string) =>
      n === '1000' ? `"size":${MARK}config-size@@` : `"size":${MARK}layer-size:${Number(n) - 1}@@`,
    );
  // The tags move to the new manifest, last in the index, as ImageStore.tag leaves them.
  const ref = (m: { annotations?: object }) =>
    (m.annotations as Record<string, string> | undefined)?.['org.opencontainers.image.ref.name'];
  const tagged = state.tags.map((tag) =>
    index.manifests.find((m) => ref(m) === tag && m.digest === state.manifestDigest),
  );
  if (tagged.some((m) => m === undefined)) return undefined;
  index.manifests = [
    ...index.manifests.filter((m) => !state.tags.includes(ref(m) ?? '')),
    ...tagged.map((m) => ({ ...(m as object), digest: `sha256:${MARK}manifest@@`, size: -1 })),
  ] as typeof index.manifests;
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
  const suffixRedone = chunk(image);
  const expand = (t: string) =>
    t.replaceAll(`${MARK}id@@`, state.id.slice(7)).replaceAll(`${MARK}manifest@@`, state.manifestDigest.slice(7));
  // The pieces must give back what the record says the build printed.
  if (prefix + cached.join('') + expand(suffixCached) !== err) return undefined;
  return [
    `${lines.join('\n')}\n`,
    JSON.stringify(config),
    sizes(JSON.stringify(manifest)),
    indexTemplate,
    `sha256:${MARK}id@@\n`,
    prefix,
    ...plan.groups.flatMap((_group, i) => [cached[i] as string, redone[i] as string]),
    suffixCached,
    suffixRedone,
  ];
}
