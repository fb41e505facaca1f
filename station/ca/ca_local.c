/*
 * ca_local.c: the "local" CA backend (see ca.h).
 *
 * The station signs device certificates itself with the fleet (or
 * contract-manufacturer intermediate) CA key, which lives in the station's
 * PKCS#11 token and is used through hsm_get_private_key(); the key never
 * leaves the token.  A PEM key file is accepted only when the config says
 * so explicitly (dev_key_pem + dev_allow_pem_key), for development.
 *
 * The station, not the board, decides what the certificate says: the
 * subject is CN=<device ID> (after the profile's fixed entries, [ca]
 * subject_extra) whatever the CSR asked for, and the extensions
 * are fixed.  From the CSR only the public key is taken, after its
 * signature proved the board holds the private key.
 *
 * One struct hsm is not thread-safe and slots issue concurrently, so every
 * signature happens under ca_local.lock.
 */
#include "station/ca/ca.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "hsm/hsm.h"
#include "station/ca/certcheck.h"
#include "common/err.h"
#include "common/log.h"

#define CA_LOCAL_MAX_CSR (16 * 1024)
/* Longer would fail every board's validation (certcheck.h: the default
 * profile's lifetime limit). */
#define CA_LOCAL_MAX_DAYS CERTCHECK_DEFAULT_MAX_DAYS
#define CA_LOCAL_SERIAL_BYTES 16
/* Clocks on a factory line are not perfectly in step with the server's. */
#define CA_LOCAL_BACKDATE_SECS 60

struct ca_local {
	pthread_mutex_t lock;	/* around key and hsm */
	X509 *issuer;
	EVP_PKEY *key;		/* token-backed, or the development PEM key */
	struct hsm *hsm;	/* NULL with a PEM key */
	unsigned validity_days;
	/* [ca] subject_extra, before CN in the subject */
	struct certcheck_name_entry extra[CERTCHECK_MAX_EXTRA];
	int nextra;
};

/* The subject: the profile's fixed entries, then CN = device ID. */
static X509_NAME *
ca_local_subject(const struct ca_local *c, const char *device_id)
{
	X509_NAME *n;
	int i;

	if ((n = X509_NAME_new()) == NULL)
		return NULL;
	for (i = 0; i < c->nextra; i++)
		if (!X509_NAME_add_entry_by_NID(n, c->extra[i].nid,
		    MBSTRING_UTF8, (const unsigned char *)c->extra[i].value,
		    -1, -1, 0))
			goto fail;
	if (!X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
	    (const unsigned char *)device_id, -1, -1, 0))
		goto fail;
	return n;
fail:
	X509_NAME_free(n);
	return NULL;
}

