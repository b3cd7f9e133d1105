/* replay.c: `petri-runner replay SCRIPT build ARGS...`, what the `petri`
 * command (bin/petri, a shell script) runs for `petri build`: answers a build
 * that the result cache remembered, when nothing it depended on changed,
 * without starting Node; otherwise it executes `node SCRIPT build ARGS...`.
 *
 * petri (src/build/replay.ts) writes the record after a build, keyed by the
 * command line, the working directory and the environment the build read
 * (PETRI_ROOT, SOURCE_DATE_EPOCH, the variables of `--build-arg NAME`): the
 * lstat fingerprint of the context and the Dockerfile (the same lines the
 * result cache checks), the image store's index.json byte for byte, the
 * manifest's blob, petri's own build file, and what the build printed then.
 * Anything different, missing or unreadable, and stderr on a terminal (the
 * live view is Node's), goes to Node: a replay is never a guess. */
#define _GNU_SOURCE
#include "runner.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_ENTRIES 20000

struct buf {
	char *p;
	size_t len, cap;
};

static int put(struct buf *b, const void *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p)
			return -1;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
	return 0;
}

static int puts0(struct buf *b, const char *s)
{
	return put(b, s, strlen(s) + 1); /* with its NUL: the key's separator */
}

/* The file name of a key: FNV-1a, 2 x 32 bits, over its bytes (src/build/replay.ts: replayName). */
static void key_name(const struct buf *key, char out[17])
{
	uint32_t a = 0x811c9dc5u, b = 0x01000193u ^ 0x5bd1e995u;
	for (size_t i = 0; i < key->len; i++) {
		uint32_t c = (unsigned char)key->p[i];
		a = (a ^ c) * 0x01000193u;
		b = ((b ^ c) * 0x01000193u) ^ (b >> 13);
	}
	snprintf(out, 17, "%08x%08x", a, b);
}

/* --- the context's fingerprint, as ResultCache#fingerprint writes it --- */

struct fp {
	struct buf out;
	size_t lines;
};

static void line_start(struct fp *f)
{
	if (f->lines++ > 0)
		put(&f->out, "\n", 1);
}

/* 1: a directory, 0: another type, -1: missing. */
static int fp_add(struct fp *f, const char *label, const char *path)
{
	struct stat st;
	line_start(f);
	put(&f->out, label, strlen(label));
	if (lstat(path, &st) < 0) {
		put(&f->out, "\0-", 2);
		return -1;
	}
	char tail[256];
	long long mtime = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
	long long ctime = (long long)st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec;
	int n = snprintf(tail, sizeof tail, "%c%u%c%u%c%u%c%lld%c%llu%c%llu%c%lld%c%lld", 0, (unsigned)st.st_mode, 0,
			 (unsigned)st.st_uid, 0, (unsigned)st.st_gid, 0, (long long)st.st_size, 0,
			 (unsigned long long)st.st_dev, 0, (unsigned long long)st.st_ino, 0, mtime, 0, ctime);
	put(&f->out, tail, (size_t)n);
	return S_ISDIR(st.st_mode) ? 1 : 0;
}

static int by_name(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

/* 0 when the whole tree was read (a tree deeper than this is left to Node: its paths are on the stack). */
#define MAX_DEPTH 128

static int fp_walk(struct fp *f, const char *dir, const char *rel, int depth)
{
	if (depth > MAX_DEPTH)
		return -1;
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *ent;
	int rc = 0;
	while ((ent = readdir(d))) {
		if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 32;
			char **grown = realloc(names, cap * sizeof *names);
			if (!grown) {
				rc = -1;
				break;
			}
			names = grown;
		}
		names[n++] = strdup(ent->d_name);
	}
	closedir(d);
	if (rc == 0)
		qsort(names, n, sizeof *names, by_name);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		if (f->lines > MAX_ENTRIES) {
			rc = -1;
			break;
		}
		char path[PATH_MAX], relpath[PATH_MAX];
		if (snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= (int)sizeof path ||
		    snprintf(relpath, sizeof relpath, "%s%s%s", rel, *rel ? "/" : "", names[i]) >= (int)sizeof relpath) {
			rc = -1;
			break;
		}
		if (fp_add(f, relpath, path) == 1 && fp_walk(f, path, relpath, depth + 1) < 0)
			rc = -1;
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc;
}

