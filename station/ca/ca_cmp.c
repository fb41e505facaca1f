/*
 * ca_cmp.c: the "cmp" CA backend (see ca.h): CMP after the Lightweight CMP
 * Profile (RFC 9483) through OpenSSL's CMP client.
 *
 * One enrollment is a p10cr carrying the board's CSR as the board signed
 * it (the CSR signature is the proof of possession; the station never
 * holds the board's key), then a certConf.  A CSR that asks for more than
 * a CN (other subject entries, requested extensions such as a
 * subjectAltName) is not sent.  Messages are protected either
 * by a shared secret (PBM MAC: reference + secret) or by the station's
 * own certificate and key, the key possibly in the station token; the
 * server's responses must carry the same MAC or a signature by the pinned
 * server certificate, or OpenSSL refuses them.
 *
 * The certConf is the station's only chance to tell the CA "not this one",
 * so the certificate is checked here with certcheck (fleet root, the CSR's
 * public key, which the engine already matched to the board's, CN = device
 * ID, usages, validity) before it is confirmed; a certificate that fails is
 * rejected in the certConf and never returned.  The engine checks it
 * again, as it does for every CA.
 *
 * An OSSL_CMP_CTX lives for one request, so slots enroll in parallel; only
 * a token key (one struct hsm, not thread-safe) serialises them.
 */
#include "station/ca/ca.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/cmp.h>
#include <openssl/cmp_util.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/http.h>
#include <openssl/httperr.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "hsm/hsm.h"
#include "common/buf.h"
#include "station/ca/certcheck.h"
#include "common/err.h"
#include "common/log.h"
#include "common/secret.h"

#define CMP_MAX_SECRET 256
#define CMP_MAX_URL 1024

struct ca_cmp {
	char host[256];
	int port;
	char path[CMP_MAX_URL];
	int timeout_s;
	struct certcheck_trust *trust;
	/* MAC protection */
	uint8_t *secret;	/* secret_alloc(CMP_MAX_SECRET): no dumps */
	size_t secret_len;
	char *ref;
	/* signature protection */
	X509 *cert;
	STACK_OF(X509) *chain;	/* certificates after the first in
				 * client_cert, sent as extraCerts */
	EVP_PKEY *key;
	struct hsm *hsm;	/* NULL unless the key is in the token */
	X509 *srv_cert;
	struct ca_tls *tls;	/* https only: the pinned TLS server cert */
	pthread_mutex_t lock;	/* around an exchange with a token key */
};

/* One enrollment: what the certConf callback needs and found. */
struct cmp_call {
	struct ca_cmp *c;
	const char *device_id;
	uint8_t *spki;		/* the CSR's key, DER */
	size_t spki_len;
	int rejected;
	char why[512];
	struct ca_tls_call tls;	/* https: what the TLS callback learned */
	int conn_failed;	/* cmp_transfer could not connect */
	char conn_why[300];
};

/* Largest CMP answer taken: a certificate, its chain, protection. */
#define CMP_MAX_RESP (256 * 1024)

