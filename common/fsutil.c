/* fsutil.c: capped whole-file reads and mkdir -p (see fsutil.h). */
#include "common/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/log.h"

int
fsutil_read_capped(const char *path, size_t max, uint8_t **out, size_t *len,
    char *err, size_t errsz)
{
	uint8_t *data = NULL;
	struct stat st;
	size_t n = 0;
	ssize_t got;
	int fd = -1, r = KL_ERR_INTERNAL;

	/* O_NONBLOCK: a FIFO at the path is refused below instead of
	 * blocking the open; it changes nothing for a regular file. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY |
	    O_NONBLOCK)) < 0 ||
	    fstat(fd, &st) != 0) {
		snprintf(err, errsz, "%s: %s", path, strerror(errno));
		r = KL_ERR_IO;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errsz, "%s: not a regular file", path);
		r = KL_ERR_IO;
		goto out;
	}
	/* One byte more than the cap tells "at the cap" from "over"; one
	 * more for the NUL. */
	if ((data = malloc(max + 2)) == NULL) {
		r = KL_ERR_NOMEM;
		snprintf(err, errsz, "%s: %s", path, kl_strerror(r));
		goto out;
	}
	while (n < max + 1) {
		got = read(fd, data + n, max + 1 - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			snprintf(err, errsz, "%s: %s", path, strerror(errno));
			r = KL_ERR_IO;
			goto out;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	if (n > max) {
		snprintf(err, errsz, "%s: larger than %zu bytes", path, max);
		r = KL_ERR_TOO_BIG;
		goto out;
	}
	data[n] = '\0';
	*out = data;
	*len = n;
	data = NULL;
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	/* Over the cap or a read error: what was read may be a secret. */
	buf_wipe(data, n);
	free(data);
	return r;
}

int
fsutil_mkdirs(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];
	size_t i, n = strlen(path);

	if (n == 0 || n >= sizeof(tmp))
		return KL_ERR_PATH;
	memcpy(tmp, path, n + 1);
	for (i = 1; i <= n; i++) {
		if (tmp[i] != '/' && tmp[i] != '\0')
			continue;
		tmp[i] = '\0';
		if (mkdir(tmp, mode) != 0 && errno != EEXIST) {
			log_error("mkdir %s: %s", tmp, strerror(errno));
			return KL_ERR_IO;
		}
		if (i < n)
			tmp[i] = '/';
	}
	return 0;
}
