/*
 * test_ca_cfssl.c: the CFSSL backend against a real `cfssl serve` on
 * loopback, with a fleet CA made by `cfssl gencert -initca` and an
 * auth_keys entry; over HTTP and over HTTPS with the server certificate
 * pinned.  Failures are sorted as the engine needs them: a server that is
 * down or silent is transient, a refusal is final.  A canned responder
 * thread plays a broken server (5xx, truncated and flipped JSON).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "station/ca/ca.h"
#include "station/ca/certcheck.h"
#include "common/err.h"
#include "tests/unit/pki_util.h"
#include "tests/unit/testutil.h"

#define HMAC_KEY_HEX "00112233445566778899aabbccddeeff0123456789abcdef"

struct fx {
	char dir[64];
	char path[8][256];
	int port, tls_port;
	pid_t srv, tls_srv;
	uint8_t key[24];
	EVP_PKEY *board;
	uint8_t *csr;
	size_t csr_len;
	struct certcheck_trust *trust;
};

enum { P_CA, P_CAKEY, P_CONF, P_TLSCERT, P_TLSKEY, P_OTHER, P_LOG, P_TLSLOG };

static struct fx *G;

static int
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	int ok = f != NULL && fputs(text, f) >= 0;

	if (f != NULL && fclose(f) != 0)
		ok = 0;
	return ok ? 0 : -1;
}

static int
setup_all(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	static const char *names[] = { "ca.pem", "ca-key.pem", "config.json",
	    "tls.pem", "tls.key", "other.pem", "serve.log", "serve-tls.log" };
	char conf[1024], port[16], tport[16];
	EVP_PKEY *tk, *ok;
	X509 *tc, *oc, *list[2] = { NULL, NULL };
	size_t i;

	if (f == NULL)
		return -1;
	if (tu_tmpdir(f->dir, sizeof(f->dir), "test_ca_cfssl") != 0)
		return -1;
	for (i = 0; i < 8; i++)
		snprintf(f->path[i], sizeof(f->path[i]), "%s/%s", f->dir,
		    names[i]);
	if (tu_sh("cd %s && echo '{\"CN\":\"Test Fleet Root\",\"key\":"
	    "{\"algo\":\"ecdsa\",\"size\":256}}' >csr.json && "
	    "cfssl gencert -initca csr.json 2>/dev/null | cfssljson -bare ca",
	    f->dir) != 0)
		return -1;
	for (i = 0; i < sizeof(f->key); i++)
		f->key[i] = (uint8_t)(OPENSSL_hexchar2int(HMAC_KEY_HEX[2 * i]) << 4 |
		    OPENSSL_hexchar2int(HMAC_KEY_HEX[2 * i + 1]));
	snprintf(conf, sizeof(conf),
	    "{\"signing\":{\"default\":{\"auth_key\":\"k1\",\"expiry\":"
	    "\"8760h\",\"usages\":[\"digital signature\",\"client auth\"]},"
	    "\"profiles\":{\"device\":{\"auth_key\":\"k1\",\"expiry\":"
	    "\"8760h\",\"usages\":[\"digital signature\",\"client auth\"]}}},"
	    "\"auth_keys\":{\"k1\":{\"type\":\"standard\",\"key\":\"%s\"}}}",
	    HMAC_KEY_HEX);
	if (write_file(f->path[P_CONF], conf) != 0)
		return -1;
	/* The HTTPS server's own certificate, pinned by the station, and
	 * another one that is not. */
	tk = pki_ec_key();
	ok = pki_ec_key();
	tc = pki_make_ca("cfssl-tls", tk, NULL, NULL);
	oc = pki_make_ca("cfssl-tls", ok, NULL, NULL);
	list[0] = tc;
	if (tc == NULL || oc == NULL ||
	    pki_write_certs(f->path[P_TLSCERT], list) != 0 ||
	    pki_write_key(f->path[P_TLSKEY], tk) != 0)
		return -1;
	list[0] = oc;
	if (pki_write_certs(f->path[P_OTHER], list) != 0)
		return -1;
	X509_free(tc);
	X509_free(oc);
	EVP_PKEY_free(tk);
	EVP_PKEY_free(ok);

	f->port = tu_free_port();
	snprintf(port, sizeof(port), "%d", f->port);
	{
		char *argv[] = { "cfssl", "serve", "-address", "127.0.0.1",
		    "-port", port, "-ca", f->path[P_CA], "-ca-key",
		    f->path[P_CAKEY], "-config", f->path[P_CONF], NULL };

		if ((f->srv = tu_spawn(argv, f->path[P_LOG], f->port)) < 0)
			return -1;
	}
	f->tls_port = tu_free_port();
	snprintf(tport, sizeof(tport), "%d", f->tls_port);
	{
		char *argv[] = { "cfssl", "serve", "-address", "127.0.0.1",
		    "-port", tport, "-ca", f->path[P_CA], "-ca-key",
		    f->path[P_CAKEY], "-config", f->path[P_CONF],
		    "-tls-cert", f->path[P_TLSCERT], "-tls-key",
		    f->path[P_TLSKEY], NULL };

		if ((f->tls_srv = tu_spawn(argv, f->path[P_TLSLOG],
		    f->tls_port)) < 0)
			return -1;
	}
	f->board = pki_ec_key();
	/* The CSR asks for another CN: the station decides the subject. */
	f->csr = pki_csr(f->board, "not-the-device-id", &f->csr_len);
	if (f->board == NULL || f->csr == NULL ||
	    certcheck_trust_load(&f->trust, f->path[P_CA], NULL) != 0)
		return -1;
	G = f;
	*state = f;
	return 0;
}

