/* main.c: argument parsing, the sealed re-exec, the `run` supervisor
 * (clone, cgroups, device filter, poll loop over signalfd, control socket
 * and error pipe) and the events. PROTOCOL.md is the interface. */
#define _GNU_SOURCE
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define SEALED_ENV "_PETRI_RUNNER_SEALED"

const int forwarded_signals[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT };
const size_t n_forwarded_signals = sizeof forwarded_signals / sizeof forwarded_signals[0];

static int g_ctlfd = -1;
pid_t g_forwarder;
char *g_arg_start;
size_t g_arg_len;

/* --- events --- */

static void emit(int ctlfd, const char *line, size_t len)
{
	if (ctlfd >= 0)
		(void)write_all(ctlfd, line, len);
}

void event_started(int ctlfd, pid_t pid)
{
	char buf[64];
	int n = snprintf(buf, sizeof buf, "{\"event\":\"started\",\"pid\":%d}\n", (int)pid);
	emit(ctlfd, buf, (size_t)n);
}

size_t format_error_event(char *buf, size_t size, const char *msg)
{
	size_t n = (size_t)snprintf(buf, size, "{\"event\":\"error\",\"message\":\"");
	for (const unsigned char *p = (const unsigned char *)msg; *p && n < size - 16; p++) {
		if (*p == '"' || *p == '\\') {
			buf[n++] = '\\';
			buf[n++] = (char)*p;
		} else if (*p < 0x20) {
			n += (size_t)snprintf(buf + n, size - n, "\\u%04x", *p);
		} else {
			buf[n++] = (char)*p;
		}
	}
	memcpy(buf + n, "\"}", 3);
	return n + 2;
}

void event_error(int ctlfd, const char *msg)
{
	if (ctlfd < 0) {
		fprintf(stderr, "petri-runner: %s\n", msg);
		return;
	}
	char buf[ERROR_EVENT_MAX];
	size_t n = format_error_event(buf, sizeof buf, msg);
	buf[n++] = '\n';
	emit(ctlfd, buf, n);
}

int status_exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return EXIT_SETUP;
}

void event_exit(int ctlfd, int status)
{
	char buf[96];
	int n;
	if (WIFSIGNALED(status))
		n = snprintf(buf, sizeof buf, "{\"event\":\"exit\",\"exitCode\":%d,\"signal\":%d}\n",
			     128 + WTERMSIG(status), WTERMSIG(status));
	else
		n = snprintf(buf, sizeof buf, "{\"event\":\"exit\",\"exitCode\":%d,\"signal\":null}\n",
			     status_exit_code(status));
	emit(ctlfd, buf, (size_t)n);
}

static int fail_setup(const struct rerr *e)
{
	event_error(g_ctlfd, e->msg);
	return e->code ? e->code : EXIT_SETUP;
}

/* --- sealed re-exec (CVE-2019-5736 class) --- */

static int reexec_sealed(char **argv, struct rerr *e)
{
	static int sealed;
	if (sealed)
		return 0;
	if (getenv(SEALED_ENV)) {
		unsetenv(SEALED_ENV);
		sealed = 1;
		return 0;
	}
	int src = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	if (src < 0)
		return rerr_set(e, errno, "open /proc/self/exe");
	struct stat st;
	if (fstat(src, &st) < 0)
		return rerr_set(e, errno, "stat /proc/self/exe");
	int mfd = memfd_create("petri-runner", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0)
		return rerr_set(e, errno, "memfd_create");
	off_t left = st.st_size;
	while (left > 0) {
		ssize_t n = sendfile(mfd, src, NULL, (size_t)left);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return rerr_set(e, errno, "copy /proc/self/exe to a memfd");
		}
		if (n == 0)
			return rerr_set(e, EIO, "copy /proc/self/exe to a memfd: short copy");
		left -= n;
	}
	close(src);
	if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
		return rerr_set(e, errno, "seal the memfd");
	if (setenv(SEALED_ENV, "1", 1) < 0)
		return rerr_set(e, errno, "setenv");
	fexecve(mfd, argv, environ);
	return rerr_set(e, errno, "execute the sealed copy");
}

/* --- cgroups --- */

