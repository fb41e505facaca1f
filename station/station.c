/* station.c: build the station's shared pieces from station.conf. */
#include "station/station.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db/audit.h"
#include "station/buf.h"
#include "station/ca.h"
#include "station/certcheck.h"
#include "station/config.h"
#include "station/err.h"
#include "station/log.h"

#define STATION_MAX_PIN 128

/* The CA token PIN: pin_env wins over pin_file.  Caller wipes pin. */
static int
station_read_pin(const struct config *cfg, char *pin, size_t pinsz,
    char *err, size_t errsz)
{
	const char *v;
	ssize_t n;
	int fd;
	struct stat sb;

	pin[0] = '\0';
	if (cfg->ca_pin_env[0] != '\0') {
		if ((v = getenv(cfg->ca_pin_env)) == NULL) {
			snprintf(err, errsz, "%s: [ca] pin_env: environment "
			    "variable %s is not set", cfg->path,
			    cfg->ca_pin_env);
			return KL_ERR_CONFIG;
		}
		if (strlen(v) >= pinsz) {
			snprintf(err, errsz, "%s: [ca] pin_env: PIN too long",
			    cfg->path);
			return KL_ERR_CONFIG;
		}
		snprintf(pin, pinsz, "%s", v);
		/* Child processes and /proc/PID/environ need not see it. */
		unsetenv(cfg->ca_pin_env);
		return 0;
	}
	if (cfg->ca_pin_file[0] == '\0')
		return 0;
	if ((fd = open(cfg->ca_pin_file, O_RDONLY | O_CLOEXEC)) < 0) {
		snprintf(err, errsz, "%s: [ca] pin_file: cannot read %s: %s",
		    cfg->path, cfg->ca_pin_file, strerror(errno));
		return KL_ERR_CONFIG;
	}
	if (fstat(fd, &sb) == 0 && (sb.st_mode & 0077) != 0)
		log_warn("%s: PIN file is readable by group or others; "
		    "chmod 600 it", cfg->ca_pin_file);
	n = read(fd, pin, pinsz - 1);
	close(fd);
	if (n < 0 || (size_t)n >= pinsz - 1) {
		buf_wipe(pin, pinsz);
		pin[0] = '\0';
		snprintf(err, errsz, "%s: [ca] pin_file: %s is unreadable or "
		    "longer than %zu bytes", cfg->path, cfg->ca_pin_file,
		    pinsz - 2);
		return KL_ERR_CONFIG;
	}
	pin[n] = '\0';
	while (n > 0 && (pin[n - 1] == '\n' || pin[n - 1] == '\r'))
		pin[--n] = '\0';
	return 0;
}

static int
station_module_env(const struct config *cfg, char *err, size_t errsz)
{
	char name[128];
	const char *eq;

	if (cfg->ca_module_env[0] == '\0')
		return 0;
	eq = strchr(cfg->ca_module_env, '=');
	if (eq == NULL || eq == cfg->ca_module_env ||
	    (size_t)(eq - cfg->ca_module_env) >= sizeof(name)) {
		snprintf(err, errsz, "%s: [ca] module_env: want NAME=value",
		    cfg->path);
		return KL_ERR_CONFIG;
	}
	memcpy(name, cfg->ca_module_env, (size_t)(eq - cfg->ca_module_env));
	name[eq - cfg->ca_module_env] = '\0';
	if (setenv(name, eq + 1, 1) != 0)
		return KL_ERR_NOMEM;
	return 0;
}

int
station_open(struct station *st, const char *config_path, char *err,
    size_t errsz)
{
	struct ca_local_params cp;
	struct config *cfg;
	char pin[STATION_MAX_PIN];
	int r;

	memset(st, 0, sizeof(*st));
	pin[0] = '\0';
	if ((cfg = calloc(1, sizeof(*cfg))) == NULL)
		return KL_ERR_NOMEM;
	st->cfg = cfg;
	if ((r = config_load(config_path, cfg, err, errsz)) != 0)
		goto fail;
	if ((r = ota_load(cfg, &st->ota, err, errsz)) != 0)
		goto fail;
	if ((r = certcheck_trust_load(&st->trust, cfg->fleet_root,
	    cfg->ca_intermediates[0] ? cfg->ca_intermediates : NULL)) != 0) {
		snprintf(err, errsz, "%s: [ca] fleet_root: cannot load %s: %s",
		    cfg->path, cfg->fleet_root, kl_strerror(r));
		goto fail;
	}
	if ((r = audit_open(&st->audit, cfg->audit_db)) != 0) {
		snprintf(err, errsz, "%s: [station] audit_db: cannot open %s",
		    cfg->path, cfg->audit_db);
		goto fail;
	}
	if ((r = station_module_env(cfg, err, errsz)) != 0)
		goto fail;
	if ((r = station_read_pin(cfg, pin, sizeof(pin), err, errsz)) != 0)
		goto fail;
	memset(&cp, 0, sizeof(cp));
	cp.issuer_cert = cfg->ca_issuer_cert;
	cp.module = cfg->ca_module;
	cp.token_label = cfg->ca_token_label;
	cp.pin = pin;
	cp.key_id_hex = cfg->ca_key_id;
	cp.dev_key_pem = cfg->ca_dev_key_pem[0] ? cfg->ca_dev_key_pem : NULL;
	cp.validity_days = (unsigned)cfg->validity_days;
	r = ca_local_new(&st->ca, &cp);
	buf_wipe(pin, sizeof(pin));
	if (r != 0) {
		snprintf(err, errsz, "%s: [ca]: cannot open the fleet CA: %s",
		    cfg->path, kl_strerror(r));
		goto fail;
	}
	return 0;
fail:
	buf_wipe(pin, sizeof(pin));
	station_close(st);
	return r;
}

void
station_close(struct station *st)
{
	ca_free(st->ca);
	audit_close(st->audit);
	certcheck_trust_free(st->trust);
	ota_files_free(&st->ota);
	free(st->cfg);
	memset(st, 0, sizeof(*st));
}
