/* test_devid.c: device ID templates and what a board's values may contain. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "station/config/devid.h"
#include "common/err.h"

static const struct devid_vars vars = {
	.serial = "SN0042",
	.model = "imx8-gw",
	.hsm_serial = "a1b2c3",
	.station = "line3",
};

static void
test_templates(void **state)
{
	static const struct {
		const char *tmpl;
		const char *words;	/* NULL = valid */
	} cases[] = {
		{ "{model}-{serial}", NULL },
		{ "fleet.{station}_{hsm_serial}", NULL },
		{ "fixed-name", NULL },
		{ "", "empty template" },
		{ "{model", "'{' at position 1 is not closed" },
		{ "a}b", "'}' at position 2 without '{'" },
		{ "{mod{el}}", "nested '{'" },
		{ "{}", "unknown placeholder at position 1" },
		{ "x{serialnumber}", "unknown placeholder at position 2" },
		{ "{SERIAL}", "unknown placeholder" },
		{ "{averyveryverylongplaceholdername}", "unknown placeholder" },
		{ "a b", "position 2 is not allowed" },
		{ "CN=x,O=y", "position 3 is not allowed" },
		{ "a/{serial}", "position 2 is not allowed" },
		{ "\xc3\xa9{serial}", "position 1 is not allowed" },
	};
	char why[256];
	size_t i;
	int rc;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		why[0] = '\0';
		rc = devid_check_template(cases[i].tmpl, why, sizeof(why));
		if (cases[i].words == NULL) {
			if (rc != 0)
				fail_msg("'%s' refused: %s", cases[i].tmpl,
				    why);
		} else if (rc != KL_ERR_INVALID ||
		    strstr(why, cases[i].words) == NULL) {
			fail_msg("'%s': rc %d why '%s', want '%s'",
			    cases[i].tmpl, rc, why, cases[i].words);
		}
	}
}

static void
test_expand(void **state)
{
	char out[DEVID_MAX + 1], why[256];

	(void)state;
	assert_int_equal(devid_expand("{model}-{serial}", &vars, out,
	    sizeof(out), why, sizeof(why)), 0);
	assert_string_equal(out, "imx8-gw-SN0042");
	assert_int_equal(devid_expand("{station}.{hsm_serial}.{serial}",
	    &vars, out, sizeof(out), why, sizeof(why)), 0);
	assert_string_equal(out, "line3.a1b2c3.SN0042");
	assert_int_equal(devid_expand("{serial}{serial}", &vars, out,
	    sizeof(out), why, sizeof(why)), 0);
	assert_string_equal(out, "SN0042SN0042");
}

/* devid_valid: the same rules for an ID that comes from outside. */
static void
test_valid(void **state)
{
	static const char *const good[] = { "a", "keyline-virtual-KL000001",
		"A.b_c-9", "x-" };
	static const char *const bad[] = { "", ".a", "-a", "a b", "a/b",
		"a\x01", "\xc3\xa9", "a{serial}" };
	char max[DEVID_MAX + 2];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_int_equal(devid_valid(good[i]), 1);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(devid_valid(bad[i]), 0);
	assert_int_equal(devid_valid(NULL), 0);
	memset(max, 'a', sizeof(max));
	max[DEVID_MAX] = '\0';
	assert_int_equal(devid_valid(max), 1);
	max[DEVID_MAX] = 'a';
	max[DEVID_MAX + 1] = '\0';
	assert_int_equal(devid_valid(max), 0);
}

static void
test_bad_values(void **state)
{
	struct devid_vars v = vars;
	char out[DEVID_MAX + 1], why[256];
	char long_serial[80];

	(void)state;
	snprintf(out, sizeof(out), "untouched");

	/* A board's serial with a comma/equals could forge a subject. */
	v.serial = "1,CN=admin";
	assert_int_equal(devid_expand("{model}-{serial}", &v, out,
	    sizeof(out), why, sizeof(why)), KL_ERR_INVALID);
	assert_non_null(strstr(why, "0x2c at position 2"));
	assert_string_equal(out, "untouched");

	v.serial = "abc\n";
	assert_int_equal(devid_expand("{serial}", &v, out, sizeof(out), why,
	    sizeof(why)), KL_ERR_INVALID);
	assert_non_null(strstr(why, "0x0a"));

	v.serial = "";
	assert_int_equal(devid_expand("{model}-{serial}", &v, out,
	    sizeof(out), why, sizeof(why)), KL_ERR_INVALID);
	assert_string_equal(why, "{serial} is empty or unknown");

	v = vars;
	v.hsm_serial = NULL;
	assert_int_equal(devid_expand("{hsm_serial}", &v, out, sizeof(out),
	    why, sizeof(why)), KL_ERR_INVALID);
	assert_string_equal(why, "{hsm_serial} is empty or unknown");
	/* Unused NULL values do not matter. */
	assert_int_equal(devid_expand("{serial}", &v, out, sizeof(out), why,
	    sizeof(why)), 0);

	/* Leading '.' or '-' comes from a value. */
	v = vars;
	v.serial = "-rf";
	assert_int_equal(devid_expand("{serial}", &v, out, sizeof(out), why,
	    sizeof(why)), KL_ERR_INVALID);
	assert_non_null(strstr(why, "starts with '-'"));
	v.serial = ".hidden";
	assert_int_equal(devid_expand("{serial}", &v, out, sizeof(out), why,
	    sizeof(why)), KL_ERR_INVALID);
	assert_non_null(strstr(why, "starts with '.'"));
	assert_int_equal(devid_expand("-{serial}", &vars, out, sizeof(out),
	    why, sizeof(why)), KL_ERR_INVALID);

	/* 64 is the limit, 65 is over. */
	memset(long_serial, 'a', 64);
	long_serial[64] = '\0';
	v = vars;
	v.serial = long_serial;
	assert_int_equal(devid_expand("{serial}", &v, out, sizeof(out), why,
	    sizeof(why)), 0);
	assert_int_equal(strlen(out), 64);
	assert_int_equal(devid_expand("x{serial}", &v, out, sizeof(out), why,
	    sizeof(why)), KL_ERR_INVALID);
	assert_string_equal(why, "device ID longer than 64 characters");
	memset(long_serial, 'a', sizeof(long_serial) - 1);
	long_serial[sizeof(long_serial) - 1] = '\0';
	assert_int_equal(devid_expand("{serial}", &v, out, sizeof(out), why,
	    sizeof(why)), KL_ERR_INVALID);

	/* Output buffer too small: refused, not truncated. */
	{
		char small[8];

		assert_int_equal(devid_expand("{model}-{serial}", &vars,
		    small, sizeof(small), why, sizeof(why)), KL_ERR_INVALID);
	}

	/* A bad template is refused by expand too. */
	assert_int_equal(devid_expand("{nope}", &vars, out, sizeof(out), why,
	    sizeof(why)), KL_ERR_INVALID);
}

/* Every byte value as a serial: only the allowed alphabet passes. */
static void
test_every_byte(void **state)
{
	struct devid_vars v = vars;
	char out[DEVID_MAX + 1], why[256], s[3];
	int c, rc, ok;

	(void)state;
	for (c = 1; c < 256; c++) {
		s[0] = 'x';
		s[1] = (char)c;
		s[2] = '\0';
		v.serial = s;
		rc = devid_expand("{serial}", &v, out, sizeof(out), why,
		    sizeof(why));
		ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
		if (ok != (rc == 0))
			fail_msg("byte 0x%02x: rc %d", c, rc);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_templates),
		cmocka_unit_test(test_expand),
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_every_byte),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
