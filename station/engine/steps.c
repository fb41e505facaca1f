/*
 * steps.c: what each provisioning step does, and the table that orders
 * them (internal.h).  A step talks to the board through board_call(),
 * records through board_audit(), and fails through board_fail() with the
 * reason in words.
 */
#include "station/engine/internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "db/audit.h"
#include "station/ca/ca.h"
#include "station/ca/certcheck.h"
#include "common/err.h"
#include "common/log.h"
#include "station/config/ota.h"
#include "station/link/frame.h"
#include "station/link/serial.h"

static int
step_connect(struct board *b)
{
	const struct config *cfg = b->e->o.cfg;
	struct link_params lp = { .baud = cfg->baud };
	char dev[PATH_MAX];
	int r;

	if ((r = slot_device(b->slot, dev, sizeof(dev))) != 0)
		return board_fail(b, r, "no board in slot %d: %s",
		    b->slot->cs->number, kl_strerror(r));
	r = link_open(&b->link, &serial_link_ops, dev, &lp);
	if (r != 0)
		return board_fail(b, r, "cannot open %s: %s", dev,
		    kl_strerror(r));
	link_set_attempts(b->link, cfg->attempts);
	link_set_resends(b->link, cfg->resends);
	/* An operator stop cuts a wait short until files are being written. */
	link_set_cancel(b->link, &b->e->cancel);
	return 0;
}

static int
step_identify(struct board *b)
{
	const struct config *cfg = b->e->o.cfg;
	struct devid_vars vars;
	char why[256];
	uint32_t version;
	int r, serial_clean;

	if ((r = proto_put_u32(&b->req, PT_VERSION_MIN, PROTO_VERSION_MIN)) ||
	    (r = proto_put_u32(&b->req, PT_VERSION_MAX, PROTO_VERSION_MAX)))
		return r;
	if ((r = board_call(b, PROTO_HELLO, cfg->timeout_ms)) != 0)
		return r;
	if (proto_get_u32(b->resp.data, b->resp.len, PT_VERSION,
	    &version) != 0 || version < PROTO_VERSION_MIN ||
	    version > PROTO_VERSION_MAX)
		return board_fail(b, KL_ERR_VERSION,
		    "board answered HELLO without a protocol version we speak");
	b->version = version;
	/* Every later frame's fields in the short form (proto.h). */
	link_set_compact(b->link, version >= 2);
	if (board_resp_str(b, PT_SERIAL, b->serial, sizeof(b->serial)) != 0 ||
	    b->serial[0] == '\0')
		return board_fail(b, KL_ERR_PROTO,
		    "board sent no usable serial number");
	/* Clean at once: every failure below records the serial. */
	serial_clean = board_text(b->serial);
	if (board_resp_str(b, PT_MODEL, b->model, sizeof(b->model)) != 0 ||
	    b->model[0] == '\0')
		return board_fail(b, KL_ERR_PROTO, "board sent no model");
	(void)board_resp_str(b, PT_AGENT_VERSION, b->agent_version,
	    sizeof(b->agent_version));
	(void)board_resp_str(b, PT_HSM_LABEL, b->hsm.label, sizeof(b->hsm.label));
	(void)board_resp_str(b, PT_HSM_MANUFACTURER, b->hsm.manufacturer,
	    sizeof(b->hsm.manufacturer));
	(void)board_resp_str(b, PT_HSM_MODEL, b->hsm.model, sizeof(b->hsm.model));
	(void)board_resp_str(b, PT_HSM_SERIAL, b->hsm.serial, sizeof(b->hsm.serial));
	(void)board_text(b->agent_version);
	(void)board_text(b->hsm.label);
	(void)board_text(b->hsm.manufacturer);
	(void)board_text(b->hsm.model);
	(void)board_text(b->hsm.serial);
	if (!board_text(b->model) || !serial_clean)
		return board_fail(b, KL_ERR_PROTO, "board's serial '%s' or model "
		    "'%s' holds bytes that are not printable ASCII (shown as ?)",
		    b->serial, b->model);

	vars.serial = b->serial;
	vars.model = b->model;
	vars.hsm_serial = b->hsm.serial;
	vars.station = cfg->station_id;
	if ((r = devid_expand(cfg->device_id_template, &vars, b->device_id,
	    sizeof(b->device_id), why, sizeof(why))) != 0) {
		b->device_id[0] = '\0';
		return board_fail(b, r, "no valid device ID for serial '%s': %s",
		    b->serial, why);
	}
	/* Said once the identify row is written (the runner). */
	snprintf(b->ok_info, sizeof(b->ok_info),
	    "model %s, agent %s, hsm %s/%s serial %s", b->model,
	    b->agent_version, b->hsm.manufacturer, b->hsm.model,
	    b->hsm.serial);
	return 0;
}

int
engine_reprovision_allowed(const struct engine *e, const char *id)
{
	int i;

	for (i = 0; i < e->o.nreprovision; i++)
		if (strcmp(e->o.reprovision[i], id) == 0)
			return 1;
	return 0;
}

/* What a board holds now, from INQUIRE; "" or NULL where it has none. */
struct board_holding {
	char key_fpr[65];
	char cert_fpr[65];
	int has_file;
	uint8_t file_sha[32];	/* client.pem */
	uint8_t *spki, *cert;	/* OPENSSL_free */
	size_t spki_len, cert_len;
};

static void
holding_free(struct board_holding *h)
{
	OPENSSL_free(h->spki);
	OPENSSL_free(h->cert);
	memset(h, 0, sizeof(*h));
}

static int
board_inquire(struct board *b, struct board_holding *h)
{
	struct engine *e = b->e;
	const uint8_t *p;
	uint8_t digest[32];
	size_t n;
	int r;

	memset(h, 0, sizeof(*h));
	if ((r = proto_put_bytes(&b->req, PT_KEY_ID, e->tls_id,
	    e->tls_id_len)) ||
	    (r = proto_put_bytes(&b->req, PT_CERT_ID, e->cert_id,
	    e->cert_id_len)) ||
	    (r = proto_put_str(&b->req, PT_FILE_NAME, "client.pem")))
		return r;
	if ((r = board_call(b, PROTO_INQUIRE, e->o.cfg->timeout_ms)) != 0)
		return r;
	if (board_resp_bytes(b, PT_SPKI, 4096, &p, &n) == 0) {
		if ((r = engine_dup_bytes(p, n, &h->spki)) != 0 ||
		    (r = engine_sha256(p, n, digest)) != 0)
			goto fail;
		h->spki_len = n;
		engine_hex(digest, sizeof(digest), h->key_fpr);
	}
	if (board_resp_bytes(b, PT_CERT, PROTO_MAX_FILE, &p, &n) == 0) {
		if ((r = engine_dup_bytes(p, n, &h->cert)) != 0 ||
		    (r = engine_sha256(p, n, digest)) != 0)
			goto fail;
		h->cert_len = n;
		engine_hex(digest, sizeof(digest), h->cert_fpr);
	}
	if (board_resp_bytes(b, PT_SHA256, 32, &p, &n) == 0 && n == 32) {
		memcpy(h->file_sha, p, 32);
		h->has_file = 1;
	}
	return 0;
fail:
	holding_free(h);
	return r;
}

/*
 * Whether the board holds exactly the key and certificate of rec: the
 * key at tls_key_id and the certificate object at cert_id, which one
 * board-side commit puts in place together with the files; and a
 * client.pem.  Its bytes are not compared with what this station would
 * write today: an intermediate added to the configuration since must not
 * make a provisioned board a stranger.  (A recovered board's files are
 * read back in the verify step.)  0 (*holds 0/1).
 */
