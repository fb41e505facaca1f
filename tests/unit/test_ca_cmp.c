/*
 * test_ca_cmp.c: the CMP backend (RFC 9483 p10cr) against `openssl cmp`
 * running as a mock server on loopback.  The mock answers with a fixed
 * certificate (-rsp_cert): the positive tests prepare one under the fleet
 * root for the board key the test holds; another test gives it a
 * certificate for a different key, which the station must reject in its
 * certConf and never return.  MAC and signature protection; a server
 * that is down is transient, a rejection or a wrong MAC is final.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "station/ca.h"
#include "station/certcheck.h"
#include "station/err.h"
#include "tests/unit/pki_util.h"
#include "tests/unit/testutil.h"

#define SECRET "cmp-test-secret-0123"
#define REF "keyline-station"
#define DEVID "dev-cmp-0001"

enum { P_ROOT, P_GOOD, P_OTHER, P_SRVCERT, P_SRVKEY, P_CLICERT, P_CLIKEY,
    P_LOG, P_N };

struct fx {
	char dir[64];
	char path[P_N][256];
	EVP_PKEY *board;
	uint8_t *csr;
	size_t csr_len;
	struct certcheck_trust *trust;
};

static int
setup_all(void **state)
{
	static const char *names[P_N] = { "root.pem", "good.pem", "other.pem",
	    "srv.pem", "srv.key", "cli.pem", "cli.key", "mock.log" };
	struct fx *f = calloc(1, sizeof(*f));
	EVP_PKEY *rk, *ok, *sk, *ck;
	X509 *root, *good, *other, *srv, *cli, *l[2] = { NULL, NULL };
	struct pki_opts o = {
		.cn = DEVID, .ku = "critical,digitalSignature",
		.eku = "critical,clientAuth", .not_before = -60,
		.serial = 4242,
	};
	size_t i;

	if (f == NULL)
		return -1;
	if (tu_tmpdir(f->dir, sizeof(f->dir), "test_ca_cmp") != 0)
		return -1;
	for (i = 0; i < (size_t)P_N; i++)
		snprintf(f->path[i], sizeof(f->path[i]), "%s/%s", f->dir,
		    names[i]);
	rk = pki_ec_key();
	ok = pki_ec_key();
	sk = pki_ec_key();
	ck = pki_ec_key();
	f->board = pki_ec_key();
	root = pki_make_ca("CMP Fleet Root", rk, NULL, NULL);
	o.issuer = root;
	o.issuer_key = rk;
	o.key = f->board;
	good = pki_make_cert(&o);
	o.key = ok;		/* right CN, right CA, wrong key */
	other = pki_make_cert(&o);
	{
		struct pki_opts so = {
			.cn = "CMP server", .key = sk,
			.ku = "critical,digitalSignature",
			.not_before = -60,
		};

		srv = pki_make_cert(&so);
	}
	o.key = ck;
	o.cn = "station-01";
	cli = pki_make_cert(&o);
	if (root == NULL || good == NULL || other == NULL || srv == NULL ||
	    cli == NULL)
		return -1;
	l[0] = root;
	if (pki_write_certs(f->path[P_ROOT], l) != 0)
		return -1;
	l[0] = good;
	if (pki_write_certs(f->path[P_GOOD], l) != 0)
		return -1;
	l[0] = other;
	if (pki_write_certs(f->path[P_OTHER], l) != 0)
		return -1;
	l[0] = srv;
	if (pki_write_certs(f->path[P_SRVCERT], l) != 0 ||
	    pki_write_key(f->path[P_SRVKEY], sk) != 0)
		return -1;
	l[0] = cli;
	if (pki_write_certs(f->path[P_CLICERT], l) != 0 ||
	    pki_write_key(f->path[P_CLIKEY], ck) != 0)
		return -1;
	X509_free(root);
	X509_free(good);
	X509_free(other);
	X509_free(srv);
	X509_free(cli);
	EVP_PKEY_free(rk);
	EVP_PKEY_free(ok);
	EVP_PKEY_free(sk);
	EVP_PKEY_free(ck);
	/* The CSR's CN does not matter to the mock; the key does. */
	f->csr = pki_csr(f->board, DEVID, &f->csr_len);
	if (f->csr == NULL ||
	    certcheck_trust_load(&f->trust, f->path[P_ROOT], NULL) != 0)
		return -1;
	*state = f;
	return 0;
}

