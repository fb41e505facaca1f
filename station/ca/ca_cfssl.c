/*
 * ca_cfssl.c: the "cfssl" CA backend (see ca.h): a CFSSL server's
 * authsign API, for lines that keep the fleet CA off the station.
 *
 * The request is {"certificate_request": <CSR PEM>, "hosts": [],
 * "profile", "label", "subject": {"CN": <device ID>, "names": [the
 * profile's subject_extra]}}: the station asks
 * for the fleet's device profile and nothing the board's CSR asks for
 * beyond its key; the body sent is {"token":
 * base64(HMAC-SHA256(key, request)), "request": base64(request)}.  HTTP goes
 * through OpenSSL's client (OSSL_HTTP_transfer: non-blocking connect, one
 * timeout for the whole exchange, a cap on the response); over HTTPS the
 * server must present exactly the pinned certificate, so neither a public
 * CA nor the host name decides whom the station talks to.
 *
 * What the engine needs from here is the class of a failure: could not
 * reach the CA (wait and ask again) or the CA said no (final).  No state is
 * shared between requests except read-only configuration, so slots ask in
 * parallel without a lock.
 */
#include "station/ca/ca.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/http.h>
#include <openssl/httperr.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/buf.h"
#include "station/ca/certcheck.h"
#include "common/err.h"
#include "common/log.h"
#include "common/secret.h"

#define CFSSL_API_PATH "/api/v1/cfssl/authsign"
#define CFSSL_MAX_KEY 256
#define CFSSL_MAX_RESP (64 * 1024)
#define CFSSL_MAX_URL 1024

struct ca_cfssl {
	char host[256];
	char port[8];
	char path[CFSSL_MAX_URL];
	uint8_t *key;		/* secret_alloc(CFSSL_MAX_KEY): no dumps */
	size_t key_len;
	char *profile;		/* NULL = server default */
	char *label;
	struct ca_tls *tls;	/* https only */
	int timeout_s;
	/* [ca] subject_extra, as CFSSL names them: one "names" object */
	struct certcheck_name_entry names[CERTCHECK_MAX_EXTRA];
	int nnames;
};

/* The subject attributes a CFSSL request can name, by their JSON key. */
static const struct {
	int nid;
	const char *key;
} cfssl_name_keys[] = {
	{ NID_countryName, "C" },
	{ NID_stateOrProvinceName, "ST" },
	{ NID_localityName, "L" },
	{ NID_organizationName, "O" },
	{ NID_organizationalUnitName, "OU" },
};

static const char *
cfssl_name_key(int nid)
{
	size_t i;

	for (i = 0; i < sizeof(cfssl_name_keys) / sizeof(cfssl_name_keys[0]);
	    i++)
		if (cfssl_name_keys[i].nid == nid)
			return cfssl_name_keys[i].key;
	return NULL;
}

/*
 * The request's "subject": {"CN": id} and, with subject_extra,
 * "names": [{"O": ..., "OU": ...}].  NULL on allocation failure.
 */
static json_t *
cfssl_subject(const struct ca_cfssl *c, const char *device_id)
{
	json_t *subj, *names = NULL, *one = NULL;
	int i;

	if ((subj = json_pack("{s:s}", "CN", device_id)) == NULL)
		return NULL;
	if (c->nnames == 0)
		return subj;
	if ((names = json_array()) == NULL || (one = json_object()) == NULL)
		goto fail;
	for (i = 0; i < c->nnames; i++)
		if (json_object_set_new(one, cfssl_name_key(c->names[i].nid),
		    json_string(c->names[i].value)) != 0)
			goto fail;
	if (json_array_append_new(names, one) != 0) {
		one = NULL;
		goto fail;
	}
	one = NULL;
	if (json_object_set_new(subj, "names", names) != 0) {
		names = NULL;
		goto fail;
	}
	return subj;
fail:
	json_decref(one);
	json_decref(names);
	json_decref(subj);
	return NULL;
}

static void
ca_cfssl_free(void *arg)
{
	struct ca_cfssl *c = arg;

	if (c == NULL)
		return;
	secret_free(c->key, CFSSL_MAX_KEY);
	free(c->profile);
	free(c->label);
	ca_tls_free(c->tls);
	free(c);
}

/*
 * Sort a failed exchange into "could not reach" and "said no" from the
 * OpenSSL error queue (which it empties), with words in err.
 */
