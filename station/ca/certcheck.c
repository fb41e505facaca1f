/*
 * certcheck.c: the station's own check of every certificate a CA returns
 * (see certcheck.h).
 *
 * A CA backend is trusted to sign, not to be right: a misconfigured or
 * remote CA could return a certificate for another key, another name, or a
 * CA certificate, or copy what a hostile board put in its CSR (an
 * organisation, a subjectAltName naming a server).  Nothing reaches a
 * board before it passes here, and only the fleet's device profile passes.  The
 * chain is verified with the TLS-client purpose, which is how the OTA
 * server will judge the certificate.
 */
#include "station/ca/certcheck.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "common/err.h"
#include "common/log.h"

/* A device certificate is a few hundred bytes; anything near this is not
 * one. */
#define CERTCHECK_MAX_DER (64 * 1024)
#define CERTCHECK_MAX_PEM (1024 * 1024)
#define CERTCHECK_MAX_CERTS 64

/*
 * A CA may backdate notBefore against clock skew (the local CA by 60 s,
 * CFSSL by 5 min); the lifetime limit allows this much on top of the
 * configured days.
 */
#define CERTCHECK_BACKDATE_SLACK (60 * 60)

/* The fleet's device profile (certcheck_trust_set_profile). */
struct certcheck_prof {
	struct certcheck_name_entry extra[CERTCHECK_MAX_EXTRA];
	int nextra;
	unsigned max_days;
};

struct certcheck_trust {
	X509_STORE *store;		/* the fleet root(s) */
	STACK_OF(X509) *roots;		/* the same, to recognise an anchor */
	STACK_OF(X509) *untrusted;	/* intermediates; read-only after load */
	struct certcheck_prof prof;	/* read-only after start-up */
};

/* What the verify callback needs: set as the context's app data. */
struct certcheck_run {
	const struct certcheck_trust *t;
	int startup;		/* the target is a CA checked at start-up */
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
	t->roots = roots;
	roots = NULL;
	t->prof.max_days = CERTCHECK_DEFAULT_MAX_DAYS;
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
	sk_X509_pop_free(t->roots, X509_free);
	sk_X509_pop_free(t->untrusted, X509_free);
	free(t);
}

/* The attribute types a device subject may carry beside its CN. */
static const int certcheck_name_nids[] = {
	NID_countryName, NID_stateOrProvinceName, NID_localityName,
	NID_organizationName, NID_organizationalUnitName, NID_serialNumber,
	NID_domainComponent, NID_title,
};

/* Whether nid may be a fixed subject entry, and its value encodes as
 * that attribute (a country is two letters, text is UTF-8). */
static int
certcheck_entry_ok(int nid, const char *value)
{
	X509_NAME *n;
	size_t i;
	int ok;

	for (i = 0; i < sizeof(certcheck_name_nids) /
	    sizeof(certcheck_name_nids[0]); i++)
		if (certcheck_name_nids[i] == nid)
			break;
	if (i == sizeof(certcheck_name_nids) / sizeof(certcheck_name_nids[0]))
		return 0;
	if ((n = X509_NAME_new()) == NULL)
		return 0;
	ok = X509_NAME_add_entry_by_NID(n, nid, MBSTRING_UTF8,
	    (const unsigned char *)value, -1, -1, 0) == 1;
	X509_NAME_free(n);
	ERR_clear_error();
	return ok;
}

int
certcheck_subject_extra_parse(const char *s, struct certcheck_name_entry *out,
    int *n, char *why, size_t whysz)
{
	const char *eq, *end;
	size_t tlen, vlen;
	char type[32];
	int nid, i;

	*n = 0;
	if (s == NULL)
		s = "";
	while (*s == ' ')
		s++;
	while (*s != '\0') {
		if ((end = strchr(s, ',')) == NULL)
			end = s + strlen(s);
		if ((eq = memchr(s, '=', (size_t)(end - s))) == NULL) {
			snprintf(why, whysz, "subject_extra: '%.*s' is not "
			    "TYPE=value", (int)(end - s), s);
			return KL_ERR_CONFIG;
		}
		tlen = (size_t)(eq - s);
		while (tlen > 0 && s[tlen - 1] == ' ')
			tlen--;
		vlen = (size_t)(end - eq - 1);
		while (vlen > 0 && eq[vlen] == ' ')
			vlen--;
		if (tlen == 0 || tlen >= sizeof(type)) {
			snprintf(why, whysz, "subject_extra: bad attribute "
			    "type in '%.*s'", (int)(end - s), s);
			return KL_ERR_CONFIG;
		}
		memcpy(type, s, tlen);
		type[tlen] = '\0';
		nid = OBJ_txt2nid(type);
		if (nid == NID_undef || nid == NID_commonName ||
		    OBJ_nid2sn(nid) == NULL) {
			snprintf(why, whysz, "subject_extra: '%s' is not an "
			    "attribute type the profile can add (C, ST, L, O, "
			    "OU, serialNumber, DC, title; CN is the device ID)",
			    type);
			return KL_ERR_CONFIG;
		}
		eq++;
		while (vlen > 0 && *eq == ' ') {
			eq++;
			vlen--;
		}
		if (vlen == 0 || vlen > CERTCHECK_MAX_VALUE ||
		    *n == CERTCHECK_MAX_EXTRA) {
			snprintf(why, whysz, "subject_extra: at most %d "
			    "entries of 1..%d characters", CERTCHECK_MAX_EXTRA,
			    CERTCHECK_MAX_VALUE);
			return KL_ERR_CONFIG;
		}
		out[*n].nid = nid;
		memcpy(out[*n].value, eq, vlen);
		out[*n].value[vlen] = '\0';
		for (i = 0; i < *n; i++)
			if (out[i].nid == nid) {
				snprintf(why, whysz, "subject_extra: %s given "
				    "twice", OBJ_nid2sn(nid));
				return KL_ERR_CONFIG;
			}
		if (!certcheck_entry_ok(nid, out[*n].value)) {
			snprintf(why, whysz, "subject_extra: '%s=%s' cannot be "
			    "a device subject entry (C, ST, L, O, OU, "
			    "serialNumber, DC, title; UTF-8 text; C is two "
			    "letters)", type, out[*n].value);
			return KL_ERR_CONFIG;
		}
		(*n)++;
		s = *end == ',' ? end + 1 : end;
		while (*s == ' ')
			s++;
	}
	return 0;
}

