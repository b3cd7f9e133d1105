import type { ContainerConfig } from '../image/types.js';
import type { HealthCheck, HealthCheckStatus } from './types.js';

/** Docker's defaults. */
const DEFAULTS = { interval: 30_000, timeout: 30_000, retries: 3, startPeriod: 0, startInterval: 5_000 };

export interface ResolvedHealthCheck {
  command: string[];
  interval: number;
  timeout: number;
  retries: number;
  startPeriod: number;
  startInterval: number;
}

/** withHealthCheck's check, else the image's HEALTHCHECK (nanoseconds there); undefined for none or NONE. */
export function resolveHealthCheck(
  own: HealthCheck | undefined,
  image: ContainerConfig['Healthcheck'],
): ResolvedHealthCheck | undefined {
  const fromImage = image?.Test
    ? {
        test: image.Test,
        interval: nanos(image.Interval),
        timeout: nanos(image.Timeout),
        retries: image.Retries || undefined,
        startPeriod: nanos(image.StartPeriod),
        startInterval: nanos((image as { StartInterval?: number }).StartInterval),
      }
    : undefined;
  const check = own ?? fromImage;
  if (!check) return undefined;
  const [kind, ...rest] = check.test as string[];
  let command: string[];
  if (kind === 'CMD') command = rest;
  else if (kind === 'CMD-SHELL') command = ['/bin/sh', '-c', rest.join(' ')];
  else return undefined; // NONE (or, from an image, nothing petri knows)
  return {
    command,
    interval: check.interval || DEFAULTS.interval,
    timeout: check.timeout || DEFAULTS.timeout,
    retries: check.retries || DEFAULTS.retries,
    startPeriod: check.startPeriod || DEFAULTS.startPeriod,
    startInterval: check.startInterval || DEFAULTS.startInterval,
  };
}

function nanos(value: number | undefined): number | undefined {
  return value ? value / 1e6 : undefined;
}

/**
 * Runs a container's health check the way Docker does, for as long as the
 * container runs: the first check one interval after the start (the start
 * interval during the start period), then one interval after each check
 * ended. A check passes when it exits 0 within the timeout. Status: starting,
 * healthy after a pass, unhealthy after `retries` failures in a row (failures
 * during the start period do not count).
 */
export class HealthMonitor {
  status: HealthCheckStatus = 'starting';
  #failures = 0;
  #last: { exitCode: number; output: string } | undefined;
  #timer: NodeJS.Timeout | undefined;
  #startedAt = 0;
  #running = false;
  readonly #listeners = new Set<() => void>();

  constructor(
    readonly check: ResolvedHealthCheck,
    private readonly run: (command: string[], timeoutMs: number) => Promise<{ exitCode: number; output: string }>,
  ) {}

  /** Starts checking (again, after a restart: the status starts over). */
  start(): void {
    this.stop();
    this.#running = true;
    this.status = 'starting';
    this.#failures = 0;
    this.#last = undefined;
    this.#startedAt = Date.now();
    this.#schedule();
    this.#emit();
  }

  stop(): void {
    this.#running = false;
    clearTimeout(this.#timer);
  }

  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** `healthy`, or `starting, 2 failures, the last exited 1: output`, for errors. */
  describe(): string {
    let text = `status ${this.status}`;
    if (this.#failures > 0) text += `, ${this.#failures} failure${this.#failures > 1 ? 's' : ''} in a row`;
    if (this.#last) {
      const output = this.#last.output.trim().split('\n').slice(-2).join(' | ');
      text += `, the last check exited ${this.#last.exitCode}${output ? `: ${output}` : ''}`;
    } else if (this.status === 'starting') {
      text += ', no check has run yet';
    }
    return text;
  }

  #inStartPeriod(): boolean {
    return Date.now() - this.#startedAt < this.check.startPeriod;
  }

  #schedule(): void {
    if (!this.#running) return;
    const delay = this.#inStartPeriod() ? Math.min(this.check.startInterval, this.check.interval) : this.check.interval;
    this.#timer = setTimeout(() => void this.#probe(), delay);
    this.#timer.unref();
  }

  async #probe(): Promise<void> {
    let result: { exitCode: number; output: string };
    try {
      result = await this.run(this.check.command, this.check.timeout);
    } catch (error) {
      result = { exitCode: -1, output: (error as Error).message };
    }
    if (!this.#running) return;
    this.#last = result;
    const before = this.status;
    if (result.exitCode === 0) {
      this.#failures = 0;
      this.status = 'healthy';
    } else if (!this.#inStartPeriod()) {
      this.#failures++;
      if (this.#failures >= this.check.retries) this.status = 'unhealthy';
    }
    if (this.status !== before || result.exitCode !== 0) this.#emit();
    this.#schedule();
  }

  #emit(): void {
    for (const listener of this.#listeners) listener();
  }
}