static int
teardown_all(void **state)
{
	struct fx *f = *state;

	tu_stop(f->srv);
	tu_stop(f->tls_srv);
	certcheck_trust_free(f->trust);
	OPENSSL_free(f->csr);
	EVP_PKEY_free(f->board);
	tu_sh("rm -rf %s", f->dir);
	free(f);
	return 0;
}

static struct ca *
mk(const char *url, const uint8_t *key, size_t klen, const char *pin,
    const char *profile, int timeout_ms)
{
	struct ca_cfssl_params p = {
		.url = url, .auth_key = key, .auth_key_len = klen,
		.profile = profile, .server_cert = pin,
		.timeout_ms = timeout_ms,
	};
	struct ca *ca = NULL;

	return ca_cfssl_new(&ca, &p) == 0 ? ca : NULL;
}

static int
issue(struct ca *ca, const char *id, uint8_t **der, size_t *len, char *err,
    size_t errsz)
{
	struct ca_request rq = {
		.csr_der = G->csr, .csr_len = G->csr_len, .device_id = id,
	};

	*der = NULL;
	return ca_issue(ca, &rq, der, len, err, errsz);
}

static void
check_cert(const uint8_t *der, size_t len, const char *id)
{
	struct certcheck_expect want = { .cn = id };
	uint8_t *spki;
	size_t slen;
	char why[256] = "";

	spki = pki_spki(G->board, &slen);
	want.spki = spki;
	want.spki_len = slen;
	assert_int_equal(certcheck_verify(G->trust, der, len, &want, why,
	    sizeof(why)), 0);
	OPENSSL_free(spki);
}

static void
test_issue_http(void **state)
{
	struct fx *f = *state;
	char url[128], err[256];
	uint8_t *der;
	size_t len;
	struct ca *ca;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", f->port);
	assert_non_null(ca = mk(url, f->key, sizeof(f->key), NULL, "device",
	    5000));
	assert_int_equal(strncmp(ca->name, "cfssl:127.0.0.1:", 16), 0);
	assert_int_equal(issue(ca, "dev-0001", &der, &len, err, sizeof(err)),
	    0);
	check_cert(der, len, "dev-0001");
	OPENSSL_free(der);
	/* The default profile too. */
	ca_free(ca);
	assert_non_null(ca = mk(url, f->key, sizeof(f->key), NULL, NULL,
	    5000));
	assert_int_equal(issue(ca, "dev-0002", &der, &len, err, sizeof(err)),
	    0);
	check_cert(der, len, "dev-0002");
	OPENSSL_free(der);
	ca_free(ca);
}

static void
test_wrong_key_refused(void **state)
{
	struct fx *f = *state;
	uint8_t bad[24];
	char url[128], err[256] = "";
	uint8_t *der;
	size_t len;
	struct ca *ca;

	memcpy(bad, f->key, sizeof(bad));
	bad[0] ^= 1;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", f->port);
	assert_non_null(ca = mk(url, bad, sizeof(bad), NULL, "device", 5000));
	assert_int_equal(issue(ca, "dev-0003", &der, &len, err, sizeof(err)),
	    KL_ERR_CA);
	assert_false(ca_is_transient(KL_ERR_CA));
	assert_non_null(strstr(err, "400"));
	assert_null(der);
	ca_free(ca);
}

