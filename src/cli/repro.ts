import { existsSync, statSync } from 'node:fs';
import { PetriError } from '../errors.js';
import type { ImageConfig } from '../image/types.js';
import { dockerRunFlags, type ReproSettings, readFailureLabels, shellQuote } from '../test-runner/failure-labels.js';
import { formatDuration } from '../util/units.js';
import { type OptionSpec, parseArgs } from './args.js';

export const HELP = `usage: petri repro ARTIFACT.tar|IMAGE [--shell [SHELL]] [--rerun] [--docker]

Opens a failed petri test job again: loads its archive (petri-artifacts/<job>.tar)
or takes its image (petri-failed/<job>:<run-id>) and starts a container in the
state the job failed in, with the job's env, workdir, user and limits.

  (default), --shell [SHELL]  an interactive shell (default /bin/sh); needs a terminal
  --rerun                     run the failed command again; exits with its exit code
                              (124 when it times out, like the job)
  --docker                    print the docker commands that do the same, for
                              machines with only Docker (needs neither root nor petri's store)
`;

const SPECS: OptionSpec[] = [{ name: 'shell', value: true }, { name: 'rerun' }, { name: 'docker' }, { name: 'help' }];

export async function main(argv: string[]): Promise<number> {
  const { options, rest } = parseArgs('repro', withShellValue(argv), SPECS);
  if (options.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (rest.length !== 1) {
    throw new PetriError('petri repro: expected one ARTIFACT.tar or IMAGE (see petri repro --help)');
  }
  const target = rest[0] as string;
  const shell = typeof options.shell === 'string' && options.shell !== '' ? options.shell : undefined;
  const modes = [options.rerun === true, options.shell !== undefined, options.docker === true].filter(Boolean);
  if (modes.length > 1) throw new PetriError('petri repro: choose one of --shell, --rerun and --docker');
  const isFile = existsSync(target) && statSync(target).isFile();
  if (!isFile && /\.(tar|tgz|tar\.gz)$/.test(target)) throw new PetriError(`petri repro: ${target} does not exist`);

  if (options.docker) return printDocker(target, isFile);

  if (!options.rerun && !process.stdin.isTTY) {
    throw new PetriError(
      'petri repro: stdin is not a terminal, so there is no shell to open: use --rerun to run the failed command again (or run it from a terminal)',
    );
  }
  const [{ ImageStore }, { LayerCache }, { imageContainerOptions }, { Container }] = await Promise.all([
    import('../image/store.js'),
    import('../snapshot/layers.js'),
    import('../harness/image-run.js'),
    import('../runtime/container.js'),
  ]);
  const store = ImageStore.open();
  let ref = target;
  if (isFile) {
    const { loadArchive } = await import('../image/archive/load.js');
    const [loaded] = await loadArchive(store, target);
    if (!loaded) throw new PetriError(`petri repro: ${target} holds no image`);
    ref = loaded.tags[0] ?? loaded.id;
  }
  const image = await store.resolve(ref);
  const settings = readFailureLabels(image.config.config?.Labels);
  if (options.rerun && !settings) {
    throw new PetriError(
      `petri repro: image ${ref} has no petri test labels (org.petri.test.*): it is not a failed job's image, so there is no command to run again`,
    );
  }
  const command = options.rerun ? (settings as ReproSettings).command : [shell ?? '/bin/sh'];
  const containerOptions = await imageContainerOptions(store, new LayerCache(), ref, {
    command,
    entrypoint: [],
    env: settings?.env ?? {},
    ...(settings?.workdir !== undefined ? { workdir: settings.workdir } : {}),
    ...(settings?.user !== undefined ? { user: settings.user } : {}),
    ...(settings?.memory !== undefined ? { memory: settings.memory } : {}),
    ...(settings?.pids !== undefined ? { pids: settings.pids } : {}),
    ...(settings?.cpus !== undefined ? { cpus: settings.cpus } : {}),
    ...(options.rerun && settings?.timeoutMs !== undefined ? { timeoutMs: settings.timeoutMs } : {}),
  });
  const what = settings ? `job ${settings.job}` : `image ${ref}`;
  const failed = settings?.status ? `, which failed (${describe(settings)})` : '';
  if (options.rerun) {
    process.stderr.write(
      `petri repro: running ${what}'s command again${failed}: ${command.map(shellQuote).join(' ')}\n`,
    );
  } else {
    process.stderr.write(
      `petri repro: a shell in the state ${what} ended in${failed}${settings ? `; its command: ${settings.command.map(shellQuote).join(' ')}` : ''}. Exit the shell to remove the container.\n`,
    );
  }
  const container = Container.create(containerOptions);
  // The shell gets Ctrl-C from the terminal; --rerun passes it on, like petri run.
  const onSignal = (signal: NodeJS.Signals) => {
    if (options.rerun && container.state === 'running') container.kill(signal);
  };
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal);
  try {
    await container.start({ stdin: options.rerun ? 'ignore' : 'inherit', stdout: 'inherit', stderr: 'inherit' });
    const result = await container.wait();
    if (!options.rerun) return result.exitCode;
    if (result.timedOut) {
      process.stderr.write(
        `petri repro: timed out after ${formatDuration(settings?.timeoutMs ?? 0)}, as the job did\n`,
      );
      return 124;
    }
    const oom = result.oomKilled ? ', out of memory' : '';
    const before = settings?.exitCode !== undefined ? ` (the job: exit code ${settings.exitCode})` : '';
    process.stderr.write(`petri repro: exit code ${result.exitCode}${oom}${before}\n`);
    return result.exitCode;
  } finally {
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
    await container.remove();
  }
}

