/*
 * certcheck.c: the station's own check of every certificate a CA returns
 * (see certcheck.h).
 *
 * A CA backend is trusted to sign, not to be right: a misconfigured or
 * remote CA could return a certificate for another key, another name, or a
 * CA certificate.  Nothing reaches a board before it passes here.  The
 * chain is verified with the TLS-client purpose, which is how the OTA
 * server will judge the certificate.
 */
#include "station/certcheck.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "station/err.h"
#include "station/log.h"

/* A device certificate is a few hundred bytes; anything near this is not
 * one. */
#define CERTCHECK_MAX_DER (64 * 1024)
#define CERTCHECK_MAX_PEM (1024 * 1024)
#define CERTCHECK_MAX_CERTS 64

struct certcheck_trust {
	X509_STORE *store;		/* the fleet root(s) */
	STACK_OF(X509) *untrusted;	/* intermediates; read-only after load */
};

/* Read every certificate of a PEM file into *out (at least one). */
static int
certcheck_read_pem(const char *path, STACK_OF(X509) **out)
{
	STACK_OF(X509) *sk = NULL;
	BIO *in = NULL, *mem = NULL;
	char chunk[4096];
	X509 *x = NULL;
	size_t total = 0;
	int n, r = KL_ERR_INTERNAL;

	if ((in = BIO_new_file(path, "r")) == NULL) {
		log_error("%s: cannot open", path);
		log_openssl(path);
		r = KL_ERR_IO;
		goto out;
	}
	/* Through a capped memory BIO so a huge file is refused early. */
	if ((mem = BIO_new(BIO_s_mem())) == NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	while ((n = BIO_read(in, chunk, sizeof(chunk))) > 0) {
		total += (size_t)n;
		if (total > CERTCHECK_MAX_PEM) {
			log_error("%s: larger than %d bytes", path,
			    CERTCHECK_MAX_PEM);
			r = KL_ERR_TOO_BIG;
			goto out;
		}
		if (BIO_write(mem, chunk, n) != n) {
			r = KL_ERR_NOMEM;
			goto out;
		}
	}
	if ((sk = sk_X509_new_null()) == NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	ERR_set_mark();
	while ((x = PEM_read_bio_X509(mem, NULL, NULL, NULL)) != NULL) {
		if (sk_X509_num(sk) >= CERTCHECK_MAX_CERTS ||
		    !sk_X509_push(sk, x)) {
			ERR_clear_last_mark();
			log_error("%s: too many certificates", path);
			r = KL_ERR_TOO_BIG;
			goto out;
		}
		x = NULL;
	}
	/* The loop ends on "no start line" at the end of the file; anything
	 * else is a broken certificate. */
	if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE) {
		ERR_clear_last_mark();
		log_error("%s: bad PEM certificate", path);
		log_openssl(path);
		r = KL_ERR_INVALID;
		goto out;
	}
	ERR_pop_to_mark();
	if (sk_X509_num(sk) == 0) {
		log_error("%s: no certificate", path);
		r = KL_ERR_INVALID;
		goto out;
	}
	*out = sk;
	sk = NULL;
	r = 0;
out:
	X509_free(x);
	sk_X509_pop_free(sk, X509_free);
	BIO_free(mem);
	BIO_free(in);
	return r;
}

int
certcheck_trust_load(struct certcheck_trust **out, const char *root_pem,
    const char *intermediates_pem)
{
	struct certcheck_trust *t = NULL;
	STACK_OF(X509) *roots = NULL;
	int i, r = KL_ERR_INTERNAL;

	if (out == NULL || root_pem == NULL)
		return KL_ERR_INVALID;
	if ((t = calloc(1, sizeof(*t))) == NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	if ((r = certcheck_read_pem(root_pem, &roots)) != 0)
		goto out;
	if ((t->store = X509_STORE_new()) == NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	for (i = 0; i < sk_X509_num(roots); i++) {
		if (!X509_STORE_add_cert(t->store, sk_X509_value(roots, i))) {
			log_openssl(root_pem);
			r = KL_ERR_CRYPTO;
			goto out;
		}
	}
	if (intermediates_pem != NULL && intermediates_pem[0] != '\0') {
		if ((r = certcheck_read_pem(intermediates_pem,
		    &t->untrusted)) != 0)
			goto out;
	}
	*out = t;
	t = NULL;
	r = 0;
out:
	sk_X509_pop_free(roots, X509_free);
	certcheck_trust_free(t);
	return r;
}

void
certcheck_trust_free(struct certcheck_trust *t)
{
	if (t == NULL)
		return;
	X509_STORE_free(t->store);
	sk_X509_pop_free(t->untrusted, X509_free);
	free(t);
}

/* Parse exactly len bytes of DER: no trailing data, no oversized input. */
static X509 *
certcheck_parse(const uint8_t *der, size_t len)
{
	const unsigned char *p = der;
	X509 *x;

	if (der == NULL || len == 0 || len > CERTCHECK_MAX_DER)
		return NULL;
	if ((x = d2i_X509(NULL, &p, (long)len)) == NULL) {
		ERR_clear_error();
		return NULL;
	}
	if (p != der + len) {
		X509_free(x);
		return NULL;
	}
	return x;
}

/* A copy of s fit for a message: printable ASCII, the rest as '?'. */
static void
certcheck_printable(const unsigned char *s, size_t n, char *out,
    size_t outsz)
{
	size_t i, j = 0;

	for (i = 0; i < n && j + 1 < outsz; i++)
		out[j++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
	if (outsz > 0)
		out[j] = '\0';
}

static int
certcheck_cn(X509 *x, const char *want, char *why, size_t whysz)
{
	const X509_NAME *name = X509_get_subject_name(x);
	unsigned char *utf8 = NULL;
	char shown[80];
	int idx, next, len, r = KL_ERR_CERT_INVALID;

	idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	if (idx < 0) {
		snprintf(why, whysz, "subject has no CN");
		goto out;
	}
	next = X509_NAME_get_index_by_NID(name, NID_commonName, idx);
	if (next >= 0) {
		snprintf(why, whysz, "subject has more than one CN");
		goto out;
	}
	len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(
	    X509_NAME_get_entry(name, idx)));
	if (len < 0) {
		ERR_clear_error();
		snprintf(why, whysz, "subject CN cannot be read");
		goto out;
	}
	/* Length and bytes both: an embedded NUL must not pass as a
	 * shorter name. */
	if ((size_t)len != strlen(want) || memcmp(utf8, want, (size_t)len)
	    != 0) {
		certcheck_printable(utf8, (size_t)len, shown, sizeof(shown));
		snprintf(why, whysz, "subject CN '%s' is not the device ID '%s'",
		    shown, want);
		goto out;
	}
	r = 0;
out:
	OPENSSL_free(utf8);
	return r;
}

static int
certcheck_spki(X509 *x, const struct certcheck_expect *want, char *why,
    size_t whysz)
{
	unsigned char *der = NULL;
	int len, r = KL_ERR_CERT_INVALID;

	len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
	if (len <= 0) {
		ERR_clear_error();
		snprintf(why, whysz, "public key cannot be encoded");
		goto out;
	}
	if ((size_t)len != want->spki_len ||
	    CRYPTO_memcmp(der, want->spki, want->spki_len) != 0) {
		snprintf(why, whysz, "public key differs from the board's key");
		goto out;
	}
	r = 0;
out:
	OPENSSL_free(der);
	return r;
}

static int
certcheck_extensions(X509 *x, char *why, size_t whysz)
{
	uint32_t flags = X509_get_extension_flags(x);

	if (flags & EXFLAG_INVALID) {
		snprintf(why, whysz, "certificate has malformed extensions");
		return KL_ERR_CERT_INVALID;
	}
	if (flags & EXFLAG_CA) {
		snprintf(why, whysz,
		    "certificate is a CA (basicConstraints CA:TRUE)");
		return KL_ERR_CERT_INVALID;
	}
	if (!(flags & EXFLAG_KUSAGE)) {
		snprintf(why, whysz, "keyUsage extension missing");
		return KL_ERR_CERT_INVALID;
	}
	if (!(X509_get_key_usage(x) & KU_DIGITAL_SIGNATURE)) {
		snprintf(why, whysz, "keyUsage lacks digitalSignature");
		return KL_ERR_CERT_INVALID;
	}
	if (!(flags & EXFLAG_XKUSAGE)) {
		snprintf(why, whysz, "extendedKeyUsage extension missing");
		return KL_ERR_CERT_INVALID;
	}
	if (!(X509_get_extended_key_usage(x) & XKU_SSL_CLIENT)) {
		snprintf(why, whysz, "extendedKeyUsage lacks clientAuth");
		return KL_ERR_CERT_INVALID;
	}
	return 0;
}

static int
certcheck_validity(X509 *x, time_t now, char *why, size_t whysz)
{
	int c;

	c = X509_cmp_time(X509_get0_notBefore(x), &now);
	if (c == 0) {
		snprintf(why, whysz, "notBefore cannot be read");
		return KL_ERR_CERT_INVALID;
	}
	if (c > 0) {
		snprintf(why, whysz, "certificate is not yet valid");
		return KL_ERR_CERT_INVALID;
	}
	c = X509_cmp_time(X509_get0_notAfter(x), &now);
	if (c == 0) {
		snprintf(why, whysz, "notAfter cannot be read");
		return KL_ERR_CERT_INVALID;
	}
	if (c < 0) {
		snprintf(why, whysz, "certificate has expired");
		return KL_ERR_CERT_INVALID;
	}
	return 0;
}

static int
certcheck_chain(const struct certcheck_trust *t, X509 *x, time_t now,
    char *why, size_t whysz)
{
	X509_STORE_CTX *ctx = NULL;
	X509_VERIFY_PARAM *param;
	int err, depth, r = KL_ERR_CERT_INVALID;

	if ((ctx = X509_STORE_CTX_new()) == NULL) {
		snprintf(why, whysz, "out of memory");
		r = KL_ERR_NOMEM;
		goto out;
	}
	if (!X509_STORE_CTX_init(ctx, t->store, x, t->untrusted) ||
	    !X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT)) {
		log_openssl("certcheck");
		snprintf(why, whysz, "cannot set up verification");
		r = KL_ERR_CRYPTO;
		goto out;
	}
	param = X509_STORE_CTX_get0_param(ctx);
	X509_VERIFY_PARAM_set_time(param, now);
	X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT);
	if (X509_verify_cert(ctx) != 1) {
		err = X509_STORE_CTX_get_error(ctx);
		depth = X509_STORE_CTX_get_error_depth(ctx);
		ERR_clear_error();
		if (depth > 0)
			snprintf(why, whysz,
			    "not issued by the fleet CA: %s (at depth %d)",
			    X509_verify_cert_error_string(err), depth);
		else
			snprintf(why, whysz, "not issued by the fleet CA: %s",
			    X509_verify_cert_error_string(err));
		goto out;
	}
	r = 0;
out:
	X509_STORE_CTX_free(ctx);
	return r;
}

int
certcheck_verify(const struct certcheck_trust *t, const uint8_t *der,
    size_t der_len, const struct certcheck_expect *want, char *why,
    size_t whysz)
{
	time_t now;
	X509 *x = NULL;
	int r = KL_ERR_INTERNAL;

	if (t == NULL || want == NULL || want->cn == NULL ||
	    want->spki == NULL) {
		snprintf(why, whysz, "internal: nothing to check against");
		return KL_ERR_INVALID;
	}
	if ((x = certcheck_parse(der, der_len)) == NULL) {
		snprintf(why, whysz, "not a DER X.509 certificate");
		r = KL_ERR_INVALID;
		goto out;
	}
	now = want->now != 0 ? want->now : time(NULL);
	/* The leaf's own properties before the chain: verification with the
	 * TLS-client purpose would also refuse a bad keyUsage or an expired
	 * leaf, but only as "unsupported certificate purpose" and the like;
	 * an operator needs the specific reason. */
	if ((r = certcheck_validity(x, now, why, whysz)) != 0 ||
	    (r = certcheck_extensions(x, why, whysz)) != 0 ||
	    (r = certcheck_spki(x, want, why, whysz)) != 0 ||
	    (r = certcheck_cn(x, want->cn, why, whysz)) != 0 ||
	    (r = certcheck_chain(t, x, now, why, whysz)) != 0)
		goto out;
	r = 0;
out:
	X509_free(x);
	return r;
}

int
certcheck_fingerprint(const uint8_t *der, size_t len, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0, i;
	X509 *x;

	if ((x = certcheck_parse(der, len)) == NULL)
		return KL_ERR_INVALID;
	X509_free(x);
	if (!EVP_Digest(der, len, md, &mdlen, EVP_sha256(), NULL) ||
	    mdlen != 32) {
		log_openssl("sha256");
		return KL_ERR_CRYPTO;
	}
	for (i = 0; i < mdlen; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 0x0f];
	}
	out[64] = '\0';
	return 0;
}

int
certcheck_serial_hex(const uint8_t *der, size_t len, char *out, size_t outsz)
{
	BIGNUM *bn = NULL;
	char *hex = NULL;
	size_t n, i;
	X509 *x;
	int r = KL_ERR_INVALID;

	if ((x = certcheck_parse(der, len)) == NULL)
		return KL_ERR_INVALID;
	if ((bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL)) ==
	    NULL || (hex = BN_bn2hex(bn)) == NULL) {
		ERR_clear_error();
		goto out;
	}
	n = strlen(hex);
	if (out == NULL || n + 1 > outsz)
		goto out;
	for (i = 0; i <= n; i++)
		out[i] = (hex[i] >= 'A' && hex[i] <= 'F') ?
		    (char)(hex[i] - 'A' + 'a') : hex[i];
	r = 0;
out:
	OPENSSL_free(hex);
	BN_free(bn);
	X509_free(x);
	return r;
}
