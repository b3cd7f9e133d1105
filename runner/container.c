/* container.c: the first child, cloned into the new namespaces. Waits for
 * the supervisor to write it into the cgroups, unshares the cgroup namespace,
 * builds the mount namespace, sets the hostname, brings lo up, then becomes
 * init (or execs the command with --no-init). */
#define _GNU_SOURCE
#include "runner.h"

#include <errno.h>
#include <net/if.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static int loopback_up(struct rerr *e)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return rerr_set(e, errno, "socket for lo");
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) {
		close(fd);
		return rerr_set(e, errno, "get flags of lo");
	}
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0) {
		close(fd);
		return rerr_set(e, errno, "bring lo up");
	}
	close(fd);
	return 0;
}

void container_child(const struct child_args *a)
{
	const struct spec *s = a->spec;
	struct rerr e;
	sigset_t all;
	char c;
	memset(&e, 0, sizeof e);

	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	for (int i = 0; i < a->nclose; i++)
		close(a->close_fds[i]);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) {
		rerr_set(&e, errno, "prctl PR_SET_PDEATHSIG");
		child_fail(a->err_fd, &e);
	}
	/* /proc/1/exe must not lead back to the runner binary. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

	/* EOF: the supervisor is gone or failed (it reports that itself). */
	if (read(a->sync_fd, &c, 1) != 1)
		_exit(EXIT_SETUP);
	close(a->sync_fd);

	/* Before the cgroup namespace is made, so that its root is the container's cgroup. */
	if (join_cgroups_self(a->cgroups, a->ncgroups, &e) < 0)
		child_fail(a->err_fd, &e);
	if ((s->ns_flags & CLONE_NEWCGROUP) && unshare(CLONE_NEWCGROUP) < 0) {
		rerr_set(&e, errno, "unshare the cgroup namespace");
		child_fail(a->err_fd, &e);
	}
	umask(0);
	if (setup_rootfs(s, &e) < 0)
		child_fail(a->err_fd, &e);
	if (s->hostname && s->hostname[0]) {
		if (!(s->ns_flags & CLONE_NEWUTS)) {
			rerr_set(&e, 0, "hostname %s needs a uts namespace", s->hostname);
			child_fail(a->err_fd, &e);
		}
		if (sethostname(s->hostname, strlen(s->hostname)) < 0) {
			rerr_set(&e, errno, "sethostname %s", s->hostname);
			child_fail(a->err_fd, &e);
		}
	}
	if ((s->ns_flags & CLONE_NEWNET) && loopback_up(&e) < 0)
		child_fail(a->err_fd, &e);

	if (a->no_init)
		process_exec(&s->proc, s->has_seccomp ? &s->seccomp : NULL, a->err_fd, a->orig_mask);
	if (g_arg_len > 0) {
		memset(g_arg_start, 0, g_arg_len);
		strncpy(g_arg_start, "petri-init", g_arg_len - 1);
	}
	prctl(PR_SET_NAME, "petri-init", 0, 0, 0);
	init_main(s, a->err_fd, a->status_fd, a->orig_mask);
}
