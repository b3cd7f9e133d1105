/* util.c: error struct helpers and small I/O helpers. */
#define _GNU_SOURCE
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int rerr_vset(struct rerr *e, int code, int errnum, const char *fmt, va_list ap)
{
	int n = vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof e->msg)
		n = sizeof e->msg - 1;
	if (errnum)
		snprintf(e->msg + n, sizeof e->msg - (size_t)n, ": %s", strerror(errnum));
	e->code = code;
	e->errnum = errnum;
	return -1;
}

int rerr_set(struct rerr *e, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	rerr_vset(e, EXIT_SETUP, errnum, fmt, ap);
	va_end(ap);
	return -1;
}

int rerr_setc(struct rerr *e, int code, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	rerr_vset(e, code, errnum, fmt, ap);
	va_end(ap);
	return -1;
}

int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

char *read_whole_file(const char *path, size_t *len, struct rerr *e)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rerr_set(e, errno, "open %s", path);
		return NULL;
	}
	struct stat st;
	size_t cap = 65536, n = 0;
	if (fstat(fd, &st) == 0 && st.st_size > 0)
		cap = (size_t)st.st_size + 1;
	char *buf = malloc(cap + 1);
	if (!buf) {
		close(fd);
		rerr_set(e, ENOMEM, "read %s", path);
		return NULL;
	}
	for (;;) {
		if (n == cap) {
			cap *= 2;
			char *nb = realloc(buf, cap + 1);
			if (!nb) {
				free(buf);
				close(fd);
				rerr_set(e, ENOMEM, "read %s", path);
				return NULL;
			}
			buf = nb;
		}
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			rerr_set(e, errno, "read %s", path);
			free(buf);
			close(fd);
			return NULL;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = 0;
	*len = n;
	return buf;
}

int write_string_file(const char *path, const char *s, struct rerr *e)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return rerr_set(e, errno, "open %s", path);
	if (write_all(fd, s, strlen(s)) < 0) {
		int err = errno;
		close(fd);
		return rerr_set(e, err, "write %s to %s", s, path);
	}
	close(fd);
	return 0;
}

void child_fail(int errfd, const struct rerr *e)
{
	if (errfd >= 0)
		(void)write_all(errfd, e, sizeof *e);
	_exit(e->code ? e->code : EXIT_SETUP);
}