static int fingerprint(struct fp *f, const char *context, const char *dockerfile)
{
	char ignore[PATH_MAX];
	if (snprintf(ignore, sizeof ignore, "%s.dockerignore", dockerfile) >= (int)sizeof ignore)
		return -1;
	const char *labels[2] = { "@dockerfile", "@dockerignore" }, *paths[2] = { dockerfile, ignore };
	for (int i = 0; i < 2; i++) {
		if (fp_add(f, labels[i], paths[i]) != 0)
			continue; /* a directory, or missing */
		struct stat st;
		if (lstat(paths[i], &st) == 0 && S_ISLNK(st.st_mode)) {
			char label[32], target[PATH_MAX];
			snprintf(label, sizeof label, "%s-target", labels[i]);
			if (realpath(paths[i], target))
				fp_add(f, label, target);
			else {
				line_start(f);
				put(&f->out, label, strlen(label));
				put(&f->out, "\0-", 2);
			}
		}
	}
	if (fp_add(f, ".", context) != 1)
		return -1;
	return fp_walk(f, context, "", 0);
}

/* --- the record --- */

struct record {
	const char *p, *end;
};

/* The next field: "<decimal length>\n<bytes>\n". */
static int field(struct record *r, const char **s, size_t *n)
{
	char *stop;
	errno = 0;
	unsigned long long len = strtoull(r->p, &stop, 10);
	if (errno || stop == r->p || stop >= r->end || *stop != '\n' || len > (size_t)(r->end - stop - 1))
		return -1;
	*s = stop + 1;
	*n = (size_t)len;
	r->p = stop + 1 + len;
	if (r->p >= r->end || *r->p != '\n')
		return -1;
	r->p++;
	return 0;
}

static int field_is(struct record *r, const void *want, size_t want_len)
{
	const char *s;
	size_t n;
	return field(r, &s, &n) == 0 && n == want_len && memcmp(s, want, n) == 0;
}

