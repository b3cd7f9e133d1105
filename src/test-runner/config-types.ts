/**
 * The shape of `petri.config.{js,mjs,json,yaml,yml}`: the images to build (or
 * take from the store) and the test jobs to run in them. `defineConfig` only
 * gives a config written in JavaScript its types; the file is validated when
 * `petri test` loads it, whatever its format.
 */

/** An image built from a Dockerfile, like `petri build`. */
export interface BuildImageConfig {
  /** The build context directory, relative to the config file. */
  context: string;
  /** The Dockerfile, relative to the context (default `Dockerfile`). */
  dockerfile?: string;
  buildArgs?: Record<string, string>;
  /** The stage to build (default: the last). */
  target?: string;
}

/** An image already in petri's store (`petri images`), by name or id. */
export interface StoreImageConfig {
  image: string;
}

export type ImageConfigEntry = BuildImageConfig | StoreImageConfig;

/** A command: a string runs with `sh -c`; an array is the argv itself. */
export type Command = string | string[];

export interface JobConfig {
  /** Unique; letters, digits, `.`, `_`, `-`. Names the artifact (`<name>.tar`) and the image `petri-failed/<name>`. */
  name: string;
  /** A key of `images`. */
  image: string;
  /** The command. The image's Entrypoint is not used; its Cmd is replaced. */
  run?: Command;
  /** Commands run one after the other in the same container (needs `sh` in the image); the first failing one fails the job. */
  steps?: Command[];
  env?: Record<string, string | number | boolean>;
  /** Variables copied from petri's own environment when set there (`env` wins), like `CI` or `GITHUB_SHA`. */
  passEnv?: string[];
  /** Absolute working directory (default: the image's). */
  workdir?: string;
  /** `user`, `uid`, `user:group` or `uid:gid` (names from the image). Default: the image's. */
  user?: string | number;
  /** `500ms`, `30s`, `1m30s`, or seconds as a number. Default: `--timeout`, else none. */
  timeout?: string | number;
  /** Extra attempts after a failure (default 0). */
  retries?: number;
  /** Memory limit, `256m`, `1g`, or bytes as a number (no swap beyond it). */
  memory?: string | number;
  /** Limit on processes and threads. */
  pids?: number;
  /** CPU quota in CPUs, like 0.5. */
  cpus?: number;
  /**
   * Files or directories copied from the host into the container before its
   * command runs (owned by root, modes kept): `source` relative to the config
   * file, `target` absolute; a directory's contents go into `target`, a file
   * becomes `target` (or goes into it when it ends with `/`).
   */
  files?: { source: string; target: string }[];
  /** Labels for `--filter`. */
  tags?: string[];
}

export interface PetriConfig {
  /** Optional: the JSON schema, for editors. */
  $schema?: string;
  images: Record<string, ImageConfigEntry>;
  jobs: JobConfig[];
}

/** Types a config written in JavaScript: `export default defineConfig({ images: …, jobs: […] })`. */
export function defineConfig(config: PetriConfig): PetriConfig {
  return config;
}
