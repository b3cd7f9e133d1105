/* spec.c: config.json (OCI runtime spec) -> struct spec. */
#define _GNU_SOURCE
#include "runner.h"

#include <errno.h>
#include <linux/bpf.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>

static void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz);
	if (!p)
		abort();
	return p;
}

/* A JSON array of strings -> NULL-terminated char*[]. */
static int str_array(const struct jval *v, const char *what, char ***out, size_t *n, struct rerr *e)
{
	*out = NULL;
	if (n)
		*n = 0;
	if (!v || v->t == J_NULL)
		return 0;
	if (v->t != J_ARR)
		return rerr_set(e, 0, "config: %s must be an array of strings", what);
	char **a = xcalloc(v->len + 1, sizeof *a);
	for (size_t i = 0; i < v->len; i++) {
		if (v->items[i]->t != J_STR)
			return rerr_set(e, 0, "config: %s[%zu] must be a string", what, i);
		a[i] = v->items[i]->s;
	}
	*out = a;
	if (n)
		*n = v->len;
	return 0;
}

static const struct {
	const char *name;
	int res;
} rlimit_names[] = {
	{ "RLIMIT_AS", RLIMIT_AS },         { "RLIMIT_CORE", RLIMIT_CORE },
	{ "RLIMIT_CPU", RLIMIT_CPU },       { "RLIMIT_DATA", RLIMIT_DATA },
	{ "RLIMIT_FSIZE", RLIMIT_FSIZE },   { "RLIMIT_LOCKS", RLIMIT_LOCKS },
	{ "RLIMIT_MEMLOCK", RLIMIT_MEMLOCK }, { "RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE },
	{ "RLIMIT_NICE", RLIMIT_NICE },     { "RLIMIT_NOFILE", RLIMIT_NOFILE },
	{ "RLIMIT_NPROC", RLIMIT_NPROC },   { "RLIMIT_RSS", RLIMIT_RSS },
	{ "RLIMIT_RTPRIO", RLIMIT_RTPRIO }, { "RLIMIT_RTTIME", RLIMIT_RTTIME },
	{ "RLIMIT_SIGPENDING", RLIMIT_SIGPENDING }, { "RLIMIT_STACK", RLIMIT_STACK },
};

static int parse_caps(const struct jval *c, struct process_spec *p, struct rerr *e)
{
	static const char *const sets[CAPSET_N] = { "bounding", "effective", "permitted", "inheritable", "ambient" };
	if (!c || c->t == J_NULL)
		return 0;
	if (c->t != J_OBJ)
		return rerr_set(e, 0, "config: process.capabilities must be an object");
	p->has_caps = 1;
	for (int i = 0; i < CAPSET_N; i++) {
		struct jval *a = json_get(c, sets[i]);
		p->caps[i] = 0;
		if (!a || a->t == J_NULL)
			continue;
		if (a->t != J_ARR)
			return rerr_set(e, 0, "config: process.capabilities.%s must be an array", sets[i]);
		for (size_t j = 0; j < a->len; j++) {
			if (a->items[j]->t != J_STR)
				return rerr_set(e, 0, "config: process.capabilities.%s[%zu] must be a string", sets[i], j);
			int n = cap_from_name(a->items[j]->s);
			if (n < 0)
				continue; /* unknown to this runner: ignored, like runc */
			p->caps[i] |= 1ULL << n;
		}
	}
	return 0;
}

int spec_parse_process(const struct jval *v, struct process_spec *p, struct rerr *e)
{
	memset(p, 0, sizeof *p);
	if (!v || v->t != J_OBJ)
		return rerr_set(e, 0, "config: process must be an object");
	if (str_array(json_get(v, "args"), "process.args", &p->args, NULL, e) < 0)
		return -1;
	if (!p->args || !p->args[0])
		return rerr_set(e, 0, "config: process.args must not be empty");
	if (str_array(json_get(v, "env"), "process.env", &p->env, NULL, e) < 0)
		return -1;
	if (!p->env)
		p->env = xcalloc(1, sizeof *p->env);
	for (char **en = p->env; *en; en++)
		if (strncmp(*en, "PATH=", 5) == 0)
			p->path_env = *en + 5;
	p->cwd = json_str(v, "cwd");
	if (!p->cwd || !p->cwd[0])
		p->cwd = "/";

	struct jval *u = json_get_t(v, "user", J_OBJ);
	if (u) {
		uint64_t x;
		struct jval *f;
		if ((f = json_get(u, "uid"))) {
			if (json_u64(f, &x) < 0 || x > 0xffffffffULL)
				return rerr_set(e, 0, "config: process.user.uid must be a uint32");
			p->uid = (uid_t)x;
		}
		if ((f = json_get(u, "gid"))) {
			if (json_u64(f, &x) < 0 || x > 0xffffffffULL)
				return rerr_set(e, 0, "config: process.user.gid must be a uint32");
			p->gid = (gid_t)x;
		}
		if ((f = json_get(u, "umask")) && f->t != J_NULL) {
			if (json_u64(f, &x) < 0 || x > 0777)
				return rerr_set(e, 0, "config: process.user.umask must be 0..0777");
			p->has_umask = 1;
			p->umask = (mode_t)x;
		}
		struct jval *g = json_get_t(u, "additionalGids", J_ARR);
		if (g) {
			p->groups = xcalloc(g->len, sizeof *p->groups);
			for (size_t i = 0; i < g->len; i++) {
				if (json_u64(g->items[i], &x) < 0 || x > 0xffffffffULL)
					return rerr_set(e, 0, "config: process.user.additionalGids[%zu] must be a uint32", i);
				p->groups[i] = (gid_t)x;
			}
			p->ngroups = g->len;
		}
	}
	if (parse_caps(json_get(v, "capabilities"), p, e) < 0)
		return -1;
	struct jval *nnp = json_get_t(v, "noNewPrivileges", J_BOOL);
	p->no_new_privs = nnp && nnp->b;
	p->has_nnp = nnp != NULL;

	struct jval *rl = json_get_t(v, "rlimits", J_ARR);
	if (rl) {
		p->rlimits = xcalloc(rl->len, sizeof *p->rlimits);
		for (size_t i = 0; i < rl->len; i++) {
			struct jval *r = rl->items[i];
			const char *type = json_str(r, "type");
			struct rlimit_spec *out = &p->rlimits[i];
			size_t k;
			if (!type)
				return rerr_set(e, 0, "config: process.rlimits[%zu].type missing", i);
			for (k = 0; k < sizeof rlimit_names / sizeof rlimit_names[0]; k++)
				if (strcmp(type, rlimit_names[k].name) == 0)
					break;
			if (k == sizeof rlimit_names / sizeof rlimit_names[0])
				return rerr_set(e, 0, "config: unknown rlimit type %s", type);
			out->resource = rlimit_names[k].res;
			out->name = rlimit_names[k].name;
			if (json_u64(json_get(r, "soft"), &out->soft) < 0 || json_u64(json_get(r, "hard"), &out->hard) < 0)
				return rerr_set(e, 0, "config: %s: soft and hard must be uint64", type);
		}
		p->nrlimits = rl->len;
	}
	return 0;
}

int spec_parse_process_text(const char *text, size_t len, struct process_spec *p, struct rerr *e)
{
	char jerr[128];
	struct jval *v = json_parse(text, len, jerr, sizeof jerr);
	if (!v)
		return rerr_set(e, 0, "parse --process: %s", jerr);
	return spec_parse_process(v, p, e);
}

static const struct {
	const char *name;
	int clear;
	unsigned long flag;
} mount_flags[] = {
	{ "ro", 0, MS_RDONLY },          { "rw", 1, MS_RDONLY },
	{ "nosuid", 0, MS_NOSUID },      { "suid", 1, MS_NOSUID },
	{ "nodev", 0, MS_NODEV },        { "dev", 1, MS_NODEV },
	{ "noexec", 0, MS_NOEXEC },      { "exec", 1, MS_NOEXEC },
	{ "sync", 0, MS_SYNCHRONOUS },   { "async", 1, MS_SYNCHRONOUS },
	{ "dirsync", 0, MS_DIRSYNC },    { "mand", 0, MS_MANDLOCK },
	{ "nomand", 1, MS_MANDLOCK },    { "noatime", 0, MS_NOATIME },
	{ "atime", 1, MS_NOATIME },      { "nodiratime", 0, MS_NODIRATIME },
	{ "diratime", 1, MS_NODIRATIME }, { "relatime", 0, MS_RELATIME },
	{ "norelatime", 1, MS_RELATIME }, { "strictatime", 0, MS_STRICTATIME },
	{ "nostrictatime", 1, MS_STRICTATIME },
};

static const struct {
	const char *name;
	unsigned long prop;
} prop_flags[] = {
	{ "private", MS_PRIVATE },         { "rprivate", MS_PRIVATE | MS_REC },
	{ "slave", MS_SLAVE },             { "rslave", MS_SLAVE | MS_REC },
	{ "shared", MS_SHARED },           { "rshared", MS_SHARED | MS_REC },
	{ "unbindable", MS_UNBINDABLE },   { "runbindable", MS_UNBINDABLE | MS_REC },
};

static int parse_mount(const struct jval *m, struct mount_spec *out, size_t idx, struct rerr *e)
{
	memset(out, 0, sizeof *out);
	out->dest = json_str(m, "destination");
	if (!out->dest || out->dest[0] != '/')
		return rerr_set(e, 0, "config: mounts[%zu].destination must be an absolute path", idx);
	out->type = json_str(m, "type");
	out->source = json_str(m, "source");
	if (out->type && strcmp(out->type, "bind") == 0)
		out->bind = 1;
	struct jval *opts = json_get_t(m, "options", J_ARR);
	size_t datalen = 0;
	for (size_t i = 0; opts && i < opts->len; i++) {
		if (opts->items[i]->t != J_STR)
			return rerr_set(e, 0, "config: mounts[%zu].options must be strings", idx);
		const char *o = opts->items[i]->s;
		size_t k;
		if (strcmp(o, "bind") == 0) {
			out->bind = 1;
			continue;
		}
		if (strcmp(o, "rbind") == 0) {
			out->bind = 1;
			out->rec = 1;
			continue;
		}
		for (k = 0; k < sizeof mount_flags / sizeof mount_flags[0]; k++)
			if (strcmp(o, mount_flags[k].name) == 0)
				break;
		if (k < sizeof mount_flags / sizeof mount_flags[0]) {
			if (mount_flags[k].clear) {
				out->flags &= ~mount_flags[k].flag;
				out->clear |= mount_flags[k].flag;
			} else {
				out->flags |= mount_flags[k].flag;
				out->clear &= ~mount_flags[k].flag;
			}
			continue;
		}
		for (k = 0; k < sizeof prop_flags / sizeof prop_flags[0]; k++)
			if (strcmp(o, prop_flags[k].name) == 0)
				break;
		if (k < sizeof prop_flags / sizeof prop_flags[0]) {
			out->prop = prop_flags[k].prop;
			continue;
		}
		/* Anything else is filesystem data. */
		size_t ol = strlen(o);
		char *nd = realloc(out->data, datalen + ol + 2);
		if (!nd)
			abort();
		if (datalen)
			nd[datalen++] = ',';
		memcpy(nd + datalen, o, ol + 1);
		datalen += ol;
		out->data = nd;
	}
	if (!out->bind && !out->type)
		return rerr_set(e, 0, "config: mounts[%zu] (%s) has no type", idx, out->dest);
	if (out->bind && !out->source)
		return rerr_set(e, 0, "config: mounts[%zu] (%s): bind mount without source", idx, out->dest);
	return 0;
}

static int parse_devices(const struct jval *res, struct spec *s, struct rerr *e)
{
	struct jval *d = json_get_t(res, "devices", J_ARR);
	if (!d)
		return 0;
	s->devices = xcalloc(d->len, sizeof *s->devices);
	for (size_t i = 0; i < d->len; i++) {
		struct jval *r = d->items[i];
		struct device_rule *o = &s->devices[i];
		struct jval *allow = json_get_t(r, "allow", J_BOOL);
		const char *type = json_str(r, "type");
		const char *access = json_str(r, "access");
		o->allow = allow && allow->b;
		o->type = type && type[0] ? type[0] : 'a';
		if (o->type != 'a' && o->type != 'c' && o->type != 'b')
			return rerr_set(e, 0, "config: linux.resources.devices[%zu]: bad type %s", i, type);
		struct jval *mj = json_get(r, "major"), *mn = json_get(r, "minor");
		o->major = o->minor = -1;
		if (mj && mj->t != J_NULL && json_i64(mj, &o->major) < 0)
			return rerr_set(e, 0, "config: linux.resources.devices[%zu]: bad major", i);
		if (mn && mn->t != J_NULL && json_i64(mn, &o->minor) < 0)
			return rerr_set(e, 0, "config: linux.resources.devices[%zu]: bad minor", i);
		if (!access || !access[0])
			access = "rwm";
		for (const char *a = access; *a; a++) {
			if (*a == 'r')
				o->access |= BPF_DEVCG_ACC_READ;
			else if (*a == 'w')
				o->access |= BPF_DEVCG_ACC_WRITE;
			else if (*a == 'm')
				o->access |= BPF_DEVCG_ACC_MKNOD;
			else
				return rerr_set(e, 0, "config: linux.resources.devices[%zu]: bad access %s", i, access);
		}
	}
	s->ndevices = d->len;
	return 0;
}

int spec_parse(const char *text, size_t len, struct spec *s, struct rerr *e)
{
	char jerr[128];
	memset(s, 0, sizeof *s);
	struct jval *root = json_parse(text, len, jerr, sizeof jerr);
	if (!root)
		return rerr_set(e, 0, "parse config.json: %s", jerr);
	if (root->t != J_OBJ)
		return rerr_set(e, 0, "parse config.json: not an object");

	struct jval *proc = json_get_t(root, "process", J_OBJ);
	if (!proc)
		return rerr_set(e, 0, "config: process missing");
	if (spec_parse_process(proc, &s->proc, e) < 0)
		return -1;

	struct jval *r = json_get_t(root, "root", J_OBJ);
	s->root = json_str(r, "path");
	if (!s->root || !s->root[0])
		return rerr_set(e, 0, "config: root.path missing");
	struct jval *ro = json_get_t(r, "readonly", J_BOOL);
	s->root_readonly = ro && ro->b;
	s->hostname = json_str(root, "hostname");

	struct jval *mounts = json_get_t(root, "mounts", J_ARR);
	if (mounts) {
		s->mounts = xcalloc(mounts->len, sizeof *s->mounts);
		for (size_t i = 0; i < mounts->len; i++)
			if (parse_mount(mounts->items[i], &s->mounts[i], i, e) < 0)
				return -1;
		s->nmounts = mounts->len;
	}

	struct jval *linux_ = json_get_t(root, "linux", J_OBJ);
	s->root_prop = MS_SLAVE | MS_REC;
	struct jval *ns = json_get_t(linux_, "namespaces", J_ARR);
	for (size_t i = 0; ns && i < ns->len; i++) {
		const char *t = json_str(ns->items[i], "type");
		const char *path = json_str(ns->items[i], "path");
		int f = 0;
		if (!t)
			return rerr_set(e, 0, "config: linux.namespaces[%zu].type missing", i);
		if (strcmp(t, "pid") == 0)
			f = CLONE_NEWPID;
		else if (strcmp(t, "network") == 0)
			f = CLONE_NEWNET;
		else if (strcmp(t, "ipc") == 0)
			f = CLONE_NEWIPC;
		else if (strcmp(t, "uts") == 0)
			f = CLONE_NEWUTS;
		else if (strcmp(t, "mount") == 0)
			f = CLONE_NEWNS;
		else if (strcmp(t, "cgroup") == 0)
			f = CLONE_NEWCGROUP;
		else
			return rerr_set(e, 0, "config: namespace type %s is not supported", t);
		if (path && path[0])
			return rerr_set(e, 0, "config: namespace %s: path is not supported", t);
		s->ns_flags |= f;
	}
	if (!(s->ns_flags & CLONE_NEWNS))
		return rerr_set(e, 0, "config: a mount namespace is required");
	const char *prop = json_str(linux_, "rootfsPropagation");
	if (prop && prop[0]) {
		size_t k;
		for (k = 0; k < sizeof prop_flags / sizeof prop_flags[0]; k++)
			if (strcmp(prop, prop_flags[k].name) == 0)
				break;
		if (k == sizeof prop_flags / sizeof prop_flags[0] || (prop_flags[k].prop & ~MS_REC) == MS_SHARED ||
		    (prop_flags[k].prop & ~MS_REC) == MS_UNBINDABLE)
			return rerr_set(e, 0, "config: rootfsPropagation %s is not supported", prop);
		s->root_prop = prop_flags[k].prop;
	}
	if (str_array(json_get(linux_, "maskedPaths"), "linux.maskedPaths", &s->masked, &s->nmasked, e) < 0)
		return -1;
	if (str_array(json_get(linux_, "readonlyPaths"), "linux.readonlyPaths", &s->readonly, &s->nreadonly, e) < 0)
		return -1;
	struct jval *sc = json_get_t(linux_, "seccomp", J_OBJ);
	if (sc) {
		if (seccomp_compile(sc, &s->seccomp, e) < 0)
			return -1;
		s->has_seccomp = 1;
	}
	struct jval *res = json_get_t(linux_, "resources", J_OBJ);
	if (res && parse_devices(res, s, e) < 0)
		return -1;

	struct jval *ann = json_get_t(root, "annotations", J_OBJ);
	s->ovl_lower = json_str(ann, "org.petri.rootfs.lower");
	s->ovl_upper = json_str(ann, "org.petri.rootfs.upper");
	s->ovl_work = json_str(ann, "org.petri.rootfs.work");
	s->ovl_lowerbase = json_str(ann, "org.petri.rootfs.lowerbase");
	const char *report = json_str(ann, "org.petri.report-upper");
	s->report_upper = report && strcmp(report, "1") == 0;
	if (s->ovl_lower && !s->ovl_lower[0])
		s->ovl_lower = NULL;
	if (s->ovl_lower && (!!s->ovl_upper != !!s->ovl_work))
		return rerr_set(e, 0, "config: org.petri.rootfs.upper and .work go together");
	return 0;
}

static char *join_bundle(const char *bundle_abs, const char *rel)
{
	size_t a = strlen(bundle_abs), b = strlen(rel);
	char *out = malloc(a + b + 2);
	if (!out)
		abort();
	memcpy(out, bundle_abs, a);
	out[a] = '/';
	memcpy(out + a + 1, rel, b + 1);
	return out;
}

int spec_resolve_paths(struct spec *s, const char *bundle, struct rerr *e)
{
	char *abs = NULL;
	int need = s->root[0] != '/';
	for (size_t i = 0; i < s->nmounts; i++)
		if (s->mounts[i].bind && s->mounts[i].source[0] != '/')
			need = 1;
	if (!need)
		return 0;
	abs = realpath(bundle, NULL);
	if (!abs)
		return rerr_set(e, errno, "resolve bundle %s", bundle);
	if (s->root[0] != '/')
		s->root = join_bundle(abs, s->root);
	for (size_t i = 0; i < s->nmounts; i++)
		if (s->mounts[i].bind && s->mounts[i].source[0] != '/')
			s->mounts[i].source = join_bundle(abs, s->mounts[i].source);
	free(abs);
	return 0;
}
