/* test_jigctl.c: the power control socket's requests (fixtures/jig/jigctl.h),
 * as keyline-jig and keyline-qemu-power read them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <stdlib.h>

#include <cmocka.h>

#include "fixtures/jig/jigctl.h"
#include "common/err.h"

static void
test_parse(void **state)
{
	static const struct {
		const char *msg;
		const char *words;	/* NULL: read */
		long slot, ms;
	} cases[] = {
		{ "power-cycle 1 300", NULL, 1, 300 },
		{ "power-cycle 64 0", NULL, 64, 0 },
		{ "power-cycle 3 60000", NULL, 3, 60000 },
		{ "power-cycle 3 60001", "bad request", 0, 0 },
		{ "power-cycle 0 300", "bad request", 0, 0 },
		{ "power-cycle -1 300", "bad request", 0, 0 },
		{ "power-cycle 1 -5", "bad request", 0, 0 },
		{ "power-cycle 1", "bad request", 0, 0 },
		{ "power-cycle 1 ", "bad request", 0, 0 },
		{ "power-cycle  1 300", "bad request", 0, 0 },
		{ "power-cycle 1 300 ", "bad request", 0, 0 },
		{ "power-cycle 1 300\n", "bad request", 0, 0 },
		{ "power-cycle 1 3x0", "bad request", 0, 0 },
		{ "power-cycle 1234567890 1", "bad request", 0, 0 },
		{ "power-cycle 1 +300", "bad request", 0, 0 },
		{ "power-cycle", "unknown request", 0, 0 },
		{ "power-off 1 300", "unknown request", 0, 0 },
		{ "POWER-CYCLE 1 300", "unknown request", 0, 0 },
		{ "", "unknown request", 0, 0 },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		long slot = -7, ms = -7;
		const char *w = jigctl_parse(cases[i].msg,
		    strlen(cases[i].msg), 60000, &slot, &ms);

		if (cases[i].words == NULL) {
			if (w != NULL)
				fail_msg("'%s': %s", cases[i].msg, w);
			assert_int_equal(slot, cases[i].slot);
			assert_int_equal(ms, cases[i].ms);
		} else if (w == NULL || strcmp(w, cases[i].words) != 0) {
			fail_msg("'%s': got %s, want %s", cases[i].msg,
			    w != NULL ? w : "(read)", cases[i].words);
		}
	}
}

/* A datagram carries no NUL: the length bounds the reading, and a NUL
 * inside is not an end. */
static void
test_parse_length(void **state)
{
	static const char msg[] = "power-cycle 2 150junk";
	long slot = 0, ms = 0;

	(void)state;
	assert_null(jigctl_parse(msg, strlen("power-cycle 2 150"), 60000,
	    &slot, &ms));
	assert_int_equal(slot, 2);
	assert_int_equal(ms, 150);
	assert_string_equal(jigctl_parse("power-cycle 2 1\0" "5", 17, 60000,
	    &slot, &ms), "bad request");
	assert_string_equal(jigctl_parse(msg, 5, 60000, &slot, &ms),
	    "unknown request");
}

/* The socket exists owner-only from the start, replaces an old one and
 * takes a request. */
static void
test_open(void **state)
{
	char dir[] = "/tmp/kl-jigctl-XXXXXX", path[64];
	struct sockaddr_un a;
	struct stat st;
	int fd = -1, fd2 = -1, c;
	char buf[JIGCTL_MAX];

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(jigctl_open(dir, NULL, &fd), 0);
	snprintf(path, sizeof(path), "%s/jig.sock", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 077, 0);
	assert_int_equal(jigctl_open(dir, NULL, &fd2), 0);	/* replaced */
	c = socket(AF_UNIX, SOCK_DGRAM, 0);
	assert_true(c >= 0);
	memset(&a, 0, sizeof(a));
	a.sun_family = AF_UNIX;
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	assert_int_equal(sendto(c, "power-cycle 1 5", 15, 0,
	    (struct sockaddr *)&a, sizeof(a)), 15);
	assert_int_equal(recv(fd2, buf, sizeof(buf), 0), 15);
	close(c);
	close(fd);
	close(fd2);
	unlink(path);
	rmdir(dir);
	assert_int_equal(jigctl_open("/nonexistent-dir/x", NULL, &fd),
	    KL_ERR_IO);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_parse_length),
		cmocka_unit_test(test_open),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