static void
test_https_pinned(void **state)
{
	struct fx *f = *state;
	char url[128], err[256] = "";
	uint8_t *der;
	size_t len;
	struct ca *ca;

	snprintf(url, sizeof(url), "https://127.0.0.1:%d", f->tls_port);
	assert_non_null(ca = mk(url, f->key, sizeof(f->key),
	    f->path[P_TLSCERT], "device", 5000));
	assert_int_equal(issue(ca, "dev-0005", &der, &len, err, sizeof(err)),
	    0);
	check_cert(der, len, "dev-0005");
	OPENSSL_free(der);
	ca_free(ca);

	/* Another certificate pinned: refused, and not worth waiting for. */
	assert_non_null(ca = mk(url, f->key, sizeof(f->key), f->path[P_OTHER],
	    "device", 5000));
	assert_int_equal(issue(ca, "dev-0006", &der, &len, err, sizeof(err)),
	    KL_ERR_CA);
	assert_non_null(strstr(err, "pinned"));
	assert_null(der);
	ca_free(ca);
}

static void
test_bad_params(void **state)
{
	struct fx *f = *state;
	char url[128];
	struct ca *ca;

	snprintf(url, sizeof(url), "https://127.0.0.1:%d", f->tls_port);
	assert_null(mk(url, f->key, sizeof(f->key), NULL, NULL, 5000));
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", f->port);
	assert_null(mk(url, f->key, sizeof(f->key), f->path[P_TLSCERT], NULL,
	    5000));
	assert_null(mk("ftp://127.0.0.1:1", f->key, sizeof(f->key), NULL,
	    NULL, 5000));
	assert_null(mk(url, f->key, 0, NULL, NULL, 5000));
	assert_null(mk(url, f->key, sizeof(f->key), NULL, NULL, 0));
	assert_non_null(ca = mk(url, f->key, sizeof(f->key), NULL, NULL,
	    5000));
	ca_free(ca);
}

/* Nothing listens: transient, and within about the timeout. */
static void
test_down_is_transient(void **state)
{
	struct fx *f = *state;
	char url[128], err[256] = "";
	uint8_t *der;
	size_t len;
	struct ca *ca;
	time_t t0;
	int r;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", tu_free_port());
	assert_non_null(ca = mk(url, f->key, sizeof(f->key), NULL, NULL,
	    1000));
	t0 = time(NULL);
	r = issue(ca, "dev-0007", &der, &len, err, sizeof(err));
	assert_true(ca_is_transient(r));
	assert_true(time(NULL) - t0 <= 3);
	ca_free(ca);
}

/* A server that accepts and never answers: KL_ERR_TIMEOUT in time. */
static void
test_silent_times_out(void **state)
{
	struct fx *f = *state;
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof(a);
	char url[128], err[256] = "";
	uint8_t *der;
	size_t len;
	struct ca *ca;
	time_t t0;
	int lfd, r;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(a.sin_port));
	assert_non_null(ca = mk(url, f->key, sizeof(f->key), NULL, NULL,
	    1000));
	t0 = time(NULL);
	r = issue(ca, "dev-0008", &der, &len, err, sizeof(err));
	assert_int_equal(r, KL_ERR_TIMEOUT);
	assert_true(time(NULL) - t0 <= 3);
	ca_free(ca);
	close(lfd);
}

/* A canned HTTP server: answers one connection with resp. */
struct canned {
	int lfd;
	const char *resp;
	size_t len;
};

static void *
canned_main(void *arg)
{
	struct canned *c = arg;
	char buf[8192];
	ssize_t n;
	size_t got = 0;
	int fd = accept(c->lfd, NULL, NULL);

	if (fd < 0)
		return NULL;
	/* Read up to the end of the body: the request is one JSON object,
	 * the last byte a '}'. */
	while (got < sizeof(buf) &&
	    (n = read(fd, buf + got, sizeof(buf) - got)) > 0) {
		got += (size_t)n;
		if (buf[got - 1] == '}')
			break;
	}
	(void)!write(fd, c->resp, c->len);
	close(fd);
	return NULL;
}