static int
board_holds(const struct board_holding *h, const struct audit_prov *rec,
    int *holds, char *what, size_t whatsz)
{
	*holds = 0;
	if (rec->key_fpr[0] == '\0' || rec->cert_fpr[0] == '\0') {
		snprintf(what, whatsz, "the record names no key or certificate");
		return 0;
	}
	if (h->spki == NULL || strcmp(h->key_fpr, rec->key_fpr) != 0) {
		snprintf(what, whatsz, h->spki == NULL ? "the board has no key "
		    "at its TLS key id" : "the board's key is another one");
		return 0;
	}
	if (h->cert == NULL || strcmp(h->cert_fpr, rec->cert_fpr) != 0) {
		snprintf(what, whatsz, h->cert == NULL ? "the board's token "
		    "holds no certificate" : "the board's certificate object is "
		    "another one");
		return 0;
	}
	if (!h->has_file) {
		snprintf(what, whatsz, "the board has no client.pem");
		return 0;
	}
	snprintf(what, whatsz, "the board holds the recorded key and "
	    "certificate");
	*holds = 1;
	return 0;
}

/* Take the board's own credentials as this attempt's (recovered or
 * already provisioned); the steps that make new ones are skipped. */
static int
board_adopt(struct board *b, struct board_holding *h,
    const struct audit_prov *rec)
{
	b->spki = h->spki;
	b->spki_len = h->spki_len;
	b->cert = h->cert;
	b->cert_len = h->cert_len;
	h->spki = h->cert = NULL;
	/* board_holds() found these equal to the record's. */
	memcpy(b->key_fpr, h->key_fpr, sizeof(b->key_fpr));
	memcpy(b->cert_fpr, h->cert_fpr, sizeof(b->cert_fpr));
	X509_free(b->x509);
	b->x509 = NULL;
	if (board_x509(b) == NULL ||
	    certcheck_serial_hex_x509(b->x509, b->cert_serial,
	    sizeof(b->cert_serial)) != 0)
		snprintf(b->cert_serial, sizeof(b->cert_serial), "%.*s",
		    (int)sizeof(b->cert_serial) - 1, rec->cert_serial);
	return 0;
}

/* The board holds rec's set: this attempt finishes it (the steps that
 * make new credentials are skipped), recorded with msg. */
static int
board_recovered(struct board *b, struct board_holding *h,
    const struct audit_prov *rec, const char *msg)
{
	(void)board_adopt(b, h, rec);
	b->recovered = 1;
	return board_audit(b, "recover", "provisioned", msg);
}

/* Seconds since an audit row's time ("2026-11-29T17:27:51.426Z"), or -1
 * when it does not parse. */
