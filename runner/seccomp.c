/* seccomp.c: compile the OCI seccomp subset into a classic BPF filter.
 *
 * Layout of the program:
 *   arch check (foreign architecture -> ENOSYS), x32 check on x86_64,
 *   a binary search over the syscall numbers that have rules,
 *   per syscall either a direct return or a body with the argument checks of
 *   its rules in profile order (first match wins), then the default action.
 * Arguments are 64-bit, compared as two 32-bit halves. */
#define _GNU_SOURCE
#include "runner.h"
#include "syscalls.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#define X32_SYSCALL_BIT 0x40000000
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#else
#error "petri-runner seccomp: unsupported architecture (x86_64 and aarch64 only)"
#endif

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "petri-runner seccomp: little-endian only"
#endif
#define ARG_LO(i) ((unsigned)(offsetof(struct seccomp_data, args) + 8 * (i)))
#define ARG_HI(i) (ARG_LO(i) + 4)

enum { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_MASKED_EQ };

struct argcmp {
	unsigned idx;
	int op;
	uint64_t v, v2;
};

struct rule {
	int nr;
	size_t order;
	uint32_t action;
	size_t nargs;
	struct argcmp args[6];
};

static int syscall_nr(const char *name)
{
	size_t lo = 0, hi = sizeof syscall_table / sizeof syscall_table[0];
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(name, syscall_table[mid].name);
		if (c == 0)
			return syscall_table[mid].nr;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -1;
}

static int parse_action(const char *a, const struct jval *errno_ret, uint32_t def_errno, uint32_t *out,
			struct rerr *e)
{
	uint64_t er = def_errno;
	if (errno_ret && errno_ret->t != J_NULL && (json_u64(errno_ret, &er) < 0 || er > 0xffff))
		return rerr_set(e, 0, "seccomp: bad errnoRet");
	if (!a)
		return rerr_set(e, 0, "seccomp: action missing");
	if (strcmp(a, "SCMP_ACT_ALLOW") == 0)
		*out = SECCOMP_RET_ALLOW;
	else if (strcmp(a, "SCMP_ACT_ERRNO") == 0)
		*out = SECCOMP_RET_ERRNO | (uint32_t)er;
	else if (strcmp(a, "SCMP_ACT_KILL") == 0 || strcmp(a, "SCMP_ACT_KILL_THREAD") == 0)
		*out = SECCOMP_RET_KILL_THREAD;
	else if (strcmp(a, "SCMP_ACT_KILL_PROCESS") == 0)
		*out = SECCOMP_RET_KILL_PROCESS;
	else if (strcmp(a, "SCMP_ACT_TRAP") == 0)
		*out = SECCOMP_RET_TRAP;
	else if (strcmp(a, "SCMP_ACT_LOG") == 0)
		*out = SECCOMP_RET_LOG;
	else if (strcmp(a, "SCMP_ACT_TRACE") == 0)
		*out = SECCOMP_RET_TRACE | (uint32_t)er;
	else
		return rerr_set(e, 0, "seccomp: action %s is not supported", a);
	return 0;
}

/* --- a tiny assembler with forward labels --- */

struct asmb {
	struct sock_filter *ins;
	int *jt, *jf, *ja; /* label ids (or -1) to resolve */
	size_t n, cap;
	int *label_pos;
	size_t nlabels, label_cap;
};

static void grow(struct asmb *a)
{
	if (a->n < a->cap)
		return;
	a->cap = a->cap ? a->cap * 2 : 256;
	a->ins = realloc(a->ins, a->cap * sizeof *a->ins);
	a->jt = realloc(a->jt, a->cap * sizeof *a->jt);
	a->jf = realloc(a->jf, a->cap * sizeof *a->jf);
	a->ja = realloc(a->ja, a->cap * sizeof *a->ja);
	if (!a->ins || !a->jt || !a->jf || !a->ja)
		abort();
}

