/*
 * probe: runs inside a container under test and reports what it sees.
 *
 *   cc -static -O2 -Wall -Wextra -Werror -o probe test/probe/probe.c
 *
 * Modes: report | exit N | signal N | out TEXT ERRTEXT | cat | sleep SECONDS |
 *        ignore-term SECONDS | alloc MB | forks N | orphans N | tree | spin MS
 *
 * The "attempts" in `report` only probe permissions: each one runs in a
 * forked child (a seccomp kill cannot take the report down), never writes to
 * the files it opens, and the mount experiments run in a private copy of the
 * mount namespace whenever the probe is allowed to make one.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>

extern char **environ;

/* ---------------------------------------------------------------- errno -- */

#define E(x) { x, #x }
static const struct { int no; const char *name; } errnames[] = {
    E(EPERM), E(ENOENT), E(ESRCH), E(EINTR), E(EIO), E(ENXIO), E(E2BIG),
    E(ENOEXEC), E(EBADF), E(ECHILD), E(EAGAIN), E(ENOMEM), E(EACCES),
    E(EFAULT), E(ENOTBLK), E(EBUSY), E(EEXIST), E(EXDEV), E(ENODEV),
    E(ENOTDIR), E(EISDIR), E(EINVAL), E(ENFILE), E(EMFILE), E(ENOTTY),
    E(ETXTBSY), E(EFBIG), E(ENOSPC), E(ESPIPE), E(EROFS), E(EMLINK), E(EPIPE),
    E(EDOM), E(ERANGE), E(EDEADLK), E(ENAMETOOLONG), E(ENOLCK), E(ENOSYS),
    E(ENOTEMPTY), E(ELOOP), E(ENOMSG), E(EIDRM), E(ENODATA), E(ETIME),
    E(EPROTO), E(EBADMSG), E(EOVERFLOW), E(EILSEQ), E(EUSERS), E(ENOTSOCK),
    E(EMSGSIZE), E(EPROTOTYPE), E(ENOPROTOOPT), E(EPROTONOSUPPORT),
    E(EOPNOTSUPP), E(EAFNOSUPPORT), E(EADDRINUSE), E(EADDRNOTAVAIL),
    E(ENETDOWN), E(ENETUNREACH), E(ECONNABORTED), E(ECONNRESET), E(ENOBUFS),
    E(EISCONN), E(ENOTCONN), E(ETIMEDOUT), E(ECONNREFUSED), E(EHOSTUNREACH),
    E(EALREADY), E(EINPROGRESS), E(ESTALE), E(EDQUOT), E(ECANCELED),
    E(ENOKEY), E(EKEYEXPIRED), E(EKEYREVOKED), E(EKEYREJECTED),
    E(EOWNERDEAD), E(ENOTRECOVERABLE), E(ERFKILL), E(EHWPOISON),
};

static const char *errname(int e) {
    static char buf[16];
    for (size_t i = 0; i < sizeof errnames / sizeof errnames[0]; i++)
        if (errnames[i].no == e) return errnames[i].name;
    snprintf(buf, sizeof buf, "E%d", e);
    return buf;
}

/* ----------------------------------------------------------------- JSON -- */

static int depth, after_key, first[64];

static void sep(void) {
    if (after_key) { after_key = 0; return; }
    if (depth > 0 && !first[depth]) putchar(',');
    first[depth] = 0;
}

/* A quoted string; invalid UTF-8 bytes become U+FFFD. */
static void quote(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    putchar('"');
    while (*p) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') { putchar('\\'); putchar(c); p++; continue; }
        if (c < 0x20 || c == 0x7f) { printf("\\u%04x", c); p++; continue; }
        if (c < 0x80) { putchar(c); p++; continue; }
        int n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
              : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
        int ok = n > 0;
        for (int i = 1; ok && i < n; i++) ok = (p[i] & 0xc0) == 0x80;
        if (ok) { fwrite(p, 1, n, stdout); p += n; }
        else { fputs("\\ufffd", stdout); p++; }
    }
    putchar('"');
}

