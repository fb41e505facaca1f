/*
 * pki_util.h: small certificate factory for unit tests (header only, so each
 * test links just what its Makefile line names).
 *
 * Builds real keys and certificates with OpenSSL; assertions stay in the
 * tests.  Functions return NULL / -1 on failure.
 */
#ifndef KL_TEST_PKI_UTIL_H
#define KL_TEST_PKI_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

struct pki_opts {
	const char *cn;
	const char *cn2;	/* a second CN, or NULL */
	EVP_PKEY *key;		/* subject public key */
	X509 *issuer;		/* NULL = self-signed */
	EVP_PKEY *issuer_key;	/* NULL = key */
	int ca;
	const char *ku;		/* "critical,digitalSignature", NULL = none */
	const char *eku;	/* "critical,clientAuth", NULL = none */
	long not_before;	/* seconds from now */
	long not_after;
	long serial;
};

static inline EVP_PKEY *
pki_ec_key(void)
{
	return EVP_EC_gen("P-256");
}

static inline int
pki_add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *e;
	int ok;

	if ((e = X509V3_EXT_conf_nid(NULL, ctx, nid, value)) == NULL)
		return 0;
	ok = X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	return ok;
}

static inline X509 *
pki_make_cert(const struct pki_opts *o)
{
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	X509V3_CTX ctx;
	EVP_PKEY *signer = o->issuer_key != NULL ? o->issuer_key : o->key;
	int ok = x != NULL && name != NULL;

	ok = ok && X509_set_version(x, 2);
	ok = ok && ASN1_INTEGER_set(X509_get_serialNumber(x),
	    o->serial != 0 ? o->serial : 1);
	ok = ok && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)o->cn, -1, -1, 0);
	if (o->cn2 != NULL)
		ok = ok && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
		    (const unsigned char *)o->cn2, -1, -1, 0);
	ok = ok && X509_set_subject_name(x, name);
	ok = ok && X509_set_issuer_name(x, o->issuer != NULL ?
	    X509_get_subject_name(o->issuer) : name);
	ok = ok && X509_gmtime_adj(X509_getm_notBefore(x), o->not_before);
	ok = ok && X509_gmtime_adj(X509_getm_notAfter(x),
	    o->not_after != 0 ? o->not_after : 86400L * 365);
	ok = ok && X509_set_pubkey(x, o->key);
	if (ok) {
		X509V3_set_ctx(&ctx, o->issuer != NULL ? o->issuer : x, x,
		    NULL, NULL, 0);
		ok = pki_add_ext(x, &ctx, NID_basic_constraints,
		    o->ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
		ok = ok && pki_add_ext(x, &ctx, NID_subject_key_identifier,
		    "hash");
		ok = ok && pki_add_ext(x, &ctx, NID_authority_key_identifier,
		    "keyid:always");
		if (o->ku != NULL)
			ok = ok && pki_add_ext(x, &ctx, NID_key_usage, o->ku);
		if (o->eku != NULL)
			ok = ok && pki_add_ext(x, &ctx, NID_ext_key_usage,
			    o->eku);
	}
	ok = ok && X509_sign(x, signer, EVP_sha256()) > 0;
	X509_NAME_free(name);
	if (!ok) {
		X509_free(x);
		return NULL;
	}
	return x;
}

/* A CA certificate: self-signed root when issuer is NULL. */
static inline X509 *
pki_make_ca(const char *cn, EVP_PKEY *key, X509 *issuer,
    EVP_PKEY *issuer_key)
{
	struct pki_opts o = {
		.cn = cn, .key = key, .issuer = issuer,
		.issuer_key = issuer_key, .ca = 1,
		.ku = "critical,keyCertSign,cRLSign",
		.not_before = -3600, .not_after = 86400L * 3650,
	};

	return pki_make_cert(&o);
}

/* DER of a certificate; caller OPENSSL_free()s. */
static inline uint8_t *
pki_der(X509 *x, size_t *len)
{
	unsigned char *der = NULL;
	int n = i2d_X509(x, &der);

	if (n <= 0)
		return NULL;
	*len = (size_t)n;
	return der;
}

/* DER SubjectPublicKeyInfo; caller OPENSSL_free()s. */
static inline uint8_t *
pki_spki(EVP_PKEY *k, size_t *len)
{
	unsigned char *der = NULL;
	int n = i2d_PUBKEY(k, &der);

	if (n <= 0)
		return NULL;
	*len = (size_t)n;
	return der;
}

/* Write certificates (NULL-terminated list) to path as PEM. */
static inline int
pki_write_certs(const char *path, X509 *const *certs)
{
	FILE *f = fopen(path, "w");
	int ok = f != NULL;

	for (; ok && *certs != NULL; certs++)
		ok = PEM_write_X509(f, *certs);
	if (f != NULL && fclose(f) != 0)
		ok = 0;
	return ok ? 0 : -1;
}

static inline int
pki_write_key(const char *path, EVP_PKEY *k)
{
	FILE *f = fopen(path, "w");
	int ok = f != NULL &&
	    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);

	if (f != NULL && fclose(f) != 0)
		ok = 0;
	return ok ? 0 : -1;
}

/* A PKCS#10 request for key with subject CN=cn; DER, OPENSSL_free(). */
static inline uint8_t *
pki_csr(EVP_PKEY *key, const char *cn, size_t *len)
{
	X509_REQ *req = X509_REQ_new();
	X509_NAME *name = X509_NAME_new();
	unsigned char *der = NULL;
	int n = -1, ok = req != NULL && name != NULL;

	ok = ok && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)cn, -1, -1, 0);
	ok = ok && X509_REQ_set_subject_name(req, name);
	ok = ok && X509_REQ_set_pubkey(req, key);
	ok = ok && X509_REQ_sign(req, key, EVP_sha256()) > 0;
	if (ok)
		n = i2d_X509_REQ(req, &der);
	X509_REQ_free(req);
	X509_NAME_free(name);
	if (n <= 0)
		return NULL;
	*len = (size_t)n;
	return der;
}

/*
 * OpenSSL's own reading of a CSR, the oracle test_certcheck and fuzz_csr
 * hold certcheck_csr_p256 against: csr (n bytes) parses whole, its public
 * key is spki byte for byte, and its signature verifies with that key.
 */
static inline int
pki_csr_openssl_accepts(const uint8_t *csr, size_t n, const uint8_t *spki,
    size_t spki_len)
{
	const unsigned char *q = csr;
	unsigned char *der = NULL;
	X509_REQ *req = d2i_X509_REQ(NULL, &q, (long)n);
	int len, ok;

	ok = req != NULL && q == csr + n &&
	    (len = i2d_X509_PUBKEY(X509_REQ_get_X509_PUBKEY(req), &der)) > 0 &&
	    (size_t)len == spki_len && memcmp(der, spki, spki_len) == 0 &&
	    X509_REQ_get0_pubkey(req) != NULL &&
	    X509_REQ_verify(req, X509_REQ_get0_pubkey(req)) == 1;
	OPENSSL_free(der);
	X509_REQ_free(req);
	ERR_clear_error();
	return ok;
}

#endif
