/* served.c: `exec` through a `run` supervisor's control socket.
 *
 * `exec ID JSON` makes the supervisor fork an exec supervisor (the same code
 * as `petri-runner exec`, exec_enter) straight into the container's cgroups:
 * clone3 into its v2 directory, `0` to the `tasks` of its v1 ones. The
 * harness spawns nothing: no fork of a big Node process, no new runner to
 * load. The process's stdout and stderr come back as events, base64. */
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
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_SERVED 32

struct served {
	long id;
	pid_t pid;        /* the exec supervisor; 0: free slot */
	int fd[3];        /* stdout, stderr, events (read ends); -1 when closed */
	size_t len;       /* of its partial event line, in g_served_buf */
	int skip;         /* dropping an overlong line up to its newline */
	char *exit_line;  /* the exit event, held until the output is drained */
};

static struct {
	int on;
	const struct spec *spec;
	const char **v1;
	size_t nv1;
	int cgfd;
	const char *v2;
	pid_t init;
	pid_t self;
	int started; /* the command runs: the container is set up */
	sigset_t orig;
	int close_fds[8];
	int nclose;
} g;
static struct served g_served[MAX_SERVED];
/* Apart from the table: a forked exec supervisor resets the table, and
 * touching these pages would copy them (about 1 ms here). */
#define SERVED_BUF (ERROR_EVENT_MAX + 1024) /* a partial event line: the longest is an error */
static char g_served_buf[MAX_SERVED][SERVED_BUF];

void served_setup(const struct spec *s, const char **v1, size_t nv1, int cgfd, const char *v2, pid_t init,
		  const sigset_t *orig, const int *close_fds, int nclose)
{
	g.on = 1;
	g.self = getpid();
	g.orig = *orig;
	g.spec = s;
	g.v1 = v1;
	g.nv1 = nv1;
	g.cgfd = cgfd;
	g.v2 = v2;
	g.init = init;
	for (int i = 0; i < nclose && i < 8; i++)
		g.close_fds[g.nclose++] = close_fds[i];
	for (int i = 0; i < MAX_SERVED; i++)
		g_served[i].fd[0] = g_served[i].fd[1] = g_served[i].fd[2] = -1;
}

void served_started(void)
{
	g.started = 1;
}

/* {"exec":ID,...rest of the event}: an event of exec ID. */
static void emit_tagged(int ctlfd, long id, const char *line, size_t len)
{
	char head[48];
	int n = snprintf(head, sizeof head, "{\"exec\":%ld%s", id, len > 2 ? "," : "");
	size_t total = (size_t)n + (len > 1 ? len - 1 : 0) + 1;
	char *out = malloc(total + 1);
	if (!out)
		return;
	memcpy(out, head, (size_t)n);
	if (len > 1)
		memcpy(out + n, line + 1, len - 1); /* without its `{` */
	out[total - 1] = '\n';
	if (len > 1 && out[total - 2] == '\n')
		total--;
	(void)write_all(ctlfd, out, total);
	free(out);
}

