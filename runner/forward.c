/* forward.c: published ports (`run --publish`). The supervisor binds a
 * listening TCP socket on 127.0.0.1 of the host for each port, then forks a
 * forwarder that enters the container's network namespace: the listening
 * sockets stay in the host's namespace (a socket keeps the namespace it was
 * made in), the sockets it connects to 127.0.0.1:PORT are made in the
 * container's. It relays both ways with poll and non-blocking read/send,
 * passing half-closes on (shutdown SHUT_WR) and resets (SO_LINGER 0). The
 * host's network configuration is not touched. PROTOCOL.md is the interface. */
#define _GNU_SOURCE
#include "runner.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

int parse_publish(const char *arg, struct publish *p)
{
	char *end;
	long a, b = -1;
	errno = 0;
	a = strtol(arg, &end, 10);
	if (errno || end == arg)
		return -1;
	if (*end == ':') {
		const char *second = end + 1;
		b = strtol(second, &end, 10);
		if (errno || end == second)
			return -1;
	}
	if (*end)
		return -1;
	/* HOST:CONTAINER, like docker run -p; HOST 0 (or none): any free port. */
	long host = b < 0 ? 0 : a, container = b < 0 ? a : b;
	if (container < 1 || container > 65535 || host < 0 || host > 65535)
		return -1;
	p->container_port = (int)container;
	p->host_port = (int)host;
	p->fd = -1;
	return 0;
}

int publish_bind(struct publish *p, size_t n, struct rerr *e)
{
	for (size_t i = 0; i < n; i++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return rerr_set(e, errno, "publish port %d: socket", p[i].container_port);
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		struct sockaddr_in sa;
		memset(&sa, 0, sizeof sa);
		sa.sin_family = AF_INET;
		sa.sin_port = htons((uint16_t)p[i].host_port);
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		socklen_t len = sizeof sa;
		if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 128) < 0 ||
		    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
			int err = errno;
			close(fd);
			return rerr_set(e, err, "publish port %d on 127.0.0.1:%d", p[i].container_port, p[i].host_port);
		}
		p[i].fd = fd;
		p[i].host_port = ntohs(sa.sin_port);
	}
	return 0;
}

void publish_close(struct publish *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i].fd >= 0)
			close(p[i].fd);
		p[i].fd = -1;
	}
}

void event_ports(int ctlfd, const struct publish *p, size_t n)
{
	if (ctlfd < 0)
		return;
	size_t cap = 64 + n * 48, len = 0;
	char *buf = malloc(cap);
	if (!buf)
		return;
	len += (size_t)snprintf(buf, cap, "{\"event\":\"ports\",\"ports\":[");
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(buf + len, cap - len, "%s{\"container\":%d,\"host\":%d}", i ? "," : "",
					p[i].container_port, p[i].host_port);
	len += (size_t)snprintf(buf + len, cap - len, "]}\n");
	(void)write_all(ctlfd, buf, len);
	free(buf);
}

/* --- the forwarder --- */

#define BUF_SIZE 65536
#define MAX_CONNS 512

enum { CONNECT_V4, CONNECT_V6, OPEN };

struct conn {
	int fd[2];     /* 0: the host's client, 1: the socket in the container */
	int port;      /* the container port */
	int stage;     /* connecting over IPv4, then IPv6, or open */
	int eof[2];    /* fd[i] said EOF */
	int shut[2];   /* fd[i] was shut down for writing */
	size_t off[2], len[2];
	char buf[2][BUF_SIZE]; /* buf[i]: read from fd[i], to be sent to fd[1 - i] */
};

/* Closes with a reset, so that the peer sees ECONNRESET rather than an EOF. */
static void close_reset(int fd)
{
	struct linger l = { 1, 0 };
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
	close(fd);
}

/* Starts connecting to PORT on the container's loopback: 0 when under way
 * or done (c->stage says which), -1 when it failed at once. */