static int
teardown_all(void **state)
{
	struct fx *f = *state;

	certcheck_trust_free(f->trust);
	OPENSSL_free(f->csr);
	EVP_PKEY_free(f->board);
	tu_sh("rm -rf %s", f->dir);
	free(f);
	return 0;
}

/* The mock with MAC protection (srv_ref/srv_secret) or signatures. */
static pid_t
mock_srv(struct fx *f, int port, const char *rsp_cert, int sig,
    const char *extra)
{
	char p[16], secret[64];
	char *mac_argv[] = { "openssl", "cmp", "-port", p, "-srv_ref", REF,
	    "-srv_secret", secret, "-rsp_cert", (char *)rsp_cert,
	    (char *)extra, NULL };
	char *sig_argv[] = { "openssl", "cmp", "-port", p, "-srv_cert",
	    f->path[P_SRVCERT], "-srv_key", f->path[P_SRVKEY],
	    "-srv_trusted", f->path[P_ROOT], "-rsp_cert", (char *)rsp_cert,
	    (char *)extra, NULL };

	snprintf(p, sizeof(p), "%d", port);
	snprintf(secret, sizeof(secret), "pass:%s", SECRET);
	return tu_spawn(sig ? sig_argv : mac_argv, f->path[P_LOG], port);
}

static struct ca *
mk_mac(struct fx *f, int port, const char *secret)
{
	char url[128];
	struct ca_cmp_params p = {
		.url = url, .fleet_root = f->path[P_ROOT],
		.secret = (const uint8_t *)secret, .secret_len = strlen(secret),
		.ref = REF, .timeout_ms = 2000,
	};
	struct ca *ca = NULL;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/pkix/", port);
	return ca_cmp_new(&ca, &p) == 0 ? ca : NULL;
}

static int
issue(struct fx *f, struct ca *ca, uint8_t **der, size_t *len, char *err,
    size_t errsz)
{
	struct ca_request rq = {
		.csr_der = f->csr, .csr_len = f->csr_len, .device_id = DEVID,
	};

	int r;

	*der = NULL;
	err[0] = '\0';
	r = ca_issue(ca, &rq, der, len, err, errsz);
	if (r != 0)
		print_message("issue: %s: %s\n", kl_errname(r), err);
	return r;
}

static void
check_cert(struct fx *f, const uint8_t *der, size_t len)
{
	struct certcheck_expect want = { .cn = DEVID };
	uint8_t *spki;
	size_t slen;
	char why[256] = "";

	spki = pki_spki(f->board, &slen);
	want.spki = spki;
	want.spki_len = slen;
	assert_int_equal(certcheck_verify(f->trust, der, len, &want, why,
	    sizeof(why)), 0);
	OPENSSL_free(spki);
}

static void
test_mac_issue(void **state)
{
	struct fx *f = *state;
	int port = tu_free_port();
	pid_t pid = mock_srv(f, port, f->path[P_GOOD], 0, NULL);
	struct ca *ca;
	uint8_t *der;
	size_t len;
	char err[256];

	assert_true(pid > 0);
	assert_non_null(ca = mk_mac(f, port, SECRET));
	assert_int_equal(issue(f, ca, &der, &len, err, sizeof(err)), 0);
	check_cert(f, der, len);
	OPENSSL_free(der);
	ca_free(ca);
	tu_stop(pid);
}

static void
test_wrong_key_rejected(void **state)
{
	struct fx *f = *state;
	int port = tu_free_port();
	pid_t pid = mock_srv(f, port, f->path[P_OTHER], 0, NULL);
	struct ca *ca;
	uint8_t *der;
	size_t len;
	char err[256];

	assert_true(pid > 0);
	assert_non_null(ca = mk_mac(f, port, SECRET));
	assert_int_equal(issue(f, ca, &der, &len, err, sizeof(err)),
	    KL_ERR_CERT_INVALID);
	assert_null(der);
	assert_non_null(strstr(err, "certConf"));
	assert_non_null(strstr(err, "public key"));
	assert_non_null(strstr(err, "serial 1092"));	/* 4242 */
	ca_free(ca);
	tu_stop(pid);
}

static void
test_wrong_secret_final(void **state)
{
	struct fx *f = *state;
	int port = tu_free_port();
	pid_t pid = mock_srv(f, port, f->path[P_GOOD], 0, NULL);
	struct ca *ca;
	uint8_t *der;
	size_t len;
	char err[256];
	int r;

	assert_true(pid > 0);
	assert_non_null(ca = mk_mac(f, port, "not-the-secret"));
	r = issue(f, ca, &der, &len, err, sizeof(err));
	assert_int_equal(r, KL_ERR_CA);
	assert_null(der);
	ca_free(ca);
	tu_stop(pid);
}

