import { spawnSync } from 'node:child_process';
import { existsSync, rmSync, statSync } from 'node:fs';
import { PetriError } from '../errors.js';
import { dockerRunFlags, type ReproSettings, readFailureLabels, shellQuote } from '../test-runner/failure-labels.js';
import { formatDuration } from '../util/units.js';
import { type OptionSpec, parseArgs } from './args.js';

export const HELP = `usage: petri repro ARTIFACT.tar|IMAGE [--shell [SHELL]] [--rerun] [--docker [--print]]

Opens a failed petri test job again: loads its archive (petri-artifacts/<job>.tar)
or takes its image (petri-failed/<job>:<run-id>) and starts a container in the
state the job failed in, with the job's env, workdir, user and limits.

  (default), --shell [SHELL]  an interactive shell (default /bin/sh); needs a terminal
  --rerun                     run the failed command again; exits with its exit code
                              (124 when it times out, like the job)
  --docker                    the same with Docker, for machines with only Docker (needs
                              neither root nor petri's store): where a Docker daemon answers,
                              runs docker load, then docker run (a shell on a terminal, or the
                              command with --rerun, exiting with its exit code); else, or
                              without a terminal and without --rerun, prints those commands
  --print                     with --docker: only print the docker commands
`;

const SPECS: OptionSpec[] = [
  { name: 'shell', value: true },
  { name: 'rerun' },
  { name: 'docker' },
  { name: 'print' },
  { name: 'help' },
];

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
  if (options.rerun === true && options.shell !== undefined) {
    throw new PetriError('petri repro: choose one of --shell and --rerun');
  }
  if (options.print && !options.docker) throw new PetriError('petri repro: --print goes with --docker');
  const isFile = existsSync(target) && statSync(target).isFile();
  if (!isFile && /\.(tar|tgz|tar\.gz)$/.test(target)) throw new PetriError(`petri repro: ${target} does not exist`);

  if (options.docker) {
    const plan = await dockerPlan(target, isFile);
    const interactive = options.rerun !== true && process.stdin.isTTY === true;
    if (options.print || !(options.rerun === true || interactive) || !dockerAnswers()) {
      printDocker(plan);
      return 0;
    }
    return runDocker(plan, options.rerun === true ? 'rerun' : (shell ?? 'sh'));
  }

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

interface DockerPlan {
  /** The archive to `docker load`, and whether petri wrote it (from its store) for this. */
  archive: string;
  saved: boolean;
  image: string;
  settings: ReproSettings | undefined;
  flags: string[];
  /** For printing: how to get the archive when it is not there yet. */
  loadLine: string;
}

async function dockerPlan(target: string, isFile: boolean): Promise<DockerPlan> {
  if (isFile) {
    const { readArchiveImage } = await import('../test-runner/archive-info.js');
    const archive = await readArchiveImage(target);
    const settings = readFailureLabels(archive.config.config?.Labels);
    return {
      archive: target,
      saved: false,
      image: archive.tags[0] ?? target,
      settings,
      flags: settings ? dockerRunFlags(settings) : [],
      loadLine: `docker load -i ${shellQuote(target)}`,
    };
  }
  const { ImageStore } = await import('../image/store.js');
  const found = await ImageStore.open().resolve(target);
  const settings = readFailureLabels(found.config.config?.Labels);
  const file = `${target.replace(/[/:@]/g, '_')}.tar`;
  return {
    archive: file,
    saved: true,
    image: target,
    settings,
    flags: settings ? dockerRunFlags(settings) : [],
    loadLine: `petri save ${shellQuote(target)} -o ${shellQuote(file)} && docker load -i ${shellQuote(file)}`,
  };
}

function dockerRunArgs(plan: DockerPlan, extra: string[], command: string[] = []): string[] {
  return ['run', ...extra, ...plan.flags, plan.image, ...command];
}

function printDocker(plan: DockerPlan): void {
  const run = (extra: string[], command: string[] = []) =>
    ['docker', ...dockerRunArgs(plan, extra, command)].map(shellQuote).join(' ');
  process.stdout.write(`# load the image:\n${plan.loadLine}\n`);
  process.stdout.write(`# a shell in the failed state:\n${run(['-it', '--rm'])} sh\n`);
  if (plan.settings) {
    process.stdout.write(
      `# run the failed command again (the image's Cmd): exit code ${plan.settings.exitCode} expected\n${run(['--rm'])}\n`,
    );
  }
}

/** Whether `docker` is installed and its daemon answers (DOCKER_HOST and contexts as the docker CLI reads them). */
function dockerAnswers(): boolean {
  const r = spawnSync('docker', ['version', '--format', '{{.Server.Version}}'], {
    stdio: ['ignore', 'pipe', 'ignore'],
    timeout: 15_000,
  });
  return r.status === 0 && r.stdout.toString().trim() !== '';
}

/** docker load, then docker run: the failed command again (its exit code) or a shell on the terminal. */
async function runDocker(plan: DockerPlan, mode: 'rerun' | string): Promise<number> {
  if (mode === 'rerun' && !plan.settings) {
    throw new PetriError(
      `petri repro: image ${plan.image} has no petri test labels (org.petri.test.*): it is not a failed job's image, so there is no command to run again`,
    );
  }
  const say = (args: string[]) =>
    process.stderr.write(`petri repro: ${['docker', ...args].map(shellQuote).join(' ')}\n`);
  let archive = plan.archive;
  let temp: string | undefined;
  if (plan.saved) {
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { ImageStore } = await import('../image/store.js');
    const { saveImages } = await import('../image/archive/save.js');
    temp = mkdtempSync(join(tmpdir(), 'petri-repro-'));
    archive = join(temp, 'image.tar');
    process.stderr.write(`petri repro: petri save ${shellQuote(plan.image)}\n`);
    await saveImages(ImageStore.open(), [plan.image], archive);
  }
  try {
    say(['load', '-i', archive]);
    const load = spawnSync('docker', ['load', '-i', archive], { stdio: ['ignore', 'inherit', 'inherit'] });
    if (load.status !== 0)
      throw new PetriError(`petri repro: docker load -i ${archive} failed (exit code ${load.status})`);
  } finally {
    if (temp) rmSync(temp, { recursive: true, force: true });
  }
  const args = mode === 'rerun' ? dockerRunArgs(plan, ['--rm']) : dockerRunArgs(plan, ['-it', '--rm'], [mode]);
  say(args);
  const run = spawnSync('docker', args, { stdio: 'inherit' });
  const code = run.status ?? 128 + 9;
  if (mode === 'rerun') {
    const before = plan.settings?.exitCode !== undefined ? ` (the job: exit code ${plan.settings.exitCode})` : '';
    process.stderr.write(`petri repro: exit code ${code}${before}\n`);
  }
  return code;
}
