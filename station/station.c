/* station.c: build the station's shared pieces from station.conf. */
#include "station/station.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

#include "db/audit.h"
#include "db/plant.h"
#include "db/ship.h"
#include "common/buf.h"
#include "station/ca/ca.h"
#include "station/ca/certcheck.h"
#include "station/checkpoint.h"
#include "station/config/config.h"
#include "station/engine/engine.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/secret.h"
#include "station/jig/usbjig.h"
#include "station/jig/vjig.h"

#define STATION_MAX_PIN 128
#define STATION_MAX_SECRET 256

static int station_read_secret(const struct config *cfg, const char *key,
    const char *path, int hex, uint8_t **out, size_t *out_len, char *err,
    size_t errsz);
static void station_free_secret(uint8_t *p, size_t len);

/*
 * The CA token PIN: pin_env wins over pin_file; pin_credential (a systemd
 * credential) came into pin_file as $CREDENTIALS_DIRECTORY/NAME when the
 * config was loaded, and errors name it by its own key.  Caller wipes
 * pin.
 */
static int
station_read_pin(const struct config *cfg, char *pin, size_t pinsz,
    char *err, size_t errsz)
{
	const char *key;
	char *v;
	uint8_t *data;
	size_t n;
	int r;

	pin[0] = '\0';
	if (cfg->ca_pin_env[0] != '\0') {
		if ((v = getenv(cfg->ca_pin_env)) == NULL) {
			snprintf(err, errsz, "%s: [ca] pin_env: environment "
			    "variable %s is not set", cfg->path,
			    cfg->ca_pin_env);
			return KL_ERR_CONFIG;
		}
		if (strlen(v) >= pinsz) {
			/* Refused, but still a secret: out of the
			 * environment like an accepted one. */
			buf_wipe(v, strlen(v));
			unsetenv(cfg->ca_pin_env);
			snprintf(err, errsz, "%s: [ca] pin_env: PIN too long",
			    cfg->path);
			return KL_ERR_CONFIG;
		}
		snprintf(pin, pinsz, "%s", v);
		/* Child processes and /proc/PID/environ need not see it:
		 * unsetenv only drops the pointer, so wipe the bytes the
		 * environment block still holds first. */
		buf_wipe(v, strlen(v));
		unsetenv(cfg->ca_pin_env);
		return 0;
	}
	if (cfg->ca_pin_file[0] == '\0')
		return 0;
	key = cfg->ca_pin_credential[0] != '\0' ? "pin_credential" :
	    "pin_file";
	/* Same reader as the other secret files: capped, mode warning,
	 * trailing newline dropped, wiped on every path. */
	if ((r = station_read_secret(cfg, key, cfg->ca_pin_file, 0,
	    &data, &n, err, errsz)) != 0)
		return r;
	if (n >= pinsz || memchr(data, '\0', n) != NULL) {
		snprintf(err, errsz, "%s: [ca] %s: %s must hold a PIN of "
		    "at most %zu bytes, without NUL", cfg->path, key,
		    cfg->ca_pin_file, pinsz - 1);
		station_free_secret(data, n);
		return KL_ERR_CONFIG;
	}
	memcpy(pin, data, n);
	pin[n] = '\0';
	station_free_secret(data, n);
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

/*
 * A secret from a file ([ca] auth_key_file, cmp_secret_file): raw bytes,
 * or hex digits; one trailing newline is not part of it.  0 and *out
 * (on secret pages: caller frees with station_free_secret(*out,
 * *out_len)) or KL_ERR_CONFIG naming the key.
 * The secret itself never reaches a message.
 */
static int
station_read_secret(const struct config *cfg, const char *key,
    const char *path, int hex, uint8_t **out, size_t *out_len, char *err,
    size_t errsz)
{
	uint8_t *data = NULL, *sec;
	char why[256];
	size_t len = 0, i, n;
	struct stat sb;
	unsigned v;
	int r;

	if ((r = fsutil_read_capped(path, STATION_MAX_SECRET * 2 + 2, &data,
	    &len, why, sizeof(why))) != 0) {
		snprintf(err, errsz, "%s: [ca] %s: %s", cfg->path, key, why);
		return KL_ERR_CONFIG;
	}
	if (stat(path, &sb) == 0 && (sb.st_mode & 0077) != 0)
		log_warn("%s: secret file is readable by group or others; "
		    "chmod 600 it", path);
	n = len;
	while (n > 0 && (data[n - 1] == '\n' || data[n - 1] == '\r'))
		n--;
	if (hex) {
		for (i = 0; i + 1 < n && i / 2 < STATION_MAX_SECRET; i += 2) {
			int hi = OPENSSL_hexchar2int(data[i]);
			int lo = OPENSSL_hexchar2int(data[i + 1]);

			if (hi < 0 || lo < 0)
				break;
			v = (unsigned)(hi << 4 | lo);
			data[i / 2] = (uint8_t)v;
		}
		if (n == 0 || i != n) {
			snprintf(err, errsz, "%s: [ca] %s: %s must hold an "
			    "even number of hex digits (at most %d bytes)",
			    cfg->path, key, path, STATION_MAX_SECRET);
			r = KL_ERR_CONFIG;
			goto out;
		}
		n /= 2;
	}
	if (n == 0 || n > STATION_MAX_SECRET) {
		snprintf(err, errsz, "%s: [ca] %s: %s must hold 1..%d bytes",
		    cfg->path, key, path, STATION_MAX_SECRET);
		r = KL_ERR_CONFIG;
		goto out;
	}
	if ((sec = secret_alloc(n)) == NULL) {
		snprintf(err, errsz, "%s: [ca] %s: %s", cfg->path, key,
		    kl_strerror(KL_ERR_NOMEM));
		r = KL_ERR_NOMEM;
		goto out;
	}
	memcpy(sec, data, n);
	*out = sec;
	*out_len = n;
	r = 0;
out:
	if (data != NULL) {
		buf_wipe(data, len + 1);
		free(data);
	}
	return r;
}

static void
station_free_secret(uint8_t *p, size_t len)
{
	secret_free(p, len);
}

static int
station_ca_local(struct station *st, const char *pin, char *err,
    size_t errsz)
{
	const struct config *cfg = st->cfg;
	struct ca_local_params cp;

	(void)err;
	(void)errsz;
	memset(&cp, 0, sizeof(cp));
	cp.issuer_cert = cfg->ca_issuer_cert;
	cp.module = cfg->ca_module;
	cp.token_label = cfg->ca_token_label;
	cp.pin = pin;
	cp.key_id_hex = cfg->ca_key_id;
	cp.dev_key_pem = cfg->ca_dev_key_pem[0] ? cfg->ca_dev_key_pem : NULL;
	cp.validity_days = (unsigned)cfg->validity_days;
	cp.subject_extra = cfg->ca_subject_extra;
	cp.max_validity_days = (unsigned)cfg->ca_max_validity_days;
	return ca_local_new(&st->ca, &cp);
}

static int
station_ca_cfssl(struct station *st, const char *pin, char *err,
    size_t errsz)
{
	const struct config *cfg = st->cfg;
	struct ca_cfssl_params cp;
	uint8_t *key = NULL;
	size_t key_len = 0;
	int r;

	(void)pin;
	if ((r = station_read_secret(cfg, "auth_key_file",
	    cfg->ca_auth_key_file, 1, &key, &key_len, err, errsz)) != 0)
		return r;
	memset(&cp, 0, sizeof(cp));
	cp.url = cfg->ca_url;
	cp.auth_key = key;
	cp.auth_key_len = key_len;
	cp.profile = cfg->ca_profile;
	cp.subject_extra = cfg->ca_subject_extra;
	cp.label = cfg->ca_label;
	cp.server_cert = cfg->ca_server_cert;
	cp.timeout_ms = cfg->ca_request_timeout_ms;
	r = ca_cfssl_new(&st->ca, &cp);
	station_free_secret(key, key_len);
	return r;
}

static int
station_ca_cmp(struct station *st, const char *pin, char *err, size_t errsz)
{
	const struct config *cfg = st->cfg;
	struct ca_cmp_params cp;
	uint8_t *secret = NULL;
	size_t secret_len = 0;
	int r;

	if (cfg->ca_cmp_secret_file[0] != '\0' &&
	    (r = station_read_secret(cfg, "cmp_secret_file",
	    cfg->ca_cmp_secret_file, 0, &secret, &secret_len, err,
	    errsz)) != 0)
		return r;
	memset(&cp, 0, sizeof(cp));
	cp.url = cfg->ca_url;
	cp.fleet_root = cfg->fleet_root;
	cp.intermediates = cfg->ca_intermediates;
	cp.secret = secret;
	cp.secret_len = secret_len;
	cp.ref = cfg->ca_cmp_ref;
	cp.client_cert = cfg->ca_cmp_client_cert;
	cp.client_key_pem = cfg->ca_cmp_client_key;
	cp.module = cfg->ca_module;
	cp.token_label = cfg->ca_token_label;
	cp.pin = pin;
	cp.key_id_hex = cfg->ca_key_id;
	cp.server_cert = cfg->ca_cmp_server_cert;
	cp.tls_server_cert = cfg->ca_server_cert;
	cp.timeout_ms = cfg->ca_request_timeout_ms;
	cp.subject_extra = cfg->ca_subject_extra;
	cp.max_validity_days = (unsigned)cfg->ca_max_validity_days;
	r = ca_cmp_new(&st->ca, &cp);
	station_free_secret(secret, secret_len);
	return r;
}

/*
 * [registry]: the plant registry, when configured; connected and its
 * schema checked before any board, so a wrong password or an untrusted
 * server stops the station at start-up.  With offline = local a server
 * that cannot be reached does not: boards go on the local check until it
 * is back.  A second connection serves the reconciliation thread, so its
 * reads never hold up a claim.
 */
static int
station_plant_open(struct station *st, char *err, size_t errsz)
{
	const struct config *cfg = st->cfg;
	int local = cfg->registry_offline == CONFIG_OFFLINE_LOCAL;
	struct plant_params pp;
	char why[600] = "";
	int r;

	if (cfg->registry_conninfo[0] == '\0')
		return 0;
	memset(&pp, 0, sizeof(pp));
	pp.conninfo = cfg->registry_conninfo;
	pp.password_file = cfg->registry_password_file;
	pp.root_cert = cfg->registry_root_cert;
	pp.station = cfg->station_id;
	pp.lease_s = cfg->registry_lease_s;
	pp.timeout_s = cfg->registry_timeout_s;
	pp.lazy = local;
	if ((r = plant_open(&st->plant, &pp, why, sizeof(why))) != 0) {
		snprintf(err, errsz, "%s: [registry]: %s", cfg->path, why);
		return r;
	}
	if (why[0] != '\0')
		log_warn("registry: %s; offline = local: boards go on this "
		    "station's own duplicate check and are reconciled when "
		    "it is back", why);
	else
		log_info("registry: connected (station %s, lease %d s, "
		    "offline = %s)", cfg->station_id, cfg->registry_lease_s,
		    local ? "local" : "wait");
	pp.lazy = 1;
	if ((r = plant_open(&st->plant_rec, &pp, why, sizeof(why))) != 0) {
		snprintf(err, errsz, "%s: [registry]: %s", cfg->path, why);
		return r;
	}
	return 0;
}

/*
 * [registry]: audit shipping (db/ship.h), started last, once nothing else
 * of start-up can fail or fork: a plant store holding rows this log does
 * not stops the station here.
 */
static int
station_ship_open(struct station *st, char *err, size_t errsz)
{
	const struct config *cfg = st->cfg;
	struct ship_params sp;
	char why[600] = "";
	int r;

	if (cfg->registry_conninfo[0] == '\0')
		return 0;
	memset(&sp, 0, sizeof(sp));
	sp.conninfo = cfg->registry_conninfo;
	sp.password_file = cfg->registry_password_file;
	sp.root_cert = cfg->registry_root_cert;
	sp.station = cfg->station_id;
	sp.timeout_s = cfg->registry_timeout_s;
	sp.lazy = cfg->registry_offline == CONFIG_OFFLINE_LOCAL;
	if ((r = ship_open(&st->ship, &sp, st->audit, why, sizeof(why))) != 0) {
		snprintf(err, errsz, "%s: [registry]: audit shipping: %s",
		    cfg->path, why);
		return r;
	}
	return 0;
}

/* Last rows out before the log closes; what cannot go waits in it. */
static void
station_ship_close(struct station *st)
{
	ship_close(st->ship);
	st->ship = NULL;
}

int
station_ship_refused(struct station *st, char *why, size_t whysz)
{
	return ship_refused(st->ship, why, whysz);
}

/* engine_opts.halted: a refused row stops every board before it starts. */
static int
station_ship_halted(void *arg, char *why, size_t whysz)
{
	char w[600];

	if (!ship_refused(arg, w, sizeof(w)))
		return 0;
	snprintf(why, whysz, "the plant store refused this station's audit "
	    "rows, provisioning stopped: %s", w);
	return KL_ERR_AUDIT_CHAIN;
}

/*
 * [audit] checkpoint_key_id: the helper that signs checkpoints with a key
 * in the station token, forked before the CA backend opens that token
 * (checkpoint.h), then the "start" checkpoint.  Off (0, nothing done)
 * without checkpoint_key_id.
 */
static int
station_checkpoint_open(struct station *st, const char *pin, char *err,
    size_t errsz)
{
	const struct config *cfg = st->cfg;
	char why[512] = "";
	int r;

	if (cfg->audit_checkpoint_key_id[0] == '\0') {
		log_info("audit: no [audit] checkpoint_key_id: the log's head "
		    "is not signed (docs/audit.md, \"Checkpoints\")");
		return 0;
	}
	if (cfg->audit_checkpoint_cert[0] == '\0' || pin[0] == '\0') {
		snprintf(err, errsz, "%s: [audit] checkpoint_key_id needs "
		    "checkpoint_cert and the station token's PIN ([ca] pin_file, "
		    "pin_env or pin_credential)", cfg->path);
		return KL_ERR_CONFIG;
	}
	if ((r = checkpoint_signer_new(&st->ckpt, cfg->ca_module,
	    cfg->ca_token_label, pin, cfg->audit_checkpoint_key_id,
	    cfg->audit_checkpoint_cert, why, sizeof(why))) != 0) {
		snprintf(err, errsz, "%s: [audit] checkpoint_key_id: %s",
		    cfg->path, why);
		return r;
	}
	if ((r = audit_checkpoint_setup(st->audit, cfg->station_id,
	    cfg->audit_checkpoint_every, checkpoint_sign, st->ckpt)) != 0 ||
	    (r = audit_checkpoint(st->audit, "start", NULL)) != 0) {
		snprintf(err, errsz, "%s: [audit]: cannot sign the start "
		    "checkpoint: %s: %s", cfg->path, kl_strerror(r),
		    audit_last_error());
		return r;
	}
	return 0;
}

/* [ca] backend -> constructor; config.c accepts exactly these names. */
static const struct {
	const char *name;
	int (*open)(struct station *st, const char *pin, char *err,
	    size_t errsz);
} station_ca_backends[] = {
	{ "local", station_ca_local },
	{ "cfssl", station_ca_cfssl },
	{ "cmp", station_ca_cmp },
};

int
station_open(struct station *st, const char *config_path, char *err,
    size_t errsz)
{
	struct config *cfg;
	struct certcheck_profile prof;
	char *pin, why[512];
	size_t i;
	int r;

	memset(st, 0, sizeof(*st));
	memset(&prof, 0, sizeof(prof));
	/* On pages a core dump leaves out (secret.h), wiped on every path. */
	if ((pin = secret_alloc(STATION_MAX_PIN)) == NULL)
		return KL_ERR_NOMEM;
	if ((cfg = calloc(1, sizeof(*cfg))) == NULL) {
		secret_free(pin, STATION_MAX_PIN);
		return KL_ERR_NOMEM;
	}
	st->cfg = cfg;
	if ((r = config_load(config_path, cfg, err, errsz)) != 0)
		goto fail;
	if ((r = ota_load(cfg, &st->ota, err, errsz)) != 0)
		goto fail;
	if (usbjig_configured(cfg) &&
	    (r = usbjig_open(&st->jig, cfg, err, errsz)) != 0)
		goto fail;
	if (cfg->jig_power == CONFIG_POWER_VIRTUAL_JIG &&
	    (r = vjig_open(&st->vjig, cfg)) != 0)
		goto fail;
	if ((r = certcheck_trust_load(&st->trust, cfg->fleet_root,
	    cfg->ca_intermediates[0] ? cfg->ca_intermediates : NULL)) != 0) {
		snprintf(err, errsz, "%s: [ca] fleet_root: cannot load %s: %s",
		    cfg->path, cfg->fleet_root, kl_strerror(r));
		goto fail;
	}
	if ((r = certcheck_trust_check(st->trust, 0, why, sizeof(why)))
	    != 0) {
		snprintf(err, errsz, "%s: [ca] fleet_root/intermediates: %s",
		    cfg->path, why);
		goto fail;
	}
	/* The device profile beyond CN = device ID, for every backend. */
	prof.subject_extra = cfg->ca_subject_extra;
	prof.max_validity_days = (unsigned)cfg->ca_max_validity_days;
	if ((r = certcheck_trust_set_profile(st->trust, &prof, why,
	    sizeof(why))) != 0) {
		snprintf(err, errsz, "%s: [ca] %s", cfg->path, why);
		goto fail;
	}
	/* Opened, then written once: a log the station cannot write would
	 * otherwise fail every board at its first record instead. */
	if ((r = audit_open(&st->audit, cfg->audit_db)) != 0 ||
	    (r = audit_probe_write(st->audit, cfg->station_id)) != 0) {
		snprintf(err, errsz, "%s: [station] audit_db: cannot use %s: "
		    "%s: %s", cfg->path, cfg->audit_db, kl_strerror(r),
		    audit_last_error());
		goto fail;
	}
	if ((r = station_plant_open(st, err, errsz)) != 0)
		goto fail;
	if ((r = station_module_env(cfg, err, errsz)) != 0)
		goto fail;
	if ((r = station_read_pin(cfg, pin, STATION_MAX_PIN, err, errsz)) != 0)
		goto fail;
	if ((r = station_checkpoint_open(st, pin, err, errsz)) != 0)
		goto fail;
	for (i = 0; i < sizeof(station_ca_backends) /
	    sizeof(station_ca_backends[0]); i++)
		if (strcmp(station_ca_backends[i].name, cfg->ca_backend) == 0)
			break;
	if (i == sizeof(station_ca_backends) / sizeof(station_ca_backends[0])) {
		snprintf(err, errsz, "%s: [ca] backend: unknown '%s'",
		    cfg->path, cfg->ca_backend);
		r = KL_ERR_CONFIG;
		goto fail;
	}
	err[0] = '\0';
	r = station_ca_backends[i].open(st, pin, err, errsz);
	secret_free(pin, STATION_MAX_PIN);
	pin = NULL;
	if (r != 0) {
		if (err[0] == '\0')
			snprintf(err, errsz, "%s: [ca]: cannot open the fleet "
			    "CA (backend %s): %s", cfg->path, cfg->ca_backend,
			    kl_strerror(r));
		goto fail;
	}
	if ((r = station_ship_open(st, err, errsz)) != 0)
		goto fail;
	return 0;
fail:
	secret_free(pin, STATION_MAX_PIN);
	station_close(st);
	return r;
}

void
station_close(struct station *st)
{
	/* The head as the station leaves it: rows cut after this are
	 * caught by the next verify. */
	station_ship_close(st);
	if (st->ckpt != NULL && st->audit != NULL &&
	    audit_checkpoint(st->audit, "stop", NULL) != 0)
		log_error("audit: stop checkpoint: %s", audit_last_error());
	usbjig_close(st->jig);
	vjig_close(st->vjig);
	plant_close(st->plant);
	plant_close(st->plant_rec);
	ca_free(st->ca);
	audit_close(st->audit);
	checkpoint_signer_free(st->ckpt);
	certcheck_trust_free(st->trust);
	ota_files_free(&st->ota);
	free(st->cfg);
	memset(st, 0, sizeof(*st));
}

void
station_engine_opts(struct station *st, struct engine_opts *eo)
{
	memset(eo, 0, sizeof(*eo));
	eo->cfg = st->cfg;
	eo->ca = st->ca;
	eo->audit = st->audit;
	eo->trust = st->trust;
	eo->ota = &st->ota;
	eo->plant = st->plant;
	eo->plant_reconcile = st->plant_rec;
	if (st->ship != NULL) {
		eo->halted = station_ship_halted;
		eo->halted_arg = st->ship;
	}
	eo->jig = st->jig != NULL ? usbjig_ops(st->jig) :
	    st->vjig != NULL ? vjig_ops(st->vjig) : NULL;
}

void
station_bind_engine(struct station *st, struct engine *e)
{
	/* Without hotplug support the one-second probe still finds boards. */
	if (st->jig != NULL)
		(void)usbjig_set_engine(st->jig, e);
}