static void
ca_cmp_free(void *arg)
{
	struct ca_cmp *c = arg;

	if (c == NULL)
		return;
	secret_free(c->secret, CMP_MAX_SECRET);
	free(c->ref);
	EVP_PKEY_free(c->key);	/* before its token session */
	hsm_close(c->hsm);
	X509_free(c->cert);
	sk_X509_pop_free(c->chain, X509_free);
	X509_free(c->srv_cert);
	ca_tls_free(c->tls);
	certcheck_trust_free(c->trust);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* OpenSSL's CMP client narrates every message; what matters reaches the
 * engine through the error classification, so this stays at debug. */
static int
cmp_log_cb(const char *func, const char *file, int line,
    OSSL_CMP_severity level, const char *msg)
{
	(void)file;
	(void)line;
	log_debug("cmp: %s: [%d] %s", func != NULL ? func : "", (int)level,
	    msg);
	return 1;
}

/* Before the certificate is confirmed: the station's own validation. */
static int
cmp_certconf_cb(OSSL_CMP_CTX *ctx, X509 *cert, int fail_info,
    const char **txt)
{
	struct cmp_call *call = OSSL_CMP_CTX_get_certConf_cb_arg(ctx);
	struct certcheck_expect want = { 0 };
	unsigned char *der = NULL;
	char why[300] = "", fpr[65] = "?", serial[80] = "?";
	int n;

	if (call == NULL)
		return fail_info;
	want.cn = call->device_id;
	want.spki = call->spki;
	want.spki_len = call->spki_len;
	/* Our check runs even when OpenSSL already objected (it compares
	 * the key with the CSR's), so the reason is the station's. */
	if ((n = i2d_X509(cert, &der)) <= 0) {
		ERR_clear_error();
		snprintf(why, sizeof(why), "certificate does not encode");
	} else {
		(void)certcheck_fingerprint(der, (size_t)n, fpr);
		(void)certcheck_serial_hex(der, (size_t)n, serial,
		    sizeof(serial));
		if (certcheck_verify(call->c->trust, der, (size_t)n, &want,
		    why, sizeof(why)) == 0) {
			if (fail_info == 0) {
				OPENSSL_free(der);
				return 0;
			}
			snprintf(why, sizeof(why), "%s", *txt != NULL ? *txt :
			    "refused by the CMP client");
		}
	}
	OPENSSL_free(der);
	call->rejected = 1;
	/* Serial and fingerprint go to the audit log through err: the CA
	 * made this certificate even though no board will get it. */
	snprintf(call->why, sizeof(call->why), "certificate serial %.40s "
	    "rejected in the certConf: %.160s (sha256 %s)", serial, why, fpr);
	*txt = "certificate refused by the station's validation";
	if (fail_info != 0)
		return fail_info;
	return 1 << OSSL_CMP_PKIFAILUREINFO_incorrectData;
}

static int
cmp_is_timeout(int lib, int reason)
{
	return (lib == ERR_LIB_CMP && reason == CMP_R_TOTAL_TIMEOUT) ||
	    (lib == ERR_LIB_HTTP && reason == HTTP_R_RETRY_TIMEOUT) ||
	    (lib == ERR_LIB_BIO && (reason == BIO_R_CONNECT_TIMEOUT ||
	    reason == BIO_R_TRANSFER_TIMEOUT));
}

/*
 * No certificate: could the server not be reached (the engine waits), or
 * did it say no?  Empties the OpenSSL error queue.
 */
static int
cmp_classify(OSSL_CMP_CTX *ctx, const struct cmp_call *call, char *err,
    size_t errsz)
{
	unsigned long e, first = 0;
	const char *data, *first_data = NULL;
	char txt[256], st[256];
	int flags, code, lib, reason, status, transport = 0, timeout = 0;
	int http = 0;

	status = OSSL_CMP_CTX_get_status(ctx);
	while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
		lib = ERR_GET_LIB(e);
		reason = ERR_GET_REASON(e);
		if (first == 0) {
			first = e;
			first_data = (flags & ERR_TXT_STRING) ? data : NULL;
		}
		if (cmp_is_timeout(lib, reason))
			timeout = 1;
		else if (lib == ERR_LIB_HTTP && reason == HTTP_R_RECEIVED_ERROR &&
		    (flags & ERR_TXT_STRING) && data != NULL &&
		    (code = ca_http_status(data)) > 0)
			http = code;
		else if (lib == ERR_LIB_BIO || lib == ERR_LIB_SYS ||
		    lib == ERR_LIB_HTTP ||
		    (lib == ERR_LIB_CMP && reason == CMP_R_TRANSFER_ERROR))
			transport = 1;
	}
	if (call->rejected) {
		snprintf(err, errsz, "%s", call->why);
		return KL_ERR_CERT_INVALID;
	}
	if (call->conn_failed) {
		ERR_clear_error();
		snprintf(err, errsz, "cannot reach the CMP server: %s",
		    call->conn_why);
		return KL_ERR_UNAVAILABLE;
	}
	if (call->tls.pin_failed) {
		snprintf(err, errsz, "the CMP server's TLS certificate is not "
		    "the pinned server_cert");
		return KL_ERR_CA;
	}
	if (status >= 0) {
		/* The server answered with a PKIStatus: a rejection or an
		 * error message.  "Waiting" (still polling when time ran
		 * out) and systemUnavail/systemFailure (an RA whose CA is
		 * offline, RFC 9483) are outages, not refusals. */
		int fi = OSSL_CMP_CTX_get_failInfoCode(ctx);

		if (OSSL_CMP_CTX_snprint_PKIStatus(ctx, st, sizeof(st)) ==
		    NULL)
			snprintf(st, sizeof(st), "status %d", status);
		if (status == OSSL_CMP_PKISTATUS_waiting || (fi > 0 &&
		    (fi & ((1 << OSSL_CMP_PKIFAILUREINFO_systemUnavail) |
		    (1 << OSSL_CMP_PKIFAILUREINFO_systemFailure))) != 0)) {
			snprintf(err, errsz, "CMP server unavailable: %.200s",
			    st);
			return KL_ERR_UNAVAILABLE;
		}
		snprintf(err, errsz, "CMP server refused: %.200s", st);
		return KL_ERR_CA;
	}
	if (http > 0 && !ca_http_retryable(http)) {
		snprintf(err, errsz, "CMP server refused the request: HTTP "
		    "%d", http);
		return KL_ERR_CA;
	}
	if (timeout) {
		snprintf(err, errsz, "CMP server did not answer in time");
		return KL_ERR_TIMEOUT;
	}
	/* Waiting will not make a plain server speak TLS. */
	if (ca_err_not_tls(first)) {
		snprintf(err, errsz, "the CMP server does not speak TLS: check "
		    "the url");
		return KL_ERR_CA;
	}
	if (http > 0 || transport) {
		ERR_error_string_n(first, txt, sizeof(txt));
		snprintf(err, errsz, "cannot reach the CMP server: %s%s%.80s",
		    txt, first_data != NULL ? ": " : "",
		    first_data != NULL ? first_data : "");
		return KL_ERR_UNAVAILABLE;
	}
	/* A response that came but does not verify (wrong MAC, wrong
	 * signer) or does not parse: waiting would not change it. */
	if (first == 0) {
		snprintf(err, errsz, "CMP exchange failed: the server's answer "
		    "was not accepted (its protection or content)");
		return KL_ERR_CA;
	}
	ERR_error_string_n(first, txt, sizeof(txt));
	snprintf(err, errsz, "CMP exchange failed: %s%s%.80s", txt,
	    first_data != NULL ? ": " : "",
	    first_data != NULL ? first_data : "");
	return KL_ERR_CA;
}