int
certcheck_trust_set_profile(struct certcheck_trust *t,
    const struct certcheck_profile *p, char *why, size_t whysz)
{
	struct certcheck_prof prof;
	int r;

	if (t == NULL || p == NULL) {
		snprintf(why, whysz, "internal: no trust or profile");
		return KL_ERR_INVALID;
	}
	memset(&prof, 0, sizeof(prof));
	prof.max_days = p->max_validity_days != 0 ? p->max_validity_days :
	    CERTCHECK_DEFAULT_MAX_DAYS;
	if (prof.max_days > CERTCHECK_MAX_DAYS) {
		snprintf(why, whysz, "max_validity_days: at most %d",
		    CERTCHECK_MAX_DAYS);
		return KL_ERR_CONFIG;
	}
	if ((r = certcheck_subject_extra_parse(p->subject_extra, prof.extra,
	    &prof.nextra, why, whysz)) != 0)
		return r;
	t->prof = prof;
	return 0;
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


/* "O=Fleet Admins" of one subject entry, printable, for a message. */
static void
certcheck_entry_text(const X509_NAME_ENTRY *ne, char *out, size_t outsz)
{
	const ASN1_STRING *d = X509_NAME_ENTRY_get_data(ne);
	const ASN1_OBJECT *o = X509_NAME_ENTRY_get_object(ne);
	int nid = OBJ_obj2nid(o);
	char val[80], type[64];

	if (nid != NID_undef && OBJ_nid2sn(nid) != NULL)
		snprintf(type, sizeof(type), "%s", OBJ_nid2sn(nid));
	else if (OBJ_obj2txt(type, (int)sizeof(type), o, 1) <= 0)
		snprintf(type, sizeof(type), "?");
	certcheck_printable(ASN1_STRING_get0_data(d),
	    (size_t)ASN1_STRING_length(d), val, sizeof(val));
	snprintf(out, outsz, "%s=%s", type, val);
}

/* Whether entry ne is exactly (nid, value). */
static int
certcheck_entry_is(const X509_NAME_ENTRY *ne, const struct certcheck_name_entry *e)
{
	unsigned char *utf8 = NULL;
	int len, same;

	if (OBJ_obj2nid(X509_NAME_ENTRY_get_object(ne)) != e->nid)
		return 0;
	len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(ne));
	if (len < 0) {
		ERR_clear_error();
		return 0;
	}
	same = (size_t)len == strlen(e->value) &&
	    memcmp(utf8, e->value, (size_t)len) == 0;
	OPENSSL_free(utf8);
	return same;
}

/*
 * The subject is exactly CN = device ID and the profile's fixed entries
 * (in any order: CAs order names their own way), each once, one per RDN.
 * Whatever else a CSR asked for (O=Fleet Admins, OU=ops) is refused.
 */