static int
canned_issue(const char *resp, size_t rlen, char *err, size_t errsz)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof(a);
	struct canned c = { .resp = resp, .len = rlen };
	pthread_t th;
	char url[128];
	uint8_t *der = NULL;
	size_t len;
	struct ca *ca;
	int r;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c.lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(c.lfd >= 0);
	assert_int_equal(bind(c.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(c.lfd, 4), 0);
	assert_int_equal(getsockname(c.lfd, (struct sockaddr *)&a, &alen), 0);
	assert_int_equal(pthread_create(&th, NULL, canned_main, &c), 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(a.sin_port));
	assert_non_null(ca = mk(url, G->key, sizeof(G->key), NULL, NULL,
	    2000));
	r = issue(ca, "dev-0009", &der, &len, err, errsz);
	pthread_join(th, NULL);
	close(c.lfd);
	ca_free(ca);
	if (r == 0)
		OPENSSL_free(der);
	else
		assert_null(der);
	return r;
}

static char *
http_resp(const char *status, const char *body, size_t blen, size_t *out_len)
{
	char *r = malloc(blen + 256);
	int n;

	assert_non_null(r);
	n = snprintf(r, 256, "HTTP/1.1 %s\r\nContent-Type: application/json"
	    "\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", status,
	    blen);
	memcpy(r + n, body, blen);
	*out_len = (size_t)n + blen;
	return r;
}

static void
test_server_errors(void **state)
{
	static const char refused[] = "{\"success\":false,\"result\":null,"
	    "\"errors\":[{\"code\":1000,\"message\":\"policy says\\u0007 no\"}],"
	    "\"messages\":[]}";
	char err[256], *r;
	size_t len;

	(void)state;
	r = http_resp("503 Service Unavailable", "{}", 2, &len);
	assert_int_equal(canned_issue(r, len, err, sizeof(err)),
	    KL_ERR_UNAVAILABLE);
	free(r);
	r = http_resp("500 Internal Server Error", "{}", 2, &len);
	assert_true(ca_is_transient(canned_issue(r, len, err, sizeof(err))));
	free(r);
	r = http_resp("403 Forbidden", "{}", 2, &len);
	assert_int_equal(canned_issue(r, len, err, sizeof(err)), KL_ERR_CA);
	free(r);
	/* success:false with 200: a refusal; the message is made printable */
	r = http_resp("200 OK", refused, sizeof(refused) - 1, &len);
	assert_int_equal(canned_issue(r, len, err, sizeof(err)), KL_ERR_CA);
	assert_non_null(strstr(err, "policy says"));
	assert_null(strchr(err, '\a'));
	free(r);
	/* A connection closed before any answer: the server went away. */
	assert_true(ca_is_transient(canned_issue("", 0, err, sizeof(err))));
}

/* Every truncation and a bit flip in every byte of a good answer: never
 * a crash, never a certificate from a broken answer. */
static void
test_truncated_and_flipped(void **state)
{
	struct fx *f = *state;
	char url[128], err[256], *body, *r;
	uint8_t *der;
	size_t len, blen, i, rlen;
	struct ca *ca;
	BIO *mem;
	X509 *x;
	const unsigned char *q;

	/* A real certificate from the real server, as a body to mangle. */
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", f->port);
	assert_non_null(ca = mk(url, f->key, sizeof(f->key), NULL, NULL,
	    5000));
	assert_int_equal(issue(ca, "dev-0010", &der, &len, err, sizeof(err)),
	    0);
	ca_free(ca);
	q = der;
	assert_non_null(x = d2i_X509(NULL, &q, (long)len));
	OPENSSL_free(der);
	assert_non_null(mem = BIO_new(BIO_s_mem()));
	assert_true(BIO_puts(mem, "{\"success\":true,\"result\":"
	    "{\"certificate\":\"") > 0);
	{
		char *pem, *p;
		BIO *pb = BIO_new(BIO_s_mem());
		long pl;

		assert_int_equal(PEM_write_bio_X509(pb, x), 1);
		pl = BIO_get_mem_data(pb, &pem);
		for (p = pem; p < pem + pl; p++) {
			if (*p == '\n')
				BIO_puts(mem, "\\n");
			else
				BIO_write(mem, p, 1);
		}
		BIO_free(pb);
	}
	BIO_puts(mem, "\"},\"errors\":[],\"messages\":[]}");
	blen = (size_t)BIO_get_mem_data(mem, &body);
	X509_free(x);

	r = http_resp("200 OK", body, blen, &rlen);
	assert_int_equal(canned_issue(r, rlen, err, sizeof(err)), 0);
	free(r);
	/* Truncated bodies (Content-Length says so: a clean short body). */
	for (i = 0; i < blen; i += 7) {
		r = http_resp("200 OK", body, i, &rlen);
		assert_int_not_equal(canned_issue(r, rlen, err, sizeof(err)),
		    0);
		free(r);
	}
	/* Flips in the JSON framing before the certificate. */
	for (i = 0; i < 36; i++) {
		char *b = malloc(blen);

		memcpy(b, body, blen);
		b[i] ^= 0x20;
		r = http_resp("200 OK", b, blen, &rlen);
		(void)canned_issue(r, rlen, err, sizeof(err));
		free(r);
		free(b);
	}
	BIO_free(mem);
}