static void open_(char c) { sep(); putchar(c); first[++depth] = 1; }
static void close_(char c) { putchar(c); depth--; }
static void key(const char *k) { sep(); quote(k); putchar(':'); after_key = 1; }
static void jnull(void) { sep(); fputs("null", stdout); }
static void jstr(const char *s) { if (s) { sep(); quote(s); } else jnull(); }
static void jint(long long v) { sep(); printf("%lld", v); }
static void jbool(int b) { sep(); fputs(b ? "true" : "false", stdout); }
static void kstr(const char *k, const char *v) { key(k); jstr(v); }
static void kint(const char *k, long long v) { key(k); jint(v); }

/* ---------------------------------------------------------------- files -- */

/* Reads at most max bytes of path into a NUL-terminated malloc'd buffer. */
static char *slurp(const char *path, size_t max, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    while (buf && n < max) {
        if (n == cap) {
            char *b = realloc(buf, (cap *= 2) + 1);
            if (!b) { free(buf); buf = NULL; break; }
            buf = b;
        }
        size_t want = cap - n < max - n ? cap - n : max - n;
        ssize_t r = read(fd, buf + n, want);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { int e = errno; free(buf); close(fd); errno = e; return NULL; }
        if (r == 0) break;
        n += r;
    }
    close(fd);
    if (buf) buf[n] = 0;
    if (len) *len = n;
    return buf;
}

/* First line of a file, trailing whitespace removed; NULL when unreadable. */
static char *read_line(const char *path) {
    char *s = slurp(path, 4096, NULL);
    if (!s) return NULL;
    size_t n = strcspn(s, "\n");
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) n--;
    s[n] = 0;
    return s;
}

static void emit_lines(const char *path) {
    char *s = slurp(path, 1 << 20, NULL), *save = NULL;
    if (!s) { jnull(); return; }
    open_('[');
    for (char *l = strtok_r(s, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) jstr(l);
    close_(']');
    free(s);
}

/* In-place decoding of the \ooo escapes used in /proc/self/mountinfo. */
static char *unescape(char *s) {
    char *o = s;
    for (char *p = s; *p; ) {
        if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7'
            && p[3] >= '0' && p[3] <= '7') {
            *o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
            p += 4;
        } else *o++ = *p++;
    }
    *o = 0;
    return s;
}

static int is_number(const char *s) {
    if (!*s) return 0;
    for (; *s; s++) if (*s < '0' || *s > '9') return 0;
    return 1;
}

static int cmp_long(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

/* ------------------------------------------------------- report: state -- */

/* The value of "Key:\tvalue" in a /proc status file, copied into out. */
static const char *status_field(const char *s, const char *k, char *out, size_t outsz) {
    size_t kl = strlen(k);
    for (const char *l = s; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        if (strncmp(l, k, kl) != 0 || l[kl] != ':') continue;
        const char *v = l + kl + 1;
        v += strspn(v, " \t");
        snprintf(out, outsz, "%.*s", (int)strcspn(v, "\n"), v);
        return out;
    }
    return NULL;
}

static void emit_status(void) {
    static const char *keys[] = {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                                 "NoNewPrivs", "Seccomp"};
    char *s = slurp("/proc/self/status", 1 << 16, NULL), val[256];
    open_('{');
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        kstr(keys[i], s ? status_field(s, keys[i], val, sizeof val) : NULL);
    close_('}');
    free(s);
}

static void emit_cmdline(const char *path) {
    size_t n;
    char *s = slurp(path, 1 << 16, &n);
    if (!s) { jnull(); return; }
    open_('[');
    for (size_t i = 0; i < n; i += strlen(s + i) + 1) jstr(s + i);
    close_(']');
    free(s);
}

static void emit_pids(void) {
    DIR *d = opendir("/proc");
    if (!d) { jnull(); return; }
    size_t n = 0, cap = 64;
    long *pids = malloc(cap * sizeof *pids);
    for (struct dirent *e; pids && (e = readdir(d)); ) {
        if (!is_number(e->d_name)) continue;
        if (n == cap) {
            long *p = realloc(pids, (cap *= 2) * sizeof *pids);
            if (!p) break;
            pids = p;
        }
        pids[n++] = atol(e->d_name);
    }
    closedir(d);
    qsort(pids, n, sizeof *pids, cmp_long);
    open_('[');
    for (size_t i = 0; i < n; i++) jint(pids[i]);
    close_(']');
    free(pids);
}

static int iface_up(int sock, const char *name) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name);
    return sock >= 0 && ioctl(sock, SIOCGIFFLAGS, &ifr) == 0 && (ifr.ifr_flags & IFF_UP);
}

