import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import * as core from '@actions/core';
import { errorLine } from '../errors.js';
import { consoleReporter } from '../report/console.js';
import { petriRoot } from '../runtime/paths.js';
import { processStartTime } from '../runtime/record.js';
import { findConfig, loadConfig } from '../test-runner/config-load.js';
import type { JobResult } from '../test-runner/events.js';
import { jobLines } from './config-lines.js';
import { inWorkingDirectory, petriTestArgs, readInputs } from './inputs.js';
import { existsAsRoot, giveBack, rootAccess } from './root.js';
import { type PetriRun, runPetri } from './run-petri.js';
import { STATE } from './state.js';
import { restoreStore, type StoreCacheOptions, saveStore, storeCacheKey } from './store-cache.js';
import { annotationMessage, type FailureDetail, summaryMarkdown } from './summary.js';
import { uploadFailures } from './upload.js';

/** How many of a job's last output lines the summary and the annotations show. */
const LAST_LINES = 20;

/** The highest folder above each path that does not exist yet (petri, root, would leave it root's). */
function missingParents(paths: string[]): string[] {
  const missing: string[] = [];
  for (const path of paths) {
    let highest: string | undefined;
    for (let dir = dirname(path); dir !== dirname(dir) && !existsSync(dir); dir = dirname(dir)) highest = dir;
    if (highest !== undefined) missing.push(highest);
  }
  return missing;
}

/** The action's main step: runs `petri test`, then reports, uploads and caches. Never throws: failures go to setFailed. */
export async function runMain(petriScript: string): Promise<void> {
  try {
    await main(petriScript);
  } catch (error) {
    core.setFailed(errorLine(error));
  }
}

async function main(petriScript: string): Promise<void> {
  const inputs = readInputs();
  const access = rootAccess();
  const cwd = inputs.workingDirectory;
  const workspace = process.env.GITHUB_WORKSPACE ?? cwd;
  let configFile: string | undefined;
  try {
    configFile = inputs.config !== undefined ? resolve(cwd, inputs.config) : findConfig(cwd);
  } catch {
    // petri says what is wrong
  }
  core.saveState(STATE.script, petriScript);
  core.saveState(STATE.root, process.env.PETRI_ROOT ?? '');

  const cacheOptions: StoreCacheOptions = {
    access,
    root: petriRoot(),
    staging: join(process.env.RUNNER_TEMP || tmpdir(), 'petri-store-cache'),
    log: (line) => core.info(line),
  };
  const cache = inputs.cache && configFile ? await restoreCache(configFile, cwd, cacheOptions) : undefined;

  // What petri writes, and the folders above it that petri (root) will make: all given back to this user after.
  const artifactsDir = inWorkingDirectory(inputs, inputs.artifacts);
  const junitFile = inputs.junit !== undefined ? inWorkingDirectory(inputs, inputs.junit) : undefined;
  const outputs = [artifactsDir, ...(junitFile ? [junitFile] : [])];
  const madeParents = missingParents(outputs);

  const tails = new Map<string, string[]>();
  const render = consoleReporter('plain', process.stdout, process.stdout);
  const run = await runPetri({
    access,
    petri: [process.execPath, petriScript],
    args: petriTestArgs(inputs),
    cwd,
    onSpawn: (pid) => {
      core.saveState(STATE.pid, pid);
      core.saveState(STATE.startTime, processStartTime(pid) ?? 0);
    },
    onEvent: (event) => {
      if (event.type === 'plan') core.saveState(STATE.runId, event.runId);
      if (event.type === 'job-start') tails.set(event.job, []);
      if (event.type === 'output') {
        const tail = tails.get(event.job) ?? [];
        tail.push(event.line);
        if (tail.length > LAST_LINES) tail.shift();
        tails.set(event.job, tail);
      }
      render(event);
    },
    onText: (line, stream) => (stream === 'stdout' ? process.stdout : process.stderr).write(`${line}\n`),
  });
  core.saveState(STATE.finished, '1');

  // A folder it made holds only what it wrote there (its outputs, or the folders on their way).
  const written = [...new Set([...madeParents, ...outputs])].filter((path) => existsAsRoot(access, path));
  try {
    giveBack(access, written);
  } catch (error) {
    core.warning(`could not give petri's files back to this user: ${errorLine(error)}`);
  }

  const results = run.summary?.results ?? [];
  const error = petriError(run);
  const uploads = inputs.uploadFailed
    ? await uploadFailures(results, {
        cwd,
        prefix: inputs.artifactPrefix,
        attempt: Number.parseInt(process.env.GITHUB_RUN_ATTEMPT ?? '1', 10) || 1,
        ...(inputs.retentionDays !== undefined ? { retentionDays: inputs.retentionDays } : {}),
        log: (line) => core.info(line),
      })
    : new Map();
  const details = new Map<string, FailureDetail>();
  for (const r of results.filter((result) => result.status === 'failed')) {
    const upload = uploads.get(r.name);
    const dockerRun = dockerRunCommand(r, cwd);
    details.set(r.name, {
      lastLines: tails.get(r.name) ?? [],
      ...(upload ? { upload } : {}),
      ...(dockerRun ? { dockerRun } : {}),
    });
  }
  const github = {
    ...(process.env.GITHUB_RUN_ID ? { githubRunId: process.env.GITHUB_RUN_ID } : {}),
    ...(process.env.GITHUB_REPOSITORY ? { repository: process.env.GITHUB_REPOSITORY } : {}),
  };
  const shownConfig = configFile ? workspacePath(workspace, configFile) : undefined;
  annotate(results, details, github, configFile, shownConfig);

  const passed = results.filter((r) => r.status === 'passed').length;
  const notPassed = results.filter((r) => r.status !== 'passed');
  core.setOutput('passed', passed);
  core.setOutput('failed', notPassed.length);
  core.setOutput('junit', junitFile && run.summary?.junit !== undefined ? junitFile : '');
  core.setOutput('artifacts', results.some((r) => r.artifact) ? artifactsDir : '');
  core.setOutput('run-id', run.runId ?? '');

  if (process.env.GITHUB_STEP_SUMMARY) {
    const markdown = summaryMarkdown({
      results,
      details,
      ...github,
      ...(run.runId ? { runId: run.runId } : {}),
      ...(run.summary ? { durationMs: run.summary.durationMs } : {}),
      ...(inputs.shard ? { shard: inputs.shard } : {}),
      ...(shownConfig ? { config: shownConfig } : {}),
      ...(error !== undefined ? { error } : {}),
    });
    await core.summary.addRaw(markdown).write();
  }

  if (cache && interrupted(run)) core.info('cache: petri test was interrupted: not saving the store');
  else if (cache) await saveStore(cache.key, cache.cached, cacheOptions).catch((e) => core.warning(errorLine(e)));

  if (error !== undefined) core.setFailed(error);
  else if (notPassed.length > 0) {
    core.setFailed(
      `petri test: ${notPassed.length} of ${results.length} jobs did not pass: ${notPassed.map((r) => `${r.name} (${r.status})`).join(', ')}`,
    );
  }
}