static int64_t
audit_time_age_s(const char *t)
{
	struct tm tm;
	const char *end;
	time_t when;

	memset(&tm, 0, sizeof(tm));
	if ((end = strptime(t, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL)
		return -1;
	if ((when = timegm(&tm)) == (time_t)-1)
		return -1;
	return (int64_t)(engine_now_ms() / 1000) - (int64_t)when;
}

/*
 * How long another station's attempt, silent since its newest row, is
 * taken as still running there: the longest a healthy attempt can go
 * without writing a row (a CA wait, a slow secure element), and a minute.
 */
static int64_t
engine_foreign_lease_s(const struct config *cfg)
{
	return (int64_t)cfg->ca_wait_deadline_s +
	    (int64_t)cfg->attempts * cfg->keygen_timeout_ms / 1000 + 60;
}

/*
 * The newest attempt at this device ended in doubt (the station died, or
 * COMMIT went out and nothing came back): ask the board what it holds and
 * record what was found.  If it holds that attempt's key and certificate,
 * this attempt finishes it (validate, verify, proof of possession) with no
 * new certificate.  If it does not: a doubt at "ca" means that
 * certificate was never committed on any board, and this one carries on;
 * later doubts mean it may be on another board, so this one is refused
 * unless it is the same board back in the same slot of this station, or
 * re-provisioning was asked for.
 */
static int
board_resolve_doubt(struct board *b, const struct audit_device_state *st)
{
	const struct config *cfg = b->e->o.cfg;
	const struct audit_prov *d = &st->doubt;
	struct board_holding h;
	char what[128], msg[900], attempt[500];
	int64_t age;
	int holds = 0, r;

	memset(&h, 0, sizeof(h));
	snprintf(attempt, sizeof(attempt), "the attempt of station %s, slot "
	    "%lld, at %s (stopped at %s, certificate serial %s)", d->station,
	    (long long)d->slot, d->time, st->doubt_step,
	    d->cert_serial[0] ? d->cert_serial : "none");
	/* Another station sharing this log may still be at it: a station
	 * only knows its own boards in flight. */
	if (strcmp(d->station, cfg->station_id) != 0 &&
	    (age = audit_time_age_s(d->time)) >= 0 &&
	    age < engine_foreign_lease_s(cfg)) {
		snprintf(msg, sizeof(msg), "%s may still be running there "
		    "(its newest record is %lld s old)", attempt,
		    (long long)age);
		(void)board_audit(b, "dupcheck", "refused", msg);
		return board_fail(b, KL_ERR_DUPLICATE, "device ID %s: %s",
		    b->device_id, msg);
	}
	if ((r = board_inquire(b, &h)) != 0)
		return r;
	if ((r = board_holds(&h, d, &holds, what, sizeof(what))) != 0)
		goto out;
	if (holds) {
		snprintf(msg, sizeof(msg), "recovered: provisioned; %s was in "
		    "doubt and %s; finishing it", attempt, what);
		if ((r = board_recovered(b, &h, d, msg)) != 0)
			goto out;
	} else if (strcmp(st->doubt_step, "ca") == 0) {
		snprintf(msg, sizeof(msg), "recovered: not provisioned; %s was "
		    "in doubt and %s%s", attempt, what, d->cert_serial[0] ?
		    "; that certificate was never committed on any board: "
		    "revoke it" : "");
		if ((r = board_audit(b, "recover", "not_provisioned",
		    msg)) != 0)
			goto out;
	} else if (strcmp(d->station, cfg->station_id) == 0 &&
	    d->slot == b->slot->cs->number &&
	    strcmp(d->board_serial, b->serial) == 0) {
		/* The same board back in the same slot of this station
		 * (a power cut, a crash, a cable): a commit it had decided
		 * its agent finished at start, so it did not take. */
		snprintf(msg, sizeof(msg), "recovered: not provisioned; %s was "
		    "in doubt and %s, back in the same slot; its COMMIT did "
		    "not take%s", attempt, what, d->cert_serial[0] ?
		    "; that certificate is on no board: revoke it" : "");
		if ((r = board_audit(b, "recover", "not_provisioned",
		    msg)) != 0)
			goto out;
	} else if (engine_reprovision_allowed(b->e, b->device_id)) {
		snprintf(msg, sizeof(msg), "recovered: elsewhere; %s was in "
		    "doubt and %s; that certificate may be on another board; "
		    "re-provisioning on request", attempt, what);
		if ((r = board_audit(b, "recover", "elsewhere", msg)) != 0)
			goto out;
	} else {
		snprintf(msg, sizeof(msg), "%s may have committed its "
		    "certificate on a board, and this board does not hold it "
		    "(%s); re-provisioning was not requested", attempt, what);
		(void)board_audit(b, "dupcheck", "refused", msg);
		r = board_fail(b, KL_ERR_DUPLICATE, "device ID %s: %s",
		    b->device_id, msg);
		goto out;
	}
	board_emit(b, EV_INFO, 0, msg);
	r = 0;
out:
	holding_free(&h);
	return r;
}

/*
 * The plant registry (docs/plant.md): the device ID is claimed plant-wide
 * before the board's key is made, in one statement on the server, so two
 * stations cannot both provision it.  Refused: provisioned or being
 * provisioned by another station (where and when in the words).
 */
static int
board_plant_claim_once(struct board *b, char *why, size_t whysz)
{
	struct engine *e = b->e;

	return plant_claim(e->o.plant, b->device_id, b->slot->cs->number,
	    b->serial, engine_reprovision_allowed(e, b->device_id),
	    &b->plant_owner, why, whysz);
}

static int
board_plant_claim(struct board *b)
{
	struct engine *e = b->e;
	char why[600] = "";
	int r;

	if (e->o.plant == NULL)
		return 0;
	if (e->o.cfg->registry_offline == CONFIG_OFFLINE_LOCAL) {
		/* offline = local: one try; an unreachable registry leaves
		 * the board to this station's own check (done above), and
		 * the device to be reconciled when it is back. */
		r = board_plant_claim_once(b, why, sizeof(why));
		if (r == KL_ERR_UNAVAILABLE) {
			char msg[900];

			(void)board_text(why);
			snprintf(msg, sizeof(msg), "plant registry unreachable "
			    "(%s); offline = local: provisioning on this "
			    "station's own duplicate check, the device is "
			    "reconciled with the registry when it is back",
			    why);
			if ((r = board_audit(b, "registry", "offline",
			    msg)) != 0)
				return r;
			reconcile_set_offline(e, 1);
			board_emit(b, EV_INFO, 0, msg);
			b->plant_offline = 1;
			return 0;
		}
		if (r != KL_ERR_DB)
			reconcile_set_offline(e, 0);
	} else
		/* An unreachable registry is waited for, like a CA. */
		r = board_registry_wait(b, "claim", board_plant_claim_once,
		    why, sizeof(why));
	if (r == KL_ERR_DUPLICATE) {
		(void)board_audit(b, "dupcheck", "refused", why);
		return board_fail(b, r, "device ID %s %s", b->device_id, why);
	}
	if (r != 0) {
		(void)board_text(why);
		return board_fail(b, r, "plant registry: %s", why);
	}
	b->plant_claimed = 1;
	return 0;
}

static int
step_dupcheck(struct board *b)
{
	struct engine *e = b->e;
	struct audit_device_state *st = NULL;
	struct board_holding h;
	const struct audit_prov *pv;
	char msg[900], what[128], when[400];
	int holds = 0, i, r;

	memset(&h, 0, sizeof(h));
	/* Claim the ID first, so two slots can't both pass the check. */
	pthread_mutex_lock(&e->mu);
	for (i = 0; i < e->nslots; i++) {
		if (strcmp(e->inflight[i], b->device_id) == 0) {
			pthread_mutex_unlock(&e->mu);
			(void)board_audit(b, "dupcheck", "refused",
			    "device ID in use by another slot");
			return board_fail(b, KL_ERR_DUPLICATE,
			    "device ID %s is being provisioned in another slot",
			    b->device_id);
		}
	}
	snprintf(e->inflight[b->slot - e->slots],
	    sizeof(e->inflight[0]), "%s", b->device_id);
	b->reserved = 1;
	pthread_mutex_unlock(&e->mu);

	if ((st = calloc(1, sizeof(*st))) == NULL)
		return KL_ERR_NOMEM;
	if ((r = audit_device_state(e->o.audit, b->device_id,
	    b->rows[STEP_IDENTIFY] > 0 ? b->rows[STEP_IDENTIFY] :
	    INT64_MAX, st)) != 0) {
		r = board_fail(b, r, "cannot read the audit log");
		goto out;
	}
	if (st->doubt_step[0] != '\0') {
		if ((r = board_resolve_doubt(b, st)) != 0)
			goto out;
		if (b->recovered)
			goto ok;
	}
	if (!st->provisioned)
		goto ok;
	pv = &st->prov;
	snprintf(when, sizeof(when), "by station %s, slot %lld, at %s, "
	    "certificate serial %s", pv->station, (long long)pv->slot,
	    pv->time, pv->cert_serial[0] ? pv->cert_serial : "unknown");
	/* Committed but never proven (the station stopped, or the proof
	 * failed and the clean-up could not reach the board): if the board
	 * holds that set, finish it rather than issue another certificate,
	 * re-provisioning asked for or not. */
	if (!st->prov_passed) {
		if ((r = board_inquire(b, &h)) != 0)
			goto out;
		if ((r = board_holds(&h, pv, &holds, what,
		    sizeof(what))) != 0)
			goto out;
		if (holds) {
			snprintf(msg, sizeof(msg), "recovered: provisioned; "
			    "committed %s but never passed; %s; finishing it",
			    when, what);
			if ((r = board_recovered(b, &h, pv, msg)) != 0)
				goto out;
			board_emit(b, EV_INFO, 0, msg);
			goto ok;
		}
		holding_free(&h);
	}
	if (engine_reprovision_allowed(e, b->device_id)) {
		snprintf(msg, sizeof(msg), "re-provisioning on request; "
		    "previous certificate serial %s (provisioned %s)",
		    pv->cert_serial, when);
		if ((r = board_audit(b, "reprovision", "info", msg)) != 0)
			goto out;
		board_emit(b, EV_INFO, 0, msg);
		goto ok;
	}
	/* Provisioned and passed before: the same board, untouched, is no
	 * failure. */
	if (st->prov_passed) {
		if ((r = board_inquire(b, &h)) != 0)
			goto out;
		if ((r = board_holds(&h, pv, &holds, what,
		    sizeof(what))) != 0)
			goto out;
	}
	if (holds) {
		(void)board_adopt(b, &h, pv);
		b->already = 1;
		snprintf(b->ok_note, sizeof(b->ok_note), "already provisioned "
		    "%s; %s", when, what);
		b->ok_outcome = "already";
		snprintf(b->ok_info, sizeof(b->ok_info), "%s", b->ok_note);
		goto ok;
	}
	snprintf(msg, sizeof(msg), "already provisioned %s, and this board "
	    "does not hold that key and certificate (%s); re-provisioning "
	    "was not requested", when, what);
	(void)board_audit(b, "dupcheck", "refused", msg);
	r = board_fail(b, KL_ERR_DUPLICATE, "device ID %s %s", b->device_id,
	    msg);
	goto out;
ok:
	r = b->already ? 0 : board_plant_claim(b);
out:
	holding_free(&h);
	free(st);
	return r;
}

/* The SPKI the board reports must be the key type we asked for. */
static int
check_spki(struct board *b, const uint8_t *p, size_t n,
    enum hsm_key_type want)
{
	const unsigned char *q = p;
	EVP_PKEY *pk;
	int ok = 0;

	/* A P-256 key is compared as its DER bytes: OpenSSL 3 would decode
	 * it through its provider decoders to say the same, and the point
	 * is checked to be on the curve with the CSR (step_csr). */
	if (want == HSM_KEY_EC_P256) {
		if (certcheck_spki_is_p256(p, n))
			return 0;
		return board_fail(b, KL_ERR_PROTO, "board made a key that is "
		    "not %s (a DER P-256 key with an uncompressed point)",
		    hsm_key_type_name(want));
	}
	pk = d2i_PUBKEY(NULL, &q, (long)n);
	if (pk == NULL || q != p + n) {
		EVP_PKEY_free(pk);
		return board_fail(b, KL_ERR_PROTO,
		    "board's public key does not parse");
	}
	switch (want) {
	case HSM_KEY_EC_P256:
		break;
	case HSM_KEY_RSA2048:
		ok = EVP_PKEY_is_a(pk, "RSA") && EVP_PKEY_get_bits(pk) == 2048;
		break;
	case HSM_KEY_RSA3072:
		ok = EVP_PKEY_is_a(pk, "RSA") && EVP_PKEY_get_bits(pk) == 3072;
		break;
	}
	EVP_PKEY_free(pk);
	if (!ok)
		return board_fail(b, KL_ERR_PROTO,
		    "board made a key that is not %s", hsm_key_type_name(want));
	return 0;
}

/* A pipelined request that came back refused or malformed. */
static int
board_many_fail(struct board *b, const struct link_req *rq, int r)
{
	char remote[PROTO_LINK_ERR_MAX];

	if (r == KL_ERR_REMOTE) {
		snprintf(remote, sizeof(remote), "%s", rq->err);
		(void)board_text(remote);
		return board_fail(b, r, "board refused %s: %s",
		    proto_type_name(rq->type), remote);
	}
	if (r == KL_ERR_CRC)
		return board_fail(b, r, "%s exchange failed: the line is too "
		    "noisy (%d resends, all corrupt)",
		    proto_type_name(rq->type), b->e->o.cfg->resends);
	if (r == KL_ERR_TIMEOUT)
		return board_fail(b, r, "%s exchange failed: no answer in %d "
		    "attempts of %d ms", proto_type_name(rq->type),
		    b->e->o.cfg->attempts, rq->timeout_ms);
	return board_fail(b, r, "%s exchange failed: %s",
	    proto_type_name(rq->type), kl_strerror(r));
}

/*
 * The new key of a version 2 board is the one in its CSR, when the key
 * check KEYGEN answered (the first bytes of its SPKI's SHA-256) says the
 * board signed the CSR with the key it made.  When it does not, or the
 * CSR has no SPKI where one belongs, b->spki stays NULL and step_csr
 * refuses the CSR.
 */
static int
keygen_v2_key(struct board *b, const uint8_t check[PROTO_KEY_CHECK_LEN])
{
	const uint8_t *spki;
	uint8_t digest[32];
	size_t len;
	int r;

	if (certcheck_csr_spki(b->keygen_csr, b->keygen_csr_len, &spki,
	    &len) != 0)
		return 0;
	if ((r = engine_sha256(spki, len, digest)) != 0)
		return r;
	if (memcmp(digest, check, PROTO_KEY_CHECK_LEN) != 0)
		return 0;
	if ((r = check_spki(b, spki, len, b->e->key_type)) != 0)
		return r;
	if ((r = engine_dup_bytes(spki, len, &b->spki)) != 0)
		return r;
	b->spki_len = len;
	engine_hex(digest, sizeof(digest), b->key_fpr);
	return 0;
}

/*
 * Version 2: KEYGEN asks for the CSR too (SUBJECT_CN), and while the
 * board's secure element works, root.crt and gateway.url go down the
 * line behind it and are staged once it is done (docs/protocol.md,
 * "Pipelining"): they do not depend on the key.  The CSR is checked in
 * step_csr; the key's fingerprint is the SHA-256 the board reported.
 */
static int
step_keygen_v2(struct board *b)
{
	struct engine *e = b->e;
	const struct config *cfg = e->o.cfg;
	const struct ota_files *ota = e->o.ota;
	struct link_req rq[2];
	struct buf req[2], resp[2];
	const uint8_t *p;
	size_t i, n, failed = 0;
	int r;

	memset(rq, 0, sizeof(rq));
	for (i = 0; i < 2; i++) {
		buf_init(&req[i], FRAME_MAX_PAYLOAD);
		buf_init(&resp[i], FRAME_MAX_PAYLOAD);
		rq[i].req = &req[i];
		rq[i].resp = &resp[i];
		rq[i].timeout_ms = cfg->timeout_ms;
	}
	rq[0].type = PROTO_KEYGEN;
	rq[0].timeout_ms = cfg->keygen_timeout_ms;
	rq[1].type = PROTO_PUT_FILE;
	if ((r = proto_put_str(&req[0], PT_KEY_TYPE,
	    hsm_key_type_name(e->key_type))) ||
	    (r = proto_put_bytes(&req[0], PT_KEY_ID, e->tls_id,
	    e->tls_id_len)) ||
	    (r = proto_put_str(&req[0], PT_KEY_LABEL, cfg->key_label)) ||
	    (r = proto_put_str(&req[0], PT_SUBJECT_CN, b->device_id)))
		goto out;
	if ((r = proto_put_str(&req[1], PT_FILE_NAME, "root.crt")) != 0)
		goto out;
	if (e->root_der != NULL)
		r = proto_put_bytes(&req[1], PT_FILE_DER, e->root_der,
		    (size_t)e->root_der_len);
	else
		r = proto_put_bytes(&req[1], PT_FILE_DATA, ota->root_crt,
		    ota->root_crt_len);
	/* One PUT_FILE, two files (a version 2 PUT_FILE's fields are read
	 * in order): a frame and an answer fewer. */
	if (r != 0 ||
	    (r = proto_put_str(&req[1], PT_FILE_NAME, "gateway.url")) ||
	    (r = proto_put_bytes(&req[1], PT_FILE_DATA, ota->gateway_url,
	    strlen(ota->gateway_url))))
		goto out;
	/*
	 * The PUT_FILE is on the line behind KEYGEN, and the board runs it
	 * whatever became of KEYGEN's exchange: a KEYGEN request that
	 * arrived corrupt is NAKed and the PUT_FILE behind it staged all the
	 * same, and an answer lost or corrupt on the way back leaves the
	 * files staged.  So after any failure ABORT is worth sending (the
	 * board runs it after the PUT_FILE: requests are taken in order).
	 * Only an operator's stop is not held up by it: what the board
	 * stages then goes at its next HELLO or start, like a staged key.
	 */
	r = link_call_many(b->link, rq, 2, &failed);
	if (r != KL_ERR_CANCELLED)
		b->staged = 1;
	if (r != 0) {
		r = board_many_fail(b, &rq[failed], r);
		goto out;
	}
	for (i = 0; i < 2; i++)
		if (rq[i].rc != 0) {
			r = board_many_fail(b, &rq[i], rq[i].rc);
			goto out;
		}
	if (proto_get_bytes(resp[0].data, resp[0].len, PT_CSR, 16384, &p,
	    &n) != 0) {
		r = board_fail(b, KL_ERR_PROTO, "KEYGEN answer has no CSR");
		goto out;
	}
	if ((r = engine_dup_bytes(p, n, &b->keygen_csr)) != 0)
		goto out;
	b->keygen_csr_len = n;
	if (proto_get_bytes(resp[0].data, resp[0].len, PT_KEY_CHECK,
	    PROTO_KEY_CHECK_LEN, &p, &n) != 0 || n != PROTO_KEY_CHECK_LEN) {
		r = board_fail(b, KL_ERR_PROTO, "KEYGEN answer has no key "
		    "check");
		goto out;
	}
	r = keygen_v2_key(b, p);
out:
	for (i = 0; i < 2; i++) {
		buf_free(&req[i]);
		buf_free(&resp[i]);
	}
	return r;
}

static int
step_keygen(struct board *b)
{
	struct engine *e = b->e;
	const struct config *cfg = e->o.cfg;
	const uint8_t *p;
	uint8_t digest[32];
	size_t n;
	int r;

	if (b->version >= 2) {
		if ((r = step_keygen_v2(b)) != 0)
			return r;
		goto uptane;
	}
	if ((r = proto_put_str(&b->req, PT_KEY_TYPE,
	    hsm_key_type_name(e->key_type))) ||
	    (r = proto_put_bytes(&b->req, PT_KEY_ID, e->tls_id,
	    e->tls_id_len)) ||
	    (r = proto_put_str(&b->req, PT_KEY_LABEL, cfg->key_label)))
		return r;
	if ((r = board_call(b, PROTO_KEYGEN, cfg->keygen_timeout_ms)) != 0)
		return r;
	if (board_resp_bytes(b, PT_SPKI, 4096, &p, &n) != 0)
		return board_fail(b, KL_ERR_PROTO, "KEYGEN answer has no key");
	if ((r = check_spki(b, p, n, e->key_type)) != 0)
		return r;
	if ((r = engine_dup_bytes(p, n, &b->spki)) != 0)
		return r;
	b->spki_len = n;
	if ((r = engine_sha256(p, n, digest)) != 0)
		return r;
	engine_hex(digest, sizeof(digest), b->key_fpr);
uptane:
	if (cfg->uptane_key) {
		if ((r = proto_put_bytes(&b->req, PT_KEY_ID, e->uptane_id,
		    e->uptane_id_len)) ||
		    (r = proto_put_str(&b->req, PT_KEY_LABEL, "uptane")))
			return r;
		if ((r = board_call(b, PROTO_UPTANE_KEYGEN,
		    cfg->keygen_timeout_ms)) != 0)
			return r;
		if (board_resp_bytes(b, PT_SPKI, 4096, &p, &n) != 0)
			return board_fail(b, KL_ERR_PROTO,
			    "UPTANE_KEYGEN answer has no key");
		if ((r = check_spki(b, p, n, HSM_KEY_RSA2048)) != 0)
			return r;
	}
	return 0;
}

/* The CSR must carry the board's new key and be signed by it.  (A
 * version 2 board sent it with KEYGEN's answer: step_keygen_v2.) */
static int
csr_check(struct board *b, const uint8_t *p, size_t n)
{
	struct engine *e = b->e;
	const unsigned char *q;
	unsigned char *der = NULL;
	X509_REQ *req = NULL;
	EVP_PKEY *pk;
	int len, r;

	if (b->spki == NULL)	/* v2: KEY_CHECK did not match it */
		return board_fail(b, KL_ERR_PROTO, "board's CSR is not for the "
		    "key it just generated (or does not parse)");
	if (e->key_type == HSM_KEY_EC_P256) {
		char why[160];

		/* Checked as DER, its key built from the point: no provider
		 * decoder, a third of the station's time per board. */
		if ((r = certcheck_csr_p256(p, n, b->spki, b->spki_len,
		    &b->csr_key, why, sizeof(why))) != 0)
			return board_fail(b, KL_ERR_PROTO, "board's CSR %s",
			    why);
		if ((r = engine_dup_bytes(p, n, &b->csr)) != 0)
			return r;
		b->csr_len = n;
		return 0;
	}
	q = p;
	if ((req = d2i_X509_REQ(NULL, &q, (long)n)) == NULL || q != p + n) {
		r = board_fail(b, KL_ERR_PROTO, "board's CSR does not parse");
		goto out;
	}
	/* The request's key as it came (no re-encoding through an
	 * EVP_PKEY), byte for byte the one KEYGEN reported. */
	if ((pk = X509_REQ_get0_pubkey(req)) == NULL ||
	    (len = i2d_X509_PUBKEY(X509_REQ_get_X509_PUBKEY(req), &der)) <= 0 ||
	    (size_t)len != b->spki_len ||
	    memcmp(der, b->spki, b->spki_len) != 0) {
		r = board_fail(b, KL_ERR_PROTO,
		    "board's CSR is not for the key it just generated");
		goto out;
	}
	if (X509_REQ_verify(req, pk) != 1) {
		r = board_fail(b, KL_ERR_PROTO,
		    "board's CSR signature does not verify");
		goto out;
	}
	if ((r = engine_dup_bytes(p, n, &b->csr)) != 0)
		goto out;
	b->csr_len = n;
	r = 0;
out:
	OPENSSL_free(der);
	X509_REQ_free(req);
	return r;
}

static int
step_csr(struct board *b)
{
	struct engine *e = b->e;
	const uint8_t *p;
	size_t n;
	int r;

	if (b->keygen_csr != NULL)	/* v2: it came with KEYGEN's answer */
		return csr_check(b, b->keygen_csr, b->keygen_csr_len);
	if ((r = proto_put_bytes(&b->req, PT_KEY_ID, e->tls_id,
	    e->tls_id_len)) ||
	    (r = proto_put_str(&b->req, PT_SUBJECT_CN, b->device_id)))
		return r;
	if ((r = board_call(b, PROTO_CSR, e->o.cfg->keygen_timeout_ms)) != 0)
		return r;
	if (board_resp_bytes(b, PT_CSR, 16384, &p, &n) != 0)
		return board_fail(b, KL_ERR_PROTO, "CSR answer has no request");
	return csr_check(b, p, n);
}

int
engine_key_claimed(const struct engine *e, int self, const char *key_fpr,
    const char *device_id)
{
	const struct engine_key_claim *k;
	int i;

	for (i = 0; i < e->nslots; i++) {
		k = &e->inflight_key[i];
		if (i != self && k->key_fpr[0] != '\0' &&
		    strcmp(k->key_fpr, key_fpr) == 0 &&
		    strcmp(k->device_id, device_id) != 0)
			return i;
	}
	return -1;
}

void
engine_key_claim(struct engine *e, int self, const char *key_fpr,
    const char *device_id)
{
	struct engine_key_claim *k = &e->inflight_key[self];

	if (key_fpr == NULL) {
		memset(k, 0, sizeof(*k));
		return;
	}
	snprintf(k->key_fpr, sizeof(k->key_fpr), "%s", key_fpr);
	snprintf(k->device_id, sizeof(k->device_id), "%s", device_id);
}

/*
 * A key already sent to the CA, or certified, for another device ID is
 * refused: one shared or cloned key would otherwise get a certificate per
 * serial a board cares to report.  Recorded under both device IDs.  With
 * e->key_mu held: the log holds the keys whose "ca requested" row is on
 * file, e->inflight_key those another slot is writing that row for now.
 */
static int
board_key_unique(struct board *b)
{
	struct engine *e = b->e;
	const struct config *cfg = e->o.cfg;
	const struct engine_key_claim *k;
	struct audit_prov rec;
	struct audit_event ev;
	char other[AUDIT_REC_ID], msg[700];
	int found = 0, i, r;

	if ((i = engine_key_claimed(e, (int)(b->slot - e->slots), b->key_fpr,
	    b->device_id)) >= 0) {
		k = &e->inflight_key[i];
		found = 1;
		snprintf(other, sizeof(other), "%s", k->device_id);
		memset(&rec, 0, sizeof(rec));
		snprintf(rec.station, sizeof(rec.station), "%s",
		    cfg->station_id);
		snprintf(rec.time, sizeof(rec.time), "this moment");
		rec.slot = e->slots[i].cs->number;
	}
	if (!found && (r = audit_key_owner(e->o.audit, b->key_fpr,
	    b->device_id, &found, other, sizeof(other), &rec)) != 0)
		return board_fail(b, r, "cannot read the audit log");
	if (!found)
		return 0;
	(void)board_text(other);
	snprintf(msg, sizeof(msg), "this board's key (%.16s...) was already "
	    "sent to the CA for device %s by station %s, slot %lld, at %s "
	    "(certificate serial %s): one key, one device", b->key_fpr, other,
	    rec.station, (long long)rec.slot, rec.time,
	    rec.cert_serial[0] ? rec.cert_serial : "none");
	(void)board_audit(b, "keygen", "refused", msg);
	memset(&ev, 0, sizeof(ev));
	ev.station = cfg->station_id;
	ev.slot = b->slot->cs->number;
	ev.board_serial = b->serial;
	ev.device_id = other;
	ev.step = "key-reuse";
	ev.outcome = "info";
	ev.key_fpr = b->key_fpr;
	snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), "; presented "
	    "again as device %s", b->device_id);
	ev.error = msg;
	(void)audit_append(e->o.audit, &ev, NULL);
	return board_fail(b, KL_ERR_DUPLICATE, "key refused: it belongs to "
	    "device %s (sent to the CA by station %s at %s); one key, one "
	    "device", other, rec.station, rec.time);
}

