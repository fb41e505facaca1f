/*
 * test_ca_cmp.c: the CMP backend (RFC 9483 p10cr) against `openssl cmp`
 * running as a mock server on loopback.  The mock answers with a fixed
 * certificate (-rsp_cert): the positive tests prepare one under the fleet
 * root for the board key the test holds; another test gives it a
 * certificate for a different key, which the station must reject in its
 * certConf and never return.  MAC and signature protection; a server
 * that is down is transient, a rejection or a wrong MAC is final.
 * Signature protection with the station key in a real SoftHSM token
 * (a missing SoftHSM fails the test): the key never leaves it, the
 * mock verifies the requests against the fleet root.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "station/ca/ca.h"
#include "station/ca/certcheck.h"
#include "common/err.h"
#include "tests/unit/pki_util.h"
#include "tests/unit/testutil.h"

#define SECRET "cmp-test-secret-0123"
#define REF "keyline-station"
#define DEVID "dev-cmp-0001"

#define SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define TOKEN "station-cmp"
#define TOKEN_PIN "1234"
#define TOKEN_KEY_ID "20"

enum { P_ROOT, P_GOOD, P_OTHER, P_SRVCERT, P_SRVKEY, P_CLICERT, P_CLIKEY,
    P_LOG, P_HSMCONF, P_TOKDIR, P_HSMLOG, P_TOKPUB, P_TOKCLI, P_TOKALIEN,
    P_N };

struct fx {
	char dir[64];
	char path[P_N][256];
	X509 *root;		/* fleet root: signs the token cert */
	EVP_PKEY *root_key;
	int token;		/* 1 once the station token is made */
	struct ca *tok_ca;	/* a token test's CA and mock, for its */
	pid_t tok_pid;		/* teardown: one left open fails the next */
	EVP_PKEY *board;
	uint8_t *csr;
	size_t csr_len;
	struct certcheck_trust *trust;
};

