/*
 * http_parse.c: request targets in, numbers out (see http_parse.h).
 *
 * Nothing here knows libmicrohttpd: the server hands over the target it
 * received (the URI log callback sees it before MHD decodes anything) and
 * routes on what http_target_parse makes of it, so the fuzzer exercises
 * exactly the parser that decides what a request asks for.
 */
#include "ui/http_parse.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"

static int
http_hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Decode n bytes of r into out (at most max bytes, then a NUL).  A NUL in
 * any form is refused: every consumer of the result is a C string, and a
 * NUL would make it mean less than what was sent.  Control characters
 * have no business in a path or an argument either.  over is returned
 * when the result does not fit (the caller picks 414 or 400).
 */
static int
http_decode(struct buf_reader *r, size_t n, char *out, size_t max,
    int plus_space, int over)
{
	size_t end = r->off + n, o = 0;
	uint8_t c, h, l;
	int hi, lo;

	while (r->off < end) {
		if (buf_get_u8(r, &c) != 0)
			return KL_ERR_INVALID;
		if (c == '%') {
			if (end - r->off < 2 || buf_get_u8(r, &h) != 0 ||
			    buf_get_u8(r, &l) != 0)
				return KL_ERR_INVALID;
			if ((hi = http_hexval(h)) < 0 ||
			    (lo = http_hexval(l)) < 0)
				return KL_ERR_INVALID;
			c = (uint8_t)(hi << 4 | lo);
		} else if (c == '+' && plus_space) {
			c = ' ';
		}
		if (c < 0x20 || c == 0x7f)
			return KL_ERR_INVALID;
		if (o >= max)
			return over;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return 0;
}

/* Index of the first byte c in r's remaining bytes, or the remaining
 * length when there is none. */
static size_t
http_span_to(const struct buf_reader *r, uint8_t c)
{
	const uint8_t *p = r->data + r->off;
	const uint8_t *q = memchr(p, c, buf_reader_remaining(r));

	return q != NULL ? (size_t)(q - p) : buf_reader_remaining(r);
}

static int
http_query_parse(struct buf_reader *r, struct http_target *t)
{
	struct http_arg *a;
	size_t n, k, i;
	int rc;

	while (buf_reader_remaining(r) > 0) {
		n = http_span_to(r, '&');
		if (n == 0) {		/* "&&" or a trailing '&' */
			(void)buf_skip(r, 1);
			continue;
		}
		if (t->nargs >= HTTP_ARGS_MAX)
			return KL_ERR_INVALID;
		a = &t->args[t->nargs];
		/* The key ends at the first '=' inside this argument. */
		k = http_span_to(r, '=');
		if (k > n)
			k = n;
		if (k == 0)
			return KL_ERR_INVALID;
		if ((rc = http_decode(r, k, a->key, HTTP_ARG_KEY_MAX, 1,
		    KL_ERR_INVALID)) != 0)
			return rc;
		if (a->key[0] == '\0')
			return KL_ERR_INVALID;
		a->value[0] = '\0';
		if (k < n) {
			(void)buf_skip(r, 1);	/* '=' */
			if ((rc = http_decode(r, n - k - 1, a->value,
			    HTTP_ARG_VALUE_MAX, 1, KL_ERR_INVALID)) != 0)
				return rc;
		}
		/* Twice the same key: which one counts would depend on who
		 * reads it, so neither does. */
		for (i = 0; i < t->nargs; i++)
			if (strcmp(t->args[i].key, a->key) == 0)
				return KL_ERR_INVALID;
		t->nargs++;
		if (buf_reader_remaining(r) > 0)
			(void)buf_skip(r, 1);	/* '&' */
	}
	return 0;
}

int
http_target_parse(const char *raw, size_t len, struct http_target *t)
{
	struct buf_reader r;
	size_t n;
	int rc;

	if (raw == NULL || t == NULL)
		return KL_ERR_INVALID;
	memset(t, 0, sizeof(*t));
	if (len > HTTP_TARGET_MAX)
		return KL_ERR_TOO_BIG;
	if (len == 0 || raw[0] != '/' || memchr(raw, '\0', len) != NULL)
		return KL_ERR_INVALID;
	buf_reader_init(&r, raw, len);
	n = http_span_to(&r, '?');
	/* The fragment never reaches a server; a '#' is a client's bug. */
	if (memchr(raw, '#', len) != NULL)
		return KL_ERR_INVALID;
	if ((rc = http_decode(&r, n, t->path, HTTP_PATH_MAX, 0,
	    KL_ERR_TOO_BIG)) != 0)
		return rc;
	if (buf_reader_remaining(&r) > 0) {
		(void)buf_skip(&r, 1);	/* '?' */
		if ((rc = http_query_parse(&r, t)) != 0)
			return rc;
	}
	return 0;
}

const char *
http_target_arg(const struct http_target *t, const char *key)
{
	size_t i;

	for (i = 0; i < t->nargs && i < HTTP_ARGS_MAX; i++)
		if (strcmp(t->args[i].key, key) == 0)
			return t->args[i].value;
	return NULL;
}

int
http_route_match(const char *path, const char *route, int segment,
    const char **arg)
{
	size_t n;

	*arg = NULL;
	if (!segment)
		return strcmp(path, route) == 0;
	n = strlen(route);
	if (strncmp(path, route, n) != 0 || path[n] == '\0' ||
	    strchr(path + n, '/') != NULL)
		return 0;
	*arg = path + n;
	return 1;
}

int
http_parse_num(const char *v, long long min, long long max, long long *out)
{
	char *end = NULL;
	long long n;

	if (v == NULL || v[0] < '0' || v[0] > '9' || strnlen(v, 20) > 19)
		return KL_ERR_INVALID;
	errno = 0;
	n = strtoll(v, &end, 10);
	if (errno != 0 || end == NULL || *end != '\0' || n < min || n > max)
		return KL_ERR_INVALID;
	*out = n;
	return 0;
}

int
http_fmt_double(char *out, size_t outsz, double v, int decimals, int trim)
{
	static const uint64_t pow10[] = { 1, 10, 100, 1000, 10000, 100000,
	    1000000, 10000000, 100000000, 1000000000 };
	char frac[16];
	uint64_t n, ip, fp;
	double a;
	int neg, w, len;

	if (out == NULL || outsz == 0)
		return KL_ERR_TOO_BIG;
	out[0] = '\0';
	frac[0] = '\0';
	if (decimals < 0)
		decimals = 0;
	if (decimals > 9)
		decimals = 9;
	if (isnan(v))
		w = snprintf(out, outsz, "NaN");
	else if (isinf(v))
		w = snprintf(out, outsz, "%s", v > 0 ? "+Inf" : "-Inf");
	else if (fabs(v) >= 9007199254740992.0)
		/* Whole anyway; precision 0 prints no radix character, so
		 * no locale can put one in. */
		w = snprintf(out, outsz, "%.0f", v);
	else {
		neg = v < 0;
		a = fabs(v);
		/* Only digits the double holds: a * 10^decimals stays below
		 * 2^53, where every whole number is exact. */
		while (decimals > 0 &&
		    a * (double)pow10[decimals] >= 9007199254740992.0)
			decimals--;
		/* Half up by hand: no libm in the station's link. */
		n = (uint64_t)(a * (double)pow10[decimals] + 0.5);
		ip = n / pow10[decimals];
		fp = n % pow10[decimals];
		len = 0;
		if (decimals > 0) {
			/* Zero-padded to decimals digits, by hand. */
			for (len = decimals; len > 0; len--) {
				frac[len - 1] = (char)('0' + fp % 10);
				fp /= 10;
			}
			len = decimals;
			while (trim && len > 0 && frac[len - 1] == '0')
				len--;
			frac[len] = '\0';
		}
		w = snprintf(out, outsz, "%s%" PRIu64 "%s%s",
		    neg && n != 0 ? "-" : "", ip, len > 0 ? "." : "", frac);
	}
	if (w < 0 || (size_t)w >= outsz) {
		out[0] = '\0';
		return KL_ERR_TOO_BIG;
	}
	return 0;
}

/* The quoted opaque tag of one entity-tag, W/ skipped: *p and *n. */
static int
http_etag_opaque(struct buf_reader *r, const uint8_t **p, size_t *n)
{
	const uint8_t *w, *q;
	uint8_t c;
	size_t len;

	if (buf_reader_remaining(r) >= 2 && r->data[r->off] == 'W' &&
	    r->data[r->off + 1] == '/')
		(void)buf_get_bytes(r, 2, &w);
	if (buf_reader_remaining(r) < 2 || r->data[r->off] != '"')
		return KL_ERR_INVALID;
	/* etagc: '!', '#'..'~', obs-text; up to the closing quote. */
	for (len = 1; len < buf_reader_remaining(r); len++) {
		c = r->data[r->off + len];
		if (c == '"')
			break;
		if (c < 0x21 || c == 0x7f)
			return KL_ERR_INVALID;
	}
	if (len >= buf_reader_remaining(r))
		return KL_ERR_INVALID;	/* no closing quote */
	if (buf_get_bytes(r, len + 1, &q) != 0)
		return KL_ERR_INVALID;
	*p = q;
	*n = len + 1;
	return 0;
}

static void
http_skip_ows(struct buf_reader *r)
{
	while (buf_reader_remaining(r) > 0 &&
	    (r->data[r->off] == ' ' || r->data[r->off] == '\t'))
		(void)buf_skip(r, 1);
}

int
http_etag_match(const char *list, size_t len, const char *etag)
{
	struct buf_reader r, er;
	const uint8_t *mine, *theirs;
	size_t nmine, ntheirs;

	if (list == NULL || etag == NULL || len > HTTP_INM_MAX)
		return 0;
	buf_reader_init(&er, etag, strlen(etag));
	if (http_etag_opaque(&er, &mine, &nmine) != 0)
		return 0;
	buf_reader_init(&r, list, len);
	http_skip_ows(&r);
	if (buf_reader_remaining(&r) > 0 && r.data[r.off] == '*') {
		(void)buf_skip(&r, 1);
		http_skip_ows(&r);
		return buf_reader_remaining(&r) == 0;
	}
	for (;;) {
		http_skip_ows(&r);
		if (buf_reader_remaining(&r) == 0)
			return 0;
		if (r.data[r.off] == ',') {	/* empty list element */
			(void)buf_skip(&r, 1);
			continue;
		}
		if (http_etag_opaque(&r, &theirs, &ntheirs) != 0)
			return 0;
		if (ntheirs == nmine && memcmp(theirs, mine, nmine) == 0)
			return 1;
		http_skip_ows(&r);
		if (buf_reader_remaining(&r) == 0)
			return 0;
		if (r.data[r.off] != ',')
			return 0;
		(void)buf_skip(&r, 1);
	}
}
