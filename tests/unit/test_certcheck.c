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

#include <openssl/err.h>

#include "station/ca/certcheck.h"
#include "common/err.h"
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
		/* A leaf for 30 days under a CA for 10 is refused today... */
		assert_int_equal(check(p, t, &o, "imx8-SN0042", 0, why,
		    sizeof(why)), KL_ERR_CERT_INVALID);
		assert_string_equal(why, "certificate outlives its issuer "
		    "'short-lived' (notAfter after the issuer's)");
		/* ...and, the chain being checked first, named for the
		 * expired CA once that has run out. */
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

/* ---- start-up checks of the configured roots and intermediates ----------
 *
 * Each case builds a fleet root, perhaps an intermediate, and a good device
 * certificate under them, then asks both questions: does start-up
 * (certcheck_trust_check) refuse this configuration, and does per-board
 * validation (certcheck_verify) refuse the device certificate?  The two
 * answers must be the same, and the expected one.
 */

/* The extensions of one CA certificate of a case; NULL leaves one out. */
struct ca_spec {
	const char *bc;		/* basicConstraints */
	const char *ku;		/* keyUsage */
	const char *eku;	/* extendedKeyUsage */
	long not_before, not_after;	/* seconds from now; 0/0 = usual */
};

#define CA_OK { "critical,CA:TRUE", "critical,keyCertSign,cRLSign", NULL, 0, 0 }

struct anchor_case {
	const char *name;
	struct ca_spec root;
	int with_inter;
	struct ca_spec inter;
	int inter_foreign;	/* the intermediate is signed by another root */
	int refused;		/* what both must answer */
	const char *words;	/* in the start-up reason, when refused */
};

static const struct anchor_case anchor_cases[] = {
	{ "good root", CA_OK, 0, CA_OK, 0, 0, NULL },
	{ "good root and intermediate", CA_OK, 1, CA_OK, 0, 0, NULL },
	/* The decision: a trust anchor without keyUsage is accepted (as
	 * `openssl req -x509` makes them), strict checking or not. */
	{ "root without keyUsage", { "critical,CA:TRUE", NULL, NULL, 0, 0 },
	    0, CA_OK, 0, 0, NULL },
	{ "root without keyUsage, with intermediate",
	    { "critical,CA:TRUE", NULL, NULL, 0, 0 }, 1, CA_OK, 0, 0, NULL },
	{ "root without keyUsage, with pathlen",
	    { "critical,CA:TRUE,pathlen:1", NULL, NULL, 0, 0 }, 1, CA_OK, 0, 0,
	    NULL },
	{ "root keyUsage without keyCertSign",
	    { "critical,CA:TRUE", "critical,cRLSign", NULL, 0, 0 }, 0, CA_OK,
	    0, 1, "keyCertSign" },
	{ "root without basicConstraints",
	    { NULL, NULL, NULL, 0, 0 }, 0, CA_OK, 0, 1, "CA" },
	{ "root with basicConstraints not critical",
	    { "CA:TRUE", "critical,keyCertSign", NULL, 0, 0 }, 0, CA_OK, 0, 1,
	    "critical" },
	{ "expired root", { "critical,CA:TRUE", "critical,keyCertSign", NULL,
	    -86400L * 20, -86400L * 10 }, 0, CA_OK, 0, 1, "expired" },
	{ "root not yet valid", { "critical,CA:TRUE", "critical,keyCertSign",
	    NULL, 86400L, 86400L * 10 }, 0, CA_OK, 0, 1, "not yet valid" },
	{ "root only for TLS servers", { "critical,CA:TRUE",
	    "critical,keyCertSign", "serverAuth", 0, 0 }, 0, CA_OK, 0, 1,
	    "TLS client" },
	/* Intermediates get no exception. */
	{ "intermediate without CA:TRUE", CA_OK, 1,
	    { "critical,CA:FALSE", "critical,keyCertSign", NULL, 0, 0 }, 0, 1,
	    "CA:TRUE" },
	{ "intermediate without keyUsage", CA_OK, 1,
	    { "critical,CA:TRUE", NULL, NULL, 0, 0 }, 0, 1, "key usage" },
	{ "intermediate keyUsage without keyCertSign", CA_OK, 1,
	    { "critical,CA:TRUE", "critical,digitalSignature", NULL, 0, 0 }, 0,
	    1, "keyCertSign" },
	{ "expired intermediate", CA_OK, 1, { "critical,CA:TRUE",
	    "critical,keyCertSign", NULL, -86400L * 20, -86400L * 10 }, 0, 1,
	    "expired" },
	{ "intermediate under another root", CA_OK, 1, CA_OK, 1, 1,
	    "local issuer" },
	{ "intermediate only for TLS servers", CA_OK, 1, { "critical,CA:TRUE",
	    "critical,keyCertSign", "serverAuth", 0, 0 }, 0, 1, "TLS client" },
	{ "intermediate for TLS clients", CA_OK, 1, { "critical,CA:TRUE",
	    "critical,keyCertSign", "clientAuth", 0, 0 }, 0, 0, NULL },
};

