import { listContainers } from '../runtime/containers.js';
import { type OptionSpec, parseArgs } from './args.js';
import { ago, table } from './format.js';

const OPTIONS: OptionSpec[] = [{ name: 'all', short: 'a' }, { name: 'quiet', short: 'q' }, { name: 'help' }];

export const HELP = `usage: petri ps [-a] [-q]

Lists running containers (-a: also those that exited and were kept).
  -a, --all     include exited containers
  -q, --quiet   print only the ids
`;

export async function main(argv: string[]): Promise<number> {
  const { options } = parseArgs('ps', argv, OPTIONS);
  if (options.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const containers = listContainers().filter((c) => options.all || c.status === 'running');
  if (options.quiet) {
    for (const c of containers) process.stdout.write(`${c.id}\n`);
    return 0;
  }
  const rows = containers.map((c) => [
    c.id,
    c.image ?? '-',
    JSON.stringify(c.command.join(' ')).slice(0, 30),
    ago(c.createdAt),
    c.status === 'exited' ? `Exited (${c.exit?.exitCode ?? '?'}) ${ago(c.exit?.finishedAt ?? c.createdAt)}` : 'Up',
    c.name,
  ]);
  process.stdout.write(table(['CONTAINER ID', 'IMAGE', 'COMMAND', 'CREATED', 'STATUS', 'NAMES'], rows));
  return 0;
}
