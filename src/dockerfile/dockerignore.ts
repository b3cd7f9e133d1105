import { readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { PetriError } from '../errors.js';

/**
 * `.dockerignore` files and Docker's path patterns (moby/patternmatcher): the
 * ignore rules of the build context, COPY/ADD `--exclude` and `--parents`.
 */

/**
 * The patterns of a `.dockerignore` file, as moby/patternmatcher's
 * `ignorefile.ReadAll` reads them: a UTF-8 BOM is dropped, lines starting with
 * `#` are comments, blank lines are skipped, patterns are trimmed and cleaned
 * like Go's `filepath.Clean` with a leading `/` removed, and a leading `!`
 * (an exception) is kept in front of the cleaned pattern (`! /a/b` → `!a/b`).
 */
export function parseDockerignore(text: string): string[] {
  const patterns: string[] = [];
  const body = text.startsWith('\uFEFF') ? text.slice(1) : text;
  for (const line of body.split('\n')) {
    const raw = line.endsWith('\r') ? line.slice(0, -1) : line;
    if (raw.startsWith('#')) continue;
    let pattern = raw.trim();
    if (pattern === '') continue;
    const exception = pattern.startsWith('!');
    if (exception) pattern = pattern.slice(1).trim();
    if (pattern !== '') {
      pattern = cleanPath(pattern);
      if (pattern.length > 1 && pattern.startsWith('/')) pattern = pattern.slice(1);
    }
    patterns.push(exception ? `!${pattern}` : pattern);
  }
  return patterns;
}

/**
 * The ignore patterns of a build: `<Dockerfile name>.dockerignore` next to the
 * Dockerfile wins over `<context>/.dockerignore` (BuildKit's rule); neither
 * gives no patterns.
 */
export function readDockerignore(contextDir: string, dockerfilePath: string): string[] {
  const candidates = [
    join(dirname(dockerfilePath), `${basename(dockerfilePath)}.dockerignore`),
    join(contextDir, '.dockerignore'),
  ];
  for (const file of candidates) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') continue;
      throw new PetriError(`cannot read ${file}: ${(error as Error).message}`);
    }
    return parseDockerignore(text);
  }
  return [];
}

/** Go's `path.Clean`: `.`/`..`/empty components resolved lexically; `''` gives `.`. */
export function cleanPath(path: string): string {
  const rooted = path.startsWith('/');
  const parts: string[] = [];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (part !== '..') parts.push(part);
    else if (parts.length > 0 && parts[parts.length - 1] !== '..') parts.pop();
    else if (!rooted) parts.push('..');
  }
  const joined = parts.join('/');
  if (rooted) return `/${joined}`;
  return joined === '' ? '.' : joined;
}

/** Whether a path (or one segment) has a glob character (`*`, `?`, `[`) not escaped by `\`. */
export function hasWildcards(path: string): boolean {
  for (let i = 0; i < path.length; i++) {
    const ch = path[i];
    if (ch === '\\') i++;
    else if (ch === '*' || ch === '?' || ch === '[') return true;
  }
  return false;
}

class BadPattern extends Error {}

/**
 * Go's `filepath.Match` on Linux: `*` (any run of non-`/`), `?` (one non-`/`
 * character), `[a-z]`, `[^a-z]`, `\x`. Throws a PetriError for a malformed
 * pattern (unclosed `[`, a trailing `\`, a bad range), checking the whole
 * pattern as Go does.
 */
export function goMatch(pattern: string, name: string): boolean {
  try {
    return match(Array.from(pattern), Array.from(name));
  } catch (error) {
    if (error instanceof BadPattern) throw new PetriError(`bad pattern "${pattern}": syntax error in pattern`);
    throw error;
  }
}

function match(pattern: string[], name: string[]): boolean {
  let p = pattern;
  let s = name;
  outer: while (p.length > 0) {
    const { star, chunk, rest } = scanChunk(p);
    p = rest;
    if (star && chunk.length === 0) return !s.includes('/');
    const here = matchChunk(chunk, s);
    if (here !== undefined && (here.length === 0 || p.length > 0)) {
      s = here;
      continue;
    }
    if (star) {
      for (let i = 0; i < s.length && s[i] !== '/'; i++) {
        const skipped = matchChunk(chunk, s.slice(i + 1));
        if (skipped === undefined) continue;
        if (p.length === 0 && skipped.length > 0) continue;
        s = skipped;
        continue outer;
      }
    }
    // No match: still check that the rest of the pattern is well formed.
    while (p.length > 0) {
      const next = scanChunk(p);
      p = next.rest;
      matchChunk(next.chunk, []);
    }
    return false;
  }
  return s.length === 0;
}

