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
#include "sha256.h"

#include <dirent.h>
#include <ftw.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_ENTRIES 20000
/* A record's first line: "petri-replay 2 ", the SHA-256 (hex) of the rest at RECORD_SUM_AT, a newline. */
#define RECORD_SUM_AT 15
_Static_assert(sizeof "petri-replay 2 " - 1 == RECORD_SUM_AT, "the sum follows the magic");
#define HEX64_ZEROS "0000000000000000000000000000000000000000000000000000000000000000"

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

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The most fields a record has: 13, then a delta's 6, 5 per group (at most 4) and 2. */
#define FIELDS_MAX 48

/* What a record holds (replay.ts), as read from it. */
struct fields {
	const char *p[FIELDS_MAX];
	size_t n[FIELDS_MAX];
	int count;
};

enum {
	F_KEY,
	F_SELF,
	F_SELF_STAT,
	F_CONTEXT,
	F_DOCKERFILE,
	F_FILES,
	F_INDEX_PATH,
	F_INDEX,
	F_MANIFEST,
	F_OUT,
	F_ERR,
	F_MARK,
	F_UNIT,
	/* the delta (delta.ts: deltaFields), when the record has one */
	F_SPEC,
	F_CONFIG_T,
	F_MANIFEST_T,
	F_INDEX_T,
	F_OUT_T,
	F_PREFIX,
	F_GROUPS, /* per group: stderr cached, stderr redone, step, selection and cache-record templates; then the image line, cached and built */
};

#define GROUP_FIELDS 5
#define MAX_GROUPS 4
#define MAX_FILES 64
/* A layer the delta would make bigger than this is Node's to make. */
#define MAX_LAYER (8u << 20)

static int same(const struct fields *f, int i, const void *s, size_t n)
{
	return f->n[i] == n && memcmp(f->p[i], s, n) == 0;
}

/* Prints a build's output: stderr with this run's duration at the mark, then the image ID. 0, or 1 when stdout failed. */
static int print_output(const char *err, size_t err_len, const char *out, size_t out_len, const struct fields *f,
			double started)
{
	const char *mark = f->p[F_MARK], *unit = f->p[F_UNIT];
	size_t mark_len = f->n[F_MARK], unit_len = f->n[F_UNIT];
	const char *at = mark_len ? memmem(err, err_len, mark, mark_len) : NULL;
	double ms = now_ms() - started;
	char took[32] = "";
	if (at && unit_len == 2 && memcmp(unit, "ms", 2) == 0)
		snprintf(took, sizeof took, "%.0f", ms);
	else if (at && unit_len == 1 && unit[0] == 's')
		snprintf(took, sizeof took, "%.1f", ms / 1000);
	/* The progress is best effort (as Node's would be); the image ID on stdout is the result. */
	if (at) {
		if (write_all(2, err, (size_t)(at - err)) == 0 && write_all(2, took, strlen(took)) == 0)
			(void)write_all(2, at + mark_len, err_len - (size_t)(at - err) - mark_len);
	} else {
		(void)write_all(2, err, err_len);
	}
	return write_all(1, out, out_len) < 0 ? 1 : 0;
}

/* --- the delta: a build whose only change is in files its last COPY steps alone read --- */

struct group {
	char hex[65], created[40];
	unsigned long long size;
	/* this run's: its layer, whether a step-cache record had it (else redone), its time, its cache key */
	char new_hex[65], new_created[40], key[72];
	unsigned long long new_size;
	int redone;
	struct buf layer; /* the patched layer, when one of its files changed */
};

struct dfile {
	int group;
	unsigned long long offset, new_offset;
	char digest[65];
	const char *label;
	size_t label_len;
	int differs;
};

#define MAX_BELOW 256

struct delta {
	int full;
	long long epoch;
	char parent[80];
	/* the step-cache records below the tail, and the SHA-256 of them as they were (delta.ts: deltaFields) */
	const char *below[MAX_BELOW];
	int nbelow;
	char below_hash[65];
	int groups;
	struct group g[MAX_GROUPS];
	int files;
	struct dfile f[MAX_FILES];
	char spec_copy[16384];
};

/* A decimal field of a spec line up to the next tab: 0, or -1. */
static int number_field(char **p, unsigned long long *out)
{
	char *stop;
	errno = 0;
	if (**p < '0' || **p > '9')
		return -1;
	*out = strtoull(*p, &stop, 10);
	if (errno || *stop != '\t')
		return -1;
	*p = stop + 1;
	return 0;
}

static int hex64(const char *p)
{
	for (int i = 0; i < 64; i++)
		if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
			return 0;
	return 1;
}

static int parse_spec(const char *spec, size_t len, struct delta *d)
{
	if (len >= sizeof d->spec_copy || memchr(spec, 0, len))
		return -1;
	memcpy(d->spec_copy, spec, len);
	d->spec_copy[len] = 0;
	char *save = NULL, *line = strtok_r(d->spec_copy, "\n", &save);
	if (!line || strcmp(line, "petri-delta 1") != 0)
		return -1;
	d->full = -1;
	d->epoch = -1;
	while ((line = strtok_r(NULL, "\n", &save))) {
		unsigned long long n, offset;
		if (strcmp(line, "full 1") == 0 || strcmp(line, "full 0") == 0) {
			d->full = line[5] == '1';
		} else if (strncmp(line, "epoch\t", 6) == 0) {
			char *p = line + 6, *stop;
			errno = 0;
			d->epoch = strtoll(p, &stop, 10);
			if (errno || stop == p || *stop || d->epoch < 0)
				return -1;
		} else if (strncmp(line, "parent\t", 7) == 0) {
			if (strlen(line + 7) != 71 || strncmp(line + 7, "sha256:", 7) != 0 || !hex64(line + 14))
				return -1;
			memcpy(d->parent, line + 7, 72);
		} else if (strncmp(line, "below\t", 6) == 0) {
			if (d->nbelow == MAX_BELOW || strlen(line + 6) != 64 || !hex64(line + 6))
				return -1;
			d->below[d->nbelow++] = line + 6;
		} else if (strncmp(line, "belowhash\t", 10) == 0) {
			if (strlen(line + 10) != 64 || !hex64(line + 10))
				return -1;
			memcpy(d->below_hash, line + 10, 65);
		} else if (strncmp(line, "group\t", 6) == 0) {
			if (d->groups == MAX_GROUPS)
				return -1;
			struct group *g = &d->g[d->groups++];
			char *p = line + 6;
			if (!hex64(p) || p[64] != '\t')
				return -1;
			memcpy(g->hex, p, 64);
			p += 65;
			if (number_field(&p, &g->size) < 0 || strlen(p) == 0 || strlen(p) >= sizeof g->created ||
			    strspn(p, "0123456789:.TZ-") != strlen(p))
				return -1;
			strcpy(g->created, p);
		} else if (strncmp(line, "file\t", 5) == 0) {
			if (d->files == MAX_FILES)
				return -1;
			struct dfile *f = &d->f[d->files++];
			char *p = line + 5;
			if (number_field(&p, &n) < 0 || n >= (unsigned long long)d->groups || number_field(&p, &offset) < 0 ||
			    offset % 512 || !hex64(p) || p[64] != '\t' || p[65] == 0)
				return -1;
			f->group = (int)n;
			f->offset = offset;
			memcpy(f->digest, p, 64);
			f->label = p + 65;
			f->label_len = strlen(f->label);
			/* in the layer's order, group by group (a later group's files after) */
			if (d->files > 1 && (f[-1].group > f->group || (f[-1].group == f->group && f[-1].offset >= f->offset)))
				return -1;
		} else {
			return -1;
		}
	}
	if (d->full < 0 || d->epoch < 0 || !d->parent[0] || !d->below_hash[0] || d->groups == 0 || d->files == 0)
		return -1;
	return 0;
}

