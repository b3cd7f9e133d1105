// biome-ignore-all lint/suspicious/noTemplateCurlyInString: shell words like ${VAR}, not template strings
import { InstructionError } from './errors.js';
import { removePrefix, removeSuffix, replacePattern } from './shell-pattern.js';

/** Variables for expansion; a key that is absent is unset, `''` is set and empty. */
export type Env = Readonly<Record<string, string | undefined>>;
export interface ShellOptions {
  /** The Dockerfile's escapeChar character (default `\`). */
  escape?: string;
}

const SPECIAL = '@*#?$!-0123456789';

/** Collects words for `processWords`: unquoted text and unquoted expansions split on whitespace. */
class Words {
  words: string[] = [];
  private word = '';
  private inWord = false;

  add(text: string, raw: boolean): void {
    for (const ch of text) {
      if (!raw && /\s/.test(ch)) {
        if (this.inWord) this.words.push(this.word);
        this.word = '';
        this.inWord = false;
      } else {
        this.word += ch;
        this.inWord = true;
      }
    }
  }

  finish(): string[] {
    if (this.inWord) this.words.push(this.word);
    return this.words;
  }
}

/** A port of BuildKit's shell lexer (frontend/dockerfile/shell). */
class Lexer {
  private pos = 0;
  constructor(
    private readonly text: string,
    private readonly env: Env,
    private readonly escapeChar: string,
  ) {}

  /** Reads until one of `stops` (consumed) or the end; reports which stop ended it. */
  process(stops: string, words?: Words): { value: string; stop: string | undefined } {
    let value = '';
    while (this.pos < this.text.length) {
      const ch = this.text[this.pos] as string;
      if (stops.includes(ch)) {
        this.pos++;
        return { value, stop: ch };
      }
      let part: string;
      let raw = true;
      if (ch === "'") part = this.singleQuoted();
      else if (ch === '"') part = this.doubleQuoted();
      else if (ch === '$') {
        part = this.dollar();
        raw = false;
      } else {
        this.pos++;
        if (ch === this.escapeChar) {
          if (this.pos >= this.text.length) break;
          part = this.text[this.pos++] as string;
        } else {
          part = ch;
          raw = false;
        }
      }
      value += part;
      words?.add(part, raw);
    }
    return { value, stop: undefined };
  }

  private singleQuoted(): string {
    const end = this.text.indexOf("'", this.pos + 1);
    if (end < 0) throw new InstructionError(`unmatched single quote in ${this.text}: close it with '`, "'");
    const value = this.text.slice(this.pos + 1, end);
    this.pos = end + 1;
    return value;
  }

  private doubleQuoted(): string {
    let value = '';
    this.pos++;
    while (this.pos < this.text.length) {
      const ch = this.text[this.pos] as string;
      if (ch === '"') {
        this.pos++;
        return value;
      }
      if (ch === '$') {
        value += this.dollar();
        continue;
      }
      this.pos++;
      if (ch === this.escapeChar) {
        const next = this.text[this.pos];
        if (next === undefined) continue;
        if (next === '"' || next === '$' || next === this.escapeChar) {
          value += next;
          this.pos++;
          continue;
        }
      }
      value += ch;
    }
    throw new InstructionError(`unmatched double quote in ${this.text}: close it with "`, '"');
  }

  private name(): string {
    const first = this.text[this.pos];
    if (first !== undefined && SPECIAL.includes(first)) {
      this.pos++;
      return first;
    }
    const match = /^[A-Za-z0-9_]*/.exec(this.text.slice(this.pos)) as RegExpExecArray;
    this.pos += match[0].length;
    return match[0];
  }

  private lookup(name: string): string | undefined {
    return Object.hasOwn(this.env, name) ? this.env[name] : undefined;
  }

  private dollar(): string {
    this.pos++;
    if (this.text[this.pos] !== '{') {
      const ch = this.text[this.pos];
      if (ch === undefined || (!/[A-Za-z_]/.test(ch) && !SPECIAL.includes(ch))) return '$';
      return this.lookup(this.name()) ?? '';
    }
    this.pos++;
    const name = this.name();
    const bad = () => new InstructionError(`bad substitution in ${this.text}: use \${NAME} or \${NAME:-default}`, '${');
    if (name === '') throw bad();
    const value = this.lookup(name);
    const op = this.text[this.pos++];
    if (op === '}') return value ?? '';
    const word = (stops = '}') => {
      const result = this.process(stops);
      if (result.stop === undefined) throw bad();
      return result;
    };
    if (op === ':' || op === '-' || op === '+' || op === '?') {
      const colon = op === ':';
      const kind = colon ? this.text[this.pos++] : op;
      if (kind !== '-' && kind !== '+' && kind !== '?') throw bad();
      const arg = word().value;
      const set = value !== undefined && (!colon || value !== '');
      if (kind === '-') return set ? (value as string) : arg;
      if (kind === '+') return set ? arg : '';
      if (!set) throw new InstructionError(`${name}: ${arg || (colon ? 'is not set or empty' : 'is not set')}`, name);
      return value as string;
    }
    if (op === '#' || op === '%') {
      const longest = this.text[this.pos] === op;
      if (longest) this.pos++;
      const pattern = word().value;
      return (op === '#' ? removePrefix : removeSuffix)(value ?? '', pattern, longest);
    }
    if (op === '/') {
      const all = this.text[this.pos] === '/';
      if (all) this.pos++;
      const pattern = word('/}');
      const replacement = pattern.stop === '/' ? word().value : '';
      return replacePattern(value ?? '', pattern.value, replacement, all);
    }
    throw bad();
  }
}

/** Expands one word: quotes removed, escapes applied, variables substituted; whitespace is kept. */
export function processWord(word: string, env: Env, options: ShellOptions = {}): string {
  return new Lexer(word, env, options.escape ?? '\\').process('').value;
}

/** Expands and splits into words on unquoted whitespace (also whitespace from unquoted expansions). */
export function processWords(text: string, env: Env, options: ShellOptions = {}): string[] {
  const words = new Words();
  new Lexer(text, env, options.escape ?? '\\').process('', words);
  return words.finish();
}
