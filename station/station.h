/*
 * station.h: the station's shared pieces, built from station.conf.
 *
 * Every front-end (batch, console, HTTP) opens one struct station and hands
 * its parts to the engine: config, audit log, CA backend, trust anchors and
 * the files every board gets.  The CA token PIN is read from pin_file or
 * pin_env only for the login and wiped straight after.
 */
#ifndef KL_STATION_H
#define KL_STATION_H

#include <stddef.h>

#include "station/config/ota.h"

struct config;
struct audit;
struct ca;
struct certcheck_trust;
struct engine;
struct engine_opts;
struct usbjig;
struct vjig;
struct checkpoint_signer;
struct plant;
struct ship;

struct station {
	struct config *cfg;		/* owned */
	struct audit *audit;		/* owned */
	struct ca *ca;			/* owned */
	struct certcheck_trust *trust;	/* owned */
	struct ota_files ota;		/* owned */
	struct usbjig *jig;		/* owned; NULL without USB slots */
	struct vjig *vjig;		/* owned; power = virtual-jig */
	struct checkpoint_signer *ckpt;	/* owned; NULL without [audit]
					 * checkpoint_key_id */
	struct plant *plant;		/* owned; NULL without [registry] */
	struct plant *plant_rec;	/* owned; the reconciliation
					 * thread's own connection */
	struct ship *ship;		/* owned; the audit shipper, NULL
					 * without [registry] */
};

/* 0, or a KL_ERR_* with the reason in err (names file/line/key for config
 * errors).  On failure nothing is left open.  Close with station_close. */
int station_open(struct station *st, const char *config_path, char *err,
    size_t errsz);
void station_close(struct station *st);

/*
 * 1 when audit shipping to the plant store has stopped for a reason a
 * restart does not cure (a row refused: it does not chain, or the store
 * holds another row under its seq): the station must not provision, why
 * says so.  0 without a registry.  Thread-safe.
 */
int station_ship_refused(struct station *st, char *why, size_t whysz);

/* Fill eo with the station's parts (config, CA, audit, trust anchors, OTA
 * files, USB jig); every other field zeroed for the caller to set. */
void station_engine_opts(struct station *st, struct engine_opts *eo);

/* Tell the USB jig's hotplug thread which engine to wake; NULL before the
 * engine is freed.  A no-op without a USB jig. */
void station_bind_engine(struct station *st, struct engine *e);

#endif
