/*
 * fuzz_ini.c: the line reader behind station.conf and board.conf
 * (common/ini.c), with a callback that runs every value helper on what
 * it is handed.
 *
 * Checks: what reaches the callback obeys ini.h (names shorter than
 * INI_MAX_NAME and made of what ini.c allows, values without control
 * characters, at most INI_MAX_LINE), the error text is one terminated
 * line that names the file, and the helpers' outputs fit their buffers.
 */
#include "tests/fuzz/fuzz.h"

#include "common/err.h"
#include "common/ini.h"
#include "common/log.h"

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_logs("fuzz_ini");
	return 0;
}

static int
fz_cb(void *arg, const char *section, const char *key, const char *value,
    char *why, size_t whysz)
{
	char out[64], path[128];
	long l;
	int b;
	size_t i, n = strlen(value);
	unsigned *calls = arg;

	(*calls)++;
	FUZZ_CHECK(strlen(section) < INI_MAX_NAME && strlen(key) > 0 &&
	    strlen(key) < INI_MAX_NAME, "name length");
	FUZZ_CHECK(n <= INI_MAX_LINE, "value of %zu bytes", n);
	for (i = 0; i < n; i++)
		FUZZ_CHECK((unsigned char)value[i] >= 0x20 &&
		    (unsigned char)value[i] != 0x7f,
		    "control character 0x%02x in a value",
		    (unsigned char)value[i]);
	if (ini_to_bool(value, &b, why, whysz) == 0)
		FUZZ_CHECK(b == 0 || b == 1, "bool %d", b);
	if (ini_to_long(value, -1000, 1000000, &l, why, whysz) == 0)
		FUZZ_CHECK(l >= -1000 && l <= 1000000, "long %ld", l);
	if (ini_to_str(value, out, sizeof(out), why, whysz) == 0)
		FUZZ_CHECK(strcmp(out, value) == 0, "str");
	if (ini_to_path(value, "/base/dir", path, sizeof(path), why,
	    whysz) == 0)
		FUZZ_CHECK(strlen(path) < sizeof(path), "path");
	FUZZ_CHECK(strlen(why) < whysz, "why");
	/* Stop at a key the input chooses, as a config does on a bad value. */
	if (strcmp(key, "fail") == 0) {
		snprintf(why, whysz, "refused '%.40s'", value);
		return KL_ERR_CONFIG;
	}
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	unsigned calls = 0;
	int r;

	err[0] = '\0';
	r = ini_parse_string("fuzz.conf", (const char *)data, size, fz_cb,
	    &calls, err, sizeof(err));
	FUZZ_CHECK(r == 0 || r == KL_ERR_CONFIG || r == KL_ERR_INVALID,
	    "ini_parse_string %d", r);
	FUZZ_CHECK(strlen(err) < sizeof(err), "err");
	if (r == KL_ERR_CONFIG)
		FUZZ_CHECK(strncmp(err, "fuzz.conf", 9) == 0 &&
		    strchr(err, '\n') == NULL,
		    "error does not name the file on one line: %s", err);
	/* Small buffer for the error: still terminated. */
	r = ini_parse_string(NULL, (const char *)data, size, fz_cb, &calls,
	    err, 8);
	FUZZ_CHECK(strlen(err) < 8, "short err");
	return 0;
}
