import { DockerfileError } from './errors.js';

/** The parser directives at the top of a Dockerfile (`# syntax=…`, `# escape=…`, `# check=…`). */
export interface Directives {
  syntax?: string;
  /** The escape character: `\` (default) or `` ` ``. */
  escape: '\\' | '`';
  check?: string;
}

const DIRECTIVE = /^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$/;
const KNOWN = new Set(['syntax', 'escape', 'check']);
/** Frontend images that mean petri's own frontend: docker/dockerfile:1, 1.x, 1.x.y, optionally from docker.io and pinned. */
const OWN_FRONTEND = /^(docker\.io\/)?docker\/dockerfile:1(\.\d+){0,2}(@sha256:[0-9a-f]{64})?$/;

/**
 * Reads the directives: only comment lines of the form `# key=value` at the very
 * top count; the first other line (an instruction, a plain comment, an empty line)
 * ends them, as in BuildKit. Unknown keys are ignored like comments.
 */
export function parseDirectives(lines: readonly string[], file: string): Directives {
  const directives: Directives = { escape: '\\' };
  const seen = new Set<string>();
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).replace(/^\uFEFF/, '').replace(/\r$/, '');
    const match = DIRECTIVE.exec(line);
    if (!match) break;
    const key = (match[1] as string).toLowerCase();
    const value = match[2] as string;
    if (!KNOWN.has(key)) continue;
    const column = line.lastIndexOf(value) + 1;
    if (seen.has(key)) {
      throw new DockerfileError(file, i + 1, 1, `only one ${key} parser directive can be used; remove this one`);
    }
    seen.add(key);
    if (key === 'escape') {
      if (value !== '\\' && value !== '`') {
        throw new DockerfileError(file, i + 1, column, `invalid escape character ${value}: use \\ or \``);
      }
      directives.escape = value;
    } else if (key === 'syntax') {
      if (!OWN_FRONTEND.test(value)) {
        throw new DockerfileError(
          file,
          i + 1,
          column,
          `unsupported frontend ${value}: petri builds with its own BuildKit-compatible frontend; remove the syntax directive or set it to docker/dockerfile:1`,
        );
      }
      directives.syntax = value;
    } else {
      directives.check = value;
    }
  }
  return directives;
}
