/*
 * test_secret.c: secrets out of core dumps (common/secret.c) and out of
 * the environment on every path (station.c, [ca] pin_env).
 *
 * secret_alloc's pages are looked up in /proc/self/smaps, where the kernel
 * shows MADV_DONTDUMP as the "dd" flag; secret_no_dumps is checked with
 * prctl and getrlimit.  pin_env goes through station_open() with a real
 * station.conf, fleet root and audit log in a scratch directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/log.h"
#include "common/secret.h"
#include "station/station.h"
#include "tests/unit/pki_util.h"
#include "tests/unit/testutil.h"

/* The VmFlags line of the mapping that holds p, in flags. */
static int
smaps_flags(const void *p, char *flags, size_t flagsz)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	unsigned long lo, hi, a = (unsigned long)(uintptr_t)p;
	int in = 0, found = -1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		char *end;

		/* A mapping starts with "lo-hi perms ...", in hex. */
		lo = strtoul(line, &end, 16);
		if (end != line && *end == '-') {
			hi = strtoul(end + 1, NULL, 16);
			in = a >= lo && a < hi;
			continue;
		}
		if (in && strncmp(line, "VmFlags:", 8) == 0) {
			snprintf(flags, flagsz, "%.200s", line + 8);
			found = 0;
			break;
		}
	}
	fclose(f);
	return found;
}

static void
test_alloc_not_dumped(void **state)
{
	char flags[256];
	uint8_t *p;
	size_t i;

	(void)state;
	p = secret_alloc(300);
	assert_non_null(p);
	assert_int_equal((uintptr_t)p % (uintptr_t)sysconf(_SC_PAGESIZE), 0);
	for (i = 0; i < 300; i++)
		assert_int_equal(p[i], 0);
	memset(p, 'k', 300);
	assert_int_equal(smaps_flags(p, flags, sizeof(flags)), 0);
	if (strstr(flags, " dd") == NULL)
		fail_msg("secret pages without MADV_DONTDUMP: VmFlags:%s",
		    flags);
	secret_free(p, 300);
	secret_free(NULL, 300);
	assert_null(secret_alloc(0));
}

static void
test_no_dumps(void **state)
{
	struct rlimit rl;

	(void)state;
	assert_int_equal(secret_no_dumps(), 0);
	assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
	assert_int_equal(getrlimit(RLIMIT_CORE, &rl), 0);
	assert_int_equal(rl.rlim_cur, 0);
	assert_int_equal(rl.rlim_max, 0);
}

/*
 * A PIN in pin_env longer than the station takes is refused, and its
 * bytes are gone from the environment block all the same, like an
 * accepted one's.
 */
static void
test_pin_env_too_long_wiped(void **state)
{
	char dir[64], path[128], err[1024], pin[400];
	struct station st;
	EVP_PKEY *k;
	X509 *root;
	FILE *f;
	char *v;
	size_t i, n;
	int r;

	(void)state;
	assert_int_equal(tu_tmpdir(dir, sizeof(dir), "test_secret"), 0);
	k = pki_ec_key();
	root = pki_make_ca("Test Fleet Root", k, NULL, NULL);
	assert_non_null(root);
	snprintf(path, sizeof(path), "%s/root.pem", dir);
	assert_int_equal(pki_write_certs(path, (X509 *[]){ root, NULL }), 0);
	snprintf(path, sizeof(path), "%s/station.conf", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "[station]\nid = s1\naudit_db = audit.db\n"
	    "[ca]\nbackend = local\nissuer_cert = root.pem\n"
	    "fleet_root = root.pem\nkey_id = 10\npin_env = KL_TEST_LONG_PIN\n"
	    "[ota]\nroot_crt = root.pem\n"
	    "gateway_url = https://gateway.example.com:8443\n");
	assert_int_equal(fclose(f), 0);

	memset(pin, 'P', sizeof(pin) - 1);
	pin[sizeof(pin) - 1] = '\0';
	assert_int_equal(setenv("KL_TEST_LONG_PIN", pin, 1), 0);
	v = getenv("KL_TEST_LONG_PIN");
	assert_non_null(v);
	n = strlen(v);
	r = station_open(&st, path, err, sizeof(err));
	assert_int_equal(r, KL_ERR_CONFIG);
	if (strstr(err, "PIN too long") == NULL)
		fail_msg("station_open said: %s", err);
	assert_null(getenv("KL_TEST_LONG_PIN"));
	/* glibc keeps the old NAME=value string allocated: its value bytes
	 * must be wiped, not just unlinked. */
	for (i = 0; i < n; i++)
		if (v[i] == 'P')
			fail_msg("PIN byte %zu still in the environment block",
			    i);

	X509_free(root);
	EVP_PKEY_free(k);
	tu_sh("rm -rf '%s'", dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_alloc_not_dumped),
		cmocka_unit_test(test_pin_env_too_long_wiped),
		/* Last: the process stays undumpable. */
		cmocka_unit_test(test_no_dumps),
	};

	log_init("test_secret", LOG_LVL_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