static void emit_iface(int sock, const char *name) {
    open_('{');
    kstr("name", name);
    key("up"); jbool(iface_up(sock, name));
    close_('}');
}

static void emit_interfaces(void) {
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    char *s = slurp("/proc/net/dev", 1 << 20, NULL), *save = NULL;
    open_('[');
    if (s) {
        int line = 0;
        for (char *l = strtok_r(s, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
            char *colon = strchr(l, ':');
            if (line++ < 2 || !colon) continue;      /* two header lines */
            *colon = 0;
            emit_iface(sock, l + strspn(l, " "));
        }
        free(s);
    } else {
        struct if_nameindex *ifs = if_nameindex();
        for (struct if_nameindex *i = ifs; i && i->if_name; i++) emit_iface(sock, i->if_name);
        if (ifs) if_freenameindex(ifs);
    }
    close_(']');
    if (sock >= 0) close(sock);
}

static void emit_mounts(void) {
    char *s = slurp("/proc/self/mountinfo", 8 << 20, NULL), *save = NULL;
    if (!s) { jnull(); return; }
    open_('[');
    for (char *l = strtok_r(s, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        char *f[64], *fs = NULL;
        int n = 0, dash = -1;
        for (char *t = strtok_r(l, " ", &fs); t && n < 64; t = strtok_r(NULL, " ", &fs)) {
            if (dash < 0 && n >= 6 && strcmp(t, "-") == 0) dash = n;
            f[n++] = t;
        }
        if (dash < 0 || n < dash + 3) continue;
        open_('{');
        kstr("target", unescape(f[4]));
        kstr("fstype", unescape(f[dash + 1]));
        kstr("options", f[5]);
        kstr("source", unescape(f[dash + 2]));
        kstr("superOptions", dash + 3 < n ? f[dash + 3] : "");
        close_('}');
    }
    close_(']');
    free(s);
}

static void emit_rlimit(const char *name, int res) {
    struct rlimit rl;
    key(name);
    if (getrlimit(res, &rl) != 0) { jnull(); return; }
    open_('[');
    jint(rl.rlim_cur == RLIM_INFINITY ? -1 : (long long)rl.rlim_cur);
    jint(rl.rlim_max == RLIM_INFINITY ? -1 : (long long)rl.rlim_max);
    close_(']');
}

static void emit_ns(void) {
    static const char *ns[] = {"mnt", "pid", "net", "uts", "ipc", "cgroup"};
    open_('{');
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        char path[64], target[256];
        snprintf(path, sizeof path, "/proc/self/ns/%s", ns[i]);
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n >= 0) target[n] = 0;
        kstr(ns[i], n >= 0 ? target : NULL);
    }
    close_('}');
}

