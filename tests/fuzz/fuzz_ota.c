/*
 * fuzz_ota.c: what the station hands every board besides its own
 * certificate (station/config/ota.c): an OTA Connect credentials.zip, or a
 * root_crt PEM file with a gateway_url.
 *
 * Input starting with "PK" is written as credentials.zip; anything else
 * as the root_crt file.  Checks: on success root.crt is within
 * OTA_MAX_FILE and gateway.url is one https line ending in "\n"; on
 * failure the error names the file.
 */
#include "tests/fuzz/fuzz.h"

#include "station/config/config.h"
#include "common/err.h"
#include "common/log.h"
#include "station/config/ota.h"

static char zip_path[PATH_MAX], crt_path[PATH_MAX];
static struct config cfg;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_logs("fuzz_ota");
	snprintf(zip_path, sizeof(zip_path), "%s/credentials.zip",
	    fuzz_tmpdir());
	snprintf(crt_path, sizeof(crt_path), "%s/root.crt", fuzz_tmpdir());
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ota_files f = { 0 };
	char err[1024];
	size_t n;
	int r, zip = size >= 2 && data[0] == 'P' && data[1] == 'K';

	memset(&cfg, 0, sizeof(cfg));
	snprintf(cfg.path, sizeof(cfg.path), "station.conf");
	if (zip) {
		fuzz_write_file(zip_path, data, size);
		snprintf(cfg.credentials_zip, sizeof(cfg.credentials_zip),
		    "%s", zip_path);
	} else {
		fuzz_write_file(crt_path, data, size);
		snprintf(cfg.root_crt, sizeof(cfg.root_crt), "%s", crt_path);
		snprintf(cfg.gateway_url, sizeof(cfg.gateway_url),
		    "https://gw.example.com:8443");
	}
	err[0] = '\0';
	r = ota_load(&cfg, &f, err, sizeof(err));
	FUZZ_CHECK(strlen(err) < sizeof(err), "err");
	if (r != 0) {
		FUZZ_CHECK(r == KL_ERR_CONFIG || r == KL_ERR_IO ||
		    r == KL_ERR_NOMEM, "ota_load %d: %s", r, err);
		FUZZ_CHECK(strstr(err, zip ? zip_path : crt_path) != NULL,
		    "error does not name the file: %s", err);
		FUZZ_CHECK(f.root_crt == NULL && f.gateway_url == NULL,
		    "output written on failure");
		return 0;
	}
	FUZZ_CHECK(f.root_crt != NULL && f.root_crt_len > 0 &&
	    f.root_crt_len <= OTA_MAX_FILE, "root.crt of %zu bytes",
	    f.root_crt_len);
	n = strlen(f.gateway_url);
	FUZZ_CHECK(strncmp(f.gateway_url, "https://", 8) == 0 && n > 8 &&
	    f.gateway_url[n - 1] == '\n' &&
	    strchr(f.gateway_url, '\n') == f.gateway_url + n - 1,
	    "gateway.url is not one https line: '%s'", f.gateway_url);
	ota_files_free(&f);
	return 0;
}