static void emit_error(int ctlfd, long id, const char *msg)
{
	char line[ERROR_EVENT_MAX];
	emit_tagged(ctlfd, id, line, format_error_event(line, sizeof line, msg));
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void emit_output(int ctlfd, long id, int stream, const unsigned char *data, size_t len)
{
	size_t cap = 64 + (len + 2) / 3 * 4;
	char *out = malloc(cap);
	if (!out)
		return;
	size_t n = (size_t)snprintf(out, cap, "{\"exec\":%ld,\"event\":\"output\",\"fd\":%d,\"data\":\"", id, stream);
	for (size_t i = 0; i < len; i += 3) {
		unsigned v = (unsigned)data[i] << 16 | (i + 1 < len ? (unsigned)data[i + 1] << 8 : 0) |
			     (i + 2 < len ? data[i + 2] : 0);
		out[n++] = b64[v >> 18 & 63];
		out[n++] = b64[v >> 12 & 63];
		out[n++] = i + 1 < len ? b64[v >> 6 & 63] : '=';
		out[n++] = i + 2 < len ? b64[v & 63] : '=';
	}
	memcpy(out + n, "\"}\n", 3);
	(void)write_all(ctlfd, out, n + 3);
	free(out);
}

static void close_slot(struct served *x)
{
	for (int k = 0; k < 3; k++)
		if (x->fd[k] >= 0) {
			close(x->fd[k]);
			x->fd[k] = -1;
		}
	free(x->exit_line);
	x->exit_line = NULL;
	x->pid = 0;
	x->len = 0;
}

/* Reads what the process wrote; returns 0 at EOF or error (the fd is closed), 1 otherwise. */
static int pump(int ctlfd, struct served *x, int k)
{
	unsigned char data[16384];
	ssize_t n = read(x->fd[k], data, sizeof data);
	if (n > 0) {
		emit_output(ctlfd, x->id, k + 1, data, (size_t)n);
		return 1;
	}
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return 1;
	close(x->fd[k]);
	x->fd[k] = -1;
	return 0;
}

/* The exit event goes out once the output written before it has. */
static void finish(int ctlfd, struct served *x)
{
	for (int k = 0; k < 2; k++) {
		if (x->fd[k] < 0)
			continue;
		int flags = fcntl(x->fd[k], F_GETFL);
		fcntl(x->fd[k], F_SETFL, flags | O_NONBLOCK);
		while (x->fd[k] >= 0) {
			unsigned char data[16384];
			ssize_t n = read(x->fd[k], data, sizeof data);
			if (n > 0) {
				emit_output(ctlfd, x->id, k + 1, data, (size_t)n);
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			/* EOF, or nothing more now (a background process keeps it open): done. */
			close(x->fd[k]);
			x->fd[k] = -1;
		}
	}
	emit_tagged(ctlfd, x->id, x->exit_line, strlen(x->exit_line));
	close_slot(x);
}

static void events(int ctlfd, struct served *x)
{
	char *buf = g_served_buf[x - g_served];
	ssize_t n = read(x->fd[2], buf + x->len, SERVED_BUF - 1 - x->len);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		/* The exec supervisor is gone; without an exit event (killed) its status comes from waitpid. */
		close(x->fd[2]);
		x->fd[2] = -1;
		return;
	}
	x->len += (size_t)n;
	buf[x->len] = 0;
	char *line = buf, *nl;
	while ((nl = memchr(line, '\n', (size_t)(buf + x->len - line)))) {
		*nl = 0;
		size_t len = (size_t)(nl - line);
		if (x->skip) {
			x->skip = 0; /* the end of a line too long to keep */
		} else if (strstr(line, "\"event\":\"exit\"")) {
			free(x->exit_line);
			x->exit_line = strdup(line);
		} else if (len > 0) {
			emit_tagged(ctlfd, x->id, line, len);
		}
		line = nl + 1;
	}
	x->len = (size_t)(buf + x->len - line);
	memmove(buf, line, x->len);
	if (x->len >= SERVED_BUF - 1) {
		x->len = 0;
		x->skip = 1;
	}
}

/* In the forked exec supervisor: never returns. */
__attribute__((noreturn)) static void served_child(const char *json, int out, int err, int evt, int joined)
{
	g_report_upper = NULL; /* the run's, not this exec's */
	struct rerr e;
	memset(&e, 0, sizeof e);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != g.self)
		_exit(EXIT_SETUP);
	/* The signals the run supervisor blocks are the process's to get. */
	sigprocmask(SIG_SETMASK, &g.orig, NULL);
	for (int i = 0; i < g.nclose; i++)
		close(g.close_fds[i]);
	for (int i = 0; i < MAX_SERVED; i++)
		for (int k = 0; k < 3; k++)
			if (g_served[i].fd[k] >= 0)
				close(g_served[i].fd[k]);
	int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) {
		event_error(evt, "exec: set up stdio");
		_exit(EXIT_SETUP);
	}
	close(devnull);
	close(out);
	close(err);
	/* This process supervises one exec, nothing served, and the ports' forwarder is not its own to stop. */
	extern pid_t g_forwarder;
	g_forwarder = 0;
	g.on = 0;
	memset(g_served, 0, sizeof g_served);
	for (int i = 0; i < MAX_SERVED; i++)
		g_served[i].fd[0] = g_served[i].fd[1] = g_served[i].fd[2] = -1;
	struct process_spec proc;
	if (spec_parse_process_text(json, strlen(json), &proc, &e) < 0) {
		event_error(evt, e.msg);
		_exit(EXIT_SETUP);
	}
	exec_defaults(&proc, g.spec);
	if (join_cgroups_self(g.v1, g.nv1, &e) < 0) {
		event_error(evt, e.msg);
		_exit(EXIT_SETUP);
	}
	if (g.cgfd >= 0 && !joined && join_cgroup_fd(g.cgfd, g.v2, &e) < 0) {
		event_error(evt, e.msg);
		_exit(EXIT_SETUP);
	}
	_exit(exec_enter(g.spec, &proc, g.init, -1, NULL, evt));
}