/* The fields of a fingerprint line after its label: mode, uid, gid, size, dev, ino, mtime, ctime. */
static int line_fields(const char *line, size_t len, const char *out[8], size_t out_len[8])
{
	const char *p = memchr(line, 0, len), *end = line + len;
	for (int i = 0; i < 8; i++) {
		if (!p || p >= end)
			return -1;
		p++;
		const char *stop = memchr(p, 0, (size_t)(end - p));
		out[i] = p;
		out_len[i] = (size_t)((stop ? stop : end) - p);
		p = stop;
	}
	return p ? -1 : 0;
}

/* Marks a delta file whose fingerprint line differs; 0 when the label is none of its files. */
static int mark_delta_file(void *ctx, const char *label, size_t label_len)
{
	struct delta *d = ctx;
	int found = 0;
	for (int i = 0; i < d->files; i++)
		if (d->f[i].label_len == label_len && memcmp(d->f[i].label, label, label_len) == 0) {
			d->f[i].differs = 1;
			found = 1;
		}
	return found;
}

/*
 * Compares the record's fingerprint with now's: every line the same but those
 * of files `mark` knows (and marks), whose mode and owner must be too (their
 * content, size and times may differ). 0 when only such files differ.
 */
static int compare_fingerprints(const char *old, size_t old_len, const char *now, size_t now_len,
				int (*mark)(void *, const char *, size_t), void *ctx)
{
	const char *a = old, *a_end = old + old_len, *b = now, *b_end = now + now_len;
	while (a < a_end || b < b_end) {
		if (a >= a_end || b >= b_end)
			return -1;
		const char *a_nl = memchr(a, '\n', (size_t)(a_end - a)), *b_nl = memchr(b, '\n', (size_t)(b_end - b));
		size_t a_len = (size_t)((a_nl ? a_nl : a_end) - a), b_len = (size_t)((b_nl ? b_nl : b_end) - b);
		if (a_len != b_len || memcmp(a, b, a_len) != 0) {
			const char *a_label_end = memchr(a, 0, a_len), *b_label_end = memchr(b, 0, b_len);
			if (!a_label_end || !b_label_end)
				return -1;
			size_t label_len = (size_t)(a_label_end - a);
			if (label_len != (size_t)(b_label_end - b) || memcmp(a, b, label_len) != 0)
				return -1;
			int found = mark(ctx, a, label_len);
			const char *fa[8], *fb[8];
			size_t la[8], lb[8];
			if (!found || line_fields(a, a_len, fa, la) < 0 || line_fields(b, b_len, fb, lb) < 0)
				return -1;
			for (int i = 0; i < 3; i++) /* mode, uid, gid */
				if (la[i] != lb[i] || memcmp(fa[i], fb[i], la[i]) != 0)
					return -1;
			if (!S_ISREG((mode_t)strtoul(fb[0], NULL, 10)))
				return -1;
		}
		a += a_len + (a_nl ? 1 : 0);
		b += b_len + (b_nl ? 1 : 0);
		if ((a_nl == NULL) != (b_nl == NULL))
			return -1;
	}
	return 0;
}

static unsigned long long octal_field(const unsigned char *p, size_t n)
{
	unsigned long long v = 0;
	for (size_t i = 0; i < n && p[i] >= '0' && p[i] <= '7'; i++)
		v = v * 8 + (unsigned long long)(p[i] - '0');
	return v;
}

static void hash_hex(const void *p, size_t n, char out[65])
{
	struct sha256 h;
	sha256_init(&h);
	sha256_update(&h, p, n);
	sha256_hex(&h, out);
}

/* A file's content, read whole; its fstat in *st. NULL when it is not a regular file or changed while read. */
static char *read_content(const char *context, const char *label, size_t label_len, struct stat *st)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof path, "%s/%.*s", context, (int)label_len, label) >= (int)sizeof path)
		return NULL;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	char *data = NULL;
	if (fstat(fd, st) == 0 && S_ISREG(st->st_mode) && st->st_size < (off_t)MAX_LAYER) {
		size_t size = (size_t)st->st_size, got = 0;
		data = malloc(size + 1);
		while (data && got <= size) {
			ssize_t n = read(fd, data + got, size + 1 - got);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			got += (size_t)n;
		}
		if (data && got != size) { /* it grew or shrank while read */
			free(data);
			data = NULL;
		}
	}
	close(fd);
	return data;
}

/*
 * The group's layer with each changed file's content swapped in: the old
 * header with the new size and checksum, the content, zeros to a 512-byte
 * block (the old layer is checked against its digest on the way). Its digest
 * and size in g->new_*, each file's new digest and offset in the file's. 0,
 * or -1 (then Node builds).
 */
static int patch_layer(const char *blobs, const char *context, struct delta *d, int gi, double at_ns)
{
	struct group *g = &d->g[gi];
	char path[PATH_MAX];
	if (snprintf(path, sizeof path, "%s/%s", blobs, g->hex) >= (int)sizeof path)
		return -1;
	struct rerr e;
	size_t len;
	char *old = read_whole_file(path, &len, &e);
	if (!old || len != g->size) {
		free(old);
		return -1;
	}
	char old_hex[65];
	hash_hex(old, len, old_hex);
	struct buf *out = &g->layer;
	size_t from = 0;
	out->len = 0;
	int rc = -1;
	if (strcmp(old_hex, g->hex) != 0)
		goto done;
	for (int i = 0; i < d->files; i++) {
		struct dfile *f = &d->f[i];
		if (f->group != gi)
			continue;
		if (f->offset < from || f->offset > len || len - f->offset < 512)
			goto done;
		if (put(out, old + from, f->offset - from) < 0)
			goto done;
		f->new_offset = out->len;
		unsigned char header[512];
		memcpy(header, old + f->offset, 512);
		unsigned long long old_size = octal_field(header + 124, 11);
		if (header[156] != '0' || header[124] >= 0x80 || (long long)octal_field(header + 136, 11) != d->epoch ||
		    old_size > len - f->offset - 512)
			goto done;
		from = f->offset + 512 + (old_size + 511) / 512 * 512;
		if (from > len)
			goto done;
		if (!f->differs) { /* as it was */
			if (put(out, old + f->offset, from - f->offset) < 0)
				goto done;
			continue;
		}
		struct stat st;
		char *content = read_content(context, f->label, f->label_len, &st);
		if (!content)
			goto done;
		/* The layer keeps min(mtime, SOURCE_DATE_EPOCH): the old header's holds only if it is clamped again. */
		if (st.st_mtim.tv_sec < d->epoch) {
			free(content);
			goto done;
		}
		if ((double)st.st_ctim.tv_sec * 1e9 + (double)st.st_ctim.tv_nsec > at_ns - 100e6)
			d->full = 0; /* racily clean: the next build reads it again */
		hash_hex(content, (size_t)st.st_size, f->digest);
		char num[16];
		snprintf(num, sizeof num, "%011llo ", (unsigned long long)st.st_size);
		memcpy(header + 124, num, 12);
		memset(header + 148, ' ', 8);
		unsigned sum = 0;
		for (int k = 0; k < 512; k++)
			sum += header[k];
		snprintf(num, sizeof num, "%06o ", sum);
		memcpy(header + 148, num, 7);
		header[155] = old[f->offset + 155];
		size_t pad = (512 - (size_t)st.st_size % 512) % 512;
		static const char zeros[512];
		int ok = put(out, header, 512) == 0 && put(out, content, (size_t)st.st_size) == 0 &&
			 put(out, zeros, pad) == 0;
		free(content);
		if (!ok || out->len > MAX_LAYER)
			goto done;
	}
	if (put(out, old + from, len - from) < 0 || out->len > MAX_LAYER)
		goto done;
	hash_hex(out->p, out->len, g->new_hex);
	g->new_size = out->len;
	rc = 0;
done:
	free(old);
	return rc;
}