/* "absent", "empty", "readable:<bytes or entries>" or "error:<ERRNO>". */
static void masked_state(const char *path, char *out, size_t outsz) {
    struct stat st;
    long count = 0;
    if (stat(path, &st) != 0) {
        snprintf(out, outsz, errno == ENOENT ? "absent" : "error:%s", errname(errno));
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) { snprintf(out, outsz, "error:%s", errname(errno)); return; }
        for (struct dirent *e; (e = readdir(d)); )
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) count++;
        closedir(d);
    } else {
        char buf[4096];
        int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) { snprintf(out, outsz, "error:%s", errname(errno)); return; }
        for (ssize_t r; count < 65536 && (r = read(fd, buf, sizeof buf)) != 0; ) {
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) {
                if (count == 0) { snprintf(out, outsz, "error:%s", errname(errno)); close(fd); return; }
                break;
            }
            count += r;
        }
        close(fd);
    }
    if (count) snprintf(out, outsz, "readable:%ld", count);
    else snprintf(out, outsz, "empty");
}

static void emit_masked(void) {
    static const char *paths[] = {
        "/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
        "/proc/scsi", "/proc/acpi", "/sys/firmware", "/proc/asound",
        "/proc/latency_stats", "/proc/timer_stats", "/sys/devices/virtual/powercap"};
    open_('{');
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char state[64];
        masked_state(paths[i], state, sizeof state);
        kstr(paths[i], state);
    }
    close_('}');
}

static void emit_limits(void) {
    static const char *files[] = {
        "memory.max", "memory.swap.max", "pids.max", "cpu.max", "cpu.weight",
        "memory/memory.limit_in_bytes", "memory/memory.memsw.limit_in_bytes",
        "pids/pids.max", "cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us", "cpu/cpu.shares"};
    open_('{');
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[128];
        snprintf(path, sizeof path, "/sys/fs/cgroup/%s", files[i]);
        char *v = read_line(path);
        kstr(files[i], v);
        free(v);
    }
    close_('}');
}

/* ---------------------------------------------------- report: attempts -- */

static const char *sys_write_target;

static int fail(long r) { return r < 0 ? errno : 0; }
static int fd_ok(long fd) { if (fd < 0) return errno; close((int)fd); return 0; }

/* A private copy of the mount namespace, so that mount experiments cannot leak
 * into the one the probe was started in. Returns 0 when isolated. */
static int isolate_mounts(void) {
    if (unshare(CLONE_NEWNS) != 0) return -1;
    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);   /* EINVAL in a chroot */
    return 0;
}

static int a_mount(void) {
    isolate_mounts();
    if (mount("none", "/tmp", "tmpfs", 0, NULL) != 0) return errno;
    umount2("/tmp", MNT_DETACH);
    return 0;
}

static int a_umount(void) {
    if (isolate_mounts() == 0) mount(NULL, "/proc", NULL, MS_REC | MS_PRIVATE, NULL);
    return fail(umount2("/proc", MNT_DETACH));
}

static int a_unshare_user(void) { return fail(unshare(CLONE_NEWUSER)); }
static int a_unshare_net(void) { return fail(unshare(CLONE_NEWNET)); }

static int a_clone_user(void) {
    long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (pid < 0) return errno;
    if (pid == 0) _exit(0);
    waitpid((pid_t)pid, NULL, 0);
    return 0;
}

static int a_sysrq(void) { return fd_ok(open("/proc/sysrq-trigger", O_WRONLY | O_CLOEXEC)); }
static int a_sys_write(void) {
    return sys_write_target ? fd_ok(open(sys_write_target, O_WRONLY | O_CLOEXEC)) : ENOENT;
}
static int a_proc_sys_write(void) {
    return fd_ok(open("/proc/sys/kernel/domainname", O_WRONLY | O_CLOEXEC));
}
static int a_init_module(void) { return fail(syscall(SYS_init_module, NULL, 0, "")); }
static int a_finit_module(void) { return fail(syscall(SYS_finit_module, -1, "", 0)); }
/* 17 > KEXEC_SEGMENT_MAX: EPERM when denied, EINVAL when allowed. (0 segments
 * would unload a loaded crash kernel.) */
