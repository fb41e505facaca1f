/* test_certcheck.c: every check on an issued certificate, each made to fail
 * on its own with a real certificate that differs in just that respect. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "station/certcheck.h"
#include "station/err.h"
#include "tests/unit/pki_util.h"

struct pki {
	char dir[64];
	char root_pem[96], inter_pem[96], other_pem[96], both_pem[96];
	EVP_PKEY *root_key, *inter_key, *other_key, *leaf_key, *stray_key;
	X509 *root, *inter, *other;
	uint8_t *spki;
	size_t spki_len;
	struct certcheck_trust *trust;	/* root + intermediate */
};

static int
setup(void **state)
{
	struct pki *p = calloc(1, sizeof(*p));
	X509 *list[3] = { NULL, NULL, NULL };

	if (p == NULL)
		return -1;
	snprintf(p->dir, sizeof(p->dir), "/tmp/test_certcheck.XXXXXX");
	if (mkdtemp(p->dir) == NULL)
		return -1;
	snprintf(p->root_pem, sizeof(p->root_pem), "%s/root.pem", p->dir);
	snprintf(p->inter_pem, sizeof(p->inter_pem), "%s/inter.pem", p->dir);
	snprintf(p->other_pem, sizeof(p->other_pem), "%s/other.pem", p->dir);
	snprintf(p->both_pem, sizeof(p->both_pem), "%s/both.pem", p->dir);
	p->root_key = pki_ec_key();
	p->inter_key = pki_ec_key();
	p->other_key = pki_ec_key();
	p->leaf_key = pki_ec_key();
	p->stray_key = pki_ec_key();
	p->root = pki_make_ca("fleet-root", p->root_key, NULL, NULL);
	p->inter = pki_make_ca("cm-intermediate", p->inter_key, p->root,
	    p->root_key);
	p->other = pki_make_ca("fleet-root", p->other_key, NULL, NULL);
	if (p->root == NULL || p->inter == NULL || p->other == NULL)
		return -1;
	list[0] = p->root;
	if (pki_write_certs(p->root_pem, list) != 0)
		return -1;
	list[0] = p->inter;
	if (pki_write_certs(p->inter_pem, list) != 0)
		return -1;
	list[0] = p->other;
	if (pki_write_certs(p->other_pem, list) != 0)
		return -1;
	list[0] = p->other;
	list[1] = p->root;
	if (pki_write_certs(p->both_pem, list) != 0)
		return -1;
	if ((p->spki = pki_spki(p->leaf_key, &p->spki_len)) == NULL)
		return -1;
	if (certcheck_trust_load(&p->trust, p->root_pem, p->inter_pem) != 0)
		return -1;
	*state = p;
	return 0;
}

static int
teardown(void **state)
{
	struct pki *p = *state;

	certcheck_trust_free(p->trust);
	OPENSSL_free(p->spki);
	X509_free(p->root);
	X509_free(p->inter);
	X509_free(p->other);
	EVP_PKEY_free(p->root_key);
	EVP_PKEY_free(p->inter_key);
	EVP_PKEY_free(p->other_key);
	EVP_PKEY_free(p->leaf_key);
	EVP_PKEY_free(p->stray_key);
	unlink(p->root_pem);
	unlink(p->inter_pem);
	unlink(p->other_pem);
	unlink(p->both_pem);
	rmdir(p->dir);
	free(p);
	return 0;
}

/* The device certificate the station expects; tests change one field. */
static struct pki_opts
good_leaf(struct pki *p)
{
	struct pki_opts o = {
		.cn = "imx8-SN0042", .key = p->leaf_key, .issuer = p->inter,
		.issuer_key = p->inter_key,
		.ku = "critical,digitalSignature",
		.eku = "critical,clientAuth",
		.not_before = -60, .not_after = 86400L * 30, .serial = 77,
	};

	return o;
}

/* Issue o, check it; return the code and leave the reason in why. */
static int
check(struct pki *p, const struct certcheck_trust *t,
    const struct pki_opts *o, const char *cn, time_t now, char *why,
    size_t whysz)
{
	struct certcheck_expect want = {
		.cn = cn, .spki = p->spki, .spki_len = p->spki_len, .now = now,
	};
	X509 *x = pki_make_cert(o);
	uint8_t *der;
	size_t len;
	int rc;

	assert_non_null(x);
	der = pki_der(x, &len);
	assert_non_null(der);
	why[0] = '\0';
	rc = certcheck_verify(t, der, len, &want, why, whysz);
	OPENSSL_free(der);
	X509_free(x);
	return rc;
}

