import { readFileSync } from 'node:fs';
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { PetriError } from '../errors.js';
import type { ExitResult } from '../runtime/container.js';
import { http, https } from '../util/lazy-builtins.js';
import type { HealthMonitor } from './health-check.js';
import type { LogBuffer } from './logs.js';
import type { ExecResult } from './types.js';
import { port as checkPort, invalid, milliseconds } from './validate.js';

/** What a wait strategy sees of the container it waits for. */
export interface WaitTarget {
  readonly name: string;
  /** Host pid of the container's init while it runs. */
  readonly pid: number | undefined;
  /** The current run's end. */
  readonly exited: Promise<ExitResult>;
  readonly logs: LogBuffer;
  readonly health: HealthMonitor | undefined;
  /** Ports the container exposes (withExposedPorts). */
  readonly exposedPorts: readonly number[];
  /** The host port (on 127.0.0.1) a container port is published on while it runs. */
  mappedPort(port: number): number | undefined;
  exec(command: string[]): Promise<ExecResult>;
}

/** A strategy's reason for giving up before the timeout. */
export class WaitFailure extends Error {}

export const DEFAULT_STARTUP_TIMEOUT = 60_000;

/** How `start()` decides that a container is ready, with testcontainers-node's names. */
export abstract class WaitStrategy {
  protected startupTimeout = DEFAULT_STARTUP_TIMEOUT;
  protected startupTimeoutSet = false;

  withStartupTimeout(ms: number): this {
    this.startupTimeout = milliseconds('withStartupTimeout', ms, 'timeout');
    this.startupTimeoutSet = true;
    return this;
  }

  /** Milliseconds to wait at most. */
  get timeout(): number {
    return this.startupTimeout;
  }

  /** What is awaited, for errors: `log message "ready" (twice)`. */
  abstract describe(): string;

  /** Whether the container's command may end while waiting (one-shot containers). */
  get acceptsExit(): boolean {
    return false;
  }

  /**
   * Resolves when the container is ready; rejects with a WaitFailure when it
   * never will be. Keeps `progress.text` saying what it saw so far (for a
   * timeout's message): per call, as one strategy may wait for several containers at once.
   */
  abstract waitUntilReady(target: WaitTarget, signal: AbortSignal, progress: WaitProgress): Promise<void>;
}

/** What a strategy saw so far while waiting for one container. */
export interface WaitProgress {
  text?: string;
}

/** Waits until the output (stdout or stderr) has a line containing `message` (or matching it) `times` times. */
export class LogWaitStrategy extends WaitStrategy {
  constructor(
    readonly message: string | RegExp,
    readonly times = 1,
  ) {
    super();
    if (typeof message !== 'string' && !(message instanceof RegExp)) {
      throw invalid('Wait.forLogMessage', 'message', message, 'a string or a regular expression');
    }
    if (!Number.isSafeInteger(times) || times < 1)
      throw invalid('Wait.forLogMessage', 'times', times, 'an integer ≥ 1');
  }

  describe(): string {
    const what = typeof this.message === 'string' ? JSON.stringify(this.message) : String(this.message);
    return `log message ${what}${this.times > 1 ? ` ${this.times} times` : ''}`;
  }

  waitUntilReady(target: WaitTarget, signal: AbortSignal, progress: WaitProgress): Promise<void> {
    const { message, times } = this;
    let seen = 0;
    const report = () => {
      progress.text = `saw it ${seen} of ${times} time${times > 1 ? 's' : ''}`;
    };
    report();
    const matches =
      typeof message === 'string'
        ? (line: string) => line.includes(message)
        : (line: string) => {
            message.lastIndex = 0;
            return message.test(line);
          };
    return new Promise((resolve) => {
      let done = false;
      let unsubscribe: (() => void) | undefined;
      const finish = () => {
        done = true;
        unsubscribe?.();
        resolve();
      };
      unsubscribe = target.logs.onLine((line) => {
        if (done || !matches(line)) return;
        seen++;
        report();
        if (seen >= times) finish();
      });
      if (done) unsubscribe();
      signal.addEventListener('abort', () => unsubscribe?.(), { once: true });
    });
  }
}

