/* runner.h: shared declarations of petri-runner. */
#ifndef PETRI_RUNNER_H
#define PETRI_RUNNER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "spec.h"

#define PETRI_RUNNER_VERSION "0.1.0"

/* Exit codes (PROTOCOL.md). */
#define EXIT_SETUP 125
#define EXIT_CANNOT_EXEC 126
#define EXIT_NOT_FOUND 127

/* An error as passed up the call chain (crun style): the errno and a
 * message naming the step and path, already including strerror(errnum).
 * This exact struct is also what a child writes to the error pipe. */
struct rerr {
	int code;   /* exit code for the runner: 125, 126, 127 */
	int errnum; /* errno, or 0 */
	char msg[1024];
};

/* Fill e: msg = formatted text + ": " + strerror(errnum) (when errnum != 0).
 * code = 125. Always returns -1. */
int rerr_set(struct rerr *e, int errnum, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Same, with an explicit exit code. */
int rerr_setc(struct rerr *e, int code, int errnum, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* util.c */
int write_all(int fd, const void *buf, size_t len);
char *read_whole_file(const char *path, size_t *len, struct rerr *e);
int write_string_file(const char *path, const char *s, struct rerr *e);
/* Child side: send e over the error pipe and _exit(e->code). */
__attribute__((noreturn)) void child_fail(int errfd, const struct rerr *e);

/* events (main.c) */
void event_started(int ctlfd, pid_t pid);
void event_error(int ctlfd, const char *msg);
/* The longest error event line (the message escaped, 6 bytes per byte at most). */
#define ERROR_EVENT_MAX (64 + 6 * sizeof ((struct rerr *)0)->msg)
/* Writes {"event":"error","message":"..."} (no newline) into buf; returns its length. */
size_t format_error_event(char *buf, size_t size, const char *msg);
void event_exit(int ctlfd, int status);
/* Turns a wait status into the runner's exit code (128+N for signal N). */
int status_exit_code(int status);

/* The runner's argv area (main.c), renamed in init so that the container
 * does not see host paths in /proc/1/cmdline. */
extern char *g_arg_start;
extern size_t g_arg_len;

/* The signals the supervisor and init forward. */
extern const int forwarded_signals[];
extern const size_t n_forwarded_signals;

/* mounts.c: the mount namespace (host side until pivot_root, then inside). */
int setup_rootfs(const struct spec *s, struct rerr *e);

/* container.c: the first child (clone). Never returns. */
struct child_args {
	const struct spec *spec;
	int sync_fd;   /* read end: the supervisor has set up what it must before the child goes on */
	int err_fd;    /* CLOEXEC error pipe (write end) */
	int status_fd; /* init -> supervisor wait status (write end), -1 with --no-init */
	int no_init;
	const sigset_t *orig_mask;
	const char **cgroups; /* --cgroup directories the child joins itself */
	size_t ncgroups;
	int close_fds[8]; /* the supervisor's own fds */
	int nclose;
};
__attribute__((noreturn)) void container_child(const struct child_args *a);

/* init.c: PID 1. Never returns. */
__attribute__((noreturn)) void init_main(const struct spec *s, int err_fd, int status_fd, const sigset_t *orig_mask);

/* process.c: apply the process spec and execve. Never returns; on failure
 * writes the error to err_fd and exits with its code. */
__attribute__((noreturn)) void process_exec(const struct process_spec *p, const struct seccomp_prog *filter,
					   int err_fd, const sigset_t *orig_mask);

/* caps.c */
int caps_bounding(uint64_t keep, int *last, struct rerr *e);
int caps_set(uint64_t eff, uint64_t prm, uint64_t inh, struct rerr *e);
int caps_ambient(uint64_t amb, struct rerr *e);
int caps_drop_all(struct rerr *e);

/* devices_bpf.c */
int devices_bpf_attach(const struct spec *s, const char *cgroup_dir, struct rerr *e);
/* The fork server's table of loaded device programs (see devices_bpf.c). */
void devices_bpf_cache_use(int sock);
#define DEVCACHE_FDS_MAX 9
void devices_bpf_cache_fds(int *fds, int *nfds); /* at most DEVCACHE_FDS_MAX */
void devices_bpf_cache_close(void);
int devices_bpf_cache_recv(int sock);

/* served.c: `exec ID JSON` on a run supervisor's control socket. */
struct pollfd;
void served_setup(const struct spec *s, const char **v1, size_t nv1, int cgfd, const char *v2, pid_t init,
		  const sigset_t *orig, const int *close_fds, int nclose);
/* The container's command was exec'd: execs are served from now on. */
void served_started(void);
void served_start(int ctlfd, const char *args);
void served_signal(const char *args);
int served_pollfds(struct pollfd *pfd, int max);
void served_handle(int ctlfd, const struct pollfd *pfd, int n);
int served_reaped(int ctlfd, pid_t pid, int status);
void served_end(int ctlfd);

/* exec.c */
struct exec_opts {
	pid_t pid;
	const char *config;
	const char *process_json;
	int ctlfd;
	const char **cgroups;
	size_t ncgroups;
};
int exec_main(const struct exec_opts *o);
/* What a process spec leaves out, from the container's (as runc exec does). */
void exec_defaults(struct process_spec *proc, const struct spec *s);
/* Joins the namespaces of target, forks the process (into the cgroup v2
 * directory cgfd when >= 0, named v2), applies proc and supervises it,
 * reporting on ctlfd; returns the exit code for the caller to exit with. */
int exec_enter(const struct spec *s, const struct process_spec *proc, pid_t target, int cgfd, const char *v2,
	       int ctlfd);

/* main.c: the run, exec and network commands (argv[1]); returns the exit code. */
int runner_dispatch(int argc, char **argv);
/* serve.c: `petri-runner serve` (a fork server for the harness); returns the exit code. */
int serve_main(const char *name, int chanfd, char *argv0);

/* fsops.c: `fsops` (JSON ops on stdin) and `scan DIR`; both return the exit code. */
int fsops_main(void);
int scan_main(const char *dir);
long tree_plain(const char *dir, long max);
/* The upper dir `run` reports on at the end (org.petri.report-upper); NULL in forked exec supervisors. */
extern const char *g_report_upper;
int replay_main(int argc, char **argv);

/* forward.c: published ports (run --publish). */
struct publish {
	int container_port;
	int host_port; /* 0: any free port (then the one bound) */
	int fd;        /* the listening socket on 127.0.0.1, or -1 */
};
/* "CONTAINER" or "HOST:CONTAINER"; -1 when malformed. */
int parse_publish(const char *arg, struct publish *p);
/* Binds and listens on 127.0.0.1 (host network namespace) for each. */
int publish_bind(struct publish *p, size_t n, struct rerr *e);
void publish_close(struct publish *p, size_t n);
void event_ports(int ctlfd, const struct publish *p, size_t n);
/* Forks the forwarder into the network namespace of container_pid; returns its pid. */
pid_t forwarder_start(pid_t container_pid, const struct publish *p, size_t n, const sigset_t *orig_mask,
		      struct rerr *e);
/* The forwarder of the running container (0: none): supervise kills and reaps
 * it once the container has ended, before the exit event. */
extern pid_t g_forwarder;

/* network.c: petri networks (a bridge in a network namespace a holder keeps). */
struct attach {
	pid_t holder;   /* the `petri-runner network` process keeping the bridge's namespace */
	uint32_t addr;  /* the container's IPv4 address, network order */
	int prefix;
};
int parse_cidr(const char *s, uint32_t *addr, int *prefix);
/* "PID:ADDR/PREFIX"; -1 when malformed. */
int parse_attach(const char *arg, struct attach *a);
/* `petri-runner network`: returns the exit code. */
int network_main(int ctlfd, const char *address);
/* Attaches the container to each network (eth0, eth1, ...); the caller's
 * network namespace is the same afterwards. */
int network_attach(pid_t container, const struct attach *a, size_t n, struct rerr *e);

/* supervisor helpers (main.c) */
/* Waits for child (init, the command, or the exec'd process): forwards
 * signals, reads the control socket, emits the events; returns the exit
 * code for the runner. status_rd: init's report pipe, or -1. */
int supervise(pid_t child, int ctlfd, int err_rd, int status_rd, int sigfd);
int join_cgroups(const char **dirs, size_t n, pid_t pid, struct rerr *e);
int join_cgroups_self(const char **dirs, size_t n, struct rerr *e);
/* Moves the calling process into the cgroup v2 directory open as dirfd
 * (`0` to its cgroup.procs: the fallback where clone3 cannot place it). */
int join_cgroup_fd(int dirfd, const char *name, struct rerr *e);
/* Creates a child with clone3(CLONE_INTO_CGROUP) when cgfd >= 0 (no
 * migration afterwards, so no cgroup_threadgroup_rwsem write lock), else, or
 * when the kernel has no clone3 / CLONE_INTO_CGROUP, with plain clone;
 * *joined tells which. Fork semantics either way (no new stack). */
pid_t clone_child(unsigned long flags, int cgfd, int *joined);

#endif
