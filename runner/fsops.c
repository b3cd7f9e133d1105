/* fsops.c: the filesystem calls Node cannot make, for src/snapshot/:
 * `fsops` applies mknod, overlay whiteouts, opaque dirs and xattrs read as
 * JSON lines on stdin, and scans trees; `scan` prints a directory tree with
 * what Node's lstat cannot tell (xattrs) as JSON lines. PROTOCOL.md is the
 * interface. */
#define _GNU_SOURCE
#include "json.h"
#include "runner.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_put(FILE *out, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
		fputc(b64chars[v >> 18 & 63], out);
		fputc(b64chars[v >> 12 & 63], out);
		fputc(i + 1 < n ? b64chars[v >> 6 & 63] : '=', out);
		fputc(i + 2 < n ? b64chars[v & 63] : '=', out);
	}
}

/* Decodes base64 (padding optional) into out, which has room for len bytes;
 * returns the decoded length, or -1 on a bad character. */
static ssize_t b64_decode(const char *s, size_t len, unsigned char *out)
{
	unsigned v = 0;
	int bits = 0;
	size_t n = 0;
	for (size_t i = 0; i < len && s[i] != '='; i++) {
		const char *c = memchr(b64chars, s[i], 64);
		if (!c || !s[i])
			return -1;
		v = v << 6 | (unsigned)(c - b64chars);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n++] = (unsigned char)(v >> bits);
		}
	}
	return (ssize_t)n;
}

/* --- fsops --- */

static int op_mknod(const struct jval *op, const char *path, struct rerr *e)
{
	const char *type = json_str(op, "type");
	uint64_t major = 0, minor = 0, mode = 0;
	mode_t fmt;
	if (!type || strlen(type) != 1 || !strchr("cbp", type[0]))
		return rerr_set(e, 0, "mknod %s: \"type\" must be \"c\", \"b\" or \"p\"", path);
	fmt = type[0] == 'c' ? S_IFCHR : type[0] == 'b' ? S_IFBLK : S_IFIFO;
	if ((json_get(op, "major") && json_u64(json_get(op, "major"), &major) < 0) ||
	    (json_get(op, "minor") && json_u64(json_get(op, "minor"), &minor) < 0) ||
	    (json_get(op, "mode") && json_u64(json_get(op, "mode"), &mode) < 0) || major > 0xfff ||
	    minor > 0xfffff)
		return rerr_set(e, 0, "mknod %s: \"major\", \"minor\" and \"mode\" must be small integers", path);
	if (mknod(path, fmt | ((mode_t)mode & 07777), makedev((unsigned)major, (unsigned)minor)) < 0)
		return rerr_set(e, errno, "mknod %s", path);
	return 0;
}

static int op_setxattr(const struct jval *op, const char *path, struct rerr *e)
{
	const char *name = json_str(op, "name");
	const struct jval *value = json_get_t(op, "value", J_STR);
	if (!name || !name[0] || !value)
		return rerr_set(e, 0, "setxattr %s: needs \"name\" and a base64 \"value\"", path);
	unsigned char *buf = malloc(value->len + 1);
	if (!buf)
		return rerr_set(e, ENOMEM, "setxattr %s %s", path, name);
	ssize_t n = b64_decode(value->s, value->len, buf);
	if (n < 0) {
		free(buf);
		return rerr_set(e, 0, "setxattr %s %s: \"value\" is not base64", path, name);
	}
	int rc = lsetxattr(path, name, buf, (size_t)n, 0);
	int err = errno;
	free(buf);
	if (rc < 0)
		return rerr_set(e, err, "setxattr %s %s", path, name);
	return 0;
}

static int scan_dir(int dirfd, char *rel, size_t rlen, struct rerr *e);

/* Whether an entry's line is half printed: an error there ends the line first, so that the
 * answer line that follows is a line of its own. */
static int mid_entry;