static int
certcheck_subject(X509 *x, const struct certcheck_prof *prof,
    const char *want, char *why, size_t whysz)
{
	const X509_NAME *name = X509_get_subject_name(x);
	const X509_NAME_ENTRY *ne;
	int seen[CERTCHECK_MAX_EXTRA] = { 0 };
	char shown[160];
	int i, j, n, r;

	if ((r = certcheck_cn(x, want, why, whysz)) != 0)
		return r;
	n = X509_NAME_entry_count(name);
	for (i = 0; i < n; i++) {
		ne = X509_NAME_get_entry(name, i);
		if (X509_NAME_ENTRY_set(ne) != i) {
			snprintf(why, whysz, "subject has a multi-valued RDN");
			return KL_ERR_CERT_INVALID;
		}
		if (OBJ_obj2nid(X509_NAME_ENTRY_get_object(ne)) ==
		    NID_commonName)
			continue;
		for (j = 0; j < prof->nextra; j++)
			if (!seen[j] && certcheck_entry_is(ne, &prof->extra[j]))
				break;
		if (j == prof->nextra) {
			certcheck_entry_text(ne, shown, sizeof(shown));
			snprintf(why, whysz, "subject has '%s', which the fleet "
			    "profile does not name", shown);
			return KL_ERR_CERT_INVALID;
		}
		seen[j] = 1;
	}
	for (j = 0; j < prof->nextra; j++) {
		if (!seen[j]) {
			snprintf(why, whysz, "subject lacks '%s=%s' of the "
			    "fleet profile", OBJ_nid2sn(prof->extra[j].nid),
			    prof->extra[j].value);
			return KL_ERR_CERT_INVALID;
		}
	}
	return 0;
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

/* "keyUsage" etc. for a message: the short name, or the OID. */
static void
certcheck_oid(const ASN1_OBJECT *o, char *out, size_t outsz)
{
	int nid = OBJ_obj2nid(o);

	if (nid != NID_undef && OBJ_nid2ln(nid) != NULL)
		snprintf(out, outsz, "%s", OBJ_nid2ln(nid));
	else if (OBJ_obj2txt(out, (int)outsz, o, 1) <= 0)
		snprintf(out, outsz, "?");
}

/*
 * The extensions of the fleet's device profile: basicConstraints absent or
 * CA:FALSE, keyUsage critical and exactly digitalSignature,
 * extendedKeyUsage exactly clientAuth, no subjectAltName, and no critical
 * extension beyond these (an OTA server that does not know one must
 * refuse the certificate; one it does know means something the station
 * did not ask for).  Non-critical extensions such as the key identifiers,
 * CRL distribution points or authority information access are left to
 * the CA.
 */
static int
certcheck_extensions(X509 *x, char *why, size_t whysz)
{
	uint32_t flags = X509_get_extension_flags(x);
	EXTENDED_KEY_USAGE *eku = NULL;
	const X509_EXTENSION *e;
	char oid[80];
	int i, n, nid, crit = 0, r = KL_ERR_CERT_INVALID;

	if (flags & EXFLAG_INVALID) {
		snprintf(why, whysz, "certificate has malformed extensions");
		goto out;
	}
	if (flags & EXFLAG_CA) {
		snprintf(why, whysz,
		    "certificate is a CA (basicConstraints CA:TRUE)");
		goto out;
	}
	if (!(flags & EXFLAG_KUSAGE)) {
		snprintf(why, whysz, "keyUsage extension missing");
		goto out;
	}
	if (!(X509_get_key_usage(x) & KU_DIGITAL_SIGNATURE)) {
		snprintf(why, whysz, "keyUsage lacks digitalSignature");
		goto out;
	}
	if (X509_get_key_usage(x) != KU_DIGITAL_SIGNATURE) {
		snprintf(why, whysz, "keyUsage allows more than "
		    "digitalSignature (bits 0x%x)",
		    (unsigned)X509_get_key_usage(x));
		goto out;
	}
	if ((i = X509_get_ext_by_NID(x, NID_key_usage, -1)) < 0 ||
	    !X509_EXTENSION_get_critical(X509_get_ext(x, i))) {
		snprintf(why, whysz, "keyUsage is not critical");
		goto out;
	}
	if (!(flags & EXFLAG_XKUSAGE)) {
		snprintf(why, whysz, "extendedKeyUsage extension missing");
		goto out;
	}
	if (!(X509_get_extended_key_usage(x) & XKU_SSL_CLIENT)) {
		snprintf(why, whysz, "extendedKeyUsage lacks clientAuth");
		goto out;
	}
	/* The flags show only the purposes OpenSSL knows: count the OIDs. */
	if ((eku = X509_get_ext_d2i(x, NID_ext_key_usage, &crit, NULL)) ==
	    NULL) {
		ERR_clear_error();
		snprintf(why, whysz, "extendedKeyUsage cannot be read");
		goto out;
	}
	for (i = 0; i < sk_ASN1_OBJECT_num(eku); i++) {
		if (OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i)) ==
		    NID_client_auth)
			continue;
		certcheck_oid(sk_ASN1_OBJECT_value(eku, i), oid, sizeof(oid));
		snprintf(why, whysz, "extendedKeyUsage allows more than "
		    "clientAuth (%s)", oid);
		goto out;
	}
	if (X509_get_ext_by_NID(x, NID_subject_alt_name, -1) >= 0) {
		snprintf(why, whysz, "certificate has a subjectAltName (the "
		    "fleet profile has none)");
		goto out;
	}
	n = X509_get_ext_count(x);
	for (i = 0; i < n; i++) {
		e = X509_get_ext(x, i);
		if (!X509_EXTENSION_get_critical(e))
			continue;
		nid = OBJ_obj2nid(X509_EXTENSION_get_object(
		    (X509_EXTENSION *)e));
		if (nid == NID_basic_constraints || nid == NID_key_usage ||
		    nid == NID_ext_key_usage)
			continue;
		certcheck_oid(X509_EXTENSION_get_object((X509_EXTENSION *)e),
		    oid, sizeof(oid));
		snprintf(why, whysz, "unexpected critical extension %s", oid);
		goto out;
	}
	r = 0;
