/*
 * test_http.c: the status API's text in and out (ui/http_parse.c):
 * request targets (NUL in every spelling, escapes, limits, truncated and
 * bit-flipped input), route matching, numbers, number formatting
 * under a comma-decimal locale, and If-None-Match lists.
 */
#include <locale.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/err.h"
#include "ui/http_parse.h"

static void
test_targets(void **state)
{
	static const struct {
		const char *raw;
		int rc;
		const char *path;	/* when rc == 0 */
		const char *k1, *v1;	/* first argument, if any */
	} cases[] = {
		{ "/api/v1/status", 0, "/api/v1/status", NULL, NULL },
		{ "/api/v1/events?since=3&limit=2", 0, "/api/v1/events",
		    "since", "3" },
		{ "/a%2Fb", 0, "/a/b", NULL, NULL },
		{ "/x?k=a+b%20c", 0, "/x", "k", "a b c" },
		{ "/x?flag", 0, "/x", "flag", "" },
		{ "/x?&&k=v&", 0, "/x", "k", "v" },
		{ "/x?k=", 0, "/x", "k", "" },
		{ "/x?k=a=b", 0, "/x", "k", "a=b" },
		{ "/x+y", 0, "/x+y", NULL, NULL },
		{ "/api/v1/status%00.json", KL_ERR_INVALID, NULL, NULL, NULL },
		{ "/api/v1/status%00", KL_ERR_INVALID, NULL, NULL, NULL },
		{ "/x?since=1%00", KL_ERR_INVALID, NULL, NULL, NULL },
		{ "/x?since%00=1", KL_ERR_INVALID, NULL, NULL, NULL },
		{ "/x?a=%0a", KL_ERR_INVALID, NULL, NULL, NULL },
		{ "/x%7f", KL_ERR_INVALID, NULL, NULL, NULL },
		{ "/x%1", KL_ERR_INVALID, NULL, NULL, NULL },
		{ "/x%", KL_ERR_INVALID, NULL, NULL, NULL },
		{ "/x%zz", KL_ERR_INVALID, NULL, NULL, NULL },
		{ "/x?%=1", KL_ERR_INVALID, NULL, NULL, NULL },
		{ "/x?=1", KL_ERR_INVALID, NULL, NULL, NULL },
		{ "/x?a=1&a=2", KL_ERR_INVALID, NULL, NULL, NULL },
		{ "/x#frag", KL_ERR_INVALID, NULL, NULL, NULL },
		{ "x", KL_ERR_INVALID, NULL, NULL, NULL },
		{ "", KL_ERR_INVALID, NULL, NULL, NULL },
		{ "*", KL_ERR_INVALID, NULL, NULL, NULL },
		{ "/x?a=1&b=2&c=3&d=4&e=5&f=6&g=7&h=8&i=9", KL_ERR_INVALID,
		    NULL, NULL, NULL },
	};
	struct http_target t;
	size_t i;
	int rc;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		rc = http_target_parse(cases[i].raw, strlen(cases[i].raw), &t);
		if (rc != cases[i].rc)
			fail_msg("'%s': rc %d, want %d", cases[i].raw, rc,
			    cases[i].rc);
		if (rc != 0)
			continue;
		assert_string_equal(t.path, cases[i].path);
		if (cases[i].k1 != NULL) {
			assert_true(t.nargs >= 1);
			assert_string_equal(t.args[0].key, cases[i].k1);
			assert_string_equal(t.args[0].value, cases[i].v1);
			assert_string_equal(http_target_arg(&t, cases[i].k1),
			    cases[i].v1);
		} else {
			assert_int_equal(t.nargs, 0);
		}
	}
	/* A raw NUL inside the length, which a C string would hide. */
	assert_int_equal(http_target_parse("/api/v1/status\0.json", 20, &t),
	    KL_ERR_INVALID);
	assert_null(http_target_arg(&t, "since"));
}

static void
test_target_limits(void **state)
{
	char raw[HTTP_TARGET_MAX + 8];
	struct http_target t;

	(void)state;
	raw[0] = '/';
	memset(raw + 1, 'a', sizeof(raw) - 1);
	/* Exactly HTTP_PATH_MAX decoded bytes fit, one more is 414. */
	assert_int_equal(http_target_parse(raw, HTTP_PATH_MAX, &t), 0);
	assert_int_equal(strlen(t.path), HTTP_PATH_MAX);
	assert_int_equal(http_target_parse(raw, HTTP_PATH_MAX + 1, &t),
	    KL_ERR_TOO_BIG);
	assert_int_equal(http_target_parse(raw, HTTP_TARGET_MAX + 1, &t),
	    KL_ERR_TOO_BIG);
	/* An argument value over its maximum is a bad argument (400). */
	memcpy(raw, "/x?k=", 5);
	memset(raw + 5, '1', HTTP_ARG_VALUE_MAX + 1);
	assert_int_equal(http_target_parse(raw, 5 + HTTP_ARG_VALUE_MAX, &t),
	    0);
	assert_int_equal(http_target_parse(raw, 5 + HTTP_ARG_VALUE_MAX + 1,
	    &t), KL_ERR_INVALID);
}

