/* devices_bpf.c: linux.resources.devices -> BPF_PROG_TYPE_CGROUP_DEVICE
 * program, attached to a cgroup v2 directory with BPF_F_ALLOW_MULTI.
 * Rules are evaluated last to first and the first match decides (later
 * rules win, as with runc's emulator); no match denies. An allow rule
 * matches when it grants every requested access; a deny rule matches when
 * it denies any of them. */
#define _GNU_SOURCE
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define INSN(c, d, s, o, i) ((struct bpf_insn){ .code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i) })
#define LDX_W(d, s, o) INSN(BPF_LDX | BPF_MEM | BPF_W, d, s, o, 0)
#define MOV32_REG(d, s) INSN(BPF_ALU | BPF_MOV | BPF_X, d, s, 0, 0)
#define MOV64_IMM(d, i) INSN(BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, i)
#define AND32_IMM(d, i) INSN(BPF_ALU | BPF_AND | BPF_K, d, 0, 0, i)
#define RSH32_IMM(d, i) INSN(BPF_ALU | BPF_RSH | BPF_K, d, 0, 0, i)
#define JNE32_IMM(d, i, o) INSN(BPF_JMP32 | BPF_JNE | BPF_K, d, 0, o, i)
#define JEQ32_IMM(d, i, o) INSN(BPF_JMP32 | BPF_JEQ | BPF_K, d, 0, o, i)
#define EXIT() INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)

#define ACC_ALL (BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE)

static long sys_bpf(int cmd, union bpf_attr *attr)
{
	return syscall(SYS_bpf, cmd, attr, sizeof *attr);
}

/* Loaded programs, kept by the fork server (serve.c) and inherited by each
 * runner it forks: loading and JIT-compiling the same filter for every
 * container costs more than the rest of the cgroup setup. A runner that
 * loads a program the table lacks sends it (its instructions, and the fd by
 * SCM_RIGHTS) to the server, which adds it for the runners forked later. */
#define DEVCACHE_MAX 8
#define DEVCACHE_INSNS_MAX 4096
static struct {
	size_t n;
	struct bpf_insn *insns;
	int fd;
} devcache[DEVCACHE_MAX];
static int ndevcache;
static int devcache_sock = -1;

void devices_bpf_cache_use(int sock)
{
	devcache_sock = sock;
}

void devices_bpf_cache_fds(int *fds, int *nfds)
{
	*nfds = 0;
	for (int i = 0; i < ndevcache; i++)
		fds[(*nfds)++] = devcache[i].fd;
	if (devcache_sock >= 0)
		fds[(*nfds)++] = devcache_sock;
}

void devices_bpf_cache_close(void)
{
	for (int i = 0; i < ndevcache; i++)
		close(devcache[i].fd);
	ndevcache = 0;
	if (devcache_sock >= 0)
		close(devcache_sock);
	devcache_sock = -1;
}

static int devcache_find(const struct bpf_insn *p, size_t n)
{
	for (int i = 0; i < ndevcache; i++)
		if (devcache[i].n == n && memcmp(devcache[i].insns, p, n * sizeof *p) == 0)
			return devcache[i].fd;
	return -1;
}

int devices_bpf_cache_recv(int sock)
{
	static struct bpf_insn buf[DEVCACHE_INSNS_MAX];
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} c;
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof buf };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = c.b, .msg_controllen = sizeof c.b };
	ssize_t len = recvmsg(sock, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (len <= 0)
		return len == 0 ? -1 : (errno == EAGAIN || errno == EINTR ? 0 : -1);
	struct cmsghdr *h = CMSG_FIRSTHDR(&m);
	if (!h || h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS || h->cmsg_len != CMSG_LEN(sizeof(int)))
		return 0;
	int fd;
	memcpy(&fd, CMSG_DATA(h), sizeof fd);
	size_t n = (size_t)len / sizeof *buf;
	struct bpf_insn *copy = NULL;
	if ((m.msg_flags & MSG_TRUNC) || (size_t)len % sizeof *buf || ndevcache == DEVCACHE_MAX ||
	    devcache_find(buf, n) >= 0 || !(copy = malloc((size_t)len))) {
		close(fd);
		return 0;
	}
	memcpy(copy, buf, (size_t)len);
	devcache[ndevcache].n = n;
	devcache[ndevcache].insns = copy;
	devcache[ndevcache++].fd = fd;
	return 0;
}

static void devcache_offer(const struct bpf_insn *p, size_t n, int prog)
{
	if (devcache_sock < 0 || n > DEVCACHE_INSNS_MAX)
		return;
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} c;
	memset(&c, 0, sizeof c);
	struct iovec iov = { .iov_base = (void *)p, .iov_len = n * sizeof *p };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = c.b, .msg_controllen = sizeof c.b };
	struct cmsghdr *h = CMSG_FIRSTHDR(&m);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(h), &prog, sizeof prog);
	(void)sendmsg(devcache_sock, &m, MSG_DONTWAIT | MSG_NOSIGNAL); /* best effort: a full queue only misses the cache */
}

