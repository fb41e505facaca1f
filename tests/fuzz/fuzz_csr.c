/*
 * fuzz_csr.c: a board's PKCS#10 request as certcheck reads it without
 * OpenSSL's parser (certcheck_csr_spki, certcheck_csr_p256): the bytes
 * come off the wire (a version-2 KEYGEN answer, a CSR answer).
 *
 * Checks: the SPKI found lies inside the input; certcheck_csr_p256 takes
 * a request only when OpenSSL's own parser takes it too (it parses whole,
 * its key is those SPKI bytes, its signature verifies) and hands back a
 * key whose DER is that SPKI; a refusal gives words.
 */
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "common/err.h"
#include "station/ca/certcheck.h"
#include "tests/fuzz/fuzz.h"
#include "tests/unit/pki_util.h"

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_logs("fuzz_csr");
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *spki = NULL;
	size_t spki_len = 0;
	unsigned char *der = NULL;
	EVP_PKEY *pk = NULL;
	char why[200];
	int r, len;

	if (size > 16384)	/* the station's CSR maximum */
		return 0;
	if (certcheck_csr_spki(data, size, &spki, &spki_len) != 0)
		return 0;
	FUZZ_CHECK(spki >= data && spki_len <= size &&
	    (size_t)(spki - data) <= size - spki_len, "SPKI outside the input");
	why[0] = '\0';
	r = certcheck_csr_p256(data, size, spki, spki_len, &pk, why,
	    sizeof(why));
	if (r != 0) {
		FUZZ_CHECK(r == KL_ERR_INVALID || r == KL_ERR_CRYPTO,
		    "unexpected error %d", r);
		FUZZ_CHECK(pk == NULL && why[0] != '\0', "refusal without words");
		ERR_clear_error();
		return 0;
	}
	FUZZ_CHECK(pk != NULL, "accepted without a key");
	FUZZ_CHECK(pki_csr_openssl_accepts(data, size, spki, spki_len),
	    "accepted a request OpenSSL refuses");
	len = i2d_PUBKEY(pk, &der);
	FUZZ_CHECK(len > 0 && (size_t)len == spki_len &&
	    memcmp(der, spki, spki_len) == 0, "key differs from the SPKI");
	OPENSSL_free(der);
	EVP_PKEY_free(pk);
	ERR_clear_error();
	return 0;
}