/* Every prefix and every single-bit flip of real targets: never a crash,
 * never a NUL or control character in what comes out. */
static void
test_target_mangled(void **state)
{
	static const char *const seeds[] = {
		"/api/v1/events?since=12&limit=100",
		"/api/v1/devices/keyline-virtual-KL000001",
		"/api/v1/slots/%31%32?x=%41+b",
	};
	struct http_target t;
	char m[128];
	size_t i, n, len, bit, k, c;

	(void)state;
	for (i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
		len = strlen(seeds[i]);
		for (n = 0; n <= len; n++)
			(void)http_target_parse(seeds[i], n, &t);
		for (bit = 0; bit < len * 8; bit++) {
			memcpy(m, seeds[i], len);
			m[bit / 8] ^= (char)(1u << (bit % 8));
			if (http_target_parse(m, len, &t) != 0)
				continue;
			for (c = 0; t.path[c] != '\0'; c++)
				assert_true((unsigned char)t.path[c] >= 0x20);
			for (k = 0; k < t.nargs; k++)
				assert_true(strlen(t.args[k].key) > 0);
		}
	}
}

static void
test_routes_and_numbers(void **state)
{
	const char *arg;
	long long n;

	(void)state;
	assert_true(http_route_match("/healthz", "/healthz", 0, &arg));
	assert_null(arg);
	assert_false(http_route_match("/healthz/", "/healthz", 0, &arg));
	assert_true(http_route_match("/api/v1/slots/3", "/api/v1/slots/", 1,
	    &arg));
	assert_string_equal(arg, "3");
	assert_false(http_route_match("/api/v1/slots/", "/api/v1/slots/", 1,
	    &arg));
	assert_false(http_route_match("/api/v1/slots/3/x", "/api/v1/slots/",
	    1, &arg));
	assert_null(arg);

	assert_int_equal(http_parse_num("42", 0, 100, &n), 0);
	assert_int_equal(n, 42);
	assert_int_equal(http_parse_num("9223372036854775806", 0,
	    9223372036854775806LL, &n), 0);
	assert_int_equal(http_parse_num("99999999999999999999", 0,
	    9223372036854775806LL, &n), KL_ERR_INVALID);
	assert_int_equal(http_parse_num("-1", 0, 100, &n), KL_ERR_INVALID);
	assert_int_equal(http_parse_num(" 1", 0, 100, &n), KL_ERR_INVALID);
	assert_int_equal(http_parse_num("1x", 0, 100, &n), KL_ERR_INVALID);
	assert_int_equal(http_parse_num("", 0, 100, &n), KL_ERR_INVALID);
	assert_int_equal(http_parse_num("101", 0, 100, &n), KL_ERR_INVALID);
	assert_int_equal(http_parse_num(NULL, 0, 100, &n), KL_ERR_INVALID);
}

static void
check_fmt(double v, int decimals, int trim, const char *want)
{
	char out[64];

	assert_int_equal(http_fmt_double(out, sizeof(out), v, decimals, trim),
	    0);
	if (strcmp(out, want) != 0)
		fail_msg("%.17g (%d, %d): '%s', want '%s'", v, decimals, trim,
		    out, want);
}

static void
fmt_cases(void)
{
	char small[4];

	check_fmt(0.005, 6, 1, "0.005");
	check_fmt(0.1, 6, 1, "0.1");
	check_fmt(2.5, 6, 1, "2.5");
	check_fmt(60, 6, 1, "60");
	check_fmt(0, 6, 1, "0");
	check_fmt(0, 6, 0, "0.000000");
	check_fmt(9.664, 6, 0, "9.664000");
	check_fmt(-1.25, 2, 0, "-1.25");
	check_fmt(-0.0001, 2, 0, "0.00");
	check_fmt(1795377957.41, 2, 1, "1795377957.41");
	check_fmt(1e17, 6, 0, "100000000000000000");
	check_fmt(NAN, 6, 0, "NaN");
	check_fmt(INFINITY, 6, 0, "+Inf");
	check_fmt(-INFINITY, 6, 0, "-Inf");
	/* Near the uint64_t edge the fraction gives way, never wraps. */
	check_fmt(1000000000000.5, 9, 1, "1000000000000.5");
	assert_int_equal(http_fmt_double(small, sizeof(small), 12345, 0, 0),
	    KL_ERR_TOO_BIG);
	assert_string_equal(small, "");
}

