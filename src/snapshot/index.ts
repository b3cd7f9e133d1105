export { type Change, diffUpper } from './diff.js';
export { type WriteLayerOptions, writeLayer } from './layer-from-dir.js';
export { chainIds, LayerCache, type LayerRecord, type LayerSource } from './layers.js';
export { cleanEntryPath, resolveInRoot } from './safe-path.js';
export { type ScanEntry, scanTree } from './scan.js';
export { type UnpackResult, unpackLayer } from './unpack.js';