/*
 * Ask the CA; while it cannot be reached, wait with exponential backoff
 * and jitter in the "waiting for CA" state, until [ca] wait_deadline_s.
 * The wait and the resumption are audited and shown as events.
 */
static int
step_ca(struct board *b)
{
	struct engine *e = b->e;
	const struct config *cfg = e->o.cfg;
	struct ca_request cr = {
		.csr_der = b->csr,
		.csr_len = b->csr_len,
		.device_id = b->device_id,
		.key = b->csr_key,
		.spki = b->spki,
		.spki_len = b->spki_len,
	};
	int64_t t0 = engine_mono_ms(), deadline, delay, sleep_ms;
	char err[256] = "", msg[600], lost[200] = "";
	uint32_t rnd;
	int r, self, waiting = 0, tries = 0;

	/*
	 * Recorded before the CSR leaves the station: a CA that signs and
	 * whose answer is lost (a timeout after signing) leaves a certificate
	 * the station never sees, and this row, with the key fingerprint the
	 * certificate must carry, is how it is found in the CA's records.
	 */
	snprintf(msg, sizeof(msg), "CSR for this key sent to %s",
	    e->o.ca->name);
	/*
	 * One key, one device: checked and claimed in one step, so two slots
	 * holding one key cannot both pass.  The claim is this slot's entry
	 * in e->inflight_key until the "ca requested" row is on file, where
	 * the next check finds it; the row's fsync is not waited for under
	 * key_mu, so the rows of all slots share their commits.
	 */
	self = (int)(b->slot - e->slots);
	pthread_mutex_lock(&e->key_mu);
	if ((r = board_key_unique(b)) == 0)
		engine_key_claim(e, self, b->key_fpr, b->device_id);
	pthread_mutex_unlock(&e->key_mu);
	if (r != 0)
		return r;
	r = board_audit(b, "ca", "requested", msg);
	pthread_mutex_lock(&e->key_mu);
	engine_key_claim(e, self, NULL, NULL);
	pthread_mutex_unlock(&e->key_mu);
	if (r != 0)
		return board_fail(b, r, "audit log write failed; the CSR was "
		    "not sent");
	deadline = t0 + (int64_t)cfg->ca_wait_deadline_s * 1000;
	delay = cfg->ca_retry_base_ms;
	for (;;) {
		err[0] = '\0';
		tries++;
		r = ca_issue(e->o.ca, &cr, &b->cert, &b->cert_len, err,
		    sizeof(err));
		if (r == 0)
			break;
		/* Words from a remote server go to the audit log and every
		 * front-end: printable ASCII only, like a board's. */
		(void)board_text(err);
		if (!ca_is_transient(r)) {
			/* Every try before this one went unanswered: if the
			 * CA got any of them, it may have signed it. */
			if (tries > 1)
				snprintf(lost, sizeof(lost), "; %d earlier "
				    "requests got no certificate back: the "
				    "CA's records may hold certificates for "
				    "this key (key_fpr)", tries - 1);
			snprintf(msg, sizeof(msg), "%s%s", err[0] ? err :
			    kl_strerror(r), lost);
			(void)board_audit(b, "ca", "failed", msg);
			return board_fail(b, r, "CA %s did not issue: %s",
			    e->o.ca->name, msg);
		}
		if (engine_mono_ms() >= deadline) {
			snprintf(msg, sizeof(msg), "CA unreachable for %d s "
			    "(%d tries): %s; no certificate came back, but the "
			    "CA's records may hold some for this key (key_fpr)",
			    cfg->ca_wait_deadline_s, tries,
			    err[0] ? err : kl_strerror(r));
			(void)board_audit(b, "ca", "failed", msg);
			return board_fail(b, KL_ERR_UNAVAILABLE, "%s", msg);
		}
		if (!waiting) {
			waiting = 1;
			board_set_state(b, SLOT_WAITING_CA);
			snprintf(msg, sizeof(msg), "waiting for the CA: %s",
			    err[0] ? err : kl_strerror(r));
			if ((r = board_audit(b, "ca", "waiting", msg)) != 0)
				return board_fail(b, r, "audit log write failed");
			board_emit(b, EV_INFO, 0, msg);
		}
		/* Half the delay fixed, half random: slots that lost the CA
		 * together do not all come back in the same millisecond. */
		if (RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1)
			rnd = (uint32_t)engine_now_ms();
		sleep_ms = delay / 2 + (int64_t)(rnd % (uint32_t)(delay / 2 + 1));
		if (sleep_ms > deadline - engine_mono_ms())
			sleep_ms = deadline - engine_mono_ms();
		if ((r = board_sleep(b, sleep_ms > 0 ? sleep_ms : 0)) != 0)
			return board_fail(b, r, "stopped by the operator while "
			    "waiting for the CA");
		delay = delay * 2 > cfg->ca_retry_max_ms ? cfg->ca_retry_max_ms :
		    delay * 2;
	}
	if (waiting) {
		board_set_state(b, SLOT_WORKING);
		snprintf(msg, sizeof(msg), "CA answered after %.1f s (%d tries; "
		    "%d earlier requests got no certificate back: the CA's "
		    "records may hold more certificates for this key)",
		    (double)(engine_mono_ms() - t0) / 1000.0, tries, tries - 1);
		board_emit(b, EV_INFO, 0, msg);
		snprintf(b->ok_note, sizeof(b->ok_note), "%s", msg);
	}
	/* Each field on its own: whatever can be read goes in the record. */
	if (board_x509(b) == NULL ||
	    certcheck_fingerprint_der(b->cert, b->cert_len, b->cert_fpr) != 0)
		snprintf(b->cert_fpr, sizeof(b->cert_fpr), "unparseable");
	if (b->x509 == NULL || certcheck_serial_hex_x509(b->x509,
	    b->cert_serial, sizeof(b->cert_serial)) != 0)
		snprintf(b->cert_serial, sizeof(b->cert_serial), "unparseable");
	/* The certificate exists from here on, whatever happens next: the
	 * runner records its issuance ("issued ok") before anything else,
	 * and stops if that cannot be done. */
	return 0;
}

