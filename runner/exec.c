/* exec.c: run a process in a running container: join its cgroup v1
 * directories, then its namespaces through a pidfd (setns), fork (straight
 * into its cgroup v2 directory with clone3), and apply the process spec with
 * the container's seccomp filter. */
#define _GNU_SOURCE
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

struct child {
	const struct process_spec *proc;
	const struct spec *s;
	int err_wr, err_rd, sigfd, ctlfd;
	pid_t self;
	const sigset_t *orig;
};

/* The process: forked, straight into the container's cgroup v2 directory
 * when there is one (clone3 CLONE_INTO_CGROUP); its parent's pages are few. */
static int child_main(void *arg)
{
	const struct child *c = arg;
	close(c->err_rd);
	close(c->sigfd);
	if (c->ctlfd >= 0)
		close(c->ctlfd);
	/* Die with the exec supervisor. Our parent is outside the PID
	 * namespace (getppid() == 0) or, without one, is self. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		_exit(EXIT_SETUP);
	/* Not ptrace-able from the container until execve. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	pid_t pp = getppid();
	if (pp != 0 && pp != c->self)
		_exit(EXIT_SETUP);
	process_exec(c->proc, c->s->has_seccomp ? &c->s->seccomp : NULL, c->err_wr, c->orig);
}

void exec_defaults(struct process_spec *proc, const struct spec *s)
{
	/* Like runc exec: what the process leaves out comes from the container. */
	if (!proc->has_caps) {
		proc->has_caps = s->proc.has_caps;
		memcpy(proc->caps, s->proc.caps, sizeof proc->caps);
	}
	if (!proc->has_nnp)
		proc->no_new_privs = s->proc.no_new_privs;
	if (!proc->nrlimits) {
		proc->rlimits = s->proc.rlimits;
		proc->nrlimits = s->proc.nrlimits;
	}
}

int exec_enter(const struct spec *s, const struct process_spec *proc, pid_t target, int cgfd, const char *v2,
	       int ctlfd)
{
	struct rerr e;
	memset(&e, 0, sizeof e);
	int pidfd = (int)syscall(SYS_pidfd_open, target, 0);
	if (pidfd < 0) {
		rerr_set(&e, errno, "pidfd_open %d", (int)target);
		goto fail;
	}
	int nsflags = s->ns_flags & (CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP);
	/* The cgroup namespace last, in the child, once it is in the container's cgroup (cgfd): where
	 * cgroup2 is mounted with nsdelegate (systemd's), a process whose cgroup namespace is already the
	 * container's cannot be moved from outside that namespace's root into it (ENOENT). */
	int late_cgroupns = cgfd >= 0 && (nsflags & CLONE_NEWCGROUP);
	if (late_cgroupns)
		nsflags &= ~CLONE_NEWCGROUP;
	if (nsflags && setns(pidfd, nsflags) < 0) {
		rerr_set(&e, errno, "setns to the namespaces of pid %d", (int)target);
		goto fail;
	}
	if (!late_cgroupns) {
		close(pidfd);
		pidfd = -1;
	}

	sigset_t set, orig;
	sigemptyset(&set);
	for (size_t i = 0; i < n_forwarded_signals; i++)
		sigaddset(&set, forwarded_signals[i]);
	sigaddset(&set, SIGCHLD);
	int sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	sigaddset(&set, SIGPIPE);
	if (sigfd < 0 || sigprocmask(SIG_BLOCK, &set, &orig) < 0) {
		rerr_set(&e, errno, "signalfd");
		goto fail;
	}
	int errp[2];
	if (pipe2(errp, O_CLOEXEC) < 0) {
		rerr_set(&e, errno, "pipe");
		goto fail;
	}
	struct child c = { proc, s, errp[1], errp[0], sigfd, ctlfd, getpid(), &orig };
	int joined = 0;
	pid_t pid = clone_child(0, cgfd, &joined);
	if (pid < 0) {
		rerr_set(&e, errno, cgfd >= 0 ? "start the process in cgroup %s" : "start the process", v2);
		goto fail;
	}
	if (pid == 0) {
		/* Without clone3 (an old kernel) the child joins the v2 directory itself. */
		if (cgfd >= 0 && !joined && join_cgroup_fd(cgfd, v2, &e) < 0)
			child_fail(errp[1], &e);
		if (pidfd >= 0 && setns(pidfd, CLONE_NEWCGROUP) < 0) {
			rerr_set(&e, errno, "setns to the cgroup namespace of pid %d", (int)target);
			child_fail(errp[1], &e);
		}
		child_main(&c);
	}
	if (pidfd >= 0)
		close(pidfd);
	if (cgfd >= 0)
		close(cgfd);
	close(errp[1]);
	return supervise(pid, ctlfd, errp[0], -1, sigfd);
fail:
	event_error(ctlfd, e.msg);
	return e.code ? e.code : EXIT_SETUP;
}

int exec_main(const struct exec_opts *o)
{
	struct rerr e;
	struct spec s;
	struct process_spec proc;
	size_t len;
	memset(&e, 0, sizeof e);

	char *text = read_whole_file(o->config, &len, &e);
	if (!text || spec_parse(text, len, &s, &e) < 0 ||
	    spec_parse_process_text(o->process_json, strlen(o->process_json), &proc, &e) < 0)
		goto fail;
	exec_defaults(&proc, &s);

	/* v1 directories (they have `tasks`): the supervisor moves itself, its
	 * single thread, cheaply (join_cgroups_self); the child inherits them.
	 * The v2 directory (at most one) receives the child as it is created. */
	const char **v1 = calloc(o->ncgroups + 1, sizeof *v1), *v2 = NULL;
	size_t nv1 = 0;
	char probe[4096];
	if (!v1) {
		rerr_set(&e, ENOMEM, "cgroups");
		goto fail;
	}
	for (size_t i = 0; i < o->ncgroups; i++) {
		snprintf(probe, sizeof probe, "%s/tasks", o->cgroups[i]);
		if (v2 || access(probe, F_OK) == 0)
			v1[nv1++] = o->cgroups[i];
		else
			v2 = o->cgroups[i];
	}
	if (join_cgroups_self(v1, nv1, &e) < 0)
		goto fail;
	int cgfd = -1;
	if (v2 && (cgfd = open(v2, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		rerr_set(&e, errno, "open cgroup %s", v2);
		goto fail;
	}
	return exec_enter(&s, &proc, o->pid, cgfd, v2, o->ctlfd);
fail:
	event_error(o->ctlfd, e.msg);
	return e.code ? e.code : EXIT_SETUP;
}