/*
 * OSSL_CMP_transfer_cb_t: one CMP message over HTTP(S) on a connection
 * made by ca_http_connect, so a server that refuses connections fails at
 * once rather than after the timeout (OpenSSL's own transfer keeps
 * reconnecting until then).  NULL on any failure; cmp_classify sorts it.
 */
static OSSL_CMP_MSG *
cmp_transfer(OSSL_CMP_CTX *ctx, const OSSL_CMP_MSG *req)
{
	struct cmp_call *call = OSSL_CMP_CTX_get_transfer_cb_arg(ctx);
	struct ca_cmp *c = call->c;
	BIO *conn = NULL, *rq = NULL, *rsp = NULL;
	OSSL_CMP_MSG *res = NULL;
	char port[8];

	snprintf(port, sizeof(port), "%d", c->port);
	if (ca_http_connect(c->host, port, c->timeout_s, &conn,
	    call->conn_why, sizeof(call->conn_why)) != 0) {
		call->conn_failed = 1;
		return NULL;
	}
	if ((rq = BIO_new(BIO_s_mem())) == NULL ||
	    i2d_OSSL_CMP_MSG_bio(rq, req) <= 0)
		goto out;
	rsp = OSSL_HTTP_transfer(NULL, c->host, port, c->path, c->tls != NULL,
	    NULL, NULL, conn, NULL, c->tls != NULL ? ca_tls_bio_cb : NULL,
	    c->tls != NULL ? &call->tls : NULL, 0, NULL,
	    "application/pkixcmp", rq, "application/pkixcmp", 1, CMP_MAX_RESP,
	    c->timeout_s, 0);
	if (rsp != NULL)
		res = d2i_OSSL_CMP_MSG_bio(rsp, NULL);
out:
	BIO_free(rsp);
	BIO_free(rq);
	BIO_free_all(conn);
	return res;
}

