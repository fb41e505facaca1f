/*
 * devid.c: device IDs from a template (see devid.h).
 *
 * The ID ends up as the certificate's subject CN and as the name the OTA
 * server registers the board under, so both the template's literal text and
 * every substituted value are held to the same small alphabet; a serial
 * number read off a board cannot smuggle '/' or ',' or a second CN in.
 */
#include "station/config/devid.h"

#include <stdio.h>
#include <string.h>

#include "common/err.h"

#define DEVID_MAX_PLACEHOLDER 16

enum devid_var {
	DEVID_SERIAL,
	DEVID_MODEL,
	DEVID_HSM_SERIAL,
	DEVID_STATION,
};

static const struct {
	const char *name;
	enum devid_var var;
} devid_vars_table[] = {
	{ "serial", DEVID_SERIAL },
	{ "model", DEVID_MODEL },
	{ "hsm_serial", DEVID_HSM_SERIAL },
	{ "station", DEVID_STATION },
};

static int
devid_ok_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

int
devid_valid(const char *id)
{
	size_t i, n;

	if (id == NULL || (n = strnlen(id, DEVID_MAX + 1)) == 0 ||
	    n > DEVID_MAX || id[0] == '.' || id[0] == '-')
		return 0;
	for (i = 0; i < n; i++)
		if (!devid_ok_char(id[i]))
			return 0;
	return 1;
}

static const char *
devid_value(const struct devid_vars *v, enum devid_var var)
{
	switch (var) {
	case DEVID_SERIAL:
		return v->serial;
	case DEVID_MODEL:
		return v->model;
	case DEVID_HSM_SERIAL:
		return v->hsm_serial;
	case DEVID_STATION:
		return v->station;
	}
	return NULL;
}

/* Name between '{' at tmpl[*i] and the matching '}'; *i ends after '}'. */
static int
devid_placeholder(const char *tmpl, size_t *i, enum devid_var *var,
    char *why, size_t whysz)
{
	char name[DEVID_MAX_PLACEHOLDER + 1];
	size_t j, n = 0, k;

	for (j = *i + 1; tmpl[j] != '\0' && tmpl[j] != '}'; j++) {
		if (tmpl[j] == '{') {
			snprintf(why, whysz, "nested '{' at position %zu",
			    j + 1);
			return KL_ERR_INVALID;
		}
		if (n < DEVID_MAX_PLACEHOLDER)
			name[n] = tmpl[j];
		n++;
	}
	if (tmpl[j] != '}') {
		snprintf(why, whysz, "'{' at position %zu is not closed",
		    *i + 1);
		return KL_ERR_INVALID;
	}
	if (n <= DEVID_MAX_PLACEHOLDER) {
		name[n] = '\0';
		for (k = 0; k < sizeof(devid_vars_table) /
		    sizeof(devid_vars_table[0]); k++) {
			if (strcmp(name, devid_vars_table[k].name) == 0) {
				*var = devid_vars_table[k].var;
				*i = j + 1;
				return 0;
			}
		}
	}
	snprintf(why, whysz,
	    "unknown placeholder at position %zu (known: {serial} {model} "
	    "{hsm_serial} {station})", *i + 1);
	return KL_ERR_INVALID;
}

int
devid_check_template(const char *tmpl, char *why, size_t whysz)
{
	enum devid_var var;
	size_t i = 0;
	int rc;

	if (tmpl == NULL || tmpl[0] == '\0') {
		snprintf(why, whysz, "empty template");
		return KL_ERR_INVALID;
	}
	while (tmpl[i] != '\0') {
		if (tmpl[i] == '{') {
			if ((rc = devid_placeholder(tmpl, &i, &var, why,
			    whysz)) != 0)
				return rc;
			continue;
		}
		if (tmpl[i] == '}') {
			snprintf(why, whysz, "'}' at position %zu without '{'",
			    i + 1);
			return KL_ERR_INVALID;
		}
		if (!devid_ok_char(tmpl[i])) {
			snprintf(why, whysz,
			    "character at position %zu is not allowed in a "
			    "device ID (A-Z a-z 0-9 . _ -)", i + 1);
			return KL_ERR_INVALID;
		}
		i++;
	}
	return 0;
}

int
devid_expand(const char *tmpl, const struct devid_vars *v, char *out,
    size_t outsz, char *why, size_t whysz)
{
	char res[DEVID_MAX + 1];
	size_t i = 0, n = 0, k, vlen;
	enum devid_var var;
	const char *val;
	int rc;

	if ((rc = devid_check_template(tmpl, why, whysz)) != 0)
		return rc;
	if (v == NULL || out == NULL) {
		snprintf(why, whysz, "internal: no variables or output");
		return KL_ERR_INVALID;
	}
	while (tmpl[i] != '\0') {
		if (tmpl[i] != '{') {
			if (n >= DEVID_MAX)
				goto too_long;
			res[n++] = tmpl[i++];
			continue;
		}
		k = i;
		if ((rc = devid_placeholder(tmpl, &i, &var, why, whysz)) != 0)
			return rc;
		val = devid_value(v, var);
		if (val == NULL || val[0] == '\0') {
			/* An empty serial would give every board "model-". */
			snprintf(why, whysz, "{%.*s} is empty or unknown",
			    (int)(i - k - 2), tmpl + k + 1);
			return KL_ERR_INVALID;
		}
		vlen = strnlen(val, DEVID_MAX + 1);
		for (k = 0; k < vlen; k++) {
			if (!devid_ok_char(val[k])) {
				snprintf(why, whysz,
				    "value of a placeholder has a character "
				    "not allowed in a device ID (0x%02x at "
				    "position %zu)", (unsigned char)val[k],
				    k + 1);
				return KL_ERR_INVALID;
			}
		}
		if (vlen > DEVID_MAX - n)
			goto too_long;
		memcpy(res + n, val, vlen);
		n += vlen;
	}
	res[n] = '\0';
	if (n == 0) {
		snprintf(why, whysz, "device ID is empty");
		return KL_ERR_INVALID;
	}
	if (res[0] == '.' || res[0] == '-') {
		snprintf(why, whysz, "device ID '%s' starts with '%c'", res,
		    res[0]);
		return KL_ERR_INVALID;
	}
	if (n + 1 > outsz) {
		snprintf(why, whysz, "output buffer too small");
		return KL_ERR_INVALID;
	}
	memcpy(out, res, n + 1);
	return 0;

too_long:
	snprintf(why, whysz, "device ID longer than %d characters", DEVID_MAX);
	return KL_ERR_INVALID;
}