async function restoreCache(
  configFile: string,
  cwd: string,
  options: StoreCacheOptions,
): Promise<{ key: string; cached: boolean } | undefined> {
  const { isFeatureAvailable } = await import('@actions/cache');
  if (!isFeatureAvailable()) {
    // @actions/cache talks to the v2 service where the runner says so (ACTIONS_CACHE_SERVICE_V2), else to v1.
    const needs = process.env.ACTIONS_CACHE_SERVICE_V2 ? 'ACTIONS_RESULTS_URL' : 'ACTIONS_CACHE_URL';
    core.info(`cache: the Actions cache service is not available here (no ${needs}): skipped`);
    return undefined;
  }
  let key: string;
  try {
    key = storeCacheKey(await loadConfig(configFile, cwd));
  } catch (error) {
    // A config petri cannot load: petri says so itself.
    core.info(`cache: skipped: ${errorLine(error)}`);
    return undefined;
  }
  try {
    return { key, ...(await restoreStore(key, options)) };
  } catch (error) {
    core.warning(`cache: not restored: ${errorLine(error)}`);
    return { key, cached: false };
  }
}

/** Whether petri stopped on SIGINT or SIGTERM (the workflow was cancelled). */
function interrupted(run: PetriRun): boolean {
  return run.exitCode === 130 || run.exitCode === 143;
}

/** petri's own failure (bad config, bad input, interrupted), when it did not report jobs. */
function petriError(run: PetriRun): string | undefined {
  if (interrupted(run)) return 'petri test was interrupted';
  if (run.summary || run.exitCode === 0) return undefined;
  const said = run.stderrTail.filter((line) => line.trim() !== '').at(-1);
  const how = run.signal ? `was killed by ${run.signal}` : `exited with code ${run.exitCode}`;
  return said ? `petri test ${how}: ${said}` : `petri test ${how}`;
}

/** Each job that failed or could not run, as an error annotation on its line of the config file. */
function annotate(
  results: JobResult[],
  details: Map<string, FailureDetail>,
  github: { githubRunId?: string; repository?: string },
  configFile: string | undefined,
  shownConfig: string | undefined,
): void {
  let lines = new Map<string, number>();
  try {
    if (configFile)
      lines = jobLines(
        readFileSync(configFile, 'utf8'),
        results.map((r) => r.name),
      );
  } catch {
    // no lines then
  }
  for (const r of results) {
    if (r.status !== 'failed' && r.status !== 'error') continue;
    const line = lines.get(r.name);
    const where = shownConfig ? { file: shownConfig, ...(line !== undefined ? { startLine: line } : {}) } : {};
    const message =
      r.status === 'failed'
        ? annotationMessage(r, details.get(r.name) ?? { lastLines: [] }, github)
        : `${r.name}: ${r.message}`;
    core.error(message, {
      title: `petri test: job ${r.name} ${r.status === 'failed' ? 'failed' : 'could not run'}`,
      ...where,
    });
  }
}

/** The `docker run` command of a failed job's report (`<job>.json`), without its `docker load`. */
function dockerRunCommand(r: JobResult, cwd: string): string | undefined {
  if (!r.artifact) return undefined;
  try {
    const report = JSON.parse(readFileSync(resolve(cwd, r.artifact.json), 'utf8')) as { repro?: { docker?: string } };
    return report.repro?.docker?.split(' && ').find((part) => part.startsWith('docker run '));
  } catch {
    return undefined;
  }
}

/** A path as the run page shows it: relative to the workspace, with `/`. */
function workspacePath(workspace: string, file: string): string {
  const rel = relative(workspace, file);
  return rel.startsWith('..') ? file : rel.split(sep).join('/');
}