/* A file written beside and renamed into place. */
static int write_file_atomic(const char *path, const char *tmp, const void *data, size_t len)
{
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	if (fd < 0)
		return -1;
	int ok = write_all(fd, data, len) == 0;
	ok = close(fd) == 0 && ok;
	if (!ok || rename(tmp, path) < 0) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* A blob written as the store writes one: beside, then renamed to its digest; one already there is touched (a prune spares it). */
static int write_blob(const char *blobs, const char *hex, const void *data, size_t len)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	if (snprintf(path, sizeof path, "%s/%s", blobs, hex) >= (int)sizeof path ||
	    snprintf(tmp, sizeof tmp, "%s/.tmp-%d-replay-%.12s", blobs, (int)getpid(), hex) >= (int)sizeof tmp)
		return -1;
	struct stat st;
	if (stat(path, &st) == 0 && (size_t)st.st_size == len && utimensat(AT_FDCWD, path, NULL, 0) == 0)
		return 0;
	return write_file_atomic(path, tmp, data, len);
}

static void iso_time(char out[40], long long sec, long nsec)
{
	time_t t = (time_t)sec;
	struct tm tm;
	char text[128];
	gmtime_r(&t, &tm);
	int n = snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
			 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(nsec / 1000000));
	if (n > 0 && n < 40)
		memcpy(out, text, (size_t)n + 1);
	else
		memcpy(out, "1970-01-01T00:00:00.000Z", 25);
}

/* The values of a template's markers (delta.ts: `@@petri:NAME@@`); a group's are known once `known` passes it. */
struct values {
	const struct delta *d;
	const char *id, *manifest;
	size_t config_size, manifest_size;
	int known; /* groups whose layer and time are known */
	char content[MAX_GROUPS][65];
	int contents; /* groups whose content hash is known */
};

/*
 * A template with its `@@petri:NAME@@` markers replaced by what `value` gives
 * for NAME (at most 32 bytes; `scratch` for a value it formats); -1 for a
 * marker it gives nothing for.
 */
static int expand_marks(const char *t, size_t len, const char *(*value)(const void *ctx, const char *name, char *scratch),
			const void *ctx, struct buf *out)
{
	static const char open_mark[] = "@@petri:";
	const char *end = t + len;
	out->len = 0;
	if (put(out, "", 0) < 0)
		return -1;
	while (t < end) {
		const char *m = memmem(t, (size_t)(end - t), open_mark, sizeof open_mark - 1);
		if (!m)
			return put(out, t, (size_t)(end - t));
		if (put(out, t, (size_t)(m - t)) < 0)
			return -1;
		const char *name = m + sizeof open_mark - 1;
		const char *close_mark = memmem(name, (size_t)(end - name), "@@", 2);
		if (!close_mark || close_mark - name > 32)
			return -1;
		char key[40], scratch[80];
		snprintf(key, sizeof key, "%.*s", (int)(close_mark - name), name);
		const char *v = value(ctx, key, scratch);
		if (!v || put(out, v, strlen(v)) < 0)
			return -1;
		t = close_mark + 2;
	}
	return 0;
}

/* A delta template's marker: NULL for one it does not know (or one whose value is not yet known). */
static const char *delta_value(const void *ctx, const char *key, char *val)
{
	const struct values *v = ctx;
	int i = -1, n = 0;
	if (strcmp(key, "id") == 0)
		return v->id;
	if (strcmp(key, "manifest") == 0)
		return v->manifest;
	if (strcmp(key, "config-size") == 0 && v->id)
		return snprintf(val, 80, "%zu", v->config_size), val;
	if (strcmp(key, "manifest-size") == 0 && v->manifest)
		return snprintf(val, 80, "%zu", v->manifest_size), val;
	if (sscanf(key, "layer:%d%n", &i, &n) == 1 && key[n] == 0 && i >= 0 && i < v->known)
		return v->d->g[i].new_hex;
	if (sscanf(key, "layer-size:%d%n", &i, &n) == 1 && key[n] == 0 && i >= 0 && i < v->known)
		return snprintf(val, 80, "%llu", v->d->g[i].new_size), val;
	if (sscanf(key, "created:%d%n", &i, &n) == 1 && key[n] == 0 && i >= 0 && i < v->known)
		return v->d->g[i].new_created;
	if (sscanf(key, "digest:%d%n", &i, &n) == 1 && key[n] == 0 && i >= 0 && i < v->d->files)
		return v->d->f[i].digest;
	if (sscanf(key, "content:%d%n", &i, &n) == 1 && key[n] == 0 && i >= 0 && i < v->contents)
		return v->content[i];
	return NULL;
}

/* A delta template with its markers replaced; -1 for a marker it does not know (or one whose value is not yet known). */
static int expand(const char *t, size_t len, const struct values *v, struct buf *out)
{
	return expand_marks(t, len, delta_value, v, out);
}

static int put_field(struct buf *b, const void *s, size_t n)
{
	char head[32];
	int k = snprintf(head, sizeof head, "%zu\n", n);
	return put(b, head, (size_t)k) == 0 && put(b, s, n) == 0 && put(b, "\n", 1) == 0 ? 0 : -1;
}

/* Whether a step-cache record's layer blob is in the store (no layer: 1, as the builder takes it). */
static int record_layer_present(const char *text, size_t len, const char *blobs)
{
	static const char key[] = "\"digest\":\"sha256:";
	const char *p = memmem(text, len, key, sizeof key - 1);
	char path[PATH_MAX];
	if (!p)
		return 1;
	p += sizeof key - 1;
	if (text + len - p < 64 || !hex64(p) || snprintf(path, sizeof path, "%s/%.64s", blobs, p) >= (int)sizeof path)
		return 0;
	return access(path, F_OK) == 0;
}

/* The `"created":"…"` of a step-cache record, or -1. */
static int record_created(const char *text, size_t len, char out[40])
{
	static const char key[] = "\"created\":\"";
	const char *p = memmem(text, len, key, sizeof key - 1);
	if (!p)
		return -1;
	p += sizeof key - 1;
	const char *q = memchr(p, '"', (size_t)(text + len - p));
	if (!q || q - p >= 40 || q == p)
		return -1;
	memcpy(out, p, (size_t)(q - p));
	out[q - p] = 0;
	return strspn(out, "0123456789:.TZ-") == (size_t)(q - p) ? 0 : -1;
}

/* Whether the step-cache records below the tail are as they were (the builder would read the same). */
static int below_unchanged(const struct delta *d, const char *steps)
{
	struct sha256 h;
	sha256_init(&h);
	for (int i = 0; i < d->nbelow; i++) {
		char path[PATH_MAX];
		if (snprintf(path, sizeof path, "%s/%.64s", steps, d->below[i]) >= (int)sizeof path)
			return 0;
		struct rerr e;
		size_t len;
		char *text = read_whole_file(path, &len, &e);
		if (!text)
			return 0;
		sha256_update(&h, "sha256:", 7);
		sha256_update(&h, d->below[i], 64);
		sha256_update(&h, "\n", 1);
		sha256_update(&h, text, len);
		sha256_update(&h, "\n", 1);
		free(text);
	}
	char hex[65];
	sha256_hex(&h, hex);
	return strcmp(hex, d->below_hash) == 0;
}

/* Whether every blob a manifest names is in the store, with its size (ImageStore.tag checks so: a prune may run). */
static int blobs_whole(const char *blobs, const struct buf *manifest)
{
	static const char key[] = "\"digest\":\"sha256:";
	const char *end = manifest->p + manifest->len;
	for (const char *p = manifest->p; (p = memmem(p, (size_t)(end - p), key, sizeof key - 1)); p += 64) {
		p += sizeof key - 1;
		char path[PATH_MAX];
		struct stat st;
		if (end - p < 64 + 10 || !hex64(p) || memcmp(p + 64, "\",\"size\":", 9) != 0 ||
		    snprintf(path, sizeof path, "%s/%.64s", blobs, p) >= (int)sizeof path || stat(path, &st) < 0 ||
		    st.st_size != strtoll(p + 73, NULL, 10))
			return 0;
	}
	return 1;
}

