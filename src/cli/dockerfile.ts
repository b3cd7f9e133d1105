import { readFileSync } from 'node:fs';
import { type Instruction, instructionJson, parseDockerfile } from '../dockerfile/index.js';
import { errorLine, PetriError } from '../errors.js';
import { type OptionSpec, parseArgs } from './args.js';

export const HELP = `usage: petri dockerfile parse [--json] FILE

Parses a Dockerfile the way BuildKit does and prints one line per instruction
(LINE KEYWORD [--flags] ARGS, heredoc bodies indented below it), or with --json
the typed instructions as a JSON array. A parse error is one line,
FILE:LINE:COLUMN: message, and exit code 1.
`;

const SPECS: OptionSpec[] = [{ name: 'help' }, { name: 'json' }];

function textLine(instruction: Instruction): string {
  const { flags, args } = instruction.source;
  const words = [String(instruction.line), instruction.keyword, ...flags];
  if (args !== '') words.push(args);
  const lines = [words.join(' ')];
  for (const heredoc of instruction.heredocs) {
    const body = heredoc.content.endsWith('\n') ? heredoc.content.slice(0, -1) : heredoc.content;
    for (const line of [...body.split('\n'), heredoc.name]) lines.push(line === '' ? '' : `    ${line}`);
  }
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const { options, rest } = parseArgs('dockerfile', argv, SPECS);
  if (options.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const [subcommand, file, ...extra] = rest;
  if (subcommand !== 'parse') {
    throw new PetriError(
      `petri dockerfile: unknown subcommand ${subcommand ?? '(none)'}: use petri dockerfile parse FILE`,
    );
  }
  if (file === undefined || extra.length > 0) throw new PetriError('petri dockerfile parse: expected one FILE');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : errorLine(error);
    process.stderr.write(`petri: ${file}:1:1: cannot read the Dockerfile: ${reason}\n`);
    return 1;
  }
  let instructions: Instruction[];
  try {
    instructions = parseDockerfile(text, { file }).instructions;
  } catch (error) {
    if (!(error instanceof PetriError)) throw error;
    process.stderr.write(`petri: ${errorLine(error)}\n`);
    return 1;
  }
  if (options.json) process.stdout.write(`${JSON.stringify(instructions.map(instructionJson), null, 2)}\n`);
  else process.stdout.write(`${instructions.map(textLine).join('\n')}\n`);
  return 0;
}