static void
test_good(void **state)
{
	struct pki *p = *state;
	struct pki_opts o = good_leaf(p);
	char why[256];

	assert_int_equal(check(p, p->trust, &o, "imx8-SN0042", 0, why,
	    sizeof(why)), 0);
	/* Directly under the root, without intermediates configured. */
	{
		struct certcheck_trust *t = NULL;

		assert_int_equal(certcheck_trust_load(&t, p->root_pem, NULL),
		    0);
		o.issuer = p->root;
		o.issuer_key = p->root_key;
		assert_int_equal(check(p, t, &o, "imx8-SN0042", 0, why,
		    sizeof(why)), 0);
		certcheck_trust_free(t);
	}
	/* A bundle with two roots: either will do. */
	{
		struct certcheck_trust *t = NULL;

		assert_int_equal(certcheck_trust_load(&t, p->both_pem,
		    p->inter_pem), 0);
		o = good_leaf(p);
		assert_int_equal(check(p, t, &o, "imx8-SN0042", 0, why,
		    sizeof(why)), 0);
		certcheck_trust_free(t);
	}
}

static void
test_chain(void **state)
{
	struct pki *p = *state;
	struct pki_opts o = good_leaf(p);
	struct certcheck_trust *t = NULL;
	char why[256];

	/* The intermediate is not configured. */
	assert_int_equal(certcheck_trust_load(&t, p->root_pem, NULL), 0);
	assert_int_equal(check(p, t, &o, "imx8-SN0042", 0, why, sizeof(why)),
	    KL_ERR_CERT_INVALID);
	assert_string_equal(why, "not issued by the fleet CA: unable to get "
	    "local issuer certificate");
	certcheck_trust_free(t);

	/* Signed by another CA that happens to have the same name. */
	o.issuer = p->other;
	o.issuer_key = p->other_key;
	assert_int_equal(check(p, p->trust, &o, "imx8-SN0042", 0, why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_true(strncmp(why, "not issued by the fleet CA: ", 28) == 0);

	/* Claims the intermediate as issuer but is signed by a stray key. */
	o = good_leaf(p);
	o.issuer_key = p->stray_key;
	assert_int_equal(check(p, p->trust, &o, "imx8-SN0042", 0, why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "not issued by the fleet CA: certificate "
	    "signature failure");

	/* Self-signed leaf. */
	o = good_leaf(p);
	o.issuer = NULL;
	o.issuer_key = NULL;
	assert_int_equal(check(p, p->trust, &o, "imx8-SN0042", 0, why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_true(strncmp(why, "not issued by the fleet CA: ", 28) == 0);

	/* The intermediate has expired by "now" (the leaf and root have
	 * not). */
	{
		struct pki_opts io = {
			.cn = "short-lived", .key = p->stray_key,
			.issuer = p->root, .issuer_key = p->root_key, .ca = 1,
			.ku = "critical,keyCertSign", .not_before = -60,
			.not_after = 86400L * 10,
		};
		X509 *inter2 = pki_make_cert(&io), *list[2] = { NULL, NULL };
		char path[128];

		assert_non_null(inter2);
		snprintf(path, sizeof(path), "%s/inter2.pem", p->dir);
		list[0] = inter2;
		assert_int_equal(pki_write_certs(path, list), 0);
		assert_int_equal(certcheck_trust_load(&t, p->root_pem, path),
		    0);
		o = good_leaf(p);
		o.issuer = inter2;
		o.issuer_key = p->stray_key;
		assert_int_equal(check(p, t, &o, "imx8-SN0042", 0, why,
		    sizeof(why)), 0);
		assert_int_equal(check(p, t, &o, "imx8-SN0042",
		    time(NULL) + 86400L * 20, why, sizeof(why)),
		    KL_ERR_CERT_INVALID);
		assert_string_equal(why, "not issued by the fleet CA: "
		    "certificate has expired (at depth 1)");
		certcheck_trust_free(t);
		X509_free(inter2);
		unlink(path);
	}
}

static void
test_leaf_fields(void **state)
{
	struct pki *p = *state;
	struct pki_opts o;
	char why[256];

	o = good_leaf(p);
	o.key = p->stray_key;
	assert_int_equal(check(p, p->trust, &o, "imx8-SN0042", 0, why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "public key differs from the board's key");

	o = good_leaf(p);
	o.cn = "imx8-SN0043";
	assert_int_equal(check(p, p->trust, &o, "imx8-SN0042", 0, why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "subject CN 'imx8-SN0043' is not the device "
	    "ID 'imx8-SN0042'");

	/* A prefix is not equal. */
	o = good_leaf(p);
	o.cn = "imx8-SN004";
	assert_int_equal(check(p, p->trust, &o, "imx8-SN0042", 0, why,
	    sizeof(why)), KL_ERR_CERT_INVALID);

	o = good_leaf(p);
	o.cn2 = "imx8-SN0042";
	assert_int_equal(check(p, p->trust, &o, "imx8-SN0042", 0, why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "subject has more than one CN");

	o = good_leaf(p);
	o.ca = 1;
	assert_int_equal(check(p, p->trust, &o, "imx8-SN0042", 0, why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "certificate is a CA (basicConstraints "
	    "CA:TRUE)");

	o = good_leaf(p);
	o.ku = NULL;
	assert_int_equal(check(p, p->trust, &o, "imx8-SN0042", 0, why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "keyUsage extension missing");

	o = good_leaf(p);
	o.ku = "critical,keyEncipherment";
	assert_int_equal(check(p, p->trust, &o, "imx8-SN0042", 0, why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "keyUsage lacks digitalSignature");

	o = good_leaf(p);
	o.eku = NULL;
	assert_int_equal(check(p, p->trust, &o, "imx8-SN0042", 0, why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "extendedKeyUsage extension missing");

	o = good_leaf(p);
	o.eku = "serverAuth";
	assert_int_equal(check(p, p->trust, &o, "imx8-SN0042", 0, why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "extendedKeyUsage lacks clientAuth");

	/* Not yet valid and expired, against the caller's clock. */
	o = good_leaf(p);
	assert_int_equal(check(p, p->trust, &o, "imx8-SN0042",
	    time(NULL) - 3600, why, sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "certificate is not yet valid");
	assert_int_equal(check(p, p->trust, &o, "imx8-SN0042",
	    time(NULL) + 86400L * 31, why, sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "certificate has expired");
	assert_int_equal(check(p, p->trust, &o, "imx8-SN0042",
	    time(NULL) + 86400L * 29, why, sizeof(why)), 0);
}

static void
test_garbage(void **state)
{
	struct pki *p = *state;
	struct pki_opts o = good_leaf(p);
	struct certcheck_expect want = {
		.cn = "imx8-SN0042", .spki = p->spki, .spki_len = p->spki_len,
	};
	X509 *x = pki_make_cert(&o);
	uint8_t *der, *copy;
	char why[256], fp[65], serial[64];
	size_t len, i;
	int rc;

	assert_non_null(x);
	der = pki_der(x, &len);
	assert_non_null(der);
	copy = malloc(len + 1);
	assert_non_null(copy);

	/* Every truncation is refused as unparseable. */
	for (i = 0; i < len; i++) {
		memcpy(copy, der, i);
		assert_int_equal(certcheck_verify(p->trust, copy, i, &want,
		    why, sizeof(why)), KL_ERR_INVALID);
	}
	/* Trailing garbage too. */
	memcpy(copy, der, len);
	copy[len] = 0;
	assert_int_equal(certcheck_verify(p->trust, copy, len + 1, &want, why,
	    sizeof(why)), KL_ERR_INVALID);
	assert_string_equal(why, "not a DER X.509 certificate");

	/* Every bit flip fails one way or another, never passes. */
	for (i = 0; i < len; i++) {
		memcpy(copy, der, len);
		copy[i] ^= (uint8_t)(1u << (i % 8));
		rc = certcheck_verify(p->trust, copy, len, &want, why,
		    sizeof(why));
		if (rc != KL_ERR_INVALID && rc != KL_ERR_CERT_INVALID)
			fail_msg("flip at %zu: rc %d (%s)", i, rc, why);
	}

	/* Fingerprint = SHA-256 of the DER; serial in hex. */
	{
		unsigned char md[32];
		char want_fp[65];
		unsigned int mdlen = 0;

		assert_int_equal(EVP_Digest(der, len, md, &mdlen,
		    EVP_sha256(), NULL), 1);
		for (i = 0; i < 32; i++)
			snprintf(want_fp + 2 * i, 3, "%02x", md[i]);
		assert_int_equal(certcheck_fingerprint(der, len, fp), 0);
		assert_string_equal(fp, want_fp);
	}
	assert_int_equal(certcheck_serial_hex(der, len, serial,
	    sizeof(serial)), 0);
	assert_string_equal(serial, "4d");	/* 77 */
	assert_int_equal(certcheck_serial_hex(der, len, serial, 2),
	    KL_ERR_INVALID);
	assert_int_equal(certcheck_fingerprint(der, len - 1, fp),
	    KL_ERR_INVALID);
	assert_int_equal(certcheck_serial_hex(der, 10, serial,
	    sizeof(serial)), KL_ERR_INVALID);

	free(copy);
	OPENSSL_free(der);
	X509_free(x);
}

static void
test_trust_files(void **state)
{
	struct pki *p = *state;
	struct certcheck_trust *t = NULL;
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/nope.pem", p->dir);
	assert_int_equal(certcheck_trust_load(&t, path, NULL), KL_ERR_IO);
	assert_null(t);

	/* Empty file and a file with a broken PEM block. */
	snprintf(path, sizeof(path), "%s/bad.pem", p->dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	assert_int_equal(certcheck_trust_load(&t, path, NULL), KL_ERR_INVALID);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
	    f);
	fclose(f);
	assert_int_equal(certcheck_trust_load(&t, path, NULL), KL_ERR_INVALID);
	/* A good root with bad intermediates fails as a whole. */
	assert_int_equal(certcheck_trust_load(&t, p->root_pem, path),
	    KL_ERR_INVALID);
	assert_null(t);
	unlink(path);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_chain),
		cmocka_unit_test(test_leaf_fields),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_trust_files),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