/*
 * A hostile board's CSR: its own key, but (org) a subject with O=Fleet
 * Admins, OU=ops and a requested subjectAltName naming the OTA gateway.
 * DER, OPENSSL_free().
 */
static uint8_t *
hostile_csr(EVP_PKEY *key, const char *cn, size_t *len, int org)
{
	X509_REQ *req = X509_REQ_new();
	X509_NAME *name = X509_NAME_new();
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	X509_EXTENSION *san;
	unsigned char *der = NULL;
	int n = -1, ok = req != NULL && name != NULL && exts != NULL;

	ok = ok && (!org || X509_NAME_add_entry_by_txt(name, "O",
	    MBSTRING_ASC, (const unsigned char *)"Fleet Admins", -1, -1, 0));
	ok = ok && (!org || X509_NAME_add_entry_by_txt(name, "OU",
	    MBSTRING_ASC, (const unsigned char *)"ops", -1, -1, 0));
	ok = ok && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)cn, -1, -1, 0);
	ok = ok && X509_REQ_set_subject_name(req, name);
	ok = ok && (san = X509V3_EXT_conf_nid(NULL, NULL,
	    NID_subject_alt_name, "DNS:gateway.ota.example.com")) != NULL &&
	    sk_X509_EXTENSION_push(exts, san);
	ok = ok && X509_REQ_add_extensions(req, exts);
	ok = ok && X509_REQ_set_pubkey(req, key);
	ok = ok && X509_REQ_sign(req, key, EVP_sha256()) > 0;
	if (ok)
		n = i2d_X509_REQ(req, &der);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);
	X509_NAME_free(name);
	if (n <= 0)
		return NULL;
	*len = (size_t)n;
	return der;
}

/*
 * A hostile board against the real CFSSL server: what its CSR asks for
 * beyond its key never reaches a board.  CFSSL fills the subject fields
 * its request leaves empty from the CSR (O=Fleet Admins, OU=ops would be
 * signed), so a CSR with more than a CN is not sent; CFSSL would copy
 * the CSR's subjectAltName too, unless the request names its hosts: the
 * station sends "hosts": [], and the certificate has none.  Should a CA
 * add them anyway, validation refuses the certificate (test_certcheck).
 */
static void
test_hostile_csr(void **state)
{
	struct fx *f = *state;
	struct certcheck_expect want = { .cn = "dev-0666" };
	struct ca_request rq = { .device_id = "dev-0666" };
	const unsigned char *p;
	char url[128], err[256] = "", why[256] = "";
	uint8_t *der = NULL, *spki;
	size_t len = 0, slen;
	X509 *x;
	X509_REQ *req;
	X509_NAME *cn_only;
	struct ca *ca;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", f->port);
	assert_non_null(ca = mk(url, f->key, sizeof(f->key), NULL, "device",
	    5000));

	/* O=Fleet Admins, OU=ops and DNS:gateway.ota.example.com. */
	rq.csr_der = hostile_csr(f->board, "dev-0666", &rq.csr_len, 1);
	assert_non_null(rq.csr_der);
	assert_int_equal(ca_issue(ca, &rq, &der, &len, err, sizeof(err)),
	    KL_ERR_INVALID);
	assert_null(der);
	assert_non_null(strstr(err, "not sent to the CA"));
	OPENSSL_free((void *)rq.csr_der);

	/* CN only, but the subjectAltName requested: not in the
	 * certificate, which passes. */
	rq.csr_der = hostile_csr(f->board, "dev-0666", &rq.csr_len, 0);
	assert_non_null(rq.csr_der);
	p = rq.csr_der;
	assert_non_null(req = d2i_X509_REQ(NULL, &p, (long)rq.csr_len));
	cn_only = X509_REQ_get_subject_name(req);
	assert_int_equal(X509_NAME_entry_count(cn_only), 1);
	X509_REQ_free(req);
	assert_int_equal(ca_issue(ca, &rq, &der, &len, err, sizeof(err)), 0);
	p = der;
	assert_non_null(x = d2i_X509(NULL, &p, (long)len));
	assert_int_equal(X509_get_ext_by_NID(x, NID_subject_alt_name, -1), -1);
	assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(x)), 1);
	spki = pki_spki(f->board, &slen);
	want.spki = spki;
	want.spki_len = slen;
	assert_int_equal(certcheck_verify(f->trust, der, len, &want, why,
	    sizeof(why)), 0);
	OPENSSL_free(spki);
	X509_free(x);
	OPENSSL_free(der);
	OPENSSL_free((void *)rq.csr_der);
	ca_free(ca);
}

