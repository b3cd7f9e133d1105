export { PetriError } from './errors.js';
export { removeAll as removeStartedContainers } from './harness/cleanup.js';
export { type CommitOptions, type CommitResult, commitContainer } from './harness/commit.js';
export { GenericContainerBuilder } from './harness/dockerfile-container.js';
export { type ContainerSpec, GenericContainer, type GenericContainerOptions } from './harness/generic-container.js';
export { imageContainerOptions, imageLayers } from './harness/image-run.js';
export { importRootfs } from './harness/import.js';
export { Network, StartedNetwork } from './harness/network.js';
export { type ImagePullPolicy, PullPolicy, type PullPolicyName } from './harness/pull-policy.js';
export { StartedContainer } from './harness/started-container.js';
export { StoppedContainer } from './harness/stopped-container.js';
export type {
  BindMode,
  BindMount,
  CommitOptions as ContainerCommitOptions,
  Content,
  ContentToCopy,
  DirectoryToCopy,
  Environment,
  ExecOptions as ContainerExecOptions,
  ExecResult,
  ExtraHost,
  FileToCopy,
  HealthCheck,
  HealthCheckStatus,
  Labels,
  LogOptions,
  PortWithBinding,
  PortWithOptionalBinding,
  ResourcesQuota,
  RestartOptions,
  StopOptions,
  TmpFs,
  Ulimits,
} from './harness/types.js';
export {
  CompositeWaitStrategy,
  HealthCheckWaitStrategy,
  HostPortWaitStrategy,
  HttpWaitStrategy,
  LogWaitStrategy,
  OneShotStartupWaitStrategy,
  ShellWaitStrategy,
  StartupError,
  Wait,
  WaitStrategy,
} from './harness/wait-strategies.js';
export { loadArchive } from './image/archive/load.js';
export { saveImages } from './image/archive/save.js';
export { ImageStore } from './image/store.js';
export { findContainer, listContainers, removeContainer } from './runtime/containers.js';
export * from './runtime/index.js';
export { LayerCache } from './snapshot/layers.js';
export {
  type BuildImageConfig,
  type Command as TestCommand,
  defineConfig,
  type ImageConfigEntry,
  type JobConfig,
  type PetriConfig,
  type StoreImageConfig,
} from './test-runner/config-types.js';
export { formatDuration, parseCpus, parseDuration, parseSize } from './util/units.js';
