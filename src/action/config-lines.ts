/**
 * The line (1-based) of each job in a config file's text: the line of its
 * `name` key — `"name": "unit"` in JSON, `name: unit` or `- name: 'unit'` in
 * YAML, `name: 'unit'` in JavaScript. A name written some other way (built at
 * run time, a YAML anchor) is not found, and its job has no line.
 */
export function jobLines(text: string, names: readonly string[]): Map<string, number> {
  const lines = text.split('\n');
  const found = new Map<string, number>();
  for (const name of names) {
    const quoted = escapeRegExp(name);
    const pattern = new RegExp(
      `(?:^|[\\s{,\\-])["']?name["']?\\s*:\\s*(?:"${quoted}"|'${quoted}'|\`${quoted}\`|${quoted}(?=\\s*(?:$|[,}#])))`,
    );
    const index = lines.findIndex((line) => pattern.test(line));
    if (index >= 0) found.set(name, index + 1);
  }
  return found;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
