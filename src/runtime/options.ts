/** What a caller asks of a container; `createSpec` turns it into an OCI runtime spec. */
export interface ContainerOptions {
  /** Root filesystem: a directory used as the overlay's lower layer (layers top first), never written to. */
  rootfs: string | string[];
  /** Mount `rootfs` (one directory) directly instead of an overlay: writes then change it. */
  rootfsInPlace?: boolean;
  command: string[];
  /** Name shown by `petri ps`; defaults to the id. Unique among containers. */
  name?: string;
  /** Keep the exited container (its upper dir and record) until it is removed, like `docker run` without `--rm`. */
  keep?: boolean;
  /** The image the root filesystem comes from, for `petri ps` and commits. */
  image?: { ref: string; id: string };
  env?: Record<string, string>;
  workdir?: string;
  user?: { uid: number; gid: number; additionalGids?: number[] };
  hostname?: string;
  umask?: number;
  /** Run petri's init as PID 1 (default), or the command itself (`false`, like `docker run` without `--init`). */
  init?: boolean;
  /** Memory limit in bytes (swap is not allowed beyond it). */
  memory?: number;
  pids?: number;
  cpus?: number;
  capAdd?: string[];
  capDrop?: string[];
  privileged?: boolean;
  noNewPrivileges?: boolean;
  readonlyRootfs?: boolean;
  /** tmpfs mounts: path → mount options (`size=64m,mode=1777`). */
  tmpfs?: Record<string, string>;
  binds?: { source: string; target: string; readonly?: boolean }[];
  /** Lowered resource limits, like `--ulimit nofile=1024:1024`. Raising is refused. */
  ulimits?: { name: string; soft: number; hard: number }[];
  /** `none` (default): own network namespace with only `lo`. `host`: share the host's network. */
  network?: 'none' | 'host';
  labels?: Record<string, string>;
  /**
   * When the command ends, the runner says whether the container's upper dir
   * holds only what lstat reads whole (`Container.upper`): at most 1000
   * entries, no xattrs, UTF-8 names. `petri build` then scans a RUN step's
   * layer in Node.
   */
  reportUpper?: boolean;
  /**
   * TCP ports published on the host's 127.0.0.1 and forwarded by the runner into
   * the container's network namespace (to its 127.0.0.1); `host` 0 or missing: any free port.
   */
  ports?: { container: number; host?: number }[];
  /**
   * petri networks to attach to (eth0, eth1, … in that order): the pid of the
   * `petri-runner network` process that keeps the network's namespace, and the
   * container's address there (`10.89.3.2/24`).
   */
  networks?: { holderPid: number; address: string }[];
  /** Kill the container after this many milliseconds; the result says `timedOut`. */
  timeoutMs?: number;
}

export interface ExecOptions {
  env?: Record<string, string>;
  workdir?: string;
  user?: { uid: number; gid: number; additionalGids?: number[] };
}
