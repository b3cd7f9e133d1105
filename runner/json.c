/* json.c: recursive-descent JSON parser. */
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct parser {
	const char *start, *p, *end;
	char *err;
	size_t errlen;
	int depth;
};

/* Values live in a bump arena: one calloc per 64 KiB, nothing is freed. */
static char *arena_cur, *arena_end;

static void *xcalloc(size_t n, size_t sz)
{
	size_t need = ((n ? n : 1) * sz + 15) & ~(size_t)15;
	if ((size_t)(arena_end - arena_cur) < need) {
		size_t chunk = need > 65536 ? need : 65536;
		arena_cur = calloc(1, chunk);
		if (!arena_cur) {
			fputs("petri-runner: out of memory\n", stderr);
			abort();
		}
		arena_end = arena_cur + chunk;
	}
	void *p = arena_cur;
	arena_cur += need;
	return p;
}

static struct jval *fail(struct parser *ps, const char *what)
{
	if (ps->err && !ps->err[0])
		snprintf(ps->err, ps->errlen, "%s at offset %zu", what, (size_t)(ps->p - ps->start));
	return NULL;
}

static void skip_ws(struct parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
		ps->p++;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int read_hex4(struct parser *ps, unsigned *out)
{
	unsigned v = 0;
	if (ps->end - ps->p < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		int h = hexval(ps->p[i]);
		if (h < 0)
			return -1;
		v = v << 4 | (unsigned)h;
	}
	ps->p += 4;
	*out = v;
	return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12);
		o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | cp >> 18);
	o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* ps->p is just after the opening quote. */
static char *parse_string_raw(struct parser *ps, size_t *lenp)
{
	const char *start = ps->p;
	/* Escapes only shrink, so the raw length bounds the output. */
	const char *q = start;
	for (;;) {
		q = memchr(q, '"', (size_t)(ps->end - q));
		if (!q)
			break;
		/* An escaped quote is preceded by an odd number of backslashes. */
		size_t nb = 0;
		while (q - nb > start && q[-1 - (long)nb] == '\\')
			nb++;
		if (nb % 2 == 0)
			break;
		q++;
	}
	if (!q)
		q = ps->end;
	if (q >= ps->end) {
		fail(ps, "unterminated string");
		return NULL;
	}
	char *out = xcalloc((size_t)(q - start) + 1, 1);
	size_t n = 0;
	/* Fast path: no escape before the closing quote. */
	const char *bs = memchr(start, '\\', (size_t)(q - start));
	if (!bs) {
		for (const char *c = start; c < q; c++)
			if ((unsigned char)*c < 0x20) {
				ps->p = c;
				fail(ps, "control character in string");
				return NULL;
			}
		n = (size_t)(q - start);
		memcpy(out, start, n);
		ps->p = q + 1;
		out[n] = 0;
		*lenp = n;
		return out;
	}
	while (ps->p < ps->end && *ps->p != '"') {
		unsigned char c = (unsigned char)*ps->p++;
		if (c < 0x20) {
			fail(ps, "control character in string");
			return NULL;
		}
		if (c != '\\') {
			out[n++] = (char)c;
			continue;
		}
		if (ps->p >= ps->end)
			break;
		char e = *ps->p++;
		switch (e) {
		case '"': out[n++] = '"'; break;
		case '\\': out[n++] = '\\'; break;
		case '/': out[n++] = '/'; break;
		case 'b': out[n++] = '\b'; break;
		case 'f': out[n++] = '\f'; break;
		case 'n': out[n++] = '\n'; break;
		case 'r': out[n++] = '\r'; break;
		case 't': out[n++] = '\t'; break;
		case 'u': {
			unsigned cp, lo;
			if (read_hex4(ps, &cp) < 0) {
				fail(ps, "bad \\u escape");
				return NULL;
			}
			if (cp >= 0xd800 && cp < 0xdc00 && ps->end - ps->p >= 6 && ps->p[0] == '\\' &&
			    ps->p[1] == 'u') {
				const char *save = ps->p;
				ps->p += 2;
				if (read_hex4(ps, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000)
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				else
					ps->p = save;
			}
			if (cp >= 0xd800 && cp < 0xe000)
				cp = 0xfffd; /* lone surrogate */
			n += put_utf8(out + n, cp);
			break;
		}
		default:
			fail(ps, "bad escape in string");
			return NULL;
		}
	}
	ps->p++; /* closing quote */
	out[n] = 0;
	*lenp = n;
	return out;
}

static struct jval *parse_value(struct parser *ps);

static struct jval *parse_number(struct parser *ps)
{
	const char *start = ps->p;
	struct jval *v = xcalloc(1, sizeof *v);
	v->t = J_NUM;
	v->isint = 1;
	if (*ps->p == '-') {
		v->neg = 1;
		ps->p++;
	}
	if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
		return fail(ps, "bad number");
	if (*ps->p == '0' && ps->p + 1 < ps->end && ps->p[1] >= '0' && ps->p[1] <= '9')
		return fail(ps, "leading zero in number");
	uint64_t u = 0;
	while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
		unsigned dgt = (unsigned)(*ps->p - '0');
		if (u > (UINT64_MAX - dgt) / 10)
			v->isint = 0;
		u = u * 10 + dgt;
		ps->p++;
	}
	if (ps->p < ps->end && *ps->p == '.') {
		v->isint = 0;
		ps->p++;
		if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
			return fail(ps, "bad number");
		while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
			ps->p++;
	}
	if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
		v->isint = 0;
		ps->p++;
		if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
			ps->p++;
		if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
			return fail(ps, "bad number");
		while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
			ps->p++;
	}
	v->u = v->isint ? u : 0;
	if (v->isint) {
		v->d = (double)u;
		if (v->neg)
			v->d = -v->d;
	} else {
		char buf[64];
		size_t l = (size_t)(ps->p - start);
		if (l >= sizeof buf)
			l = sizeof buf - 1;
		memcpy(buf, start, l);
		buf[l] = 0;
		v->d = strtod(buf, NULL);
	}
	return v;
}

