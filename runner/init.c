/* init.c: the runner as PID 1 of the container: forks the command, then drops
 * its capabilities, sets no_new_privs and the seccomp filter, reaps every
 * zombie, forwards signals to the command, and reports the command's wait
 * status to the supervisor through a pipe. */
#define _GNU_SOURCE
#include "runner.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

struct cmd_args {
	const struct spec *s;
	int err_fd, status_fd;
	pid_t init;
	const sigset_t *orig_mask;
};

/* The command, on its own stack in init's memory (CLONE_VM|CLONE_VFORK, as
 * posix_spawn does): no page tables to copy, no copy-on-write faults. Init
 * is suspended until the command execs or exits. Everything changed here is
 * per task (credentials, seccomp, no_new_privs, rlimits: own signal struct;
 * umask and cwd: own fs struct; fds: own table). */
static int cmd_main(void *arg)
{
	const struct cmd_args *c = arg;
	close(c->status_fd);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != c->init)
		_exit(EXIT_SETUP);
	process_exec(&c->s->proc, c->s->has_seccomp ? &c->s->seccomp : NULL, c->err_fd, c->orig_mask);
}

void init_main(const struct spec *s, int err_fd, int status_fd, const sigset_t *orig_mask)
{
	struct rerr e;
	memset(&e, 0, sizeof e);
	struct cmd_args ca = { s, err_fd, status_fd, getpid(), orig_mask };
	size_t stack_size = 256 * 1024;
	char *stack = malloc(stack_size);
	if (!stack) {
		rerr_set(&e, ENOMEM, "stack for the command");
		child_fail(err_fd, &e);
	}
	pid_t cmd = clone(cmd_main, stack + stack_size, CLONE_VM | CLONE_VFORK | SIGCHLD, &ca);
	if (cmd < 0) {
		rerr_set(&e, errno, "start the command");
		child_fail(err_fd, &e);
	}
	/* Lock init down. The error pipe stays open until then, so a failure
	 * here is reported like any setup error (and the command killed). */
	sigset_t all;
	sigfillset(&all);
	int sfd = signalfd(-1, &all, SFD_CLOEXEC);
	if (sfd < 0)
		rerr_set(&e, errno, "init: signalfd");
	else if (caps_drop_all(&e) == 0 && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		rerr_set(&e, errno, "init: prctl PR_SET_NO_NEW_PRIVS");
	else if (!e.msg[0] && s->has_seccomp)
		seccomp_install(&s->seccomp, &e);
	if (e.msg[0]) {
		kill(cmd, SIGKILL);
		child_fail(err_fd, &e);
	}
	close(err_fd);

	for (;;) {
		struct signalfd_siginfo si;
		ssize_t n = read(sfd, &si, sizeof si);
		if (n != (ssize_t)sizeof si) {
			if (n < 0 && errno == EINTR)
				continue;
			kill(cmd, SIGKILL);
			_exit(EXIT_SETUP);
		}
		if (si.ssi_signo != SIGCHLD) {
			kill(cmd, (int)si.ssi_signo);
			continue;
		}
		int status;
		pid_t pid;
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			if (pid == cmd) {
				(void)write_all(status_fd, &status, sizeof status);
				_exit(0);
			}
		}
	}
}
