/*
 * devid.h: device IDs from a template over the board's identity.
 *
 * "{model}-{serial}" with placeholders {serial}, {model}, {hsm_serial},
 * {station}.  The result becomes the certificate's CN and aktualizr's
 * device ID, so it is checked: 1..64 characters from [A-Za-z0-9._-], not
 * starting with '.' or '-'.
 */
#ifndef KL_DEVID_H
#define KL_DEVID_H

#include <stddef.h>

#define DEVID_MAX 64

struct devid_vars {
	const char *serial;
	const char *model;
	const char *hsm_serial;
	const char *station;
};

/* 0 if tmpl is well-formed (known placeholders, balanced braces, literal
 * characters allowed); else KL_ERR_INVALID with why. */
int devid_check_template(const char *tmpl, char *why, size_t whysz);

/* Whether id is a device ID by the rules above (1 for yes); for IDs that
 * come from outside, e.g. an HTTP path. */
int devid_valid(const char *id);

/* 0 and out, or KL_ERR_INVALID with why (bad template, bad character in a
 * value, result empty or too long). */
int devid_expand(const char *tmpl, const struct devid_vars *v, char *out,
    size_t outsz, char *why, size_t whysz);

#endif