static int
cmp_setup_ctx(struct ca_cmp *c, OSSL_CMP_CTX *ctx, X509_REQ *csr,
    struct cmp_call *call)
{
	int ok = OSSL_CMP_CTX_set_log_cb(ctx, cmp_log_cb) &&
	    OSSL_CMP_CTX_set1_server(ctx, c->host) &&
	    OSSL_CMP_CTX_set_serverPort(ctx, c->port) &&
	    OSSL_CMP_CTX_set1_serverPath(ctx, c->path) &&
	    /* Never a proxy from the environment. */
	    OSSL_CMP_CTX_set1_proxy(ctx, "") &&
	    OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_MSG_TIMEOUT,
	    c->timeout_s) &&
	    /* p10cr and certConf: two messages. */
	    OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_TOTAL_TIMEOUT,
	    2 * c->timeout_s) &&
	    OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_IMPLICIT_CONFIRM, 0) &&
	    OSSL_CMP_CTX_set1_p10CSR(ctx, csr) &&
	    OSSL_CMP_CTX_set_certConf_cb(ctx, cmp_certconf_cb) &&
	    OSSL_CMP_CTX_set_certConf_cb_arg(ctx, call) &&
	    OSSL_CMP_CTX_set_transfer_cb(ctx, cmp_transfer) &&
	    OSSL_CMP_CTX_set_transfer_cb_arg(ctx, call);

	/* cmp_transfer puts TLS on its connection (ca_tls_bio_cb). */
	if (ok && c->tls != NULL) {
		call->tls.tls = c->tls;
		call->tls.host = c->host;
	}

	if (ok && c->secret_len > 0)
		ok = OSSL_CMP_CTX_set1_referenceValue(ctx,
		    (const unsigned char *)c->ref, (int)strlen(c->ref)) &&
		    OSSL_CMP_CTX_set1_secretValue(ctx, c->secret,
		    (int)c->secret_len);
	else if (ok)
		ok = OSSL_CMP_CTX_set1_cert(ctx, c->cert) &&
		    OSSL_CMP_CTX_set1_pkey(ctx, c->key) &&
		    OSSL_CMP_CTX_set1_srvCert(ctx, c->srv_cert) &&
		    (c->chain == NULL ||
		    OSSL_CMP_CTX_set1_untrusted(ctx, c->chain));
	return ok ? 0 : KL_ERR_CRYPTO;
}

static int
ca_cmp_issue(void *arg, const struct ca_request *req, uint8_t **cert_der,
    size_t *cert_len, char *err, size_t errsz)
{
	struct ca_cmp *c = arg;
	struct cmp_call call = { .c = c, .device_id = req->device_id };
	const unsigned char *p = req->csr_der;
	OSSL_CMP_CTX *ctx = NULL;
	X509_REQ *csr = NULL;
	X509 *cert;
	unsigned char *der = NULL, *spki = NULL;
	int n, r = KL_ERR_CA;

	ERR_clear_error();
	if ((csr = d2i_X509_REQ(NULL, &p, (long)req->csr_len)) == NULL ||
	    p != req->csr_der + req->csr_len ||
	    X509_REQ_get0_pubkey(csr) == NULL ||
	    (n = i2d_PUBKEY(X509_REQ_get0_pubkey(csr), &spki)) <= 0) {
		ERR_clear_error();
		snprintf(err, errsz, "CSR is not a DER PKCS#10 request");
		r = KL_ERR_INVALID;
		goto out;
	}
	/* A p10cr carries the CSR as the board signed it (its signature is
	 * the proof of possession), so the station cannot name the subject
	 * in it as it does for CFSSL: it sends only a CSR that asks for
	 * nothing but a CN, and the certConf check refuses a certificate
	 * with anything else. */
	if ((r = ca_csr_asks_nothing_more(csr, 1, err, errsz)) != 0)
		goto out;
	r = KL_ERR_CA;
	call.spki = spki;
	call.spki_len = (size_t)n;
	if ((ctx = OSSL_CMP_CTX_new(NULL, NULL)) == NULL ||
	    cmp_setup_ctx(c, ctx, csr, &call) != 0) {
		log_openssl("cmp: context");
		snprintf(err, errsz, "cannot set up the CMP client");
		r = KL_ERR_CRYPTO;
		goto out;
	}
	if (c->hsm != NULL)
		pthread_mutex_lock(&c->lock);
	cert = OSSL_CMP_exec_P10CR_ses(ctx);
	if (c->hsm != NULL)
		pthread_mutex_unlock(&c->lock);
	if (cert == NULL) {
		r = cmp_classify(ctx, &call, err, errsz);
		goto out;
	}
	/* cert is owned by ctx: the confirmed newCert. */
	if ((n = i2d_X509(cert, &der)) <= 0) {
		snprintf(err, errsz, "CMP certificate does not encode");
		goto out;
	}
	*cert_der = der;
	*cert_len = (size_t)n;
	der = NULL;
	r = 0;
out:
	ERR_clear_error();
	OPENSSL_free(der);
	OPENSSL_free(spki);
	OSSL_CMP_CTX_free(ctx);
	X509_REQ_free(csr);
	return r;
}

