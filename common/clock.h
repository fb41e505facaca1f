/*
 * clock.h: the absolute CLOCK_MONOTONIC deadline ms from now, for
 * pthread_cond_timedwait on a condition variable made with that clock
 * (pthread_condattr_setclock).  Header only: shared by the engine's and
 * the plant threads' waits.
 */
#ifndef KL_CLOCK_H
#define KL_CLOCK_H

#include <time.h>

static inline void
kl_deadline_ms(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

#endif