function describe(settings: ReproSettings): string {
  if (settings.status === 'timeout') return `timed out after ${formatDuration(settings.timeoutMs ?? 0)}`;
  if (settings.status === 'oom') return `out of memory, exit code ${settings.exitCode}`;
  return `exit code ${settings.exitCode}`;
}

/**
 * `--shell` takes a value only when one follows that is not the last
 * argument (the artifact): `--shell bash x.tar`, `--shell=bash`, `x.tar --shell`.
 */
function withShellValue(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg !== '--shell') {
      out.push(arg);
      continue;
    }
    const next = argv[i + 1];
    const positionalsAfter = argv.slice(i + 2).filter((a) => !a.startsWith('-')).length;
    const positionalsBefore = out.filter((a) => !a.startsWith('-')).length;
    if (next !== undefined && !next.startsWith('-') && positionalsBefore + positionalsAfter >= 1) {
      out.push(`--shell=${next}`);
      i++;
    } else out.push('--shell=');
  }
  return out;
}

async function printDocker(target: string, isFile: boolean): Promise<number> {
  let config: ImageConfig | undefined;
  let image = target;
  const lines: string[] = [];
  if (isFile) {
    const { readArchiveImage } = await import('../test-runner/archive-info.js');
    const archive = await readArchiveImage(target);
    config = archive.config;
    image = archive.tags[0] ?? target;
    lines.push(`docker load -i ${shellQuote(target)}`);
  } else {
    const { ImageStore } = await import('../image/store.js');
    const found = await ImageStore.open().resolve(target);
    config = found.config;
    const file = `${target.replace(/[/:@]/g, '_')}.tar`;
    lines.push(`petri save ${shellQuote(target)} -o ${shellQuote(file)}`, `docker load -i ${shellQuote(file)}`);
  }
  const settings = readFailureLabels(config.config?.Labels);
  const flags = settings ? dockerRunFlags(settings) : [];
  const run = (extra: string[]) => ['docker', 'run', ...extra, ...flags, image].map(shellQuote).join(' ');
  process.stdout.write(`# load the image:\n${lines.join(' && ')}\n`);
  process.stdout.write(`# a shell in the failed state:\n${run(['-it', '--rm'])} sh\n`);
  if (settings) {
    process.stdout.write(
      `# run the failed command again (the image's Cmd): exit code ${settings.exitCode} expected\n${run(['--rm'])}\n`,
    );
  }
  return 0;
}
