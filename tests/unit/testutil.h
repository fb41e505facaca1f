/*
 * testutil.h: process and directory helpers shared by the unit tests that
 * drive real programs: a shell command line, a server on a loopback port,
 * a scratch directory, and the virtual line (scripts/line.sh) with real
 * board agents.  Header only and static inline, like pki_util.h, so each
 * test links just what its Makefile line names and a test that uses only
 * some of these builds without unused-function warnings.
 *
 * Assertions stay in the tests.  Functions return 0 / -1, or what they
 * say below.
 */
#ifndef KL_TEST_TESTUTIL_H
#define KL_TEST_TESTUTIL_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* system() on a printf-formatted command line; its status. */
static inline int
tu_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static inline int
tu_sh(const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

/* A loopback TCP port nobody listens on right now, or -1. */
static inline int
tu_free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

/* 1 when something accepts connections on loopback port. */
static inline int
tu_port_open(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)port);
	ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

/*
 * Start argv (PATH lookup) with stdout and stderr in log, and wait up to
 * 10 s for it to listen on loopback port.  Its pid (stop it with
 * tu_stop()), or -1 with nothing left running.
 */
static inline pid_t
tu_spawn(char *const argv[], const char *log, int port)
{
	pid_t pid = fork();
	int fd, i;

	if (pid == 0) {
		fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	for (i = 0; pid > 0 && i < 200; i++) {
		if (tu_port_open(port))
			return pid;
		usleep(50 * 1000);
	}
	if (pid > 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	return -1;
}

/* SIGTERM and reap; pid <= 0 is nothing. */
static inline void
tu_stop(pid_t pid)
{
	if (pid > 0) {
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
	}
}

/* A fresh directory /tmp/<name>.XXXXXX, its path in dir. */
static inline int
tu_tmpdir(char *dir, size_t dirsz, const char *name)
{
	snprintf(dir, dirsz, "/tmp/%s.XXXXXX", name);
	return mkdtemp(dir) != NULL ? 0 : -1;
}

/*
 * Build and start a virtual line of nboards boards in dir (made by
 * tu_tmpdir()) with scripts/line.sh, run from top, the source tree (the
 * tests run from there).  The jig and agent are $KEYLINE_BIN's, else the
 * san build's, as make test builds them.  Output in dir/setup.log.
 */
static inline int
tu_line_start(const char *top, const char *dir, int nboards)
{
	const char *bin = getenv("KEYLINE_BIN");

	return tu_sh("cd '%s' && KEYLINE_BIN='%s' bash -c '. scripts/line.sh "
	    "&& line_setup %s %d && line_start %s' >%s/setup.log 2>&1", top,
	    bin != NULL ? bin : "build/san/bin", dir, nboards, dir, dir) == 0 ?
	    0 : -1;
}

/* Stop the line tu_line_start() started and remove dir. */
static inline void
tu_line_cleanup(const char *top, const char *dir)
{
	tu_sh("cd '%s' && bash -c '. scripts/line.sh && line_cleanup %s'", top,
	    dir);
	tu_sh("rm -rf '%s'", dir);
}

#endif
