import { InstructionError } from './errors.js';
import { type FlagKind, type FlagValues, parseDuration, parseFlags } from './flags.js';
import type { CommandLine, Instruction, KeyValue, Keyword } from './instruction-types.js';
import { type Mount, parseMount } from './mounts.js';
import { type Node, nodeFromLine } from './parser.js';
import { heredocWord, splitWords } from './split-words.js';
import { didYouMean } from './suggest.js';

interface Spec {
  usage: string;
  flags?: Record<string, FlagKind>;
  /** Returns the typed flags and arguments; throws InstructionError. */
  parse(node: Node, flags: FlagValues, escapeChar: string): { flags?: object; args: object };
}

const missing = (node: Node) =>
  new InstructionError(`${node.keyword} needs arguments: ${SPECS[node.keyword as Keyword].usage}`);
const whitespaceWords = (text: string) => text.split(/\s+/).filter((w) => w !== '');

/** Exec form when the arguments are a JSON string array; a JSON array of other things is an error, like BuildKit. */
function commandLine(node: Node, allowEmptyExec: boolean): CommandLine {
  if (node.json) {
    if (node.json.length === 0 && !allowEmptyExec) throw missing(node);
    return { cmd: node.json, prependShell: false };
  }
  if (node.args.startsWith('[')) {
    let value: unknown;
    try {
      value = JSON.parse(node.args);
    } catch {
      // malformed JSON: shell form
    }
    if (Array.isArray(value)) {
      throw new InstructionError(`${node.keyword} in JSON form takes only strings: quote every element`, '[');
    }
  }
  if (node.args === '' && node.heredocs.length === 0) throw missing(node);
  return { cmd: [node.args], prependShell: true };
}

/** ENV and LABEL: `K=V K2="v 2"`, or the legacy `K V…` (one pair, the value is the rest of the line). */
function nameValues(node: Node, escapeChar: string): { pairs: KeyValue[] } {
  const words = splitWords(node.args, escapeChar);
  if (words.length === 0) throw missing(node);
  if (!(words[0] as string).includes('=')) {
    const [key, value] = node.args.split(/\s+(.*)/s) as [string, string | undefined];
    if (!value)
      throw new InstructionError(`${node.keyword} ${key} has no value: ${SPECS[node.keyword as Keyword].usage}`, key);
    return { pairs: [{ key, value }] };
  }
  const pairs = words.map((word) => {
    const eq = word.indexOf('=');
    if (eq < 0) throw new InstructionError(`${node.keyword} ${word} has no "=": write ${word}=VALUE`, word);
    if (eq === 0) throw new InstructionError(`${node.keyword} ${word} has an empty name`, word);
    return { key: word.slice(0, eq), value: word.slice(eq + 1) };
  });
  return { pairs };
}

function sourcesAndDest(node: Node): { sources: string[]; dest: string } {
  const words = node.json ?? whitespaceWords(node.args);
  if (words.length < 2) throw missing(node);
  const dest = words.at(-1) as string;
  const heredocNames = new Set(node.heredocs.map((h) => h.name));
  const sources = words.slice(0, -1).filter((w) => !heredocNames.has(heredocWord(w)?.name ?? '\0'));
  return { sources, dest };
}

function single<K extends string>(key: K) {
  return (node: Node) => {
    if (node.args === '') throw missing(node);
    return { args: { [key]: node.args } as Record<K, string> };
  };
}

const COPY_FLAGS = { chown: 'string', chmod: 'string', link: 'bool', exclude: 'list' } as const;