/* The `scan` op: the tree's entries as `scan` prints them, before the answer line. */
static int op_scan(const char *path, struct rerr *e)
{
	static char rel[8192];
	rel[0] = 0;
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return rerr_set(e, errno, "scan %s", path);
	int rc = scan_dir(fd, rel, 0, e);
	close(fd);
	if (rc < 0 && mid_entry)
		putchar('\n');
	mid_entry = 0;
	return rc;
}

static int op_apply(const struct jval *op, struct rerr *e)
{
	const char *name = json_str(op, "op"), *path = json_str(op, "path");
	if (!name)
		return rerr_set(e, 0, "an op needs \"op\"");
	if (!path || path[0] != '/')
		return rerr_set(e, 0, "%s: \"path\" must be an absolute path", name);
	if (strcmp(name, "mknod") == 0)
		return op_mknod(op, path, e);
	if (strcmp(name, "whiteout") == 0) {
		if (mknod(path, S_IFCHR, makedev(0, 0)) < 0)
			return rerr_set(e, errno, "whiteout %s", path);
		return 0;
	}
	if (strcmp(name, "opaque") == 0) {
		if (lsetxattr(path, "trusted.overlay.opaque", "y", 1, 0) < 0)
			return rerr_set(e, errno, "opaque %s", path);
		return 0;
	}
	if (strcmp(name, "setxattr") == 0)
		return op_setxattr(op, path, e);
	if (strcmp(name, "scan") == 0)
		return op_scan(path, e);
	return rerr_set(e, 0, "unknown op \"%s\"", name);
}

int fsops_main(void)
{
	char *line = NULL, err[256];
	size_t cap = 0;
	ssize_t len;
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	umask(0);
	while ((len = getline(&line, &cap, stdin)) >= 0) {
		struct rerr e;
		memset(&e, 0, sizeof e);
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = 0;
		if (len == 0)
			continue;
		err[0] = 0;
		struct jval *op = json_parse(line, (size_t)len, err, sizeof err);
		if (!op || op->t != J_OBJ)
			rerr_set(&e, 0, "bad op (not a JSON object): %s", err[0] ? err : "wrong type");
		else if (op_apply(op, &e) == 0)
			e.msg[0] = 0;
		/* One line per answer, whatever the names in the message hold. */
		for (char *c = e.msg; *c; c++)
			if ((unsigned char)*c < 0x20)
				*c = ' ';
		if (!e.msg[0])
			fputs("ok\n", stdout);
		else if (e.errnum)
			printf("error %s (errno %d)\n", e.msg, e.errnum);
		else
			printf("error %s\n", e.msg);
		if (fflush(stdout) != 0)
			return EXIT_SETUP;
	}
	free(line);
	return 0;
}

/* --- scan --- */

/* Whether s[0..n) is valid UTF-8 (no overlongs or surrogates). */
static int utf8_valid(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned c = s[i];
		size_t k = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : 9;
		if (k == 9 || i + k >= n)
			return 0;
		unsigned cp = k == 0 ? c : c & (0x3f >> k);
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + j] & 0x3f);
		}
		if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += k + 1;
	}
	return 1;
}

