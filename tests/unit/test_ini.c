/* test_ini.c: the config line reader, with good, broken and hostile text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/ini.h"

/* What the callback saw, as "section|key|value\n" lines. */
struct seen {
	char log[4096];
	int calls;
	const char *fail_key;	/* return KL_ERR_CONFIG for this key */
};

static int
record(void *arg, const char *section, const char *key, const char *value,
    char *why, size_t whysz)
{
	struct seen *s = arg;
	size_t n = strlen(s->log);

	s->calls++;
	if (s->fail_key != NULL && strcmp(key, s->fail_key) == 0) {
		snprintf(why, whysz, "refused by test");
		return KL_ERR_CONFIG;
	}
	snprintf(s->log + n, sizeof(s->log) - n, "%s|%s|%s\n", section, key,
	    value);
	return 0;
}

static int
parse(const char *text, size_t len, struct seen *s, char *err, size_t errsz)
{
	memset(s->log, 0, sizeof(s->log));
	s->calls = 0;
	err[0] = '\0';
	return ini_parse_string("t.conf", text, len, record, s, err, errsz);
}

static void
test_good(void **state)
{
	const char *text =
	    "# comment\n"
	    "; other comment\n"
	    "top = level\n"
	    "\n"
	    "  [station]  \n"
	    "id=st-1\n"
	    "\tname \t=  spaced value  \r\n"
	    "empty =\n"
	    "url = https://h/x#frag;y=1\n"
	    "[link]\n"
	    "baud = 115200";	/* no final newline */
	struct seen s = { 0 };
	char err[256];

	(void)state;
	assert_int_equal(parse(text, strlen(text), &s, err, sizeof(err)), 0);
	assert_string_equal(s.log,
	    "|top|level\n"
	    "station|id|st-1\n"
	    "station|name|spaced value\n"
	    "station|empty|\n"
	    "station|url|https://h/x#frag;y=1\n"
	    "link|baud|115200\n");
	assert_int_equal(s.calls, 6);

	/* Empty text is a valid empty file. */
	assert_int_equal(parse("", 0, &s, err, sizeof(err)), 0);
	assert_int_equal(s.calls, 0);
}

/* Each bad text must fail with KL_ERR_CONFIG and a message that starts
 * with "t.conf:<line>: " and contains the expected words. */
struct bad_case {
	const char *text;
	size_t len;		/* 0 = strlen */
	const char *prefix;
	const char *words;
};

static void
test_bad_lines(void **state)
{
	static const struct bad_case cases[] = {
		{ "[a]\nno equals sign\n", 0, "t.conf:2: ",
		    "expected 'key = value'" },
		{ "[a]\nx = 1\n[broken\n", 0, "t.conf:3: ", "closing ']'" },
		{ "[]\n", 0, "t.conf:1: ", "empty section name" },
		{ "[a b]\n", 0, "t.conf:1: ", "bad character in section" },
		{ "[a]x\n", 0, "t.conf:1: ", "closing ']'" },
		{ "[a]\n= v\n", 0, "t.conf:2: ", "empty key name" },
		{ "[a]\nk y = v\n", 0, "t.conf:2: ", "bad character in key" },
		{ "[a]\nk\x01 = v\n", 0, "t.conf:2: ",
		    "control character 0x01 at column 2" },
		{ "[a]\nk = v\x1b[31m\n", 0, "t.conf:2: ",
		    "control character 0x1b" },
		{ "[a]\nk = v\x7f\n", 0, "t.conf:2: ",
		    "control character 0x7f" },
		{ "[a]\n# comment \x07 bell\n", 0, "t.conf:2: ",
		    "control character 0x07" },
		{ "[a]\nk = a\rb\n", 0, "t.conf:2: ",
		    "control character 0x0d" },
		{ "[a]\nk = a\tb\n", 0, "t.conf:2: [a] k: ",
		    "control character 0x09 in value" },
		{ "[a]\nk = v\0w\n", 12, "t.conf:2: ", "NUL byte at column 6" },
		{ "[a]\n\0", 5, "t.conf:2: ", "NUL byte" },
	};
	struct seen s = { 0 };
	char err[256];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct bad_case *c = &cases[i];
		size_t len = c->len ? c->len : strlen(c->text);

		assert_int_equal(parse(c->text, len, &s, err, sizeof(err)),
		    KL_ERR_CONFIG);
		if (strncmp(err, c->prefix, strlen(c->prefix)) != 0 ||
		    strstr(err, c->words) == NULL)
			fail_msg("case %zu: got '%s', want '%s...%s'", i, err,
			    c->prefix, c->words);
	}
}

