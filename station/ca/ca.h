/*
 * ca.h: the fleet CA as seen by the engine.
 *
 * A CA backend is an ops table; the engine only calls ca_issue().  Backends:
 * "local" (ca_local.c: the CA key in the station's PKCS#11 token, or a PEM
 * key behind an explicit development flag), "cfssl" (ca_cfssl.c: a CFSSL
 * server's authsign API over HTTP or HTTPS with the server certificate
 * pinned) and "cmp" (ca_cmp.c: CMP, Lightweight CMP Profile of RFC 9483,
 * through OpenSSL's CMP client, over HTTP or pinned HTTPS).  docs/ca-remote.md says how they behave
 * when the CA cannot be reached.
 *
 * A CA is shared by all slot threads: ca_issue() is thread-safe (backends
 * serialise what they must).
 */
#ifndef KL_CA_H
#define KL_CA_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>
#include <openssl/x509.h>

struct hsm;

struct ca_request {
	const uint8_t *csr_der;	/* borrowed: the board's PKCS#10 */
	size_t csr_len;
	const char *device_id;	/* subject CN the certificate must carry */
	/* Optional, borrowed: csr_der checked by the engine
	 * (certcheck_csr_p256: a P-256 request for spki, signed by key).
	 * A backend in the station's process (local) then signs from
	 * these instead of decoding and verifying the same bytes again;
	 * remote ones send csr_der.  key NULL: nothing checked yet. */
	EVP_PKEY *key;
	const uint8_t *spki;
	size_t spki_len;
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
	const char *subject_extra;	/* fixed subject entries, put before
					 * the CN, certcheck's syntax; NULL/""
					 * = CN only */
	unsigned max_validity_days;	/* validity_days may not exceed it;
					 * 0 = certcheck's default */
};

/* 0 and *out (free with ca_free), KL_ERR_CONFIG, KL_ERR_HSM*, ... */
int ca_local_new(struct ca **out, const struct ca_local_params *p);

/*
 * CFSSL: POST /api/v1/cfssl/authsign, the request signed with
 * HMAC-SHA256 under the shared key.  The station asks for subject
 * CN=<device ID> (and the profile's subject_extra as "names") whatever the
 * CSR says and "hosts": [] (no subjectAltName);
 * a CSR whose subject has more than a CN is not sent (KL_ERR_INVALID:
 * CFSSL would copy it); the profile decides the rest.
 * Errors: connection refused/reset, timeouts and HTTP 5xx are
 * KL_ERR_UNAVAILABLE / KL_ERR_TIMEOUT (the engine waits); HTTP 4xx, a
 * CFSSL "success": false and a server certificate that is not the pinned
 * one are KL_ERR_CA.
 */
struct ca_cfssl_params {
	const char *url;		/* http://host:port[/prefix] or https://;
					 * "/api/v1/cfssl/authsign" is appended */
	const uint8_t *auth_key;	/* HMAC key, borrowed for the call: the
					 * backend keeps a copy it wipes on
					 * free; caller wipes its own */
	size_t auth_key_len;		/* 1..256 */
	const char *profile;		/* signing profile, NULL/"" = default */
	const char *label;		/* multirootca label, NULL/"" = none */
	const char *subject_extra;	/* fixed subject entries, certcheck's
					 * syntax, sent as the request's
					 * subject "names"; only C, ST, L, O,
					 * OU, each once (what CFSSL names);
					 * NULL/"" = CN only */
	const char *server_cert;	/* PEM: with https, the one server
					 * certificate accepted (pinned);
					 * required for https, refused for
					 * http */
	int timeout_ms;			/* one request, > 0; OpenSSL counts
					 * whole seconds: rounded up */
};

int ca_cfssl_new(struct ca **out, const struct ca_cfssl_params *p);

/*
 * For tests and the fuzzer: the parser of a CFSSL server's answer, as
 * issue() uses it.  0 and *cert_der (DER, caller OPENSSL_free()s) and
 * *cert_len; or KL_ERR_CA with words in err: not a JSON object, "success"
 * not true (the server's first error message, printable ASCII only, cut
 * short), no certificate, or one that does not parse.
 */
int ca_cfssl_parse(const char *resp, size_t len, uint8_t **cert_der,
    size_t *cert_len, char *err, size_t errsz);

/*
 * CMP (RFC 9483 Lightweight CMP Profile): a p10cr carrying the board's
 * CSR, whose signature is the proof of possession; a CSR asking for more
 * than a CN (other subject entries, requested extensions) is not sent
 * (KL_ERR_INVALID).  Protection by a shared secret (MAC, secret + ref)
 * or by the station's certificate and key (client_cert + a key from the
 * station token or, for development, a PEM file); exactly one of the
 * two.  The returned certificate is checked with certcheck (fleet_root,
 * the CSR's key, CN = device ID, the device profile) before the station
 * confirms it (certConf); one that fails is rejected in the certConf,
 * and issue() returns KL_ERR_CERT_INVALID with its serial,
 * fingerprint and why in err.  Errors: no answer, a refused connection,
 * timeouts, HTTP 5xx are KL_ERR_UNAVAILABLE / KL_ERR_TIMEOUT; a rejection,
 * an error message, or a response whose protection does not verify is
 * KL_ERR_CA.
 */