/** Runs `sh -c COMMAND` in the container until it exits 0. */
export class ShellWaitStrategy extends WaitStrategy {
  constructor(
    readonly command: string,
    readonly interval = 100,
  ) {
    super();
    if (typeof command !== 'string' || command.trim() === '') {
      throw invalid('Wait.forSuccessfulCommand', 'command', command, 'a shell command, like "pg_isready"');
    }
  }

  describe(): string {
    return `command ${JSON.stringify(this.command)} to succeed`;
  }

  async waitUntilReady(target: WaitTarget, signal: AbortSignal, progress: WaitProgress): Promise<void> {
    let attempts = 0;
    while (!signal.aborted) {
      let last: ExecResult;
      try {
        last = await target.exec(['/bin/sh', '-c', this.command]);
      } catch (error) {
        if (signal.aborted) return;
        throw new WaitFailure(`cannot run it: ${(error as Error).message}`);
      }
      attempts++;
      if (last.exitCode === 0) return;
      const s = attempts > 1 ? 's' : '';
      progress.text = `${attempts} attempt${s}, the last exited with ${last.exitCode}${lastOutput(last.output)}`;
      await sleep(this.interval, undefined, { signal }).catch(() => {});
    }
  }
}

/** Waits until the container's health check (the image's HEALTHCHECK or withHealthCheck) reports healthy. */
export class HealthCheckWaitStrategy extends WaitStrategy {
  describe(): string {
    return 'health check to report healthy';
  }

  waitUntilReady(target: WaitTarget, signal: AbortSignal, progress: WaitProgress): Promise<void> {
    const health = target.health;
    if (!health) {
      return Promise.reject(
        new WaitFailure(
          'the container has no health check: the image has no HEALTHCHECK and withHealthCheck was not used',
        ),
      );
    }
    return new Promise((resolve, reject) => {
      const check = () => {
        progress.text = health.describe();
        if (health.status === 'healthy') finish();
        else if (health.status === 'unhealthy') finish(new WaitFailure(`it reported unhealthy (${health.describe()})`));
      };
      const finish = (error?: Error) => {
        off();
        if (error) reject(error);
        else resolve();
      };
      const off = health.onChange(check);
      signal.addEventListener('abort', off, { once: true });
      check();
    });
  }
}

/** Waits until the container's command exits 0 (a job, not a service). */
export class OneShotStartupWaitStrategy extends WaitStrategy {
  describe(): string {
    return 'the command to exit with 0';
  }

  override get acceptsExit(): boolean {
    return true;
  }

  async waitUntilReady(target: WaitTarget): Promise<void> {
    const exit = await target.exited;
    if (exit.exitCode !== 0) throw new WaitFailure(`it exited with ${describeExit(exit)}`);
  }
}

/**
 * Waits until TCP ports listen in the container's network namespace, read from
 * /proc/PID/net/tcp{,6} of its init: the ports given, else the exposed ones,
 * else (when asked for explicitly) any port. As the default strategy with no
 * exposed ports it is ready at once, as in testcontainers.
 */
export class HostPortWaitStrategy extends WaitStrategy {
  constructor(
    readonly ports: readonly number[],
    readonly anyWhenNone: boolean,
  ) {
    super();
    for (const port of ports) {
      if (!Number.isInteger(port) || port < 1 || port > 65535) {
        throw invalid('Wait.forListeningPorts', 'port', port, 'a TCP port number from 1 to 65535');
      }
    }
  }

  #wanted(target: WaitTarget): readonly number[] {
    return this.ports.length > 0 ? this.ports : target.exposedPorts;
  }

  describe(): string {
    if (this.ports.length > 0) return `ports ${this.ports.join(', ')} to listen`;
    return this.anyWhenNone ? 'a port to listen' : 'the exposed ports to listen';
  }

  async waitUntilReady(target: WaitTarget, signal: AbortSignal, progress: WaitProgress): Promise<void> {
    const wanted = this.#wanted(target);
    if (wanted.length === 0 && !this.anyWhenNone) return;
    while (!signal.aborted) {
      const listening = target.pid === undefined ? [] : listeningPorts(target.pid);
      progress.text = listening.length ? `listening: ${listening.join(', ')}` : 'nothing listens yet';
      const ready = wanted.length > 0 ? wanted.every((port) => listening.includes(port)) : listening.length > 0;
      if (ready) return;
      await sleep(50, undefined, { signal }).catch(() => {});
    }
  }
}

