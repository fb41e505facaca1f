/*
 * fuzz.h: helpers shared by the libFuzzer targets in tests/fuzz/
 * (docs/fuzzing.md).  Header-only so each target stays one file.
 *
 * Targets that hand the fuzz bytes to code reading a file (config_load,
 * ota_load, conf_load) write them to a private temp directory first,
 * under /dev/shm when there is one, so no run touches a disk.
 */
#ifndef KL_FUZZ_H
#define KL_FUZZ_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Stop the run: libFuzzer keeps the input that got here as a crash. */
#define FUZZ_CHECK(cond, ...) do {					\
	if (!(cond)) {							\
		fprintf(stderr, "fuzz check failed: %s: ", #cond);	\
		fprintf(stderr, __VA_ARGS__);				\
		fputc('\n', stderr);					\
		abort();						\
	}								\
} while (0)

/*
 * The code's own log lines would come thousands a second: drop them
 * (every level is below ERROR + 1), unless KEYLINE_FUZZ_LOG is set for a
 * look at one input.  Failed checks and sanitizer reports still print.
 */
static inline void
fuzz_logs(const char *name)
{
	log_init(name, getenv("KEYLINE_FUZZ_LOG") != NULL ? LOG_LVL_DEBUG :
	    (enum log_level)(LOG_LVL_ERROR + 1));
}

static char fuzz_dir[PATH_MAX];

static inline int
fuzz_rm_one(const char *path, const struct stat *st, int flag,
    struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

/* Remove the directory tree at path (best effort). */
static inline void
fuzz_rm_tree(const char *path)
{
	(void)nftw(path, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static inline int
fuzz_rm_below(const char *path, const struct stat *st, int flag,
    struct FTW *ftw)
{
	return ftw->level == 0 ? 0 : fuzz_rm_one(path, st, flag, ftw);
}

/* Empty the directory at path, keeping it (an fd may point at it). */
static inline void
fuzz_rm_contents(const char *path)
{
	(void)nftw(path, fuzz_rm_below, 16, FTW_DEPTH | FTW_PHYS);
}

static inline void
fuzz_tmpdir_cleanup(void)
{
	if (fuzz_dir[0] != '\0')
		fuzz_rm_tree(fuzz_dir);
}

/* A fresh directory for this process, in /dev/shm (or $TMPDIR), removed
 * when the process exits normally (a crash leaves it for a look). */
static inline const char *
fuzz_tmpdir(void)
{
	char *dir = fuzz_dir;
	const char *base;

	if (dir[0] != '\0')
		return dir;
	base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
	if (base == NULL || base[0] == '\0')
		base = "/tmp";
	snprintf(dir, sizeof(fuzz_dir), "%s/keyline-fuzz.XXXXXX", base);
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		abort();
	}
	atexit(fuzz_tmpdir_cleanup);
	return dir;
}

/* Write exactly data[0..n) to path (replaced). */
static inline void
fuzz_write_file(const char *path, const void *data, size_t n)
{
	const uint8_t *p = data;
	ssize_t w;
	int fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		perror(path);
		abort();
	}
	while (n > 0) {
		w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			perror(path);
			abort();
		}
		p += w;
		n -= (size_t)w;
	}
	close(fd);
}

#endif