static int a_kexec_load(void) { return fail(syscall(SYS_kexec_load, 0, 17, NULL, 0)); }

static int a_bpf(void) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    return fd_ok(syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr));
}

static int a_perf_event_open(void) {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    return fd_ok(syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0));
}

static int a_userfaultfd(void) { return fd_ok(syscall(SYS_userfaultfd, O_CLOEXEC)); }
static int a_keyctl(void) {
    return fail(syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
}
static int a_add_key(void) {
    return fail(syscall(SYS_add_key, "user", "petri-probe", "x", 1, KEY_SPEC_PROCESS_KEYRING));
}
static int a_swapoff(void) { return fail(swapoff("/nonexistent")); }
/* Bogus magic: EPERM when denied, EINVAL when allowed. */
static int a_reboot(void) { return fail(syscall(SYS_reboot, 0, 0, 0, NULL)); }
/* A missing file instead of NULL (which would switch accounting off):
 * EPERM when denied, ENOENT when allowed. */
static int a_acct(void) { return fail(acct("/nonexistent-probe-acct")); }
static int a_settimeofday(void) { return fail(syscall(SYS_settimeofday, NULL, NULL)); }
static int a_clock_settime(void) {
    struct timespec ts = {0, 0};
    return fail(syscall(SYS_clock_settime, CLOCK_MONOTONIC, &ts));
}
static int a_pivot_root(void) {
    return fail(syscall(SYS_pivot_root, "/nonexistent-a", "/nonexistent-b"));
}
/* A well-formed but bogus handle (inode 0) against the cwd, so the call gets
 * past the argument checks to the permission check (kernels >= 6.12 check the
 * handle and the fd first): EPERM when denied, ESTALE or the like when allowed. */
static int a_open_by_handle_at(void) {
    struct { struct file_handle h; unsigned char bytes[8]; } fh;
    memset(&fh, 0, sizeof fh);
    fh.h.handle_bytes = 8;
    fh.h.handle_type = 1;                     /* FILEID_INO32_GEN */
    return fd_ok(syscall(SYS_open_by_handle_at, AT_FDCWD, &fh.h, O_RDONLY));
}
static int a_proc1_exe(void) { return fd_ok(open("/proc/1/exe", O_RDONLY | O_CLOEXEC)); }
static int a_setns(void) {
    int fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    return fail(setns(fd, CLONE_NEWNET));
}

/* Runs fn in a child; "ok", the errno name, or "signal:N" if it was killed. */
static void in_child(int (*fn)(void), char *out, size_t outsz) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { snprintf(out, outsz, "fork:%s", errname(errno)); return; }
    if (pid == 0) _exit(fn() & 0xff);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) { snprintf(out, outsz, "wait:%s", errname(errno)); return; }
    if (WIFSIGNALED(st)) snprintf(out, outsz, "signal:%d", WTERMSIG(st));
    else snprintf(out, outsz, "%s", WEXITSTATUS(st) ? errname(WEXITSTATUS(st)) : "ok");
}

static void proc1_exe_link(char *out, size_t outsz) {
    char target[PATH_MAX];
    ssize_t n = readlink("/proc/1/exe", target, sizeof target - 1);
    if (n < 0) { snprintf(out, outsz, "%s", errname(errno)); return; }
    target[n] = 0;
    snprintf(out, outsz, "ok:%s", target);
}

/* "ok" when a byte was read, "empty" when the file reads as empty. */
static void proc_kcore(char *out, size_t outsz) {
    char c;
    int fd = open("/proc/kcore", O_RDONLY | O_CLOEXEC);
    if (fd < 0) { snprintf(out, outsz, "%s", errname(errno)); return; }
    ssize_t r = read(fd, &c, 1);
    snprintf(out, outsz, "%s", r == 1 ? "ok" : r == 0 ? "empty" : errname(errno));
    close(fd);
}