/** TCP ports in LISTEN state in the network namespace of process `pid`. */
export function listeningPorts(pid: number): number[] {
  const ports = new Set<number>();
  for (const file of ['tcp', 'tcp6']) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/net/${file}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields[3] !== '0A') continue; // TCP_LISTEN
      const port = Number.parseInt(fields[1]?.split(':')[1] ?? '', 16);
      if (port > 0) ports.add(port);
    }
  }
  return [...ports].sort((a, b) => a - b);
}

/** What one HTTP attempt got. */
type HttpOutcome = { status: number; statusText: string; body: string } | { error: string };

const MAX_BODY = 1 << 20;

/**
 * Requests `path` through the host port an exposed container port is
 * published on, every 100 ms, until the answer's status is 200 (or what
 * forStatusCode / forStatusCodeMatching accept) and, with
 * forResponsePredicate, its body satisfies the predicate. Plain HTTP unless
 * usingTls().
 */
export class HttpWaitStrategy extends WaitStrategy {
  readonly path: string;
  readonly port: number;
  #statuses: number[] = [];
  #statusPredicates: ((status: number) => boolean)[] = [];
  #bodyPredicate: ((body: string) => boolean | Promise<boolean>) | undefined;
  #method = 'GET';
  #headers: Record<string, string> = {};
  #readTimeout = 1000;
  #tls = false;
  #insecure = false;
  #interval = 100;

  /** `options.abortOnContainerExit` is accepted for testcontainers' sake: petri always stops waiting when the container exits. */
  constructor(path: string, port: number | `${number}/tcp`, _options: { abortOnContainerExit?: boolean } = {}) {
    super();
    if (typeof path !== 'string' || !path.startsWith('/')) {
      throw invalid('Wait.forHttp', 'path', path, 'a path starting with "/", like "/health"');
    }
    this.path = path;
    this.port = checkPort('Wait.forHttp', port);
  }

  /** Accepts this status (several calls: any of them). Default: 200. */
  forStatusCode(statusCode: number): this {
    if (!Number.isInteger(statusCode) || statusCode < 100 || statusCode > 599) {
      throw invalid('forStatusCode', 'status code', statusCode, 'an HTTP status from 100 to 599');
    }
    this.#statuses.push(statusCode);
    return this;
  }

  /** Accepts the statuses for which `predicate` returns true. */
  forStatusCodeMatching(predicate: (statusCode: number) => boolean): this {
    if (typeof predicate !== 'function') {
      throw invalid('forStatusCodeMatching', 'predicate', predicate, 'a function of the status code');
    }
    this.#statusPredicates.push(predicate);
    return this;
  }

  /** Also requires the body (as UTF-8 text) to satisfy `predicate`. */
  forResponsePredicate(predicate: (body: string) => boolean | Promise<boolean>): this {
    if (typeof predicate !== 'function') {
      throw invalid('forResponsePredicate', 'predicate', predicate, 'a function of the response body');
    }
    this.#bodyPredicate = predicate;
    return this;
  }

  withMethod(method: string): this {
    if (typeof method !== 'string' || !/^[A-Za-z]+$/.test(method)) {
      throw invalid('withMethod', 'method', method, 'an HTTP method, like "GET" or "POST"');
    }
    this.#method = method.toUpperCase();
    return this;
  }

