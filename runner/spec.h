/* spec.h: the subset of the OCI runtime spec (config.json) petri-runner honours. */
#ifndef PETRI_SPEC_H
#define PETRI_SPEC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <linux/filter.h>

#include "json.h"

struct rerr;

enum { CAPSET_BOUNDING, CAPSET_EFFECTIVE, CAPSET_PERMITTED, CAPSET_INHERITABLE, CAPSET_AMBIENT, CAPSET_N };

struct rlimit_spec {
	int resource;
	const char *name;
	uint64_t soft, hard;
};

struct process_spec {
	char **args;          /* NULL-terminated */
	char **env;           /* NULL-terminated */
	const char *path_env; /* PATH from env, or NULL */
	const char *cwd;
	uid_t uid;
	gid_t gid;
	gid_t *groups;
	size_t ngroups;
	int has_umask;
	mode_t umask;
	int has_caps;         /* process.capabilities present */
	uint64_t caps[CAPSET_N];
	int no_new_privs;
	int has_nnp;          /* noNewPrivileges present */
	struct rlimit_spec *rlimits;
	size_t nrlimits;
};

struct mount_spec {
	const char *dest, *type, *source;
	unsigned long flags;  /* MS_* applied at mount time */
	unsigned long clear;  /* MS_* explicitly cleared (rw, suid, ...) */
	unsigned long prop;   /* MS_PRIVATE/MS_SLAVE/... (| MS_REC) or 0 */
	int bind, rec;
	char *data;           /* comma-joined unknown options, or NULL */
};

struct device_rule {
	int allow;
	char type;            /* 'a', 'c', 'b' */
	int64_t major, minor; /* -1 = any */
	unsigned access;      /* BPF_DEVCG_ACC_* bits */
};

struct seccomp_prog {
	struct sock_filter *insns;
	unsigned short len;
};

struct spec {
	struct process_spec proc;
	const char *root;
	int root_readonly;
	const char *hostname;
	struct mount_spec *mounts;
	size_t nmounts;
	int ns_flags;         /* CLONE_NEW* */
	unsigned long root_prop; /* MS_SLAVE|MS_REC default */
	char **masked;
	size_t nmasked;
	char **readonly;
	size_t nreadonly;
	int has_seccomp;
	struct seccomp_prog seccomp;
	struct device_rule *devices;
	size_t ndevices;
	const char *ovl_lower, *ovl_upper, *ovl_work;
	const char *ovl_lowerbase; /* relative lower dirs are resolved from here */
	/* org.petri.report-upper: at the end, an `upper` event says whether ovl_upper holds only what lstat sees */
	int report_upper;
};

/* Parses config.json text into s. */
int spec_parse(const char *text, size_t len, struct spec *s, struct rerr *e);
/* Makes root.path and relative bind-mount sources absolute (relative to
 * the bundle directory, as runc does). */
int spec_resolve_paths(struct spec *s, const char *bundle, struct rerr *e);
/* Parses an OCI process object (JSON text) into p. */
int spec_parse_process_text(const char *text, size_t len, struct process_spec *p, struct rerr *e);
int spec_parse_process(const struct jval *v, struct process_spec *p, struct rerr *e);

/* seccomp.c: compile linux.seccomp into classic BPF. */
int seccomp_compile(const struct jval *sc, struct seccomp_prog *out, struct rerr *e);
int seccomp_install(const struct seccomp_prog *prog, struct rerr *e);

/* caps.c */
int cap_from_name(const char *name); /* -1 when unknown */

#endif
