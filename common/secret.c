/*
 * secret.c: no core dumps, and pages for secrets that a dump would skip
 * (see secret.h).
 */
#include "common/secret.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/log.h"

int
secret_no_dumps(void)
{
	struct rlimit rl = { 0, 0 };
	int r = 0;

	if (setrlimit(RLIMIT_CORE, &rl) != 0) {
		log_error("setrlimit(RLIMIT_CORE, 0): %s", strerror(errno));
		r = KL_ERR_INTERNAL;
	}
	/* Also makes /proc/PID/{mem,environ,maps} root's, and refuses
	 * ptrace from the same user. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
		log_error("prctl(PR_SET_DUMPABLE, 0): %s", strerror(errno));
		r = KL_ERR_INTERNAL;
	}
	return r;
}

void *
secret_alloc(size_t n)
{
	void *p;

	if (n == 0)
		return NULL;
	/* Anonymous pages: zeroed, page-aligned, shared with nothing else,
	 * so the advice covers exactly the secret's own pages. */
	p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
	    -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (madvise(p, n, MADV_DONTDUMP) != 0) {
		log_error("madvise(MADV_DONTDUMP): %s", strerror(errno));
		munmap(p, n);
		return NULL;
	}
	/* Kept out of swap where the limit allows; not needed for dumps. */
	(void)mlock(p, n);
	return p;
}

void
secret_free(void *p, size_t n)
{
	if (p == NULL || n == 0)
		return;
	buf_wipe(p, n);
	(void)munlock(p, n);
	munmap(p, n);
}