  withHeaders(headers: Record<string, string>): this {
    if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) {
      throw invalid('withHeaders', 'headers', headers, 'an object of header names to values');
    }
    for (const [name, value] of Object.entries(headers)) {
      if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
        throw invalid('withHeaders', 'header name', name, 'a token like X-Request-Id');
      }
      if (typeof value !== 'string' || /[\r\n\0]/.test(value)) {
        throw invalid('withHeaders', `value of ${name}`, value, 'a string without line breaks');
      }
      this.#headers[name] = value;
    }
    return this;
  }

  withBasicCredentials(username: string, password: string): this {
    if (typeof username !== 'string' || typeof password !== 'string' || username.includes(':')) {
      throw invalid('withBasicCredentials', 'credentials', username, 'a user name without ":" and a password');
    }
    this.#headers.Authorization = `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
    return this;
  }

  /** How long one attempt may take (default 1 s). */
  withReadTimeout(ms: number): this {
    this.#readTimeout = milliseconds('withReadTimeout', ms, 'timeout');
    return this;
  }

  /** HTTPS instead of HTTP; the certificate is verified unless allowInsecure(). */
  usingTls(): this {
    this.#tls = true;
    return this;
  }

  allowInsecure(): this {
    this.#insecure = true;
    return this;
  }

  describe(): string {
    const scheme = this.#tls ? 'HTTPS' : 'HTTP';
    const statuses = this.#statuses.length ? this.#statuses.join(' or ') : this.#statusPredicates.length ? '' : '200';
    const expect = [
      statuses ? `status ${statuses}` : '',
      this.#statusPredicates.length ? 'a status the predicate accepts' : '',
    ]
      .filter(Boolean)
      .join(' or ');
    const body = this.#bodyPredicate ? ' and a body the predicate accepts' : '';
    return `${scheme} ${this.#method} ${this.path} on port ${this.port} to answer with ${expect}${body}`;
  }

  #statusOk(status: number): boolean {
    if (this.#statuses.length === 0 && this.#statusPredicates.length === 0) return status === 200;
    return this.#statuses.includes(status) || this.#statusPredicates.some((predicate) => predicate(status));
  }

  async waitUntilReady(target: WaitTarget, signal: AbortSignal, progress: WaitProgress): Promise<void> {
    if (!target.exposedPorts.includes(this.port)) {
      const exposed = target.exposedPorts.length ? `it exposes ${target.exposedPorts.join(', ')}` : 'it exposes none';
      throw new WaitFailure(`port ${this.port} is not exposed (${exposed}): add withExposedPorts(${this.port})`);
    }
    let attempts = 0;
    while (!signal.aborted) {
      const hostPort = target.mappedPort(this.port);
      if (hostPort === undefined)
        throw new WaitFailure(`port ${this.port} is not published (is the container running?)`);
      const outcome = await this.#attempt(hostPort, signal);
      if (signal.aborted) return;
      attempts++;
      let seen: string;
      if ('error' in outcome) {
        seen = outcome.error;
      } else if (!this.#statusOk(outcome.status)) {
        seen = `status ${outcome.status}${outcome.statusText ? ` ${outcome.statusText}` : ''}${bodyExcerpt(outcome.body)}`;
      } else if (this.#bodyPredicate && !(await this.#bodyPredicate(outcome.body))) {
        seen = `status ${outcome.status}, but the body did not satisfy the predicate${bodyExcerpt(outcome.body)}`;
      } else {
        return;
      }
      progress.text = `${attempts} attempt${attempts > 1 ? 's' : ''} to 127.0.0.1:${hostPort}, the last got ${seen}`;
      await sleep(this.#interval, undefined, { signal }).catch(() => {});
    }
  }

  #attempt(hostPort: number, signal: AbortSignal): Promise<HttpOutcome> {
    const { request } = this.#tls ? https() : http();
    return new Promise((resolve) => {
      let settled = false;
      const finish = (outcome: HttpOutcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(outcome);
      };
      const headers: OutgoingHttpHeaders = { ...this.#headers };
      const req = request(
        {
          host: '127.0.0.1',
          port: hostPort,
          path: this.path,
          method: this.#method,
          headers,
          agent: false,
          signal,
          ...(this.#tls ? { rejectUnauthorized: !this.#insecure, servername: 'localhost' } : {}),
        },
        (response: IncomingMessage) => {
          const chunks: Buffer[] = [];
          let size = 0;
          response.on('data', (chunk: Buffer) => {
            if (size < MAX_BODY) chunks.push(chunk);
            size += chunk.length;
          });
          response.on('end', () =>
            finish({
              status: response.statusCode ?? 0,
              statusText: response.statusMessage ?? '',
              body: Buffer.concat(chunks).toString('utf8'),
            }),
          );
          response.on('error', (error) => finish({ error: describeHttpError(error) }));
        },
      );
      const timer = setTimeout(() => {
        finish({ error: `no answer within ${this.#readTimeout}ms` });
        req.destroy();
      }, this.#readTimeout);
      req.on('error', (error) => finish({ error: describeHttpError(error) }));
      req.end();
    });
  }
}

function describeHttpError(error: Error): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ECONNRESET' || error.message === 'socket hang up') {
    return 'the connection closed without an answer (nothing listens on the port in the container?)';
  }
  if (code === 'ECONNREFUSED') return 'connection refused';
  return error.message;
}