static char *field_str(struct record *r)
{
	const char *s;
	size_t n;
	return field(r, &s, &n) == 0 ? strndup(s, n) : NULL;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* 0: replayed. 1: replayed, but its stdout could not be written. -1: not (the caller runs Node). */
static int replay(int argc, char **argv, double started)
{
	/* A terminal is Node's (its live view); so are stdout and stderr that are not plain blocking fds. */
	for (int fd = 1; fd <= 2; fd++) {
		int fl = fcntl(fd, F_GETFL);
		if (fl < 0 || (fl & O_NONBLOCK))
			return -1;
	}
	if (isatty(2))
		return -1;
	const char *root = getenv("PETRI_ROOT");
	if (!root || !*root)
		root = "/var/lib/petri";
	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof cwd))
		return -1;
	struct buf key = { 0 };
	puts0(&key, "petri-replay-1");
	puts0(&key, cwd);
	for (int i = 0; i < argc; i++)
		puts0(&key, argv[i]);
	const char *sde = getenv("SOURCE_DATE_EPOCH");
	puts0(&key, "PETRI_ROOT");
	puts0(&key, getenv("PETRI_ROOT") ? getenv("PETRI_ROOT") : "\x01");
	puts0(&key, "SOURCE_DATE_EPOCH");
	puts0(&key, sde ? sde : "\x01");
	/* `--build-arg NAME` takes NAME's value from the environment: part of the key. */
	for (int i = 0; i < argc; i++) {
		const char *value = NULL;
		if (strcmp(argv[i], "--build-arg") == 0 && i + 1 < argc)
			value = argv[++i];
		else if (strncmp(argv[i], "--build-arg=", 12) == 0)
			value = argv[i] + 12;
		if (value && !strchr(value, '=')) {
			puts0(&key, value);
			puts0(&key, getenv(value) ? getenv(value) : "\x01");
		}
	}
	char name[17], path[PATH_MAX];
	key_name(&key, name);
	if (snprintf(path, sizeof path, "%s/build-cache/results/replay-%s", root, name) >= (int)sizeof path)
		return -1;
	struct rerr e;
	size_t len;
	char *text = read_whole_file(path, &len, &e);
	if (!text)
		return -1;
	struct record r = { text, text + len };
	static const char magic[] = "petri-replay 1\n";
	if (len < sizeof magic - 1 || memcmp(text, magic, sizeof magic - 1) != 0)
		return -1;
	r.p += sizeof magic - 1;
	if (!field_is(&r, key.p, key.len))
		return -1;
	/* petri itself: its build file, as it was. */
	char *self = field_str(&r), *self_stat = field_str(&r);
	struct stat st;
	char seen[64];
	if (!self || !self_stat || stat(self, &st) < 0)
		return -1;
	snprintf(seen, sizeof seen, "%lld:%lld", (long long)st.st_size,
		 (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec);
	if (strcmp(seen, self_stat) != 0)
		return -1;
	/* The context and the Dockerfile. */
	char *context = field_str(&r), *dockerfile = field_str(&r);
	if (!context || !dockerfile)
		return -1;
	struct fp f = { { 0 }, 0 };
	if (fingerprint(&f, context, dockerfile) < 0 || !field_is(&r, f.out.p, f.out.len))
		return -1;
	/* The image store: its index as it was, the manifest still there. */
	char *index = field_str(&r);
	if (!index)
		return -1;
	size_t index_len = 0;
	char *index_text = read_whole_file(index, &index_len, &e);
	if (!field_is(&r, index_text ? index_text : "", index_text ? index_len : 0))
		return -1;
	char *manifest = field_str(&r);
	if (!manifest || access(manifest, F_OK) < 0)
		return -1;
	/* What the build printed, with this run's duration where it said its own. */
	const char *out, *err, *mark, *unit;
	size_t out_len, err_len, mark_len, unit_len;
	if (field(&r, &out, &out_len) < 0 || field(&r, &err, &err_len) < 0 || field(&r, &mark, &mark_len) < 0 ||
	    field(&r, &unit, &unit_len) < 0)
		return -1;
	const char *at = mark_len ? memmem(err, err_len, mark, mark_len) : NULL;
	double ms = now_ms() - started;
	char took[32] = "";
	if (at && unit_len == 2 && memcmp(unit, "ms", 2) == 0)
		snprintf(took, sizeof took, "%.0f", ms);
	else if (at && unit_len == 1 && unit[0] == 's')
		snprintf(took, sizeof took, "%.1f", ms / 1000);
	else if (at)
		return -1;
	/* The progress is best effort (as Node's would be); the image ID on stdout is the result. */
	if (at) {
		if (write_all(2, err, (size_t)(at - err)) == 0 && write_all(2, took, strlen(took)) == 0)
			(void)write_all(2, at + mark_len, err_len - (size_t)(at - err) - mark_len);
	} else {
		(void)write_all(2, err, err_len);
	}
	if (write_all(1, out, out_len) < 0)
		return 1;
	return 0;
}

/* argv: petri-runner replay SCRIPT build ARGS... (checked by main). */
int replay_main(int argc, char **argv)
{
	double started = now_ms();
	int replayed = replay(argc - 3, argv + 3, started);
	if (replayed >= 0)
		return replayed;
	char **args = calloc((size_t)argc, sizeof *args);
	if (!args)
		return EXIT_SETUP;
	args[0] = "node";
	for (int i = 2; i < argc; i++)
		args[i - 1] = argv[i];
	execvp("node", args);
	fprintf(stderr, "petri: cannot run node: %s\n", strerror(errno));
	return 127;
}