static void mknod_disk(char *out, size_t outsz) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/.probe-sda-%d", (int)getpid());
    unlink(path);
    if (mknod(path, S_IFBLK | 0600, makedev(8, 0)) != 0) {
        snprintf(out, outsz, "mknod:%s", errname(errno));
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) snprintf(out, outsz, "open:%s", errname(errno));
    else { snprintf(out, outsz, "ok"); close(fd); }
    unlink(path);
}

static const struct { const char *name; int (*fn)(void); } attempts[] = {
    {"mount", a_mount}, {"unshareUser", a_unshare_user}, {"unshareNet", a_unshare_net},
    {"cloneUser", a_clone_user}, {"sysrq", a_sysrq}, {"sysWrite", a_sys_write},
    {"procSysWrite", a_proc_sys_write}, {"initModule", a_init_module},
    {"finitModule", a_finit_module}, {"kexecLoad", a_kexec_load}, {"bpf", a_bpf},
    {"perfEventOpen", a_perf_event_open}, {"userfaultfd", a_userfaultfd},
    {"keyctl", a_keyctl}, {"addKey", a_add_key}, {"swapoff", a_swapoff},
    {"reboot", a_reboot}, {"acct", a_acct}, {"settimeofday", a_settimeofday},
    {"clockSettime", a_clock_settime}, {"pivotRoot", a_pivot_root},
    {"openByHandleAt", a_open_by_handle_at}, {"proc1Exe", a_proc1_exe}, {"setns", a_setns},
    {"umount", a_umount},   /* last: without a private mount namespace it is for real */
};

static void emit_attempts(void) {
    static const char *sys_files[] = {"/sys/kernel/mm/transparent_hugepage/enabled",
                                      "/sys/kernel/profiling", "/sys/kernel/uevent_helper"};
    char res[PATH_MAX + 8];
    for (size_t i = 0; !sys_write_target && i < sizeof sys_files / sizeof sys_files[0]; i++)
        if (access(sys_files[i], F_OK) == 0) sys_write_target = sys_files[i];
    open_('{');
    proc1_exe_link(res, sizeof res); kstr("proc1ExeLink", res);
    proc_kcore(res, sizeof res); kstr("procKcore", res);
    mknod_disk(res, sizeof res); kstr("mknodDisk", res);
    for (size_t i = 0; i < sizeof attempts / sizeof attempts[0]; i++) {
        in_child(attempts[i].fn, res, sizeof res);
        kstr(attempts[i].name, res);
    }
    close_('}');
}

static int report(void) {
    char buf[4096];
    static gid_t groups[NGROUPS_MAX];
    int ngroups = getgroups(NGROUPS_MAX, groups);
    mode_t mask = umask(0);
    umask(mask);

    open_('{');
    kint("pid", getpid()); kint("ppid", getppid());
    kint("uid", getuid()); kint("gid", getgid()); kint("euid", geteuid());
    key("groups"); open_('[');
    for (int i = 0; i < ngroups; i++) jint(groups[i]);
    close_(']');
    kstr("hostname", gethostname(buf, sizeof buf) == 0 ? buf : NULL);
    kstr("cwd", getcwd(buf, sizeof buf));
    snprintf(buf, sizeof buf, "%04o", (unsigned)mask);
    kstr("umask", buf);
    key("env"); open_('[');
    for (char **e = environ; e && *e; e++) jstr(*e);
    close_(']');
    key("status"); emit_status();
    char *comm = read_line("/proc/1/comm");
    kstr("pid1Comm", comm);
    free(comm);
    key("pid1Cmdline"); emit_cmdline("/proc/1/cmdline");
    key("pids"); emit_pids();
    key("interfaces"); emit_interfaces();
    key("mounts"); emit_mounts();
    key("cgroup"); emit_lines("/proc/self/cgroup");
    key("rlimits"); open_('{');
    emit_rlimit("nofile", RLIMIT_NOFILE); emit_rlimit("nproc", RLIMIT_NPROC);
    close_('}');
    key("nsInodes"); emit_ns();
    key("masked"); emit_masked();
    key("limits"); emit_limits();
    key("attempts"); emit_attempts();   /* last: nothing is read after them */
    kstr("sysWriteTarget", sys_write_target);
    close_('}');
    putchar('\n');
    return fflush(stdout) == 0 ? 0 : 1;
}