const SPECS: Record<Keyword, Spec> = {
  FROM: {
    usage: 'FROM [--platform=PLATFORM] IMAGE [AS NAME]',
    flags: { platform: 'string' },
    parse(node, flags) {
      const words = whitespaceWords(node.args);
      if (words.length === 0) throw missing(node);
      if (words.length === 2 || words.length > 3 || (words.length === 3 && words[1]?.toLowerCase() !== 'as')) {
        throw new InstructionError(`FROM takes one image and an optional "AS NAME": ${SPECS.FROM.usage}`, words[1]);
      }
      const name = words[2]?.toLowerCase();
      if (name !== undefined && !/^[a-z][a-z0-9-_.]*$/.test(name)) {
        throw new InstructionError(
          `invalid stage name ${words[2]}: start with a letter, then letters, digits, "-", "_" or "."`,
          words[2],
        );
      }
      return { flags, args: name === undefined ? { image: words[0] } : { image: words[0], name } };
    },
  },
  RUN: {
    usage: 'RUN [--mount=…] [--network=…] COMMAND or RUN ["EXECUTABLE", "ARG"…]',
    flags: { mount: 'list', network: 'string', security: 'string' },
    parse(node, flags) {
      const typed: { mounts?: Mount[]; network?: string; security?: string } = {};
      if (flags.mount) {
        let ssh = 0;
        typed.mounts = (flags.mount as string[]).map((m) => parseMount(m, m.includes('type=ssh') ? ssh++ : 0));
      }
      for (const [name, allowed] of [
        ['network', ['default', 'none', 'host']],
        ['security', ['sandbox', 'insecure']],
      ] as const) {
        const value = flags[name] as string | undefined;
        if (value === undefined) continue;
        if (!(allowed as readonly string[]).includes(value)) {
          throw new InstructionError(`--${name}=${value} is not one of ${allowed.join(', ')}`, `--${name}`);
        }
        typed[name] = value;
      }
      return { flags: typed, args: commandLine(node, false) };
    },
  },
  CMD: { usage: 'CMD COMMAND or CMD ["EXECUTABLE", "ARG"…]', parse: (node) => ({ args: commandLine(node, true) }) },
  ENTRYPOINT: {
    usage: 'ENTRYPOINT COMMAND or ENTRYPOINT ["EXECUTABLE", "ARG"…]',
    parse: (node) => ({ args: commandLine(node, true) }),
  },
  SHELL: {
    usage: 'SHELL ["EXECUTABLE", "PARAMETERS"…]',
    parse(node) {
      if (!node.json)
        throw new InstructionError(`SHELL takes a JSON array: ${SPECS.SHELL.usage}`, node.args.split(/\s/)[0]);
      if (node.json.length === 0) throw missing(node);
      return { args: { shell: node.json } };
    },
  },
  COPY: {
    usage: 'COPY [--from=STAGE] [--chown=…] [--chmod=…] SOURCE… DEST',
    flags: { from: 'string', ...COPY_FLAGS, parents: 'bool' },
    parse: (node, flags) => ({ flags, args: sourcesAndDest(node) }),
  },
  ADD: {
    usage: 'ADD [--chown=…] [--chmod=…] [--checksum=…] SOURCE… DEST',
    flags: { ...COPY_FLAGS, checksum: 'string', 'keep-git-dir': 'bool' },
    parse(node, flags) {
      const { 'keep-git-dir': keepGitDir, ...rest } = flags;
      return { flags: keepGitDir === undefined ? rest : { ...rest, keepGitDir }, args: sourcesAndDest(node) };
    },
  },
  ENV: { usage: 'ENV KEY=VALUE… or ENV KEY VALUE', parse: (node, _f, esc) => ({ args: nameValues(node, esc) }) },
  LABEL: { usage: 'LABEL KEY=VALUE…', parse: (node, _f, esc) => ({ args: nameValues(node, esc) }) },
  ARG: {
    usage: 'ARG NAME[=DEFAULT]…',
    parse(node, _flags, escapeChar) {
      const words = splitWords(node.args, escapeChar);
      if (words.length === 0) throw missing(node);
      const args = words.map((word) => {
        const eq = word.indexOf('=');
        if (eq === 0) throw new InstructionError(`ARG ${word} has an empty name`, word);
        return eq < 0 ? { key: word } : { key: word.slice(0, eq), value: word.slice(eq + 1) };
      });
      return { args: { args } };
    },
  },
  WORKDIR: { usage: 'WORKDIR PATH', parse: single('path') },
  USER: { usage: 'USER USER[:GROUP]', parse: single('user') },
  STOPSIGNAL: { usage: 'STOPSIGNAL SIGNAL', parse: single('signal') },
  MAINTAINER: { usage: 'MAINTAINER NAME', parse: single('name') },
  EXPOSE: {
    usage: 'EXPOSE PORT[/PROTOCOL]…',
    parse(node) {
      const ports = whitespaceWords(node.args);
      if (ports.length === 0) throw missing(node);
      return { args: { ports } };
    },
  },
  VOLUME: {
    usage: 'VOLUME PATH… or VOLUME ["PATH"…]',
    parse(node) {
      const paths = node.json ?? whitespaceWords(node.args);
      if (paths.length === 0) throw missing(node);
      if (paths.some((p) => p.trim() === '')) throw new InstructionError('VOLUME paths cannot be empty strings');
      return { args: { paths } };
    },
  },
  HEALTHCHECK: {
    usage: 'HEALTHCHECK NONE or HEALTHCHECK [--interval=…] [--timeout=…] [--retries=N] CMD COMMAND',
    flags: {
      interval: 'string',
      timeout: 'string',
      'start-period': 'string',
      'start-interval': 'string',
      retries: 'string',
    },
    parse(node, flags) {
      const [type = '', rest = ''] = node.args.split(/\s+(.*)/s);
      if (type.toUpperCase() === 'NONE') {
        if (rest !== '') throw new InstructionError('HEALTHCHECK NONE takes no arguments', rest.split(/\s/)[0]);
        return { args: { test: ['NONE'] } };
      }
      if (type.toUpperCase() !== 'CMD') {
        const hint = type === '' ? SPECS.HEALTHCHECK.usage : `use CMD or NONE${didYouMean(type, ['CMD', 'NONE'])}`;
        throw new InstructionError(
          `HEALTHCHECK needs CMD or NONE${type ? `, not ${type}` : ''}: ${hint}`,
          type || undefined,
        );
      }
      if (rest === '') throw new InstructionError(`HEALTHCHECK CMD needs a command: ${SPECS.HEALTHCHECK.usage}`);
      const typed: Record<string, number> = {};
      for (const [flag, key] of [
        ['interval', 'interval'],
        ['timeout', 'timeout'],
        ['start-period', 'startPeriod'],
        ['start-interval', 'startInterval'],
      ] as const) {
        if (flags[flag] !== undefined) typed[key] = parseDuration(flag, flags[flag] as string);
      }
      if (flags.retries !== undefined) {
        if (!/^\d+$/.test(flags.retries as string)) {
          throw new InstructionError(`--retries=${flags.retries} is not a whole number >= 0`, '--retries');
        }
        typed.retries = Number(flags.retries);
      }
      const sub = nodeFromLine(`CMD ${rest}`, node.line, node.lines);
      const test = sub.json ? ['CMD', ...sub.json] : ['CMD-SHELL', rest];
      return { flags: typed, args: { test } };
    },
  },
  ONBUILD: {
    usage: 'ONBUILD INSTRUCTION',
    parse(node, _flags, escapeChar) {
      if (node.args === '') throw missing(node);
      const trigger = nodeFromLine(node.args, node.line, node.lines);
      if (['ONBUILD', 'FROM', 'MAINTAINER'].includes(trigger.keyword)) {
        const word = node.args.split(/\s/)[0];
        throw new InstructionError(`${trigger.keyword} cannot be an ONBUILD trigger: use another instruction`, word);
      }
      return { args: { expression: node.args, instruction: typeInstruction(trigger, escapeChar) } };
    },
  },
};

export const KEYWORDS = Object.keys(SPECS) as Keyword[];

/** Types one node; errors are InstructionErrors that the caller locates. */
export function typeInstruction(node: Node, escapeChar: string): Instruction {
  const spec = SPECS[node.keyword as Keyword] as Spec | undefined;
  if (!spec) {
    const word = node.original.split(/\s/)[0] as string;
    throw new InstructionError(`unknown instruction ${word}${didYouMean(node.keyword, KEYWORDS)}`, word);
  }
  const flags = parseFlags(node.keyword, node.flags, spec.flags ?? {});
  const typed = spec.parse(node, flags, escapeChar);
  return {
    keyword: node.keyword,
    line: node.line,
    endLine: node.endLine,
    column: node.column,
    flags: typed.flags ?? {},
    args: typed.args,
    heredocs: node.heredocs,
    source: { flags: node.flags, args: node.args },
  } as Instruction;
}