/*
 * Redoes the build from the record's delta, step by step as the builder
 * would: each COPY's layer (patched when a file of it changed), its cache key
 * (from the templates: the files' digests, the selection, the key below), and
 * the step cache's answer to it: a record there means the builder would take
 * it (CACHED, its time); else the step is redone (DONE, now) and its record
 * written. Then the config, manifest and index from their templates, the
 * output, and a new record for the next build. 0/1 as replay(); -1 when it
 * cannot (Node builds; a blob written by then is an unreferenced one).
 */
static int delta_replay(const struct fields *f, const struct buf *fp, double at_ns, const char *root,
			const char *record_path, int same_fp, double started)
{
	struct delta *d = calloc(1, sizeof *d);
	struct values *v = calloc(1, sizeof *v);
	char *context = strndup(f->p[F_CONTEXT], f->n[F_CONTEXT]);
	if (!d || !v || !context || parse_spec(f->p[F_SPEC], f->n[F_SPEC], d) < 0)
		return -1;
	int groups = d->groups;
	if (f->count != F_GROUPS + GROUP_FIELDS * groups + 2)
		return -1;
	if (!same_fp && compare_fingerprints(f->p[F_FILES], f->n[F_FILES], fp->p, fp->len, mark_delta_file, d) < 0)
		return -1;
	/* A record made racily clean vouches for none of its files' content: read them all again. */
	if (!d->full)
		for (int i = 0; i < d->files; i++)
			d->f[i].differs = 1;
	d->full = 1;
	char blobs[PATH_MAX - 128], steps[PATH_MAX - 128];
	if (snprintf(blobs, sizeof blobs, "%s/images/blobs/sha256", root) >= (int)sizeof blobs ||
	    snprintf(steps, sizeof steps, "%s/build-cache/steps", root) >= (int)sizeof steps)
		return -1;
	if (!below_unchanged(d, steps))
		return -1;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	v->d = d;
	struct buf text = { 0 }, step = { 0 }, record = { 0 };
	const char *parent = d->parent;
	for (int gi = 0; gi < groups; gi++) {
		struct group *g = &d->g[gi];
		int read = 0;
		for (int i = 0; i < d->files; i++)
			read |= d->f[i].group == gi && d->f[i].differs;
		memcpy(g->new_hex, g->hex, sizeof g->hex);
		g->new_size = g->size;
		for (int i = 0; i < d->files; i++)
			if (d->f[i].group == gi)
				d->f[i].new_offset = d->f[i].offset;
		if (read && patch_layer(blobs, context, d, gi, at_ns) < 0)
			return -1;
		/* Its cache key: the content hash of its selection, then the step on the key below. */
		const char *const *t = (const char *const *)&f->p[F_GROUPS + GROUP_FIELDS * gi];
		const size_t *n = &f->n[F_GROUPS + GROUP_FIELDS * gi];
		if (expand(t[3], n[3], v, &text) < 0)
			return -1;
		hash_hex(text.p, text.len, v->content[gi]);
		v->contents = gi + 1;
		if (expand(t[2], n[2], v, &step) < 0)
			return -1;
		struct sha256 h;
		sha256_init(&h);
		sha256_update(&h, parent, strlen(parent));
		sha256_update(&h, "", 1);
		sha256_update(&h, step.p, step.len);
		memcpy(g->key, "sha256:", 7);
		sha256_hex(&h, g->key + 7);
		parent = g->key;
		/* The step cache: a record for this key (with its layer still there) is what the builder would take. */
		char path[PATH_MAX], tmp[PATH_MAX], layer_path[PATH_MAX];
		if (snprintf(path, sizeof path, "%s/%s", steps, g->key + 7) >= (int)sizeof path ||
		    snprintf(tmp, sizeof tmp, "%s/.tmp-%d-replay-%d", steps, (int)getpid(), gi) >= (int)sizeof tmp ||
		    snprintf(layer_path, sizeof layer_path, "%s/%s", blobs, g->new_hex) >= (int)sizeof layer_path)
			return -1;
		struct rerr e;
		size_t len = 0;
		char *cached = read_whole_file(path, &len, &e);
		g->redone = 1;
		/* As BuildCache.get and the builder's hasBlob: a record whose layer is gone is a miss. */
		if (cached && record_layer_present(cached, len, blobs)) {
			if (record_created(cached, len, g->new_created) < 0)
				return -1;
			v->known = gi + 1;
			if (expand(t[4], n[4], v, &record) < 0 || record.len != len || memcmp(record.p, cached, len) != 0)
				return -1; /* another layer for this key (other mtimes, another epoch): Node's to take */
			g->redone = 0;
		}
		free(cached);
		if (g->redone) {
			if (d->epoch > 0)
				iso_time(g->new_created, d->epoch, 0);
			else
				iso_time(g->new_created, (long long)now.tv_sec, now.tv_nsec);
			v->known = gi + 1;
			if (strcmp(g->new_hex, g->hex) != 0 && write_blob(blobs, g->new_hex, g->layer.p, g->layer.len) < 0)
				return -1;
			if (expand(t[4], n[4], v, &record) < 0)
				return -1;
			mkdir(steps, 0700);
			if (write_file_atomic(path, tmp, record.p, record.len) < 0)
				return -1;
		}
	}
	/* The image: the same one (a touched file; an earlier content the step cache had) or a new one, tagged. */
	char id[65], manifest_hex[65];
	struct buf config = { 0 }, manifest = { 0 }, index = { 0 }, tmp = { 0 };
	if (expand(f->p[F_CONFIG_T], f->n[F_CONFIG_T], v, &config) < 0)
		return -1;
	hash_hex(config.p, config.len, id);
	v->id = id;
	v->config_size = config.len;
	if (expand(f->p[F_MANIFEST_T], f->n[F_MANIFEST_T], v, &manifest) < 0)
		return -1;
	hash_hex(manifest.p, manifest.len, manifest_hex);
	v->manifest = manifest_hex;
	v->manifest_size = manifest.len;
	if (expand(f->p[F_INDEX_T], f->n[F_INDEX_T], v, &index) < 0)
		return -1;
	char manifest_path[PATH_MAX];
	if (snprintf(manifest_path, sizeof manifest_path, "%s/%s", blobs, manifest_hex) >= (int)sizeof manifest_path)
		return -1;
	/* (the record's manifest path ends with its digest) */
	int changed = f->n[F_MANIFEST] < 64 || memcmp(f->p[F_MANIFEST] + f->n[F_MANIFEST] - 64, manifest_hex, 64) != 0;
	if (!changed && !blobs_whole(blobs, &manifest))
		return -1; /* the builder would make a layer again */
	if (changed && same(f, F_INDEX, index.p, index.len)) {
		/* no tag to move (an untagged build): the blobs alone */
		if (write_blob(blobs, id, config.p, config.len) < 0 ||
		    write_blob(blobs, manifest_hex, manifest.p, manifest.len) < 0 || !blobs_whole(blobs, &manifest))
			return -1;
	} else if (changed) {
		if (write_blob(blobs, id, config.p, config.len) < 0 ||
		    write_blob(blobs, manifest_hex, manifest.p, manifest.len) < 0)
			return -1;
		/* The index under the store's lock (image/lock.ts: proper-lockfile's mkdir); a held lock is Node's to wait for. */
		char index_path[PATH_MAX - 64], lock[PATH_MAX], index_tmp[PATH_MAX];
		if (snprintf(index_path, sizeof index_path, "%.*s", (int)f->n[F_INDEX_PATH], f->p[F_INDEX_PATH]) >=
			    (int)sizeof index_path ||
		    snprintf(lock, sizeof lock, "%s.lock", index_path) >= (int)sizeof lock ||
		    snprintf(index_tmp, sizeof index_tmp, "%s/images/.tmp-%d-replay", root, (int)getpid()) >=
			    (int)sizeof index_tmp)
			return -1;
		if (mkdir(lock, 0777) < 0)
			return -1;
		struct rerr e;
		size_t now_len = 0;
		char *now_index = read_whole_file(index_path, &now_len, &e);
		int ok = now_index && same(f, F_INDEX, now_index, now_len);
		free(now_index);
		/* Every blob of the image still there (ImageStore.tag checks so too: a prune may have run meanwhile). */
		ok = ok && access(manifest_path, F_OK) == 0 && blobs_whole(blobs, &manifest);
		ok = ok && write_file_atomic(index_path, index_tmp, index.p, index.len) == 0;
		rmdir(lock);
		if (!ok)
			return -1;
	}
	/* The output: what the builder prints for such a build. */
	struct buf err = { 0 }, out = { 0 }, cached = { 0 }, cached_err = { 0 };
	int ok = put(&tmp, f->p[F_PREFIX], f->n[F_PREFIX]) == 0 && put(&cached, f->p[F_PREFIX], f->n[F_PREFIX]) == 0;
	for (int gi = 0; ok && gi < groups; gi++) {
		int k = F_GROUPS + GROUP_FIELDS * gi, r = d->g[gi].redone;
		ok = put(&tmp, f->p[k + r], f->n[k + r]) == 0 && put(&cached, f->p[k], f->n[k]) == 0;
	}
	int k = F_GROUPS + GROUP_FIELDS * groups;
	/* The next replay prints the image line as a build does: Node's result cache has no record of this one. */
	ok = ok && put(&tmp, f->p[k + 1], f->n[k + 1]) == 0 && put(&cached, f->p[k + 1], f->n[k + 1]) == 0;
	if (!ok || expand(tmp.p, tmp.len, v, &err) < 0 || expand(f->p[F_OUT_T], f->n[F_OUT_T], v, &out) < 0 ||
	    expand(cached.p, cached.len, v, &cached_err) < 0)
		return -1;
	int printed = print_output(err.p, err.len, out.p, out.len, f, started);

	/* The record for the next build: now's fingerprint, index and image, the delta as it now stands. */
	struct buf spec = { 0 }, rec = { 0 };
	char line[256];
	snprintf(line, sizeof line, "petri-delta 1\nfull %d\nepoch\t%lld\nparent\t%s\n", d->full, d->epoch, d->parent);
	ok = put(&spec, line, strlen(line)) == 0;
	for (int i = 0; ok && i < d->nbelow; i++) {
		snprintf(line, sizeof line, "below\t%.64s\n", d->below[i]);
		ok = put(&spec, line, strlen(line)) == 0;
	}
	snprintf(line, sizeof line, "belowhash\t%s\n", d->below_hash);
	ok = ok && put(&spec, line, strlen(line)) == 0;
	for (int gi = 0; ok && gi < groups; gi++) {
		snprintf(line, sizeof line, "group\t%s\t%llu\t%s\n", d->g[gi].new_hex, d->g[gi].new_size,
			 d->g[gi].new_created);
		ok = put(&spec, line, strlen(line)) == 0;
	}
	for (int i = 0; ok && i < d->files; i++) {
		snprintf(line, sizeof line, "file\t%d\t%llu\t%s\t", d->f[i].group, d->f[i].new_offset, d->f[i].digest);
		ok = put(&spec, line, strlen(line)) == 0 && put(&spec, d->f[i].label, d->f[i].label_len) == 0 &&
		     put(&spec, "\n", 1) == 0;
	}
	/* The first line: the magic and the SHA-256 of the rest, filled in once the rest is written. */
	static const char head[] = "petri-replay 2 " HEX64_ZEROS "\n";
	ok = ok && put(&rec, head, sizeof head - 1) == 0;
	for (int i = 0; ok && i < f->count; i++) {
		const void *p = f->p[i];
		size_t n = f->n[i];
		if (i == F_FILES)
			p = fp->p, n = fp->len;
		else if (i == F_INDEX && changed)
			p = index.p, n = index.len;
		else if (i == F_MANIFEST)
			p = manifest_path, n = strlen(manifest_path);
		else if (i == F_OUT)
			p = out.p, n = out.len;
		else if (i == F_ERR)
			p = cached_err.p, n = cached_err.len;
		else if (i == F_SPEC)
			p = spec.p, n = spec.len;
		ok = put_field(&rec, p, n) == 0;
	}
	if (ok) {
		char sum[65];
		hash_hex(rec.p + sizeof head - 1, rec.len - (sizeof head - 1), sum);
		memcpy(rec.p + RECORD_SUM_AT, sum, 64);
	}
	char rec_tmp[PATH_MAX];
	if (ok && snprintf(rec_tmp, sizeof rec_tmp, "%s.%d.tmp", record_path, (int)getpid()) < (int)sizeof rec_tmp)
		(void)write_file_atomic(record_path, rec_tmp, rec.p, rec.len);
	return printed;
}

