/*
 * test_ca_local.c: the local CA backend with a development PEM key and with
 * the CA key in a real SoftHSM token; every issued certificate goes through
 * certcheck, as on the line.
 */
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include <cmocka.h>

#include <openssl/bn.h>
#include <openssl/rsa.h>

#include "hsm/hsm.h"
#include "station/ca/ca.h"
#include "station/ca/certcheck.h"
#include "common/err.h"
#include "tests/unit/pki_util.h"

#define SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"

struct fx {
	char dir[64];
	char issuer_pem[128], key_pem[128], other_key_pem[128];
	EVP_PKEY *ca_key, *board_key;
	X509 *ca_cert;
	struct certcheck_trust *trust;
	struct ca *ca;			/* dev PEM CA */
};

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	X509 *list[2] = { NULL, NULL };
	EVP_PKEY *other;
	struct ca_local_params p = { 0 };

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_ca_local.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->issuer_pem, sizeof(f->issuer_pem), "%s/issuer.pem",
	    f->dir);
	snprintf(f->key_pem, sizeof(f->key_pem), "%s/ca.key", f->dir);
	snprintf(f->other_key_pem, sizeof(f->other_key_pem), "%s/other.key",
	    f->dir);
	f->ca_key = pki_ec_key();
	f->board_key = pki_ec_key();
	other = pki_ec_key();
	f->ca_cert = pki_make_ca("fleet-dev-ca", f->ca_key, NULL, NULL);
	if (f->ca_cert == NULL || other == NULL)
		return -1;
	list[0] = f->ca_cert;
	if (pki_write_certs(f->issuer_pem, list) != 0 ||
	    pki_write_key(f->key_pem, f->ca_key) != 0 ||
	    pki_write_key(f->other_key_pem, other) != 0)
		return -1;
	EVP_PKEY_free(other);
	if (certcheck_trust_load(&f->trust, f->issuer_pem, NULL) != 0)
		return -1;
	p.issuer_cert = f->issuer_pem;
	p.dev_key_pem = f->key_pem;
	p.validity_days = 3650;
	if (ca_local_new(&f->ca, &p) != 0)
		return -1;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;

	ca_free(f->ca);
	certcheck_trust_free(f->trust);
	X509_free(f->ca_cert);
	EVP_PKEY_free(f->ca_key);
	EVP_PKEY_free(f->board_key);
	unlink(f->issuer_pem);
	unlink(f->key_pem);
	unlink(f->other_key_pem);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* Issue for key/device_id and run certcheck; returns the cert (X509). */
static X509 *
issue_and_check(struct ca *ca, const struct certcheck_trust *trust,
    EVP_PKEY *key, const char *csr_cn, const char *device_id)
{
	struct ca_request req = { .device_id = device_id };
	struct certcheck_expect want = { .cn = device_id };
	uint8_t *csr, *cert = NULL, *spki;
	const unsigned char *q;
	size_t csr_len, cert_len = 0, spki_len;
	char err[256], why[256];
	X509 *x;

	csr = pki_csr(key, csr_cn, &csr_len);
	spki = pki_spki(key, &spki_len);
	assert_non_null(csr);
	assert_non_null(spki);
	req.csr_der = csr;
	req.csr_len = csr_len;
	err[0] = '\0';
	if (ca_issue(ca, &req, &cert, &cert_len, err, sizeof(err)) != 0)
		fail_msg("issue: %s", err);
	want.spki = spki;
	want.spki_len = spki_len;
	if (certcheck_verify(trust, cert, cert_len, &want, why, sizeof(why))
	    != 0)
		fail_msg("certcheck: %s", why);
	q = cert;
	x = d2i_X509(NULL, &q, (long)cert_len);
	assert_non_null(x);
	OPENSSL_free(cert);
	OPENSSL_free(spki);
	OPENSSL_free(csr);
	return x;
}

static int
serial_bits(X509 *x)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	int bits;

	assert_non_null(bn);
	assert_false(BN_is_negative(bn));
	bits = BN_num_bits(bn);
	BN_free(bn);
	return bits;
}