static int
step_validate(struct board *b)
{
	struct certcheck_expect want = {
		.cn = b->device_id,
		.spki = b->spki,
		.spki_len = b->spki_len,
	};
	char why[300] = "";
	int r;

	if (board_x509(b) == NULL) {
		snprintf(why, sizeof(why), "not a DER X.509 certificate");
		r = KL_ERR_INVALID;
	} else
		r = certcheck_verify_x509(b->e->o.trust, b->x509, &want, why,
		    sizeof(why));
	if (r != 0) {
		(void)board_audit(b, "validate", "refused", why);
		return board_fail(b, KL_ERR_CERT_INVALID,
		    "certificate refused, not written to the board: %s", why);
	}
	return 0;
}

/* client.pem: the leaf in PEM, then any configured intermediates. */
static int
make_client_pem_of(struct board *b, const uint8_t *cert, size_t cert_len,
    struct buf *out)
{
	BIO *mem = NULL;
	char *p;
	long n;
	int r = KL_ERR_CRYPTO;

	/* The DER validated already (step_validate, or the record a
	 * recovered board matched): PEM is its base64 between the lines,
	 * no decoder needed. */
	if (cert == NULL || cert_len == 0 || cert_len > LONG_MAX ||
	    (mem = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio(mem, PEM_STRING_X509, "", cert,
	    (long)cert_len) <= 0)
		goto out;
	n = BIO_get_mem_data(mem, &p);
	if ((r = buf_put(out, p, (size_t)n)) != 0)
		goto out;
	if (b->e->intermediates_pem != NULL &&
	    (r = buf_put(out, b->e->intermediates_pem,
	    b->e->intermediates_len)) != 0)
		goto out;
	r = 0;
out:
	BIO_free(mem);
	return r;
}

struct board_file {
	const char *name;
	const uint8_t *data;
	size_t len;
	uint8_t sha[32];
};

static int
put_file(struct board *b, struct board_file *f)
{
	const uint8_t *p;
	size_t n;
	int r;

	if ((r = engine_sha256(f->data, f->len, f->sha)) != 0)
		return r;
	if ((r = proto_put_str(&b->req, PT_FILE_NAME, f->name)) ||
	    (r = proto_put_u32(&b->req, PT_FILE_MODE, 0644)) ||
	    (r = proto_put_bytes(&b->req, PT_FILE_DATA, f->data, f->len)))
		return r;
	b->staged = 1;
	if ((r = board_call(b, PROTO_PUT_FILE, b->e->o.cfg->timeout_ms)) != 0)
		return r;
	if (board_resp_bytes(b, PT_SHA256, 32, &p, &n) != 0 || n != 32 ||
	    memcmp(p, f->sha, 32) != 0)
		return board_fail(b, KL_ERR_MISMATCH,
		    "board staged %s with a different hash", f->name);
	return 0;
}

/* The three import files, in commit order: client.pem last, since
 * aktualizr treats it as the sign that the device credentials are there.
 * pem holds client.pem's bytes (the caller frees it). */
static int
board_files(struct board *b, struct buf *pem, struct board_file files[3])
{
	const struct ota_files *ota = b->e->o.ota;
	size_t i;
	int r;

	if ((r = make_client_pem_of(b, b->cert, b->cert_len, pem)) != 0)
		return r;
	files[0] = (struct board_file){ "root.crt", ota->root_crt,
		ota->root_crt_len, { 0 } };
	files[1] = (struct board_file){ "gateway.url",
		(const uint8_t *)ota->gateway_url, strlen(ota->gateway_url),
		{ 0 } };
	files[2] = (struct board_file){ "client.pem", pem->data, pem->len,
		{ 0 } };
	for (i = 0; i < 3; i++)
		if ((r = engine_sha256(files[i].data, files[i].len, files[i].sha)) != 0)
			return r;
	return 0;
}

/*
 * Version 2: root.crt and gateway.url were staged during KEYGEN.  The
 * certificate goes once, as DER, with COMMIT: the board stages the token
 * object and client.pem (its PEM, then the intermediates) from it and
 * commits them with the files.  COMMIT's answer is the digest of what the
 * board read back (proto_readback_digest), checked in step_verify.
 */
static int
step_write_v2(struct board *b)
{
	struct engine *e = b->e;
	const uint8_t *p;
	size_t n;
	int r;

	if ((r = proto_put_bytes(&b->req, PT_KEY_ID, e->cert_id,
	    e->cert_id_len)) ||
	    (r = proto_put_str(&b->req, PT_KEY_LABEL, e->o.cfg->key_label)) ||
	    (r = proto_put_bytes(&b->req, PT_CERT, b->cert, b->cert_len)) ||
	    (r = proto_put_str(&b->req, PT_CERT_FILE, "client.pem")))
		goto fail;
	if (e->intermediates_pem != NULL && (r = proto_put_bytes(&b->req,
	    PT_FILE_DATA, e->intermediates_pem, e->intermediates_len)) != 0)
		goto fail;
	/*
	 * The intent is on record before COMMIT leaves: if the station dies
	 * now, the next station to see this board knows to ask it what it
	 * holds instead of guessing.
	 */
	if ((r = board_audit(b, "commit", "requested", NULL)) != 0) {
		buf_reset(&b->req);
		return board_fail(b, r, "audit log write failed; COMMIT was "
		    "not sent");
	}
	b->staged = 1;
	b->commit_sent = 1;
	if ((r = board_call(b, PROTO_COMMIT, e->o.cfg->timeout_ms)) != 0)
		return r;
	b->staged = 0;
	b->committed = 1;
	/* Checked in step_verify; none is a mismatch there. */
	if (board_resp_bytes(b, PT_READBACK_SHA256, 32, &p, &n) == 0 &&
	    n == 32) {
		memcpy(b->readback, p, 32);
		b->readback_len = 32;
	}
	b->readback_valid = 1;
	return 0;
fail:
	buf_reset(&b->req);
	return r;
}

/*
 * Version 2: what the board read back after COMMIT, against what was
 * written.  0 when the digests match; 1 when they do not (the caller
 * asks the board file by file, to say which one differs).
 */
static int
verify_readback(struct board *b, const struct board_file files[3], int *same)
{
	struct engine *e = b->e;
	struct proto_readback rb[4];
	uint8_t want[32];
	size_t i;
	int r;

	memset(rb, 0, sizeof(rb));
	for (i = 0; i < 3; i++) {
		rb[i].kind = PROTO_RB_FILE;
		rb[i].name_len = strlen(files[i].name);
		memcpy(rb[i].name, files[i].name, rb[i].name_len);
		memcpy(rb[i].sha256, files[i].sha, 32);
		rb[i].size = (uint32_t)files[i].len;
	}
	rb[3].kind = PROTO_RB_CERT;
	rb[3].name_len = e->cert_id_len;
	memcpy(rb[3].name, e->cert_id, e->cert_id_len);
	rb[3].size = (uint32_t)b->cert_len;
	if ((r = engine_sha256(b->cert, b->cert_len, rb[3].sha256)) != 0 ||
	    (r = proto_readback_digest(rb, 4, want)) != 0)
		return r;
	*same = b->readback_len == 32 &&
	    CRYPTO_memcmp(want, b->readback, 32) == 0;
	return 0;
}

/*
 * Stage the files and the certificate object, record the intent, commit.
 * The board keeps its old key, certificate and files until COMMIT, which
 * swaps them all in one board-side commit (docs/protocol.md).
 */
static int
step_write(struct board *b)
{
	struct engine *e = b->e;
	struct buf pem;
	struct board_file files[3];
	const uint8_t *p;
	uint8_t cert_sha[32];
	size_t i, n;
	int r;

	if (b->version >= 2)
		return step_write_v2(b);
	buf_init(&pem, ENGINE_MAX_PEM);
	if ((r = board_files(b, &pem, files)) != 0)
		goto out;
	for (i = 0; i < 3; i++)
		if ((r = put_file(b, &files[i])) != 0)
			goto out;

	/* The certificate object where aktualizr looks for it. */
	if ((r = engine_sha256(b->cert, b->cert_len, cert_sha)) != 0)
		goto out;
	if ((r = proto_put_bytes(&b->req, PT_KEY_ID, e->cert_id,
	    e->cert_id_len)) ||
	    (r = proto_put_str(&b->req, PT_KEY_LABEL, e->o.cfg->key_label)) ||
	    (r = proto_put_bytes(&b->req, PT_CERT, b->cert, b->cert_len)))
		goto out;
	if ((r = board_call(b, PROTO_PUT_CERT, e->o.cfg->timeout_ms)) != 0)
		goto out;
	if (board_resp_bytes(b, PT_SHA256, 32, &p, &n) != 0 || n != 32 ||
	    memcmp(p, cert_sha, 32) != 0) {
		r = board_fail(b, KL_ERR_MISMATCH,
		    "certificate read back from the board's HSM differs");
		goto out;
	}
	/*
	 * The intent is on record before COMMIT leaves: if the station dies
	 * now, the next station to see this board knows to ask it what it
	 * holds instead of guessing.
	 */
	if ((r = board_audit(b, "commit", "requested", NULL)) != 0) {
		r = board_fail(b, r, "audit log write failed; COMMIT was not "
		    "sent");
		goto out;
	}
	b->commit_sent = 1;
	if ((r = board_call(b, PROTO_COMMIT, e->o.cfg->timeout_ms)) != 0)
		goto out;
	b->staged = 0;
	b->committed = 1;
	r = 0;
out:
	buf_free(&pem);
	return r;
}

/* Read every file back and compare it with what was written. */
static int
step_verify(struct board *b)
{
	struct engine *e = b->e;
	struct buf pem;
	struct board_file files[3];
	const uint8_t *p;
	uint32_t size;
	size_t i, n;
	int same = 0, r;

	/* A recovered board's credentials are this plant's from here on:
	 * if they fail a check, they are taken back like fresh ones. */
	if (b->recovered)
		b->commit_sent = b->committed = 1;
	buf_init(&pem, ENGINE_MAX_PEM);
	if ((r = board_files(b, &pem, files)) != 0)
		goto out;
	if (b->readback_valid) {
		if ((r = verify_readback(b, files, &same)) != 0)
			goto out;
		if (same)
			goto out;
		/* Something differs: which file, or the certificate? */
	}
	for (i = 0; i < 3; i++) {
		if ((r = proto_put_str(&b->req, PT_FILE_NAME, files[i].name)))
			goto out;
		if ((r = board_call(b, PROTO_FILE_HASH,
		    e->o.cfg->timeout_ms)) != 0)
			goto out;
		if (board_resp_bytes(b, PT_SHA256, 32, &p, &n) != 0 || n != 32 ||
		    proto_get_u32(b->resp.data, b->resp.len, PT_FILE_SIZE,
		    &size) != 0) {
			r = board_fail(b, KL_ERR_PROTO,
			    "FILE_HASH answer for %s is incomplete",
			    files[i].name);
			goto out;
		}
		if (size != files[i].len || memcmp(p, files[i].sha, 32) != 0) {
			r = board_fail(b, KL_ERR_MISMATCH,
			    "%s read back from the board differs from what "
			    "was written", files[i].name);
			goto out;
		}
	}
	if (b->readback_valid) {
		r = board_fail(b, KL_ERR_MISMATCH, "certificate read back from "
		    "the board's HSM differs");
		goto out;
	}
	r = 0;
out:
	buf_free(&pem);
	return r;
}

/* The board signs a fresh challenge with its HSM key; the certificate's
 * public key must verify it. */
static int
step_pop(struct board *b)
{
	struct engine *e = b->e;
	uint8_t challenge[ENGINE_CHALLENGE_LEN];
	const uint8_t *sig;
	EVP_MD_CTX *md = NULL;
	size_t n;
	int r;

	if (RAND_bytes(challenge, sizeof(challenge)) != 1)
		return KL_ERR_CRYPTO;
	if ((r = proto_put_bytes(&b->req, PT_KEY_ID, e->tls_id,
	    e->tls_id_len)) ||
	    (r = proto_put_bytes(&b->req, PT_CHALLENGE, challenge,
	    sizeof(challenge))))
		return r;
	if ((r = board_call(b, PROTO_SIGN, e->o.cfg->keygen_timeout_ms)) != 0)
		return r;
	if (board_resp_bytes(b, PT_SIGNATURE, 1024, &sig, &n) != 0)
		return board_fail(b, KL_ERR_PROTO, "SIGN answer has no signature");
	if (board_x509(b) == NULL || (md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL,
	    X509_get0_pubkey(b->x509)) != 1) {
		r = board_fail(b, KL_ERR_CRYPTO, "cannot set up the check of "
		    "the board's signature");
		goto out;
	}
	/* The agent signs its context "keyline-pop-v1" (NUL included),
	 * then the challenge; never the station's bytes alone
	 * (docs/protocol.md, "What the agent trusts"). */
	if (EVP_DigestVerifyUpdate(md, "keyline-pop-v1",
	    sizeof("keyline-pop-v1")) != 1 ||
	    EVP_DigestVerifyUpdate(md, challenge, sizeof(challenge)) != 1 ||
	    EVP_DigestVerifyFinal(md, sig, n) != 1) {
		r = board_fail(b, KL_ERR_POP,
		    "board's signature over the challenge does not verify "
		    "with the certificate's key");
		goto out;
	}
	r = 0;
out:
	EVP_MD_CTX_free(md);
	return r;
}

/*
 * The steps in order (internal.h, struct engine_step_def).  A power retry
 * stops at CA: from there a certificate may exist.  CA's "ok" row is
 * "issued": the certificate exists from then on, and is on record before
 * anything else happens to it.
 */
const struct engine_step_def engine_steps[] = {
	/* step          fn             audit       cancel retry  runs for */
	{ STEP_CONNECT, step_connect, NULL, 1, 1, FOR_ALL },
	{ STEP_IDENTIFY, step_identify, "identify", 1, 1, FOR_ALL },
	{ STEP_DUPCHECK, step_dupcheck, "dupcheck", 1, 1, FOR_ALL },
	{ STEP_KEYGEN, step_keygen, "keygen", 1, 1, FOR_NEW },
	{ STEP_CSR, step_csr, "csr", 1, 1, FOR_NEW },
	{ STEP_CA, step_ca, "issued", 1, 0, FOR_NEW },
	{ STEP_VALIDATE, step_validate, "validate", 1, 0, FOR_ALL },
	{ STEP_WRITE, step_write, "write", 0, 0, FOR_NEW },
	{ STEP_VERIFY, step_verify, "verify", 0, 0, FOR_NOT_ALREADY },
	{ STEP_POP, step_pop, "pop", 0, 0, FOR_ALL },
};

const size_t engine_nsteps = sizeof(engine_steps) / sizeof(engine_steps[0]);