static int
cfssl_classify(const struct ca_tls_call *call, char *err, size_t errsz)
{
	unsigned long e, first = 0;
	const char *data = NULL, *first_data = NULL;
	char txt[256];
	int flags, code, r = KL_ERR_UNAVAILABLE, found = 0;

	while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
		int lib = ERR_GET_LIB(e), reason = ERR_GET_REASON(e);

		if (first == 0) {
			first = e;
			first_data = (flags & ERR_TXT_STRING) ? data : NULL;
		}
		if (found)
			continue;
		if (lib == ERR_LIB_HTTP && reason == HTTP_R_RECEIVED_ERROR &&
		    (flags & ERR_TXT_STRING) && data != NULL &&
		    (code = ca_http_status(data)) > 0) {
			found = 1;
			if (ca_http_retryable(code)) {
				snprintf(err, errsz, "CFSSL server answered "
				    "HTTP %d", code);
				r = KL_ERR_UNAVAILABLE;
			} else {
				snprintf(err, errsz, "CFSSL server refused the "
				    "request: HTTP %d (%s)", code, data);
				r = KL_ERR_CA;
			}
		} else if ((lib == ERR_LIB_HTTP &&
		    reason == HTTP_R_RETRY_TIMEOUT) ||
		    (lib == ERR_LIB_BIO && reason == BIO_R_CONNECT_TIMEOUT) ||
		    (lib == ERR_LIB_BIO && reason == BIO_R_TRANSFER_TIMEOUT)) {
			found = 1;
			snprintf(err, errsz, "CFSSL server did not answer in "
			    "time");
			r = KL_ERR_TIMEOUT;
		}
	}
	if (call->pin_failed) {
		snprintf(err, errsz, "the CFSSL server's TLS certificate is "
		    "not the pinned server_cert");
		return KL_ERR_CA;
	}
	if (found)
		return r;
	/* A plain-HTTP server behind an https URL will not change by
	 * waiting: that is the configuration, not an outage. */
	if (ca_err_not_tls(first)) {
		snprintf(err, errsz, "the CFSSL server does not speak TLS: "
		    "check the url");
		return KL_ERR_CA;
	}
	/* Connection refused or reset, TLS dropped, a truncated answer:
	 * all things a restarting server does. */
	ERR_error_string_n(first, txt, sizeof(txt));
	snprintf(err, errsz, "cannot reach the CFSSL server: %s%s%s", txt,
	    first_data != NULL ? ": " : "",
	    first_data != NULL ? first_data : "");
	return KL_ERR_UNAVAILABLE;
}