static int start_connect(struct conn *c, int v6)
{
	int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int r;
	if (v6) {
		struct sockaddr_in6 sa;
		memset(&sa, 0, sizeof sa);
		sa.sin6_family = AF_INET6;
		sa.sin6_port = htons((uint16_t)c->port);
		sa.sin6_addr = in6addr_loopback;
		r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
	} else {
		struct sockaddr_in sa;
		memset(&sa, 0, sizeof sa);
		sa.sin_family = AF_INET;
		sa.sin_port = htons((uint16_t)c->port);
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
	}
	if (r < 0 && errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	c->fd[1] = fd;
	c->stage = r == 0 ? OPEN : v6 ? CONNECT_V6 : CONNECT_V4;
	return 0;
}

/* After IPv4 failed: IPv6 (a server on ::1 only); 0 when under way. */
static int connect_next(struct conn *c)
{
	if (c->fd[1] >= 0)
		close(c->fd[1]);
	c->fd[1] = -1;
	if (c->stage == CONNECT_V4 && start_connect(c, 1) == 0)
		return 0;
	return -1;
}

static void conn_free(struct conn *c, int reset)
{
	for (int i = 0; i < 2; i++) {
		if (c->fd[i] < 0)
			continue;
		if (reset)
			close_reset(c->fd[i]);
		else
			close(c->fd[i]);
	}
	free(c);
}

/* Moves data for an open connection after poll; returns 0 to keep it, 1 when
 * it is done, -1 when it broke (then both sides are reset). */
static int conn_pump(struct conn *c, const short revents[2])
{
	for (int i = 0; i < 2; i++) {
		if ((revents[i] & (POLLIN | POLLHUP | POLLERR)) && !c->eof[i] && c->len[i] == 0) {
			ssize_t n = read(c->fd[i], c->buf[i], BUF_SIZE);
			if (n > 0) {
				c->off[i] = 0;
				c->len[i] = (size_t)n;
			} else if (n == 0) {
				c->eof[i] = 1;
			} else if (errno != EAGAIN && errno != EINTR) {
				return -1;
			}
		} else if (revents[i] & (POLLERR | POLLNVAL)) {
			return -1;
		}
	}
	for (int i = 0; i < 2; i++) {
		int to = 1 - i;
		if (c->len[i] > 0) {
			ssize_t n = send(c->fd[to], c->buf[i] + c->off[i], c->len[i], MSG_NOSIGNAL);
			if (n > 0) {
				c->off[i] += (size_t)n;
				c->len[i] -= (size_t)n;
			} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				return -1;
			}
		}
		if (c->eof[i] && c->len[i] == 0 && !c->shut[to]) {
			shutdown(c->fd[to], SHUT_WR);
			c->shut[to] = 1;
		}
	}
	return c->shut[0] && c->shut[1] ? 1 : 0;
}

/* Every fd but those in keep (and 0-2, pointed at /dev/null) is closed. */
static void close_other_fds(const int *keep, size_t nkeep)
{
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null >= 0) {
		for (int fd = 0; fd < 3; fd++)
			dup2(null, fd);
		if (null > 2)
			close(null);
	}
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return;
	int dfd = dirfd(d);
	struct dirent *de;
	int fds[1024];
	size_t n = 0;
	while ((de = readdir(d)) && n < sizeof fds / sizeof fds[0]) {
		int fd = atoi(de->d_name);
		if (fd < 3 || fd == dfd || de->d_name[0] == '.')
			continue;
		size_t k;
		for (k = 0; k < nkeep && keep[k] != fd; k++)
			;
		if (k == nkeep)
			fds[n++] = fd;
	}
	closedir(d);
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
}

