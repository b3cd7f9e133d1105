/* mounts.c: the container's mount namespace: propagation, root (overlay or
 * bind), spec mounts resolved with openat2(RESOLVE_IN_ROOT) and mounted on
 * /proc/self/fd/N, /dev nodes and links, pivot_root, masked and read-only
 * paths, read-only root. */
#define _GNU_SOURCE
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#define MOUNT_ATTR_NOSUID 0x00000002
#define MOUNT_ATTR_NODEV 0x00000004
#define MOUNT_ATTR_NOEXEC 0x00000008
#define MOUNT_ATTR__ATIME 0x00000070
#define MOUNT_ATTR_RELATIME 0x00000000
#define MOUNT_ATTR_NOATIME 0x00000010
#define MOUNT_ATTR_STRICTATIME 0x00000020
#define MOUNT_ATTR_NODIRATIME 0x00000080
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef FSOPEN_CLOEXEC
#define FSOPEN_CLOEXEC 0x00000001
#define FSMOUNT_CLOEXEC 0x00000001
#define FSCONFIG_SET_STRING 1
#define FSCONFIG_CMD_CREATE 6
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef SYS_fsopen
#define SYS_open_tree 428
#define SYS_move_mount 429
#define SYS_fsopen 430
#define SYS_fsconfig 431
#define SYS_fsmount 432
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_pivot_root
#define SYS_pivot_root __NR_pivot_root
#endif

struct petri_mount_attr {
	uint64_t attr_set, attr_clr, propagation, userns_fd;
};

#define FDPATH_LEN 32
static char *fdpath(char *buf, int fd)
{
	snprintf(buf, FDPATH_LEN, "/proc/self/fd/%d", fd);
	return buf;
}

static int openat2_in_root(int rootfd, const char *path, int flags)
{
	struct open_how how = { .flags = (uint64_t)(flags | O_CLOEXEC), .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
	int fd;
	do
		fd = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof how);
	while (fd < 0 && errno == EAGAIN);
	return fd;
}

/* Opens path inside the root (O_PATH), creating missing directories (and the
 * last component as an empty file when !dir). Every prefix is resolved from
 * the root again, so symlinks never lead out of it. */
static int open_create_depth(int rootfd, const char *path, int dir, int depth, struct rerr *e);

static int open_create_in_root(int rootfd, const char *path, int dir, struct rerr *e)
{
	return open_create_depth(rootfd, path, dir, 0, e);
}

/* Component p (NUL-terminated inside buf, followed by rest) is a dangling
 * symlink in parent: create its target instead, still inside the root. */
static int follow_dangling(int rootfd, int parent, char *buf, char *p, const char *rest, int dir, int depth,
			   const char *path, struct rerr *e)
{
	char target[4096];
	ssize_t n = readlinkat(parent, p, target, sizeof target - 1);
	if (n < 0 || depth >= 8)
		return rerr_set(e, n < 0 ? ENOENT : ELOOP, "open %s in the container root", path);
	target[n] = 0;
	size_t dl = target[0] == '/' ? 0 : (size_t)(p - buf);
	size_t need = dl + (size_t)n + strlen(rest) + 2;
	char *np = malloc(need);
	if (!np)
		return rerr_set(e, ENOMEM, "open %s", path);
	memcpy(np, buf, dl); /* the directory holding the link, with its slash */
	memcpy(np + dl, target, (size_t)n);
	strcpy(np + dl + (size_t)n, rest);
	int fd = open_create_depth(rootfd, np, dir, depth + 1, e);
	free(np);
	return fd;
}