static X509 *
make_ca(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
    const struct ca_spec *c)
{
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	X509V3_CTX ctx;
	long nb = c->not_before, na = c->not_after;
	int ok = x != NULL && name != NULL;

	if (nb == 0 && na == 0) {
		nb = -3600;
		na = 86400L * 3650;
	}
	ok = ok && X509_set_version(x, 2);
	ok = ok && ASN1_INTEGER_set(X509_get_serialNumber(x), 5);
	ok = ok && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)cn, -1, -1, 0);
	ok = ok && X509_set_subject_name(x, name);
	ok = ok && X509_set_issuer_name(x, issuer != NULL ?
	    X509_get_subject_name(issuer) : name);
	ok = ok && X509_gmtime_adj(X509_getm_notBefore(x), nb);
	ok = ok && X509_gmtime_adj(X509_getm_notAfter(x), na);
	ok = ok && X509_set_pubkey(x, key);
	if (ok) {
		X509V3_set_ctx(&ctx, issuer != NULL ? issuer : x, x, NULL,
		    NULL, 0);
		ok = pki_add_ext(x, &ctx, NID_subject_key_identifier, "hash");
		ok = ok && pki_add_ext(x, &ctx, NID_authority_key_identifier,
		    "keyid:always");
		if (c->bc != NULL)
			ok = ok && pki_add_ext(x, &ctx, NID_basic_constraints,
			    c->bc);
		if (c->ku != NULL)
			ok = ok && pki_add_ext(x, &ctx, NID_key_usage, c->ku);
		if (c->eku != NULL)
			ok = ok && pki_add_ext(x, &ctx, NID_ext_key_usage,
			    c->eku);
	}
	ok = ok && X509_sign(x, issuer_key != NULL ? issuer_key : key,
	    EVP_sha256()) > 0;
	X509_NAME_free(name);
	if (!ok) {
		X509_free(x);
		return NULL;
	}
	return x;
}

