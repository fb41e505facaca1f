/*
 * fuzz_http.c: the status API's request-target parser and its helpers
 * (ui/http_parse.c): http_target_parse on the raw bytes a client sends,
 * then route matching, number arguments and the number formatter.
 *
 * Checks, beyond the sanitizers: a parsed target holds no NUL, control
 * character or DEL anywhere (the bug this parser replaced: %00 cut the
 * path short); its path starts with '/' and fits HTTP_PATH_MAX; its keys
 * are non-empty and distinct; percent-encoding the result and parsing it
 * again gives the same target (decoding is exact); a number argument
 * that parses prints back as the same digits; a formatted double has no
 * character a Prometheus parser would refuse (no ',', whatever the
 * locale); If-None-Match lists of any bytes are read within their
 * length.
 */
#include "tests/fuzz/fuzz.h"

#include <inttypes.h>

#include "common/err.h"
#include "ui/http_parse.h"

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_logs("fuzz_http");
	return 0;
}

static void
check_text(const char *s, size_t max, const char *what)
{
	size_t i, n = strnlen(s, max + 1);

	FUZZ_CHECK(n <= max, "%s longer than %zu", what, max);
	for (i = 0; i < n; i++)
		FUZZ_CHECK((unsigned char)s[i] >= 0x20 &&
		    (unsigned char)s[i] != 0x7f, "%s: byte 0x%02x at %zu", what,
		    (unsigned char)s[i], i);
}

/* Every byte %XX-encoded except unreserved ones: a target that must
 * parse back to exactly t. */
static size_t
encode(char *out, size_t outsz, const char *s, size_t o)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s != '\0' && o + 4 < outsz; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		    c == '_' || c == '~') {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	return o;
}

static void
check_roundtrip(const struct http_target *t)
{
	/* Worst case: every decoded byte becomes 3. */
	static char raw[3 * (HTTP_PATH_MAX + HTTP_ARGS_MAX *
	    (HTTP_ARG_KEY_MAX + HTTP_ARG_VALUE_MAX + 2)) + 16];
	struct http_target again;
	size_t o = 0, i;
	const char *seg;

	/* The path keeps its '/' separators unencoded. */
	for (seg = t->path; *seg != '\0'; seg++) {
		char one[2] = { *seg, '\0' };

		if (*seg == '/')
			raw[o++] = '/';
		else
			o = encode(raw, sizeof(raw), one, o);
	}
	for (i = 0; i < t->nargs; i++) {
		raw[o++] = i == 0 ? '?' : '&';
		o = encode(raw, sizeof(raw), t->args[i].key, o);
		raw[o++] = '=';
		o = encode(raw, sizeof(raw), t->args[i].value, o);
	}
	if (o > HTTP_TARGET_MAX)
		return;	/* the encoded form may not fit the raw limit */
	FUZZ_CHECK(http_target_parse(raw, o, &again) == 0,
	    "re-encoded target refused: %.*s", (int)o, raw);
	FUZZ_CHECK(strcmp(again.path, t->path) == 0, "path changed");
	FUZZ_CHECK(again.nargs == t->nargs, "argument count changed");
	for (i = 0; i < t->nargs; i++)
		FUZZ_CHECK(strcmp(again.args[i].key, t->args[i].key) == 0 &&
		    strcmp(again.args[i].value, t->args[i].value) == 0,
		    "argument %zu changed", i);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const routes[] = { "/api/v1/slots/",
	    "/api/v1/devices/", "/healthz" };
	struct http_target t;
	const char *arg;
	char num[32], fmt[64];
	long long n;
	double d;
	size_t i, j;
	int r;

	r = http_target_parse((const char *)data, size, &t);
	FUZZ_CHECK(r == 0 || r == KL_ERR_INVALID || r == KL_ERR_TOO_BIG,
	    "unexpected code %d", r);
	if (r == 0) {
		FUZZ_CHECK(t.path[0] == '/', "path without '/'");
		check_text(t.path, HTTP_PATH_MAX, "path");
		FUZZ_CHECK(t.nargs <= HTTP_ARGS_MAX, "%zu arguments", t.nargs);
		for (i = 0; i < t.nargs; i++) {
			check_text(t.args[i].key, HTTP_ARG_KEY_MAX, "key");
			check_text(t.args[i].value, HTTP_ARG_VALUE_MAX,
			    "value");
			FUZZ_CHECK(t.args[i].key[0] != '\0', "empty key");
			for (j = 0; j < i; j++)
				FUZZ_CHECK(strcmp(t.args[i].key,
				    t.args[j].key) != 0, "key twice");
			FUZZ_CHECK(http_target_arg(&t, t.args[i].key) ==
			    t.args[i].value, "lookup of a key");
			if (http_parse_num(t.args[i].value, 0, INT64_MAX - 1,
			    &n) == 0) {
				snprintf(num, sizeof(num), "%lld", n);
				FUZZ_CHECK(strcmp(num, t.args[i].value) == 0 ||
				    t.args[i].value[0] == '0',
				    "number %s read as %s", t.args[i].value,
				    num);
			}
		}
		for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
			if (http_route_match(t.path, routes[i], i < 2, &arg) &&
			    arg != NULL)
				FUZZ_CHECK(*arg != '\0' &&
				    strchr(arg, '/') == NULL,
				    "segment '%s'", arg);
		check_roundtrip(&t);
	}
	/* If-None-Match: any bytes, read within their length; then the
	 * same bytes (up to a NUL, without quotes) as one element of a
	 * list that ends with the tag itself. */
	{
		static const char tag[] = "W/\"0123456789abcdef\"";
		char list[HTTP_INM_MAX + 1];
		size_t m = size < HTTP_INM_MAX - sizeof(tag) - 2 ? size :
		    HTTP_INM_MAX - sizeof(tag) - 2;
		const char *nul = memchr(data, '\0', m);

		(void)http_etag_match((const char *)data, size, tag);
		if (nul != NULL)
			m = (size_t)(nul - (const char *)data);
		if (memchr(data, '"', m) == NULL) {
			memcpy(list, data, m);
			list[m] = ',';
			memcpy(list + m + 1, tag, sizeof(tag));
			(void)http_etag_match(list, strlen(list), tag);
		}
	}
	if (size >= sizeof(d) + 1) {
		memcpy(&d, data, sizeof(d));
		if (http_fmt_double(fmt, sizeof(fmt), d, data[sizeof(d)] % 10,
		    data[sizeof(d)] >> 7) == 0)
			FUZZ_CHECK(strspn(fmt, "0123456789.-+InfNa") ==
			    strlen(fmt) && strchr(fmt, ',') == NULL,
			    "formatted '%s'", fmt);
	}
	return 0;
}
