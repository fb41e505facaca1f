/* test_notify.c: the agent's notification datagram (fixtures/agent/notify.h)
 * as a service manager's socket receives it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "fixtures/agent/notify.h"
#include "common/err.h"

/* A datagram socket bound at name ("/path" or "@abstract"), as systemd
 * binds its notification socket. */
static int
listen_at(const char *name)
{
	struct sockaddr_un sa;
	socklen_t len;
	int fd;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	assert_true(strlen(name) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, name, strlen(name));
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
	    strlen(name));
	if (name[0] == '@')
		sa.sun_path[0] = '\0';
	else
		len++;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, len), 0);
	return fd;
}

/* The next datagram, or "" when none is waiting. */
static void
recv_one(int fd, char *buf, size_t bufsz)
{
	ssize_t n = recv(fd, buf, bufsz - 1, MSG_DONTWAIT);

	buf[n > 0 ? n : 0] = '\0';
}

static void
test_path_socket(void **state)
{
	char dir[] = "/tmp/test_notify.XXXXXX", path[128], buf[NOTIFY_MAX + 8];
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/notify", dir);
	fd = listen_at(path);
	assert_int_equal(setenv("NOTIFY_SOCKET", path, 1), 0);
	assert_int_equal(notify_send("READY=1\nSTATUS=ready on /dev/ttyS1"),
	    0);
	recv_one(fd, buf, sizeof(buf));
	assert_string_equal(buf, "READY=1\nSTATUS=ready on /dev/ttyS1");
	/* One datagram per call, in order. */
	assert_int_equal(notify_send("STOPPING=1"), 0);
	recv_one(fd, buf, sizeof(buf));
	assert_string_equal(buf, "STOPPING=1");
	recv_one(fd, buf, sizeof(buf));
	assert_string_equal(buf, "");
	/* Nobody listening any more: an error, not a hang. */
	close(fd);
	unlink(path);
	assert_int_equal(notify_send("READY=1"), KL_ERR_IO);
	rmdir(dir);
	unsetenv("NOTIFY_SOCKET");
}

static void
test_abstract_socket(void **state)
{
	char name[64], buf[64];
	int fd;

	(void)state;
	snprintf(name, sizeof(name), "@keyline-test-notify-%ld",
	    (long)getpid());
	fd = listen_at(name);
	assert_int_equal(setenv("NOTIFY_SOCKET", name, 1), 0);
	assert_int_equal(notify_send("READY=1"), 0);
	recv_one(fd, buf, sizeof(buf));
	assert_string_equal(buf, "READY=1");
	close(fd);
	unsetenv("NOTIFY_SOCKET");
}

static void
test_refused(void **state)
{
	char longname[200], big[NOTIFY_MAX + 2];

	(void)state;
	/* No service manager: nothing to do, and not an error. */
	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(notify_send("READY=1"), 1);
	assert_int_equal(setenv("NOTIFY_SOCKET", "", 1), 0);
	assert_int_equal(notify_send("READY=1"), 1);
	/* Addresses that are not a path or an abstract name. */
	assert_int_equal(setenv("NOTIFY_SOCKET", "run/notify", 1), 0);
	assert_int_equal(notify_send("READY=1"), KL_ERR_INVALID);
	assert_int_equal(setenv("NOTIFY_SOCKET", "vsock:2:1234", 1), 0);
	assert_int_equal(notify_send("READY=1"), KL_ERR_INVALID);
	assert_int_equal(setenv("NOTIFY_SOCKET", "@", 1), 0);
	assert_int_equal(notify_send("READY=1"), KL_ERR_INVALID);
	memset(longname, 'a', sizeof(longname) - 1);
	longname[0] = '/';
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(setenv("NOTIFY_SOCKET", longname, 1), 0);
	assert_int_equal(notify_send("READY=1"), KL_ERR_INVALID);
	/* States that are empty or larger than the limit. */
	assert_int_equal(setenv("NOTIFY_SOCKET", "/run/nonexistent", 1), 0);
	assert_int_equal(notify_send(NULL), KL_ERR_INVALID);
	assert_int_equal(notify_send(""), KL_ERR_INVALID);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(notify_send(big), KL_ERR_INVALID);
	unsetenv("NOTIFY_SOCKET");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_path_socket),
		cmocka_unit_test(test_abstract_socket),
		cmocka_unit_test(test_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