__attribute__((noreturn)) static void forward_loop(const struct publish *p, size_t np)
{
	struct conn **conns = calloc(MAX_CONNS, sizeof *conns);
	struct pollfd *pfd = calloc(np + 2 * MAX_CONNS, sizeof *pfd);
	size_t nconns = 0;
	if (!conns || !pfd)
		_exit(EXIT_SETUP);
	for (;;) {
		size_t n = 0;
		for (size_t i = 0; i < np; i++) {
			pfd[n].fd = nconns < MAX_CONNS ? p[i].fd : -1;
			pfd[n].events = POLLIN;
			pfd[n++].revents = 0;
		}
		for (size_t k = 0; k < nconns; k++) {
			struct conn *c = conns[k];
			for (int i = 0; i < 2; i++) {
				short ev = 0;
				if (c->stage != OPEN) {
					ev = i == 1 ? POLLOUT : 0;
				} else {
					if (!c->eof[i] && c->len[i] == 0)
						ev |= POLLIN;
					if (c->len[1 - i] > 0)
						ev |= POLLOUT;
				}
				pfd[n].fd = ev ? c->fd[i] : -1;
				pfd[n].events = ev;
				pfd[n++].revents = 0;
			}
		}
		if (poll(pfd, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			_exit(EXIT_SETUP);
		}
		/* Connections first: the slots polled are those before any accept. */
		size_t polled = nconns;
		for (size_t k = 0; k < polled; k++) {
			struct conn *c = conns[k];
			const short rev[2] = { pfd[np + 2 * k].revents, pfd[np + 2 * k + 1].revents };
			int result = 0;
			if (c->stage != OPEN) {
				if (rev[1]) {
					int err = 0;
					socklen_t len = sizeof err;
					if (getsockopt(c->fd[1], SOL_SOCKET, SO_ERROR, &err, &len) < 0)
						err = errno;
					if (err == 0)
						c->stage = OPEN;
					else if (connect_next(c) < 0)
						result = -1;
				}
			} else {
				result = conn_pump(c, rev);
			}
			if (result != 0) {
				conn_free(c, result < 0);
				conns[k] = NULL;
			}
		}
		size_t kept = 0;
		for (size_t k = 0; k < polled; k++)
			if (conns[k])
				conns[kept++] = conns[k];
		nconns = kept;
		for (size_t i = 0; i < np; i++) {
			if (!(pfd[i].revents & POLLIN))
				continue;
			while (nconns < MAX_CONNS) {
				int fd = accept4(p[i].fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
				if (fd < 0)
					break; /* EAGAIN, or out of fds: the backlog waits */
				struct conn *c = malloc(sizeof *c);
				if (!c) {
					close_reset(fd);
					break;
				}
				memset(c, 0, offsetof(struct conn, buf));
				c->fd[0] = fd;
				c->fd[1] = -1;
				c->port = p[i].container_port;
				if (start_connect(c, 0) < 0 && (c->stage = CONNECT_V4, connect_next(c) < 0)) {
					conn_free(c, 1);
					continue;
				}
				conns[nconns++] = c;
			}
		}
	}
}

pid_t forwarder_start(pid_t container_pid, const struct publish *p, size_t np, const sigset_t *orig_mask,
		      struct rerr *e)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/ns/net", (int)container_pid);
	int nsfd = open(path, O_RDONLY | O_CLOEXEC);
	if (nsfd < 0)
		return rerr_set(e, errno, "open %s", path);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		int err = errno;
		close(nsfd);
		return rerr_set(e, err, "fork the port forwarder");
	}
	if (pid > 0) {
		close(nsfd);
		return pid;
	}
	/* The forwarder: dies with the supervisor, which kills it when the container ends. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != parent)
		_exit(EXIT_SETUP);
	prctl(PR_SET_NAME, "petri-forward", 0, 0, 0);
	if (g_arg_len > 0) {
		memset(g_arg_start, 0, g_arg_len);
		strncpy(g_arg_start, "petri-forward", g_arg_len - 1);
	}
	signal(SIGPIPE, SIG_IGN);
	sigprocmask(SIG_SETMASK, orig_mask, NULL);
	int keep[np + 1];
	for (size_t i = 0; i < np; i++)
		keep[i] = p[i].fd;
	keep[np] = nsfd;
	close_other_fds(keep, np + 1);
	if (setns(nsfd, CLONE_NEWNET) < 0)
		_exit(EXIT_SETUP);
	close(nsfd);
	forward_loop(p, np);
}