int join_cgroups(const char **dirs, size_t n, pid_t pid, struct rerr *e)
{
	char pidbuf[24], path[4096];
	snprintf(pidbuf, sizeof pidbuf, "%d", (int)pid);
	for (size_t i = 0; i < n; i++) {
		snprintf(path, sizeof path, "%s/cgroup.procs", dirs[i]);
		if (write_string_file(path, pidbuf, e) < 0)
			return -1;
	}
	return 0;
}

/* Moves the calling process, which must have a single thread, into DIRS.
 * In a cgroup v1 hierarchy it writes "0" (itself) to DIR/tasks: migrating
 * the current thread alone does not take the kernel's global
 * cgroup_threadgroup_rwsem for writing (Linux 6.0+), which writing a pid to
 * cgroup.procs does, and that waits for an RCU grace period (5-15 ms each
 * time here). A v2 directory has no `tasks`: "0" goes to its cgroup.procs
 * (the slow way: v2 directories are best given to clone3 instead). */
int join_cgroups_self(const char **dirs, size_t n, struct rerr *e)
{
	char path[4096];
	for (size_t i = 0; i < n; i++) {
		snprintf(path, sizeof path, "%s/tasks", dirs[i]);
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0 && errno == ENOENT) {
			snprintf(path, sizeof path, "%s/cgroup.procs", dirs[i]);
			fd = open(path, O_WRONLY | O_CLOEXEC);
		}
		if (fd < 0)
			return rerr_set(e, errno, "open %s", path);
		if (write_all(fd, "0", 1) < 0) {
			int err = errno;
			close(fd);
			return rerr_set(e, err, "join cgroup %s", dirs[i]);
		}
		close(fd);
	}
	return 0;
}

int join_cgroup_fd(int dirfd, const char *name, struct rerr *e)
{
	int fd = openat(dirfd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write_all(fd, "0", 1) < 0) {
		int err = errno;
		if (fd >= 0)
			close(fd);
		return rerr_set(e, err, "join cgroup %s", name);
	}
	close(fd);
	return 0;
}

/* struct clone_args up to `cgroup` (CLONE_ARGS_SIZE_VER2), spelled out so
 * that linux/sched.h need not be mixed with glibc's sched.h. */
struct clone3_args {
	uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif

pid_t clone_child(unsigned long flags, int cgfd, int *joined)
{
	*joined = 0;
	if (cgfd >= 0) {
		struct clone3_args ca;
		memset(&ca, 0, sizeof ca);
		ca.flags = (uint64_t)flags | CLONE_INTO_CGROUP;
		ca.exit_signal = SIGCHLD;
		ca.cgroup = (uint64_t)cgfd;
		long r = syscall(SYS_clone3, &ca, sizeof ca);
		if (r >= 0) {
			*joined = 1;
			return (pid_t)r;
		}
		if (errno != ENOSYS && errno != E2BIG && errno != EINVAL)
			return -1;
	}
	return (pid_t)syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
}

/* --- the supervisor loop (run and exec) --- */

#define CTL_MAX 65536

static void handle_control(int ctlfd, pid_t child, char *buf, size_t *len, int *open_)
{
	ssize_t n = read(ctlfd, buf + *len, CTL_MAX - 1 - *len);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		/* The harness is gone: kill the container. */
		kill(child, SIGKILL);
		*open_ = 0;
		return;
	}
	*len += (size_t)n;
	buf[*len] = 0;
	char *line = buf, *nl;
	while ((nl = memchr(line, '\n', (size_t)(buf + *len - line)))) {
		*nl = 0;
		if (nl > line && nl[-1] == '\r')
			nl[-1] = 0;
		if (strcmp(line, "kill") == 0) {
			kill(child, SIGKILL);
		} else if (strncmp(line, "signal ", 7) == 0) {
			char *end;
			long sig = strtol(line + 7, &end, 10);
			if (end != line + 7 && sig > 0 && sig < 65)
				kill(child, (int)sig);
		} else if (strncmp(line, "exec ", 5) == 0) {
			served_start(ctlfd, line + 5);
		} else if (strncmp(line, "exec-signal ", 12) == 0) {
			served_signal(line + 12);
		}
		line = nl + 1;
	}
	*len = (size_t)(buf + *len - line);
	memmove(buf, line, *len);
	if (*len >= CTL_MAX - 1) /* an overlong line: drop it */
		*len = 0;
}