/* ------------------------------------------------------ the other modes -- */

static void write_all(int fd, const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        s += w; n -= (size_t)w;
    }
}

static void say(const char *s) { write_all(1, s, strlen(s)); }

static void sleep_seconds(double secs) {
    struct timespec ts = {(time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static double now_ms(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int mode_out(const char *text, const char *errtext) {
    char out[4096], err[4096];
    int no = snprintf(out, sizeof out, "%s\n", text), ne = snprintf(err, sizeof err, "%s\n", errtext);
    for (int i = 0; i < 3; i++) {
        write_all(1, out, (size_t)no < sizeof out ? (size_t)no : sizeof out - 1);
        write_all(2, err, (size_t)ne < sizeof err ? (size_t)ne : sizeof err - 1);
    }
    return 0;
}

static int mode_cat(void) {
    char buf[65536];
    for (;;) {
        ssize_t r = read(0, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return r < 0;
        write_all(1, buf, (size_t)r);
    }
}

static char *volatile alloc_sink;

static int mode_alloc(long mb) {
    char line[64];
    for (long i = 1; i <= mb; i++) {
        char *p = malloc(1 << 20);
        if (!p) { fprintf(stderr, "malloc failed after %ld MiB\n", i - 1); return 1; }
        memset(p, 0xa5, 1 << 20);
        alloc_sink = p;                       /* keeps the compiler from eliding it */
        if (i % 16 == 0 || i == mb) {
            snprintf(line, sizeof line, "allocated %ld\n", i);
            say(line);
        }
    }
    return 0;
}

static int mode_forks(int n) {
    pid_t *kids = calloc(n > 0 ? (size_t)n : 1, sizeof *kids);
    int k = 0;
    const char *err = NULL;
    fflush(stdout);
    while (kids && k < n) {
        pid_t p = fork();
        if (p < 0) { err = errname(errno); break; }
        if (p == 0) { prctl(PR_SET_PDEATHSIG, SIGKILL); sleep(30); _exit(0); }
        kids[k++] = p;
    }
    printf("{\"forked\":%d,\"error\":", k);
    if (err) quote(err); else fputs("null", stdout);
    puts("}");
    fflush(stdout);
    for (int i = 0; i < k; i++) kill(kids[i], SIGKILL);
    for (int i = 0; i < k; i++) waitpid(kids[i], NULL, 0);
    free(kids);
    return 0;
}

static int count_zombies(void) {
    DIR *d = opendir("/proc");
    int z = 0;
    for (struct dirent *e; d && (e = readdir(d)); ) {
        char path[300];
        if (!is_number(e->d_name)) continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        char *s = slurp(path, 4096, NULL);
        char *rp = s ? strrchr(s, ')') : NULL;
        if (rp && rp[1] == ' ' && rp[2] == 'Z') z++;
        free(s);
    }
    if (d) closedir(d);
    return z;
}

static int mode_orphans(int n) {
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) { perror("fork"); return 1; }
    if (child == 0) {
        for (int i = 0; i < n; i++) if (fork() == 0) _exit(0);
        _exit(0);                             /* grandchildren reparent to PID 1 */
    }
    waitpid(child, NULL, 0);
    sleep_seconds(0.3);
    printf("{\"zombies\":%d}\n", count_zombies());
    return 0;
}

static int mode_tree(void) {
    int fds[2];
    char c;
    if (pipe(fds) != 0) { perror("pipe"); return 1; }
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) { perror("fork"); return 1; }
    if (child == 0) {
        prctl(PR_SET_NAME, "probe-sleeper");
        pid_t grandchild = fork();
        if (grandchild == 0) prctl(PR_SET_NAME, "probe-sleeper");
        write_all(fds[1], "x", 1);            /* one byte from each sleeper */
        close(fds[0]); close(fds[1]);
        sleep_seconds(1000);
        _exit(0);
    }
    close(fds[1]);
    for (int got = 0; got < 2 && read(fds[0], &c, 1) == 1; got++) {}
    close(fds[0]);
    say("tree ready\n");
    sleep_seconds(1000);
    return 0;
}

static int mode_spin(double ms) {
    double cpu0 = now_ms(CLOCK_PROCESS_CPUTIME_ID), wall0 = now_ms(CLOCK_MONOTONIC);
    volatile unsigned long x = 0;
    while (now_ms(CLOCK_PROCESS_CPUTIME_ID) - cpu0 < ms)
        for (int i = 0; i < 10000; i++) x += (unsigned long)i;
    printf("{\"cpuMs\":%.0f,\"wallMs\":%.0f}\n",
           now_ms(CLOCK_PROCESS_CPUTIME_ID) - cpu0, now_ms(CLOCK_MONOTONIC) - wall0);
    return 0;
}

/* unix PATH MESSAGE: connects to the unix socket PATH, sends MESSAGE, ends its side, prints the reply. */
static int mode_unix(const char *path, const char *message) {
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof addr.sun_path) { fprintf(stderr, "probe: path too long\n"); return 1; }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        fprintf(stderr, "probe: connect %s: %s\n", path, strerror(errno));
        return 1;
    }
    size_t len = strlen(message);
    if (write(fd, message, len) != (ssize_t)len || shutdown(fd, SHUT_WR) < 0) {
        fprintf(stderr, "probe: write %s: %s\n", path, strerror(errno));
        return 1;
    }
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) fwrite(buf, 1, (size_t)n, stdout);
    return n < 0 ? 1 : 0;
}