static void
run_anchor_case(struct pki *p, const struct anchor_case *c)
{
	X509 *root, *inter = NULL, *list[2] = { NULL, NULL };
	struct certcheck_trust *t = NULL;
	struct pki_opts o = good_leaf(p);
	char why_start[512] = "", why_board[256] = "";
	int r_start, r_board;

	root = make_ca("case-root", p->root_key, NULL, NULL, &c->root);
	assert_non_null(root);
	list[0] = root;
	assert_int_equal(pki_write_certs(p->root_pem, list), 0);
	if (c->with_inter) {
		inter = make_ca("case-intermediate", p->inter_key,
		    c->inter_foreign ? p->other : root,
		    c->inter_foreign ? p->other_key : p->root_key, &c->inter);
		assert_non_null(inter);
		list[0] = inter;
		assert_int_equal(pki_write_certs(p->inter_pem, list), 0);
	}
	assert_int_equal(certcheck_trust_load(&t, p->root_pem,
	    c->with_inter ? p->inter_pem : NULL), 0);
	r_start = certcheck_trust_check(t, 0, why_start, sizeof(why_start));
	o.issuer = c->with_inter ? inter : root;
	o.issuer_key = c->with_inter ? p->inter_key : p->root_key;
	r_board = check(p, t, &o, "imx8-SN0042", 0, why_board,
	    sizeof(why_board));
	print_message("%-45s start-up: %s%s%s | board: %s%s%s\n", c->name,
	    r_start ? "refused (" : "accepted", why_start,
	    r_start ? ")" : "", r_board ? "refused (" : "accepted",
	    why_board, r_board ? ")" : "");
	if ((r_start != 0) != (r_board != 0))
		fail_msg("%s: start-up and per-board validation disagree",
		    c->name);
	if ((r_start != 0) != c->refused)
		fail_msg("%s: %s, expected %s", c->name,
		    r_start ? "refused" : "accepted",
		    c->refused ? "refused" : "accepted");
	if (r_start != 0) {
		assert_int_equal(r_start, KL_ERR_CERT_INVALID);
		assert_int_equal(r_board, KL_ERR_CERT_INVALID);
		if (c->words != NULL && strstr(why_start, c->words) == NULL)
			fail_msg("%s: reason \"%s\" lacks \"%s\"", c->name,
			    why_start, c->words);
		if (strstr(why_start, strstr(c->name, "intermediate")
		    != NULL ? "intermediate 'case-intermediate'" :
		    "fleet root 'case-root'") == NULL)
			fail_msg("%s: reason \"%s\" does not name the "
			    "certificate", c->name, why_start);
	}
	certcheck_trust_free(t);
	X509_free(inter);
	X509_free(root);
}

static void
test_trust_check_agrees(void **state)
{
	struct pki *p = *state;
	size_t i;

	for (i = 0; i < sizeof(anchor_cases) / sizeof(anchor_cases[0]); i++)
		run_anchor_case(p, &anchor_cases[i]);
}

/* The fixture's own root and intermediate pass. */
static void
test_trust_check_good(void **state)
{
	struct pki *p = *state;
	char why[256] = "";

	assert_int_equal(certcheck_trust_check(p->trust, 0, why, sizeof(why)),
	    0);
	assert_int_equal(certcheck_trust_check(NULL, 0, why, sizeof(why)),
	    KL_ERR_INVALID);
}

/*
 * Issue o, then change it the way a CA that copies a CSR or adds its own
 * ideas would: more subject entries (after the CN; "O=..."), one
 * extension added or replaced (nid with value) or removed (value NULL);
 * re-signed by the issuer.  Check it against t; the code, why filled.
 */
static int
check_changed(struct pki *p, const struct certcheck_trust *t,
    const struct pki_opts *o, const char *const *subj, int nid,
    const char *value, char *why, size_t whysz)
{
	struct certcheck_expect want = {
		.cn = o->cn, .spki = p->spki, .spki_len = p->spki_len,
	};
	X509 *x = pki_make_cert(o);
	X509_NAME *name;
	X509_EXTENSION *e;
	X509V3_CTX v3;
	uint8_t *der;
	size_t len;
	char type[16];
	const char *eq;
	int i, rc;

	assert_non_null(x);
	for (; subj != NULL && *subj != NULL; subj++) {
		assert_non_null(eq = strchr(*subj, '='));
		snprintf(type, sizeof(type), "%.*s", (int)(eq - *subj), *subj);
		name = X509_get_subject_name(x);
		assert_true(X509_NAME_add_entry_by_txt(name, type,
		    MBSTRING_ASC, (const unsigned char *)eq + 1, -1, -1, 0));
	}
	if (nid != NID_undef) {
		while ((i = X509_get_ext_by_NID(x, nid, -1)) >= 0)
			X509_EXTENSION_free(X509_delete_ext(x, i));
		if (value != NULL) {
			X509V3_set_ctx(&v3, o->issuer, x, NULL, NULL, 0);
			assert_non_null(e = X509V3_EXT_conf_nid(NULL, &v3, nid,
			    value));
			assert_true(X509_add_ext(x, e, -1));
			X509_EXTENSION_free(e);
		}
	}
	assert_true(X509_sign(x, o->issuer_key, EVP_sha256()) > 0);
	der = pki_der(x, &len);
	assert_non_null(der);
	why[0] = '\0';
	rc = certcheck_verify(t, der, len, &want, why, whysz);
	OPENSSL_free(der);
	X509_free(x);
	return rc;
}

