import type { Readable } from 'node:stream';

/** The option types of the testcontainers-style API, with testcontainers-node's names and units. */

export type Environment = Record<string, string>;
export type Labels = Record<string, string>;

/** `ro`/`rw`; `z`/`Z` (SELinux relabelling) are accepted and mean `rw`. */
export type BindMode = 'rw' | 'ro' | 'z' | 'Z';

export interface BindMount {
  /** Absolute host path (file or directory). */
  source: string;
  /** Absolute path in the container. */
  target: string;
  mode?: BindMode;
}

export interface FileToCopy {
  /** Host path. */
  source: string;
  /** Absolute path in the container. */
  target: string;
  /** Permission bits (default: the source's). */
  mode?: number;
}

export type DirectoryToCopy = FileToCopy;

export type Content = string | Buffer | Readable;

export interface ContentToCopy {
  content: Content;
  target: string;
  /** Permission bits (default 0644). */
  mode?: number;
}

/** Path in the container → tmpfs mount options (`size=64m,mode=1777`, or `''`). */
export type TmpFs = Record<string, string>;

/** Resource name (`nofile`, `nproc`, …) → limits; one missing takes the other's value. petri only lowers limits. */
export type Ulimits = Record<string, { hard: number | undefined; soft: number | undefined }>;

export interface ResourcesQuota {
  /** Memory limit in gigabytes (GiB, as testcontainers: 0.5 is 512 MiB). */
  memory?: number;
  /** CPU quota in CPUs (0.5 is half a CPU). */
  cpu?: number;
}

/** Like Docker's HEALTHCHECK; durations in milliseconds. */
export interface HealthCheck {
  test: ['CMD-SHELL', string] | ['CMD', ...string[]] | ['NONE'];
  /** Between checks (default 30 s), and before the first one. */
  interval?: number;
  /** A check that takes longer fails (default 30 s). */
  timeout?: number;
  /** Consecutive failures that make the container unhealthy (default 3). */
  retries?: number;
  /** Failures during this time after the start do not count (default 0). */
  startPeriod?: number;
  /** Between checks during the start period (default 5 s). */
  startInterval?: number;
}

export type HealthCheckStatus = 'none' | 'starting' | 'healthy' | 'unhealthy';

/** A container port published on a given host port (on 127.0.0.1); `protocol` may only be `tcp`. */
export interface PortWithBinding {
  container: number;
  host: number;
  protocol?: 'tcp';
}

/** `5432`, `"5432/tcp"`, or `{ container: 5432, host: 15432 }` (testcontainers' forms; TCP only). */
export type PortWithOptionalBinding = number | `${number}/tcp` | PortWithBinding;

export interface ExtraHost {
  host: string;
  ipAddress: string;
}

export interface ExecOptions {
  workingDir: string;
  /** `user`, `uid`, `user:group` or `uid:gid`, names from the container's /etc/passwd and /etc/group. */
  user: string;
  env: Environment;
}

export interface ExecResult {
  /** stdout and stderr interleaved, as they came. */
  output: string;
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface CommitOptions {
  repo: string;
  tag?: string;
  /** The history entry's comment (testcontainers calls it `comment`; both work). */
  message?: string;
  comment?: string;
  author?: string;
  /** Dockerfile instructions applied to the config (`CMD ["x"]`, `ENV K=V`, …). */
  changes?: string[];
  /** Freeze the container while its layer is written (default true, like `docker commit`). */
  pause?: boolean;
}

export interface StopOptions {
  /** Milliseconds to wait after the stop signal before SIGKILL (default 0: kill at once, like testcontainers). */
  timeout: number;
  /** Remove the container's writable layer at once; otherwise the stopped container keeps it, to commit or copy from. */
  remove: boolean;
}

export interface RestartOptions {
  /** Milliseconds to wait after the stop signal before SIGKILL (default 0). */
  timeout: number;
}

export interface LogOptions {
  /** Only the last N lines of what is there already. */
  tail?: number;
  /** Only what came at or after this time (seconds since the epoch). */
  since?: number;
}
