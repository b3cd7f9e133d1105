import { type Directives, parseDirectives } from './directives.js';
import { DockerfileError, InstructionError } from './errors.js';
import type { ArgInstruction, FromInstruction, Instruction } from './instruction-types.js';
import { typeInstruction } from './instructions.js';
import { type Node, parseNodes } from './parser.js';

export type { Directives } from './directives.js';
export { DockerfileError } from './errors.js';
export { type ExpandOptions, expandInstruction } from './expand.js';
export type * from './instruction-types.js';
export type { Mount } from './mounts.js';
export type { Heredoc, Node } from './parser.js';
export { type Env, processWord, processWords, type ShellOptions } from './shell-words.js';

/** A build stage: a FROM and the instructions up to the next one. */
export interface Stage {
  index: number;
  /** From `AS name`, lower-cased. */
  name?: string;
  from: FromInstruction;
  instructions: Instruction[];
}

export interface Dockerfile {
  directives: Directives;
  instructions: Instruction[];
  /** ARGs before the first FROM (usable in FROM lines). */
  metaArgs: ArgInstruction[];
  stages: Stage[];
}

/** Where `token` is on the node's lines; the keyword when it is not found. */
function locate(node: Node, token: string | undefined): { line: number; column: number } {
  if (token) {
    for (const [offset, text] of node.lines.entries()) {
      const at = text.indexOf(token);
      if (at >= 0) return { line: node.line + offset, column: at + 1 };
    }
  }
  return { line: node.line, column: node.column };
}

/**
 * Parses a Dockerfile like BuildKit: directives, then nodes, then typed
 * instructions split into stages. Every error is a DockerfileError whose message
 * starts with `FILE:LINE:COLUMN: `.
 */
export function parseDockerfile(text: string, { file = 'Dockerfile' }: { file?: string } = {}): Dockerfile {
  const directives = parseDirectives(text.split('\n'), file);
  const nodes = parseNodes(text, directives.escape, file);
  if (nodes.length === 0) {
    throw new DockerfileError(file, 1, 1, `the Dockerfile ${file} has no instructions: start it with FROM IMAGE`);
  }
  const instructions: Instruction[] = [];
  const metaArgs: ArgInstruction[] = [];
  const stages: Stage[] = [];
  for (const node of nodes) {
    let instruction: Instruction;
    try {
      instruction = typeInstruction(node, directives.escape);
    } catch (error) {
      if (!(error instanceof InstructionError)) throw error;
      const { line, column } = locate(node, error.token);
      throw new DockerfileError(file, line, column, error.message);
    }
    instructions.push(instruction);
    const stage = stages.at(-1);
    if (instruction.keyword === 'FROM') {
      const { name } = instruction.args;
      if (name !== undefined && stages.some((s) => s.name === name)) {
        const { line, column } = locate(node, node.original.split(/\s+/).at(-1));
        throw new DockerfileError(file, line, column, `duplicate stage name ${name}: give each stage its own name`);
      }
      stages.push({
        index: stages.length,
        ...(name === undefined ? {} : { name }),
        from: instruction,
        instructions: [],
      });
    } else if (stage) {
      stage.instructions.push(instruction);
    } else if (instruction.keyword === 'ARG') {
      metaArgs.push(instruction);
    } else {
      throw new DockerfileError(
        file,
        node.line,
        node.column,
        `${instruction.keyword} comes before the first FROM: only ARG may come before FROM; add FROM IMAGE above it`,
      );
    }
  }
  return { directives, instructions, metaArgs, stages };
}

/** The `petri dockerfile parse --json` view of an instruction: keyword, flags, args, heredocs, line. */
export function instructionJson(instruction: Instruction): object {
  const { keyword, flags, heredocs, line } = instruction;
  let args: object = instruction.args;
  if (instruction.keyword === 'ONBUILD') {
    args = { ...instruction.args, instruction: instructionJson(instruction.args.instruction) };
  }
  return { keyword, flags, args, heredocs, line };
}