/* The published ports close with the container, before its exit is reported. */
static void stop_forwarder(void)
{
	if (g_forwarder <= 0)
		return;
	kill(g_forwarder, SIGKILL);
	while (waitpid(g_forwarder, NULL, 0) < 0 && errno == EINTR)
		;
	g_forwarder = 0;
}

/* The container's upper dir, when its spec asks for the `upper` event (org.petri.report-upper). */
const char *g_report_upper;

/*
 * {"event":"upper","plain":true,"entries":N} when the upper dir holds at most
 * 1000 entries, none with an xattr a layer takes (fsops.c: tree_plain) and
 * every name and link target UTF-8: what lstat alone reads as a layer needs
 * it (petri then scans it in Node, without `fsops`);
 * {"event":"upper","plain":false} otherwise. Before the exit event.
 */
static void event_upper(int ctlfd)
{
	char buf[96];
	long n = tree_plain(g_report_upper, 1000);
	int k = n >= 0 ? snprintf(buf, sizeof buf, "{\"event\":\"upper\",\"plain\":true,\"entries\":%ld}\n", n)
		       : snprintf(buf, sizeof buf, "{\"event\":\"upper\",\"plain\":false}\n");
	emit(ctlfd, buf, (size_t)k);
}

int supervise(pid_t child, int ctlfd, int err_rd, int status_rd, int sigfd)
{
	struct rerr rec;
	size_t reclen = 0;
	int err_open = 1, ctl_open = ctlfd >= 0, status = 0, reaped = 0;
	static char ctlbuf[CTL_MAX];
	size_t ctllen = 0;
	memset(&rec, 0, sizeof rec);

	while (!reaped) {
		struct pollfd pfd[3 + 3 * 32];
		int np = 0, ierr = -1, ictl = -1;
		pfd[np].fd = sigfd;
		pfd[np++].events = POLLIN;
		if (err_open) {
			ierr = np;
			pfd[np].fd = err_rd;
			pfd[np++].events = POLLIN;
		}
		if (ctl_open) {
			ictl = np;
			pfd[np].fd = ctlfd;
			pfd[np++].events = POLLIN;
		}
		int iserved = np;
		np += served_pollfds(pfd + np, (int)(sizeof pfd / sizeof pfd[0]) - np);
		if (poll(pfd, (nfds_t)np, -1) < 0) {
			if (errno == EINTR)
				continue;
			kill(child, SIGKILL);
			break;
		}
		/* The error pipe first: its EOF (exec done) precedes the exit. */
		if (ierr >= 0 && pfd[ierr].revents) {
			ssize_t n = read(err_rd, (char *)&rec + reclen, sizeof rec - reclen);
			if (n > 0) {
				reclen += (size_t)n;
			} else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
				err_open = 0;
				if (reclen == 0) {
					served_started();
					event_started(ctlfd, child);
				}
			}
		}
		served_handle(ctlfd, pfd + iserved, np - iserved);
		if (ictl >= 0 && pfd[ictl].revents)
			handle_control(ctlfd, child, ctlbuf, &ctllen, &ctl_open);
		if (pfd[0].revents) {
			struct signalfd_siginfo si[8];
			ssize_t n = read(sigfd, si, sizeof si);
			for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof si[0]; i++) {
				if (si[i].ssi_signo == SIGCHLD)
					continue;
				kill(child, (int)si[i].ssi_signo);
			}
			/* Every child that ended: init (or the process), the forwarder, served execs. */
			for (;;) {
				int st;
				pid_t r = waitpid(-1, &st, WNOHANG);
				if (r <= 0)
					break;
				if (r == child) {
					status = st;
					reaped = 1;
				} else if (r == g_forwarder) {
					g_forwarder = 0;
				} else {
					served_reaped(ctlfd, r, st);
				}
			}
		}
	}
	if (!reaped) {
		while (waitpid(child, &status, 0) < 0 && errno == EINTR)
			;
	}
	served_end(ctlfd);
	stop_forwarder();
	/* Collect what is left of the error record (all writers are gone). */
	if (err_open) {
		for (;;) {
			ssize_t n = read(err_rd, (char *)&rec + reclen, sizeof rec - reclen);
			if (n > 0) {
				reclen += (size_t)n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			break;
		}
	}
	if (reclen >= offsetof(struct rerr, msg) + 1) {
		rec.msg[sizeof rec.msg - 1] = 0;
		event_error(ctlfd, rec.msg);
		return rec.code ? rec.code : EXIT_SETUP;
	}
	if (status_rd >= 0) {
		int cmd_status;
		ssize_t n;
		do
			n = read(status_rd, &cmd_status, sizeof cmd_status);
		while (n < 0 && errno == EINTR);
		if (n == (ssize_t)sizeof cmd_status)
			status = cmd_status; /* else init died without reporting */
	}
	if (g_report_upper && ctlfd >= 0)
		event_upper(ctlfd);
	event_exit(ctlfd, status);
	return status_exit_code(status);
}