static int new_label(struct asmb *a)
{
	if (a->nlabels == a->label_cap) {
		a->label_cap = a->label_cap ? a->label_cap * 2 : 64;
		a->label_pos = realloc(a->label_pos, a->label_cap * sizeof *a->label_pos);
		if (!a->label_pos)
			abort();
	}
	a->label_pos[a->nlabels] = -1;
	return (int)a->nlabels++;
}

static void place(struct asmb *a, int label)
{
	a->label_pos[label] = (int)a->n;
}

/* jt/jf: literal offsets when >= 0 ... encoded: values >= 0 are labels
 * when passed through L(); literal skips use S(). */
#define LBL(x) (x)
#define LIT(x) (-2 - (x))

static void emit(struct asmb *a, uint16_t code, uint32_t k, int jt, int jf)
{
	grow(a);
	struct sock_filter f = { code, 0, 0, k };
	a->jt[a->n] = -1;
	a->jf[a->n] = -1;
	a->ja[a->n] = -1;
	if (jt <= -2)
		f.jt = (uint8_t)(-2 - jt);
	else
		a->jt[a->n] = jt;
	if (jf <= -2)
		f.jf = (uint8_t)(-2 - jf);
	else
		a->jf[a->n] = jf;
	a->ins[a->n++] = f;
}

static void emit_stmt(struct asmb *a, uint16_t code, uint32_t k)
{
	emit(a, code, k, LIT(0), LIT(0));
}

static void emit_ja(struct asmb *a, int label)
{
	emit(a, BPF_JMP | BPF_JA, 0, LIT(0), LIT(0));
	a->ja[a->n - 1] = label;
}

static int resolve(struct asmb *a, struct rerr *e)
{
	for (size_t i = 0; i < a->n; i++) {
		int ls[3] = { a->jt[i], a->jf[i], a->ja[i] };
		for (int j = 0; j < 3; j++) {
			if (ls[j] < 0)
				continue;
			long off = (long)a->label_pos[ls[j]] - (long)(i + 1);
			if (a->label_pos[ls[j]] < 0 || off < 0 || (j < 2 && off > 255))
				return rerr_set(e, 0, "seccomp: internal error: jump out of range");
			if (j == 0)
				a->ins[i].jt = (uint8_t)off;
			else if (j == 1)
				a->ins[i].jf = (uint8_t)off;
			else
				a->ins[i].k = (uint32_t)off;
		}
	}
	return 0;
}

/* --- code generation --- */

