/* serve.c: `petri-runner serve --socket NAME --control-fd N`, a fork server.
 * Started once per harness process and already running from the sealed copy,
 * it forks each `run`/`exec` runner itself, so the harness forks nothing and
 * no runner executes or links itself again. The harness connects to the
 * abstract UNIX socket NAME once per stream of a launch (only its own
 * connections are accepted: SO_PEERCRED pid = our parent); each connection
 * begins with a header line:
 *   "ID ctl ROLES LEN\n" then LEN bytes of NUL-separated arguments (the
 *                        control connection; ROLES: which of 0 1 2 come as
 *                        connections, "-" for none)
 *   "ID R\n"             a stream connection, R in 0 1 2 (stdin, stdout, stderr)
 * When all have come, the runner is forked with them as fds 0-2 and 3 (fds
 * not given are /dev/null, or for 1 and 2 "i" in ROLES: the server's own, the
 * harness's at spawn). Each runner's end is reported on the control fd:
 *   {"event":"reaped","id":ID,"exitCode":N,"signal":S|null}
 * The server dies with the harness (PDEATHSIG), and its runners with it. */
#define _GNU_SOURCE
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CONNS 512
#define HEADER_MAX 96
#define ARGS_MAX 65536

struct conn {
	int fd;
	long id;
	int role; /* -1: header not read yet; 0-2 stream; 3 ctl */
	char hdr[HEADER_MAX];
	size_t hlen;
	char *args; /* ctl: the arguments */
	size_t alen, aneed;
	char roles[8];
};

struct launch {
	long id;
	pid_t pid;
};

static struct conn conns[MAX_CONNS];
static int nconns;
static struct launch *launches;
static size_t nlaunches, caplaunches;

static void conn_drop(int i)
{
	close(conns[i].fd);
	free(conns[i].args);
	conns[i] = conns[--nconns];
}

static int header_parse(struct conn *c)
{
	char *nl = memchr(c->hdr, '\n', c->hlen);
	if (!nl)
		return c->hlen >= HEADER_MAX ? -1 : 0;
	*nl = 0;
	char role[8];
	unsigned long len = 0;
	int n = sscanf(c->hdr, "%ld %7s %7s %lu", &c->id, role, c->roles, &len);
	if (n == 2 && role[1] == 0 && role[0] >= '0' && role[0] <= '2') {
		c->role = role[0] - '0';
		return 1;
	}
	if (n == 4 && strcmp(role, "ctl") == 0 && len > 0 && len <= ARGS_MAX) {
		c->role = 3;
		c->aneed = len;
		c->args = malloc(len + 1);
		return c->args ? 1 : -1;
	}
	return -1;
}

/* Reads what belongs to the header (and a ctl's arguments), never past it:
 * what follows on a stdin or ctl connection is for the runner. 1: complete. */
static int conn_read(struct conn *c)
{
	if (c->role < 0) {
		char peek[HEADER_MAX];
		ssize_t n = recv(c->fd, peek, HEADER_MAX - c->hlen, MSG_PEEK);
		if (n <= 0)
			return n < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : -1;
		char *nl = memchr(peek, '\n', (size_t)n);
		size_t take = nl ? (size_t)(nl - peek) + 1 : (size_t)n;
		n = read(c->fd, c->hdr + c->hlen, take);
		if (n <= 0)
			return -1;
		c->hlen += (size_t)n;
		int r = header_parse(c);
		if (r <= 0)
			return r;
		if (c->role != 3)
			return 1;
	}
	if (c->role == 3 && c->alen < c->aneed) {
		ssize_t n = read(c->fd, c->args + c->alen, c->aneed - c->alen);
		if (n <= 0)
			return n < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : -1;
		c->alen += (size_t)n;
	}
	return c->role != 3 || c->alen == c->aneed;
}

static int find(long id, int role)
{
	for (int i = 0; i < nconns; i++)
		if (conns[i].id == id && conns[i].role == role && (role != 3 || conns[i].alen == conns[i].aneed))
			return i;
	return -1;
}

static int set_blocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
}

