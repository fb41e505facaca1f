/*
 * fuzz_config.c: station.conf through config_load() (station/config/config.c),
 * the input written to a file first, since config_load reads a path.
 *
 * Checks: a refused file gets an error that names it; an accepted one
 * gives a configuration whose strings are terminated and whose slot
 * count is in range.
 */
#include "tests/fuzz/fuzz.h"

#include "station/config/config.h"
#include "common/err.h"
#include "common/log.h"

static char conf_path[PATH_MAX];
static struct config cfg;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_logs("fuzz_config");
	snprintf(conf_path, sizeof(conf_path), "%s/station.conf",
	    fuzz_tmpdir());
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[1024];
	int r;

	fuzz_write_file(conf_path, data, size);
	err[0] = '\0';
	memset(&cfg, 0, sizeof(cfg));
	r = config_load(conf_path, &cfg, err, sizeof(err));
	FUZZ_CHECK(strlen(err) < sizeof(err), "err");
	if (r != 0) {
		FUZZ_CHECK(r == KL_ERR_CONFIG || r == KL_ERR_IO ||
		    r == KL_ERR_NOMEM, "config_load %d", r);
		FUZZ_CHECK(strstr(err, "station.conf") != NULL,
		    "error does not name the file: %s", err);
		return 0;
	}
	FUZZ_CHECK(cfg.nslots >= 0 && cfg.nslots <= CONFIG_MAX_SLOTS,
	    "%d slots", cfg.nslots);
	FUZZ_CHECK(memchr(cfg.gateway_url, '\0', sizeof(cfg.gateway_url)) !=
	    NULL && memchr(cfg.root_crt, '\0', sizeof(cfg.root_crt)) != NULL,
	    "unterminated string");
	return 0;
}
