/* network.c: petri networks. `petri-runner network` holds a network
 * namespace of its own with a bridge (br0) in it, for as long as it runs;
 * `run --network PID:ADDR/PREFIX` attaches a container to the network that
 * the holder PID keeps: a veth pair, one end on the bridge in the holder's
 * namespace, the other (eth0, eth1, ...) in the container's with ADDR. All of
 * it happens in namespaces petri made: the host's network configuration is
 * not touched. rtnetlink by hand (libc and kernel headers only). */
#define _GNU_SOURCE
#include "runner.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BRIDGE "br0"

struct nlreq {
	struct nlmsghdr n;
	char buf[1024];
};

static struct rtattr *add_attr(struct nlmsghdr *n, int type, const void *data, size_t len)
{
	struct rtattr *rta = (struct rtattr *)((char *)n + NLMSG_ALIGN(n->nlmsg_len));
	rta->rta_type = (unsigned short)type;
	rta->rta_len = (unsigned short)RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(rta), data, len);
	n->nlmsg_len = NLMSG_ALIGN(n->nlmsg_len) + RTA_ALIGN(rta->rta_len);
	return rta;
}

static void end_nest(struct nlmsghdr *n, struct rtattr *nest)
{
	nest->rta_len = (unsigned short)((char *)n + n->nlmsg_len - (char *)nest);
}

static void *add_raw(struct nlmsghdr *n, size_t len)
{
	void *p = (char *)n + NLMSG_ALIGN(n->nlmsg_len);
	memset(p, 0, len);
	n->nlmsg_len = NLMSG_ALIGN(n->nlmsg_len) + (unsigned)NLMSG_ALIGN(len);
	return p;
}

static void start_msg(struct nlreq *r, int type, int flags)
{
	memset(r, 0, sizeof *r);
	r->n.nlmsg_len = NLMSG_LENGTH(0);
	r->n.nlmsg_type = (unsigned short)type;
	r->n.nlmsg_flags = (unsigned short)(NLM_F_REQUEST | NLM_F_ACK | flags);
}

/* Sends one request on a new rtnetlink socket (of the current network
 * namespace) and waits for its ack. */
static int nl_talk(struct nlreq *r, struct rerr *e, const char *what)
{
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		return rerr_set(e, errno, "%s: netlink socket", what);
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	r->n.nlmsg_seq = 1;
	if (sendto(fd, &r->n, r->n.nlmsg_len, 0, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int err = errno;
		close(fd);
		return rerr_set(e, err, "%s", what);
	}
	char buf[4096];
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof buf, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int err = errno;
			close(fd);
			return rerr_set(e, err, "%s: netlink", what);
		}
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned)n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_ERROR) {
				int err = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
				close(fd);
				return err ? rerr_set(e, err, "%s", what) : 0;
			}
		}
	}
}

static int link_up(int index, struct rerr *e, const char *what)
{
	struct nlreq r;
	start_msg(&r, RTM_NEWLINK, 0);
	struct ifinfomsg *ifi = add_raw(&r.n, sizeof *ifi);
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = index;
	ifi->ifi_flags = IFF_UP;
	ifi->ifi_change = IFF_UP;
	return nl_talk(&r, e, what);
}