static int usage(const char *msg) {
    fprintf(stderr, "probe: %s\nmodes: report | exit N | signal N | out TEXT ERRTEXT | cat |"
            " sleep S | ignore-term S | alloc MB | forks N | orphans N | tree | spin MS | unix PATH MESSAGE\n", msg);
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage("missing mode");
    const char *m = argv[1], *a = argc > 2 ? argv[2] : NULL;
    int need_arg = strcmp(m, "report") && strcmp(m, "cat") && strcmp(m, "tree");
    if (need_arg && !a) return usage("missing argument");

    if (!strcmp(m, "report")) return report();
    if (!strcmp(m, "exit")) return atoi(a) & 0xff;
    if (!strcmp(m, "signal")) {
        raise(atoi(a));
        kill(getpid(), atoi(a));
        sleep(1);
        return 99;
    }
    if (!strcmp(m, "out")) return argc > 3 ? mode_out(a, argv[3]) : usage("missing ERRTEXT");
    if (!strcmp(m, "cat")) return mode_cat();
    if (!strcmp(m, "sleep")) { sleep_seconds(atof(a)); return 0; }
    if (!strcmp(m, "ignore-term")) {
        signal(SIGTERM, SIG_IGN);
        say("ready\n");
        sleep_seconds(atof(a));
        return 0;
    }
    if (!strcmp(m, "alloc")) return mode_alloc(atol(a));
    if (!strcmp(m, "forks")) return mode_forks(atoi(a));
    if (!strcmp(m, "orphans")) return mode_orphans(atoi(a));
    if (!strcmp(m, "tree")) return mode_tree();
    if (!strcmp(m, "spin")) return mode_spin(atof(a));
    if (!strcmp(m, "unix")) return argc > 3 ? mode_unix(a, argv[3]) : usage("missing MESSAGE");
    fprintf(stderr, "probe: unknown mode: %s\n", m);
    return 2;
}