void served_start(int ctlfd, const char *args)
{
	char *end;
	long id = strtol(args, &end, 10);
	if (end == args || *end != ' ')
		return;
	const char *json = end + 1;
	struct served *x = NULL;
	for (int i = 0; i < MAX_SERVED && !x; i++)
		if (g_served[i].pid == 0 && g_served[i].fd[0] < 0 && g_served[i].fd[2] < 0)
			x = &g_served[i];
	if (!g.on || !x || !g.started) {
		emit_error(ctlfd, id,
			   !g.on	  ? "exec: not served here"
			   : !g.started ? "exec: the container has not started yet"
					: "exec: too many at once in this container");
		emit_tagged(ctlfd, id, "{\"event\":\"exit\",\"exitCode\":125,\"signal\":null}", 45);
		return;
	}
	int outp[2], errp[2], evtp[2];
	if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, evtp) < 0) {
		emit_error(ctlfd, id, "exec: pipe");
		emit_tagged(ctlfd, id, "{\"event\":\"exit\",\"exitCode\":125,\"signal\":null}", 45);
		return;
	}
	int joined = 0;
	pid_t pid = clone_child(0, g.cgfd, &joined);
	if (pid < 0) {
		char msg[300];
		snprintf(msg, sizeof msg, "exec: start the process in cgroup %s: %s", g.v2 ? g.v2 : "", strerror(errno));
		emit_error(ctlfd, id, msg);
		emit_tagged(ctlfd, id, "{\"event\":\"exit\",\"exitCode\":125,\"signal\":null}", 45);
		close(outp[0]), close(outp[1]), close(errp[0]), close(errp[1]), close(evtp[0]), close(evtp[1]);
		return;
	}
	if (pid == 0) {
		close(outp[0]);
		close(errp[0]);
		close(evtp[0]);
		served_child(json, outp[1], errp[1], evtp[1], joined);
	}
	close(outp[1]);
	close(errp[1]);
	close(evtp[1]);
	x->id = id;
	x->pid = pid;
	x->fd[0] = outp[0];
	x->fd[1] = errp[0];
	x->fd[2] = evtp[0];
	x->len = 0;
	x->skip = 0;
	x->exit_line = NULL;
}

void served_signal(const char *args)
{
	char *end;
	long id = strtol(args, &end, 10);
	long sig = end != args && *end == ' ' ? strtol(end + 1, NULL, 10) : 0;
	if (sig <= 0 || sig >= 65)
		return;
	for (int i = 0; i < MAX_SERVED; i++)
		if (g_served[i].pid > 0 && g_served[i].id == id)
			kill(g_served[i].pid, (int)sig); /* its exec supervisor forwards it; 9 kills it and, by PDEATHSIG, the process */
}

int served_pollfds(struct pollfd *pfd, int max)
{
	int n = 0;
	for (int i = 0; i < MAX_SERVED; i++)
		for (int k = 0; k < 3; k++)
			if (g_served[i].fd[k] >= 0 && n < max) {
				pfd[n].fd = g_served[i].fd[k];
				pfd[n].events = POLLIN;
				pfd[n].revents = 0;
				n++;
			}
	return n;
}

void served_handle(int ctlfd, const struct pollfd *pfd, int n)
{
	for (int j = 0; j < n; j++) {
		if (!pfd[j].revents)
			continue;
		for (int i = 0; i < MAX_SERVED; i++) {
			struct served *x = &g_served[i];
			for (int k = 0; k < 3; k++) {
				if (x->fd[k] != pfd[j].fd)
					continue;
				if (k < 2)
					pump(ctlfd, x, k);
				else
					events(ctlfd, x);
			}
		}
	}
}

/* A child the run supervisor reaped that is not init: an exec supervisor's end. */
int served_reaped(int ctlfd, pid_t pid, int status)
{
	for (int i = 0; i < MAX_SERVED; i++) {
		struct served *x = &g_served[i];
		if (x->pid != pid)
			continue;
		/* Its last events first. */
		while (x->fd[2] >= 0)
			events(ctlfd, x);
		if (!x->exit_line) {
			char line[96];
			int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
			snprintf(line, sizeof line, "{\"event\":\"exit\",\"exitCode\":%d,\"signal\":%s%.0d}", code,
				 WIFSIGNALED(status) ? "" : "null", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
			x->exit_line = strdup(line);
		}
		finish(ctlfd, x);
		return 1;
	}
	return 0;
}

/* The container ended: the execs still there end with it. */
void served_end(int ctlfd)
{
	for (int i = 0; i < MAX_SERVED; i++) {
		struct served *x = &g_served[i];
		if (x->pid <= 0)
			continue;
		int status = 0;
		kill(x->pid, SIGKILL);
		while (waitpid(x->pid, &status, 0) < 0 && errno == EINTR)
			;
		served_reaped(ctlfd, x->pid, status);
	}
}
