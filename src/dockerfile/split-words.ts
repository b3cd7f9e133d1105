/**
 * The word splitters BuildKit's parser uses before any expansion: they split on
 * unquoted whitespace and keep quotes and escapes in the words (expansion removes
 * them later). Ports of `parseWords` and `extractBuilderFlags`.
 */

const isSpace = (ch: string) => /\s/.test(ch);

/** Splits on unquoted whitespace; quotes and escapeChar characters stay in the words. */
export function splitWords(text: string, escapeChar: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote = '';
  for (let pos = 0; pos < text.length; pos++) {
    let ch = text[pos] as string;
    if (quote) {
      if (ch === quote) quote = '';
      else if (ch === escapeChar && quote !== "'" && pos + 1 < text.length) {
        word += ch;
        ch = text[++pos] as string;
      }
      word += ch;
      continue;
    }
    if (isSpace(ch)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
      continue;
    }
    inWord = true;
    if (ch === "'" || ch === '"') quote = ch;
    else if (ch === escapeChar) {
      if (pos + 1 === text.length) continue;
      word += ch;
      ch = text[++pos] as string;
    }
    word += ch;
  }
  if (inWord) words.push(word);
  return words;
}

/**
 * Takes the `--flag[=value]` words off the front of an instruction's arguments
 * (quotes removed, `\` escapes applied; `--` alone ends them) and returns them
 * with the rest of the line.
 */
export function extractFlags(text: string): { flags: string[]; rest: string } {
  const flags: string[] = [];
  let pos = 0;
  for (;;) {
    while (pos < text.length && isSpace(text[pos] as string)) pos++;
    if (!text.startsWith('--', pos)) return { flags, rest: text.slice(pos) };
    let word = '';
    let quote = '';
    let quoted = false;
    for (; pos < text.length; pos++) {
      let ch = text[pos] as string;
      if (!quote && isSpace(ch)) break;
      if (quote && ch === quote) {
        quote = '';
        continue;
      }
      if (!quote && (ch === '"' || ch === "'")) {
        quote = ch;
        quoted = true;
        continue;
      }
      if (ch === '\\') {
        if (pos + 1 === text.length) continue;
        ch = text[++pos] as string;
      }
      word += ch;
    }
    if (word === '--') {
      while (pos < text.length && isSpace(text[pos] as string)) pos++;
      return { flags, rest: text.slice(pos) };
    }
    if (quoted || word) flags.push(word);
  }
}

const HEREDOC_WORD = /^(\d*)<<(-?)([^<]*)$/;

export interface HeredocWord {
  name: string;
  chomp: boolean;
  expand: boolean;
}

/** `<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'` (and `2<<EOF`) as a heredoc start, else undefined. */
export function heredocWord(word: string): HeredocWord | undefined {
  const match = HEREDOC_WORD.exec(word);
  const rest = match?.[3];
  if (!match || !rest) return undefined;
  let name = '';
  let quote = '';
  for (let i = 0; i < rest.length; i++) {
    const ch = rest[i] as string;
    if (quote) {
      if (ch === quote) quote = '';
      else name += ch;
    } else if (ch === '"' || ch === "'") quote = ch;
    else if (ch === '\\' && i + 1 < rest.length) name += rest[++i];
    else name += ch;
  }
  if (!name || /\s/.test(name)) return undefined;
  return { name, chomp: match[2] === '-', expand: !/["']/.test(rest) };
}