/*
 * [ca] subject_extra against the real CFSSL server: the request names the
 * fleet's fixed entries, the certificate carries exactly them beside the
 * CN, and passes a trust with that profile but not one without it (nor
 * one whose profile names another O).  What CFSSL cannot name is a
 * configuration error, not a certificate validation then refuses.
 */
static void
test_subject_extra(void **state)
{
	struct fx *f = *state;
	struct ca_cfssl_params p = {
		.auth_key = f->key, .auth_key_len = sizeof(f->key),
		.profile = "device", .timeout_ms = 5000,
		.subject_extra = "O=Example Fleet, OU=devices",
	};
	struct certcheck_profile prof = { .subject_extra = p.subject_extra };
	struct certcheck_expect want = { .cn = "dev-0777" };
	static const char *bad[] = { "OU=a,OU=b", "serialNumber=1", "CN=x",
	    "O", "C=Germany", "basicConstraints=x" };
	struct certcheck_trust *t = NULL;
	char url[128], err[256] = "", why[256] = "", name[256];
	uint8_t *der = NULL, *spki;
	const unsigned char *q;
	size_t len = 0, slen, i;
	struct ca *ca = NULL;
	X509 *x;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", f->port);
	p.url = url;
	assert_int_equal(ca_cfssl_new(&ca, &p), 0);
	assert_int_equal(issue(ca, "dev-0777", &der, &len, err, sizeof(err)),
	    0);
	q = der;
	assert_non_null(x = d2i_X509(NULL, &q, (long)len));
	X509_NAME_oneline(X509_get_subject_name(x), name, sizeof(name));
	assert_string_equal(name, "/O=Example Fleet/OU=devices/CN=dev-0777");
	X509_free(x);

	spki = pki_spki(f->board, &slen);
	want.spki = spki;
	want.spki_len = slen;
	/* The fleet's trust without the profile: O and OU are refused. */
	assert_int_equal(certcheck_verify(f->trust, der, len, &want, why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_non_null(strstr(why, "which the fleet profile does not name"));
	assert_int_equal(certcheck_trust_load(&t, f->path[P_CA], NULL), 0);
	assert_int_equal(certcheck_trust_set_profile(t, &prof, why,
	    sizeof(why)), 0);
	assert_int_equal(certcheck_verify(t, der, len, &want, why,
	    sizeof(why)), 0);
	prof.subject_extra = "O=Other Fleet, OU=devices";
	assert_int_equal(certcheck_trust_set_profile(t, &prof, why,
	    sizeof(why)), 0);
	assert_int_equal(certcheck_verify(t, der, len, &want, why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_non_null(strstr(why, "O=Example Fleet"));
	certcheck_trust_free(t);
	OPENSSL_free(spki);
	OPENSSL_free(der);
	ca_free(ca);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ca = NULL;
		p.subject_extra = bad[i];
		assert_int_equal(ca_cfssl_new(&ca, &p), KL_ERR_CONFIG);
		assert_null(ca);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_issue_http),
		cmocka_unit_test(test_wrong_key_refused),
		cmocka_unit_test(test_https_pinned),
		cmocka_unit_test(test_bad_params),
		cmocka_unit_test(test_down_is_transient),
		cmocka_unit_test(test_silent_times_out),
		cmocka_unit_test(test_server_errors),
		cmocka_unit_test(test_truncated_and_flipped),
		cmocka_unit_test(test_hostile_csr),
		cmocka_unit_test(test_subject_extra),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