static void
test_long_lines(void **state)
{
	char *text = malloc(INI_MAX_LINE + 64);
	struct seen s = { 0 };
	char err[256];
	size_t n;

	(void)state;
	assert_non_null(text);
	/* "[a]\n" then "k = " + value: exactly INI_MAX_LINE bytes is fine,
	 * even with "\r\n" after it. */
	memcpy(text, "[a]\nk = ", 8);
	memset(text + 8, 'v', INI_MAX_LINE - 4);
	memcpy(text + 4 + INI_MAX_LINE, "\r\n", 2);
	n = 4 + INI_MAX_LINE + 2;
	assert_int_equal(parse(text, n, &s, err, sizeof(err)), 0);
	assert_int_equal(s.calls, 1);

	/* One byte more is refused, with and without a newline. */
	memset(text + 8, 'v', INI_MAX_LINE - 3);
	text[4 + INI_MAX_LINE + 1] = '\n';
	assert_int_equal(parse(text, 4 + INI_MAX_LINE + 2, &s, err,
	    sizeof(err)), KL_ERR_CONFIG);
	assert_string_equal(err, "t.conf:2: line longer than 1024 bytes");
	assert_int_equal(parse(text, 4 + INI_MAX_LINE + 1, &s, err,
	    sizeof(err)), KL_ERR_CONFIG);
	assert_string_equal(err, "t.conf:2: line longer than 1024 bytes");
	assert_int_equal(s.calls, 0);
	free(text);

	/* A whole file of one giant line. */
	text = malloc(INI_MAX_FILE);
	assert_non_null(text);
	memset(text, 'x', INI_MAX_FILE);
	assert_int_equal(parse(text, INI_MAX_FILE, &s, err, sizeof(err)),
	    KL_ERR_CONFIG);
	assert_string_equal(err, "t.conf:1: line longer than 1024 bytes");
	/* Over the file cap. */
	assert_int_equal(parse(text, INI_MAX_FILE + 1, &s, err, sizeof(err)),
	    KL_ERR_CONFIG);
	assert_non_null(strstr(err, "larger than"));
	free(text);

	/* Over-long names. */
	{
		char name[INI_MAX_NAME + 16];

		memset(name, 0, sizeof(name));
		name[0] = '[';
		memset(name + 1, 's', INI_MAX_NAME);
		name[INI_MAX_NAME + 1] = ']';
		assert_int_equal(parse(name, strlen(name), &s, err,
		    sizeof(err)), KL_ERR_CONFIG);
		assert_non_null(strstr(err, "section name longer than 63"));
	}
}

static void
test_callback_error(void **state)
{
	const char *text = "[one]\na = 1\n\n[two]\nb = 2\nc = 3\n";
	struct seen s = { 0 };
	char err[256];

	(void)state;
	s.fail_key = "b";
	assert_int_equal(parse(text, strlen(text), &s, err, sizeof(err)),
	    KL_ERR_CONFIG);
	assert_string_equal(err, "t.conf:5: [two] b: refused by test");
	assert_int_equal(s.calls, 2);	/* stopped at the first error */

	/* A key before any section has no "[...]" in its message. */
	s.fail_key = "x";
	assert_int_equal(parse("x = 1\n", 6, &s, err, sizeof(err)),
	    KL_ERR_CONFIG);
	assert_string_equal(err, "t.conf:1: x: refused by test");

	/* A tiny err buffer is truncated, never overrun. */
	{
		char small[8];

		s.fail_key = "b";
		assert_int_equal(parse(text, strlen(text), &s, small,
		    sizeof(small)), KL_ERR_CONFIG);
		assert_string_equal(small, "t.conf:");
	}
}

/* Every truncation and every single-bit flip of a good file either parses
 * or fails with KL_ERR_CONFIG and a "t.conf:N: " message (sanitizers watch
 * for overreads). */
static void
test_truncated_and_flipped(void **state)
{
	const char *good =
	    "[station]\nid = st-1\naudit_db = a.db\n[link]\nbaud = 9600\n";
	size_t len = strlen(good), i, bit;
	struct seen s = { 0 };
	char err[256], *copy;
	int rc;

	(void)state;
	for (i = 0; i <= len; i++) {
		copy = malloc(i > 0 ? i : 1);
		assert_non_null(copy);
		memcpy(copy, good, i);
		rc = parse(copy, i, &s, err, sizeof(err));
		assert_true(rc == 0 || rc == KL_ERR_CONFIG);
		if (rc != 0)
			assert_int_equal(strncmp(err, "t.conf:", 7), 0);
		free(copy);
	}
	copy = malloc(len);
	assert_non_null(copy);
	for (i = 0; i < len; i++) {
		for (bit = 0; bit < 8; bit++) {
			memcpy(copy, good, len);
			copy[i] = (char)(copy[i] ^ (1 << bit));
			rc = parse(copy, len, &s, err, sizeof(err));
			assert_true(rc == 0 || rc == KL_ERR_CONFIG);
			if (rc != 0)
				assert_int_equal(strncmp(err, "t.conf:", 7),
				    0);
		}
	}
	free(copy);
}