/* Blocks the forwarded signals, SIGCHLD and SIGPIPE; returns a signalfd for
 * the first two. */
static int setup_signals(sigset_t *orig, struct rerr *e)
{
	sigset_t set;
	sigemptyset(&set);
	for (size_t i = 0; i < n_forwarded_signals; i++)
		sigaddset(&set, forwarded_signals[i]);
	sigaddset(&set, SIGCHLD);
	int fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	sigaddset(&set, SIGPIPE);
	if (sigprocmask(SIG_BLOCK, &set, orig) < 0)
		return rerr_set(e, errno, "sigprocmask");
	if (fd < 0)
		return rerr_set(e, errno, "signalfd");
	return fd;
}

/* --- run --- */

struct run_opts {
	int no_init;
	int ctlfd;
	const char **cgroups;
	size_t ncgroups;
	const char *device_bpf;
	const char *clone_into;
	const char *bundle;
	struct publish *publish;
	size_t npublish;
	struct attach *attach;
	size_t nattach;
};

static int cmd_run(struct run_opts *o)
{
	struct rerr e;
	struct spec s;
	char path[4096];
	size_t len;
	sigset_t orig;
	memset(&e, 0, sizeof e);

	snprintf(path, sizeof path, "%s/config.json", o->bundle);
	char *text = read_whole_file(path, &len, &e);
	if (!text)
		return fail_setup(&e);
	if (spec_parse(text, len, &s, &e) < 0 || spec_resolve_paths(&s, o->bundle, &e) < 0)
		return fail_setup(&e);
	g_report_upper = s.report_upper && s.ovl_upper ? s.ovl_upper : NULL;
	int bpf = o->device_bpf ? devices_bpf_attach(&s, o->device_bpf, &e) : 0;
	devices_bpf_cache_close(); /* nothing of the fork server's goes into the container */
	if (bpf < 0)
		return fail_setup(&e);

	int sigfd = setup_signals(&orig, &e);
	if (sigfd < 0)
		return fail_setup(&e);
	int syncp[2], errp[2], statp[2] = { -1, -1 };
	if (pipe2(syncp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 || (!o->no_init && pipe2(statp, O_CLOEXEC) < 0)) {
		rerr_set(&e, errno, "pipe");
		return fail_setup(&e);
	}
	struct child_args a = {
		.spec = &s, .sync_fd = syncp[0], .err_fd = errp[1], .status_fd = statp[1],
		.no_init = o->no_init, .orig_mask = &orig, .cgroups = o->cgroups, .ncgroups = o->ncgroups,
	};
	a.close_fds[a.nclose++] = syncp[1];
	a.close_fds[a.nclose++] = errp[0];
	a.close_fds[a.nclose++] = sigfd;
	if (statp[0] >= 0)
		a.close_fds[a.nclose++] = statp[0];
	if (o->ctlfd >= 0)
		a.close_fds[a.nclose++] = o->ctlfd;

	int cgfd = -1, joined = 0;
	if (o->clone_into) {
		cgfd = open(o->clone_into, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (cgfd < 0) {
			rerr_set(&e, errno, "open cgroup %s", o->clone_into);
			return fail_setup(&e);
		}
		a.close_fds[a.nclose++] = cgfd;
	}

	int flags = s.ns_flags & ~CLONE_NEWCGROUP;
	pid_t pid = clone_child((unsigned long)flags, cgfd, &joined);
	if (pid < 0) {
		if (cgfd >= 0)
			rerr_set(&e, errno, "clone3 into cgroup %s", o->clone_into);
		else
			rerr_set(&e, errno, "clone");
		return fail_setup(&e);
	}
	if (pid == 0)
		container_child(&a);

	close(syncp[0]);
	close(errp[1]);
	if (statp[1] >= 0)
		close(statp[1]);
	/* Ports are bound after the clone, so that the container never holds them. */
	/* The child joins the --cgroup directories itself (join_cgroups_self). */
	if ((o->clone_into && !joined && join_cgroups(&o->clone_into, 1, pid, &e) < 0) ||
	    (o->nattach && network_attach(pid, o->attach, o->nattach, &e) < 0) ||
	    (o->npublish && publish_bind(o->publish, o->npublish, &e) < 0)) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return fail_setup(&e);
	}
	if (o->npublish) {
		event_ports(o->ctlfd, o->publish, o->npublish);
		g_forwarder = forwarder_start(pid, o->publish, o->npublish, &orig, &e);
		publish_close(o->publish, o->npublish);
		if (g_forwarder < 0) {
			g_forwarder = 0;
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			return fail_setup(&e);
		}
	}
	if (write_all(syncp[1], "x", 1) < 0) {
		rerr_set(&e, errno, "start the container");
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		stop_forwarder();
		return fail_setup(&e);
	}
	close(syncp[1]);
	/* `exec ID JSON` on the control socket: processes forked from here, into
	 * the container's cgroups (v1 by `tasks`, v2 by clone3 into cgfd). */
	const char **v1 = calloc(o->ncgroups + 1, sizeof *v1);
	size_t nv1 = 0;
	if (v1 && o->ctlfd >= 0) {
		for (size_t i = 0; i < o->ncgroups; i++)
			v1[nv1++] = o->cgroups[i];
		/* Without clone3 (an old kernel) the v2 directory is joined like the others. */
		if (!joined && o->clone_into)
			v1[nv1++] = o->clone_into;
		int fds[4] = { o->ctlfd, sigfd, errp[0], statp[0] };
		served_setup(&s, v1, nv1, joined ? cgfd : -1, o->clone_into, pid, &orig, fds, statp[0] >= 0 ? 4 : 3);
	} else if (cgfd >= 0) {
		close(cgfd);
	}
	return supervise(pid, o->ctlfd, errp[0], statp[0], sigfd);
}

static int usage(void)
{
	fputs("usage: petri-runner run [--no-init] [--control-fd N] [--clone-into DIR] [--cgroup DIR]...\n"
	      "                        [--device-bpf DIR] [--publish [HOST:]PORT]... [--network PID:ADDR/PREFIX]...\n"
	      "                        BUNDLE\n"
	      "       petri-runner network [--control-fd N] [--address ADDR/PREFIX]\n"
	      "       petri-runner exec --pid PID --config BUNDLE/config.json --process JSON\n"
	      "                         [--control-fd N] [--cgroup DIR]...\n"
	      "       petri-runner standby --control-fd N   (then a command line on N, NUL-separated)\n"
	      "       petri-runner serve --socket NAME --control-fd N   (a fork server: PROTOCOL.md)\n"
	      "       petri-runner fsops    (JSON ops on stdin, one result line each)\n"
	      "       petri-runner scan DIR\n"
	      "       petri-runner replay SCRIPT build ARGS...   (bin/petri: a remembered build, else node SCRIPT)\n"
	      "       petri-runner version\n",
	      stderr);
	return EXIT_SETUP;
}

/* Reads NUL-separated arguments from fd up to an empty one; returns them
 * after argv0 (a NULL-terminated array), or NULL at EOF or on an error. */
static char **standby_args(int fd, char *argv0)
{
	/* One byte at a time: what follows the command line (a `kill`, an `exec`)
	 * stays in the socket for the supervisor. The line is short. */
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (!buf)
			return NULL;
		if (len == 1 && buf[0] == 0)
			return NULL; /* no command */
		if (len >= 2 && buf[len - 1] == 0 && buf[len - 2] == 0)
			break;
		if (len == cap) {
			if (cap >= (1u << 20))
				return NULL;
			char *bigger = realloc(buf, cap *= 2);
			if (!bigger)
				return NULL;
			buf = bigger;
		}
		ssize_t n = read(fd, buf + len, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return NULL;
		len++;
	}
	size_t count = 0;
	for (size_t i = 0; i + 1 < len; i++)
		if (buf[i] == 0)
			count++;
	char **out = calloc(count + 2, sizeof *out);
	if (!out)
		return NULL;
	size_t k = 0;
	out[k++] = argv0;
	for (size_t i = 0; i + 1 < len; i += strlen(buf + i) + 1)
		out[k++] = buf + i;
	out[k] = NULL;
	return out;
}

static int parse_int(const char *s, int *out)
{
	char *end;
	long v;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 0 || v > 0x7fffffff)
		return -1;
	*out = (int)v;
	return 0;
}