/* --- early runs (src/build/early.ts): the RUN after a context COPY, started while Node starts --- */

#define EARLY_MAX 64

struct early_file {
	const char *label;
	size_t label_len;
	char digest[65]; /* as recorded, then now's */
	int differs;
	char *data;
	struct stat st;
};

struct early_entry {
	int is_dir, file, fresh;
	unsigned mode, uid, gid;
	long long mtime_ns;
	const char *path;
};

struct early {
	char spec[32768];
	const char *parent, *options, *containers, *layers;
	const char *cgroup[8];
	int ncgroups, resolv;
	/* the index entries of the images the build took, as they must still be */
	const char *index[16];
	int nindex;
	/* how Node sets a copied file's time: its nanoseconds truncated to microseconds (libuv < 1.52) or not */
	int times_us;
	struct early_file f[EARLY_MAX];
	int files;
	struct early_entry e[EARLY_MAX];
	int entries;
	/* this run's */
	char id[13], dir[PATH_MAX], staging[PATH_MAX], lower[PATH_MAX], resolv_path[PATH_MAX], created[40], owner[64];
	char key[72];
	char made_cgroup[8][PATH_MAX];
	int made_cgroups;
};

static int mark_early_file(void *ctx, const char *label, size_t label_len)
{
	struct early *x = ctx;
	int found = 0;
	for (int i = 0; i < x->files; i++)
		if (x->f[i].label_len == label_len && memcmp(x->f[i].label, label, label_len) == 0)
			x->f[i].differs = found = 1;
	return found;
}

/* Splits a tab-separated line in place into at most n fields; the count. */
static int tabs(char *line, char **out, int n)
{
	int k = 0;
	out[k++] = line;
	for (char *p = line; *p && k < n; p++)
		if (*p == '\t') {
			*p = 0;
			out[k++] = p + 1;
		}
	return k;
}

