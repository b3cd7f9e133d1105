export { PetriError } from './errors.js';
export * from './runtime/index.js';
export { formatDuration, parseCpus, parseDuration, parseSize } from './util/units.js';
