/**
 * When an image named by FROM, a test job or a container is pulled from its
 * registry: `missing` (the default: only when the store lacks it), `always`
 * (every time: a tag that moved is followed), `never` (the store only).
 */
export type PullPolicy = 'missing' | 'always' | 'never';
export const PULL_POLICIES: readonly PullPolicy[] = ['missing', 'always', 'never'];
