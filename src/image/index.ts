export type { BlobInfo, ExpectedBlob } from './blobs.js';
export { HashingStream, isDigest, sha256Digest, VerifyingStream, validateDigest } from './digest.js';
export { withIndexLock } from './lock.js';
export { DEFAULT_GRACE_MS, type PruneOptions, type PruneResult } from './prune.js';
export { DEFAULT_TAG, type ImageReference, parseReference } from './reference.js';
export {
  type Credentials,
  canonicalString,
  normalizeReference,
  type Platform,
  type PullEvent,
  type PullOptions,
  type PullResult,
  type PushEvent,
  type PushOptions,
  type PushResult,
  parsePlatform,
  pullImage,
  pushImage,
  RegistryClient,
  type RegistryOptions,
  type RemoteReference,
} from './registry/index.js';
export { ImageStore, type NewImage } from './store.js';
export * from './types.js';