static void emit_arg(struct asmb *a, const struct argcmp *c, int fail)
{
	uint32_t vhi = (uint32_t)(c->v >> 32), vlo = (uint32_t)c->v;
	int ok;
	switch (c->op) {
	case OP_EQ:
		emit_stmt(a, BPF_LD | BPF_W | BPF_ABS, ARG_HI(c->idx));
		emit(a, BPF_JMP | BPF_JEQ | BPF_K, vhi, LIT(0), LBL(fail));
		emit_stmt(a, BPF_LD | BPF_W | BPF_ABS, ARG_LO(c->idx));
		emit(a, BPF_JMP | BPF_JEQ | BPF_K, vlo, LIT(0), LBL(fail));
		break;
	case OP_NE:
		ok = new_label(a);
		emit_stmt(a, BPF_LD | BPF_W | BPF_ABS, ARG_HI(c->idx));
		emit(a, BPF_JMP | BPF_JEQ | BPF_K, vhi, LIT(0), LBL(ok));
		emit_stmt(a, BPF_LD | BPF_W | BPF_ABS, ARG_LO(c->idx));
		emit(a, BPF_JMP | BPF_JEQ | BPF_K, vlo, LBL(fail), LIT(0));
		place(a, ok);
		break;
	case OP_MASKED_EQ: {
		uint32_t v2hi = (uint32_t)(c->v2 >> 32), v2lo = (uint32_t)c->v2;
		emit_stmt(a, BPF_LD | BPF_W | BPF_ABS, ARG_HI(c->idx));
		emit_stmt(a, BPF_ALU | BPF_AND | BPF_K, vhi);
		emit(a, BPF_JMP | BPF_JEQ | BPF_K, v2hi, LIT(0), LBL(fail));
		emit_stmt(a, BPF_LD | BPF_W | BPF_ABS, ARG_LO(c->idx));
		emit_stmt(a, BPF_ALU | BPF_AND | BPF_K, vlo);
		emit(a, BPF_JMP | BPF_JEQ | BPF_K, v2lo, LIT(0), LBL(fail));
		break;
	}
	case OP_GT:
	case OP_GE:
		/* hi > vhi: ok; hi < vhi: fail; hi == vhi: compare lo. */
		ok = new_label(a);
		emit_stmt(a, BPF_LD | BPF_W | BPF_ABS, ARG_HI(c->idx));
		emit(a, BPF_JMP | BPF_JGT | BPF_K, vhi, LBL(ok), LIT(0));
		emit(a, BPF_JMP | BPF_JEQ | BPF_K, vhi, LIT(0), LBL(fail));
		emit_stmt(a, BPF_LD | BPF_W | BPF_ABS, ARG_LO(c->idx));
		emit(a, BPF_JMP | (c->op == OP_GT ? BPF_JGT : BPF_JGE) | BPF_K, vlo, LBL(ok), LBL(fail));
		place(a, ok);
		break;
	case OP_LT:
	case OP_LE:
		/* hi > vhi: fail; hi < vhi: ok; hi == vhi: compare lo. */
		ok = new_label(a);
		emit_stmt(a, BPF_LD | BPF_W | BPF_ABS, ARG_HI(c->idx));
		emit(a, BPF_JMP | BPF_JGT | BPF_K, vhi, LBL(fail), LIT(0));
		emit(a, BPF_JMP | BPF_JEQ | BPF_K, vhi, LIT(0), LBL(ok));
		emit_stmt(a, BPF_LD | BPF_W | BPF_ABS, ARG_LO(c->idx));
		emit(a, BPF_JMP | (c->op == OP_LT ? BPF_JGE : BPF_JGT) | BPF_K, vlo, LBL(fail), LBL(ok));
		place(a, ok);
		break;
	}
}

struct group {
	int nr;
	struct rule *rules; /* in profile order */
	size_t nrules;      /* reachable ones */
	int body;           /* label of the body, or -1 when a direct return */
	uint32_t direct;    /* action when body == -1 */
};

/* The syscall numbers are tiled into segments of equal outcome (a direct
 * return, or the body of one syscall with argument checks); runs of
 * consecutive numbers with the same action share one segment, gaps get the
 * default action. A balanced binary search over the segment starts picks
 * the outcome: about 3 instructions per segment, depth log2(segments). */
struct seg {
	uint32_t start;
	int body;        /* label, or -1 for a direct return */
	uint32_t action; /* when body < 0 */
};

static size_t seg_tree_size(const struct seg *sg, size_t lo, size_t hi)
{
	if (hi - lo == 1)
		return 1;
	size_t mid = (lo + hi) / 2, left = seg_tree_size(sg, lo, mid);
	return 1 + (left > 255 ? 1 : 0) + left + seg_tree_size(sg, mid, hi);
}

static void emit_seg_tree(struct asmb *a, const struct seg *sg, size_t lo, size_t hi)
{
	if (hi - lo == 1) {
		if (sg[lo].body < 0)
			emit_stmt(a, BPF_RET | BPF_K, sg[lo].action);
		else
			emit_ja(a, sg[lo].body);
		return;
	}
	size_t mid = (lo + hi) / 2, left = seg_tree_size(sg, lo, mid);
	if (left <= 255) {
		/* nr >= start of the right half: skip the left subtree */
		emit(a, BPF_JMP | BPF_JGE | BPF_K, sg[mid].start, LIT((int)left), LIT(0));
	} else {
		int right = new_label(a);
		emit(a, BPF_JMP | BPF_JGE | BPF_K, sg[mid].start, LIT(0), LIT(1));
		emit_ja(a, right);
		emit_seg_tree(a, sg, lo, mid);
		place(a, right);
		emit_seg_tree(a, sg, mid, hi);
		return;
	}
	emit_seg_tree(a, sg, lo, mid);
	emit_seg_tree(a, sg, mid, hi);
}

