export { RegistryClient, type RegistryOptions } from './client.js';
export {
  type Credentials,
  dockerConfigPath,
  eraseCredentials,
  lookupCredentials,
  storeCredentials,
} from './credentials.js';
export {
  canonicalString,
  DOCKER_HUB,
  familiarName,
  normalizeReference,
  type RemoteReference,
  registryName,
  storeTag,
} from './name.js';
export { formatPlatform, hostPlatform, type Platform, parsePlatform } from './platform.js';
export { type PullEvent, type PullOptions, type PullResult, pullImage } from './pull.js';
export { type PushEvent, type PushOptions, type PushResult, pushImage } from './push.js';