/* The JSON sent: {"token": ..., "request": ...}; caller frees. */
static char *
cfssl_body(const struct ca_cfssl *c, const struct ca_request *req,
    char *err, size_t errsz)
{
	const unsigned char *p = req->csr_der;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	X509_REQ *csr = NULL;
	BIO *mem = NULL;
	json_t *inner = NULL, *outer = NULL;
	char *pem, *inner_txt = NULL, *tok_b64 = NULL, *req_b64 = NULL;
	char *body = NULL;
	long pem_len;
	size_t inner_len;

	if ((csr = d2i_X509_REQ(NULL, &p, (long)req->csr_len)) == NULL ||
	    p != req->csr_der + req->csr_len) {
		ERR_clear_error();
		snprintf(err, errsz, "CSR is not a DER PKCS#10 request");
		goto out;
	}
	/* Extensions the CSR requests are not copied: "hosts" is empty. */
	if (ca_csr_asks_nothing_more(csr, 0, err, errsz) != 0)
		goto out;
	if ((mem = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_X509_REQ(mem, csr) != 1 ||
	    (pem_len = BIO_get_mem_data(mem, &pem)) <= 0) {
		log_openssl("cfssl: CSR to PEM");
		snprintf(err, errsz, "cannot encode the CSR");
		goto out;
	}
	/* "hosts": [] (empty, not absent): CFSSL then puts no
	 * subjectAltName in, where it would otherwise copy the CSR's. */
	inner = json_pack("{s:s%, s:[], s:o}", "certificate_request", pem,
	    (size_t)pem_len, "hosts", "subject",
	    cfssl_subject(c, req->device_id));
	if (inner == NULL ||
	    (c->profile != NULL && json_object_set_new(inner, "profile",
	    json_string(c->profile)) != 0) ||
	    (c->label != NULL && json_object_set_new(inner, "label",
	    json_string(c->label)) != 0) ||
	    (inner_txt = json_dumps(inner, JSON_COMPACT)) == NULL) {
		snprintf(err, errsz, "cannot build the CFSSL request");
		goto out;
	}
	inner_len = strlen(inner_txt);
	/* The token authenticates exactly the bytes sent as "request". */
	if (HMAC(EVP_sha256(), c->key, (int)c->key_len,
	    (const unsigned char *)inner_txt, inner_len, mac, &mac_len) ==
	    NULL ||
	    (tok_b64 = malloc(4 * ((mac_len + 2) / 3) + 1)) == NULL ||
	    (req_b64 = malloc(4 * ((inner_len + 2) / 3) + 1)) == NULL) {
		log_openssl("cfssl: HMAC");
		snprintf(err, errsz, "cannot sign the CFSSL request");
		goto out;
	}
	EVP_EncodeBlock((unsigned char *)tok_b64, mac, (int)mac_len);
	EVP_EncodeBlock((unsigned char *)req_b64,
	    (const unsigned char *)inner_txt, (int)inner_len);
	if ((outer = json_pack("{s:s, s:s}", "token", tok_b64, "request",
	    req_b64)) == NULL ||
	    (body = json_dumps(outer, JSON_COMPACT)) == NULL) {
		snprintf(err, errsz, "cannot build the CFSSL request");
		goto out;
	}
out:
	OPENSSL_cleanse(mac, sizeof(mac));
	json_decref(outer);
	json_decref(inner);
	free(inner_txt);
	free(tok_b64);
	free(req_b64);
	BIO_free(mem);
	X509_REQ_free(csr);
	return body;
}

/* The server's answer: the certificate, or why not (see ca.h). */
int
ca_cfssl_parse(const char *resp, size_t len, uint8_t **cert_der,
    size_t *cert_len, char *err, size_t errsz)
{
	json_error_t jerr;
	json_t *root = NULL, *errors, *e0, *result, *cert;
	const char *msg, *pem;
	BIO *in = NULL;
	X509 *x = NULL;
	unsigned char *der = NULL;
	int n, r = KL_ERR_CA;

	if ((root = json_loadb(resp, len, JSON_REJECT_DUPLICATES, &jerr)) ==
	    NULL || !json_is_object(root)) {
		snprintf(err, errsz, "CFSSL answer is not a JSON object");
		goto out;
	}
	if (!json_is_true(json_object_get(root, "success"))) {
		errors = json_object_get(root, "errors");
		e0 = json_is_array(errors) ? json_array_get(errors, 0) : NULL;
		msg = json_string_value(json_object_get(e0, "message"));
		/* The message reaches the audit log: printable only, short. */
		snprintf(err, errsz, "CFSSL refused: %.120s",
		    msg != NULL ? msg : "no reason given");
		for (n = 0; err[n] != '\0'; n++)
			if ((unsigned char)err[n] < 0x20 ||
			    (unsigned char)err[n] >= 0x7f)
				err[n] = '?';
		goto out;
	}
	result = json_object_get(root, "result");
	cert = json_object_get(result, "certificate");
	if ((pem = json_string_value(cert)) == NULL) {
		snprintf(err, errsz, "CFSSL answer has no certificate");
		goto out;
	}
	if ((in = BIO_new_mem_buf(pem, (int)json_string_length(cert))) ==
	    NULL || (x = PEM_read_bio_X509(in, NULL, NULL, NULL)) == NULL ||
	    (n = i2d_X509(x, &der)) <= 0) {
		ERR_clear_error();
		snprintf(err, errsz, "CFSSL answer's certificate does not "
		    "parse");
		goto out;
	}
	*cert_der = der;
	*cert_len = (size_t)n;
	der = NULL;
	r = 0;
out:
	OPENSSL_free(der);
	X509_free(x);
	BIO_free(in);
	json_decref(root);
	return r;
}

static int
ca_cfssl_issue(void *ctx, const struct ca_request *req, uint8_t **cert_der,
    size_t *cert_len, char *err, size_t errsz)
{
	struct ca_cfssl *c = ctx;
	struct ca_tls_call call = { .tls = c->tls, .host = c->host };
	char *body = NULL, *resp = NULL, why[300];
	BIO *rq = NULL, *rsp = NULL, *conn = NULL;
	size_t rlen = 0;
	int n, r = KL_ERR_CA;

	ERR_clear_error();
	if ((body = cfssl_body(c, req, err, errsz)) == NULL) {
		r = KL_ERR_INVALID;
		goto out;
	}
	if ((rq = BIO_new_mem_buf(body, (int)strlen(body))) == NULL ||
	    (resp = malloc(CFSSL_MAX_RESP)) == NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	/* Our own connection, to where the config says (never a proxy
	 * from the environment): a server that refuses it fails now, not
	 * after the timeout. */
	if ((r = ca_http_connect(c->host, c->port, c->timeout_s, &conn, why,
	    sizeof(why))) != 0) {
		snprintf(err, errsz, "cannot reach the CFSSL server: %s", why);
		goto out;
	}
	rsp = OSSL_HTTP_transfer(NULL, c->host, c->port, c->path, c->tls != NULL,
	    NULL, NULL, conn, NULL, ca_tls_bio_cb, &call, 0, NULL,
	    "application/json", rq, NULL, 0, CFSSL_MAX_RESP, c->timeout_s, 0);
	if (rsp == NULL) {
		r = cfssl_classify(&call, err, errsz);
		goto out;
	}
	while (rlen < CFSSL_MAX_RESP &&
	    (n = BIO_read(rsp, resp + rlen, (int)(CFSSL_MAX_RESP - rlen))) > 0)
		rlen += (size_t)n;
	if (rlen == 0) {
		snprintf(err, errsz, "CFSSL server sent an empty answer");
		r = KL_ERR_UNAVAILABLE;
		goto out;
	}
	r = ca_cfssl_parse(resp, rlen, cert_der, cert_len, err, errsz);
out:
	ERR_clear_error();
	BIO_free(rsp);
	BIO_free_all(conn);
	BIO_free(rq);
	free(resp);
	free(body);
	return r;
}

static const struct ca_ops ca_cfssl_ops = {
	.name = "cfssl",
	.issue = ca_cfssl_issue,
	.free = ca_cfssl_free,
};

static int
cfssl_set_str(char **dst, const char *v)
{
	if (v == NULL || v[0] == '\0')
		return 0;
	return (*dst = strdup(v)) != NULL ? 0 : KL_ERR_NOMEM;
}

/* subject_extra as one "names" object: what CFSSL can name, each once. */
static int
cfssl_set_names(struct ca_cfssl *c, const char *extra)
{
	char why[256];
	int i;

	if (certcheck_subject_extra_parse(extra, c->names, &c->nnames, why,
	    sizeof(why)) != 0) {
		log_error("cfssl: %s", why);
		return KL_ERR_CONFIG;
	}
	for (i = 0; i < c->nnames; i++) {
		if (cfssl_name_key(c->names[i].nid) == NULL) {
			log_error("cfssl: subject_extra: CFSSL names only C, "
			    "ST, L, O and OU, not %s",
			    OBJ_nid2sn(c->names[i].nid));
			return KL_ERR_CONFIG;
		}
	}
	return 0;
}

int
ca_cfssl_new(struct ca **out, const struct ca_cfssl_params *p)
{
	struct ca_cfssl *c = NULL;
	struct ca *ca = NULL;
	char *host = NULL, *port = NULL, *path = NULL;
	int use_ssl = 0, r = KL_ERR_CONFIG;
	size_t plen;

	if (out == NULL || p == NULL || p->url == NULL ||
	    p->auth_key == NULL || p->auth_key_len == 0 ||
	    p->auth_key_len > CFSSL_MAX_KEY || p->timeout_ms <= 0) {
		log_error("cfssl: needs url, an auth key of 1..%d bytes and a "
		    "timeout", CFSSL_MAX_KEY);
		return KL_ERR_CONFIG;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (ca = calloc(1, sizeof(*ca))) == NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	if (!OSSL_HTTP_parse_url(p->url, &use_ssl, NULL, &host, &port, NULL,
	    &path, NULL, NULL) ||
	    (strncmp(p->url, "http://", 7) != 0 &&
	    strncmp(p->url, "https://", 8) != 0)) {
		ERR_clear_error();
		log_error("cfssl: url '%s' is not http:// or https://", p->url);
		goto out;
	}
	/* A path prefix (a reverse proxy) keeps its place before the API. */
	plen = strlen(path);
	while (plen > 0 && path[plen - 1] == '/')
		path[--plen] = '\0';
	if (snprintf(c->host, sizeof(c->host), "%s", host) >=
	    (int)sizeof(c->host) ||
	    snprintf(c->port, sizeof(c->port), "%s", port) >=
	    (int)sizeof(c->port) ||
	    snprintf(c->path, sizeof(c->path), "%s%s", path,
	    CFSSL_API_PATH) >= (int)sizeof(c->path)) {
		log_error("cfssl: url '%s' too long", p->url);
		goto out;
	}
	if ((c->key = secret_alloc(CFSSL_MAX_KEY)) == NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	memcpy(c->key, p->auth_key, p->auth_key_len);
	c->key_len = p->auth_key_len;
	c->timeout_s = (p->timeout_ms + 999) / 1000;
	if ((r = cfssl_set_str(&c->profile, p->profile)) != 0 ||
	    (r = cfssl_set_str(&c->label, p->label)) != 0)
		goto out;
	if ((r = ca_tls_new(&c->tls, "cfssl", use_ssl, p->server_cert)) != 0)
		goto out;
	if ((r = cfssl_set_names(c, p->subject_extra)) != 0)
		goto out;
	snprintf(ca->name, sizeof(ca->name), "cfssl:%.32s:%.5s%s%.16s", c->host,
	    c->port, c->label != NULL ? "/" : "",
	    c->label != NULL ? c->label : "");
	ca->ops = &ca_cfssl_ops;
	ca->ctx = c;
	c = NULL;
	*out = ca;
	ca = NULL;
	r = 0;
out:
	OPENSSL_free(host);
	OPENSSL_free(port);
	OPENSSL_free(path);
	ca_cfssl_free(c);
	free(ca);
	return r;
}