static int parse_early(const char *spec, size_t len, struct early *x)
{
	if (len >= sizeof x->spec || memchr(spec, 0, len))
		return -1;
	memcpy(x->spec, spec, len);
	x->spec[len] = 0;
	char *save = NULL, *line = strtok_r(x->spec, "\n", &save);
	if (!line || strcmp(line, "petri-early 1") != 0)
		return -1;
	x->resolv = -1;
	x->times_us = -1;
	while ((line = strtok_r(NULL, "\n", &save))) {
		char *v[8];
		int n = tabs(line, v, 8);
		if (n == 2 && strcmp(v[0], "parent") == 0 && strlen(v[1]) == 71 && hex64(v[1] + 7)) {
			x->parent = v[1];
		} else if (n == 2 && strcmp(v[0], "options") == 0 && strlen(v[1]) == 64 && hex64(v[1])) {
			x->options = v[1];
		} else if (n == 2 && strcmp(v[0], "resolv") == 0 && (v[1][0] == '0' || v[1][0] == '1') && !v[1][1]) {
			x->resolv = v[1][0] == '1';
		} else if (n == 2 && strcmp(v[0], "mtimes") == 0 && (!strcmp(v[1], "us") || !strcmp(v[1], "ns"))) {
			x->times_us = v[1][0] == 'u';
		} else if (n == 2 && strcmp(v[0], "containers") == 0 && v[1][0] == '/') {
			x->containers = v[1];
		} else if (n == 2 && strcmp(v[0], "layers") == 0 && v[1][0] == '/') {
			x->layers = v[1];
		} else if (n == 2 && strcmp(v[0], "index") == 0 && v[1][0] == '{' && x->nindex < 16) {
			x->index[x->nindex++] = v[1];
		} else if (n == 2 && strcmp(v[0], "cgroup") == 0 && v[1][0] == '/' && x->ncgroups < 8) {
			x->cgroup[x->ncgroups++] = v[1];
		} else if (n == 3 && strcmp(v[0], "src") == 0 && x->files < EARLY_MAX && strlen(v[1]) == 64 &&
			   hex64(v[1]) && v[2][0]) {
			struct early_file *f = &x->f[x->files++];
			memcpy(f->digest, v[1], 65);
			f->label = v[2];
			f->label_len = strlen(v[2]);
		} else if (n == 8 && (strcmp(v[0], "dir") == 0 || strcmp(v[0], "file") == 0) && x->entries < EARLY_MAX) {
			struct early_entry *e = &x->e[x->entries++];
			char *stop;
			e->is_dir = v[0][0] == 'd';
			e->mode = (unsigned)strtoul(v[1], &stop, 10);
			e->uid = (unsigned)strtoul(v[2], &stop, 10);
			e->gid = (unsigned)strtoul(v[3], &stop, 10);
			e->fresh = strcmp(v[4], "now") == 0;
			e->mtime_ns = e->fresh ? 0 : strtoll(v[4], &stop, 10);
			e->file = -1;
			if (!e->is_dir) {
				char *end;
				long k = strtol(v[5], &end, 10);
				e->file = end != v[5] && !*end && k >= 0 && k < x->files ? (int)k : -2;
			}
			e->path = v[7];
			if (e->mode > 07777 || !e->path[0] || e->path[0] == '/' || strstr(e->path, "..") ||
			    (!e->is_dir && e->file < 0))
				return -1;
		} else {
			return -1;
		}
	}
	if (!x->parent || !x->options || x->resolv < 0 || x->times_us < 0 || !x->containers || !x->layers || !x->files ||
	    !x->entries)
		return -1;
	return 0;
}

/* An early run's markers: names and their values. */
struct table {
	const char *const *names, *const *values;
	int n;
};

static const char *table_value(const void *ctx, const char *key, char *scratch)
{
	const struct table *tb = ctx;
	(void)scratch;
	for (int i = 0; i < tb->n; i++)
		if (strcmp(tb->names[i], key) == 0)
			return tb->values[i];
	return NULL;
}

/* `@@petri:NAME@@` markers replaced by values[NAME]; -1 for one not in the table. */
static int expand_early(const char *t, size_t len, const char *const *names, const char *const *values, int n,
			struct buf *out)
{
	struct table tb = { names, values, n };
	return expand_marks(t, len, table_value, &tb, out);
}

/* The time Node gives a copied file (copy.ts: lutimesSync(path, mtimeMs / 1000)), as libuv makes it of a double. */
static struct timespec node_copy_time(const struct timespec *mtime, int us)
{
	double ms = (double)mtime->tv_sec * 1e3 + (double)mtime->tv_nsec / 1e6;
	double t = ms / 1000;
	struct timespec ts;
	ts.tv_sec = (time_t)t;
	ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
	if (us)
		ts.tv_nsec -= ts.tv_nsec % 1000;
	if (ts.tv_nsec < 0) {
		ts.tv_nsec += 1000000000L;
		ts.tv_sec -= 1;
	}
	return ts;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st, (void)type, (void)ftw;
	remove(path);
	return 0;
}

static void remove_tree(const char *path)
{
	if (path[0])
		nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void early_undo(struct early *x)
{
	for (int i = x->made_cgroups - 1; i >= 0; i--)
		rmdir(x->made_cgroup[i]);
	remove_tree(x->dir);
	remove_tree(x->staging);
}

static int write_new(const char *path, const void *data, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return -1;
	int rc = write_all(fd, data, len);
	if (close(fd) < 0)
		rc = -1;
	return rc;
}

/* The staging directory: the COPY's layer laid out again, the context files as they are now. */
static int early_stage(struct early *x)
{
	char path[PATH_MAX];
	if (mkdir(x->staging, 0700) < 0) {
		x->staging[0] = 0; /* not ours to remove */
		return -1;
	}
	if (mkdir(x->lower, 0755) < 0)
		return -1;
	for (int i = 0; i < x->entries; i++) {
		struct early_entry *e = &x->e[i];
		if (snprintf(path, sizeof path, "%s/%s", x->lower, e->path) >= (int)sizeof path)
			return -1;
		if (e->is_dir) {
			if (mkdir(path, 0700) < 0 || lchown(path, e->uid, e->gid) < 0 || chmod(path, e->mode) < 0)
				return -1;
			continue;
		}
		struct early_file *f = &x->f[e->file];
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0)
			return -1;
		struct timespec t[2];
		t[0] = t[1] = node_copy_time(&f->st.st_mtim, x->times_us);
		int rc = write_all(fd, f->data, (size_t)f->st.st_size) == 0 && fchown(fd, e->uid, e->gid) == 0 &&
				 fchmod(fd, e->mode) == 0 && futimens(fd, t) == 0
			 ? 0
			 : -1;
		if (close(fd) < 0 || rc < 0)
			return -1;
	}
	/* Directory times last (writing into one changes its mtime), the deepest first. */
	for (int i = x->entries - 1; i >= 0; i--) {
		struct early_entry *e = &x->e[i];
		if (!e->is_dir)
			continue;
		struct timespec t[2];
		t[0].tv_sec = t[1].tv_sec = (time_t)(e->mtime_ns / 1000000000LL);
		t[0].tv_nsec = t[1].tv_nsec = (long)(e->mtime_ns % 1000000000LL);
		if (e->fresh) /* made by the COPY: its time is now, as Node gives it */
			t[0].tv_nsec = t[1].tv_nsec = UTIME_NOW;
		if (snprintf(path, sizeof path, "%s/%s", x->lower, e->path) >= (int)sizeof path ||
		    utimensat(AT_FDCWD, path, t, AT_SYMLINK_NOFOLLOW) < 0)
			return -1;
	}
	if (x->resolv) {
		struct rerr e;
		size_t len;
		char *conf = read_whole_file("/etc/resolv.conf", &len, &e);
		if (!conf || write_new(x->resolv_path, conf, len, 0644) < 0)
			return -1;
		free(conf);
	}
	return 0;
}

/* mkdir -p, noting what it made (removed again if the early run cannot start). */
static int early_cgroup(struct early *x, const char *dir)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
		return -1;
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(path, 0755) < 0 || x->made_cgroups == 8)
		return -1;
	strcpy(x->made_cgroup[x->made_cgroups++], path);
	return 0;
}

/*
 * In the child forked for it: the container, made from the plan's templates
 * as Container.create makes it, and its runner started (exec) with `sock` as
 * its control fd. Returns only when that fails.
 */