static void
ca_local_free(void *arg)
{
	struct ca_local *c = arg;

	if (c == NULL)
		return;
	/* The token-backed EVP_PKEY must go before its session. */
	EVP_PKEY_free(c->key);
	hsm_close(c->hsm);
	X509_free(c->issuer);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* Never prompt on a terminal for a passphrase: an encrypted development
 * key is refused instead. */
static int
ca_local_no_pass(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

static int
ca_local_load_issuer(const char *path, X509 **out)
{
	BIO *in = NULL;
	X509 *x = NULL;
	int r = KL_ERR_INTERNAL;

	if ((in = BIO_new_file(path, "r")) == NULL) {
		log_error("ca: cannot open issuer certificate %s", path);
		log_openssl("ca");
		r = KL_ERR_IO;
		goto out;
	}
	if ((x = PEM_read_bio_X509(in, NULL, ca_local_no_pass, NULL)) ==
	    NULL) {
		log_error("ca: %s: not a PEM certificate", path);
		log_openssl("ca");
		r = KL_ERR_CONFIG;
		goto out;
	}
	if (X509_check_ca(x) == 0) {
		log_error("ca: %s: not a CA certificate", path);
		r = KL_ERR_CONFIG;
		goto out;
	}
	/* The authorityKeyIdentifier of every device certificate is taken
	 * from here (and strict verifiers want it). */
	if (X509_get0_subject_key_id(x) == NULL) {
		log_error("ca: %s: issuer certificate has no "
		    "subjectKeyIdentifier", path);
		r = KL_ERR_CONFIG;
		goto out;
	}
	*out = x;
	x = NULL;
	r = 0;
out:
	X509_free(x);
	BIO_free(in);
	return r;
}

static int
ca_local_load_pem_key(const char *path, EVP_PKEY **out)
{
	BIO *in = NULL;
	EVP_PKEY *k = NULL;
	int r = KL_ERR_INTERNAL;

	log_warn("ca: the CA private key is a file on disk (%s): for "
	    "development only; a production station keeps it in its token",
	    path);
	if ((in = BIO_new_file(path, "r")) == NULL) {
		log_error("ca: cannot open CA key %s", path);
		log_openssl("ca");
		r = KL_ERR_IO;
		goto out;
	}
	if ((k = PEM_read_bio_PrivateKey(in, NULL, ca_local_no_pass, NULL)) ==
	    NULL) {
		log_error("ca: %s: not an unencrypted PEM private key", path);
		log_openssl("ca");
		r = KL_ERR_CONFIG;
		goto out;
	}
	*out = k;
	k = NULL;
	r = 0;
out:
	EVP_PKEY_free(k);
	BIO_free(in);
	return r;
}

static int
ca_local_load_token_key(struct ca_local *c, const struct ca_local_params *p)
{
	uint8_t id[64], *spki = NULL;
	const unsigned char *q;
	EVP_PKEY *pub = NULL;
	size_t id_len = 0, spki_len = 0;
	int r = KL_ERR_INTERNAL;

	if (p->module == NULL || p->module[0] == '\0' ||
	    p->key_id_hex == NULL || p->pin == NULL) {
		log_error("ca: a token CA needs module, key_id and a PIN");
		return KL_ERR_CONFIG;
	}
	if ((r = ca_token_key("ca", p->module, p->token_label, p->pin,
	    p->key_id_hex, &c->hsm, &c->key)) != 0)
		return r;
	/* ca_token_key() parsed the same hex: this cannot fail. */
	if (hsm_id_from_hex(p->key_id_hex, id, sizeof(id), &id_len) != 0) {
		r = KL_ERR_INTERNAL;
		goto out;
	}
	/* The token's public key object must be the issuer certificate's
	 * key, or every certificate would fail to verify on the line. */
	if ((r = hsm_get_spki(c->hsm, id, id_len, &spki, &spki_len)) != 0)
		goto out;
	q = spki;
	if ((pub = d2i_PUBKEY(NULL, &q, (long)spki_len)) == NULL ||
	    EVP_PKEY_eq(pub, X509_get0_pubkey(c->issuer)) != 1) {
		ERR_clear_error();
		log_error("ca: the token key %s is not the key of the issuer "
		    "certificate %s", p->key_id_hex, p->issuer_cert);
		r = KL_ERR_CONFIG;
		goto out;
	}
	r = 0;
out:
	EVP_PKEY_free(pub);
	OPENSSL_free(spki);
	return r;
}

/* "local:<issuer CN>" */
static void
ca_local_name(X509 *issuer, char *out, size_t outsz)
{
	const X509_NAME *n = X509_get_subject_name(issuer);
	unsigned char *cn = NULL;
	int idx, len = -1, i;

	idx = X509_NAME_get_index_by_NID(n, NID_commonName, -1);
	if (idx >= 0)
		len = ASN1_STRING_to_UTF8(&cn, X509_NAME_ENTRY_get_data(
		    X509_NAME_get_entry(n, idx)));
	if (len < 0) {
		ERR_clear_error();
		snprintf(out, outsz, "local");
		return;
	}
	/* The name lands in the audit log: printable ASCII only. */
	for (i = 0; i < len; i++)
		if (cn[i] < 0x20 || cn[i] >= 0x7f)
			cn[i] = '?';
	snprintf(out, outsz, "local:%.*s", len, (const char *)cn);
	OPENSSL_free(cn);
}

/* Keys a device certificate may carry: what aktualizr and the OTA server
 * accept, and nothing weaker. */
static int
ca_local_check_key(EVP_PKEY *k, char *err, size_t errsz)
{
	char curve[64];
	size_t clen = 0;

	switch (EVP_PKEY_get_base_id(k)) {
	case EVP_PKEY_RSA:
		if (EVP_PKEY_get_bits(k) < 2048) {
			snprintf(err, errsz, "CSR key is RSA-%d; at least "
			    "2048 bits are required", EVP_PKEY_get_bits(k));
			return KL_ERR_INVALID;
		}
		return 0;
	case EVP_PKEY_EC:
		if (!EVP_PKEY_get_utf8_string_param(k, "group", curve,
		    sizeof(curve), &clen) ||
		    (strcmp(curve, "prime256v1") != 0 &&
		    strcmp(curve, "secp384r1") != 0)) {
			ERR_clear_error();
			snprintf(err, errsz, "CSR key is on an unsupported "
			    "curve (P-256 or P-384 required)");
			return KL_ERR_INVALID;
		}
		return 0;
	default:
		snprintf(err, errsz, "CSR key type is not RSA or EC");
		return KL_ERR_INVALID;
	}
}

static int
ca_local_add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *e;
	int ok;

	if ((e = X509V3_EXT_conf_nid(NULL, ctx, nid, value)) == NULL)
		return 0;
	ok = X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	return ok;
}

/*
 * 128 random bits, top bit cleared so the INTEGER is positive, next bit
 * set so it never shrinks below 127 bits (a leading zero byte would make
 * a shorter serial; the fleet needs at least 64 random bits).
 */
static int
ca_local_serial(X509 *x)
{
	unsigned char b[CA_LOCAL_SERIAL_BYTES];
	BIGNUM *bn = NULL;
	int ok;

	if (RAND_bytes(b, sizeof(b)) != 1)
		return 0;
	b[0] = (unsigned char)((b[0] & 0x7f) | 0x40);
	ok = (bn = BN_bin2bn(b, sizeof(b), NULL)) != NULL &&
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
	BN_free(bn);
	return ok;
}

/*
 * The request's SubjectPublicKeyInfo into the certificate as it came: its
 * algorithm and key bits copied, no round trip through an EVP_PKEY
 * (X509_set_pubkey() re-encodes the key through OpenSSL 3's encoders, the
 * dearest call of an issuance).  From the parsed request csr, or when the
 * engine checked a P-256 request (csr NULL), from req's SPKI bytes: the
 * named curve and the point.  0 or -1.
 */
static int
ca_local_copy_pubkey(X509 *x, X509_REQ *csr, const struct ca_request *req)
{
	X509_PUBKEY *to = X509_get_X509_PUBKEY(x);
	const ASN1_OBJECT *alg;
	const void *pval;
	const unsigned char *bits;
	unsigned char *copy = NULL;
	ASN1_OBJECT *alg_dup = NULL;
	void *pval_dup = NULL;
	X509_ALGOR *algor;
	int ptype = V_ASN1_UNDEF, nbits;
	size_t off = sizeof(certcheck_spki_p256_prefix) - 1;

	if (to == NULL)
		return -1;
	if (csr == NULL) {
		alg_dup = OBJ_nid2obj(NID_X9_62_id_ecPublicKey);
		pval_dup = OBJ_nid2obj(NID_X9_62_prime256v1);
		if (alg_dup == NULL || pval_dup == NULL ||
		    (copy = OPENSSL_memdup(req->spki + off,
		    req->spki_len - off)) == NULL)
			return -1;
		if (!X509_PUBKEY_set0_param(to, alg_dup, V_ASN1_OBJECT,
		    pval_dup, copy, (int)(req->spki_len - off))) {
			OPENSSL_free(copy);
			return -1;
		}
		return 0;
	}
	if (!X509_PUBKEY_get0_param(NULL, &bits, &nbits, &algor,
	    X509_REQ_get_X509_PUBKEY(csr)) || nbits <= 0)
		return -1;
	X509_ALGOR_get0(&alg, &ptype, &pval, algor);
	if ((alg_dup = OBJ_dup(alg)) == NULL)
		goto fail;
	switch (ptype) {
	case V_ASN1_OBJECT:	/* EC: the named curve */
		if ((pval_dup = OBJ_dup(pval)) == NULL)
			goto fail;
		break;
	case V_ASN1_NULL:	/* RSA */
	case V_ASN1_UNDEF:
		break;
	default:		/* explicit parameters: never from our boards */
		goto fail;
	}
	if ((copy = OPENSSL_memdup(bits, (size_t)nbits)) == NULL ||
	    !X509_PUBKEY_set0_param(to, alg_dup, ptype, pval_dup, copy,
	    nbits))
		goto fail;
	return 0;
fail:
	OPENSSL_free(copy);
	if (ptype == V_ASN1_OBJECT)
		ASN1_OBJECT_free(pval_dup);
	ASN1_OBJECT_free(alg_dup);
	return -1;
}

static int
ca_local_issue(void *ctx, const struct ca_request *req, uint8_t **cert_der,
    size_t *cert_len, char *err, size_t errsz)
{
	struct ca_local *c = ctx;
	const unsigned char *p = req->csr_der;
	unsigned char *der = NULL;
	X509_REQ *csr = NULL;
	X509_NAME *subj = NULL;
	EVP_PKEY *pub;
	X509V3_CTX v3;
	X509 *x = NULL;
	time_t now;
	int len, signed_ok, r = KL_ERR_CA;

	if (req->key != NULL &&
	    certcheck_spki_is_p256(req->spki, req->spki_len)) {
		/* Checked by the engine, from these bytes
		 * (certcheck_csr_p256): its key and SPKI as they are. */
		pub = req->key;
	} else {
		if (req->csr_len > CA_LOCAL_MAX_CSR) {
			snprintf(err, errsz, "CSR larger than %d bytes",
			    CA_LOCAL_MAX_CSR);
			r = KL_ERR_INVALID;
			goto out;
		}
		if ((csr = d2i_X509_REQ(NULL, &p, (long)req->csr_len)) ==
		    NULL || p != req->csr_der + req->csr_len) {
			ERR_clear_error();
			snprintf(err, errsz, "CSR is not a DER PKCS#10 request");
			r = KL_ERR_INVALID;
			goto out;
		}
		if ((pub = X509_REQ_get0_pubkey(csr)) == NULL) {
			ERR_clear_error();
			snprintf(err, errsz, "CSR public key does not parse");
			r = KL_ERR_INVALID;
			goto out;
		}
		/* Proof that the board holds the private key. */
		if (X509_REQ_verify(csr, pub) != 1) {
			ERR_clear_error();
			snprintf(err, errsz, "CSR signature does not verify");
			r = KL_ERR_INVALID;
			goto out;
		}
	}
	if ((r = ca_local_check_key(pub, err, errsz)) != 0)
		goto out;
	r = KL_ERR_CA;

	now = time(NULL);
	if ((x = X509_new()) == NULL ||
	    (subj = ca_local_subject(c, req->device_id)) == NULL ||
	    !X509_set_version(x, 2) || !ca_local_serial(x) ||
	    !X509_set_subject_name(x, subj) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(c->issuer)) ||
	    X509_time_adj_ex(X509_getm_notBefore(x), 0,
	    -CA_LOCAL_BACKDATE_SECS, &now) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), (int)c->validity_days, 0,
	    &now) == NULL ||
	    ca_local_copy_pubkey(x, csr, req) != 0) {
		log_openssl("ca: building certificate");
		snprintf(err, errsz, "cannot build the certificate");
		goto out;
	}
	/* Inside the issuer's validity, as validation demands
	 * (certcheck.h): the backdating stops at the issuer's notBefore (a
	 * CA made a minute ago), the lifetime at its notAfter. */
	if ((ASN1_TIME_compare(X509_get0_notBefore(x),
	    X509_get0_notBefore(c->issuer)) < 0 &&
	    !X509_set1_notBefore(x, X509_get0_notBefore(c->issuer))) ||
	    (ASN1_TIME_compare(X509_get0_notAfter(x),
	    X509_get0_notAfter(c->issuer)) > 0 &&
	    !X509_set1_notAfter(x, X509_get0_notAfter(c->issuer)))) {
		log_openssl("ca: validity");
		snprintf(err, errsz, "cannot build the certificate");
		goto out;
	}
	X509V3_set_ctx(&v3, c->issuer, x, NULL, NULL, 0);
	if (!ca_local_add_ext(x, &v3, NID_basic_constraints,
	    "critical,CA:FALSE") ||
	    !ca_local_add_ext(x, &v3, NID_key_usage,
	    "critical,digitalSignature") ||
	    !ca_local_add_ext(x, &v3, NID_ext_key_usage,
	    "critical,clientAuth") ||
	    !ca_local_add_ext(x, &v3, NID_subject_key_identifier, "hash") ||
	    !ca_local_add_ext(x, &v3, NID_authority_key_identifier,
	    "keyid:always")) {
		log_openssl("ca: extensions");
		snprintf(err, errsz, "cannot add certificate extensions");
		goto out;
	}

	pthread_mutex_lock(&c->lock);
	signed_ok = X509_sign(x, c->key, EVP_sha256()) > 0;
	pthread_mutex_unlock(&c->lock);
	if (!signed_ok) {
		log_openssl("ca: X509_sign");
		snprintf(err, errsz, "signing with the CA key failed");
		goto out;
	}
	if ((len = i2d_X509(x, &der)) <= 0) {
		log_openssl("ca: i2d_X509");
		snprintf(err, errsz, "cannot encode the certificate");
		goto out;
	}
	*cert_der = der;
	*cert_len = (size_t)len;
	der = NULL;
	r = 0;
