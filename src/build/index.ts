export { type BuildOptions, type BuildResult, buildImage } from './builder.js';
export { BuildCache } from './cache.js';
export type { BuildEvent } from './events.js';
export { type ProgressMode, progressRenderer } from './progress.js';