static void
test_rejection_final(void **state)
{
	struct fx *f = *state;
	int port = tu_free_port();
	pid_t pid = mock_srv(f, port, f->path[P_GOOD], 0, "-send_error");
	struct ca *ca;
	uint8_t *der;
	size_t len;
	char err[256];

	assert_true(pid > 0);
	assert_non_null(ca = mk_mac(f, port, SECRET));
	assert_int_equal(issue(f, ca, &der, &len, err, sizeof(err)),
	    KL_ERR_CA);
	assert_null(der);
	ca_free(ca);
	tu_stop(pid);
}

static void
test_down_transient(void **state)
{
	struct fx *f = *state;
	struct ca *ca;
	uint8_t *der;
	size_t len;
	char err[256];
	time_t t0 = time(NULL);

	assert_non_null(ca = mk_mac(f, tu_free_port(), SECRET));
	assert_true(ca_is_transient(issue(f, ca, &der, &len, err,
	    sizeof(err))));
	assert_true(time(NULL) - t0 <= 6);
	ca_free(ca);
}

static void
test_signature_issue(void **state)
{
	struct fx *f = *state;
	int port = tu_free_port();
	pid_t pid = mock_srv(f, port, f->path[P_GOOD], 1, NULL);
	char url[128], err[256];
	struct ca_cmp_params p = {
		.url = url, .fleet_root = f->path[P_ROOT],
		.client_cert = f->path[P_CLICERT],
		.client_key_pem = f->path[P_CLIKEY],
		.server_cert = f->path[P_SRVCERT], .timeout_ms = 2000,
	};
	struct ca *ca = NULL;
	uint8_t *der;
	size_t len;

	assert_true(pid > 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/pkix/", port);
	assert_int_equal(ca_cmp_new(&ca, &p), 0);
	assert_int_equal(issue(f, ca, &der, &len, err, sizeof(err)), 0);
	check_cert(f, der, len);
	OPENSSL_free(der);
	ca_free(ca);
	/* Answers signed by another server than the pinned one: refused. */
	p.server_cert = f->path[P_ROOT];
	assert_int_equal(ca_cmp_new(&ca, &p), 0);
	assert_int_equal(issue(f, ca, &der, &len, err, sizeof(err)),
	    KL_ERR_CA);
	assert_null(der);
	ca_free(ca);
	tu_stop(pid);
}

static void
test_bad_params(void **state)
{
	struct fx *f = *state;
	struct ca_cmp_params p = {
		.url = "http://127.0.0.1:1/pkix/", .fleet_root = f->path[P_ROOT],
		.secret = (const uint8_t *)SECRET, .secret_len = 4,
		.ref = REF, .timeout_ms = 1000,
		.client_cert = f->path[P_CLICERT],
	};
	struct ca *ca = NULL;

	assert_int_equal(ca_cmp_new(&ca, &p), KL_ERR_CONFIG); /* both */
	p.client_cert = NULL;
	p.ref = NULL;
	assert_int_equal(ca_cmp_new(&ca, &p), KL_ERR_CONFIG); /* no ref */
	p.ref = REF;
	p.url = "https://127.0.0.1:1/pkix/";
	assert_int_equal(ca_cmp_new(&ca, &p), KL_ERR_CONFIG);
	p.url = "http://127.0.0.1:1/pkix/";
	assert_int_equal(ca_cmp_new(&ca, &p), 0);
	ca_free(ca);
	/* Signature protection without a pinned server certificate. */
	p.secret = NULL;
	p.secret_len = 0;
	p.client_cert = f->path[P_CLICERT];
	p.client_key_pem = f->path[P_CLIKEY];
	assert_int_equal(ca_cmp_new(&ca, &p), KL_ERR_CONFIG);
	/* A key that is not the certificate's. */
	p.server_cert = f->path[P_SRVCERT];
	p.client_key_pem = f->path[P_SRVKEY];
	assert_int_equal(ca_cmp_new(&ca, &p), KL_ERR_CONFIG);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mac_issue),
		cmocka_unit_test(test_wrong_key_rejected),
		cmocka_unit_test(test_wrong_secret_final),
		cmocka_unit_test(test_rejection_final),
		cmocka_unit_test(test_down_transient),
		cmocka_unit_test(test_signature_issue),
		cmocka_unit_test(test_bad_params),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