out:
	EXTENDED_KEY_USAGE_free(eku);
	return r;
}

/* Lifetime (notAfter - notBefore) within the profile's maximum. */
static int
certcheck_lifetime(X509 *x, unsigned max_days, char *why, size_t whysz)
{
	int days = 0, secs = 0;
	long long total, limit;

	if (!ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x),
	    X509_get0_notAfter(x))) {
		ERR_clear_error();
		snprintf(why, whysz, "validity period cannot be read");
		return KL_ERR_CERT_INVALID;
	}
	total = (long long)days * 86400 + secs;
	limit = (long long)max_days * 86400 + CERTCHECK_BACKDATE_SLACK;
	if (total < 0) {
		snprintf(why, whysz, "notAfter is before notBefore");
		return KL_ERR_CERT_INVALID;
	}
	if (total > limit) {
		snprintf(why, whysz, "lifetime of %lld days is longer than "
		    "the maximum of %u days", total / 86400, max_days);
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

/* Whether x is one of the configured fleet roots. */
static int
certcheck_is_root(const struct certcheck_trust *t, X509 *x)
{
	int i;

	for (i = 0; i < sk_X509_num(t->roots); i++)
		if (X509_cmp(sk_X509_value(t->roots, i), x) == 0)
			return 1;
	return 0;
}

/*
 * Strict checking (X509_V_FLAG_X509_STRICT) with one exception, the
 * decision in docs/architecture.md: the trust anchor need not carry
 * keyUsage.  RFC 5280 (6.1.1) takes a trust anchor's name and key as
 * inputs and does not process its extensions, and roots made with a plain
 * `openssl req -x509` have none; OpenSSL 3.0's strict mode refuses every
 * chain under such a root ("CA cert does not include key usage
 * extension").  An anchor that does carry keyUsage must still allow
 * keyCertSign (checked while the chain is built), and intermediates get
 * no exception.
 *
 * At start-up (run->startup) the target is a probe certificate shaped
 * like a device's and named as issued by a configured CA certificate
 * (certcheck_probe), so that every check above it is the one each board's
 * certificate will meet.
 */
static int
certcheck_verify_cb(int ok, X509_STORE_CTX *ctx)
{
	const struct certcheck_run *run;
	STACK_OF(X509) *chain;
	X509 *x;
	int err, depth;

	if (ok)
		return ok;
	run = X509_STORE_CTX_get_app_data(ctx);
	err = X509_STORE_CTX_get_error(ctx);
	depth = X509_STORE_CTX_get_error_depth(ctx);
	if (run == NULL)
		return ok;
	/* Depth 0 at start-up is the probe (certcheck_probe): its
	 * signature is not the CA's, and without a subject key identifier
	 * on the CA it has no authority key identifier.  Errors above it
	 * are the configuration's. */
	if (run->startup && depth == 0 &&
	    (err == X509_V_ERR_CERT_SIGNATURE_FAILURE ||
	    err == X509_V_ERR_MISSING_AUTHORITY_KEY_IDENTIFIER))
		return 1;
	if (err != X509_V_ERR_CA_CERT_MISSING_KEY_USAGE &&
	    err != X509_V_ERR_PATHLEN_WITHOUT_KU_KEY_CERT_SIGN)
		return ok;
	chain = X509_STORE_CTX_get0_chain(ctx);
	if (chain == NULL || depth != sk_X509_num(chain) - 1 ||
	    (x = sk_X509_value(chain, depth)) == NULL ||
	    (X509_get_extension_flags(x) & EXFLAG_KUSAGE) != 0 ||
	    !certcheck_is_root(run->t, x))
		return ok;
	return 1;
}

/*
 * One X509_verify_cert of x under the fleet root, as every board's
 * certificate is verified: same store, intermediates, purpose, flags and
 * callback.  0, or KL_ERR_CERT_INVALID with OpenSSL's reason and depth.
 */
static int
certcheck_run_verify(const struct certcheck_trust *t, X509 *x, time_t now,
    int startup, int *err, int *depth, X509 **issuer)
{
	struct certcheck_run run = { .t = t, .startup = startup };
	X509_STORE_CTX *ctx = NULL;
	X509_VERIFY_PARAM *param;
	int r = KL_ERR_CERT_INVALID;

	if ((ctx = X509_STORE_CTX_new()) == NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	if (!X509_STORE_CTX_init(ctx, t->store, x, t->untrusted) ||
	    !X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT) ||
	    !X509_STORE_CTX_set_app_data(ctx, &run)) {
		log_openssl("certcheck");
		r = KL_ERR_CRYPTO;
		goto out;
	}
	X509_STORE_CTX_set_verify_cb(ctx, certcheck_verify_cb);
	param = X509_STORE_CTX_get0_param(ctx);
	X509_VERIFY_PARAM_set_time(param, now);
	X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT);
	if (X509_verify_cert(ctx) != 1) {
		*err = X509_STORE_CTX_get_error(ctx);
		*depth = X509_STORE_CTX_get_error_depth(ctx);
		ERR_clear_error();
		goto out;
	}
	/* The certificate that signed x, as the verified chain has it. */
	if (issuer != NULL) {
		STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);

		if (chain == NULL || sk_X509_num(chain) < 2 ||
		    (*issuer = sk_X509_value(chain, 1)) == NULL ||
		    !X509_up_ref(*issuer)) {
			*issuer = NULL;
			r = KL_ERR_INTERNAL;
			goto out;
		}
	}
	r = 0;