static const struct ca_ops ca_cmp_ops = {
	.name = "cmp",
	.issue = ca_cmp_issue,
	.free = ca_cmp_free,
};

static X509 *
cmp_read_cert(const char *path, STACK_OF(X509) **rest)
{
	BIO *in = BIO_new_file(path, "r");
	X509 *x = NULL, *more;

	if (in == NULL || (x = PEM_read_bio_X509(in, NULL, NULL, NULL)) ==
	    NULL) {
		log_error("cmp: %s: not a PEM certificate", path);
		log_openssl("cmp");
		BIO_free(in);
		return NULL;
	}
	while (rest != NULL &&
	    (more = PEM_read_bio_X509(in, NULL, NULL, NULL)) != NULL) {
		if ((*rest == NULL && (*rest = sk_X509_new_null()) == NULL) ||
		    !sk_X509_push(*rest, more)) {
			X509_free(more);
			X509_free(x);
			x = NULL;
			break;
		}
	}
	ERR_clear_error();	/* the end of the file */
	BIO_free(in);
	return x;
}

/* Never prompt for a passphrase. */
static int
cmp_no_pass(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

static int
cmp_load_key(struct ca_cmp *c, const struct ca_cmp_params *p)
{
	BIO *in;

	if (p->client_key_pem != NULL && p->client_key_pem[0] != '\0') {
		log_warn("cmp: the station's CMP key is a file on disk (%s): "
		    "for development only", p->client_key_pem);
		if ((in = BIO_new_file(p->client_key_pem, "r")) == NULL ||
		    (c->key = PEM_read_bio_PrivateKey(in, NULL, cmp_no_pass,
		    NULL)) == NULL) {
			BIO_free(in);
			log_error("cmp: %s: not an unencrypted PEM key",
			    p->client_key_pem);
			log_openssl("cmp");
			return KL_ERR_CONFIG;
		}
		BIO_free(in);
		return 0;
	}
	if (p->module == NULL || p->module[0] == '\0' ||
	    p->key_id_hex == NULL || p->key_id_hex[0] == '\0' ||
	    p->pin == NULL) {
		log_error("cmp: signature protection needs the station key: "
		    "module, key_id and a PIN");
		return KL_ERR_CONFIG;
	}
	return ca_token_key("cmp", p->module, p->token_label, p->pin,
	    p->key_id_hex, &c->hsm, &c->key);
}

static int
cmp_load_sig(struct ca_cmp *c, const struct ca_cmp_params *p)
{
	int r;

	if (p->server_cert == NULL || p->server_cert[0] == '\0') {
		log_error("cmp: signature protection needs the CMP server's "
		    "certificate (cmp_server_cert) to verify its answers");
		return KL_ERR_CONFIG;
	}
	if ((c->cert = cmp_read_cert(p->client_cert, &c->chain)) == NULL ||
	    (c->srv_cert = cmp_read_cert(p->server_cert, NULL)) == NULL)
		return KL_ERR_CONFIG;
	if ((r = cmp_load_key(c, p)) != 0)
		return r;
	if (X509_check_private_key(c->cert, c->key) != 1) {
		ERR_clear_error();
		log_error("cmp: the station key is not the key of %s",
		    p->client_cert);
		return KL_ERR_CONFIG;
	}
	return 0;
}

int
ca_cmp_new(struct ca **out, const struct ca_cmp_params *p)
{
	struct ca_cmp *c = NULL;
	struct ca *ca = NULL;
	struct certcheck_profile prof;
	char *host = NULL, *port = NULL, *path = NULL, why[256];
	int use_ssl = 0, mac, sig, r = KL_ERR_CONFIG;

	memset(&prof, 0, sizeof(prof));
	if (out == NULL || p == NULL || p->url == NULL ||
	    p->fleet_root == NULL || p->timeout_ms <= 0) {
		log_error("cmp: needs url, fleet_root and a timeout");
		return KL_ERR_CONFIG;
	}
	mac = p->secret != NULL && p->secret_len > 0;
	sig = p->client_cert != NULL && p->client_cert[0] != '\0';
	if (mac == sig) {
		log_error("cmp: protect with a shared secret or with the "
		    "station's certificate: exactly one of the two");
		return KL_ERR_CONFIG;
	}
	if (mac && (p->secret_len > CMP_MAX_SECRET || p->ref == NULL ||
	    p->ref[0] == '\0')) {
		log_error("cmp: MAC protection needs a reference and a secret "
		    "of 1..%d bytes", CMP_MAX_SECRET);
		return KL_ERR_CONFIG;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (ca = calloc(1, sizeof(*ca))) == NULL) {
		free(c);
		return KL_ERR_NOMEM;
	}
	if (pthread_mutex_init(&c->lock, NULL) != 0) {
		free(c);
		free(ca);
		return KL_ERR_INTERNAL;
	}
	if ((strncmp(p->url, "http://", 7) != 0 &&
	    strncmp(p->url, "https://", 8) != 0) ||
	    !OSSL_HTTP_parse_url(p->url, &use_ssl, NULL, &host, &port,
	    &c->port, &path, NULL, NULL)) {
		ERR_clear_error();
		log_error("cmp: url '%s' must be http:// or "
		    "https://host:port/path", p->url);
		goto out;
	}
	if ((r = ca_tls_new(&c->tls, "cmp", use_ssl, p->tls_server_cert)) != 0)
		goto out;
	r = KL_ERR_CONFIG;
	if (snprintf(c->host, sizeof(c->host), "%s", host) >=
	    (int)sizeof(c->host) ||
	    snprintf(c->path, sizeof(c->path), "%s", path) >=
	    (int)sizeof(c->path)) {
		log_error("cmp: url '%s' too long", p->url);
		goto out;
	}
	c->timeout_s = (p->timeout_ms + 999) / 1000;
	if ((r = certcheck_trust_load(&c->trust, p->fleet_root,
	    p->intermediates != NULL && p->intermediates[0] != '\0' ?
	    p->intermediates : NULL)) != 0) {
		log_error("cmp: cannot load fleet_root %s", p->fleet_root);
		goto out;
	}
	prof.subject_extra = p->subject_extra;
	prof.max_validity_days = p->max_validity_days;
	if ((r = certcheck_trust_set_profile(c->trust, &prof, why,
	    sizeof(why))) != 0) {
		log_error("cmp: %s", why);
		goto out;
	}
	if (mac) {
		if ((c->secret = secret_alloc(CMP_MAX_SECRET)) == NULL) {
			r = KL_ERR_NOMEM;
			goto out;
		}
		memcpy(c->secret, p->secret, p->secret_len);
		c->secret_len = p->secret_len;
		if ((c->ref = strdup(p->ref)) == NULL) {
			r = KL_ERR_NOMEM;
			goto out;
		}
	} else if ((r = cmp_load_sig(c, p)) != 0) {
		goto out;
	}
	snprintf(ca->name, sizeof(ca->name), "cmp:%.32s:%d%.16s", c->host,
	    c->port, c->path);
	ca->ops = &ca_cmp_ops;
	ca->ctx = c;
	c = NULL;
	*out = ca;
	ca = NULL;
	r = 0;
out:
	OPENSSL_free(host);
	OPENSSL_free(port);
	OPENSSL_free(path);
	ca_cmp_free(c);
	free(ca);
	return r;
}
