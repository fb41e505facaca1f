/*
 * ca.h: the fleet CA as seen by the engine.
 *
 * A CA backend is an ops table; the engine only calls ca_issue().  Backends:
 * "local" (ca_local.c: the CA key in the station's PKCS#11 token, or a PEM
 * key behind an explicit development flag).  Remote backends (CFSSL, CMP)
 * plug in here later.
 *
 * A CA is shared by all slot threads: ca_issue() is thread-safe (backends
 * serialise what they must).
 */
#ifndef KL_CA_H
#define KL_CA_H

#include <stddef.h>
#include <stdint.h>

struct ca_request {
	const uint8_t *csr_der;	/* borrowed: the board's PKCS#10 */
	size_t csr_len;
	const char *device_id;	/* subject CN the certificate must carry */
};

struct ca_ops {
	const char *name;
	/*
	 * 0 and *cert_der (caller OPENSSL_free()s), or with words in err:
	 * KL_ERR_CA (the CA refused: final), KL_ERR_INVALID (bad CSR:
	 * final), or KL_ERR_UNAVAILABLE / KL_ERR_TIMEOUT (the CA could not
	 * be reached or did not answer in time: the engine waits with
	 * backoff and asks again; see ca_is_transient()).
	 */
	int (*issue)(void *ctx, const struct ca_request *req,
	    uint8_t **cert_der, size_t *cert_len, char *err, size_t errsz);
	void (*free)(void *ctx);
};

struct ca {
	const struct ca_ops *ops;
	void *ctx;		/* owned */
	char name[64];		/* for the audit log ("local:fleet-root") */
};

struct ca_local_params {
	const char *issuer_cert;	/* PEM path of the CA certificate */
	const char *module;		/* PKCS#11 module of the station token */
	const char *token_label;
	const char *pin;		/* borrowed for the call, wiped by caller */
	const char *key_id_hex;		/* CKA_ID of the CA key */
	const char *dev_key_pem;	/* development only: a PEM key file
					 * instead of the token (warns) */
	unsigned validity_days;		/* > 0 */
};

/* 0 and *out (free with ca_free), KL_ERR_CONFIG, KL_ERR_HSM*, ... */
int ca_local_new(struct ca **out, const struct ca_local_params *p);

int ca_issue(struct ca *ca, const struct ca_request *req, uint8_t **cert_der,
    size_t *cert_len, char *err, size_t errsz);
/* Whether an issue() error is worth asking again after a wait. */
int ca_is_transient(int err);
void ca_free(struct ca *ca);

#endif