static void early_exec(struct early *x, const char *config_t, size_t config_n, const char *record_t, size_t record_n,
		       const char *args_t, size_t args_n, int sock)
{
	const char *names[] = { "ID", "DIR", "LOWER", "RESOLV", "CREATED", "OWNER" };
	const char *values[] = { x->id, x->dir, x->lower, x->resolv_path, x->created, x->owner };
	int nv = 6;
	struct buf b = { 0 };
	char path[PATH_MAX];
	if (mkdir(x->containers, 0700) < 0 && errno != EEXIST)
		return;
	if (mkdir(x->dir, 0777) < 0) {
		x->dir[0] = 0; /* not ours to remove */
		return;
	}
	/* The record first: it names the cgroups, so that a sweep finds whatever this makes if it is killed. */
	if (expand_early(record_t, record_n, names, values, nv, &b) < 0 ||
	    snprintf(path, sizeof path, "%s/record.json", x->dir) >= (int)sizeof path ||
	    write_new(path, b.p, b.len, 0666) < 0)
		return;
	for (int i = 0; i < x->ncgroups; i++)
		if (expand_early(x->cgroup[i], strlen(x->cgroup[i]), names, values, nv, &b) < 0 ||
		    early_cgroup(x, b.p) < 0)
			return;
	static const char *const subs[] = { "rootfs", "upper", "work" };
	for (int i = 0; i < 3; i++)
		if (snprintf(path, sizeof path, "%s/%s", x->dir, subs[i]) >= (int)sizeof path || mkdir(path, 0777) < 0)
			return;
	if (expand_early(config_t, config_n, names, values, nv, &b) < 0 ||
	    snprintf(path, sizeof path, "%s/config.json", x->dir) >= (int)sizeof path ||
	    write_new(path, b.p, b.len, 0666) < 0)
		return;
	/* The runner's command line: `run --control-fd 3` and the rest, as RunnerProcess gives it (Node reads
	 * it back, for its next plan). */
	if (expand_early(args_t, args_n, names, values, nv, &b) < 0 ||
	    snprintf(path, sizeof path, "%s/args", x->staging) >= (int)sizeof path || write_new(path, b.p, b.len, 0600) < 0)
		return;
	char *argv[24];
	int argc = 0;
	argv[argc++] = "petri-runner";
	for (size_t i = 0; i < b.len; i += strlen(b.p + i) + 1) {
		if (argc >= 20)
			return;
		argv[argc++] = b.p + i;
		if (argc == 2) {
			argv[argc++] = "--control-fd";
			argv[argc++] = "3";
		}
	}
	argv[argc] = NULL;
	if (argc < 4 || strcmp(argv[1], "run") != 0)
		return;
	char self[PATH_MAX];
	ssize_t self_len = readlink("/proc/self/exe", self, sizeof self - 1);
	if (self_len <= 0)
		return;
	self[self_len] = 0;
	argv[0] = self;
	/* Its output: files Node reads once the step is taken. */
	int in = open("/dev/null", O_RDONLY | O_CLOEXEC), out = -1, err = -1;
	if (snprintf(path, sizeof path, "%s/stdout", x->staging) < (int)sizeof path)
		out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (snprintf(path, sizeof path, "%s/stderr", x->staging) < (int)sizeof path)
		err = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (in < 0 || out < 0 || err < 0)
		return;
	/* 0-2 first (the three may be 3 and up, sock too: 0-2 were open); then the control fd on 3. */
	if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
		return;
	if (sock == 3 ? fcntl(3, F_SETFD, 0) < 0 : dup2(sock, 3) < 0)
		return;
	/* As Node starts a runner (libuv): every signal default, none blocked (not what `nohup` or `&` gave petri). */
	sigset_t none;
	sigemptyset(&none);
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	sigprocmask(SIG_SETMASK, &none, NULL);
	execv(self, argv);
}

/*
 * Starts the plan's RUN early when the record's fingerprint and now's differ
 * only in the content of files its COPY reads, and the step cache has no
 * RUN with this content below it: sets PETRI_EARLY_RUN for Node. 0 when
 * started; -1 (nothing left behind) otherwise.
 */
static int early_start(const char *record_path, const char *record_sum, const char *context, const struct fields *rf,
		       const struct buf *now, const char *root, const char *index_text, size_t index_len)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof path, "%s.early", record_path) >= (int)sizeof path)
		return -1;
	struct rerr e;
	size_t len;
	char *text = read_whole_file(path, &len, &e);
	static const char magic[] = "petri-early 1 ";
	char sum[65];
	int rc = -1;
	struct early *x = calloc(1, sizeof *x);
	struct buf a = { 0 }, b = { 0 };
	if (!text || !x || len < sizeof magic - 1 + 65 || memcmp(text, magic, sizeof magic - 1) != 0 ||
	    text[sizeof magic - 1 + 64] != '\n')
		goto out;
	struct record r = { text + sizeof magic + 64, text + len };
	hash_hex(r.p, (size_t)(r.end - r.p), sum);
	if (memcmp(sum, text + sizeof magic - 1, 64) != 0)
		goto out;
	const char *p[8];
	size_t n[8];
	for (int i = 0; i < 8; i++)
		if (field(&r, &p[i], &n[i]) < 0)
			goto out;
	if (r.p != r.end || n[0] != 64 || memcmp(p[0], record_sum, 64) != 0 || parse_early(p[1], n[1], x) < 0)
		goto out;
	/* The images it stands on: each still where the store's index had it (no tag moved). */
	for (int i = 0; i < x->nindex; i++)
		if (!index_text || !memmem(index_text, index_len, x->index[i], strlen(x->index[i])))
			goto out;
	/* Only the content of the COPY's files changed (at least one). */
	if (compare_fingerprints(rf->p[F_FILES], rf->n[F_FILES], now->p, now->len, mark_early_file, x) < 0)
		goto out;
	int changed = 0;
	for (int i = 0; i < x->files; i++) {
		struct early_file *f = &x->f[i];
		changed |= f->differs;
		f->data = read_content(context, f->label, f->label_len, &f->st);
		if (!f->data)
			goto out;
		char hex[65];
		hash_hex(f->data, (size_t)f->st.st_size, hex);
		if (!f->differs && strcmp(hex, f->digest) != 0)
			goto out;
		memcpy(f->digest, hex, 65);
	}
	if (!changed)
		goto out;
	/* The COPY's cache key, then the RUN's (cache.ts: cacheKey), from the templates. */
	const char *names[EARLY_MAX + 1], *values[EARLY_MAX + 1];
	char labels[EARLY_MAX][24], content[65];
	for (int i = 0; i < x->files; i++) {
		snprintf(labels[i], sizeof labels[i], "digest:%d", i);
		names[i] = labels[i];
		values[i] = x->f[i].digest;
	}
	if (expand_early(p[3], n[3], names, values, x->files, &a) < 0)
		goto out;
	hash_hex(a.p, a.len, content);
	names[0] = "content:0";
	values[0] = content;
	if (expand_early(p[2], n[2], names, values, 1, &b) < 0)
		goto out;
	a.len = 0;
	char copy_key[72], run_hex[65];
	if (put(&a, x->parent, strlen(x->parent)) < 0 || put(&a, "", 1) < 0 || put(&a, b.p, b.len) < 0)
		goto out;
	memcpy(copy_key, "sha256:", 7);
	hash_hex(a.p, a.len, copy_key + 7);
	a.len = 0;
	if (put(&a, copy_key, 71) < 0 || put(&a, "", 1) < 0 || put(&a, p[4], n[4]) < 0)
		goto out;
	hash_hex(a.p, a.len, run_hex);
	snprintf(x->key, sizeof x->key, "sha256:%s", run_hex);
	if (snprintf(path, sizeof path, "%s/build-cache/steps/%s", root, run_hex) >= (int)sizeof path ||
	    access(path, F_OK) == 0 || errno != ENOENT)
		goto out; /* cached: Node takes it from there */
	/* This run's names: the container's id, its directory, the staging directory. */
	unsigned char rnd[12];
	int urandom = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (urandom < 0 || read(urandom, rnd, sizeof rnd) != (ssize_t)sizeof rnd) {
		if (urandom >= 0)
			close(urandom);
		goto out;
	}
	close(urandom);
	for (int i = 0; i < 6; i++)
		snprintf(x->id + 2 * i, 3, "%02x", rnd[i]);
	char tag[13];
	for (int i = 0; i < 6; i++)
		snprintf(tag + 2 * i, 3, "%02x", rnd[6 + i]);
	if (snprintf(x->dir, sizeof x->dir, "%s/%s", x->containers, x->id) >= (int)sizeof x->dir ||
	    snprintf(x->staging, sizeof x->staging, "%s/.tmp-%d-e%s", x->layers, (int)getpid(), tag) >=
		    (int)sizeof x->staging ||
	    snprintf(x->lower, sizeof x->lower, "%s/fs", x->staging) >= (int)sizeof x->lower ||
	    snprintf(x->resolv_path, sizeof x->resolv_path, "%s/resolv.conf", x->staging) >= (int)sizeof x->resolv_path ||
	    strpbrk(x->staging, "\"\\:") || strpbrk(x->dir, "\"\\:")) {
		x->dir[0] = x->staging[0] = 0;
		goto out;
	}
	/* The record's owner: this process (Node, once it execs), with its start time (record.ts: selfIdentity). */
	char *stat_text = read_whole_file("/proc/self/stat", &len, &e);
	const char *close_paren = stat_text ? strrchr(stat_text, ')') : NULL;
	unsigned long long start_time = 0;
	if (close_paren) {
		const char *q = close_paren + 2;
		for (int i = 0; i < 19 && q; i++)
			q = strchr(q, ' ') ? strchr(q, ' ') + 1 : NULL;
		if (q)
			start_time = strtoull(q, NULL, 10);
	}
	free(stat_text);
	if (!start_time)
		goto out;
	snprintf(x->owner, sizeof x->owner, "{\"pid\":%d,\"startTime\":%llu}", (int)getpid(), start_time);
	struct timespec now_ts;
	clock_gettime(CLOCK_REALTIME, &now_ts);
	struct tm tm;
	gmtime_r(&now_ts.tv_sec, &tm);
	char day[32];
	strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(x->created, sizeof x->created, "%.24s.%03dZ", day, (int)(now_ts.tv_nsec / 1000000) % 1000);
	/* The staging directory, the container and its runner: a child's work, while this process becomes Node.
	 * The runner's events come through a pipe: Node opens its read end again, close-on-exec, and closes this
	 * one (early.ts), so that none of its other children holds it. */
	int sv[2];
	if (pipe2(sv, O_CLOEXEC) < 0)
		goto out;
	pid_t parent = getpid(), pid = fork();
	if (pid == 0) {
		close(sv[0]);
		/* Dies with Node (the runner, after exec, sees to it itself too). */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) == 0 && getppid() == parent && early_stage(x) == 0)
			early_exec(x, p[5], n[5], p[6], n[6], p[7], n[7], sv[1]);
		early_undo(x);
		_exit(EXIT_SETUP);
	}
	close(sv[1]);
	if (pid < 0 || fcntl(sv[0], F_SETFD, 0) < 0) {
		close(sv[0]);
		goto out;
	}
	char env[PATH_MAX + 256];
	snprintf(env, sizeof env, "%d:%s:%s:%s:%s", sv[0], x->id, x->staging, x->key, x->options);
	setenv("PETRI_EARLY_RUN", env, 1);
	rc = 0;