/* Critical flag of the extension with nid, -1 when absent. */
static int
ext_critical(X509 *x, int nid)
{
	int idx = X509_get_ext_by_NID(x, nid, -1);

	if (idx < 0)
		return -1;
	return X509_EXTENSION_get_critical(X509_get_ext(x, idx));
}

static void
test_issue_pem(void **state)
{
	struct fx *f = *state;
	X509 *a, *b;
	time_t now = time(NULL);

	assert_string_equal(f->ca->name, "local:fleet-dev-ca");
	/* The board asked for another subject: the station decides. */
	a = issue_and_check(f->ca, f->trust, f->board_key, "admin",
	    "imx8-SN0001");
	b = issue_and_check(f->ca, f->trust, f->board_key, "imx8-SN0001",
	    "imx8-SN0001");

	assert_true(serial_bits(a) >= 64);
	assert_true(serial_bits(b) >= 64);
	assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(a),
	    X509_get0_serialNumber(b)), 0);

	/* Subject is exactly CN=<device ID>. */
	assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(a)), 1);

	assert_int_equal(ext_critical(a, NID_basic_constraints), 1);
	assert_int_equal(ext_critical(a, NID_key_usage), 1);
	assert_int_equal(ext_critical(a, NID_ext_key_usage), 1);
	assert_int_equal(ext_critical(a, NID_subject_key_identifier), 0);
	assert_int_equal(ext_critical(a, NID_authority_key_identifier), 0);
	assert_int_equal(X509_get_key_usage(a), KU_DIGITAL_SIGNATURE);
	assert_int_equal(X509_get_extended_key_usage(a), XKU_SSL_CLIENT);
	assert_int_equal(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(a),
	    X509_get0_subject_key_id(f->ca_cert)), 0);
	assert_int_equal(X509_get_signature_nid(a), NID_ecdsa_with_SHA256);

	/* notBefore = now - 60 s, notAfter = now + 3650 days. */
	{
		ASN1_TIME *t = ASN1_TIME_set(NULL, now);
		int d2, s2;

		assert_non_null(t);
		assert_int_equal(ASN1_TIME_diff(&d2, &s2, t,
		    X509_get0_notBefore(a)), 1);
		assert_int_equal(d2, 0);
		assert_true(s2 <= -59 && s2 >= -62);
		assert_int_equal(ASN1_TIME_diff(&d2, &s2, t,
		    X509_get0_notAfter(a)), 1);
		assert_int_equal(d2, 3650);
		assert_true(s2 >= 0 && s2 <= 2);
		ASN1_TIME_free(t);
	}
	X509_free(a);
	X509_free(b);
}

/*
 * [ca] subject_extra: the local CA puts the profile's fixed entries before
 * the CN whatever the CSR asked for, and the profile's check accepts
 * exactly that; a trust without the profile refuses it.
 */