static void
test_fmt(void **state)
{
	(void)state;
	fmt_cases();
}

/*
 * The same under de_DE.UTF-8, where printf's %g gives "0,005".  The
 * locale is made with localedef into a private LOCPATH when the system
 * has not got it; the test fails, not skips, if it cannot be had.
 */
static void
test_fmt_comma_locale(void **state)
{
	char g[32];

	(void)state;
	if (setlocale(LC_ALL, "de_DE.UTF-8") == NULL) {
		/* Not installed: compile it into a private LOCPATH, as
		 * 91-http-locale does (libc-bin's localedef, the locales
		 * package's sources; scripts/setup installs both). */
		char dir[] = "/tmp/kl-locale-XXXXXX", cmd[200];

		assert_non_null(mkdtemp(dir));
		snprintf(cmd, sizeof(cmd), "localedef -c -i de_DE -f UTF-8 "
		    "%s/de_DE.UTF-8 >/dev/null 2>&1", dir);
		(void)system(cmd);
		assert_int_equal(setenv("LOCPATH", dir, 1), 0);
		if (setlocale(LC_ALL, "de_DE.UTF-8") == NULL)
			fail_msg("de_DE.UTF-8 neither installed nor made with "
			    "localedef in %s", dir);
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		(void)system(cmd);
	}
	snprintf(g, sizeof(g), "%g", 0.005);
	/* The locale is really comma-decimal: the bug would show. */
	assert_string_equal(g, "0,005");
	fmt_cases();
	setlocale(LC_ALL, "C");
}

/* If-None-Match against the server's weak tag. */
static void
test_etag_match(void **state)
{
	static const char tag[] = "W/\"00ff00ff00ff00ff\"";
	static const struct {
		const char *list;
		int match;
	} cases[] = {
		{ "W/\"00ff00ff00ff00ff\"", 1 },
		{ "\"00ff00ff00ff00ff\"", 1 },	/* weak comparison */
		{ "*", 1 },
		{ "  *  ", 1 },
		{ "\"a\", W/\"00ff00ff00ff00ff\"", 1 },
		{ "\"a\",W/\"b\" ,\t\"00ff00ff00ff00ff\"", 1 },
		{ ", ,\"00ff00ff00ff00ff\"", 1 },	/* empty elements */
		{ "\"00ff00ff00ff00ff\",", 1 },
		{ "", 0 },
		{ "   ", 0 },
		{ "W/\"00ff00ff00ff00fe\"", 0 },
		{ "\"00FF00FF00FF00FF\"", 0 },	/* case matters */
		{ "W/\"00ff00ff00ff00ff", 0 },	/* no closing quote */
		{ "00ff00ff00ff00ff", 0 },	/* not quoted */
		{ "w/\"00ff00ff00ff00ff\"", 0 },
		{ "W/ \"00ff00ff00ff00ff\"", 0 },
		{ "\"a b\", \"00ff00ff00ff00ff\"", 0 },	/* bad element ends it */
		{ "\"a\" \"00ff00ff00ff00ff\"", 0 },	/* no comma */
		{ "**", 0 },
		{ "*, \"x\"", 0 },
	};
	char buf[64];
	size_t i, n, cut;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (http_etag_match(cases[i].list, strlen(cases[i].list),
		    tag) != cases[i].match)
			fail_msg("'%s' should %smatch", cases[i].list,
			    cases[i].match ? "" : "not ");
	}
	/* Only len bytes are read: every prefix of a matching value, in a
	 * buffer with no NUL after it, is looked at up to its length. */
	n = strlen(tag);
	for (cut = 0; cut < n; cut++) {
		memset(buf, '"', sizeof(buf));
		memcpy(buf, tag, cut);
		assert_int_equal(http_etag_match(buf, cut, tag), 0);
	}
	/* Bit flips of a matching value: no crash, a match only when the
	 * flip leaves the tag itself alone. */
	for (i = 0; i < n * 8; i++) {
		memcpy(buf, tag, n + 1);
		buf[i / 8] ^= (char)(1 << (i % 8));
		(void)http_etag_match(buf, n, tag);
	}
	assert_int_equal(http_etag_match(NULL, 0, tag), 0);
	assert_int_equal(http_etag_match(tag, HTTP_INM_MAX + 1, tag), 0);
	assert_int_equal(http_etag_match("*", 1, "bad"), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_targets),
		cmocka_unit_test(test_target_limits),
		cmocka_unit_test(test_target_mangled),
		cmocka_unit_test(test_routes_and_numbers),
		cmocka_unit_test(test_fmt),
		cmocka_unit_test(test_fmt_comma_locale),
		cmocka_unit_test(test_etag_match),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
