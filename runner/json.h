/* json.h: a small JSON parser (RFC 8259) for config.json and --process. */
#ifndef PETRI_JSON_H
#define PETRI_JSON_H

#include <stddef.h>
#include <stdint.h>

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jval {
	enum jtype t;
	int b;            /* J_BOOL */
	int neg;          /* J_NUM: negative */
	int isint;        /* J_NUM: integer without fraction/exponent that fits 64 bits */
	uint64_t u;       /* J_NUM: magnitude when isint */
	double d;         /* J_NUM: value */
	char *s;          /* J_STR: NUL-terminated (may contain NULs from \u0000) */
	size_t len;       /* J_STR: length; J_ARR/J_OBJ: item count */
	struct jval **items; /* J_ARR/J_OBJ */
	char **keys;      /* J_OBJ */
};

/* Parses text[0..len); returns NULL and fills err on failure. Memory is
 * never freed (the runner is short-lived). */
struct jval *json_parse(const char *text, size_t len, char *err, size_t errlen);

/* Object member (last one wins, like most parsers), or NULL. */
struct jval *json_get(const struct jval *obj, const char *key);
/* Typed member access; NULL when missing or of another type. */
struct jval *json_get_t(const struct jval *obj, const char *key, enum jtype t);
const char *json_str(const struct jval *obj, const char *key);
/* Integer conversions: 0 on success, -1 when not an integer in range. */
int json_u64(const struct jval *v, uint64_t *out);
int json_i64(const struct jval *v, int64_t *out);

#endif
