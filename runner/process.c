/* process.c: apply an OCI process spec to the calling process and execve it:
 * rlimits, umask, keepcaps, bounding set, no_new_privs, seccomp, groups/gid/
 * uid, capset, ambient, cwd, close-on-exec for fds > 2, PATH lookup, execve.
 * Errors go to the CLOEXEC error pipe (125 setup, 126 cannot execute, 127
 * not found). */
#define _GNU_SOURCE
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static int apply_rlimits(const struct process_spec *p, struct rerr *e)
{
	for (size_t i = 0; i < p->nrlimits; i++) {
		const struct rlimit_spec *r = &p->rlimits[i];
		struct rlimit rl = { (rlim_t)r->soft, (rlim_t)r->hard };
		if (setrlimit(r->resource, &rl) < 0)
			return rerr_set(e, errno, "setrlimit %s (soft %llu, hard %llu)", r->name,
					(unsigned long long)r->soft, (unsigned long long)r->hard);
	}
	return 0;
}

static int exec_error(struct rerr *e, const char *file, int err)
{
	int code = (err == ENOENT || err == ENOTDIR) ? EXIT_NOT_FOUND : EXIT_CANNOT_EXEC;
	return rerr_setc(e, code, err, "exec \"%s\"", file);
}

/* execve with a PATH search (inside the container root: we are pivoted). */
static int do_exec(const struct process_spec *p, struct rerr *e)
{
	const char *file = p->args[0];
	if (!file[0])
		return rerr_setc(e, EXIT_NOT_FOUND, ENOENT, "exec \"\"");
	if (strchr(file, '/')) {
		execve(file, p->args, p->env);
		return exec_error(e, file, errno);
	}
	const char *path = p->path_env ? p->path_env : DEFAULT_PATH;
	size_t flen = strlen(file), plen = strlen(path);
	char *buf = malloc(plen + flen + 3);
	int eacces = 0;
	if (!buf)
		return rerr_set(e, ENOMEM, "exec \"%s\"", file);
	for (const char *d = path;; d++) {
		const char *end = strchrnul(d, ':');
		size_t dl = (size_t)(end - d);
		if (dl == 0) {
			memcpy(buf, file, flen + 1); /* empty entry: current directory */
		} else {
			memcpy(buf, d, dl);
			buf[dl] = '/';
			memcpy(buf + dl + 1, file, flen + 1);
		}
		execve(buf, p->args, p->env);
		switch (errno) {
		case EACCES:
			eacces = 1;
			/* fall through */
		case ENOENT:
		case ENOTDIR:
		case ESTALE:
		case ENODEV:
		case ETIMEDOUT:
			break;
		default:
			return exec_error(e, buf, errno);
		}
		if (!*end)
			break;
		d = end;
	}
	if (eacces)
		return rerr_setc(e, EXIT_CANNOT_EXEC, EACCES, "exec \"%s\"", file);
	return rerr_setc(e, EXIT_NOT_FOUND, 0, "exec \"%s\": executable file not found in $PATH", file);
}

static int apply_process(const struct process_spec *p, const struct seccomp_prog *filter, struct rerr *e)
{
	int last_cap = 63;
	if (apply_rlimits(p, e) < 0)
		return -1;
	umask(p->has_umask ? p->umask : 022);
	if (p->has_caps) {
		if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
			return rerr_set(e, errno, "prctl PR_SET_KEEPCAPS");
		if (caps_bounding(p->caps[CAPSET_BOUNDING], &last_cap, e) < 0)
			return -1;
	}
	if (p->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return rerr_set(e, errno, "prctl PR_SET_NO_NEW_PRIVS");
	if (filter && filter->len && seccomp_install(filter, e) < 0)
		return -1;
	if (setgroups(p->ngroups, p->groups) < 0)
		return rerr_set(e, errno, "setgroups");
	if (setresgid(p->gid, p->gid, p->gid) < 0)
		return rerr_set(e, errno, "setresgid %u", (unsigned)p->gid);
	if (setresuid(p->uid, p->uid, p->uid) < 0)
		return rerr_set(e, errno, "setresuid %u", (unsigned)p->uid);
	if (p->has_caps) {
		uint64_t mask = last_cap >= 63 ? ~0ULL : (1ULL << (last_cap + 1)) - 1;
		if (caps_set(p->caps[CAPSET_EFFECTIVE] & mask, p->caps[CAPSET_PERMITTED] & mask,
			     p->caps[CAPSET_INHERITABLE] & mask, e) < 0)
			return -1;
		if (caps_ambient(p->caps[CAPSET_AMBIENT] & mask, e) < 0)
			return -1;
	}
	if (chdir(p->cwd) < 0)
		return rerr_set(e, errno, "chdir to cwd \"%s\"", p->cwd);
	if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
		/* Before Linux 5.11: mark them one by one. */
		for (int fd = 3; fd < 1024; fd++)
			fcntl(fd, F_SETFD, FD_CLOEXEC);
	}
	return do_exec(p, e);
}

void process_exec(const struct process_spec *p, const struct seccomp_prog *filter, int err_fd,
		  const sigset_t *orig_mask)
{
	struct rerr e;
	memset(&e, 0, sizeof e);
	sigprocmask(SIG_SETMASK, orig_mask, NULL);
	apply_process(p, filter, &e);
	child_fail(err_fd, &e);
}