function scanChunk(pattern: string[]): { star: boolean; chunk: string[]; rest: string[] } {
  let start = 0;
  while (start < pattern.length && pattern[start] === '*') start++;
  let inRange = false;
  let i = start;
  for (; i < pattern.length; i++) {
    const ch = pattern[i];
    if (ch === '\\') {
      if (i + 1 < pattern.length) i++;
    } else if (ch === '[') inRange = true;
    else if (ch === ']') inRange = false;
    else if (ch === '*' && !inRange) break;
  }
  return { star: start > 0, chunk: pattern.slice(start, i), rest: pattern.slice(i) };
}

/** Matches one chunk at the start of `s`: what is left of `s`, or undefined. Throws BadPattern. */
function matchChunk(chunk: string[], s: string[]): string[] | undefined {
  let failed = false;
  let c = 0;
  let k = 0;
  while (c < chunk.length) {
    if (!failed && k >= s.length) failed = true;
    const ch = chunk[c] as string;
    if (ch === '[') {
      const r = failed ? '' : (s[k++] as string);
      c++;
      let negated = false;
      if (chunk[c] === '^') {
        negated = true;
        c++;
      }
      let matched = false;
      let ranges = 0;
      for (;;) {
        if (chunk[c] === ']' && ranges > 0) {
          c++;
          break;
        }
        const lo = escaped(chunk, c);
        c = lo.next;
        let hi = lo;
        if (chunk[c] === '-') {
          hi = escaped(chunk, c + 1);
          c = hi.next;
        }
        if (!failed && lo.cp <= (r.codePointAt(0) ?? -1) && (r.codePointAt(0) ?? -1) <= hi.cp) matched = true;
        ranges++;
      }
      if (matched === negated) failed = true;
    } else if (ch === '?') {
      if (!failed) {
        if (s[k] === '/') failed = true;
        k++;
      }
      c++;
    } else {
      if (ch === '\\') {
        c++;
        if (c >= chunk.length) throw new BadPattern();
      }
      if (!failed) {
        if (chunk[c] !== s[k]) failed = true;
        k++;
      }
      c++;
    }
  }
  return failed ? undefined : s.slice(k);
}

/** One (possibly escaped) character of a range in a class: Go's getEsc. */
function escaped(chunk: string[], at: number): { cp: number; next: number } {
  let i = at;
  if (i >= chunk.length || chunk[i] === '-' || chunk[i] === ']') throw new BadPattern();
  if (chunk[i] === '\\') {
    i++;
    if (i >= chunk.length) throw new BadPattern();
  }
  const cp = (chunk[i] as string).codePointAt(0) as number;
  if (i + 1 >= chunk.length) throw new BadPattern();
  return { cp, next: i + 1 };
}

const REGEX_ESCAPED = new Set(['.', '+', '(', ')', '|', '{', '}', '$']);
const escapeRegex = (ch: string) => ch.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');

/** One pattern as moby/patternmatcher compiles it: exact, prefix (`dir/**`), suffix (`**\/name`) or a regexp. */
type PatternKind = 'exact' | 'prefix' | 'suffix' | 'regexp';

class Pattern {
  readonly text: string;
  readonly exception: boolean;
  readonly #kind: PatternKind;
  readonly #regexp: RegExp | undefined;

  constructor(text: string, exception: boolean) {
    this.text = text;
    this.exception = exception;
    let source = '^';
    let kind: PatternKind = 'exact';
    const chars = Array.from(text);
    for (let k = 0, i = 0; k < chars.length; i++) {
      const ch = chars[k++] as string;
      if (ch === '*' && chars[k] === '*') {
        k++;
        if (chars[k] === '/') k++;
        if (k >= chars.length) {
          if (kind === 'exact') kind = 'prefix';
          else {
            source += '.*';
            kind = 'regexp';
          }
        } else {
          source += '(.*/)?';
          kind = 'regexp';
        }
        if (i === 0) kind = 'suffix';
      } else if (ch === '*') {
        source += '[^/]*';
        kind = 'regexp';
      } else if (ch === '?') {
        source += '[^/]';
        kind = 'regexp';
      } else if (REGEX_ESCAPED.has(ch)) {
        source += `\\${ch}`;
      } else if (ch === '\\') {
        if (k < chars.length) {
          source += escapeRegex(chars[k++] as string);
          kind = 'regexp';
        } else source += '\\\\';
      } else if (ch === '[' || ch === ']') {
        source += ch;
        kind = 'regexp';
      } else source += ch === '/' ? '\\/' : ch;
    }
    this.#kind = kind;
    this.#regexp = kind === 'regexp' ? new RegExp(`${source}$`) : undefined;
  }

