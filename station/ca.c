/*
 * ca.c: the CA seen by the engine (see ca.h): argument checks and dispatch
 * to the backend's ops table, and the token key lookup the backends that
 * sign in the station token share.
 *
 * Thread safety is the backend's job (ca_local holds a mutex around the
 * token), so this layer stays lock-free and a slow remote backend can serve
 * several slots at once.
 */
#include "station/ca.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "hsm/hsm.h"
#include "station/err.h"
#include "station/log.h"

/* A PKCS#10 for an RSA-3072 key with a few attributes is ~1.5 KB. */
#define CA_MAX_CSR (16 * 1024)

int
ca_issue(struct ca *ca, const struct ca_request *req, uint8_t **cert_der,
    size_t *cert_len, char *err, size_t errsz)
{
	uint8_t *der = NULL;
	size_t len = 0;
	int r;

	if (ca == NULL || ca->ops == NULL || ca->ops->issue == NULL ||
	    req == NULL || cert_der == NULL || cert_len == NULL) {
		snprintf(err, errsz, "internal: ca_issue without a CA or "
		    "request");
		return KL_ERR_INVALID;
	}
	if (req->csr_der == NULL || req->csr_len == 0) {
		snprintf(err, errsz, "empty CSR");
		return KL_ERR_INVALID;
	}
	if (req->csr_len > CA_MAX_CSR) {
		snprintf(err, errsz, "CSR larger than %d bytes", CA_MAX_CSR);
		return KL_ERR_INVALID;
	}
	if (req->device_id == NULL || req->device_id[0] == '\0') {
		snprintf(err, errsz, "no device ID");
		return KL_ERR_INVALID;
	}
	if (err != NULL && errsz > 0)
		err[0] = '\0';
	r = ca->ops->issue(ca->ctx, req, &der, &len, err, errsz);
	if (r != 0) {
		OPENSSL_free(der);
		if (err != NULL && errsz > 0 && err[0] == '\0')
			snprintf(err, errsz, "%s", kl_strerror(r));
		return r > 0 ? KL_ERR_INTERNAL : r;
	}
	if (der == NULL || len == 0) {
		OPENSSL_free(der);
		snprintf(err, errsz, "CA backend returned no certificate");
		return KL_ERR_CA;
	}
	*cert_der = der;
	*cert_len = len;
	return 0;
}

int
ca_token_key(const char *what, const char *module, const char *token_label,
    const char *pin, const char *key_id_hex, struct hsm **hsm, EVP_PKEY **key)
{
	uint8_t id[64];
	size_t id_len = 0;
	struct hsm *h = NULL;
	EVP_PKEY *k = NULL;
	int r = KL_ERR_INTERNAL;

	if (what == NULL || module == NULL || pin == NULL ||
	    key_id_hex == NULL || hsm == NULL || key == NULL)
		return KL_ERR_INVALID;
	if (hsm_id_from_hex(key_id_hex, id, sizeof(id), &id_len) != 0) {
		log_error("%s: key_id '%s' is not hex", what, key_id_hex);
		return KL_ERR_CONFIG;
	}
	if ((r = hsm_open(&h, module, token_label, pin)) != 0)
		goto out;
	if ((r = hsm_get_private_key(h, id, id_len, &k)) != 0) {
		log_error("%s: no key with id %s in the station token", what,
		    key_id_hex);
		goto out;
	}
	*hsm = h;
	*key = k;
	h = NULL;
	k = NULL;
	r = 0;
out:
	EVP_PKEY_free(k);	/* before its token session */
	hsm_close(h);
	return r;
}

int
ca_http_status(const char *err_data)
{
	char *end;
	long v;

	if (err_data == NULL || strncmp(err_data, "code=", 5) != 0)
		return 0;
	errno = 0;
	v = strtol(err_data + 5, &end, 10);
	if (errno != 0 || end == err_data + 5 || v < 100 || v > 999)
		return 0;
	return (int)v;
}

int
ca_is_transient(int err)
{
	return err == KL_ERR_UNAVAILABLE || err == KL_ERR_TIMEOUT;
}

void
ca_free(struct ca *ca)
{
	if (ca == NULL)
		return;
	if (ca->ops != NULL && ca->ops->free != NULL)
		ca->ops->free(ca->ctx);
	free(ca);
}
