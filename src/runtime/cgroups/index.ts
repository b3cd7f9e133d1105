export { type CgroupMode, detectCgroupMode } from './detect.js';
export { cgroupPids, holdCgroupParents, killCgroups, removeCgroups } from './dirs.js';
export { type CgroupLimits, type ContainerCgroups, createCgroups } from './manager.js';