/* What a hostile board asked a copying CA for, and what a CA may add on
 * its own: each refused, with its reason. */
static void
test_profile_refused(void **state)
{
	struct pki *p = *state;
	struct pki_opts o = good_leaf(p);
	static const char *const org[] = { "O=Fleet Admins", NULL };
	static const char *const ou[] = { "OU=ops", NULL };
	static const char *const both[] = { "O=Fleet Admins", "OU=ops", NULL };
	char why[256];

	/* The profile as it is: passes, with or without basicConstraints,
	 * with a non-critical extension the profile does not name. */
	assert_int_equal(check_changed(p, p->trust, &o, NULL, NID_undef, NULL,
	    why, sizeof(why)), 0);
	assert_int_equal(check_changed(p, p->trust, &o, NULL,
	    NID_basic_constraints, NULL, why, sizeof(why)), 0);
	assert_int_equal(check_changed(p, p->trust, &o, NULL,
	    NID_basic_constraints, "CA:FALSE", why, sizeof(why)), 0);
	assert_int_equal(check_changed(p, p->trust, &o, NULL,
	    NID_crl_distribution_points, "URI:http://crl.example.com/f.crl",
	    why, sizeof(why)), 0);

	assert_int_equal(check_changed(p, p->trust, &o, org, NID_undef, NULL,
	    why, sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "subject has 'O=Fleet Admins', which the "
	    "fleet profile does not name");
	assert_int_equal(check_changed(p, p->trust, &o, ou, NID_undef, NULL,
	    why, sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "subject has 'OU=ops', which the fleet "
	    "profile does not name");
	assert_int_equal(check_changed(p, p->trust, &o, both,
	    NID_subject_alt_name, "DNS:gateway.ota.example.com", why,
	    sizeof(why)), KL_ERR_CERT_INVALID);

	assert_int_equal(check_changed(p, p->trust, &o, NULL,
	    NID_subject_alt_name, "DNS:gateway.ota.example.com", why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "certificate has a subjectAltName (the fleet "
	    "profile has none)");

	assert_int_equal(check_changed(p, p->trust, &o, NULL,
	    NID_ext_key_usage, "critical,clientAuth,serverAuth", why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "extendedKeyUsage allows more than "
	    "clientAuth (TLS Web Server Authentication)");
	assert_int_equal(check_changed(p, p->trust, &o, NULL,
	    NID_ext_key_usage, "clientAuth,1.3.6.1.4.1.99999.1", why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "extendedKeyUsage allows more than "
	    "clientAuth (1.3.6.1.4.1.99999.1)");
	assert_int_equal(check_changed(p, p->trust, &o, NULL,
	    NID_ext_key_usage, "clientAuth,anyExtendedKeyUsage", why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	/* Non-critical clientAuth alone is the profile (CFSSL, Go). */
	assert_int_equal(check_changed(p, p->trust, &o, NULL,
	    NID_ext_key_usage, "clientAuth", why, sizeof(why)), 0);

	assert_int_equal(check_changed(p, p->trust, &o, NULL, NID_key_usage,
	    "critical,digitalSignature,keyEncipherment", why, sizeof(why)),
	    KL_ERR_CERT_INVALID);
	assert_string_equal(why, "keyUsage allows more than digitalSignature "
	    "(bits 0xa0)");
	assert_int_equal(check_changed(p, p->trust, &o, NULL, NID_key_usage,
	    "critical,digitalSignature,keyCertSign", why, sizeof(why)),
	    KL_ERR_CERT_INVALID);
	assert_int_equal(check_changed(p, p->trust, &o, NULL, NID_key_usage,
	    "critical,nonRepudiation", why, sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "keyUsage lacks digitalSignature");
	assert_int_equal(check_changed(p, p->trust, &o, NULL, NID_key_usage,
	    "digitalSignature", why, sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "keyUsage is not critical");

	assert_int_equal(check_changed(p, p->trust, &o, NULL,
	    NID_basic_constraints, "CA:TRUE", why, sizeof(why)),
	    KL_ERR_CERT_INVALID);
	assert_string_equal(why, "certificate is a CA (basicConstraints "
	    "CA:TRUE)");

	assert_int_equal(check_changed(p, p->trust, &o, NULL,
	    NID_subject_key_identifier, "critical,hash", why, sizeof(why)),
	    KL_ERR_CERT_INVALID);
	assert_string_equal(why, "unexpected critical extension X509v3 "
	    "Subject Key Identifier");
}

/* A trust like the fixture's, with its own profile (the anchor cases
 * rewrite the fixture's files: write them again first). */
static struct certcheck_trust *
profile_trust(struct pki *p, const struct certcheck_profile *prof)
{
	struct certcheck_trust *t = NULL;
	X509 *list[2] = { NULL, NULL };
	char why[256] = "";

	list[0] = p->root;
	assert_int_equal(pki_write_certs(p->root_pem, list), 0);
	list[0] = p->inter;
	assert_int_equal(pki_write_certs(p->inter_pem, list), 0);
	assert_int_equal(certcheck_trust_load(&t, p->root_pem, p->inter_pem),
	    0);
	assert_int_equal(certcheck_trust_set_profile(t, prof, why,
	    sizeof(why)), 0);
	return t;
}

/* Lifetime against the maximum, and inside the issuer's validity. */
static void
test_profile_lifetime(void **state)
{
	struct pki *p = *state;
	struct pki_opts o = good_leaf(p);
	struct certcheck_profile prof = { .max_validity_days = 20 };
	struct certcheck_trust *t = NULL;
	char why[256];

	/* Default maximum: 3650 days (and an hour of backdating). */
	o.not_before = -3000;
	o.not_after = 86400L * 3650 - 3600;
	o.issuer = p->root;
	o.issuer_key = p->root_key;
	assert_int_equal(check(p, p->trust, &o, o.cn, 0, why, sizeof(why)),
	    0);
	o.not_after = 86400L * 3651;
	assert_int_equal(check(p, p->trust, &o, o.cn, 0, why, sizeof(why)),
	    KL_ERR_CERT_INVALID);
	assert_string_equal(why, "lifetime of 3651 days is longer than the "
	    "maximum of 3650 days");

	/* A configured maximum. */
	t = profile_trust(p, &prof);
	o = good_leaf(p);	/* 30 days */
	assert_int_equal(check(p, t, &o, o.cn, 0, why, sizeof(why)),
	    KL_ERR_CERT_INVALID);
	assert_string_equal(why, "lifetime of 30 days is longer than the "
	    "maximum of 20 days");
	o.not_after = 86400L * 20;
	assert_int_equal(check(p, t, &o, o.cn, 0, why, sizeof(why)), 0);
	certcheck_trust_free(t);

	/* Beyond the issuer: after its notAfter, before its notBefore. */
	o = good_leaf(p);
	o.not_after = 86400L * 3650 + 600;
	assert_int_equal(check(p, p->trust, &o, o.cn, 0, why, sizeof(why)),
	    KL_ERR_CERT_INVALID);
	assert_string_equal(why, "certificate outlives its issuer "
	    "'cm-intermediate' (notAfter after the issuer's)");
	o = good_leaf(p);
	o.not_before = -7200;
	assert_int_equal(check(p, p->trust, &o, o.cn, 0, why, sizeof(why)),
	    KL_ERR_CERT_INVALID);
	assert_string_equal(why, "certificate starts before its issuer "
	    "'cm-intermediate' (notBefore before the issuer's)");
}

/* [ca] subject_extra: fixed entries every certificate carries. */
static void
test_profile_subject_extra(void **state)
{
	struct pki *p = *state;
	struct pki_opts o = good_leaf(p);
	struct certcheck_profile prof = {
		.subject_extra = "O=Example Fleet, OU = devices",
	};
	static const char *const fleet[] = { "O=Example Fleet", "OU=devices",
	    NULL };
	static const char *const o_only[] = { "O=Example Fleet", NULL };
	static const char *const plus[] = { "O=Example Fleet", "OU=devices",
	    "OU=ops", NULL };
	static const char *const wrong[] = { "O=Fleet Admins", "OU=devices",
	    NULL };
	static const char *const bad[] = { "CN=x", "Q=y", "O=", "O",
	    "O=a,,", "1.2.3.4.5=z", "C=Germany", "basicConstraints=x",
	    "subjectAltName=DNS:x", "O=a,O=b", "O=\xff\xfe", NULL };
	struct certcheck_trust *t = NULL;
	const char *const *b;
	char why[256];

	t = profile_trust(p, &prof);
	assert_int_equal(check_changed(p, t, &o, fleet, NID_undef, NULL, why,
	    sizeof(why)), 0);
	assert_int_equal(check_changed(p, t, &o, NULL, NID_undef, NULL, why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "subject lacks 'O=Example Fleet' of the "
	    "fleet profile");
	assert_int_equal(check_changed(p, t, &o, o_only, NID_undef, NULL, why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "subject lacks 'OU=devices' of the fleet "
	    "profile");
	assert_int_equal(check_changed(p, t, &o, plus, NID_undef, NULL, why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "subject has 'OU=ops', which the fleet "
	    "profile does not name");
	assert_int_equal(check_changed(p, t, &o, wrong, NID_undef, NULL, why,
	    sizeof(why)), KL_ERR_CERT_INVALID);
	assert_string_equal(why, "subject has 'O=Fleet Admins', which the "
	    "fleet profile does not name");

	/* Broken values are refused and leave the profile as it was. */
	for (b = bad; *b != NULL; b++) {
		struct certcheck_profile bp = { .subject_extra = *b };

		assert_int_equal(certcheck_trust_set_profile(t, &bp, why,
		    sizeof(why)), KL_ERR_CONFIG);
		assert_non_null(strstr(why, "subject_extra"));
	}
	{
		struct certcheck_profile bp = { .max_validity_days = 36501 };

		assert_int_equal(certcheck_trust_set_profile(t, &bp, why,
		    sizeof(why)), KL_ERR_CONFIG);
	}
	assert_int_equal(check_changed(p, t, &o, fleet, NID_undef, NULL, why,
	    sizeof(why)), 0);
	certcheck_trust_free(t);
}

static int
csr_ours_accepts(const uint8_t *csr, size_t n, const uint8_t *spki,
    size_t spki_len, char *why, size_t whysz)
{
	EVP_PKEY *pk = NULL;
	int r = certcheck_csr_p256(csr, n, spki, spki_len, &pk, why, whysz);

	assert_true(r == 0 || r == KL_ERR_INVALID);
	assert_true((r == 0) == (pk != NULL));
	EVP_PKEY_free(pk);
	return r == 0;
}

/* The P-256 CSR check the engine makes without OpenSSL's decoders: it
 * takes what OpenSSL takes for this key and nothing OpenSSL refuses. */
static void
test_csr_p256(void **state)
{
	EVP_PKEY *key = pki_ec_key(), *other = pki_ec_key(), *rsa;
	uint8_t *spki, *ospki, *csr, *ocsr, *rspki, *buf;
	size_t spki_len, ospki_len, n, on, rn, i;
	char why[200];
	int x, ours, theirs, accepted = 0;
	EVP_PKEY *pk = NULL;
	unsigned char *pub = NULL;

	(void)state;
	assert_non_null(key);
	assert_non_null(other);
	spki = pki_spki(key, &spki_len);
	ospki = pki_spki(other, &ospki_len);
	csr = pki_csr(key, "keyline-virtual-KL000001", &n);
	ocsr = pki_csr(other, "keyline-virtual-KL000001", &on);
	assert_non_null(spki);
	assert_non_null(csr);
	assert_int_equal(spki_len, CERTCHECK_SPKI_P256_LEN);
	assert_true(certcheck_spki_is_p256(spki, spki_len));

	/* The good one, and the key it gives back is the board's. */
	why[0] = '\0';
	x = certcheck_csr_p256(csr, n, spki, spki_len, &pk, why, sizeof(why));
	if (x != 0)
		print_error("refused: %s\n", why);
	assert_int_equal(x, 0);
	assert_non_null(pk);
	assert_int_equal(i2d_PUBKEY(pk, &pub), (int)spki_len);
	assert_memory_equal(pub, spki, spki_len);
	OPENSSL_free(pub);
	EVP_PKEY_free(pk);

	/* Another key's valid CSR. */
	assert_false(csr_ours_accepts(ocsr, on, spki, spki_len, why,
	    sizeof(why)));
	assert_string_equal(why, "is not for the key it just generated");
	buf = malloc(n);
	assert_non_null(buf);
	/* A key that is not a point on the curve: the SPKI's last byte
	 * changed, in the CSR too. */
	{
		uint8_t bad[CERTCHECK_SPKI_P256_LEN];
		uint8_t *at;

		memcpy(bad, spki, spki_len);
		bad[spki_len - 1] ^= 0x01;
		memcpy(buf, csr, n);
		at = memmem(buf, n, spki, spki_len);
		assert_non_null(at);
		at[spki_len - 1] ^= 0x01;
		assert_false(csr_ours_accepts(buf, n, bad, spki_len, why,
		    sizeof(why)));
		assert_string_equal(why, "key is not a point on P-256");
	}
	memcpy(buf, csr, n);
	/* Every byte flipped in turn, two ways: never accepted, and never
	 * accepted where OpenSSL refuses. */
	for (i = 0; i < n; i++) {
		for (x = 0x01; x <= 0x80; x <<= 7) {
			buf[i] ^= (uint8_t)x;
			ours = csr_ours_accepts(buf, n, spki, spki_len, why,
			    sizeof(why));
			theirs = pki_csr_openssl_accepts(buf, n, spki, spki_len);
			assert_false(ours && !theirs);
			accepted += ours;
			buf[i] ^= (uint8_t)x;
		}
	}
	/* The signature covers every byte but its own: nothing passes. */
	assert_int_equal(accepted, 0);
	/* Truncated anywhere, or with a byte after it. */
	for (i = 0; i < n; i++)
		assert_false(csr_ours_accepts(csr, i, spki, spki_len, why,
		    sizeof(why)));
	buf = realloc(buf, n + 1);
	assert_non_null(buf);
	memcpy(buf, csr, n);
	buf[n] = 0;
	assert_false(csr_ours_accepts(buf, n + 1, spki, spki_len, why,
	    sizeof(why)));
	assert_string_equal(why, "does not parse: not one DER SEQUENCE");
	/* The signature's last byte changed: parses, does not verify. */
	memcpy(buf, csr, n);
	buf[n - 1] ^= 0x01;
	ours = csr_ours_accepts(buf, n, spki, spki_len, why, sizeof(why));
	assert_false(ours);
	/* An RSA key is not taken by this check at all. */
	rsa = EVP_RSA_gen(2048);
	assert_non_null(rsa);
	rspki = pki_spki(rsa, &rn);
	assert_non_null(rspki);
	assert_false(certcheck_spki_is_p256(rspki, rn));
	assert_false(csr_ours_accepts(csr, n, rspki, rn, why, sizeof(why)));
	assert_string_equal(why, "key is not a P-256 key");

	free(buf);
	OPENSSL_free(rspki);
	OPENSSL_free(spki);
	OPENSSL_free(ospki);
	OPENSSL_free(csr);
	OPENSSL_free(ocsr);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(key);
	EVP_PKEY_free(other);
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
		cmocka_unit_test(test_trust_check_good),
		cmocka_unit_test(test_trust_check_agrees),
		cmocka_unit_test(test_profile_refused),
		cmocka_unit_test(test_profile_lifetime),
		cmocka_unit_test(test_profile_subject_extra),
		cmocka_unit_test(test_csr_p256),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