out:
	X509_STORE_CTX_free(ctx);
	return r;
}

static int
certcheck_chain(const struct certcheck_trust *t, X509 *x, time_t now,
    X509 **issuer, char *why, size_t whysz)
{
	int err = 0, depth = 0, r;

	r = certcheck_run_verify(t, x, now, 0, &err, &depth, issuer);
	if (r == KL_ERR_NOMEM)
		snprintf(why, whysz, "out of memory");
	else if (r == KL_ERR_CRYPTO || r == KL_ERR_INTERNAL)
		snprintf(why, whysz, "cannot set up verification");
	else if (r != 0 && depth > 0)
		snprintf(why, whysz,
		    "not issued by the fleet CA: %s (at depth %d)",
		    X509_verify_cert_error_string(err), depth);
	else if (r != 0)
		snprintf(why, whysz, "not issued by the fleet CA: %s",
		    X509_verify_cert_error_string(err));
	return r;
}

/* The subject CN (or the whole subject) of x for a message. */
static void
certcheck_name(X509 *x, char *out, size_t outsz)
{
	const X509_NAME *name = X509_get_subject_name(x);
	int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	const ASN1_STRING *d;

	if (idx >= 0) {
		d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
		certcheck_printable(ASN1_STRING_get0_data(d),
		    (size_t)ASN1_STRING_length(d), out, outsz);
		return;
	}
	if (X509_NAME_oneline(name, out, (int)outsz) == NULL)
		snprintf(out, outsz, "(no subject)");
}

/*
 * A probe for start-up: a certificate shaped like a device's (CA:FALSE,
 * digitalSignature, clientAuth, valid around now) whose issuer name and
 * authority key identifier are those of ca, signed by a throwaway key.
 * Verified as a board's certificate is, it puts ca and everything above
 * it through exactly the checks a real device certificate under ca will
 * meet; only its own signature cannot pass, and the callback allows that
 * at depth 0 alone.  NULL on failure (logged).
 */
static X509 *
certcheck_probe(X509 *ca, time_t now)
{
	X509 *x = NULL;
	X509_NAME *name = NULL;
	EVP_PKEY *key = NULL;
	X509V3_CTX v3;
	X509_EXTENSION *e;
	static const struct {
		int nid;
		const char *value;
	} exts[] = {
		{ NID_basic_constraints, "critical,CA:FALSE" },
		{ NID_key_usage, "critical,digitalSignature" },
		{ NID_ext_key_usage, "clientAuth" },
		{ NID_subject_key_identifier, "hash" },
		{ NID_authority_key_identifier, "keyid" },
	};
	size_t i;
	int ok;

	ok = (key = EVP_EC_gen("P-256")) != NULL &&
	    (x = X509_new()) != NULL && (name = X509_NAME_new()) != NULL &&
	    X509_set_version(x, 2) &&
	    ASN1_INTEGER_set(X509_get_serialNumber(x), 1) &&
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)"keyline start-up probe", -1, -1, 0) &&
	    X509_set_subject_name(x, name) &&
	    X509_set_issuer_name(x, X509_get_subject_name(ca)) &&
	    X509_time_adj(X509_getm_notBefore(x), -3600, &now) != NULL &&
	    X509_time_adj(X509_getm_notAfter(x), 3600, &now) != NULL &&
	    X509_set_pubkey(x, key);
	if (ok) {
		X509V3_set_ctx(&v3, ca, x, NULL, NULL, 0);
		for (i = 0; ok && i < sizeof(exts) / sizeof(exts[0]); i++) {
			if ((e = X509V3_EXT_conf_nid(NULL, &v3, exts[i].nid,
			    exts[i].value)) == NULL) {
				/* No subject key identifier on the CA: no
				 * authority key identifier to copy. */
				if (exts[i].nid == NID_authority_key_identifier)
					continue;
				ok = 0;
				break;
			}
			ok = X509_add_ext(x, e, -1);
			X509_EXTENSION_free(e);
		}
	}
	ok = ok && X509_sign(x, key, EVP_sha256()) > 0;
	ERR_clear_error();
	X509_NAME_free(name);
	EVP_PKEY_free(key);
	if (!ok) {
		log_error("certcheck: cannot make the start-up probe");
		X509_free(x);
		return NULL;
	}
	return x;
}

