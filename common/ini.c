/*
 * ini.c: the line reader behind station.conf and board.conf (see ini.h).
 *
 * The text is walked through a struct buf_reader, one line at a time; a line
 * is checked (length, NUL, control characters) before anything looks at its
 * content.  There are no inline comments and no quoting: everything after
 * "=" up to the end of the line, trimmed, is the value, so a URL with '#' or
 * ';' in it stays intact.
 */
#include "common/ini.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/fsutil.h"

/* A line without its terminator, borrowed from the text. */
struct ini_line {
	const uint8_t *p;
	size_t len;
};

static int
ini_is_space(uint8_t c)
{
	return c == ' ' || c == '\t';
}

/* Section and key names: ASCII letters, digits, '_', '-', '.'. */
static int
ini_is_name_char(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
}

/*
 * Take the next line off r.  A line ends at '\n' (a '\r' before it is
 * dropped) or at the end of the text.  Lines over INI_MAX_LINE bytes are
 * refused here so nothing later sees them.
 */
static int
ini_next_line(struct buf_reader *r, struct ini_line *l, char *why,
    size_t whysz)
{
	struct buf_reader peek = *r;
	size_t rem = buf_reader_remaining(r), scan, n;
	const uint8_t *p, *nl;

	if (buf_get_bytes(&peek, rem, &p) != 0)
		return KL_ERR_INTERNAL;
	/* Look no further than one line's worth (+ "\r\n"). */
	scan = rem < INI_MAX_LINE + 2 ? rem : INI_MAX_LINE + 2;
	nl = memchr(p, '\n', scan);
	n = nl != NULL ? (size_t)(nl - p) : scan;
	l->p = p;
	l->len = n;
	if (l->len > 0 && p[l->len - 1] == '\r')
		l->len--;
	if (l->len > INI_MAX_LINE) {
		snprintf(why, whysz, "line longer than %d bytes",
		    INI_MAX_LINE);
		return KL_ERR_CONFIG;
	}
	/* Here n < scan or scan == rem: the '\n', if any, is consumed. */
	if (buf_skip(r, nl != NULL ? n + 1 : n) != 0)
		return KL_ERR_INTERNAL;
	return 0;
}

/* NUL and control characters (tab aside) are refused on every line,
 * comments included: they have no business in a config file. */
static int
ini_check_chars(const struct ini_line *l, char *why, size_t whysz)
{
	size_t i;

	for (i = 0; i < l->len; i++) {
		uint8_t c = l->p[i];

		if (c == 0) {
			snprintf(why, whysz, "NUL byte at column %zu", i + 1);
			return KL_ERR_CONFIG;
		}
		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			snprintf(why, whysz,
			    "control character 0x%02x at column %zu", c,
			    i + 1);
			return KL_ERR_CONFIG;
		}
	}
	return 0;
}

static void
ini_trim(const uint8_t **p, size_t *len)
{
	while (*len > 0 && ini_is_space((*p)[0])) {
		(*p)++;
		(*len)--;
	}
	while (*len > 0 && ini_is_space((*p)[*len - 1]))
		(*len)--;
}

/* Copy a name into out (INI_MAX_NAME bytes), checking its characters. */
static int
ini_take_name(const uint8_t *p, size_t len, const char *what, char *out,
    char *why, size_t whysz)
{
	size_t i;

	if (len == 0) {
		snprintf(why, whysz, "empty %s name", what);
		return KL_ERR_CONFIG;
	}
	if (len >= INI_MAX_NAME) {
		snprintf(why, whysz, "%s name longer than %d characters",
		    what, INI_MAX_NAME - 1);
		return KL_ERR_CONFIG;
	}
	for (i = 0; i < len; i++) {
		if (!ini_is_name_char(p[i])) {
			snprintf(why, whysz,
			    "bad character in %s name (allowed: A-Z a-z 0-9 "
			    "_ - .)", what);
			return KL_ERR_CONFIG;
		}
	}
	memcpy(out, p, len);
	out[len] = '\0';
	return 0;
}

static size_t
ini_find(const uint8_t *p, size_t len, uint8_t c)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i] == c)
			return i;
	return len;
}