out:
	if (x)
		for (int i = 0; i < x->files; i++)
			free(x->f[i].data);
	free(x);
	free(a.p);
	free(b.p);
	free(text);
	return rc;
}

/* 0: replayed. 1: replayed, but its stdout could not be written. -1: not (the caller runs Node). */
static int replay(int argc, char **argv, double started)
{
	/* A terminal is Node's (its live view); so are stdout and stderr that are not plain blocking fds: then
	 * only an early run (it prints nothing). Closed ones are Node's alone; a closed stdin, no early run (the
	 * runner's socket could land on fd 0). */
	int node_only = isatty(2), early = fcntl(0, F_GETFL) >= 0;
	for (int fd = 1; fd <= 2; fd++) {
		int fl = fcntl(fd, F_GETFL);
		if (fl < 0)
			return -1;
		if (fl & O_NONBLOCK)
			node_only = 1;
	}
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
	/* The first line: the magic, the SHA-256 of the rest (a record changed since is not trusted). */
	struct record r = { text, text + len };
	static const char magic[] = "petri-replay 2 ";
	char sum[65];
	if (len < RECORD_SUM_AT + 65 || memcmp(text, magic, sizeof magic - 1) != 0 || text[RECORD_SUM_AT + 64] != '\n')
		return -1;
	r.p += RECORD_SUM_AT + 65;
	hash_hex(r.p, (size_t)(r.end - r.p), sum);
	if (memcmp(sum, text + RECORD_SUM_AT, 64) != 0)
		return -1;
	struct fields f = { .count = 0 };
	while (r.p < r.end && f.count < (int)(sizeof f.p / sizeof f.p[0])) {
		if (field(&r, &f.p[f.count], &f.n[f.count]) < 0)
			return -1;
		f.count++;
	}
	if (r.p != r.end || f.count < F_SPEC || !same(&f, F_KEY, key.p, key.len))
		return -1;
	/* petri itself: its build file, as it was. */
	char *self = strndup(f.p[F_SELF], f.n[F_SELF]);
	struct stat st;
	char seen[64];
	if (!self || stat(self, &st) < 0)
		return -1;
	snprintf(seen, sizeof seen, "%lld:%lld", (long long)st.st_size,
		 (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec);
	if (!same(&f, F_SELF_STAT, seen, strlen(seen)))
		return -1;
	/* The context and the Dockerfile. */
	char *context = strndup(f.p[F_CONTEXT], f.n[F_CONTEXT]), *dockerfile = strndup(f.p[F_DOCKERFILE], f.n[F_DOCKERFILE]);
	if (!context || !dockerfile)
		return -1;
	struct timespec at;
	clock_gettime(CLOCK_REALTIME, &at);
	struct fp fp = { { 0 }, 0 };
	if (fingerprint(&fp, context, dockerfile) < 0)
		return -1;
	int same_fp = same(&f, F_FILES, fp.out.p, fp.out.len);
	/* The image store: its index as it was, the manifest still there. */
	char *index = strndup(f.p[F_INDEX_PATH], f.n[F_INDEX_PATH]);
	if (!index)
		return -1;
	size_t index_len = 0;
	char *index_text = read_whole_file(index, &index_len, &e);
	char *manifest = strndup(f.p[F_MANIFEST], f.n[F_MANIFEST]);
	char record_sum[65];
	memcpy(record_sum, text + RECORD_SUM_AT, 64);
	record_sum[64] = 0;
	if (node_only || !same(&f, F_INDEX, index_text ? index_text : "", index_text ? index_len : 0) || !manifest ||
	    access(manifest, F_OK) < 0) {
		/* Not this image again (another tag moved, or this one: the last build's result was not
		 * remembered), or a terminal's build. Node builds, with an early run when the record has one
		 * (Node judges it). */
		if (!same_fp && early)
			(void)early_start(path, record_sum, context, &f, &fp.out, root, index_text, index_len);
		return -1;
	}
	int full = 1;
	if (f.count > F_SPEC)
		full = f.n[F_SPEC] > 20 && memmem(f.p[F_SPEC], f.n[F_SPEC], "\nfull 1\n", 8) != NULL;
	if (same_fp && full)
		return print_output(f.p[F_ERR], f.n[F_ERR], f.p[F_OUT], f.n[F_OUT], &f, started);
	int done = f.count == F_SPEC ? -1
				     : delta_replay(&f, &fp.out, (double)at.tv_sec * 1e9 + (double)at.tv_nsec, root,
						    path, same_fp, started);
	/* Node builds: with the RUN after a changed COPY running meanwhile, when the record has its plan. */
	if (done < 0 && !same_fp && early)
		(void)early_start(path, record_sum, context, &f, &fp.out, root, index_text, index_len);
	return done;
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
