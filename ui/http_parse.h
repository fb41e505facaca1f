/*
 * http_parse.h: the text the status API takes in and gives out, apart
 * from libmicrohttpd so the unit tests and the fuzzer (tests/fuzz/
 * fuzz_http.c) reach it without a server.
 *
 * In: the request target exactly as the client sent it (path and query,
 * still percent-encoded), split and decoded here rather than by
 * libmicrohttpd, which decodes %00 into a NUL that silently ends the
 * path ("/api/v1/status%00.json" became "/api/v1/status").  Out: numbers
 * for machines (Prometheus, JSON) without printf's %f/%g, whose decimal
 * point follows LC_NUMERIC.
 */
#ifndef KL_HTTP_PARSE_H
#define KL_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

/* Longest path we route (decoded); every real one is far shorter. */
#define HTTP_PATH_MAX 256
/* Longest request target (path and query, as sent) we look at. */
#define HTTP_TARGET_MAX 1024
/* Query arguments: no route takes more than two. */
#define HTTP_ARGS_MAX 8
#define HTTP_ARG_KEY_MAX 32
#define HTTP_ARG_VALUE_MAX 64

struct http_arg {
	char key[HTTP_ARG_KEY_MAX + 1];
	char value[HTTP_ARG_VALUE_MAX + 1];
};

struct http_target {
	char path[HTTP_PATH_MAX + 1];	/* decoded, starts with '/' */
	size_t nargs;
	struct http_arg args[HTTP_ARGS_MAX];
};

/*
 * Split and percent-decode a request target of len bytes ("/p?k=v&k2").
 * 0 and *t; KL_ERR_TOO_BIG: the target or the decoded path is too long
 * (414); KL_ERR_INVALID: not starting with '/', a NUL (raw or %00), a
 * control character, a '%' not followed by two hex digits, an empty key,
 * a key or value too long, a key given twice, or more than HTTP_ARGS_MAX
 * arguments (400).  In the query '+' is a space, as in HTML forms.
 */
int http_target_parse(const char *raw, size_t len, struct http_target *t);

/* The value of argument key, or NULL (borrowed from t). */
const char *http_target_arg(const struct http_target *t, const char *key);

/*
 * Whether path matches a route: exactly, or (segment set, route ending in
 * '/') as the route followed by one non-empty segment without '/'; *arg
 * is then that segment (borrowed from path), else NULL.
 */
int http_route_match(const char *path, const char *route, int segment,
    const char **arg);

/*
 * A decimal whole number in min..max (min >= 0): digits only, no sign,
 * no spaces, at most 19 of them.  0 and *out, or KL_ERR_INVALID.
 */
int http_parse_num(const char *v, long long min, long long max,
    long long *out);

/* Longest If-None-Match value looked at; a longer one matches nothing. */
#define HTTP_INM_MAX 4096

/*
 * Whether an If-None-Match value (len bytes: "*", or entity-tags
 * separated by commas) names etag, compared weakly as RFC 9110 13.1.2
 * asks: W/ is ignored on both sides, the quoted opaque tags must be the
 * same bytes.  etag is the server's own, e.g. W/"0123abcd".  1 or 0; a
 * malformed list matches nothing (the full answer is sent).
 */
int http_etag_match(const char *list, size_t len, const char *etag);

/*
 * v formatted for a machine whatever the locale: '.' as the decimal point,
 * no grouping; "NaN", "+Inf", "-Inf" as Prometheus spells them.  decimals
 * (0..9) digits after the point, or with trim set only as many as needed
 * ("0.005", "1", "2.5").  Magnitudes too large for a fraction to mean
 * anything (>= 2^53) are printed whole.  0, or KL_ERR_TOO_BIG when out
 * is too small (out is then "").
 */
int http_fmt_double(char *out, size_t outsz, double v, int decimals,
    int trim);

#endif
