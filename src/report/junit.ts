import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import junitModule, { type Builder } from 'junit-report-builder';
import type { JobResult, ReadyImage } from '../test-runner/events.js';
import { xmlSafe } from '../test-runner/output.js';

// A CommonJS module whose exports are the builder itself (its types say `default`).
const builder = ((junitModule as unknown as { default?: Builder }).default ?? junitModule) as unknown as Builder;

/** How much of a job's stdout and of its stderr go into the report (the last part). */
const OUTPUT_CHARS = 32 * 1024;

export interface JunitRun {
  runId: string;
  startedAt: Date;
  results: JobResult[];
  /** The images by config name; absent when an image could not be had. */
  images: Map<string, ReadyImage>;
}

/**
 * JUnit XML (the Jenkins xUnit plugin's schema): a testsuite per image, a
 * testcase per job; a failed job is a `failure` (its type: exit, timeout, oom,
 * signal; the message has the command that reproduces it), a job that could
 * not run an `error`, an interrupted one `skipped`. Suite properties carry the
 * image id and manifest digest and each failed job's artifact. Output is cut
 * to its last 32 KiB per stream and stripped of what XML cannot hold.
 */
export function junitXml(run: JunitRun): string {
  const report = builder.newBuilder().name('petri test');
  const byImage = new Map<string, JobResult[]>();
  for (const result of run.results) byImage.set(result.image, [...(byImage.get(result.image) ?? []), result]);
  for (const [imageName, results] of byImage) {
    const suite = report
      .testSuite()
      .name(xmlSafe(imageName))
      .timestamp(run.startedAt)
      .time(seconds(results.reduce((sum, r) => sum + r.durationMs, 0)))
      .property('run-id', run.runId);
    const image = run.images.get(imageName);
    if (image) suite.property('image.id', image.id).property('image.manifest', image.manifestDigest);
    for (const result of results) {
      if (result.artifact) {
        suite.property(xmlSafe(`artifact.${result.name}`), xmlSafe(result.artifact.tar));
        suite.property(xmlSafe(`artifact.${result.name}.image`), xmlSafe(result.artifact.image));
      }
      if (result.pushed) suite.property(xmlSafe(`artifact.${result.name}.pushed`), xmlSafe(result.pushed));
    }
    for (const result of results) {
      const testCase = suite
        .testCase()
        .className(xmlSafe(imageName))
        .name(xmlSafe(result.name))
        .time(seconds(result.durationMs));
      if (result.status === 'failed') {
        const how = result.repro
          ? `; reproduce: ${result.repro}`
          : result.artifactError
            ? `; the failed container could not be saved: ${result.artifactError}`
            : '';
        testCase.failure(xmlSafe(`${result.message}${how}`), result.failure ?? 'exit');
        if (result.command) testCase.stacktrace(cdata(`command: ${JSON.stringify(result.command)}`));
      } else if (result.status === 'error') {
        testCase.error(xmlSafe(result.message), 'error');
      } else if (result.status === 'interrupted') {
        testCase.skipped();
      }
      if (result.stdout) testCase.standardOutput(bounded(result.stdout));
      if (result.stderr) testCase.standardError(bounded(result.stderr));
    }
  }
  // The Jenkins schema has no `skipped` on <testsuites> (each <testsuite> keeps its count).
  return report.build().replace(/<testsuites\b[^>]*>/, (tag: string) => tag.replace(/\s+skipped="\d+"/, ''));
}

export function writeJunit(file: string, run: JunitRun): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, junitXml(run));
}

function seconds(ms: number): number {
  return Math.round(ms) / 1000;
}

/**
 * Text for a CDATA section: xmlbuilder splits only the first `]]>` of one, so a
 * later one would end it early; every `]]>` becomes `]] >`.
 */
function cdata(text: string): string {
  return xmlSafe(text).replaceAll(']]>', ']] >');
}

function bounded(text: string): string {
  const cut =
    text.length > OUTPUT_CHARS
      ? `[… ${text.length - OUTPUT_CHARS} characters before]\n${text.slice(-OUTPUT_CHARS)}`
      : text;
  return cdata(cut);
}
