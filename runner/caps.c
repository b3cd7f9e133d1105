/* caps.c: capability names, bounding set, capset (raw syscall, v3), ambient. */
#define _GNU_SOURCE
#include "runner.h"

#include <errno.h>
#include <linux/capability.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *const cap_names[] = {
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID",
	"CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
};

int cap_from_name(const char *name)
{
	if (strncasecmp(name, "CAP_", 4) != 0)
		return -1;
	for (size_t i = 0; i < sizeof cap_names / sizeof cap_names[0]; i++)
		if (strcasecmp(name, cap_names[i]) == 0)
			return (int)i;
	return -1;
}

/* Drops every capability not in keep from the bounding set; returns the
 * highest capability the kernel knows in *last (the first drop that fails
 * with EINVAL; dropping one already dropped is fine). */
int caps_bounding(uint64_t keep, int *last, struct rerr *e)
{
	int c;
	for (c = 0; c < 64; c++) {
		if (keep >> c & 1)
			continue;
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0) {
			if (errno == EINVAL)
				break;
			return rerr_set(e, errno, "drop bounding capability %s",
					c < (int)(sizeof cap_names / sizeof cap_names[0]) ? cap_names[c] : "?");
		}
	}
	*last = c - 1;
	return 0;
}

int caps_set(uint64_t eff, uint64_t prm, uint64_t inh, struct rerr *e)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2];
	data[0].effective = (uint32_t)eff;
	data[1].effective = (uint32_t)(eff >> 32);
	data[0].permitted = (uint32_t)prm;
	data[1].permitted = (uint32_t)(prm >> 32);
	data[0].inheritable = (uint32_t)inh;
	data[1].inheritable = (uint32_t)(inh >> 32);
	if (syscall(SYS_capset, &hdr, data) < 0)
		return rerr_set(e, errno, "capset");
	return 0;
}

int caps_ambient(uint64_t amb, struct rerr *e)
{
	for (int c = 0; c < 64; c++) {
		if (!(amb >> c & 1))
			continue;
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0)
			return rerr_set(e, errno, "raise ambient capability %s",
					c < (int)(sizeof cap_names / sizeof cap_names[0]) ? cap_names[c] : "?");
	}
	return 0;
}

int caps_drop_all(struct rerr *e)
{
	return caps_set(0, 0, 0, e);
}
