/*
 * certcheck.h: what the station checks in every certificate a CA returns
 * before any of it reaches a board.
 *
 * Only the fleet's device profile passes: chain to the fleet root (through
 * configured intermediates), the same public key the board generated, a
 * subject of exactly CN = the device ID (plus the profile's fixed entries,
 * [ca] subject_extra), keyUsage critical and exactly digitalSignature,
 * extendedKeyUsage exactly clientAuth, basicConstraints absent or CA:FALSE,
 * no subjectAltName, no other critical extension, a lifetime of at most
 * the profile's maximum ([ca] max_validity_days), inside its issuer's
 * validity and inside its own at the time of the check.  The chain is
 * verified strictly (X509_V_FLAG_X509_STRICT), except that the fleet root
 * itself need not carry keyUsage.
 */
#ifndef KL_CERTCHECK_H
#define KL_CERTCHECK_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

struct certcheck_trust;

/*
 * Load the fleet root (PEM, one or more certificates) and optional
 * intermediates (PEM bundle, NULL for none).  Free with
 * certcheck_trust_free().  Thread-safe to use from many slots at once.
 */
int certcheck_trust_load(struct certcheck_trust **out, const char *root_pem,
    const char *intermediates_pem);
void certcheck_trust_free(struct certcheck_trust *t);

/* Lifetime limit when none is configured, and the largest allowed. */
#define CERTCHECK_DEFAULT_MAX_DAYS 3650
#define CERTCHECK_MAX_DAYS 36500

/*
 * The fleet's device profile beyond CN = device ID.  A freshly loaded
 * trust has the default: no extra subject entries, lifetime at most
 * CERTCHECK_DEFAULT_MAX_DAYS days (plus an hour for a CA's backdating).
 */
struct certcheck_profile {
	/* "O=Example Fleet,OU=devices": fixed subject entries every device
	 * certificate carries, each exactly once; NULL or "" for none.
	 * TYPE is a short or long attribute name other than CN; values
	 * cannot contain ','. */
	const char *subject_extra;
	unsigned max_validity_days;	/* 0 = CERTCHECK_DEFAULT_MAX_DAYS */
};

/* At most this many fixed subject entries, of at most this many bytes. */
#define CERTCHECK_MAX_EXTRA 8
#define CERTCHECK_MAX_VALUE 64

/* One fixed subject entry of the profile: an OpenSSL NID and its value. */
struct certcheck_name_entry {
	int nid;
	char value[CERTCHECK_MAX_VALUE + 1];
};

/*
 * Parse a subject_extra string ("O=Example Fleet, OU=devices"; NULL or ""
 * is none) into out[0..*n), which has room for CERTCHECK_MAX_EXTRA.  The
 * one parser the check and the CA backends that name the subject use.
 * 0, or KL_ERR_CONFIG with the reason in why (prefixed "subject_extra: ").
 */
int certcheck_subject_extra_parse(const char *s,
    struct certcheck_name_entry *out, int *n, char *why, size_t whysz);

/*
 * Set t's profile, at start-up before t is shared.  0, or KL_ERR_CONFIG
 * with the key and the reason in why (t unchanged).
 */
int certcheck_trust_set_profile(struct certcheck_trust *t,
    const struct certcheck_profile *p, char *why, size_t whysz);

/*
 * Start-up check of the loaded trust: every fleet root and every
 * intermediate must pass what certcheck_verify() will demand of it above
 * a board's certificate (a CA by basicConstraints, keyCertSign when
 * keyUsage is present, allowed to issue TLS client certificates, inside
 * its validity at now (0 = time(NULL)), and chaining to a fleet root under
 * the same strict verification).  A fleet root need not carry keyUsage
 * (docs/architecture.md, "Decisions").  0, or KL_ERR_CERT_INVALID with
 * the certificate and the reason in why.
 */
int certcheck_trust_check(const struct certcheck_trust *t, time_t now,
    char *why, size_t whysz);

struct certcheck_expect {
	const char *cn;		/* the device ID */
	const uint8_t *spki;	/* DER SPKI the board reported */
	size_t spki_len;
	time_t now;		/* 0 = time(NULL) */
};

/*
 * 0 when the DER certificate passes every check; KL_ERR_CERT_INVALID with
 * the first failed check in words in why ("public key differs from the
 * board's key", "not issued by the fleet CA: unable to get local issuer
 * certificate", ...); KL_ERR_INVALID when der does not parse.
 */
int certcheck_verify(const struct certcheck_trust *t, const uint8_t *der,
    size_t der_len, const struct certcheck_expect *want, char *why,
    size_t whysz);

/* The same on a certificate parsed once (certcheck_parse_der), for a
 * caller that also needs it for other things; x borrowed. */
int certcheck_verify_x509(const struct certcheck_trust *t, X509 *x,
    const struct certcheck_expect *want, char *why, size_t whysz);

/* Exactly len bytes of DER (no trailing data, at most CERTCHECK_MAX_DER):
 * a new X509 the caller X509_free()s, or NULL. */
X509 *certcheck_parse_der(const uint8_t *der, size_t len);

/*
 * A board's PKCS#10 request for a P-256 key, checked without OpenSSL's
 * provider decoders (a third of the station's time per board, in 3.0):
 * csr must be exactly one DER CertificationRequest whose
 * SubjectPublicKeyInfo is byte for byte spki (a P-256 key, uncompressed
 * point: CERTCHECK_SPKI_P256_LEN bytes beginning with
 * certcheck_spki_p256_prefix), signed with ecdsa-with-SHA256 by that key.
 * Lengths must be minimal DER, nothing may follow.  0 and *pk (the key, a
 * new EVP_PKEY the caller frees), or KL_ERR_INVALID with words in why
 * that follow "the CSR" ("is not for the key it just generated",
 * "signature does not verify", "does not parse: ...").
 */
#define CERTCHECK_SPKI_P256_LEN 91
extern const uint8_t certcheck_spki_p256_prefix[27];
int certcheck_spki_is_p256(const uint8_t *spki, size_t len);
int certcheck_csr_p256(const uint8_t *csr, size_t len, const uint8_t *spki,
    size_t spki_len, EVP_PKEY **pk, char *why, size_t whysz);

/* Where the SubjectPublicKeyInfo sits in a DER PKCS#10 request (*spki
 * borrowed from csr, the whole element): only its place is read, the
 * request is checked by certcheck_csr_p256 or OpenSSL.  0 or
 * KL_ERR_INVALID. */
int certcheck_csr_spki(const uint8_t *csr, size_t len, const uint8_t **spki,
    size_t *spki_len);

/* Hex helpers for the audit log: SHA-256 of the DER (64 hex + NUL) and the
 * serial number in hex.  0 or KL_ERR_INVALID.  certcheck_fingerprint also
 * requires der to parse; _der hashes the bytes as they are; _x509 takes a
 * parsed certificate (borrowed). */
int certcheck_fingerprint(const uint8_t *der, size_t len, char out[65]);
int certcheck_fingerprint_der(const uint8_t *der, size_t len, char out[65]);
int certcheck_serial_hex(const uint8_t *der, size_t len, char *out,
    size_t outsz);
int certcheck_serial_hex_x509(X509 *x, char *out, size_t outsz);

#endif