/* 0, or the errno of opening the cgroup (negated) or of attaching to it. */
static int attach(int prog, const char *dir)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	union bpf_attr attr;
	memset(&attr, 0, sizeof attr);
	attr.target_fd = (uint32_t)dfd;
	attr.attach_bpf_fd = (uint32_t)prog;
	attr.attach_type = BPF_CGROUP_DEVICE;
	attr.attach_flags = BPF_F_ALLOW_MULTI;
	int r = (int)sys_bpf(BPF_PROG_ATTACH, &attr);
	int err = errno;
	close(dfd);
	return r < 0 ? err : 0;
}

static int attach_err(int r, const char *dir, struct rerr *e)
{
	if (r < 0)
		return rerr_set(e, -r, "open cgroup %s", dir);
	return r ? rerr_set(e, r, "attach the device filter to %s", dir) : 0;
}

int devices_bpf_attach(const struct spec *s, const char *dir, struct rerr *e)
{
	/* 5 prologue + at most 9 per rule + 2 epilogue */
	struct bpf_insn *p = calloc(7 + 9 * s->ndevices, sizeof *p);
	size_t n = 0;
	int complete = 0;
	if (!p)
		return rerr_set(e, ENOMEM, "device filter");
	/* r2 = access, r3 = type, r4 = major, r5 = minor */
	p[n++] = LDX_W(BPF_REG_2, BPF_REG_1, 0);
	p[n++] = MOV32_REG(BPF_REG_3, BPF_REG_2);
	p[n++] = AND32_IMM(BPF_REG_3, 0xffff);
	p[n++] = RSH32_IMM(BPF_REG_2, 16);
	p[n++] = LDX_W(BPF_REG_4, BPF_REG_1, 4);
	p[n++] = LDX_W(BPF_REG_5, BPF_REG_1, 8);
	for (size_t i = s->ndevices; i-- > 0;) {
		const struct device_rule *r = &s->devices[i];
		size_t jumps[4], nj = 0;
		if (r->type != 'a') {
			jumps[nj++] = n;
			p[n++] = JNE32_IMM(BPF_REG_3, r->type == 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR, 0);
		}
		if ((r->access & ACC_ALL) != ACC_ALL) {
			p[n++] = MOV32_REG(BPF_REG_1, BPF_REG_2);
			if (r->allow) {
				p[n++] = AND32_IMM(BPF_REG_1, (int32_t)(~r->access & ACC_ALL));
				jumps[nj++] = n;
				p[n++] = JNE32_IMM(BPF_REG_1, 0, 0);
			} else {
				p[n++] = AND32_IMM(BPF_REG_1, (int32_t)r->access);
				jumps[nj++] = n;
				p[n++] = JEQ32_IMM(BPF_REG_1, 0, 0);
			}
		}
		if (r->major >= 0) {
			jumps[nj++] = n;
			p[n++] = JNE32_IMM(BPF_REG_4, (int32_t)(uint32_t)r->major, 0);
		}
		if (r->minor >= 0) {
			jumps[nj++] = n;
			p[n++] = JNE32_IMM(BPF_REG_5, (int32_t)(uint32_t)r->minor, 0);
		}
		p[n++] = MOV64_IMM(BPF_REG_0, r->allow ? 1 : 0);
		p[n++] = EXIT();
		for (size_t j = 0; j < nj; j++)
			p[jumps[j]].off = (int16_t)(n - jumps[j] - 1);
		if (nj == 0) { /* matches everything: the rest is unreachable */
			complete = 1;
			break;
		}
	}
	if (!complete) { /* no rule matched: deny */
		p[n++] = MOV64_IMM(BPF_REG_0, 0);
		p[n++] = EXIT();
	}

	union bpf_attr attr;
	char log[4096];
	int cached = devcache_find(p, n);
	if (cached >= 0) {
		/* EINVAL: this very program is attached already (a restarted
		 * container's cgroup keeps its filter); a fresh copy goes beside it. */
		int r = attach(cached, dir);
		if (r != EINVAL) {
			free(p);
			return attach_err(r, dir, e);
		}
	}
	memset(&attr, 0, sizeof attr);
	log[0] = 0;
	attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
	attr.insns = (uint64_t)(uintptr_t)p;
	attr.insn_cnt = (uint32_t)n;
	attr.license = (uint64_t)(uintptr_t) "GPL";
	int prog = (int)sys_bpf(BPF_PROG_LOAD, &attr);
	if (prog < 0 && (errno == EACCES || errno == EINVAL)) {
		/* Load again with the verifier log for the message. */
		attr.log_buf = (uint64_t)(uintptr_t)log;
		attr.log_size = sizeof log;
		attr.log_level = 1;
		prog = (int)sys_bpf(BPF_PROG_LOAD, &attr);
	}
	int err = errno;
	if (prog < 0) {
		free(p);
		return rerr_set(e, err, "load the device filter%s%s", log[0] ? ": " : "", log);
	}
	int r = attach(prog, dir);
	if (r == 0 && cached < 0)
		devcache_offer(p, n, prog);
	free(p);
	close(prog);
	return attach_err(r, dir, e);
}