  match(path: string): boolean {
    switch (this.#kind) {
      case 'exact':
        return path === this.text;
      case 'prefix':
        return path.startsWith(this.text.slice(0, -2));
      case 'suffix': {
        const suffix = this.text.slice(2);
        return path.endsWith(suffix) || (suffix.startsWith('/') && path === suffix.slice(1));
      }
      default:
        return (this.#regexp as RegExp).test(path);
    }
  }

  /** Whether this pattern might match `dir` or something below it (segment by segment, `**` matching anything). */
  mayMatchBelow(dir: string): boolean {
    if (dir === '') return true;
    const segments = this.text.split('/');
    const parts = dir.split('/');
    for (const [i, part] of parts.entries()) {
      const segment = segments[i];
      if (segment === undefined) return true; // the pattern names an ancestor of what is below
      if (segment.includes('**')) return true;
      if (!goMatch(segment, part)) return false;
    }
    return true;
  }
}

/**
 * Docker's ignore/exclude semantics over relative POSIX paths (no leading `./`):
 * a path is matched when the last pattern that matches it or one of its parent
 * directories is not an exception (`!`). A pattern matching a directory thus
 * matches everything below it, unless a later exception re-includes something.
 */
export class IgnoreMatcher {
  readonly #patterns: Pattern[] = [];

  /** `what` names the patterns' origin in error messages (`.dockerignore`, `--exclude`). */
  constructor(patterns: readonly string[], what = '.dockerignore') {
    for (const raw of patterns) {
      let text = raw.trim();
      if (text === '') continue;
      text = cleanPath(text);
      const exception = text.startsWith('!');
      if (exception) {
        if (text.length === 1) throw new PetriError(`${what}: illegal exclusion pattern "!"`);
        text = text.slice(1);
      }
      try {
        goMatch(text, '.');
      } catch {
        throw new PetriError(`${what}: bad pattern "${raw.trim()}": syntax error in pattern`);
      }
      this.#patterns.push(new Pattern(text, exception));
    }
  }

  /** Whether there are no patterns at all. */
  get empty(): boolean {
    return this.#patterns.length === 0;
  }

  /** Whether any pattern is an exception (`!…`). */
  get hasExceptions(): boolean {
    return this.#patterns.some((p) => p.exception);
  }

  /** Whether `relPath` is matched (ignored, excluded, or included for `--parents`). The root (`''`, `.`) never is. */
  matches(relPath: string): boolean {
    const path = cleanPath(relPath);
    if (path === '.' || this.#patterns.length === 0) return false;
    const slash = path.lastIndexOf('/');
    const parents = slash < 0 ? [] : path.slice(0, slash).split('/');
    let matched = false;
    for (const pattern of this.#patterns) {
      if (pattern.exception !== matched) continue;
      let hit = pattern.match(path);
      for (let i = 0; !hit && i < parents.length; i++) hit = pattern.match(parents.slice(0, i + 1).join('/'));
      if (hit) matched = !pattern.exception;
    }
    return matched;
  }

  /**
   * Whether a walker must look inside the matched directory `dir` because an
   * exception may re-include something below it. This is Docker's context
   * walker's rule: an exception pattern must start with `dir/` literally
   * (`!dir/keep` does, `!**\/keep` does not).
   */
  exceptionBelow(dir: string): boolean {
    const prefix = `${dir}/`;
    return this.#patterns.some((p) => p.exception && `${p.text}/`.startsWith(prefix));
  }

  /** Whether some non-exception pattern might match `dir` or a path below it: lets an include walk prune. */
  mayMatchBelow(dir: string): boolean {
    return this.#patterns.some((p) => !p.exception && p.mayMatchBelow(dir));
  }
}