static int add_address(int index, uint32_t addr, int prefix, struct rerr *e, const char *what)
{
	struct nlreq r;
	start_msg(&r, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
	struct ifaddrmsg *ifa = add_raw(&r.n, sizeof *ifa);
	ifa->ifa_family = AF_INET;
	ifa->ifa_prefixlen = (unsigned char)prefix;
	ifa->ifa_index = (unsigned)index;
	uint32_t mask = prefix ? htonl(~0u << (32 - prefix)) : 0;
	uint32_t broadcast = (addr & mask) | ~mask;
	add_attr(&r.n, IFA_LOCAL, &addr, 4);
	add_attr(&r.n, IFA_ADDRESS, &addr, 4);
	add_attr(&r.n, IFA_BROADCAST, &broadcast, 4);
	return nl_talk(&r, e, what);
}

static int set_loopback_up(struct rerr *e)
{
	return link_up(1, e, "bring lo up");
}

/* Deletes every interface but lo: the veth pairs go at once (the containers'
 * ends with them), not when the kernel gets round to the namespace. */
static void delete_links(void)
{
	struct if_nameindex *all = if_nameindex();
	if (!all)
		return;
	for (struct if_nameindex *i = all; i->if_index; i++) {
		if (strcmp(i->if_name, "lo") == 0)
			continue;
		struct nlreq r;
		struct rerr e;
		start_msg(&r, RTM_DELLINK, 0);
		struct ifinfomsg *ifi = add_raw(&r.n, sizeof *ifi);
		ifi->ifi_family = AF_UNSPEC;
		ifi->ifi_index = (int)i->if_index;
		(void)nl_talk(&r, &e, "delete a link");
	}
	if_freenameindex(all);
}

/* `petri-runner network [--control-fd N] [--address ADDR/PREFIX]`. */
int network_main(int ctlfd, const char *address)
{
	struct rerr e;
	memset(&e, 0, sizeof e);
	uint32_t addr = 0;
	int prefix = 0;
	if (address && parse_cidr(address, &addr, &prefix) < 0) {
		rerr_set(&e, 0, "bad --address %s: expected an IPv4 address with a prefix, like 10.89.0.1/24", address);
		goto fail;
	}
	if (unshare(CLONE_NEWNET) < 0) {
		rerr_set(&e, errno, "unshare the network namespace");
		goto fail;
	}
	if (set_loopback_up(&e) < 0)
		goto fail;
	struct nlreq r;
	start_msg(&r, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
	struct ifinfomsg *ifi = add_raw(&r.n, sizeof *ifi);
	ifi->ifi_family = AF_UNSPEC;
	add_attr(&r.n, IFLA_IFNAME, BRIDGE, sizeof BRIDGE);
	struct rtattr *info = add_attr(&r.n, IFLA_LINKINFO, NULL, 0);
	add_attr(&r.n, IFLA_INFO_KIND, "bridge", sizeof "bridge");
	end_nest(&r.n, info);
	if (nl_talk(&r, &e, "create the bridge") < 0)
		goto fail;
	int br = (int)if_nametoindex(BRIDGE);
	if (!br) {
		rerr_set(&e, errno, "find the bridge");
		goto fail;
	}
	if (address && add_address(br, addr, prefix, &e, "set the bridge's address") < 0)
		goto fail;
	if (link_up(br, &e, "bring the bridge up") < 0)
		goto fail;
	event_started(ctlfd, getpid());
	/* Hold the namespace until the harness says so (or goes away). */
	if (ctlfd < 0) {
		for (;;)
			pause();
	}
	char buf[256];
	for (;;) {
		ssize_t n = read(ctlfd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || memmem(buf, (size_t)n, "kill", 4)) {
			delete_links();
			return 0;
		}
	}
fail:
	event_error(ctlfd, e.msg);
	return e.code ? e.code : EXIT_SETUP;
}

int parse_cidr(const char *s, uint32_t *addr, int *prefix)
{
	char ip[32];
	const char *slash = strchr(s, '/');
	if (!slash || (size_t)(slash - s) >= sizeof ip)
		return -1;
	memcpy(ip, s, (size_t)(slash - s));
	ip[slash - s] = 0;
	struct in_addr in;
	if (inet_pton(AF_INET, ip, &in) != 1)
		return -1;
	char *end;
	long p = strtol(slash + 1, &end, 10);
	if (*end || end == slash + 1 || p < 1 || p > 30)
		return -1;
	*addr = in.s_addr;
	*prefix = (int)p;
	return 0;
}

int parse_attach(const char *arg, struct attach *a)
{
	char *end;
	long pid = strtol(arg, &end, 10);
	if (end == arg || *end != ':' || pid <= 0 || pid > 0x7fffffff)
		return -1;
	a->holder = (pid_t)pid;
	return parse_cidr(end + 1, &a->addr, &a->prefix);
}

static int enter(int nsfd, struct rerr *e, const char *what)
{
	if (setns(nsfd, CLONE_NEWNET) < 0)
		return rerr_set(e, errno, "enter the network namespace of %s", what);
	return 0;
}

/* One attachment: the veth pair made in the holder's namespace with its
 * peer created right in the container's, then the container side set up. */
static int attach_one(pid_t container, const struct attach *a, int index, int cns, struct rerr *e)
{
	char path[64], host_name[IFNAMSIZ], peer_name[IFNAMSIZ], what[64];
	snprintf(path, sizeof path, "/proc/%d/ns/net", (int)a->holder);
	snprintf(what, sizeof what, "network holder %d", (int)a->holder);
	int hns = open(path, O_RDONLY | O_CLOEXEC);
	if (hns < 0)
		return rerr_set(e, errno, "open %s (is the network still there?)", path);
	int r = enter(hns, e, what);
	close(hns);
	if (r < 0)
		return -1;
	int br = (int)if_nametoindex(BRIDGE);
	if (!br)
		return rerr_set(e, errno, "find the bridge of %s", what);
	snprintf(host_name, sizeof host_name, "pv%dn%d", (int)container, index);
	snprintf(peer_name, sizeof peer_name, "eth%d", index);

	struct nlreq q;
	start_msg(&q, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
	struct ifinfomsg *ifi = add_raw(&q.n, sizeof *ifi);
	ifi->ifi_family = AF_UNSPEC;
	add_attr(&q.n, IFLA_IFNAME, host_name, strlen(host_name) + 1);
	add_attr(&q.n, IFLA_MASTER, &br, sizeof br);
	struct rtattr *info = add_attr(&q.n, IFLA_LINKINFO, NULL, 0);
	add_attr(&q.n, IFLA_INFO_KIND, "veth", sizeof "veth");
	struct rtattr *data = add_attr(&q.n, IFLA_INFO_DATA, NULL, 0);
	struct rtattr *peer = add_attr(&q.n, VETH_INFO_PEER, NULL, 0);
	struct ifinfomsg *pifi = add_raw(&q.n, sizeof *pifi);
	pifi->ifi_family = AF_UNSPEC;
	add_attr(&q.n, IFLA_IFNAME, peer_name, strlen(peer_name) + 1);
	add_attr(&q.n, IFLA_NET_NS_FD, &cns, sizeof cns);
	end_nest(&q.n, peer);
	end_nest(&q.n, data);
	end_nest(&q.n, info);
	if (nl_talk(&q, e, "create a veth pair on the network") < 0)
		return -1;
	int host_index = (int)if_nametoindex(host_name);
	if (!host_index)
		return rerr_set(e, errno, "find %s", host_name);
	if (link_up(host_index, e, "bring the network side of the veth pair up") < 0)
		return -1;

	if (enter(cns, e, "the container") < 0)
		return -1;
	int cindex = (int)if_nametoindex(peer_name);
	if (!cindex)
		return rerr_set(e, errno, "find %s in the container", peer_name);
	char ip[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &a->addr, ip, sizeof ip);
	char awhat[96];
	snprintf(awhat, sizeof awhat, "set %s/%d on %s", ip, a->prefix, peer_name);
	if (add_address(cindex, a->addr, a->prefix, e, awhat) < 0)
		return -1;
	return link_up(cindex, e, "bring the container's interface up");
}

int network_attach(pid_t container, const struct attach *a, size_t n, struct rerr *e)
{
	char path[64];
	int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (self < 0)
		return rerr_set(e, errno, "open /proc/self/ns/net");
	snprintf(path, sizeof path, "/proc/%d/ns/net", (int)container);
	int cns = open(path, O_RDONLY | O_CLOEXEC);
	if (cns < 0) {
		int err = errno;
		close(self);
		return rerr_set(e, err, "open %s", path);
	}
	int r = 0;
	for (size_t i = 0; i < n && r == 0; i++)
		r = attach_one(container, &a[i], (int)i, cns, e);
	/* Back home, whatever happened: the ports are bound in the host's namespace. */
	if (setns(self, CLONE_NEWNET) < 0 && r == 0)
		r = rerr_set(e, errno, "return to the host's network namespace");
	close(cns);
	close(self);
	return r;
}