static void
test_file(void **state)
{
	char dir[] = "/tmp/test_ini.XXXXXX", path[64], err[256];
	struct seen s = { 0 };
	FILE *f;
	char *big;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/a.conf", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("[x]\nk = v\nbad line\n", f);
	fclose(f);
	assert_int_equal(ini_parse_file(path, record, &s, err, sizeof(err)),
	    KL_ERR_CONFIG);
	{
		char want[128];

		snprintf(want, sizeof(want), "%s:3: expected", path);
		assert_int_equal(strncmp(err, want, strlen(want)), 0);
	}

	/* Too big on disk. */
	big = malloc(INI_MAX_FILE + 1);
	assert_non_null(big);
	memset(big, '\n', INI_MAX_FILE + 1);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(big, 1, INI_MAX_FILE + 1, f),
	    INI_MAX_FILE + 1);
	fclose(f);
	free(big);
	assert_int_equal(ini_parse_file(path, record, &s, err, sizeof(err)),
	    KL_ERR_CONFIG);
	assert_non_null(strstr(err, "larger than 262144 bytes"));
	unlink(path);

	/* Missing file and a directory. */
	assert_int_equal(ini_parse_file(path, record, &s, err, sizeof(err)),
	    KL_ERR_IO);
	assert_non_null(strstr(err, "No such file"));
	assert_int_equal(ini_parse_file(dir, record, &s, err, sizeof(err)),
	    KL_ERR_IO);
	assert_non_null(strstr(err, "not a regular file"));
	/* A FIFO nobody writes to: refused at once, not a hang in open(). */
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(ini_parse_file(path, record, &s, err, sizeof(err)),
	    KL_ERR_IO);
	assert_non_null(strstr(err, "not a regular file"));
	unlink(path);
	rmdir(dir);
}

static void
test_helpers(void **state)
{
	char why[128], out[16];
	long n;
	int b;

	(void)state;
	assert_int_equal(ini_to_bool("Yes", &b, why, sizeof(why)), 0);
	assert_int_equal(b, 1);
	assert_int_equal(ini_to_bool("off", &b, why, sizeof(why)), 0);
	assert_int_equal(b, 0);
	assert_int_equal(ini_to_bool("maybe", &b, why, sizeof(why)),
	    KL_ERR_CONFIG);
	assert_string_equal(why, "not yes/no: 'maybe'");

	assert_int_equal(ini_to_long("42", 1, 100, &n, why, sizeof(why)), 0);
	assert_int_equal(n, 42);
	assert_int_equal(ini_to_long("-5", -10, 10, &n, why, sizeof(why)), 0);
	assert_int_equal(n, -5);
	n = 7;
	assert_int_equal(ini_to_long("fast", 1, 100, &n, why, sizeof(why)),
	    KL_ERR_CONFIG);
	assert_string_equal(why, "not a number: 'fast'");
	assert_int_equal(n, 7);
	assert_int_equal(ini_to_long("12x", 1, 100, &n, why, sizeof(why)),
	    KL_ERR_CONFIG);
	assert_int_equal(ini_to_long("", 1, 100, &n, why, sizeof(why)),
	    KL_ERR_CONFIG);
	assert_int_equal(ini_to_long("+5", 1, 100, &n, why, sizeof(why)),
	    KL_ERR_CONFIG);
	assert_int_equal(ini_to_long("0x10", 0, 100, &n, why, sizeof(why)),
	    KL_ERR_CONFIG);
	assert_int_equal(ini_to_long("101", 1, 100, &n, why, sizeof(why)),
	    KL_ERR_CONFIG);
	assert_string_equal(why, "out of range 1..100: '101'");
	assert_int_equal(ini_to_long("99999999999999999999999", 1, 100, &n,
	    why, sizeof(why)), KL_ERR_CONFIG);

	assert_int_equal(ini_to_str("fits", out, sizeof(out), why,
	    sizeof(why)), 0);
	assert_string_equal(out, "fits");
	assert_int_equal(ini_to_str("0123456789abcdef", out, sizeof(out), why,
	    sizeof(why)), KL_ERR_CONFIG);
	assert_string_equal(why, "longer than 15 characters");

	assert_int_equal(ini_to_path("a.db", "/etc/kl", out, sizeof(out),
	    why, sizeof(why)), 0);
	assert_string_equal(out, "/etc/kl/a.db");
	assert_int_equal(ini_to_path("a.db", "/etc/kl/", out, sizeof(out),
	    why, sizeof(why)), 0);
	assert_string_equal(out, "/etc/kl/a.db");
	assert_int_equal(ini_to_path("/abs/x", "/etc/kl", out, sizeof(out),
	    why, sizeof(why)), 0);
	assert_string_equal(out, "/abs/x");
	assert_int_equal(ini_to_path("", "/etc", out, sizeof(out), why,
	    sizeof(why)), KL_ERR_CONFIG);
	assert_int_equal(ini_to_path("long-file-name", "/etc/kl", out,
	    sizeof(out), why, sizeof(why)), KL_ERR_CONFIG);
	assert_non_null(strstr(why, "path longer than 15"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_bad_lines),
		cmocka_unit_test(test_long_lines),
		cmocka_unit_test(test_callback_error),
		cmocka_unit_test(test_truncated_and_flipped),
		cmocka_unit_test(test_file),
		cmocka_unit_test(test_helpers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
