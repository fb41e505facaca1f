/*
 * secret.h: keeping secrets out of core dumps.
 *
 * secret_no_dumps() is the first thing main() does in the station and
 * the agent: no core file (RLIMIT_CORE 0) and not dumpable, so neither a
 * crash nor a same-user ptrace or /proc/PID/mem reader gets at the PIN,
 * the API token or a CA's MAC key.  secret_alloc() is the memory those
 * live in for the life of the process: whole pages of their own, marked
 * MADV_DONTDUMP, so a core taken anyway (a debugger, a kernel that
 * ignores the limit via core_pattern pipes) leaves them out.
 */
#ifndef KL_SECRET_H
#define KL_SECRET_H

#include <stddef.h>

/* 0, or KL_ERR_INTERNAL when either call failed (errno logged). */
int secret_no_dumps(void);

/* n zeroed bytes on pages of their own, excluded from core dumps, or
 * NULL.  Caller frees with secret_free(p, n), the same n. */
void *secret_alloc(size_t n);

/* Wipe and release what secret_alloc(n) returned; NULL is fine. */
void secret_free(void *p, size_t n);

#endif
