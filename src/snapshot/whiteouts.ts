/** OCI whiteouts (in layer archives) and their overlayfs counterparts (in unpacked layers and upper dirs). */

/** `.wh.NAME` in a layer archive deletes NAME of the layers below. */
export const WHITEOUT_PREFIX = '.wh.';
/** `.wh..wh..opq` in a directory of a layer archive hides everything below it in lower layers. */
export const OPAQUE_WHITEOUT = '.wh..wh..opq';
/** Other `.wh..wh.` names are AUFS bookkeeping: never written, skipped when read. */
export const WHITEOUT_META_PREFIX = '.wh..wh.';

/** overlayfs marks an opaque directory with this xattr set to `y`. */
export const OVERLAY_OPAQUE_XATTR = 'trusted.overlay.opaque';
/** overlayfs' own xattrs: never taken from an archive, never written into one. */
export const OVERLAY_XATTR_PREFIX = 'trusted.overlay.';

/** Whether a stat result is an overlayfs whiteout: a character device 0/0. */
export function isOverlayWhiteout(stat: { isCharacterDevice(): boolean; rdev: number }): boolean {
  return stat.isCharacterDevice() && stat.rdev === 0;
}