int main(int argc, char **argv)
{
	struct rerr e;
	memset(&e, 0, sizeof e);
	if (argc < 2)
		return usage();
	g_arg_start = argv[0];
	for (int i = 0; i < argc; i++) {
		if (argv[i] != g_arg_start + g_arg_len) { /* not contiguous: leave it */
			g_arg_len = 0;
			break;
		}
		g_arg_len += strlen(argv[i]) + 1;
	}
	if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
		printf("petri-runner %s\n", PETRI_RUNNER_VERSION);
		return 0;
	}
	if (strcmp(argv[1], "fsops") == 0)
		return argc == 2 ? fsops_main() : usage();
	if (strcmp(argv[1], "scan") == 0)
		return argc == 3 ? scan_main(argv[2]) : usage();
	if (strcmp(argv[1], "replay") == 0)
		return argc >= 4 && strcmp(argv[3], "build") == 0 ? replay_main(argc, argv) : usage();
	if (strcmp(argv[1], "standby") == 0) {
		/* A runner made ahead (sealed, waiting): its real command line comes
		 * on the control fd, NUL-separated, ending with an empty argument. */
		int fd;
		if (argc != 4 || strcmp(argv[2], "--control-fd") != 0 || parse_int(argv[3], &fd) < 0 ||
		    fcntl(fd, F_GETFD) < 0)
			return usage();
		if (reexec_sealed(argv, &e) < 0)
			return fail_setup(&e);
		pid_t parent = getppid();
		if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != parent)
			return EXIT_SETUP;
		char **next = standby_args(fd, argv[0]);
		if (!next)
			return EXIT_SETUP; /* the harness went away or sent nothing usable */
		argv = next;
		for (argc = 0; argv[argc]; argc++)
			;
		/* g_arg_start/g_arg_len still point at this process's own argv area,
		 * which init and the forwarder rename themselves in. */
		if (argc < 2)
			return usage();
	}
	if (strcmp(argv[1], "serve") == 0) {
		int fd;
		if (argc != 6 || strcmp(argv[2], "--socket") != 0 || strcmp(argv[4], "--control-fd") != 0 ||
		    parse_int(argv[5], &fd) < 0 || fcntl(fd, F_GETFD) < 0)
			return usage();
		if (reexec_sealed(argv, &e) < 0)
			return fail_setup(&e);
		return serve_main(argv[3], fd, argv[0]);
	}
	return runner_dispatch(argc, argv);
}

