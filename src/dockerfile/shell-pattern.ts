/** Shell glob patterns (`*`, `?`, `[a-z]`, `[!x]`, `\x`) as regular expression source. */
export function globToRegex(pattern: string, escapeChar = '\\'): string {
  let out = '';
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i] as string;
    if (ch === '*') out += '[\\s\\S]*';
    else if (ch === '?') out += '[\\s\\S]';
    else if (ch === escapeChar && i + 1 < pattern.length) out += escapeRegex(pattern[++i] as string);
    else if (ch === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) {
        out += '\\[';
        continue;
      }
      let body = pattern.slice(i + 1, end);
      const negate = body.startsWith('!') || body.startsWith('^');
      if (negate) body = body.slice(1);
      out += `[${negate ? '^' : ''}${body.replace(/[\\\]]/g, '\\$&')}]`;
      i = end;
    } else out += escapeRegex(ch);
  }
  return out;
}

const escapeRegex = (text: string) => text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

const fullMatch = (re: RegExp, text: string) => {
  const match = re.exec(text);
  return match !== null && match[0].length === text.length;
};

/** `${VAR#pat}` / `${VAR##pat}`: the value without its shortest / longest prefix matching the pattern. */
export function removePrefix(value: string, pattern: string, longest: boolean): string {
  const re = new RegExp(`^(?:${globToRegex(pattern)})`);
  for (let n = 0; n <= value.length; n++) {
    const len = longest ? value.length - n : n;
    if (fullMatch(re, value.slice(0, len))) return value.slice(len);
  }
  return value;
}

/** `${VAR%pat}` / `${VAR%%pat}`: the value without its shortest / longest suffix matching the pattern. */
export function removeSuffix(value: string, pattern: string, longest: boolean): string {
  const re = new RegExp(`^(?:${globToRegex(pattern)})`);
  for (let n = 0; n <= value.length; n++) {
    const len = longest ? value.length - n : n;
    if (fullMatch(re, value.slice(value.length - len))) return value.slice(0, value.length - len);
  }
  return value;
}

/** `${VAR/pat/repl}` (first match) and `${VAR//pat/repl}` (every match), matches as long as possible. */
export function replacePattern(value: string, pattern: string, replacement: string, all: boolean): string {
  if (pattern === '') return value;
  const re = new RegExp(globToRegex(pattern), all ? 'g' : '');
  return value.replace(re, () => replacement);
}
