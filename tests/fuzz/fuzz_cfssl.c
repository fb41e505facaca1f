/*
 * fuzz_cfssl.c: a CFSSL server's answer (station/ca/ca_cfssl.c,
 * ca_cfssl_parse()): the JSON, the error message that reaches the audit
 * log, the PEM certificate inside.
 *
 * Checks: a refusal's words are short, terminated and printable ASCII
 * (they go into the audit log); a success gives DER that parses back as
 * one whole X.509 certificate.
 */
#include "tests/fuzz/fuzz.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "station/ca/ca.h"
#include "common/err.h"
#include "common/log.h"

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_logs("fuzz_cfssl");
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *der = NULL;
	const unsigned char *q;
	size_t der_len = 0, i;
	char err[256];
	X509 *x;
	int r;

	err[0] = '\0';
	r = ca_cfssl_parse((const char *)data, size, &der, &der_len, err,
	    sizeof(err));
	if (r != 0) {
		FUZZ_CHECK(r == KL_ERR_CA, "ca_cfssl_parse %d", r);
		FUZZ_CHECK(der == NULL, "output written on failure");
		FUZZ_CHECK(err[0] != '\0' && strlen(err) < sizeof(err),
		    "no words for a refusal");
		for (i = 0; err[i] != '\0'; i++)
			FUZZ_CHECK((unsigned char)err[i] >= 0x20 &&
			    (unsigned char)err[i] < 0x7f,
			    "byte 0x%02x in the words for the audit log",
			    (unsigned char)err[i]);
		ERR_clear_error();
		return 0;
	}
	FUZZ_CHECK(der != NULL && der_len > 0, "no certificate");
	q = der;
	x = d2i_X509(NULL, &q, (long)der_len);
	FUZZ_CHECK(x != NULL && q == der + der_len,
	    "the DER handed out does not parse whole");
	X509_free(x);
	OPENSSL_free(der);
	ERR_clear_error();
	return 0;
}