/*
 * The certificate lies inside its issuer's validity: a CA that signs
 * beyond its own lifetime makes a device that stops working at a date
 * nobody chose.
 */
static int
certcheck_within_issuer(X509 *x, X509 *issuer, char *why, size_t whysz)
{
	char name[128];

	certcheck_name(issuer, name, sizeof(name));
	if (ASN1_TIME_compare(X509_get0_notAfter(x),
	    X509_get0_notAfter(issuer)) > 0) {
		snprintf(why, whysz, "certificate outlives its issuer '%s' "
		    "(notAfter after the issuer's)", name);
		return KL_ERR_CERT_INVALID;
	}
	if (ASN1_TIME_compare(X509_get0_notBefore(x),
	    X509_get0_notBefore(issuer)) < 0) {
		snprintf(why, whysz, "certificate starts before its issuer "
		    "'%s' (notBefore before the issuer's)", name);
		return KL_ERR_CERT_INVALID;
	}
	return 0;
}

/*
 * A CA certificate of the configuration (a fleet root or an
 * intermediate), checked for what every board's verification will demand
 * of it once it sits above a device certificate: a probe "issued" by it
 * is verified the way boards' certificates are (strict, at the same
 * time, with the same anchor exception).  The commonest faults are named
 * first in plain words.
 */
static int
certcheck_ca(const struct certcheck_trust *t, X509 *x, const char *what,
    time_t now, char *why, size_t whysz)
{
	uint32_t flags = X509_get_extension_flags(x);
	X509 *probe = NULL;
	char name[128];
	int err = 0, depth = 0, r;

	certcheck_name(x, name, sizeof(name));
	if (flags & EXFLAG_INVALID) {
		snprintf(why, whysz, "%s '%s' has malformed extensions", what,
		    name);
		return KL_ERR_CERT_INVALID;
	}
	if (!(flags & EXFLAG_CA)) {
		snprintf(why, whysz, "%s '%s' is not a CA certificate "
		    "(basicConstraints CA:TRUE missing)", what, name);
		return KL_ERR_CERT_INVALID;
	}
	if ((flags & EXFLAG_KUSAGE) &&
	    !(X509_get_key_usage(x) & KU_KEY_CERT_SIGN)) {
		snprintf(why, whysz, "%s '%s': keyUsage lacks keyCertSign",
		    what, name);
		return KL_ERR_CERT_INVALID;
	}
	if ((probe = certcheck_probe(x, now)) == NULL) {
		snprintf(why, whysz, "%s '%s': cannot set up verification",
		    what, name);
		return KL_ERR_CRYPTO;
	}
	r = certcheck_run_verify(t, probe, now, 1, &err, &depth, NULL);
	X509_free(probe);
	if (r == 0)
		return 0;
	if (r != KL_ERR_CERT_INVALID)
		snprintf(why, whysz, "%s '%s': cannot set up verification",
		    what, name);
	else if (err == X509_V_ERR_INVALID_PURPOSE && depth == 1)
		snprintf(why, whysz, "%s '%s' may not issue TLS client "
		    "certificates (extendedKeyUsage or nsCertType)", what,
		    name);
	else
		snprintf(why, whysz, "%s '%s' would fail every board's "
		    "validation: %s (at depth %d)", what, name,
		    X509_verify_cert_error_string(err), depth);
	return r;
}

int
certcheck_trust_check(const struct certcheck_trust *t, time_t now,
    char *why, size_t whysz)
{
	int i, r;

	if (t == NULL || why == NULL || whysz == 0)
		return KL_ERR_INVALID;
	if (now == 0)
		now = time(NULL);
	for (i = 0; i < sk_X509_num(t->roots); i++)
		if ((r = certcheck_ca(t, sk_X509_value(t->roots, i),
		    "fleet root", now, why, whysz)) != 0)
			return r;
	for (i = 0; i < sk_X509_num(t->untrusted); i++)
		if ((r = certcheck_ca(t, sk_X509_value(t->untrusted, i),
		    "intermediate", now, why, whysz)) != 0)
			return r;
	return 0;
}

X509 *
certcheck_parse_der(const uint8_t *der, size_t len)
{
	return certcheck_parse(der, len);
}

int
certcheck_verify(const struct certcheck_trust *t, const uint8_t *der,
    size_t der_len, const struct certcheck_expect *want, char *why,
    size_t whysz)
{
	X509 *x;
	int r;

	if ((x = certcheck_parse(der, der_len)) == NULL) {
		snprintf(why, whysz, "not a DER X.509 certificate");
		return KL_ERR_INVALID;
	}
	r = certcheck_verify_x509(t, x, want, why, whysz);
	X509_free(x);
	return r;
}