static int
setup_all(void **state)
{
	static const char *names[P_N] = { "root.pem", "good.pem", "other.pem",
	    "srv.pem", "srv.key", "cli.pem", "cli.key", "mock.log",
	    "softhsm2.conf", "tokens", "hsm.log", "tokpub.der", "tokcli.pem",
	    "tokalien.pem" };
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
	f->root = root;
	f->root_key = rk;
	X509_free(good);
	X509_free(other);
	X509_free(srv);
	X509_free(cli);
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
	X509_free(f->root);
	EVP_PKEY_free(f->root_key);
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

/*
 * The device profile is enforced before certConf whatever the CMP server's
 * own profile: a certificate without the configured subject entries, or
 * living longer than max_validity_days, is rejected in the certConf and
 * never returned.
 */
static void
test_profile_enforced(void **state)
{
	struct fx *f = *state;
	static const struct {
		const char *extra;
		unsigned days;
		const char *why;
	} cases[] = {
		{ "O=Example Fleet", 0, "lacks 'O=Example Fleet'" },
		{ NULL, 30, "lifetime" },
	};
	char url[128], err[256];
	struct ca_cmp_params p = {
		.url = url, .fleet_root = f->path[P_ROOT],
		.secret = (const uint8_t *)SECRET, .secret_len = strlen(SECRET),
		.ref = REF, .timeout_ms = 2000,
	};
	struct ca *ca;
	uint8_t *der;
	size_t len, i;
	int port;
	pid_t pid;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		port = tu_free_port();
		pid = mock_srv(f, port, f->path[P_GOOD], 0, NULL);
		assert_true(pid > 0);
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/pkix/", port);
		p.subject_extra = cases[i].extra;
		p.max_validity_days = cases[i].days;
		ca = NULL;
		assert_int_equal(ca_cmp_new(&ca, &p), 0);
		assert_int_equal(issue(f, ca, &der, &len, err, sizeof(err)),
		    KL_ERR_CERT_INVALID);
		assert_null(der);
		assert_non_null(strstr(err, "certConf"));
		if (strstr(err, cases[i].why) == NULL)
			fail_msg("case %zu: '%s' lacks '%s'", i, err,
			    cases[i].why);
		ca_free(ca);
		tu_stop(pid);
	}
	/* A profile that cannot be: refused at start-up. */
	p.subject_extra = "CN=admin";
	p.max_validity_days = 0;
	ca = NULL;
	assert_int_equal(ca_cmp_new(&ca, &p), KL_ERR_CONFIG);
	assert_null(ca);
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

/* One HTTP exchange answered with a bare status, as a proxy or a busy RA
 * in front of the CA may answer. */
struct cmp_canned {
	int lfd;
	const char *status;
};

static void *
cmp_canned_main(void *arg)
{
	struct cmp_canned *c = arg;
	char buf[16384], resp[256];
	const char *end, *cl;
	size_t got = 0, want;
	ssize_t n;
	int fd = accept(c->lfd, NULL, NULL);

	if (fd < 0)
		return NULL;
	/* The whole request: headers, then Content-Length bytes. */
	while (got < sizeof(buf) - 1 &&
	    (n = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0) {
		got += (size_t)n;
		buf[got] = '\0';
		if ((end = strstr(buf, "\r\n\r\n")) == NULL)
			continue;
		cl = strcasestr(buf, "Content-Length:");
		want = (size_t)(end - buf) + 4 +
		    (cl != NULL ? strtoul(cl + 15, NULL, 10) : 0);
		if (got >= want)
			break;
	}
	n = snprintf(resp, sizeof(resp), "HTTP/1.1 %s\r\nContent-Length: 0"
	    "\r\nConnection: close\r\n\r\n", c->status);
	(void)!write(fd, resp, (size_t)n);
	close(fd);
	return NULL;
}

static int
cmp_canned_issue(struct fx *f, const char *status, char *err, size_t errsz)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof(a);
	struct cmp_canned c = { .status = status };
	pthread_t th;
	struct ca *ca;
	uint8_t *der = NULL;
	size_t len;
	int r;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c.lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(c.lfd >= 0);
	assert_int_equal(bind(c.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(c.lfd, 4), 0);
	assert_int_equal(getsockname(c.lfd, (struct sockaddr *)&a, &alen), 0);
	assert_int_equal(pthread_create(&th, NULL, cmp_canned_main, &c), 0);
	assert_non_null(ca = mk_mac(f, ntohs(a.sin_port), SECRET));
	r = issue(f, ca, &der, &len, err, errsz);
	pthread_join(th, NULL);
	close(c.lfd);
	ca_free(ca);
	assert_null(der);
	return r;
}

/* The same HTTP statuses mean the same as for CFSSL: 408, 429 and 5xx
 * are "try again later", another 4xx is a refusal. */
static void
test_http_status_classes(void **state)
{
	struct fx *f = *state;
	char err[256];

	assert_true(ca_is_transient(cmp_canned_issue(f,
	    "429 Too Many Requests", err, sizeof(err))));
	assert_true(ca_is_transient(cmp_canned_issue(f,
	    "408 Request Timeout", err, sizeof(err))));
	assert_true(ca_is_transient(cmp_canned_issue(f,
	    "503 Service Unavailable", err, sizeof(err))));
	assert_int_equal(cmp_canned_issue(f, "403 Forbidden", err,
	    sizeof(err)), KL_ERR_CA);
	assert_non_null(strstr(err, "HTTP 403"));
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

/* 1 when der is the certificate in the PEM file path. */
static int
same_cert(const char *path, const uint8_t *der, size_t len)
{
	BIO *in = BIO_new_file(path, "r");
	X509 *x = in != NULL ? PEM_read_bio_X509(in, NULL, NULL, NULL) : NULL;
	uint8_t *want = NULL;
	size_t wlen = 0;
	int same;

	BIO_free(in);
	if (x != NULL)
		want = pki_der(x, &wlen);
	same = want != NULL && wlen == len && memcmp(want, der, len) == 0;
	OPENSSL_free(want);
	X509_free(x);
	return same;
}

/*
 * The station token, made once for the tests that need it: SoftHSM with
 * its token directory in the test directory, an EC P-256 key (id 20,
 * sensitive) generated in the token by pkcs11-tool, and two certificates
 * for its public key, which pkcs11-tool reads back (not the code under
 * test): the station's CMP certificate under the fleet root, and one under
 * a root the mock does not trust (that root after it, as the chain).
 * Fails, naming scripts/setup, when SoftHSM or pkcs11-tool is missing.
 */
static void
token_ready(struct fx *f)
{
	EVP_PKEY *pub, *ak;
	X509 *cli, *aroot, *alien, *l[3] = { NULL, NULL, NULL };
	BIO *in;
	FILE *fp;
	struct pki_opts o = {
		.cn = "station-01", .ku = "critical,digitalSignature",
		.eku = "critical,clientAuth", .not_before = -60,
		.serial = 77,
	};

	if (f->token)
		return;
	if (access(SOFTHSM_MODULE, R_OK) != 0 ||
	    tu_sh("command -v softhsm2-util >/dev/null && "
	    "command -v pkcs11-tool >/dev/null") != 0)
		fail_msg("SoftHSM or pkcs11-tool missing: run scripts/setup");
	assert_int_equal(mkdir(f->path[P_TOKDIR], 0700), 0);
	fp = fopen(f->path[P_HSMCONF], "w");
	assert_non_null(fp);
	fprintf(fp, "directories.tokendir = %s\nobjectstore.backend = file\n"
	    "log.level = ERROR\n", f->path[P_TOKDIR]);
	assert_int_equal(fclose(fp), 0);
	/* Before anything in this process loads the module. */
	assert_int_equal(setenv("SOFTHSM2_CONF", f->path[P_HSMCONF], 1), 0);
	assert_int_equal(tu_sh("softhsm2-util --init-token --free --label "
	    TOKEN " --so-pin 5678 --pin " TOKEN_PIN " >%s 2>&1",
	    f->path[P_HSMLOG]), 0);
	assert_int_equal(tu_sh("pkcs11-tool --module " SOFTHSM_MODULE
	    " --token-label " TOKEN " --login --pin " TOKEN_PIN
	    " --keypairgen --key-type EC:prime256v1 --id " TOKEN_KEY_ID
	    " --label cmp --usage-sign --sensitive >>%s 2>&1",
	    f->path[P_HSMLOG]), 0);
	assert_int_equal(tu_sh("pkcs11-tool --module " SOFTHSM_MODULE
	    " --token-label " TOKEN " --read-object --type pubkey --id "
	    TOKEN_KEY_ID " -o %s >>%s 2>&1", f->path[P_TOKPUB],
	    f->path[P_HSMLOG]), 0);
	in = BIO_new_file(f->path[P_TOKPUB], "rb");
	assert_non_null(in);
	pub = d2i_PUBKEY_bio(in, NULL);
	BIO_free(in);
	assert_non_null(pub);

	o.key = pub;
	o.issuer = f->root;
	o.issuer_key = f->root_key;
	assert_non_null(cli = pki_make_cert(&o));
	ak = pki_ec_key();
	assert_non_null(aroot = pki_make_ca("Not The Fleet Root", ak, NULL,
	    NULL));
	o.issuer = aroot;
	o.issuer_key = ak;
	assert_non_null(alien = pki_make_cert(&o));
	l[0] = cli;
	assert_int_equal(pki_write_certs(f->path[P_TOKCLI], l), 0);
	l[0] = alien;
	l[1] = aroot;
	assert_int_equal(pki_write_certs(f->path[P_TOKALIEN], l), 0);
	X509_free(cli);
	X509_free(alien);
	X509_free(aroot);
	EVP_PKEY_free(ak);
	EVP_PKEY_free(pub);
	f->token = 1;
}

static void
tok_params(struct fx *f, struct ca_cmp_params *p, char *url, size_t urlsz,
    int port, char *pin)
{
	snprintf(url, urlsz, "http://127.0.0.1:%d/pkix/", port);
	memset(p, 0, sizeof(*p));
	p->url = url;
	p->fleet_root = f->path[P_ROOT];
	p->client_cert = f->path[P_TOKCLI];
	p->module = SOFTHSM_MODULE;
	p->token_label = TOKEN;
	p->key_id_hex = TOKEN_KEY_ID;
	p->pin = pin;
	p->server_cert = f->path[P_SRVCERT];
	p->timeout_ms = 2000;
}

/* The station's CMP key in its token: the mock verifies the requests'
 * signatures against the fleet root (-srv_trusted) and answers. */
static void
test_token_signature_issue(void **state)
{
	struct fx *f = *state;
	int port, i;
	char url[128], err[256], pin[] = TOKEN_PIN;
	struct ca_cmp_params p;
	uint8_t *der;
	size_t len;

	token_ready(f);
	port = tu_free_port();
	f->tok_pid = mock_srv(f, port, f->path[P_GOOD], 1, NULL);
	assert_true(f->tok_pid > 0);
	tok_params(f, &p, url, sizeof(url), port, pin);
	assert_int_equal(ca_cmp_new(&f->tok_ca, &p), 0);
	/* Two enrollments through the one token session. */
	for (i = 0; i < 2; i++) {
		assert_int_equal(issue(f, f->tok_ca, &der, &len, err,
		    sizeof(err)), 0);
		check_cert(f, der, len);
		assert_true(same_cert(f->path[P_GOOD], der, len));
		OPENSSL_free(der);
	}
}

static void
test_token_signature_refused(void **state)
{
	struct fx *f = *state;
	int port;
	char url[128], err[256], pin[] = TOKEN_PIN, bad_pin[] = "0000";
	struct ca_cmp_params p;
	struct ca *ca = NULL;
	uint8_t *der;
	size_t len;

	token_ready(f);
	port = tu_free_port();
	tok_params(f, &p, url, sizeof(url), port, bad_pin);
	assert_int_equal(ca_cmp_new(&ca, &p), KL_ERR_HSM_LOGIN);
	assert_null(ca);
	p.pin = pin;
	p.key_id_hex = "21";
	assert_int_equal(ca_cmp_new(&ca, &p), KL_ERR_NOT_FOUND);
	assert_null(ca);
	p.key_id_hex = "2x";
	assert_int_equal(ca_cmp_new(&ca, &p), KL_ERR_CONFIG);
	assert_null(ca);
	/* A fleet certificate for another key: refused before any request. */
	p.key_id_hex = TOKEN_KEY_ID;
	p.client_cert = f->path[P_CLICERT];
	assert_int_equal(ca_cmp_new(&ca, &p), KL_ERR_CONFIG);
	assert_null(ca);

	/*
	 * The token key with a certificate the mock does not trust: the
	 * request is signed in the token, the server refuses it.  That this
	 * opens at all also shows every failure above closed the module
	 * (hsm_open says KL_ERR_EXISTS while one is open).
	 */
	f->tok_pid = mock_srv(f, port, f->path[P_GOOD], 1, NULL);
	assert_true(f->tok_pid > 0);
	p.client_cert = f->path[P_TOKALIEN];
	assert_int_equal(ca_cmp_new(&f->tok_ca, &p), 0);
	assert_int_equal(issue(f, f->tok_ca, &der, &len, err, sizeof(err)),
	    KL_ERR_CA);
	assert_null(der);
	assert_non_null(strstr(err, "refused"));
}

/* ca_free closes the token, so the next test can open it again. */
static int
teardown_token(void **state)
{
	struct fx *f = *state;

	ca_free(f->tok_ca);
	f->tok_ca = NULL;
	tu_stop(f->tok_pid);
	f->tok_pid = 0;
	return 0;
}

/*
 * CMP over https: socat terminates TLS with the mock server's certificate
 * in front of the plain mock.  The pinned certificate gets an issued
 * certificate; another pin is a final CA error that names the pin, with
 * no certificate; https to the plain mock is a final "does not speak
 * TLS", not an outage to wait out.
 */
static void
test_https_pinned(void **state)
{
	struct fx *f = *state;
	int port = tu_free_port(), tport = tu_free_port();
	pid_t pid = mock_srv(f, port, f->path[P_GOOD], 0, NULL), tpid;
	char listen[1024], connect[64], url[128], log[300], err[256];
	char *socat_argv[] = { "socat", listen, connect, NULL };
	struct ca_cmp_params p = {
		.url = url, .fleet_root = f->path[P_ROOT],
		.secret = (const uint8_t *)SECRET, .secret_len = strlen(SECRET),
		.ref = REF, .timeout_ms = 2000,
		.tls_server_cert = f->path[P_SRVCERT],
	};
	struct ca *ca = NULL;
	uint8_t *der;
	size_t len;

	assert_true(pid > 0);
	snprintf(listen, sizeof(listen), "OPENSSL-LISTEN:%d,bind=127.0.0.1,"
	    "reuseaddr,fork,verify=0,cert=%s,key=%s", tport,
	    f->path[P_SRVCERT], f->path[P_SRVKEY]);
	snprintf(connect, sizeof(connect), "TCP:127.0.0.1:%d", port);
	snprintf(log, sizeof(log), "%s/socat.log", f->dir);
	tpid = tu_spawn(socat_argv, log, tport);
	assert_true(tpid > 0);
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/pkix/", tport);

	assert_int_equal(ca_cmp_new(&ca, &p), 0);
	assert_int_equal(issue(f, ca, &der, &len, err, sizeof(err)), 0);
	check_cert(f, der, len);
	OPENSSL_free(der);
	ca_free(ca);

	/* The same server, another pin. */
	p.tls_server_cert = f->path[P_CLICERT];
	assert_int_equal(ca_cmp_new(&ca, &p), 0);
	assert_int_equal(issue(f, ca, &der, &len, err, sizeof(err)),
	    KL_ERR_CA);
	assert_non_null(strstr(err, "pinned server_cert"));
	assert_null(der);
	ca_free(ca);

	/* https to the plain mock: a configuration error, final at once. */
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/pkix/", port);
	p.tls_server_cert = f->path[P_SRVCERT];
	assert_int_equal(ca_cmp_new(&ca, &p), 0);
	assert_int_equal(issue(f, ca, &der, &len, err, sizeof(err)),
	    KL_ERR_CA);
	assert_non_null(strstr(err, "does not speak TLS"));
	ca_free(ca);

	/* Plain http, no pin, straight to the mock: still fine. */
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/pkix/", port);
	p.tls_server_cert = NULL;
	assert_int_equal(ca_cmp_new(&ca, &p), 0);
	assert_int_equal(issue(f, ca, &der, &len, err, sizeof(err)), 0);
	OPENSSL_free(der);
	ca_free(ca);
	tu_stop(tpid);
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
	/* https needs a pin; http refuses one; a pin must be a cert. */
	p.url = "https://127.0.0.1:1/pkix/";
	assert_int_equal(ca_cmp_new(&ca, &p), KL_ERR_CONFIG);
	p.tls_server_cert = f->path[P_SRVKEY];
	assert_int_equal(ca_cmp_new(&ca, &p), KL_ERR_CONFIG);
	p.tls_server_cert = f->path[P_SRVCERT];
	assert_int_equal(ca_cmp_new(&ca, &p), 0);
	ca_free(ca);
	p.url = "http://127.0.0.1:1/pkix/";
	assert_int_equal(ca_cmp_new(&ca, &p), KL_ERR_CONFIG);
	p.tls_server_cert = NULL;
	p.url = "ftp://127.0.0.1:1/pkix/";
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

/*
 * A hostile board's CSR: its own key, but a subject with O=Fleet Admins,
 * OU=ops and a requested subjectAltName naming the OTA gateway.  DER,
 * OPENSSL_free().
 */
static uint8_t *
hostile_csr(EVP_PKEY *key, const char *cn, size_t *len)
{
	X509_REQ *req = X509_REQ_new();
	X509_NAME *name = X509_NAME_new();
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	X509_EXTENSION *san;
	unsigned char *der = NULL;
	int n = -1, ok = req != NULL && name != NULL && exts != NULL;

	ok = ok && X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
	    (const unsigned char *)"Fleet Admins", -1, -1, 0);
	ok = ok && X509_NAME_add_entry_by_txt(name, "OU", MBSTRING_ASC,
	    (const unsigned char *)"ops", -1, -1, 0);
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
 * A hostile board against the real `openssl cmp` server.  Its CSR never
 * leaves the station: a p10cr would carry O=Fleet Admins, OU=ops and the
 * subjectAltName to the CA unchanged.  And a CA that puts them in anyway
 * (the mock answers with such a certificate, for the board's own key,
 * under the fleet root) gets it rejected in the certConf.
 */
static void
test_hostile_board(void **state)
{
	struct fx *f = *state;
	int port = tu_free_port();
	char hostile[300], err[256] = "";
	struct pki_opts o = {
		.cn = DEVID, .key = f->board, .issuer = f->root,
		.issuer_key = f->root_key, .ku = "critical,digitalSignature",
		.eku = "critical,clientAuth", .not_before = -60, .serial = 4243,
	};
	struct ca_request rq = { .device_id = DEVID };
	X509 *x = pki_make_cert(&o), *l[2] = { NULL, NULL };
	X509_NAME *name = X509_NAME_new();
	X509_EXTENSION *san;
	X509V3_CTX v3;
	struct ca *ca;
	uint8_t *der = NULL;
	size_t len = 0;
	pid_t pid;

	/* The certificate such a CA makes: everything the CSR asked for. */
	assert_non_null(x);
	assert_non_null(name);
	assert_true(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
	    (const unsigned char *)"Fleet Admins", -1, -1, 0));
	assert_true(X509_NAME_add_entry_by_txt(name, "OU", MBSTRING_ASC,
	    (const unsigned char *)"ops", -1, -1, 0));
	assert_true(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)DEVID, -1, -1, 0));
	assert_true(X509_set_subject_name(x, name));
	X509V3_set_ctx(&v3, f->root, x, NULL, NULL, 0);
	assert_non_null(san = X509V3_EXT_conf_nid(NULL, &v3,
	    NID_subject_alt_name, "DNS:gateway.ota.example.com"));
	assert_true(X509_add_ext(x, san, -1));
	X509_EXTENSION_free(san);
	assert_true(X509_sign(x, f->root_key, EVP_sha256()) > 0);
	snprintf(hostile, sizeof(hostile), "%s/hostile.pem", f->dir);
	l[0] = x;
	assert_int_equal(pki_write_certs(hostile, l), 0);
	X509_NAME_free(name);
	X509_free(x);

	pid = mock_srv(f, port, hostile, 0, NULL);
	assert_true(pid > 0);
	assert_non_null(ca = mk_mac(f, port, SECRET));

	/* The board's CSR asks for more than a CN: not sent. */
	rq.csr_der = hostile_csr(f->board, DEVID, &rq.csr_len);
	assert_non_null(rq.csr_der);
	assert_int_equal(ca_issue(ca, &rq, &der, &len, err, sizeof(err)),
	    KL_ERR_INVALID);
	assert_null(der);
	assert_non_null(strstr(err, "not sent to the CA"));
	OPENSSL_free((void *)rq.csr_der);

	/* A plain CSR, but the CA adds O, OU and the subjectAltName. */
	assert_int_equal(issue(f, ca, &der, &len, err, sizeof(err)),
	    KL_ERR_CERT_INVALID);
	assert_null(der);
	assert_non_null(strstr(err, "certConf"));
	assert_non_null(strstr(err, "serial 1093"));	/* 4243 */
	assert_true(strstr(err, "subject has 'O") != NULL ||
	    strstr(err, "subjectAltName") != NULL);
	ca_free(ca);
	tu_stop(pid);
	unlink(hostile);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mac_issue),
		cmocka_unit_test(test_wrong_key_rejected),
		cmocka_unit_test(test_profile_enforced),
		cmocka_unit_test(test_wrong_secret_final),
		cmocka_unit_test(test_rejection_final),
		cmocka_unit_test(test_down_transient),
		cmocka_unit_test(test_http_status_classes),
		cmocka_unit_test(test_signature_issue),
		cmocka_unit_test_teardown(test_token_signature_issue,
		    teardown_token),
		cmocka_unit_test_teardown(test_token_signature_refused,
		    teardown_token),
		cmocka_unit_test(test_https_pinned),
		cmocka_unit_test(test_bad_params),
		cmocka_unit_test(test_hostile_board),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