/* Prints s as a JSON string; -1 when it is not UTF-8 (JSON cannot carry it). */
static int put_str(const char *s, size_t n)
{
	if (!utf8_valid((const unsigned char *)s, n))
		return -1;
	putchar('"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
	return 0;
}

static int put_xattrs(int dirfd, const char *name, const char *rel, struct rerr *e)
{
	char path[64 + 256], list[65536];
	unsigned char value[65536];
	snprintf(path, sizeof path, "/proc/self/fd/%d/%s", dirfd, name);
	ssize_t n = llistxattr(path, list, sizeof list);
	if (n < 0 && (errno == ENOTSUP || errno == ENOENT))
		return 0;
	if (n < 0)
		return rerr_set(e, errno, "scan: list the xattrs of %s", rel);
	int first = 1;
	for (char *x = list; x < list + n; x += strlen(x) + 1) {
		ssize_t vn = lgetxattr(path, x, value, sizeof value);
		if (vn < 0 && (errno == ENODATA || errno == ENOTSUP))
			continue;
		if (vn < 0)
			return rerr_set(e, errno, "scan: read xattr %s of %s", x, rel);
		fputs(first ? ",\"xattrs\":{" : ",", stdout);
		first = 0;
		if (put_str(x, strlen(x)) < 0)
			return rerr_set(e, 0, "scan: xattr name of %s is not UTF-8", rel);
		putchar(':');
		putchar('"');
		b64_put(stdout, value, (size_t)vn);
		putchar('"');
	}
	if (!first)
		putchar('}');
	return 0;
}

static int put_entry(int dirfd, const char *name, const char *rel, const struct stat *st, struct rerr *e)
{
	char type = S_ISREG(st->st_mode) ? 'f' : S_ISDIR(st->st_mode) ? 'd' : S_ISLNK(st->st_mode) ? 'l'
		  : S_ISCHR(st->st_mode) ? 'c' : S_ISBLK(st->st_mode) ? 'b' : S_ISFIFO(st->st_mode) ? 'p' : 's';
	fputs("{\"path\":", stdout);
	mid_entry = 1;
	if (put_str(rel, strlen(rel)) < 0)
		return rerr_set(e, 0, "scan: the name %s is not UTF-8 (petri cannot carry it)", rel);
	printf(",\"type\":\"%c\",\"mode\":%u,\"uid\":%u,\"gid\":%u,\"size\":%lld,\"mtime\":%lld,\"rdev\":[%u,%u],"
	       "\"ino\":%llu,\"nlink\":%llu",
	       type, (unsigned)(st->st_mode & 07777), (unsigned)st->st_uid, (unsigned)st->st_gid, (long long)st->st_size,
	       (long long)st->st_mtim.tv_sec, major(st->st_rdev), minor(st->st_rdev), (unsigned long long)st->st_ino,
	       (unsigned long long)st->st_nlink);
	if (type == 'l') {
		char target[4097];
		ssize_t n = readlinkat(dirfd, name, target, sizeof target - 1);
		if (n < 0)
			return rerr_set(e, errno, "scan: readlink %s", rel);
		fputs(",\"link\":", stdout);
		if (put_str(target, (size_t)n) < 0)
			return rerr_set(e, 0, "scan: the link target of %s is not UTF-8", rel);
	}
	if (put_xattrs(dirfd, name, rel, e) < 0)
		return -1;
	fputs("}\n", stdout);
	mid_entry = 0;
	return 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Scans the directory dirfd, whose path relative to the top is rel[0..rlen). */
static int scan_dir(int dirfd, char *rel, size_t rlen, struct rerr *e)
{
	int fd = dup(dirfd);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	int rc = 0;
	if (!d)
		return rerr_set(e, errno, "scan: open %s", rlen ? rel : ".");
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			char **nn = realloc(names, cap * sizeof *names);
			if (!nn)
				abort();
			names = nn;
		}
		if (!(names[n++] = strdup(de->d_name)))
			abort();
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof *names, cmp_names);
	for (size_t i = 0; i < n && rc == 0; i++) {
		size_t nl = strlen(names[i]);
		struct stat st;
		if (rlen + nl + 2 > 8192) {
			rc = rerr_set(e, ENAMETOOLONG, "scan: %s/%s", rel, names[i]);
			break;
		}
		if (rlen)
			rel[rlen] = '/';
		memcpy(rel + rlen + (rlen ? 1 : 0), names[i], nl + 1);
		size_t clen = rlen + (rlen ? 1 : 0) + nl;
		if (fstatat(dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT) /* gone meanwhile: skip it */
				rc = rerr_set(e, errno, "scan: stat %s", rel);
		} else if ((rc = put_entry(dirfd, names[i], rel, &st, e)) == 0 && S_ISDIR(st.st_mode)) {
			int child = openat(dirfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (child < 0) {
				rc = rerr_set(e, errno, "scan: open %s", rel);
			} else {
				rc = scan_dir(child, rel, clen, e);
				close(child);
			}
		}
		rel[rlen] = 0;
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc;
}

int scan_main(const char *dir)
{
	static char rel[8192];
	struct rerr e;
	memset(&e, 0, sizeof e);
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		rerr_set(&e, errno, "scan: open %s", dir);
	else if (scan_dir(fd, rel, 0, &e) == 0 && fflush(stdout) == 0)
		return 0;
	fflush(stdout);
	fprintf(stderr, "petri-runner: %s\n", e.msg[0] ? e.msg : "scan: write failed");
	return EXIT_SETUP;
}

/* --- what `run` reports of a container's upper dir (main.c: event_upper) --- */

/*
 * Whether an entry has an xattr that a layer takes (src/snapshot/layer-from-dir.ts:
 * keptXattr: user.*, trusted.* but overlayfs' own, security.capability; and
 * overlayfs' opaque mark); 1 too when they cannot be listed. A host's own
 * (ACLs, labels) and overlayfs' bookkeeping (origin, impure) do not count.
 */
static int layer_xattrs(int dirfd, const char *name)
{
	static char list[65536]; /* not on the stack: plain_dir recurses */
	char path[64 + 256];
	snprintf(path, sizeof path, "/proc/self/fd/%d/%s", dirfd, name);
	ssize_t n = llistxattr(path, list, sizeof list);
	if (n < 0)
		return errno != ENOTSUP;
	for (char *x = list; x < list + n; x += strlen(x) + 1) {
		int overlay = strncmp(x, "trusted.overlay.", 16) == 0;
		if (strncmp(x, "user.", 5) == 0 || (strncmp(x, "trusted.", 8) == 0 && !overlay) ||
		    strcmp(x, "security.capability") == 0 || strcmp(x, "trusted.overlay.opaque") == 0)
			return 1;
	}
	return 0;
}

/* A relative path longer than this is left to fsops (Node's lstat takes whole paths, PATH_MAX at most). */
#define PLAIN_PATH_MAX 3072

static long plain_dir(int dirfd, size_t rlen, long count, long max)
{
	static char target[PATH_MAX]; /* not on the stack: this recurses */
	DIR *d = fdopendir(dirfd);
	if (!d) {
		close(dirfd);
		return -1;
	}
	for (;;) {
		errno = 0;
		struct dirent *ent = readdir(d);
		if (!ent) {
			if (errno)
				count = -1; /* a directory not read whole */
			break;
		}
		const char *name = ent->d_name;
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			continue;
		size_t len = strlen(name);
		if (++count > max || rlen + 1 + len > PLAIN_PATH_MAX || !utf8_valid((const unsigned char *)name, len)) {
			count = -1;
			break;
		}
		struct stat st;
		if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || layer_xattrs(dirfd, name)) {
			count = -1;
			break;
		}
		if (S_ISLNK(st.st_mode)) {
			ssize_t n = readlinkat(dirfd, name, target, sizeof target);
			if (n < 0 || n == (ssize_t)sizeof target || !utf8_valid((const unsigned char *)target, (size_t)n))
				count = -1;
		} else if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			count = sub < 0 ? -1 : plain_dir(sub, rlen + 1 + len, count, max);
		}
		if (count < 0)
			break;
	}
	closedir(d);
	return count;
}

/*
 * The number of entries under `dir` when there are at most `max`, none with
 * an xattr a layer takes (layer_xattrs), every name and link target UTF-8,
 * no relative path over PLAIN_PATH_MAX: a tree lstat reads as a layer needs
 * it. -1 otherwise.
 */
long tree_plain(const char *dir, long max)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -1 : plain_dir(fd, 0, 0, max);
}