int
certcheck_verify_x509(const struct certcheck_trust *t, X509 *x,
    const struct certcheck_expect *want, char *why, size_t whysz)
{
	time_t now;
	X509 *issuer = NULL;
	int r = KL_ERR_INTERNAL;

	if (t == NULL || want == NULL || want->cn == NULL ||
	    want->spki == NULL || x == NULL) {
		snprintf(why, whysz, "internal: nothing to check against");
		return KL_ERR_INVALID;
	}
	now = want->now != 0 ? want->now : time(NULL);
	/* The leaf's own properties before the chain: verification with the
	 * TLS-client purpose would also refuse a bad keyUsage or an expired
	 * leaf, but only as "unsupported certificate purpose" and the like;
	 * an operator needs the specific reason. */
	if ((r = certcheck_validity(x, now, why, whysz)) != 0 ||
	    (r = certcheck_lifetime(x, t->prof.max_days, why, whysz)) != 0 ||
	    (r = certcheck_extensions(x, why, whysz)) != 0 ||
	    (r = certcheck_spki(x, want, why, whysz)) != 0 ||
	    (r = certcheck_subject(x, &t->prof, want->cn, why, whysz)) != 0 ||
	    (r = certcheck_chain(t, x, now, &issuer, why, whysz)) != 0 ||
	    (r = certcheck_within_issuer(x, issuer, why, whysz)) != 0)
		goto out;
	r = 0;
out:
	X509_free(issuer);
	return r;
}

int
certcheck_fingerprint(const uint8_t *der, size_t len, char out[65])
{
	X509 *x;

	if ((x = certcheck_parse(der, len)) == NULL)
		return KL_ERR_INVALID;
	X509_free(x);
	return certcheck_fingerprint_der(der, len, out);
}

int
certcheck_fingerprint_der(const uint8_t *der, size_t len, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0, i;

	if (der == NULL || len == 0)
		return KL_ERR_INVALID;
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
	X509 *x;
	int r;

	if ((x = certcheck_parse(der, len)) == NULL)
		return KL_ERR_INVALID;
	r = certcheck_serial_hex_x509(x, out, outsz);
	X509_free(x);
	return r;
}

int
certcheck_serial_hex_x509(X509 *x, char *out, size_t outsz)
{
	BIGNUM *bn = NULL;
	char *hex = NULL;
	size_t n, i;
	int r = KL_ERR_INVALID;

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
	return r;
}

/* ---- a P-256 CSR, without the decoders */

/* SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (66
 * bytes: no unused bits, then 04 and the point's X and Y) } */
const uint8_t certcheck_spki_p256_prefix[27] = {
	0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d,
	0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01,
	0x07, 0x03, 0x42, 0x00, 0x04,
};

/* AlgorithmIdentifier { ecdsa-with-SHA256 }, parameters absent (RFC 5758) */
static const uint8_t csr_alg_ecdsa_sha256[] = {
	0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
};

int
certcheck_spki_is_p256(const uint8_t *spki, size_t len)
{
	return spki != NULL && len == CERTCHECK_SPKI_P256_LEN &&
	    memcmp(spki, certcheck_spki_p256_prefix,
	    sizeof(certcheck_spki_p256_prefix)) == 0;
}

struct der_cur {
	const uint8_t *p, *end;
};

/*
 * The next TLV, which must have tag: val and vlen its contents, tlv and tlvlen
 * the whole element.  Minimal DER lengths of at most two bytes (a CSR is
 * never 64 KiB).  0 or -1.
 */
static int
der_next(struct der_cur *c, uint8_t tag, const uint8_t **val, size_t *vlen,
    const uint8_t **tlv, size_t *tlvlen)
{
	const uint8_t *start = c->p, *q = c->p;
	size_t left = (size_t)(c->end - c->p), len;

	if (left < 2 || q[0] != tag)
		return -1;
	if (q[1] < 0x80) {
		len = q[1];
		q += 2;
	} else if (q[1] == 0x81 && left >= 3 && q[2] >= 0x80) {
		len = q[2];
		q += 3;
	} else if (q[1] == 0x82 && left >= 4 && q[2] != 0) {
		len = ((size_t)q[2] << 8) | q[3];
		q += 4;
	} else
		return -1;
	if (len > (size_t)(c->end - q))
		return -1;
	*val = q;
	*vlen = len;
	c->p = q + len;
	if (tlv != NULL) {
		*tlv = start;
		*tlvlen = (size_t)(c->p - start);
	}
	return 0;
}