static int open_create_depth(int rootfd, const char *path, int dir, int depth, struct rerr *e)
{
	int fd = openat2_in_root(rootfd, path, O_PATH);
	if (fd >= 0)
		return fd;
	if (errno != ENOENT)
		return rerr_set(e, errno, "open %s in the container root", path);
	char *buf = strdup(path);
	if (!buf)
		return rerr_set(e, ENOMEM, "open %s", path);
	char *p = buf + strspn(buf, "/");
	int parent = -1;
	/* Usually only the last component is missing: start at its parent. */
	char *slash = strrchr(p, '/');
	if (slash && !slash[1])
		slash = NULL; /* trailing slash: take the slow path */
	if (slash) {
		*slash = 0;
		parent = openat2_in_root(rootfd, buf, O_PATH | O_DIRECTORY);
		*slash = '/';
		if (parent >= 0)
			p = slash + 1;
	}
	if (parent < 0)
		parent = openat2_in_root(rootfd, "/", O_PATH | O_DIRECTORY);
	if (parent < 0) {
		rerr_set(e, errno, "open the container root");
		goto out;
	}
	while (*p) {
		char *end = p + strcspn(p, "/");
		char save = *end;
		int last = !save || !end[strspn(end, "/")];
		*end = 0;
		if (strcmp(p, ".") != 0 && strcmp(p, "..") != 0) {
			if (last && !dir) {
				int f = openat(parent, p, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
				if (f >= 0)
					close(f);
				else if (errno != EEXIST) {
					rerr_set(e, errno, "create %s in the container root", path);
					goto out;
				}
			} else if (mkdirat(parent, p, 0755) < 0 && errno != EEXIST) {
				rerr_set(e, errno, "mkdir %s in the container root", path);
				goto out;
			}
		}
		int next = openat2_in_root(rootfd, buf, O_PATH);
		if (next < 0 && errno == ENOENT) {
			/* A dangling symlink (e.g. /etc/resolv.conf -> ../run/...). */
			char *rest = NULL;
			if (save) {
				*end = save;
				rest = strdup(end);
				*end = 0;
			}
			int lfd = follow_dangling(rootfd, parent, buf, p, rest ? rest : "", dir, depth, path, e);
			free(rest);
			free(buf);
			close(parent);
			return lfd;
		}
		*end = save;
		if (next < 0) {
			rerr_set(e, errno, "open %s in the container root", path);
			goto out;
		}
		close(parent);
		parent = next;
		p = end + strspn(end, "/");
	}
	free(buf);
	return parent;
out:
	free(buf);
	if (parent >= 0)
		close(parent);
	return -1;
}

static uint64_t ms_to_attr(unsigned long f)
{
	uint64_t a = 0;
	if (f & MS_RDONLY)
		a |= MOUNT_ATTR_RDONLY;
	if (f & MS_NOSUID)
		a |= MOUNT_ATTR_NOSUID;
	if (f & MS_NODEV)
		a |= MOUNT_ATTR_NODEV;
	if (f & MS_NOEXEC)
		a |= MOUNT_ATTR_NOEXEC;
	if (f & MS_NODIRATIME)
		a |= MOUNT_ATTR_NODIRATIME;
	if (f & MS_NOATIME)
		a |= MOUNT_ATTR_NOATIME;
	else if (f & MS_STRICTATIME)
		a |= MOUNT_ATTR_STRICTATIME;
	return a;
}

/* Sets per-mount flags on the mount at dfd/path (AT_EMPTY_PATH when path is
 * ""), recursively if rec. Falls back to MS_REMOUNT on old kernels. */
static int set_mount_flags(int dfd, const char *path, unsigned long flags, int rec, const char *what,
			   struct rerr *e)
{
	struct petri_mount_attr attr = { 0, 0, 0, 0 };
	attr.attr_set = ms_to_attr(flags);
	if (flags & (MS_NOATIME | MS_STRICTATIME | MS_RELATIME))
		attr.attr_clr = MOUNT_ATTR__ATIME;
	unsigned int at = (path[0] ? 0 : AT_EMPTY_PATH) | (rec ? AT_RECURSIVE : 0) | AT_NO_AUTOMOUNT;
	if (syscall(SYS_mount_setattr, dfd, path, at, &attr, sizeof attr) == 0)
		return 0;
	if (errno != ENOSYS)
		return rerr_set(e, errno, "remount %s", what);
	char buf[FDPATH_LEN];
	const char *target = path[0] ? path : fdpath(buf, dfd);
	if (mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | (flags & ~(unsigned long)MS_REC), NULL) < 0)
		return rerr_set(e, errno, "remount %s", what);
	return 0;
}