struct ca_cmp_params {
	const char *url;		/* http://host:port/path or https://
					 * (messages are protected end to end
					 * by CMP either way) */
	const char *tls_server_cert;	/* PEM: with https, the one TLS server
					 * certificate accepted (pinned);
					 * required for https, refused for
					 * http */
	const char *fleet_root;		/* PEM trust anchor(s) for the check
					 * before certConf */
	const char *intermediates;	/* PEM bundle, NULL/"" = none */
	/* MAC protection */
	const uint8_t *secret;		/* borrowed; copied, wiped on free */
	size_t secret_len;
	const char *ref;		/* sender reference (senderKID) */
	/* signature protection */
	const char *client_cert;	/* PEM: the station's CMP certificate
					 * (and chain after it) */
	const char *client_key_pem;	/* development: PEM key file */
	const char *module;		/* or the key in the station token */
	const char *token_label;
	const char *pin;		/* borrowed for the call */
	const char *key_id_hex;
	const char *server_cert;	/* PEM: the CMP server's signing
					 * certificate, pinned; required with
					 * signature protection */
	int timeout_ms;			/* one request, > 0; whole seconds,
					 * rounded up */
	/* The device profile the check before certConf demands
	 * (certcheck_profile); the CMP server's own profile must add the
	 * subject_extra entries: a p10cr cannot ask for them. */
	const char *subject_extra;
	unsigned max_validity_days;	/* 0 = certcheck's default */
};

int ca_cmp_new(struct ca **out, const struct ca_cmp_params *p);

/*
 * For backends that sign with a key in the station token: open the token
 * (hsm_open) and fetch the private key whose CKA_ID is key_id_hex.  what
 * prefixes the log lines ("ca", "cmp").  module, key_id_hex and pin must
 * be set (backends check them first, with their own words).  pin is
 * borrowed for the call and not kept.  0 and *hsm and *key, both owned by
 * the caller, who frees key (EVP_PKEY_free) before hsm (hsm_close); or
 * KL_ERR_CONFIG (key_id not hex), hsm_open()'s and hsm_get_private_key()'s
 * errors, with nothing left open and the outputs untouched.
 */
int ca_token_key(const char *what, const char *module,
    const char *token_label, const char *pin, const char *key_id_hex,
    struct hsm **hsm, EVP_PKEY **key);

/*
 * For remote backends, before a CSR leaves the station: 0 when its
 * subject is a single CN and nothing else, and (no_extensions) it
 * requests no extension; else KL_ERR_INVALID with words in err.  A board's
 * own CSR (hsm_csr) is exactly that; a CSR asking for more (O=..., a
 * subjectAltName) would have the CA sign what a remote CA may copy into
 * the certificate (CFSSL fills subject fields its request leaves empty
 * from the CSR; a CMP p10cr carries the CSR unchanged).
 */
int ca_csr_asks_nothing_more(const X509_REQ *csr, int no_extensions,
    char *err, size_t errsz);

int ca_issue(struct ca *ca, const struct ca_request *req, uint8_t **cert_der,
    size_t *cert_len, char *err, size_t errsz);
/* Whether an issue() error is worth asking again after a wait. */
int ca_is_transient(int err);

/*
 * TLS to a remote CA server (CFSSL or CMP over https), trusting exactly one
 * server certificate: the pinned one.  Neither a public CA nor the host
 * name decides whom the station talks to; the handshake proves the server
 * holds the pinned certificate's key.  ca_tls_new takes whether the URL is
 * https (use_ssl) and the pin, a PEM file (NULL or "" for none): https
 * needs a pin and http refuses one (KL_ERR_CONFIG, logged with what as
 * prefix).  For https it loads the pin and makes a TLS 1.2+ client context
 * in *out; for http *out is NULL.  The caller frees it with ca_tls_free,
 * after every call that uses it.
 */
struct ca_tls;

int ca_tls_new(struct ca_tls **out, const char *what, int use_ssl,
    const char *pin_pem);
void ca_tls_free(struct ca_tls *t);

/* Per request, on the caller's stack: the arg of ca_tls_bio_cb. */
struct ca_tls_call {
	struct ca_tls *tls;	/* borrowed */
	const char *host;	/* SNI */
	int pin_failed;		/* out: the server showed another cert */
};

/*
 * An OSSL_HTTP_bio_cb_t (OSSL_HTTP_transfer, OSSL_CMP_CTX_set_http_cb):
 * puts TLS on the connect BIO when detail (use_ssl) says so, and takes it
 * off again at the end.  arg is a struct ca_tls_call.
 */
BIO *ca_tls_bio_cb(BIO *bio, void *arg, int connect, int detail);

/*
 * One TCP connection to host:port, non-blocking, within timeout_s: a
 * refused or unreachable server fails at once (KL_ERR_UNAVAILABLE, words
 * in err) instead of being tried again and again until the timeout, as
 * OpenSSL's HTTP client does with a connection it makes itself.  0 and
 * *out (the caller BIO_free_all()s it), for OSSL_HTTP_transfer's bio.
 */
int ca_http_connect(const char *host, const char *port, int timeout_s,
    BIO **out, char *err, size_t errsz);

/*
 * Shared by the remote backends' error classification, so they sort the
 * same failure the same way: an HTTP status that says "try again later"
 * (5xx, 408, 429), and a first OpenSSL error that says an https URL met a
 * server answering in plain HTTP (a configuration error, not an outage).
 */
int ca_http_retryable(int code);
int ca_err_not_tls(unsigned long e);

/* The HTTP status in the text OpenSSL attaches to HTTP_R_RECEIVED_ERROR
 * ("code=503,reason=..."), or 0 when there is none. */
int ca_http_status(const char *err_data);
void ca_free(struct ca *ca);

#endif