static void
test_subject_extra(void **state)
{
	struct fx *f = *state;
	struct ca_local_params p = { 0 };
	struct certcheck_profile prof = { .subject_extra = "O=Example Fleet,"
	    "OU=devices" };
	struct ca_request req = { .device_id = "imx8-SN0002" };
	struct certcheck_expect want = { .cn = "imx8-SN0002" };
	struct certcheck_trust *t = NULL;
	uint8_t *csr, *cert = NULL, *spki;
	size_t csr_len, cert_len = 0, spki_len;
	char err[256] = "", why[256] = "", name[256];
	struct ca *ca = NULL;
	X509 *x;

	p.issuer_cert = f->issuer_pem;
	p.dev_key_pem = f->key_pem;
	p.validity_days = 365;
	p.subject_extra = prof.subject_extra;
	assert_int_equal(ca_local_new(&ca, &p), 0);
	assert_int_equal(certcheck_trust_load(&t, f->issuer_pem, NULL), 0);
	assert_int_equal(certcheck_trust_set_profile(t, &prof, why,
	    sizeof(why)), 0);
	x = issue_and_check(ca, t, f->board_key, "admin", "imx8-SN0002");
	X509_NAME_oneline(X509_get_subject_name(x), name, sizeof(name));
	assert_string_equal(name, "/O=Example Fleet/OU=devices/CN=imx8-SN0002");
	X509_free(x);

	csr = pki_csr(f->board_key, "imx8-SN0002", &csr_len);
	spki = pki_spki(f->board_key, &spki_len);
	req.csr_der = csr;
	req.csr_len = csr_len;
	assert_int_equal(ca_issue(ca, &req, &cert, &cert_len, err,
	    sizeof(err)), 0);
	want.spki = spki;
	want.spki_len = spki_len;
	assert_int_equal(certcheck_verify(f->trust, cert, cert_len, &want, why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_non_null(strstr(why, "does not name"));
	OPENSSL_free(cert);
	OPENSSL_free(spki);
	OPENSSL_free(csr);
	certcheck_trust_free(t);
	ca_free(ca);

	ca = NULL;
	p.subject_extra = "CN=admin";
	assert_int_equal(ca_local_new(&ca, &p), KL_ERR_CONFIG);
	assert_null(ca);
}

static void
test_bad_csr(void **state)
{
	struct fx *f = *state;
	struct ca_request req = { .device_id = "imx8-SN0002" };
	uint8_t *csr, *copy, *cert = (uint8_t *)"untouched";
	size_t len, cert_len = 7, i;
	char err[256];
	int rc;

	csr = pki_csr(f->board_key, "x", &len);
	assert_non_null(csr);
	copy = malloc(len + 1);
	assert_non_null(copy);

	/* Last byte is inside the signature. */
	memcpy(copy, csr, len);
	copy[len - 1] ^= 0x01;
	req.csr_der = copy;
	req.csr_len = len;
	assert_int_equal(ca_issue(f->ca, &req, &cert, &cert_len, err,
	    sizeof(err)), KL_ERR_INVALID);
	assert_string_equal(err, "CSR signature does not verify");
	assert_string_equal((const char *)cert, "untouched");
	assert_int_equal(cert_len, 7);

	/* Every truncation, trailing garbage, every bit flip: refused,
	 * never issued. */
	for (i = 0; i < len; i++) {
		req.csr_len = i;
		memcpy(copy, csr, len);
		assert_int_equal(ca_issue(f->ca, &req, &cert, &cert_len, err,
		    sizeof(err)), KL_ERR_INVALID);
	}
	memcpy(copy, csr, len);
	copy[len] = 0;
	req.csr_len = len + 1;
	assert_int_equal(ca_issue(f->ca, &req, &cert, &cert_len, err,
	    sizeof(err)), KL_ERR_INVALID);
	assert_string_equal(err, "CSR is not a DER PKCS#10 request");
	req.csr_len = len;
	for (i = 0; i < len * 8; i++) {
		memcpy(copy, csr, len);
		copy[i / 8] ^= (uint8_t)(1u << (i % 8));
		rc = ca_issue(f->ca, &req, &cert, &cert_len, err, sizeof(err));
		if (rc == 0) {
			/* A flip in a part the signature does not cover
			 * (the signature algorithm's NULL parameter, say)
			 * may still verify; the key must be the board's. */
			const unsigned char *q = cert;
			X509 *x = d2i_X509(NULL, &q, (long)cert_len);
			uint8_t *spki;
			size_t spki_len;
			unsigned char *xs = NULL;
			int n;

			assert_non_null(x);
			spki = pki_spki(f->board_key, &spki_len);
			n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &xs);
			assert_int_equal((size_t)n, spki_len);
			assert_memory_equal(xs, spki, spki_len);
			OPENSSL_free(xs);
			OPENSSL_free(spki);
			X509_free(x);
			OPENSSL_free(cert);
			cert = (uint8_t *)"untouched";
			continue;
		}
		assert_int_equal(rc, KL_ERR_INVALID);
	}

	/* A CSR signed by another key than the one it carries. */
	{
		X509_REQ *r = X509_REQ_new();
		EVP_PKEY *k2 = pki_ec_key();
		unsigned char *der = NULL;
		int n;

		assert_non_null(r);
		assert_true(X509_REQ_set_pubkey(r, f->board_key));
		assert_true(X509_REQ_sign(r, k2, EVP_sha256()) > 0);
		n = i2d_X509_REQ(r, &der);
		assert_true(n > 0);
		req.csr_der = der;
		req.csr_len = (size_t)n;
		assert_int_equal(ca_issue(f->ca, &req, &cert, &cert_len, err,
		    sizeof(err)), KL_ERR_INVALID);
		assert_string_equal(err, "CSR signature does not verify");
		OPENSSL_free(der);
		EVP_PKEY_free(k2);
		X509_REQ_free(r);
	}

	/* No device ID, empty CSR. */
	req.csr_der = csr;
	req.csr_len = len;
	req.device_id = "";
	assert_int_equal(ca_issue(f->ca, &req, &cert, &cert_len, err,
	    sizeof(err)), KL_ERR_INVALID);
	req.device_id = "imx8-SN0002";
	req.csr_len = 0;
	assert_int_equal(ca_issue(f->ca, &req, &cert, &cert_len, err,
	    sizeof(err)), KL_ERR_INVALID);
	free(copy);
	OPENSSL_free(csr);
}

static void
test_weak_key(void **state)
{
	struct fx *f = *state;
	struct ca_request req = { .device_id = "imx8-SN0003" };
	EVP_PKEY *rsa = EVP_RSA_gen(1024);
	uint8_t *csr, *cert = NULL;
	size_t len, cert_len;
	char err[256];

	assert_non_null(rsa);
	csr = pki_csr(rsa, "x", &len);
	assert_non_null(csr);
	req.csr_der = csr;
	req.csr_len = len;
	assert_int_equal(ca_issue(f->ca, &req, &cert, &cert_len, err,
	    sizeof(err)), KL_ERR_INVALID);
	assert_string_equal(err, "CSR key is RSA-1024; at least 2048 bits are "
	    "required");
	OPENSSL_free(csr);
	EVP_PKEY_free(rsa);
}

static void
test_config_errors(void **state)
{
	struct fx *f = *state;
	struct ca_local_params p = { 0 };
	struct ca *ca = NULL;
	char path[128];

	p.issuer_cert = f->issuer_pem;
	p.validity_days = 365;
	/* The key file is not the issuer's key. */
	p.dev_key_pem = f->other_key_pem;
	assert_int_equal(ca_local_new(&ca, &p), KL_ERR_CONFIG);
	assert_null(ca);
	/* Key and certificate swapped. */
	p.issuer_cert = f->key_pem;
	p.dev_key_pem = f->key_pem;
	assert_int_equal(ca_local_new(&ca, &p), KL_ERR_CONFIG);
	p.issuer_cert = f->issuer_pem;
	p.dev_key_pem = f->issuer_pem;
	assert_int_equal(ca_local_new(&ca, &p), KL_ERR_CONFIG);
	/* Missing file. */
	snprintf(path, sizeof(path), "%s/nope.pem", f->dir);
	p.issuer_cert = path;
	p.dev_key_pem = f->key_pem;
	assert_int_equal(ca_local_new(&ca, &p), KL_ERR_IO);
	/* A leaf certificate as issuer. */
	{
		struct pki_opts o = {
			.cn = "leaf", .key = f->board_key,
			.issuer = f->ca_cert, .issuer_key = f->ca_key,
			.not_after = 86400,
		};
		X509 *leaf = pki_make_cert(&o), *list[2] = { leaf, NULL };

		assert_non_null(leaf);
		assert_int_equal(pki_write_certs(path, list), 0);
		assert_int_equal(ca_local_new(&ca, &p), KL_ERR_CONFIG);
		X509_free(leaf);
		unlink(path);
	}
	/* Validity 0; no key source at all (token params missing). */
	p.issuer_cert = f->issuer_pem;
	p.validity_days = 0;
	assert_int_equal(ca_local_new(&ca, &p), KL_ERR_CONFIG);
	/* Longer than validation accepts: every board would fail. */
	p.validity_days = 3651;
	assert_int_equal(ca_local_new(&ca, &p), KL_ERR_CONFIG);
	p.validity_days = 10;
	p.dev_key_pem = NULL;
	assert_int_equal(ca_local_new(&ca, &p), KL_ERR_CONFIG);
	assert_null(ca);
}

/* Slots issue at the same time. */
struct worker {
	struct fx *f;
	struct ca *ca;
	int n, failures;
	EVP_PKEY *key;
	char id[32];
};

static void *
worker_run(void *arg)
{
	struct worker *w = arg;
	struct ca_request req = { .device_id = w->id };
	struct certcheck_expect want = { .cn = w->id };
	uint8_t *csr, *spki, *cert;
	size_t csr_len, spki_len, cert_len;
	char err[256], why[256];
	int i;

	csr = pki_csr(w->key, w->id, &csr_len);
	spki = pki_spki(w->key, &spki_len);
	if (csr == NULL || spki == NULL) {
		w->failures = w->n;
		goto out;
	}
	req.csr_der = csr;
	req.csr_len = csr_len;
	want.spki = spki;
	want.spki_len = spki_len;
	for (i = 0; i < w->n; i++) {
		cert = NULL;
		if (ca_issue(w->ca, &req, &cert, &cert_len, err,
		    sizeof(err)) != 0 || certcheck_verify(w->f->trust, cert,
		    cert_len, &want, why, sizeof(why)) != 0)
			w->failures++;
		OPENSSL_free(cert);
	}
out:
	OPENSSL_free(csr);
	OPENSSL_free(spki);
	return NULL;
}

static void
run_workers(struct fx *f, struct ca *ca, int per_thread)
{
	struct worker w[4];
	pthread_t t[4];
	int i;

	for (i = 0; i < 4; i++) {
		w[i].f = f;
		w[i].ca = ca;
		w[i].n = per_thread;
		w[i].failures = 0;
		w[i].key = pki_ec_key();
		assert_non_null(w[i].key);
		snprintf(w[i].id, sizeof(w[i].id), "slot%d-SN%04d", i + 1, i);
		assert_int_equal(pthread_create(&t[i], NULL, worker_run,
		    &w[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].failures, 0);
		EVP_PKEY_free(w[i].key);
	}
}

static void
test_threads_pem(void **state)
{
	struct fx *f = *state;

	run_workers(f, f->ca, 25);
}

/* --- the CA key in a real SoftHSM token */

static int
run(const char *cmd)
{
	int rc = system(cmd);

	return rc == 0 ? 0 : -1;
}

static void
test_token(void **state)
{
	struct fx *f = *state;
	char tdir[128], conf[160], cmd[512], issuer[160];
	struct ca_local_params p = { 0 };
	struct ca *ca = NULL;
	struct hsm *h = NULL;
	EVP_PKEY *tok_key = NULL, *pub = NULL;
	X509 *cacert = NULL, *list[2] = { NULL, NULL }, *x;
	struct certcheck_trust *trust = NULL;
	uint8_t id[1] = { 0x10 }, *spki = NULL;
	const unsigned char *q;
	size_t spki_len = 0;
	FILE *fp;

	if (access(SOFTHSM_MODULE, R_OK) != 0 ||
	    run("command -v softhsm2-util >/dev/null && "
	    "command -v pkcs11-tool >/dev/null") != 0)
		fail_msg("SoftHSM or pkcs11-tool missing: run scripts/setup");

	snprintf(tdir, sizeof(tdir), "%s/tokens", f->dir);
	snprintf(conf, sizeof(conf), "%s/softhsm2.conf", f->dir);
	snprintf(issuer, sizeof(issuer), "%s/token-ca.pem", f->dir);
	assert_int_equal(mkdir(tdir, 0700), 0);
	fp = fopen(conf, "w");
	assert_non_null(fp);
	fprintf(fp, "directories.tokendir = %s\nobjectstore.backend = file\n"
	    "log.level = ERROR\n", tdir);
	fclose(fp);
	assert_int_equal(setenv("SOFTHSM2_CONF", conf, 1), 0);
	assert_int_equal(run("softhsm2-util --init-token --free --label "
	    "station --so-pin 5678 --pin 1234 >/dev/null"), 0);
	snprintf(cmd, sizeof(cmd), "pkcs11-tool --module %s --login --pin "
	    "1234 --keypairgen --key-type EC:prime256v1 --id 10 --label "
	    "fleet-ca >/dev/null 2>&1", SOFTHSM_MODULE);
	assert_int_equal(run(cmd), 0);

	/* Self-signed CA certificate, signed in the token. */
	assert_int_equal(hsm_open(&h, SOFTHSM_MODULE, "station", "1234"), 0);
	assert_int_equal(hsm_get_private_key(h, id, sizeof(id), &tok_key), 0);
	assert_int_equal(hsm_get_spki(h, id, sizeof(id), &spki, &spki_len),
	    0);
	q = spki;
	pub = d2i_PUBKEY(NULL, &q, (long)spki_len);
	assert_non_null(pub);
	{
		struct pki_opts o = {
			.cn = "fleet-token-ca", .key = pub,
			.issuer_key = tok_key, .ca = 1,
			.ku = "critical,keyCertSign,cRLSign",
			.not_before = -3600, .not_after = 86400L * 3650,
		};

		cacert = pki_make_cert(&o);
	}
	assert_non_null(cacert);
	EVP_PKEY_free(tok_key);
	hsm_close(h);
	h = NULL;
	list[0] = cacert;
	assert_int_equal(pki_write_certs(issuer, list), 0);
	assert_int_equal(certcheck_trust_load(&trust, issuer, NULL), 0);

	p.issuer_cert = issuer;
	p.module = SOFTHSM_MODULE;
	p.token_label = "station";
	p.key_id_hex = "10";
	p.validity_days = 365;

	/* Wrong PIN, wrong key id, a token key that is not the issuer's. */
	p.pin = "0000";
	assert_int_equal(ca_local_new(&ca, &p), KL_ERR_HSM_LOGIN);
	p.pin = "1234";
	p.key_id_hex = "11";
	assert_int_equal(ca_local_new(&ca, &p), KL_ERR_NOT_FOUND);
	p.key_id_hex = "10";
	p.issuer_cert = f->issuer_pem;
	assert_int_equal(ca_local_new(&ca, &p), KL_ERR_CONFIG);
	p.issuer_cert = issuer;
	assert_null(ca);

	assert_int_equal(ca_local_new(&ca, &p), 0);
	assert_string_equal(ca->name, "local:fleet-token-ca");
	{
		X509 *a = issue_and_check(ca, trust, f->board_key, "x",
		    "imx8-SN0100");

		x = issue_and_check(ca, trust, f->board_key, "x",
		    "imx8-SN0100");
		assert_true(serial_bits(x) >= 64);
		assert_int_not_equal(ASN1_INTEGER_cmp(
		    X509_get0_serialNumber(a), X509_get0_serialNumber(x)), 0);
		/* Really signed by the token's key. */
		assert_int_equal(X509_verify(x, pub), 1);
		X509_free(a);
		X509_free(x);
	}
	/* Bad CSR signature through the token CA too. */
	{
		struct ca_request req = { .device_id = "imx8-SN0101" };
		uint8_t *csr, *cert = NULL;
		size_t len, cert_len;
		char err[256];

		csr = pki_csr(f->board_key, "x", &len);
		assert_non_null(csr);
		csr[len - 2] ^= 0x40;
		req.csr_der = csr;
		req.csr_len = len;
		assert_int_equal(ca_issue(ca, &req, &cert, &cert_len, err,
		    sizeof(err)), KL_ERR_INVALID);
		assert_string_equal(err, "CSR signature does not verify");
		OPENSSL_free(csr);
	}
	/* Four slots signing through one token session at once. */
	{
		struct certcheck_trust *saved = f->trust;

		f->trust = trust;
		run_workers(f, ca, 10);
		f->trust = saved;
	}
	ca_free(ca);

	certcheck_trust_free(trust);
	X509_free(cacert);
	EVP_PKEY_free(pub);
	OPENSSL_free(spki);
	unlink(issuer);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", tdir, conf);
	assert_int_equal(run(cmd), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_issue_pem),
		cmocka_unit_test(test_subject_extra),
		cmocka_unit_test(test_bad_csr),
		cmocka_unit_test(test_weak_key),
		cmocka_unit_test(test_config_errors),
		cmocka_unit_test(test_threads_pem),
		cmocka_unit_test(test_token),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
