import { DockerfileError } from './errors.js';
import { extractFlags, heredocWord, splitWords } from './split-words.js';

export interface Heredoc {
  name: string;
  /** The body, each line ending in a newline; with `<<-` leading tabs are already removed. */
  content: string;
  /** `<<-`: leading tabs stripped from the body and the terminator. */
  chomp: boolean;
  /** False when the delimiter was quoted (`<<"EOF"`, `<<'EOF'`): no expansion in the body. */
  expand: boolean;
}

/** One instruction as written, before it is typed (BuildKit's parser.Node). */
export interface Node {
  /** Upper-case, as written otherwise (`FORM` stays `FORM`). */
  keyword: string;
  /** `--name=value` / `--name` words from the start of the arguments, unquoted. */
  flags: string[];
  /** The arguments after the flags, continuation lines joined. */
  args: string;
  /** Exec form: set when `args` is a JSON array of strings (RUN, CMD, ENTRYPOINT, SHELL, COPY, ADD, VOLUME). */
  json?: string[];
  heredocs: Heredoc[];
  /** First and last line (1-based), heredoc bodies included. */
  line: number;
  endLine: number;
  /** Column of the keyword. */
  column: number;
  /** The instruction's joined text: keyword, flags and arguments. */
  original: string;
  /** The physical lines the instruction was written on (not heredoc bodies), to locate tokens for errors. */
  lines: string[];
}

const JSON_KEYWORDS = new Set(['RUN', 'CMD', 'ENTRYPOINT', 'SHELL', 'COPY', 'ADD', 'VOLUME']);
const HEREDOC_KEYWORDS = new Set(['RUN', 'COPY', 'ADD']);

const isComment = (line: string) => /^\s*#/.test(line);
const isBlank = (line: string) => line.trim() === '';

/** `["a", "b"]` as strings; undefined for anything else (malformed JSON is shell form, like BuildKit). */
export function parseJsonArray(args: string): string[] | undefined {
  if (!args.startsWith('[')) return undefined;
  try {
    const value: unknown = JSON.parse(args);
    if (Array.isArray(value) && value.every((item) => typeof item === 'string')) return value;
  } catch {
    // not JSON: shell form
  }
  return undefined;
}

/** Builds a node from one joined instruction line (also used for ONBUILD's trigger). */
export function nodeFromLine(text: string, line: number, rawLines: string[]): Node {
  const trimmed = text.trim();
  const space = trimmed.search(/\s/);
  const word = space < 0 ? trimmed : trimmed.slice(0, space);
  const { flags, rest } = extractFlags(space < 0 ? '' : trimmed.slice(space));
  const keyword = word.toUpperCase();
  const node: Node = {
    keyword,
    flags,
    args: rest,
    heredocs: [],
    line,
    endLine: line + rawLines.length - 1,
    column: Math.max(1, (rawLines[0] ?? '').indexOf(word) + 1),
    original: trimmed,
    lines: rawLines,
  };
  const json = JSON_KEYWORDS.has(keyword) ? parseJsonArray(rest) : undefined;
  if (json) node.json = json;
  return node;
}

/**
 * Splits a Dockerfile into nodes the way BuildKit's parser does: comments and
 * empty lines between instructions are dropped; a line ending in the escapeChar
 * character continues on the next one, skipping comment and empty lines inside
 * the continuation; RUN/COPY/ADD lines with `<<WORD` read heredoc bodies.
 */
export function parseNodes(text: string, escapeChar: string, file: string): Node[] {
  const lines = text.replace(/^\uFEFF/, '').split('\n');
  const esc = escapeChar.replace(/[\\`]/g, '\\$&');
  const continuation = new RegExp(`${esc}[ \\t]*$`);
  const trimContinuation = (line: string): [string, boolean] => {
    const match = continuation.exec(line);
    return match ? [line.slice(0, match.index), false] : [line, true];
  };
  const nodes: Node[] = [];
  let i = 0;
  while (i < lines.length) {
    const first = (lines[i] as string).replace(/\r$/, '');
    const start = ++i;
    if (isComment(first)) continue;
    let [joined, ended] = trimContinuation(first.replace(/^\s+/, ''));
    if (ended && joined === '') continue;
    const raw = [first];
    while (!ended && i < lines.length) {
      const next = (lines[i] as string).replace(/\r$/, '');
      i++;
      raw.push(next);
      if (isComment(next) || isBlank(next)) continue;
      const [part, end] = trimContinuation(next);
      joined += part;
      ended = end;
    }
    while (raw.length > 1 && (isComment(raw.at(-1) as string) || isBlank(raw.at(-1) as string))) raw.pop();
    const node = nodeFromLine(joined, start, raw);
    if (HEREDOC_KEYWORDS.has(node.keyword) && joined.includes('<<')) {
      for (const word of splitWords(joined, '\\')) {
        const heredoc = heredocWord(word);
        if (!heredoc) continue;
        let content = '';
        let terminated = false;
        while (i < lines.length) {
          let body = (lines[i] as string).replace(/\r$/, '');
          i++;
          if (heredoc.chomp) body = body.replace(/^\t+/, '');
          if (body === heredoc.name) {
            terminated = true;
            break;
          }
          content += `${body}\n`;
        }
        if (!terminated) {
          throw new DockerfileError(
            file,
            start,
            Math.max(1, first.indexOf(word) + 1),
            `unterminated heredoc ${heredoc.name}: end it with a line that is exactly ${heredoc.name}`,
          );
        }
        node.heredocs.push({ name: heredoc.name, content, chomp: heredoc.chomp, expand: heredoc.expand });
      }
      node.endLine = i;
    }
    nodes.push(node);
  }
  return nodes;
}