static void add_seg(struct seg *sg, size_t *n, uint32_t start, int body, uint32_t action)
{
	if (*n > 0 && body < 0 && sg[*n - 1].body < 0 && sg[*n - 1].action == action)
		return; /* extends the previous segment */
	sg[*n].start = start;
	sg[*n].body = body;
	sg[*n].action = action;
	(*n)++;
}

static int cmp_rule(const void *x, const void *y)
{
	const struct rule *a = x, *b = y;
	if (a->nr != b->nr)
		return a->nr < b->nr ? -1 : 1;
	return a->order < b->order ? -1 : a->order > b->order;
}

static int parse_op(const char *op)
{
	static const char *const names[] = { "SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE",
					     "SCMP_CMP_GT", "SCMP_CMP_GE", "SCMP_CMP_MASKED_EQ" };
	for (int i = 0; i < 7; i++)
		if (op && strcmp(op, names[i]) == 0)
			return i;
	return -1;
}

int seccomp_compile(const struct jval *sc, struct seccomp_prog *out, struct rerr *e)
{
	uint64_t def_errno = EPERM;
	struct jval *der = json_get(sc, "defaultErrnoRet");
	if (der && der->t != J_NULL && (json_u64(der, &def_errno) < 0 || def_errno > 0xffff))
		return rerr_set(e, 0, "seccomp: bad defaultErrnoRet");
	uint32_t def;
	if (parse_action(json_str(sc, "defaultAction"), NULL, (uint32_t)def_errno, &def, e) < 0)
		return -1;

	struct rule *rules = NULL;
	size_t nrules = 0, cap = 0, order = 0;
	struct jval *sys = json_get_t(sc, "syscalls", J_ARR);
	for (size_t i = 0; sys && i < sys->len; i++) {
		struct jval *s = sys->items[i];
		struct rule r;
		memset(&r, 0, sizeof r);
		if (parse_action(json_str(s, "action"), json_get(s, "errnoRet"), EPERM, &r.action, e) < 0)
			return -1;
		struct jval *args = json_get_t(s, "args", J_ARR);
		if (args && args->len > 6)
			return rerr_set(e, 0, "seccomp: syscalls[%zu]: more than 6 args", i);
		for (size_t j = 0; args && j < args->len; j++) {
			struct jval *aj = args->items[j];
			uint64_t idx;
			struct argcmp *c = &r.args[r.nargs++];
			if (json_u64(json_get(aj, "index"), &idx) < 0 || idx > 5)
				return rerr_set(e, 0, "seccomp: syscalls[%zu].args[%zu]: bad index", i, j);
			c->idx = (unsigned)idx;
			c->op = parse_op(json_str(aj, "op"));
			if (c->op < 0)
				return rerr_set(e, 0, "seccomp: syscalls[%zu].args[%zu]: unsupported op %s", i, j,
						json_str(aj, "op") ? json_str(aj, "op") : "(none)");
			struct jval *v = json_get(aj, "value"), *v2 = json_get(aj, "valueTwo");
			if (json_u64(v, &c->v) < 0)
				return rerr_set(e, 0, "seccomp: syscalls[%zu].args[%zu]: bad value", i, j);
			if (v2 && v2->t != J_NULL && json_u64(v2, &c->v2) < 0)
				return rerr_set(e, 0, "seccomp: syscalls[%zu].args[%zu]: bad valueTwo", i, j);
		}
		struct jval *names = json_get_t(s, "names", J_ARR);
		const char *one = json_str(s, "name");
		size_t nn = names ? names->len : (one ? 1 : 0);
		for (size_t j = 0; j < nn; j++) {
			const char *name = names ? (names->items[j]->t == J_STR ? names->items[j]->s : NULL) : one;
			int nr = name ? syscall_nr(name) : -1;
			if (nr < 0)
				continue; /* unknown on this architecture: skipped */
			if (nrules == cap) {
				cap = cap ? cap * 2 : 512;
				rules = realloc(rules, cap * sizeof *rules);
				if (!rules)
					abort();
			}
			r.nr = nr;
			r.order = order++;
			rules[nrules++] = r;
		}
	}
	if (nrules)
		qsort(rules, nrules, sizeof *rules, cmp_rule);

	/* Group by syscall number; drop rules after an unconditional one. */
	struct group *groups = calloc(nrules ? nrules : 1, sizeof *groups);
	size_t ng = 0;
	if (!groups)
		abort();
	for (size_t i = 0; i < nrules;) {
		size_t j = i;
		struct group *g = &groups[ng];
		memset(g, 0, sizeof *g);
		g->nr = rules[i].nr;
		g->rules = &rules[i];
		while (j < nrules && rules[j].nr == g->nr)
			j++;
		for (size_t k = i; k < j; k++) {
			g->nrules++;
			if (rules[k].nargs == 0)
				break;
		}
		g->body = -1;
		if (g->nrules == 1 && g->rules[0].nargs == 0) {
			g->direct = g->rules[0].action;
			if (g->direct != def)
				ng++; /* same as the default: no need to test it */
		} else {
			ng++;
		}
		i = j;
	}

	struct asmb a;
	memset(&a, 0, sizeof a);
	for (size_t i = 0; i < ng; i++)
		if (!(groups[i].nrules == 1 && groups[i].rules[0].nargs == 0))
			groups[i].body = new_label(&a);

	emit_stmt(&a, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
	emit(&a, BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, LIT(1), LIT(0));
	emit_stmt(&a, BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS);
	emit_stmt(&a, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#ifdef X32_SYSCALL_BIT
	emit(&a, BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, LIT(0), LIT(1));
	emit_stmt(&a, BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS);
#endif
	struct seg *segs = calloc(2 * ng + 1, sizeof *segs);
	size_t nseg = 0;
	uint32_t next = 0;
	if (!segs)
		abort();
	for (size_t i = 0; i < ng; i++) {
		if ((uint32_t)groups[i].nr > next)
			add_seg(segs, &nseg, next, -1, def);
		add_seg(segs, &nseg, (uint32_t)groups[i].nr, groups[i].body, groups[i].direct);
		next = (uint32_t)groups[i].nr + 1;
	}
	add_seg(segs, &nseg, next, -1, def);
	segs[0].start = 0;
	emit_seg_tree(&a, segs, 0, nseg);
	free(segs);

	for (size_t i = 0; i < ng; i++) {
		struct group *g = &groups[i];
		if (g->body < 0)
			continue;
		place(&a, g->body);
		for (size_t k = 0; k < g->nrules; k++) {
			struct rule *r = &g->rules[k];
			int next_rule = new_label(&a);
			for (size_t j = 0; j < r->nargs; j++)
				emit_arg(&a, &r->args[j], next_rule);
			emit_stmt(&a, BPF_RET | BPF_K, r->action);
			place(&a, next_rule);
		}
		emit_stmt(&a, BPF_RET | BPF_K, def);
	}
	if (resolve(&a, e) < 0)
		return -1;
	if (a.n > BPF_MAXINSNS)
		return rerr_set(e, 0, "seccomp: filter too long (%zu instructions)", a.n);
	out->insns = a.ins;
	out->len = (unsigned short)a.n;
	free(a.jt);
	free(a.jf);
	free(a.ja);
	free(a.label_pos);
	free(groups);
	return 0;
}

int seccomp_install(const struct seccomp_prog *p, struct rerr *e)
{
	struct sock_fprog prog = { p->len, p->insns };
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) {
		if (errno == ENOSYS && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) == 0)
			return 0;
		return rerr_set(e, errno, "install seccomp filter");
	}
	return 0;
}