static int mount_one(int rootfd, const struct mount_spec *m, struct rerr *e)
{
	char buf[FDPATH_LEN];
	int dir = 1, fd, r = -1;
	if (m->bind) {
		struct stat st;
		if (stat(m->source, &st) < 0)
			return rerr_set(e, errno, "bind mount source %s", m->source);
		dir = S_ISDIR(st.st_mode);
	}
	fd = open_create_in_root(rootfd, m->dest, dir, e);
	if (fd < 0)
		return -1;
	if (m->bind) {
		if (mount(m->source, fdpath(buf, fd), NULL, MS_BIND | (m->rec ? MS_REC : 0), NULL) < 0) {
			rerr_set(e, errno, "bind mount %s on %s", m->source, m->dest);
			goto out;
		}
	} else {
		const char *type = strcmp(m->type, "cgroup") == 0 ? "cgroup2" : m->type;
		const char *src = m->source && m->source[0] ? m->source : type;
		if (mount(src, fdpath(buf, fd), type, m->flags, m->data) < 0) {
			rerr_set(e, errno, "mount %s on %s", type, m->dest);
			goto out;
		}
	}
	if ((m->bind && (m->flags & ~(unsigned long)MS_REC)) || m->prop) {
		/* Reopen: the fd refers to the directory under the new mount. */
		int nfd = openat2_in_root(rootfd, m->dest, O_PATH);
		if (nfd < 0) {
			rerr_set(e, errno, "open %s after mounting", m->dest);
			goto out;
		}
		close(fd);
		fd = nfd;
		if (m->bind && (m->flags & ~(unsigned long)MS_REC) &&
		    set_mount_flags(fd, "", m->flags, m->rec, m->dest, e) < 0)
			goto out;
		if (m->prop && mount(NULL, fdpath(buf, fd), NULL, m->prop, NULL) < 0) {
			rerr_set(e, errno, "set propagation of %s", m->dest);
			goto out;
		}
	}
	r = 0;
out:
	close(fd);
	return r;
}

static int make_dev(int rootfd, struct rerr *e)
{
	static const struct {
		const char *name;
		unsigned maj, min;
	} nodes[] = { { "null", 1, 3 }, { "zero", 1, 5 }, { "full", 1, 7 },
		      { "random", 1, 8 }, { "urandom", 1, 9 }, { "tty", 5, 0 } };
	static const struct {
		const char *name, *target;
	} links[] = { { "fd", "/proc/self/fd" },         { "stdin", "/proc/self/fd/0" },
		      { "stdout", "/proc/self/fd/1" },   { "stderr", "/proc/self/fd/2" },
		      { "ptmx", "pts/ptmx" },            { "core", "/proc/kcore" } };
	int dfd = openat2_in_root(rootfd, "/dev", O_PATH | O_DIRECTORY);
	if (dfd < 0)
		return rerr_set(e, errno, "open /dev in the container root");
	for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++)
		if (mknodat(dfd, nodes[i].name, S_IFCHR | 0666, makedev(nodes[i].maj, nodes[i].min)) < 0 &&
		    errno != EEXIST) {
			rerr_set(e, errno, "mknod /dev/%s", nodes[i].name);
			close(dfd);
			return -1;
		}
	for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
		if (symlinkat(links[i].target, dfd, links[i].name) < 0 && errno != EEXIST) {
			rerr_set(e, errno, "symlink /dev/%s", links[i].name);
			close(dfd);
			return -1;
		}
	close(dfd);
	return 0;
}

/* Overlay options longer than a page: the new mount API, one "lowerdir+"
 * per layer (Linux 6.8+; each value is limited to 256 bytes). */