function bodyExcerpt(body: string): string {
  const text = body.trim().replace(/\s+/g, ' ');
  if (!text) return '';
  return `: ${text.length > 120 ? `${text.slice(0, 117)}...` : text}`;
}

/** Waits for all of `strategies` at once; the first that fails fails them all. */
export class CompositeWaitStrategy extends WaitStrategy {
  constructor(readonly strategies: WaitStrategy[]) {
    super();
    if (!Array.isArray(strategies) || strategies.length === 0 || strategies.some((s) => !(s instanceof WaitStrategy))) {
      throw invalid('Wait.forAll', 'strategies', strategies, 'a non-empty array of wait strategies (Wait.for…)');
    }
  }

  /** Applies to every strategy in it, as testcontainers does. */
  override withStartupTimeout(ms: number): this {
    super.withStartupTimeout(ms);
    for (const strategy of this.strategies) strategy.withStartupTimeout(ms);
    return this;
  }

  /** The longest of the strategies' timeouts, unless set on the composite. */
  override get timeout(): number {
    return this.startupTimeoutSet ? this.startupTimeout : Math.max(...this.strategies.map((s) => s.timeout));
  }

  describe(): string {
    return `all of [${this.strategies.map((s) => s.describe()).join('; ')}]`;
  }

  override get acceptsExit(): boolean {
    return this.strategies.every((s) => s.acceptsExit);
  }

  async waitUntilReady(target: WaitTarget, signal: AbortSignal, progress: WaitProgress): Promise<void> {
    const pending = new Map(this.strategies.map((strategy) => [strategy, {} as WaitProgress]));
    // Each strategy reports into its own progress; the composite's text is made from theirs when read.
    Object.defineProperty(progress, 'text', {
      configurable: true,
      enumerable: true,
      get: () => {
        const waiting = [...pending].map(([s, p]) => (p.text ? `${s.describe()} (${p.text})` : s.describe()));
        return `still waiting for ${waiting.join('; ')}`;
      },
    });
    await Promise.all(
      this.strategies.map(async (strategy) => {
        try {
          await strategy.waitUntilReady(target, signal, pending.get(strategy) as WaitProgress);
          if (!signal.aborted) pending.delete(strategy);
        } catch (error) {
          if (error instanceof WaitFailure) throw new WaitFailure(`${strategy.describe()}: ${error.message}`);
          throw error;
        }
      }),
    );
  }
}

/** The strategies, as testcontainers-node names them. */
export const Wait = {
  forLogMessage: (message: string | RegExp, times = 1) => new LogWaitStrategy(message, times),
  forSuccessfulCommand: (command: string) => new ShellWaitStrategy(command),
  forHealthCheck: () => new HealthCheckWaitStrategy(),
  forOneShotStartup: () => new OneShotStartupWaitStrategy(),
  /** The ports given, else the container's exposed ports, else any listening TCP port. */
  forListeningPorts: (...ports: number[]) => new HostPortWaitStrategy(ports, true),
  /** An HTTP request through the host port `port` is published on (withExposedPorts): see HttpWaitStrategy. */
  forHttp: (path: string, port: number | `${number}/tcp`, options?: { abortOnContainerExit?: boolean }) =>
    new HttpWaitStrategy(path, port, options),
  forAll: (strategies: WaitStrategy[]) => new CompositeWaitStrategy(strategies),
};

/** An exit as errors tell it: `code 3`, `signal 9 (SIGKILL)`, with OOM and timeouts. */
export function describeExit(exit: ExitResult): string {
  let text = exit.signal === null ? `code ${exit.exitCode}` : `signal ${exit.signal} (exit code ${exit.exitCode})`;
  if (exit.oomKilled) text += ', killed for running out of memory';
  return text;
}

function lastOutput(output: string): string {
  const text = output.trim().split('\n').slice(-3).join(' | ');
  if (!text) return '';
  return `: ${text.length > 200 ? `${text.slice(0, 197)}...` : text}`;
}

/** Why a container did not become ready, with what it left: its exit and its last log lines. */
export class StartupError extends PetriError {
  constructor(
    message: string,
    readonly strategy: string,
    readonly waitedMs: number,
    readonly exit: ExitResult | undefined,
    readonly logTail: string[],
  ) {
    super(message, { code: 'ESTARTUP' });
  }
}