int
ini_parse_string(const char *name, const char *text, size_t len,
    ini_cb cb, void *arg, char *err, size_t errsz)
{
	char section[INI_MAX_NAME] = "", key[INI_MAX_NAME];
	char value[INI_MAX_LINE + 1], why[256];
	struct buf_reader r;
	struct ini_line l;
	unsigned long lineno = 0;
	const uint8_t *p;
	size_t n, eq;
	int rc;

	if (name == NULL)
		name = "(config)";
	if (text == NULL && len > 0)
		return KL_ERR_INVALID;
	if (len > INI_MAX_FILE) {
		snprintf(err, errsz, "%s: larger than %d bytes", name,
		    INI_MAX_FILE);
		return KL_ERR_CONFIG;
	}
	buf_reader_init(&r, text, len);
	while (buf_reader_remaining(&r) > 0) {
		lineno++;
		why[0] = '\0';
		if ((rc = ini_next_line(&r, &l, why, sizeof(why))) != 0 ||
		    (rc = ini_check_chars(&l, why, sizeof(why))) != 0)
			goto line_err;
		p = l.p;
		n = l.len;
		ini_trim(&p, &n);
		if (n == 0 || p[0] == '#' || p[0] == ';')
			continue;
		if (p[0] == '[') {
			if (p[n - 1] != ']') {
				snprintf(why, sizeof(why),
				    "section header without closing ']'");
				rc = KL_ERR_CONFIG;
				goto line_err;
			}
			p++;
			n -= 2;
			ini_trim(&p, &n);
			if ((rc = ini_take_name(p, n, "section", section, why,
			    sizeof(why))) != 0) {
				section[0] = '\0';
				goto line_err;
			}
			continue;
		}
		eq = ini_find(p, n, '=');
		if (eq == n) {
			snprintf(why, sizeof(why),
			    "expected 'key = value', '[section]' or a comment");
			rc = KL_ERR_CONFIG;
			goto line_err;
		}
		{
			const uint8_t *kp = p, *vp = p + eq + 1;
			size_t kn = eq, vn = n - eq - 1;

			ini_trim(&kp, &kn);
			ini_trim(&vp, &vn);
			if ((rc = ini_take_name(kp, kn, "key", key, why,
			    sizeof(why))) != 0)
				goto line_err;
			/* A tab inside a value is a control character too;
			 * only the surrounding blanks were allowed. */
			if (ini_find(vp, vn, '\t') != vn) {
				snprintf(err, errsz,
				    "%s:%lu: %s%s%s%s: control character 0x09 "
				    "in value", name, lineno,
				    section[0] ? "[" : "", section,
				    section[0] ? "] " : "", key);
				/* The last value seen may be a PIN. */
				buf_wipe(value, sizeof(value));
				return KL_ERR_CONFIG;
			}
			memcpy(value, vp, vn);
			value[vn] = '\0';
		}
		why[0] = '\0';
		rc = cb(arg, section, key, value, why, sizeof(why));
		if (rc != 0) {
			if (rc > 0)
				rc = KL_ERR_INTERNAL;
			snprintf(err, errsz, "%s:%lu: %s%s%s%s: %s", name,
			    lineno, section[0] ? "[" : "", section,
			    section[0] ? "] " : "", key,
			    why[0] ? why : kl_strerror(rc));
			buf_wipe(value, sizeof(value));
			return rc;
		}
	}
	/* The last value seen may be a PIN (board.conf). */
	buf_wipe(value, sizeof(value));
	return 0;

line_err:
	buf_wipe(value, sizeof(value));
	snprintf(err, errsz, "%s:%lu: %s", name, lineno,
	    why[0] ? why : kl_strerror(rc));
	return rc;
}

int
ini_parse_file(const char *path, ini_cb cb, void *arg, char *err,
    size_t errsz)
{
	uint8_t *text = NULL;
	size_t len = 0;
	int r;

	r = fsutil_read_capped(path, INI_MAX_FILE, &text, &len, err, errsz);
	if (r == KL_ERR_TOO_BIG)
		r = KL_ERR_CONFIG;
	if (r == 0)
		r = ini_parse_string(path, (const char *)text, len, cb, arg,
		    err, errsz);
	/* board.conf holds the token PIN. */
	buf_wipe(text, len);
	free(text);
	return r;
}

/* --- value helpers */

struct ini_bool_word {
	const char *word;
	int value;
};

static const struct ini_bool_word ini_bool_words[] = {
	{ "yes", 1 }, { "true", 1 }, { "on", 1 }, { "1", 1 },
	{ "no", 0 }, { "false", 0 }, { "off", 0 }, { "0", 0 },
};

int
ini_to_bool(const char *v, int *out, char *why, size_t whysz)
{
	size_t i;

	for (i = 0; i < sizeof(ini_bool_words) / sizeof(ini_bool_words[0]);
	    i++) {
		if (strcasecmp(v, ini_bool_words[i].word) == 0) {
			*out = ini_bool_words[i].value;
			return 0;
		}
	}
	snprintf(why, whysz, "not yes/no: '%s'", v);
	return KL_ERR_CONFIG;
}

int
ini_to_long(const char *v, long min, long max, long *out, char *why,
    size_t whysz)
{
	const char *s = v;
	char *end = NULL;
	long n;

	/* strtol alone would take " 12", "+12" and "0x1f"; only plain
	 * decimal with an optional '-' is a number here. */
	if (*s == '-')
		s++;
	if (*s < '0' || *s > '9') {
		snprintf(why, whysz, "not a number: '%s'", v);
		return KL_ERR_CONFIG;
	}
	errno = 0;
	n = strtol(v, &end, 10);
	if (end == NULL || *end != '\0') {
		snprintf(why, whysz, "not a number: '%s'", v);
		return KL_ERR_CONFIG;
	}
	if (errno == ERANGE || n < min || n > max) {
		snprintf(why, whysz, "out of range %ld..%ld: '%s'", min, max,
		    v);
		return KL_ERR_CONFIG;
	}
	*out = n;
	return 0;
}

int
ini_to_str(const char *v, char *out, size_t outsz, char *why, size_t whysz)
{
	size_t n = strlen(v);

	if (outsz == 0 || n >= outsz) {
		snprintf(why, whysz, "longer than %zu characters",
		    outsz > 0 ? outsz - 1 : 0);
		return KL_ERR_CONFIG;
	}
	memcpy(out, v, n + 1);
	return 0;
}

int
ini_to_path(const char *v, const char *base_dir, char *out, size_t outsz,
    char *why, size_t whysz)
{
	int n;

	if (v[0] == '\0') {
		snprintf(why, whysz, "empty path");
		return KL_ERR_CONFIG;
	}
	if (v[0] == '/' || base_dir == NULL || base_dir[0] == '\0')
		return ini_to_str(v, out, outsz, why, whysz);
	n = snprintf(out, outsz, "%s%s%s", base_dir,
	    base_dir[strlen(base_dir) - 1] == '/' ? "" : "/", v);
	if (n < 0 || (size_t)n >= outsz) {
		if (outsz > 0)
			out[0] = '\0';
		snprintf(why, whysz, "path longer than %zu characters",
		    outsz > 0 ? outsz - 1 : 0);
		return KL_ERR_CONFIG;
	}
	return 0;
}