int
certcheck_csr_spki(const uint8_t *csr, size_t len, const uint8_t **spki,
    size_t *spki_len)
{
	struct der_cur all, req, cri;
	const uint8_t *v;
	size_t vlen;

	all.p = csr;
	all.end = csr + len;
	if (der_next(&all, 0x30, &v, &vlen, NULL, NULL) != 0 ||
	    all.p != all.end)
		return KL_ERR_INVALID;
	req.p = v;
	req.end = v + vlen;
	if (der_next(&req, 0x30, &v, &vlen, NULL, NULL) != 0)
		return KL_ERR_INVALID;
	cri.p = v;
	cri.end = v + vlen;
	if (der_next(&cri, 0x02, &v, &vlen, NULL, NULL) != 0 ||
	    der_next(&cri, 0x30, &v, &vlen, NULL, NULL) != 0 ||
	    der_next(&cri, 0x30, &v, &vlen, spki, spki_len) != 0)
		return KL_ERR_INVALID;
	return 0;
}

int
certcheck_csr_p256(const uint8_t *csr, size_t len, const uint8_t *spki,
    size_t spki_len, EVP_PKEY **pk, char *why, size_t whysz)
{
	struct der_cur all, req, cri;
	const uint8_t *v, *info, *tbs, *alg, *sig, *key;
	size_t vlen, info_len, tbs_len, alg_len, sig_len, key_len;
	EVP_PKEY_CTX *kctx = NULL;
	EVP_MD_CTX *md = NULL;
	EVP_PKEY *k = NULL;
	OSSL_PARAM params[3];
	int r = KL_ERR_INVALID;

	*pk = NULL;
	if (!certcheck_spki_is_p256(spki, spki_len)) {
		snprintf(why, whysz, "key is not a P-256 key");
		return KL_ERR_INVALID;
	}
	all.p = csr;
	all.end = csr + len;
	/* CertificationRequest ::= SEQUENCE { info, algorithm, signature } */
	if (der_next(&all, 0x30, &v, &vlen, NULL, NULL) != 0 ||
	    all.p != all.end) {
		snprintf(why, whysz, "does not parse: not one DER SEQUENCE");
		return KL_ERR_INVALID;
	}
	req.p = v;
	req.end = v + vlen;
	if (der_next(&req, 0x30, &info, &info_len, &tbs, &tbs_len) != 0 ||
	    der_next(&req, 0x30, &v, &vlen, &alg, &alg_len) != 0 ||
	    der_next(&req, 0x03, &sig, &sig_len, NULL, NULL) != 0 ||
	    req.p != req.end) {
		snprintf(why, whysz, "does not parse: not a PKCS#10 request");
		return KL_ERR_INVALID;
	}
	if (alg_len != sizeof(csr_alg_ecdsa_sha256) ||
	    memcmp(alg, csr_alg_ecdsa_sha256, alg_len) != 0) {
		snprintf(why, whysz, "is not signed with ecdsa-with-SHA256");
		return KL_ERR_INVALID;
	}
	if (sig_len < 2 || sig[0] != 0) {
		snprintf(why, whysz, "signature is not a whole number of "
		    "bytes");
		return KL_ERR_INVALID;
	}
	/* CertificationRequestInfo ::= SEQUENCE { version INTEGER (0),
	 * subject Name, subjectPKInfo, attributes [0] } */
	cri.p = info;
	cri.end = info + info_len;
	if (der_next(&cri, 0x02, &v, &vlen, NULL, NULL) != 0 || vlen != 1 ||
	    v[0] != 0 ||
	    der_next(&cri, 0x30, &v, &vlen, NULL, NULL) != 0 ||
	    der_next(&cri, 0x30, &v, &vlen, &key, &key_len) != 0 ||
	    der_next(&cri, 0xa0, &v, &vlen, NULL, NULL) != 0 ||
	    cri.p != cri.end) {
		snprintf(why, whysz, "does not parse: its request info is "
		    "not version 1, subject, key and attributes");
		return KL_ERR_INVALID;
	}
	if (key_len != spki_len || memcmp(key, spki, spki_len) != 0) {
		snprintf(why, whysz, "is not for the key it just generated");
		return KL_ERR_INVALID;
	}
	/* The key from its point (checked to be on the curve), not from
	 * the DER through the decoders. */
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
	    (char *)"prime256v1", 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY,
	    (void *)(spki + sizeof(certcheck_spki_p256_prefix) - 1), 65);
	params[2] = OSSL_PARAM_construct_end();
	if ((kctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL ||
	    EVP_PKEY_fromdata_init(kctx) != 1 ||
	    EVP_PKEY_fromdata(kctx, &k, EVP_PKEY_PUBLIC_KEY, params) != 1) {
		ERR_clear_error();
		snprintf(why, whysz, "key is not a point on P-256");
		goto out;
	}
	if ((md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k) != 1) {
		ERR_clear_error();
		snprintf(why, whysz, "cannot set up the signature check");
		r = KL_ERR_CRYPTO;
		goto out;
	}
	if (EVP_DigestVerify(md, sig + 1, sig_len - 1, tbs, tbs_len) != 1) {
		ERR_clear_error();
		snprintf(why, whysz, "signature does not verify");
		goto out;
	}
	*pk = k;
	k = NULL;
	r = 0;
out:
	EVP_MD_CTX_free(md);
	EVP_PKEY_CTX_free(kctx);
	EVP_PKEY_free(k);
	return r;
}
