/*
 * checkpoint.h: the signer of the audit log's checkpoints (docs/audit.md,
 * "Checkpoints").
 *
 * The checkpoint key lives in the station token, beside the CA key.  One
 * process can hold only one session per PKCS#11 module (hsm.h: libp11
 * 0.4.12 breaks the first context when a second loads the same module),
 * and the CA backend holds that one.  So the signer is a small helper
 * process, forked before the CA opens the token: it logs in on its own,
 * keeps nothing but the key handle, and answers "sign these bytes" over a
 * socket pair.  The station never gets a way to read the key, and the
 * helper signs nothing but what the station sends it.
 */
#ifndef KL_CHECKPOINT_H
#define KL_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

struct checkpoint_signer;

/*
 * Load cert_path (PEM: the checkpoint key's certificate), fork the helper,
 * which opens module/token_label with pin (borrowed for the call; the
 * helper wipes its copy after the login) and finds the private key with
 * CKA_ID key_id_hex, then sign a test message and check it with the
 * certificate's key, so a key and certificate that do not belong together
 * stop the station at start-up.  Call before anything in this process
 * opens the same module, and before threads that hold locks exist.
 * 0 and *out (free with checkpoint_signer_free), or KL_ERR_CONFIG,
 * KL_ERR_HSM*, KL_ERR_NOT_FOUND, KL_ERR_IO with words in err.
 */
int checkpoint_signer_new(struct checkpoint_signer **out, const char *module,
    const char *token_label, const char *pin, const char *key_id_hex,
    const char *cert_path, char *err, size_t errsz);

/*
 * An audit_sign_fn (db/audit.h): arg is the struct checkpoint_signer.
 * SHA-256 over msg signed in the token (ECDSA DER or PKCS#1 v1.5), checked
 * against the certificate before it is returned.  0 and *sig (free()), or
 * KL_ERR_*.  Thread-safe.  A helper that does not answer within 10 s is
 * KL_ERR_TIMEOUT.
 */
int checkpoint_sign(void *arg, const uint8_t *msg, size_t len, uint8_t **sig,
    size_t *sig_len);

/* Ends the helper (closes its socket and waits for it).  NULL is fine. */
void checkpoint_signer_free(struct checkpoint_signer *s);

#endif