static int mount_overlay_fsconfig(const struct spec *s, struct rerr *e)
{
	int fs = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
	if (fs < 0)
		return rerr_set(e, errno, "fsopen overlay");
	char *lower = strdup(s->ovl_lower);
	int r = -1;
	if (!lower) {
		rerr_set(e, ENOMEM, "overlay options");
		goto out;
	}
	for (char *save = NULL, *l = strtok_r(lower, ":", &save); l; l = strtok_r(NULL, ":", &save))
		if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "lowerdir+", l, 0) < 0) {
			rerr_set(e, errno, "overlay lowerdir+ %s", l);
			goto out;
		}
	if (s->ovl_upper && (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "upperdir", s->ovl_upper, 0) < 0 ||
			     syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "workdir", s->ovl_work, 0) < 0)) {
		rerr_set(e, errno, "overlay upperdir/workdir");
		goto out;
	}
	/* A whole upper dir (mount_overlay_root); every kernel with lowerdir+ knows both. */
	if (s->ovl_upper) {
		(void)syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "redirect_dir", "off", 0);
		(void)syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "metacopy", "off", 0);
	}
	if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
		rerr_set(e, errno, "create overlay for %s", s->root);
		goto out;
	}
	int mfd = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, 0);
	if (mfd < 0) {
		rerr_set(e, errno, "fsmount overlay");
		goto out;
	}
	if (syscall(SYS_move_mount, mfd, "", AT_FDCWD, s->root, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		rerr_set(e, errno, "mount overlay on %s", s->root);
	else
		r = 0;
	close(mfd);
out:
	free(lower);
	close(fs);
	return r;
}

static int mount_overlay_root(const struct spec *s, struct rerr *e);

/* Deep images: short lower dir names relative to a base directory keep the
 * option string under a page on every kernel (as Docker's overlay2 "l/" links do). */
static int mount_root(const struct spec *s, struct rerr *e)
{
	if (!s->ovl_lower) {
		if (mount(s->root, s->root, NULL, MS_BIND | MS_REC, NULL) < 0)
			return rerr_set(e, errno, "bind mount root %s", s->root);
		return 0;
	}
	if (!s->ovl_lowerbase)
		return mount_overlay_root(s, e);
	int cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (cwd < 0)
		return rerr_set(e, errno, "open the current directory");
	if (chdir(s->ovl_lowerbase) < 0) {
		int err = errno;
		close(cwd);
		return rerr_set(e, err, "chdir to overlay lower base %s", s->ovl_lowerbase);
	}
	int r = mount_overlay_root(s, e);
	if (fchdir(cwd) < 0 && r == 0)
		r = rerr_set(e, errno, "return from overlay lower base");
	close(cwd);
	return r;
}

/*
 * The upper dir must hold whole what changed: it becomes a layer (petri
 * build's RUN, petri commit), read as plain files. So no redirects (a renamed
 * lower directory would be an empty one with a trusted.overlay.redirect
 * xattr) and no metacopy (a chmod'ed lower file one without its data), even
 * where the kernel makes them by default (CONFIG_OVERLAY_FS_REDIRECT_DIR, as
 * Ubuntu's kernels): rename(2) of a lower directory then fails with EXDEV,
 * as on kernels without redirects, and mv copies it instead. A kernel too old
 * for an option (metacopy: 4.19, redirect_dir: 4.10) mounts without it (and
 * logs the option it did not know).
 */
static const char *const ovl_whole_upper[] = { ",redirect_dir=off,metacopy=off", ",redirect_dir=off", "" };

static int mount_overlay_root(const struct spec *s, struct rerr *e)
{
	size_t n = strlen(s->ovl_lower) + 96 + (s->ovl_upper ? strlen(s->ovl_upper) + strlen(s->ovl_work) : 0);
	char *data = malloc(n);
	if (!data)
		return rerr_set(e, ENOMEM, "overlay options");
	int r = -1, err = 0, fs_error = 0;
	size_t count = sizeof ovl_whole_upper / sizeof ovl_whole_upper[0];
	for (size_t i = 0; i < count; i++) {
		if (s->ovl_upper)
			snprintf(data, n, "lowerdir=%s,upperdir=%s,workdir=%s%s", s->ovl_lower, s->ovl_upper, s->ovl_work,
				 ovl_whole_upper[i]);
		else
			snprintf(data, n, "lowerdir=%s", s->ovl_lower);
		if (strlen(data) >= 4096) {
			/* Past a page: the options one by one (fsconfig, which sets these too); on a kernel
			 * without it (lowerdir+: 6.8), the plain options when they fit. */
			if (mount_overlay_fsconfig(s, e) == 0) {
				free(data);
				return 0;
			}
			fs_error = 1;
			if (!s->ovl_upper)
				break;
			snprintf(data, n, "lowerdir=%s,upperdir=%s,workdir=%s", s->ovl_lower, s->ovl_upper, s->ovl_work);
			if (strlen(data) >= 4096)
				break;
			fs_error = 0;
			memset(e, 0, sizeof *e);
			i = count - 1;
		}
		r = mount("overlay", s->root, "overlay", 0, data);
		err = errno;
		if (r == 0 || err != EINVAL || !s->ovl_upper)
			break;
	}
	free(data);
	if (fs_error)
		return -1; /* fsconfig's error (in *e), the plain options not fitting either */
	if (r < 0)
		return rerr_set(e, err, "mount overlay on %s", s->root);
	return 0;
}

static int mask_paths(const struct spec *s, struct rerr *e)
{
	/* Read-only paths first, then masks (the order runc uses). */
	for (size_t i = 0; i < s->nreadonly; i++) {
		const char *p = s->readonly[i];
		if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) < 0) {
			if (errno == ENOENT)
				continue;
			return rerr_set(e, errno, "bind mount read-only path %s", p);
		}
		if (set_mount_flags(AT_FDCWD, p, MS_RDONLY, 1, p, e) < 0)
			return -1;
	}
	for (size_t i = 0; i < s->nmasked; i++) {
		const char *p = s->masked[i];
		struct stat st;
		if (stat(p, &st) < 0) {
			if (errno == ENOENT)
				continue;
			return rerr_set(e, errno, "stat masked path %s", p);
		}
		if (S_ISDIR(st.st_mode)) {
			if (mount("tmpfs", p, "tmpfs", MS_RDONLY, NULL) < 0)
				return rerr_set(e, errno, "mask %s with a tmpfs", p);
		} else if (mount("/dev/null", p, NULL, MS_BIND, NULL) < 0) {
			return rerr_set(e, errno, "mask %s with /dev/null", p);
		}
	}
	return 0;
}

