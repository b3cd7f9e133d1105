import { InstructionError } from './errors.js';
import { didYouMean } from './suggest.js';

/** A `RUN --mount=…` request, as BuildKit reads it. */
export interface Mount {
  type: 'bind' | 'cache' | 'tmpfs' | 'secret' | 'ssh';
  target: string;
  source?: string;
  from?: string;
  id?: string;
  readonly: boolean;
  sharing?: 'shared' | 'private' | 'locked';
  mode?: number;
  uid?: number;
  gid?: number;
  required?: boolean;
  size?: string;
  env?: string;
}

const TYPES = ['bind', 'cache', 'tmpfs', 'secret', 'ssh'] as const;
const KEYS = [
  'type',
  'target',
  'dst',
  'destination',
  'source',
  'src',
  'from',
  'id',
  'readonly',
  'ro',
  'readwrite',
  'rw',
  'sharing',
  'mode',
  'uid',
  'gid',
  'required',
  'size',
  'env',
];

/** Splits `a=1,"b=x,y"` like Go's csv reader (double quotes group, `""` is a quote). */
function splitCsv(text: string): string[] {
  const fields: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string;
    if (quoted && ch === '"' && text[i + 1] === '"') field += text[++i];
    else if (ch === '"') quoted = !quoted;
    else if (ch === ',' && !quoted) {
      fields.push(field);
      field = '';
    } else field += ch;
  }
  fields.push(field);
  return fields.map((f) => f.trim()).filter((f) => f !== '');
}

function bool(key: string, value: string | undefined): boolean {
  if (value === undefined || value === 'true') return true;
  if (value === 'false') return false;
  throw new InstructionError(`--mount ${key}=${value}: use true or false`);
}

function int(key: string, value: string | undefined, radix: number): number {
  const n = value === undefined ? Number.NaN : Number.parseInt(value, radix);
  if (Number.isNaN(n) || !/^\d+$/.test(value ?? '')) {
    throw new InstructionError(`--mount ${key}=${value ?? ''} is not a ${radix === 8 ? 'octal ' : ''}number`);
  }
  return n;
}

/** Parses one `--mount` value: `type=cache,target=/root/.cache,id=go,sharing=locked`. */
export function parseMount(text: string, index: number): Mount {
  const raw: Record<string, string | undefined> = {};
  for (const field of splitCsv(text)) {
    const eq = field.indexOf('=');
    const key = (eq < 0 ? field : field.slice(0, eq)).toLowerCase();
    if (!KEYS.includes(key)) {
      throw new InstructionError(`unknown key ${key} in --mount=${text}${didYouMean(key, KEYS)}`, key);
    }
    raw[key] = eq < 0 ? undefined : field.slice(eq + 1);
  }
  const type = (raw.type ?? 'bind') as Mount['type'];
  if (!TYPES.includes(type)) {
    throw new InstructionError(`unknown mount type ${type}: use ${TYPES.join(', ')}${didYouMean(type, TYPES)}`, type);
  }
  const mount: Mount = {
    type,
    target: raw.target ?? raw.dst ?? raw.destination ?? '',
    readonly: type !== 'cache' && type !== 'tmpfs',
  };
  const source = raw.source ?? raw.src;
  if (source !== undefined) mount.source = source;
  for (const key of ['from', 'id', 'size', 'env'] as const) if (raw[key] !== undefined) mount[key] = raw[key];
  if ('readonly' in raw || 'ro' in raw) mount.readonly = bool('readonly', raw.readonly ?? raw.ro);
  if ('readwrite' in raw || 'rw' in raw) mount.readonly = !bool('readwrite', raw.readwrite ?? raw.rw);
  if ('required' in raw) mount.required = bool('required', raw.required);
  if ('mode' in raw) mount.mode = int('mode', raw.mode, 8);
  if ('uid' in raw) mount.uid = int('uid', raw.uid, 10);
  if ('gid' in raw) mount.gid = int('gid', raw.gid, 10);
  if ('sharing' in raw) {
    if (!['shared', 'private', 'locked'].includes(raw.sharing ?? '')) {
      throw new InstructionError(`--mount sharing=${raw.sharing ?? ''}: use shared, private or locked`);
    }
    mount.sharing = raw.sharing as Mount['sharing'];
  } else if (type === 'cache') mount.sharing = 'shared';
  if (type === 'secret') {
    if (!mount.id && !mount.target && !mount.source)
      throw new InstructionError(`--mount=${text}: a secret mount needs id or target`);
    mount.id ??= mount.source ?? (mount.target.split('/').at(-1) as string);
    if (!mount.target) mount.target = `/run/secrets/${mount.id.split('/').at(-1)}`;
  } else if (type === 'ssh') {
    mount.id ??= 'default';
    if (!mount.target) mount.target = `/run/buildkit/ssh_agent.${index}`;
  } else if (!mount.target) {
    throw new InstructionError(`--mount=${text} has no target: add target=/path/in/container`);
  }
  return mount;
}
