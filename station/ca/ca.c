/*
 * ca.c: the CA seen by the engine (see ca.h): argument checks and dispatch
 * to the backend's ops table, and what the backends share: the token key
 * lookup, and TLS with a pinned server certificate.
 *
 * Thread safety is the backend's job (ca_local holds a mutex around the
 * token), so this layer stays lock-free and a slow remote backend can serve
 * several slots at once.
 */
#include "station/ca/ca.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "hsm/hsm.h"
#include "common/err.h"
#include "common/log.h"

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
ca_csr_asks_nothing_more(const X509_REQ *csr, int no_extensions, char *err,
    size_t errsz)
{
	const X509_NAME *name = X509_REQ_get_subject_name(csr);
	STACK_OF(X509_EXTENSION) *exts;
	const ASN1_OBJECT *o;
	char type[64];
	int i, n, ncn = 0;

	n = X509_NAME_entry_count(name);
	for (i = 0; i < n; i++) {
		o = X509_NAME_ENTRY_get_object(X509_NAME_get_entry(name, i));
		if (OBJ_obj2nid(o) == NID_commonName && ncn++ == 0)
			continue;
		if (OBJ_obj2txt(type, (int)sizeof(type), o, 0) <= 0)
			snprintf(type, sizeof(type), "?");
		snprintf(err, errsz, "the CSR's subject has %s%s, more than "
		    "the CN the station asks for: not sent to the CA", type,
		    OBJ_obj2nid(o) == NID_commonName ? " twice" : "");
		return KL_ERR_INVALID;
	}
	if (!no_extensions)
		return 0;
	exts = X509_REQ_get_extensions((X509_REQ *)csr);
	n = exts != NULL ? sk_X509_EXTENSION_num(exts) : 0;
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	ERR_clear_error();
	if (n > 0) {
		snprintf(err, errsz, "the CSR requests %d extension%s (such as "
		    "a subjectAltName) the station does not ask for: not sent "
		    "to the CA", n, n == 1 ? "" : "s");
		return KL_ERR_INVALID;
	}
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

struct ca_tls {
	SSL_CTX *ssl_ctx;
	X509 *pinned;
};

void
ca_tls_free(struct ca_tls *t)
{
	if (t == NULL)
		return;
	SSL_CTX_free(t->ssl_ctx);
	X509_free(t->pinned);
	free(t);
}

/* The whole chain check is replaced by one question: is the leaf the
 * pinned certificate? */
static int
ca_tls_pin_cb(X509_STORE_CTX *xs, void *arg)
{
	struct ca_tls *t = arg;
	X509 *leaf = X509_STORE_CTX_get0_cert(xs);
	SSL *ssl = X509_STORE_CTX_get_ex_data(xs,
	    SSL_get_ex_data_X509_STORE_CTX_idx());
	struct ca_tls_call *call = ssl != NULL ? SSL_get_app_data(ssl) : NULL;

	if (leaf != NULL && X509_cmp(leaf, t->pinned) == 0)
		return 1;
	if (call != NULL)
		call->pin_failed = 1;
	X509_STORE_CTX_set_error(xs, X509_V_ERR_CERT_REJECTED);
	return 0;
}

int
ca_tls_new(struct ca_tls **out, const char *what, int use_ssl,
    const char *pin_pem)
{
	struct ca_tls *t;
	BIO *in = NULL;
	int r = KL_ERR_CONFIG;

	*out = NULL;
	if (use_ssl != (pin_pem != NULL && pin_pem[0] != '\0')) {
		log_error("%s: %s", what, use_ssl ?
		    "https needs server_cert to pin" :
		    "server_cert is for https; the url is http");
		return KL_ERR_CONFIG;
	}
	if (!use_ssl)
		return 0;
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return KL_ERR_NOMEM;
	if ((in = BIO_new_file(pin_pem, "r")) == NULL ||
	    (t->pinned = PEM_read_bio_X509(in, NULL, NULL, NULL)) == NULL) {
		log_error("%s: server_cert %s: not a PEM certificate", what,
		    pin_pem);
		log_openssl(what);
		goto out;
	}
	if ((t->ssl_ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
	    !SSL_CTX_set_min_proto_version(t->ssl_ctx, TLS1_2_VERSION)) {
		log_openssl(what);
		r = KL_ERR_CRYPTO;
		goto out;
	}
	SSL_CTX_set_verify(t->ssl_ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_cert_verify_callback(t->ssl_ctx, ca_tls_pin_cb, t);
	*out = t;
	t = NULL;
	r = 0;
out:
	BIO_free(in);
	ca_tls_free(t);
	return r;
}

BIO *
ca_tls_bio_cb(BIO *bio, void *arg, int connect, int detail)
{
	struct ca_tls_call *call = arg;
	BIO *sbio, *cbio;
	SSL *ssl;

	if (call == NULL || call->tls == NULL)
		return bio;
	if (connect && detail) {
		if ((ssl = SSL_new(call->tls->ssl_ctx)) == NULL)
			return NULL;
		SSL_set_app_data(ssl, call);
		if (call->host != NULL)
			(void)SSL_set_tlsext_host_name(ssl, call->host);
		SSL_set_connect_state(ssl);
		if ((sbio = BIO_new(BIO_f_ssl())) == NULL) {
			SSL_free(ssl);
			return NULL;
		}
		BIO_set_ssl(sbio, ssl, BIO_CLOSE);
		return BIO_push(sbio, bio);
	}
	if (!connect && BIO_method_type(bio) == BIO_TYPE_SSL) {
		(void)ERR_set_mark();
		BIO_ssl_shutdown(bio);
		cbio = BIO_pop(bio);
		BIO_free(bio);
		(void)ERR_pop_to_mark();
		return cbio;
	}
	return bio;
}

int
ca_http_connect(const char *host, const char *port, int timeout_s,
    BIO **out, char *err, size_t errsz)
{
	time_t max = time(NULL) + (timeout_s > 0 ? timeout_s : 1);
	unsigned long e, f;
	const char *what;
	BIO *b;
	int rv, en;

	*out = NULL;
	ERR_clear_error();
	errno = 0;
	if ((b = BIO_new_connect(host)) == NULL ||
	    BIO_set_conn_port(b, port) != 1 || BIO_set_nbio(b, 1) != 1) {
		BIO_free_all(b);
		snprintf(err, errsz, "cannot set up a connection to %s:%s",
		    host, port);
		return KL_ERR_NOMEM;
	}
	for (;;) {
		if ((rv = BIO_do_connect(b)) > 0) {
			*out = b;
			return 0;
		}
		if (!BIO_should_retry(b))
			break;
		/* In progress: wait for it, at most until the deadline. */
		if ((rv = BIO_wait(b, max, 100)) <= 0) {
			if (rv == 0) {
				BIO_free_all(b);
				ERR_clear_error();
				snprintf(err, errsz, "cannot connect to %s:%s "
				    "within %d s", host, port, timeout_s);
				return KL_ERR_UNAVAILABLE;
			}
			break;
		}
	}
	/* The system's words (connection refused, no route) when there
	 * are some: OpenSSL files them as ERR_LIB_SYS with errno as the
	 * reason. */
	en = errno;
	for (e = 0; (f = ERR_get_error()) != 0; )
		if (ERR_GET_LIB(f) == ERR_LIB_SYS || e == 0)
			e = f;
	if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_SYS)
		what = strerror(ERR_GET_REASON(e));
	else if (e != 0 && ERR_reason_error_string(e) != NULL)
		what = ERR_reason_error_string(e);
	else
		what = en != 0 ? strerror(en) : "failed";
	snprintf(err, errsz, "cannot connect to %s:%s: %s", host, port, what);
	BIO_free_all(b);
	return KL_ERR_UNAVAILABLE;
}

int
ca_http_retryable(int code)
{
	return (code >= 500 && code <= 599) || code == 408 || code == 429;
}

int
ca_err_not_tls(unsigned long e)
{
	return ERR_GET_LIB(e) == ERR_LIB_SSL &&
	    ERR_GET_REASON(e) == SSL_R_WRONG_VERSION_NUMBER;
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