int setup_rootfs(const struct spec *s, struct rerr *e)
{
	int has_dev_tmpfs = 0, rootfd, r = -1;
	if (mount(NULL, "/", NULL, s->root_prop, NULL) < 0)
		return rerr_set(e, errno, "set propagation of /");
	if (mount_root(s, e) < 0)
		return -1;
	rootfd = open(s->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return rerr_set(e, errno, "open root %s", s->root);
	for (size_t i = 0; i < s->nmounts; i++) {
		const struct mount_spec *m = &s->mounts[i];
		if (mount_one(rootfd, m, e) < 0)
			goto out;
		if (!m->bind && strcmp(m->dest, "/dev") == 0 && strcmp(m->type, "tmpfs") == 0)
			has_dev_tmpfs = 1;
	}
	if (has_dev_tmpfs && make_dev(rootfd, e) < 0)
		goto out;
	if (fchdir(rootfd) < 0) {
		rerr_set(e, errno, "chdir to root %s", s->root);
		goto out;
	}
	if (syscall(SYS_pivot_root, ".", ".") < 0) {
		rerr_set(e, errno, "pivot_root %s", s->root);
		goto out;
	}
	/* The old root is stacked under the new one: make sure unmounting it
	 * cannot propagate to the host, then detach it. */
	if (!(s->root_prop & MS_REC) && mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0) {
		rerr_set(e, errno, "make the old root a slave");
		goto out;
	}
	if (umount2(".", MNT_DETACH) < 0) {
		rerr_set(e, errno, "unmount the old root");
		goto out;
	}
	if (chdir("/") < 0) {
		rerr_set(e, errno, "chdir /");
		goto out;
	}
	if (mask_paths(s, e) < 0)
		goto out;
	if (s->root_readonly && set_mount_flags(AT_FDCWD, "/", MS_RDONLY, 0, "/ read-only", e) < 0)
		goto out;
	r = 0;
out:
	close(rootfd);
	return r;
}