__attribute__((noreturn)) static void child_run(pid_t server, const sigset_t *orig, int ctl, const int *streams,
						 const char *roles, char *args, size_t alen, char *argv0)
{
	for (int k = 0; k < 3; k++) {
		int fd = streams[k];
		if (fd < 0 && !(k > 0 && strchr(roles, 'i')))
			fd = open("/dev/null", k == 0 ? O_RDONLY : O_WRONLY);
		if (fd >= 0 && (set_blocking(fd) < 0 || dup2(fd, k) < 0))
			_exit(EXIT_SETUP);
	}
	if (set_blocking(ctl) < 0 || dup2(ctl, 3) < 0)
		_exit(EXIT_SETUP);
	/* Everything above 3 closed, but the device program table's fds (kept, ascending). */
	int keep[DEVCACHE_FDS_MAX + 1], nkeep;
	devices_bpf_cache_fds(keep, &nkeep);
	for (int a = 1; a < nkeep; a++)
		for (int b = a; b > 0 && keep[b] < keep[b - 1]; b--) {
			int t = keep[b];
			keep[b] = keep[b - 1];
			keep[b - 1] = t;
		}
	keep[nkeep] = -1;
	unsigned from = 4;
	for (int k = 0; k <= nkeep; k++) {
		unsigned to = keep[k] < 0 ? ~0U : (unsigned)keep[k] - 1;
		if (keep[k] >= 0 && (unsigned)keep[k] < from)
			continue;
		if (to >= from && syscall(SYS_close_range, from, to, 0U) < 0)
			for (unsigned fd = from; fd <= to && fd < 1024; fd++)
				close((int)fd);
		if (keep[k] >= 0)
			from = (unsigned)keep[k] + 1;
	}
	sigprocmask(SIG_SETMASK, orig, NULL);
	signal(SIGPIPE, SIG_DFL);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != server)
		_exit(EXIT_SETUP);
	size_t count = 0;
	args[alen] = 0;
	for (size_t i = 0; i < alen; i++)
		if (args[i] == 0)
			count++;
	char **argv = calloc(count + 3, sizeof *argv);
	if (!argv)
		_exit(EXIT_SETUP);
	size_t k = 0;
	argv[k++] = argv0;
	for (size_t i = 0; i < alen; i += strlen(args + i) + 1)
		argv[k++] = args + i;
	argv[k] = NULL;
	exit(runner_dispatch((int)k, argv));
}

/* Forks the launch whose connections have all come; 0 when not yet. */
static int try_launch(long id, pid_t self, const sigset_t *orig, char *argv0, int chanfd)
{
	int ic = find(id, 3);
	if (ic < 0)
		return 0;
	int idx[3] = { -1, -1, -1 }, streams[3] = { -1, -1, -1 };
	for (int k = 0; k < 3; k++) {
		if (!strchr(conns[ic].roles, '0' + k))
			continue;
		idx[k] = find(id, k);
		if (idx[k] < 0)
			return 0;
		streams[k] = conns[idx[k]].fd;
	}
	if (nlaunches == caplaunches) {
		size_t cap = caplaunches ? caplaunches * 2 : 64;
		struct launch *bigger = realloc(launches, cap * sizeof *bigger);
		if (!bigger)
			return -1;
		launches = bigger;
		caplaunches = cap;
	}
	pid_t pid = fork();
	if (pid == 0)
		child_run(self, orig, conns[ic].fd, streams, conns[ic].roles, conns[ic].args, conns[ic].alen, argv0);
	if (pid < 0) {
		char buf[128];
		int n = snprintf(buf, sizeof buf, "{\"event\":\"reaped\",\"id\":%ld,\"exitCode\":125,\"signal\":null}\n", id);
		(void)write_all(chanfd, buf, (size_t)n);
	} else {
		launches[nlaunches].id = id;
		launches[nlaunches++].pid = pid;
	}
	/* Highest index first: conn_drop moves the last one into the hole. */
	int all[4] = { ic, idx[0], idx[1], idx[2] };
	for (int a = 0; a < 4; a++)
		for (int b = a + 1; b < 4; b++)
			if (all[b] > all[a]) {
				int t = all[a];
				all[a] = all[b];
				all[b] = t;
			}
	for (int a = 0; a < 4; a++)
		if (all[a] >= 0)
			conn_drop(all[a]);
	return 1;
}

static void report_reaped(int chanfd)
{
	for (;;) {
		int st;
		pid_t pid = waitpid(-1, &st, WNOHANG);
		if (pid <= 0)
			return;
		for (size_t i = 0; i < nlaunches; i++) {
			if (launches[i].pid != pid)
				continue;
			char buf[128];
			int n;
			if (WIFSIGNALED(st))
				n = snprintf(buf, sizeof buf, "{\"event\":\"reaped\",\"id\":%ld,\"exitCode\":null,\"signal\":%d}\n",
					     launches[i].id, WTERMSIG(st));
			else
				n = snprintf(buf, sizeof buf, "{\"event\":\"reaped\",\"id\":%ld,\"exitCode\":%d,\"signal\":null}\n",
					     launches[i].id, WEXITSTATUS(st));
			(void)write_all(chanfd, buf, (size_t)n);
			launches[i] = launches[--nlaunches];
			break;
		}
	}
}