out:
	OPENSSL_free(der);
	X509_NAME_free(subj);
	X509_free(x);
	X509_REQ_free(csr);
	return r;
}

static const struct ca_ops ca_local_ops = {
	.name = "local",
	.issue = ca_local_issue,
	.free = ca_local_free,
};

int
ca_local_new(struct ca **out, const struct ca_local_params *p)
{
	struct ca_local *c = NULL;
	struct ca *ca = NULL;
	char why[256];
	unsigned max_days;
	int r = KL_ERR_INTERNAL;

	if (out == NULL || p == NULL || p->issuer_cert == NULL ||
	    p->issuer_cert[0] == '\0') {
		log_error("ca: no issuer certificate configured");
		return KL_ERR_CONFIG;
	}
	max_days = p->max_validity_days != 0 ? p->max_validity_days :
	    CA_LOCAL_MAX_DAYS;
	if (p->validity_days == 0 || p->validity_days > max_days ||
	    p->validity_days > CERTCHECK_MAX_DAYS) {
		log_error("ca: validity_days must be 1..%u (validation "
		    "refuses longer lifetimes: max_validity_days)", max_days);
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
	c->validity_days = p->validity_days;
	if (certcheck_subject_extra_parse(p->subject_extra, c->extra,
	    &c->nextra, why, sizeof(why)) != 0) {
		log_error("ca: %s", why);
		r = KL_ERR_CONFIG;
		goto out;
	}
	if ((r = ca_local_load_issuer(p->issuer_cert, &c->issuer)) != 0)
		goto out;
	if (p->dev_key_pem != NULL && p->dev_key_pem[0] != '\0') {
		if ((r = ca_local_load_pem_key(p->dev_key_pem, &c->key)) != 0)
			goto out;
		if (X509_check_private_key(c->issuer, c->key) != 1) {
			ERR_clear_error();
			log_error("ca: %s is not the key of the issuer "
			    "certificate %s", p->dev_key_pem, p->issuer_cert);
			r = KL_ERR_CONFIG;
			goto out;
		}
	} else if ((r = ca_local_load_token_key(c, p)) != 0) {
		goto out;
	}
	ca->ops = &ca_local_ops;
	ca->ctx = c;
	c = NULL;
	ca_local_name(((struct ca_local *)ca->ctx)->issuer, ca->name,
	    sizeof(ca->name));
	*out = ca;
	ca = NULL;
	r = 0;
out:
	ca_local_free(c);
	free(ca);
	return r;
}