/* run, exec and network: from main, or in a runner forked by `serve`. */
int runner_dispatch(int argc, char **argv)
{
	struct rerr e;
	memset(&e, 0, sizeof e);
	if (argc < 2)
		return usage();
	int is_run = strcmp(argv[1], "run") == 0, is_exec = strcmp(argv[1], "exec") == 0;
	int is_network = strcmp(argv[1], "network") == 0;
	if (!is_run && !is_exec && !is_network)
		return usage();
	if (!is_run)
		devices_bpf_cache_close(); /* the fork server's device programs: for `run` only */

	/* Die with the harness; check it did not die already. */
	pid_t ppid = getppid();
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != ppid)
		return EXIT_SETUP;

	struct run_opts ro = { 0, -1, NULL, 0, NULL, NULL, NULL, NULL, 0, NULL, 0 };
	const char *address = NULL;
	struct exec_opts eo = { 0, NULL, NULL, -1, NULL, 0 };
	const char **cgroups = calloc((size_t)argc + 1, sizeof *cgroups);
	size_t ncg = 0;
	int ctlfd = -1;
	ro.publish = calloc((size_t)argc, sizeof *ro.publish);
	ro.attach = calloc((size_t)argc, sizeof *ro.attach);
	if (!cgroups || !ro.publish || !ro.attach)
		return EXIT_SETUP;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--no-init") == 0 && is_run) {
			ro.no_init = 1;
		} else if (strcmp(a, "--control-fd") == 0 && val) {
			if (parse_int(val, &ctlfd) < 0 || fcntl(ctlfd, F_GETFD) < 0) {
				fprintf(stderr, "petri-runner: bad --control-fd %s\n", val);
				return EXIT_SETUP;
			}
			i++;
		} else if (strcmp(a, "--cgroup") == 0 && val) {
			cgroups[ncg++] = val;
			i++;
		} else if (strcmp(a, "--clone-into") == 0 && val && is_run) {
			ro.clone_into = val;
			i++;
		} else if (strcmp(a, "--publish") == 0 && val && is_run) {
			if (parse_publish(val, &ro.publish[ro.npublish]) < 0) {
				fprintf(stderr, "petri-runner: bad --publish %s: expected PORT or HOST_PORT:PORT\n", val);
				return EXIT_SETUP;
			}
			ro.npublish++;
			i++;
		} else if (strcmp(a, "--network") == 0 && val && is_run) {
			if (parse_attach(val, &ro.attach[ro.nattach]) < 0) {
				fprintf(stderr, "petri-runner: bad --network %s: expected PID:ADDR/PREFIX\n", val);
				return EXIT_SETUP;
			}
			ro.nattach++;
			i++;
		} else if (strcmp(a, "--address") == 0 && val && is_network) {
			address = val;
			i++;
		} else if (strcmp(a, "--device-bpf") == 0 && val && is_run) {
			ro.device_bpf = val;
			i++;
		} else if (strcmp(a, "--pid") == 0 && val && is_exec) {
			int pid;
			if (parse_int(val, &pid) < 0 || pid == 0) {
				fprintf(stderr, "petri-runner: bad --pid %s\n", val);
				return EXIT_SETUP;
			}
			eo.pid = pid;
			i++;
		} else if (strcmp(a, "--config") == 0 && val && is_exec) {
			eo.config = val;
			i++;
		} else if (strcmp(a, "--process") == 0 && val && is_exec) {
			eo.process_json = val;
			i++;
		} else if (a[0] != '-' && is_run && !ro.bundle) {
			ro.bundle = a;
		} else {
			return usage();
		}
	}
	g_ctlfd = ctlfd;
	if (is_network) {
		if (ctlfd >= 0)
			fcntl(ctlfd, F_SETFD, FD_CLOEXEC);
		return network_main(ctlfd, address);
	}
	if (is_run && !ro.bundle)
		return usage();
	if (is_exec && (!eo.pid || !eo.config || !eo.process_json))
		return usage();

	if (reexec_sealed(argv, &e) < 0)
		return fail_setup(&e);
	/* From here on the control fd must not leak into the container. */
	if (ctlfd >= 0)
		fcntl(ctlfd, F_SETFD, FD_CLOEXEC);

	if (is_run) {
		/* The process must be in the device filter's cgroup too (it is
		 * already when that is the --clone-into one). */
		if (ro.device_bpf && !(ro.clone_into && strcmp(ro.clone_into, ro.device_bpf) == 0)) {
			size_t i;
			for (i = 0; i < ncg && strcmp(cgroups[i], ro.device_bpf) != 0; i++)
				;
			if (i == ncg)
				cgroups[ncg++] = ro.device_bpf;
		}
		ro.ctlfd = ctlfd;
		ro.cgroups = cgroups;
		ro.ncgroups = ncg;
		return cmd_run(&ro);
	}
	eo.ctlfd = ctlfd;
	eo.cgroups = cgroups;
	eo.ncgroups = ncg;
	return exec_main(&eo);
}