int serve_main(const char *name, int chanfd, char *argv0)
{
	pid_t parent = getppid(), self = getpid();
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != parent)
		return EXIT_SETUP;
	struct sockaddr_un addr;
	memset(&addr, 0, sizeof addr);
	addr.sun_family = AF_UNIX;
	size_t nlen = strlen(name);
	if (nlen == 0 || nlen + 1 > sizeof addr.sun_path) {
		event_error(chanfd, "serve: bad socket name");
		return EXIT_SETUP;
	}
	memcpy(addr.sun_path + 1, name, nlen); /* abstract: gone with the process */
	/* Bound twice: Node up to 20 connects to an abstract name padded with
	 * NULs to the whole sun_path, later versions to its exact length. */
	int lfds[2];
	socklen_t lens[2] = { (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + nlen), (socklen_t)sizeof addr };
	for (int k = 0; k < 2; k++) {
		lfds[k] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (lfds[k] < 0 || bind(lfds[k], (struct sockaddr *)&addr, lens[k]) < 0 || listen(lfds[k], 256) < 0) {
			struct rerr e;
			rerr_set(&e, errno, "serve: listen on @%s", name);
			event_error(chanfd, e.msg);
			return EXIT_SETUP;
		}
	}
	sigset_t set, orig;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	int sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	sigprocmask(SIG_BLOCK, &set, &orig);
	signal(SIGPIPE, SIG_IGN);
	if (sigfd < 0)
		return EXIT_SETUP;
	fcntl(chanfd, F_SETFD, FD_CLOEXEC);
	/* Device programs come back from the runners on this pair (devices_bpf.c). */
	int cachesp[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, cachesp) < 0)
		cachesp[0] = cachesp[1] = -1;
	else
		devices_bpf_cache_use(cachesp[1]);
	static const char ready[] = "{\"event\":\"ready\"}\n";
	if (write_all(chanfd, ready, sizeof ready - 1) < 0)
		return EXIT_SETUP;
	struct pollfd pfd[5 + MAX_CONNS];
	for (;;) {
		int np = 0;
		pfd[np].fd = sigfd;
		pfd[np++].events = POLLIN;
		pfd[np].fd = chanfd;
		pfd[np++].events = POLLIN;
		for (int k = 0; k < 2; k++) {
			pfd[np].fd = lfds[k];
			pfd[np++].events = nconns < MAX_CONNS ? POLLIN : 0;
		}
		pfd[np].fd = cachesp[0];
		pfd[np++].events = POLLIN;
		/* A connection whose header is in waits for the rest of its launch unpolled. */
		for (int i = 0; i < nconns; i++) {
			int done = conns[i].role >= 0 && (conns[i].role != 3 || conns[i].alen == conns[i].aneed);
			pfd[np].fd = conns[i].fd;
			pfd[np++].events = done ? 0 : POLLIN;
		}
		int nready_conns = nconns;
		if (poll(pfd, (nfds_t)np, -1) < 0) {
			if (errno == EINTR)
				continue;
			return EXIT_SETUP;
		}
		if (pfd[0].revents) {
			struct signalfd_siginfo si[8];
			while (read(sigfd, si, sizeof si) > 0)
				;
			report_reaped(chanfd);
		}
		if (pfd[4].revents && devices_bpf_cache_recv(cachesp[0]) < 0) {
			close(cachesp[0]);
			cachesp[0] = -1; /* poll ignores it from now on */
		}
		if (pfd[1].revents) {
			char buf[256];
			ssize_t n = read(chanfd, buf, sizeof buf);
			if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
				return 0; /* the harness is gone; our runners die with us */
		}
		/* Connections, last first (conn_drop and try_launch reorder the table). */
		for (int i = nready_conns - 1; i >= 0; i--) {
			if (i >= nconns || !pfd[5 + i].revents || conns[i].fd != pfd[5 + i].fd)
				continue;
			int r = conn_read(&conns[i]);
			if (r < 0) {
				conn_drop(i);
			} else if (r > 0) {
				try_launch(conns[i].id, self, &orig, argv0, chanfd);
			}
		}
		for (int k = 0; k < 2; k++) {
			if (!pfd[2 + k].revents)
				continue;
			while (nconns < MAX_CONNS) {
				int fd = accept4(lfds[k], NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
				if (fd < 0)
					break;
				struct ucred cred;
				socklen_t clen = sizeof cred;
				if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 || cred.pid != parent ||
				    cred.uid != geteuid()) {
					close(fd);
					continue;
				}
				memset(&conns[nconns], 0, sizeof conns[nconns]);
				conns[nconns].fd = fd;
				conns[nconns].role = -1;
				conns[nconns].id = -1;
				nconns++;
			}
		}
	}
}
