/*
 * hsm.h: keys, CSRs and certificates inside a PKCS#11 token.
 *
 * Used by the board agent (the board's own token) and by the station (the
 * fleet CA key in the station's token).  Through libp11 and OpenSSL 3;
 * key pairs are made with C_GenerateKeyPair from the module's own function
 * list, because Debian 12's libp11 0.4.12 can only generate RSA.
 *
 * Private keys made here are CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE and not
 * CKA_EXTRACTABLE; nothing in this module can read a private key out.
 * Objects are addressed by CKA_ID (raw bytes; aktualizr's "02" is { 0x02 }).
 *
 * A struct hsm is one logged-in session on one token.  Not thread-safe:
 * callers that share one (the station CA) serialise calls themselves.
 * PINs passed in are copied only for the login and wiped; the caller wipes
 * its own copy.
 */
#ifndef KL_HSM_H
#define KL_HSM_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

struct hsm;

enum hsm_key_type {
	HSM_KEY_EC_P256 = 0,
	HSM_KEY_RSA2048,
	HSM_KEY_RSA3072,
};

/* "ec-p256", "rsa2048", "rsa3072" <-> enum. 0 or KL_ERR_INVALID. */
int hsm_key_type_from_name(const char *name, enum hsm_key_type *out);
const char *hsm_key_type_name(enum hsm_key_type t);

struct hsm_token_info {
	char label[33];		/* blank padding removed */
	char manufacturer[33];
	char model[17];
	char serial[17];
};

/*
 * Load module (path to the .so), find the initialised token whose label is
 * token_label (NULL or "" = the first initialised token, as aktualizr does),
 * open a read-write session and log in as user with pin.
 * Returns 0 and *out (free with hsm_close), KL_ERR_NOT_FOUND (module or
 * token), KL_ERR_HSM_LOGIN (wrong PIN, logged without the PIN), KL_ERR_HSM,
 * KL_ERR_EXISTS when this process already has that module open: libp11
 * 0.4.12 breaks the first context's sessions when a second one loads the
 * same module, so one struct hsm per module per process.
 */
int hsm_open(struct hsm **out, const char *module, const char *token_label,
    const char *pin);
void hsm_close(struct hsm *h);

int hsm_token_info(struct hsm *h, struct hsm_token_info *info);

/*
 * On (the default), hsm_sign() and hsm_make_csr() check each signature the
 * token made against the public key object with the same id before
 * returning it, and a mismatch (a stale handle, a pair split by a failed
 * move) is KL_ERR_HSM.  Off, they return the token's signature unchecked:
 * for the board agent, whose every signature (the CSR's, the proof of
 * possession) the station verifies against the key it was given, and for
 * which the check was a quarter of a fresh board's CPU (docs/hsm.md).
 */
void hsm_set_self_check(struct hsm *h, int on);

/*
 * Generate a key pair in the token with CKA_ID id and CKA_LABEL label
 * (private and public object both).  An existing key pair or certificate
 * with the same id is deleted first (re-provisioning).  *spki gets the DER
 * SubjectPublicKeyInfo of the new public key; caller frees with
 * OPENSSL_free().
 */
int hsm_generate_key(struct hsm *h, enum hsm_key_type t, const uint8_t *id,
    size_t id_len, const char *label, uint8_t **spki, size_t *spki_len);

/* DER SPKI of the public key with that id. Caller OPENSSL_free()s. */
int hsm_get_spki(struct hsm *h, const uint8_t *id, size_t id_len,
    uint8_t **spki, size_t *spki_len);

/*
 * An EVP_PKEY whose private operations run in the token (libp11).  Valid
 * until hsm_close(); caller frees with EVP_PKEY_free() before that.
 */
int hsm_get_private_key(struct hsm *h, const uint8_t *id, size_t id_len,
    EVP_PKEY **out);

/*
 * A PKCS#10 request for the key with that id, subject CN=cn, signed in the
 * token with SHA-256.  *der: caller OPENSSL_free()s.
 */
int hsm_make_csr(struct hsm *h, const uint8_t *id, size_t id_len,
    const char *cn, uint8_t **der, size_t *der_len);

/*
 * Sign SHA-256(data) with the private key with that id: ECDSA signature in
 * DER for EC keys, PKCS#1 v1.5 for RSA.  *sig: caller OPENSSL_free()s.
 */
int hsm_sign(struct hsm *h, const uint8_t *id, size_t id_len,
    const uint8_t *data, size_t len, uint8_t **sig, size_t *sig_len);

/*
 * Store a certificate object (CKA_ID id, CKA_LABEL label), replacing any
 * certificate with that id.
 */
int hsm_store_cert(struct hsm *h, const uint8_t *id, size_t id_len,
    const char *label, const uint8_t *der, size_t der_len);

/*
 * hsm_store_cert(), then the DER value of the object it made as the token
 * holds it, read by the object's handle: hsm_get_cert() after
 * hsm_store_cert() without searching for the certificate again.  On an
 * error after the store the certificate stays stored (as with the two
 * calls).  *back: caller OPENSSL_free()s.
 */
int hsm_store_cert_back(struct hsm *h, const uint8_t *id, size_t id_len,
    const char *label, const uint8_t *der, size_t der_len, uint8_t **back,
    size_t *back_len);

/* Destroy every certificate object with that id; none is no error. */
int hsm_delete_cert(struct hsm *h, const uint8_t *id, size_t id_len);

/* Read back the DER value of the certificate with that id. OPENSSL_free. */
int hsm_get_cert(struct hsm *h, const uint8_t *id, size_t id_len,
    uint8_t **der, size_t *der_len);

/*
 * Give every object at CKA_ID from (private key, public key, certificate)
 * the CKA_ID to, destroying the objects of the same class already at to
 * first; classes with nothing at from are left alone.  Running it again
 * after a power cut part-way finishes the move (what a board-side commit
 * relies on).  *moved (may be NULL) counts the objects moved.
 */
int hsm_move_id(struct hsm *h, const uint8_t *from, size_t from_len,
    const uint8_t *to, size_t to_len, int *moved);

/* Destroy every private key, public key and certificate with that id. */
int hsm_destroy_id(struct hsm *h, const uint8_t *id, size_t id_len);

/*
 * Destroy every key and certificate object whose CKA_ID is longer than
 * suffix and ends with it (staged objects left by an interrupted
 * session).  *destroyed (may be NULL) counts them.
 */
int hsm_destroy_suffix(struct hsm *h, const uint8_t *suffix,
    size_t suffix_len, int *destroyed);

struct hsm_key_attrs {
	int sensitive;
	int extractable;
	int always_sensitive;
	int never_extractable;
};

/* Attributes of the private key with that id (for tests and audits). */
int hsm_key_attrs(struct hsm *h, const uint8_t *id, size_t id_len,
    struct hsm_key_attrs *out);

/* Parse a hex CKA_ID ("02", "a1b2") into bytes. 0 or KL_ERR_INVALID. */
int hsm_id_from_hex(const char *hex, uint8_t *id, size_t idsz, size_t *id_len);

#endif