static int match_word(struct parser *ps, const char *w)
{
	size_t l = strlen(w);
	if ((size_t)(ps->end - ps->p) < l || memcmp(ps->p, w, l) != 0)
		return 0;
	ps->p += l;
	return 1;
}

static struct jval *parse_container(struct parser *ps, int obj)
{
	struct jval *v = xcalloc(1, sizeof *v);
	v->t = obj ? J_OBJ : J_ARR;
	char close = obj ? '}' : ']';
	/* Items are gathered in a scratch array (on the stack while small),
	 * then copied into the arena. */
	struct jval *small_items[32];
	char *small_keys[32];
	struct jval **items = small_items;
	char **keys = small_keys;
	size_t cap = 32, n = 0;
	struct jval *ret = NULL;
	if (++ps->depth > 200)
		return fail(ps, "nesting too deep");
	ps->p++;
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == close) {
		ps->p++;
		ps->depth--;
		return v;
	}
	for (;;) {
		char *key = NULL;
		skip_ws(ps);
		if (obj) {
			size_t kl;
			if (ps->p >= ps->end || *ps->p != '"') {
				fail(ps, "expected object key");
				goto out;
			}
			ps->p++;
			key = parse_string_raw(ps, &kl);
			if (!key)
				goto out;
			skip_ws(ps);
			if (ps->p >= ps->end || *ps->p != ':') {
				fail(ps, "expected ':'");
				goto out;
			}
			ps->p++;
		}
		struct jval *item = parse_value(ps);
		if (!item)
			goto out;
		if (n == cap) {
			size_t ncap = cap * 2;
			struct jval **ni = malloc(ncap * sizeof *ni);
			char **nk = malloc(ncap * sizeof *nk);
			if (!ni || !nk)
				abort();
			memcpy(ni, items, n * sizeof *ni);
			memcpy(nk, keys, n * sizeof *nk);
			if (items != small_items) {
				free(items);
				free(keys);
			}
			items = ni;
			keys = nk;
			cap = ncap;
		}
		keys[n] = key;
		items[n++] = item;
		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == ',') {
			ps->p++;
			continue;
		}
		if (ps->p < ps->end && *ps->p == close) {
			ps->p++;
			break;
		}
		fail(ps, obj ? "expected ',' or '}'" : "expected ',' or ']'");
		goto out;
	}
	ps->depth--;
	v->len = n;
	v->items = xcalloc(n, sizeof *v->items);
	memcpy(v->items, items, n * sizeof *items);
	if (obj) {
		v->keys = xcalloc(n, sizeof *v->keys);
		memcpy(v->keys, keys, n * sizeof *keys);
	}
	ret = v;
out:
	if (items != small_items) {
		free(items);
		free(keys);
	}
	return ret;
}

static struct jval *parse_value(struct parser *ps)
{
	skip_ws(ps);
	if (ps->p >= ps->end)
		return fail(ps, "unexpected end of input");
	char c = *ps->p;
	if (c == '{' || c == '[')
		return parse_container(ps, c == '{');
	if (c == '"') {
		struct jval *v = xcalloc(1, sizeof *v);
		v->t = J_STR;
		ps->p++;
		v->s = parse_string_raw(ps, &v->len);
		return v->s ? v : NULL;
	}
	if (c == '-' || (c >= '0' && c <= '9'))
		return parse_number(ps);
	struct jval *v = xcalloc(1, sizeof *v);
	if (match_word(ps, "true")) {
		v->t = J_BOOL;
		v->b = 1;
	} else if (match_word(ps, "false")) {
		v->t = J_BOOL;
	} else if (match_word(ps, "null")) {
		v->t = J_NULL;
	} else {
		return fail(ps, "unexpected character");
	}
	return v;
}

struct jval *json_parse(const char *text, size_t len, char *err, size_t errlen)
{
	struct parser ps = { text, text, text + len, err, errlen, 0 };
	if (err && errlen)
		err[0] = 0;
	struct jval *v = parse_value(&ps);
	if (!v)
		return NULL;
	skip_ws(&ps);
	if (ps.p != ps.end)
		return fail(&ps, "trailing data");
	return v;
}

struct jval *json_get(const struct jval *obj, const char *key)
{
	if (!obj || obj->t != J_OBJ)
		return NULL;
	for (size_t i = obj->len; i-- > 0;)
		if (strcmp(obj->keys[i], key) == 0)
			return obj->items[i];
	return NULL;
}

struct jval *json_get_t(const struct jval *obj, const char *key, enum jtype t)
{
	struct jval *v = json_get(obj, key);
	return v && v->t == t ? v : NULL;
}

const char *json_str(const struct jval *obj, const char *key)
{
	struct jval *v = json_get_t(obj, key, J_STR);
	return v ? v->s : NULL;
}

int json_u64(const struct jval *v, uint64_t *out)
{
	if (!v || v->t != J_NUM || !v->isint || (v->neg && v->u != 0))
		return -1;
	*out = v->u;
	return 0;
}

int json_i64(const struct jval *v, int64_t *out)
{
	if (!v || v->t != J_NUM || !v->isint)
		return -1;
	if (v->neg) {
		if (v->u > (uint64_t)INT64_MAX + 1)
			return -1;
		*out = (int64_t)(0 - v->u);
	} else {
		if (v->u > (uint64_t)INT64_MAX)
			return -1;
		*out = (int64_t)v->u;
	}
	return 0;
}
