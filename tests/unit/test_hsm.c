/*
 * test_hsm.c: hsm/ against a real SoftHSM token made for the run.
 *
 * The group setup writes a softhsm2.conf into a fresh temporary directory,
 * points SOFTHSM2_CONF at it and initialises a token "test-board" (user PIN
 * 1234) with softhsm2-util.  Tests run in order and build on each other
 * (keys made by one are used by the next), as a board's provisioning does.
 * Without SoftHSM (or pkcs11-tool) the tests fail, naming scripts/setup:
 * a missing dependency never passes for a skipped check.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <dlfcn.h>

#include <p11-kit/pkcs11.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "hsm/hsm.h"
#include "common/err.h"

#define MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define LABEL "test-board"
#define PIN "1234"

static char tmpdir[64];
static int have_softhsm;
static struct hsm *H;
static const uint8_t ID1[] = { 0x01 }, ID2[] = { 0x02 }, ID3[] = { 0x03 };

static int
group_setup(void **state)
{
	char path[128], cmd[512];
	FILE *f;

	(void)state;
	if (access(MODULE, R_OK) != 0 || system("command -v softhsm2-util "
	    ">/dev/null 2>&1") != 0)
		return 0;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_hsm.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s/tokens", tmpdir);
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", path);
	if (system(cmd) != 0)
		return -1;
	snprintf(path, sizeof(path), "%s/softhsm2.conf", tmpdir);
	f = fopen(path, "w");
	if (f == NULL)
		return -1;
	fprintf(f, "directories.tokendir = %s/tokens\n"
	    "objectstore.backend = file\nlog.level = ERROR\n", tmpdir);
	fclose(f);
	setenv("SOFTHSM2_CONF", path, 1);
	if (system("softhsm2-util --init-token --free --label " LABEL
	    " --so-pin 5678 --pin " PIN " >/dev/null") != 0)
		return -1;
	have_softhsm = 1;
	return 0;
}

static int
group_teardown(void **state)
{
	char cmd[128];

	(void)state;
	hsm_close(H);
	H = NULL;
	if (tmpdir[0] != '\0') {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			return -1;
	}
	return 0;
}

static void
need_hsm(void)
{
	if (!have_softhsm)
		fail_msg("SoftHSM missing: run scripts/setup");
	if (H == NULL)
		assert_int_equal(hsm_open(&H, MODULE, LABEL, PIN), 0);
}

static EVP_PKEY *
parse_spki(const uint8_t *der, size_t len)
{
	const unsigned char *p = der;
	EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)len);

	assert_non_null(pk);
	assert_ptr_equal(p, der + len);
	return pk;
}

static void
test_open_errors(void **state)
{
	struct hsm *h = (struct hsm *)0x1;

	(void)state;
	if (!have_softhsm)
		fail_msg("SoftHSM missing: run scripts/setup");
	assert_int_equal(hsm_open(&h, MODULE, LABEL, "9999"),
	    KL_ERR_HSM_LOGIN);
	assert_ptr_equal(h, (struct hsm *)0x1);
	assert_int_equal(hsm_open(&h, MODULE, "no-such-token", PIN),
	    KL_ERR_NOT_FOUND);
	assert_int_equal(hsm_open(&h, "/nonexistent/module.so", LABEL, PIN),
	    KL_ERR_NOT_FOUND);
	assert_int_equal(hsm_open(NULL, MODULE, LABEL, PIN), KL_ERR_INVALID);
	hsm_close(NULL);
	/* First initialised token, as aktualizr picks it. */
	assert_int_equal(hsm_open(&h, MODULE, NULL, PIN), 0);
	hsm_close(h);
}

static void
test_token_info(void **state)
{
	struct hsm_token_info ti;

	(void)state;
	need_hsm();
	assert_int_equal(hsm_token_info(H, &ti), 0);
	assert_string_equal(ti.label, LABEL);
	assert_non_null(strstr(ti.manufacturer, "SoftHSM"));
	assert_true(ti.serial[0] != '\0');
	assert_true(ti.serial[strlen(ti.serial) - 1] != ' ');
}

static void
test_key_types(void **state)
{
	enum hsm_key_type t;

	(void)state;
	assert_int_equal(hsm_key_type_from_name("ec-p256", &t), 0);
	assert_int_equal(t, HSM_KEY_EC_P256);
	assert_int_equal(hsm_key_type_from_name("rsa3072", &t), 0);
	assert_int_equal(t, HSM_KEY_RSA3072);
	assert_int_equal(hsm_key_type_from_name("rsa1024", &t),
	    KL_ERR_INVALID);
	assert_string_equal(hsm_key_type_name(HSM_KEY_RSA2048), "rsa2048");
}

static void
test_id_from_hex(void **state)
{
	uint8_t id[4];
	size_t n = 99;

	(void)state;
	assert_int_equal(hsm_id_from_hex("02", id, sizeof(id), &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(id[0], 2);
	assert_int_equal(hsm_id_from_hex("a1B2", id, sizeof(id), &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(id[0], 0xa1);
	assert_int_equal(id[1], 0xb2);
	n = 99;
	assert_int_equal(hsm_id_from_hex("zz", id, sizeof(id), &n),
	    KL_ERR_INVALID);
	assert_int_equal(hsm_id_from_hex("", id, sizeof(id), &n),
	    KL_ERR_INVALID);
	assert_int_equal(hsm_id_from_hex("123", id, sizeof(id), &n),
	    KL_ERR_INVALID);
	assert_int_equal(hsm_id_from_hex("0g", id, sizeof(id), &n),
	    KL_ERR_INVALID);
	assert_int_equal(hsm_id_from_hex("0102030405", id, sizeof(id), &n),
	    KL_ERR_INVALID);
	assert_int_equal(n, 99);
}

/* der is what OpenSSL writes for pk, byte for byte. */
static void
check_spki_is_openssls(EVP_PKEY *pk, const uint8_t *der, size_t len)
{
	unsigned char *ref = NULL;
	int n;

	n = i2d_PUBKEY(pk, &ref);
	assert_true(n > 0);
	assert_int_equal((size_t)n, len);
	assert_memory_equal(ref, der, len);
	OPENSSL_free(ref);
}

/* CSR parses, carries the SPKI (as OpenSSL writes it) and CN, and
 * verifies. */
static void
check_csr(const uint8_t *id, EVP_PKEY *spki, const char *cn)
{
	uint8_t *der = NULL;
	size_t len = 0;
	const unsigned char *p;
	X509_REQ *req;
	EVP_PKEY *rpk;
	unsigned char *xder;
	int xlen;
	char got[64];

	assert_int_equal(hsm_make_csr(H, id, 1, cn, &der, &len), 0);
	p = der;
	req = d2i_X509_REQ(NULL, &p, (long)len);
	assert_non_null(req);
	assert_ptr_equal(p, der + len);
	rpk = X509_REQ_get0_pubkey(req);
	assert_non_null(rpk);
	assert_int_equal(EVP_PKEY_eq(rpk, spki), 1);
	xder = NULL;
	xlen = i2d_X509_PUBKEY(X509_REQ_get_X509_PUBKEY(req), &xder);
	assert_true(xlen > 0);
	check_spki_is_openssls(spki, xder, (size_t)xlen);
	OPENSSL_free(xder);
	/* And the request re-encodes to the same bytes. */
	xder = NULL;
	assert_int_equal(i2d_X509_REQ(req, &xder), (int)len);
	assert_memory_equal(xder, der, len);
	OPENSSL_free(xder);
	assert_int_equal(X509_REQ_verify(req, spki), 1);
	assert_true(X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(req),
	    NID_commonName, got, sizeof(got)) > 0);
	assert_string_equal(got, cn);
	X509_REQ_free(req);
	OPENSSL_free(der);
}

/* hsm_sign over data verifies with the SPKI, and not over other data. */
static void
check_sign(const uint8_t *id, EVP_PKEY *spki)
{
	static const uint8_t msg[] = "keyline proof of possession";
	uint8_t *sig = NULL;
	size_t slen = 0;
	EVP_MD_CTX *md;

	assert_int_equal(hsm_sign(H, id, 1, msg, sizeof(msg), &sig, &slen), 0);
	md = EVP_MD_CTX_new();
	assert_non_null(md);
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL,
	    spki), 1);
	assert_int_equal(EVP_DigestVerify(md, sig, slen, msg, sizeof(msg)), 1);
	EVP_MD_CTX_free(md);
	md = EVP_MD_CTX_new();
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL,
	    spki), 1);
	assert_int_not_equal(EVP_DigestVerify(md, sig, slen, msg,
	    sizeof(msg) - 1), 1);
	EVP_MD_CTX_free(md);
	OPENSSL_free(sig);
}

static int
count_privkeys(const char *idhex)
{
	char cmd[512];
	FILE *p;
	int n = 0;
	char line[256];

	snprintf(cmd, sizeof(cmd), "pkcs11-tool --module " MODULE
	    " --login --pin " PIN " --list-objects --type privkey --id %s "
	    "2>/dev/null", idhex);
	p = popen(cmd, "r");
	assert_non_null(p);
	while (fgets(line, sizeof(line), p) != NULL)
		if (strncmp(line, "Private Key Object", 18) == 0)
			n++;
	pclose(p);
	return n;
}

static void
test_ec_key(void **state)
{
	uint8_t *spki = NULL, *spki2 = NULL, *again = NULL;
	size_t len = 0, len2 = 0, alen = 0;
	EVP_PKEY *pk, *pk2;
	char group[32];
	size_t glen = 0;
	struct hsm_key_attrs ka;

	(void)state;
	need_hsm();
	assert_int_equal(hsm_generate_key(H, HSM_KEY_EC_P256, ID2, 1, "tls",
	    &spki, &len), 0);
	pk = parse_spki(spki, len);
	assert_true(EVP_PKEY_is_a(pk, "EC"));
	assert_int_equal(EVP_PKEY_get_utf8_string_param(pk,
	    OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &glen), 1);
	assert_string_equal(group, "prime256v1");
	/* hsm.c writes a P-256 SPKI by hand: it must be OpenSSL's bytes. */
	check_spki_is_openssls(pk, spki, len);
	assert_int_equal(hsm_get_spki(H, ID2, 1, &again, &alen), 0);
	assert_int_equal(alen, len);
	assert_memory_equal(again, spki, len);
	OPENSSL_free(again);

	assert_int_equal(hsm_key_attrs(H, ID2, 1, &ka), 0);
	assert_int_equal(ka.sensitive, 1);
	assert_int_equal(ka.extractable, 0);
	assert_int_equal(ka.always_sensitive, 1);
	assert_int_equal(ka.never_extractable, 1);

	check_csr(ID2, pk, "board-0001");
	check_sign(ID2, pk);
	/* Without the self-check (the board agent's way): the same valid
	 * request and signature, the public key never made an EVP_PKEY. */
	hsm_set_self_check(H, 0);
	check_csr(ID2, pk, "board-0001");
	check_sign(ID2, pk);
	hsm_set_self_check(H, 1);

	/* Re-provisioning replaces the pair; libp11's view follows. */
	assert_int_equal(hsm_generate_key(H, HSM_KEY_EC_P256, ID2, 1, "tls",
	    &spki2, &len2), 0);
	pk2 = parse_spki(spki2, len2);
	assert_int_not_equal(EVP_PKEY_eq(pk, pk2), 1);
	check_csr(ID2, pk2, "board-0001");
	check_sign(ID2, pk2);
	if (system("command -v pkcs11-tool >/dev/null 2>&1") != 0)
		fail_msg("pkcs11-tool missing: run scripts/setup");
	assert_int_equal(count_privkeys("02"), 1);

	EVP_PKEY_free(pk);
	EVP_PKEY_free(pk2);
	OPENSSL_free(spki);
	OPENSSL_free(spki2);
}

static void
test_rsa_key(void **state)
{
	uint8_t *spki = NULL;
	size_t len = 0;
	EVP_PKEY *pk;
	struct hsm_key_attrs ka;

	(void)state;
	need_hsm();
	assert_int_equal(hsm_generate_key(H, HSM_KEY_RSA2048, ID3, 1,
	    "uptane", &spki, &len), 0);
	pk = parse_spki(spki, len);
	assert_true(EVP_PKEY_is_a(pk, "RSA"));
	assert_int_equal(EVP_PKEY_get_bits(pk), 2048);
	assert_int_equal(hsm_key_attrs(H, ID3, 1, &ka), 0);
	assert_int_equal(ka.sensitive, 1);
	assert_int_equal(ka.extractable, 0);
	check_csr(ID3, pk, "board-0001");
	check_sign(ID3, pk);
	hsm_set_self_check(H, 0);
	check_csr(ID3, pk, "board-0001");
	check_sign(ID3, pk);
	hsm_set_self_check(H, 1);
	EVP_PKEY_free(pk);
	OPENSSL_free(spki);
}

/* What the station CA does: X509_sign with the token key; nou
 * organizational units of 60 bytes each make it as large as wanted. */
static uint8_t *
self_signed_ou(const uint8_t *id, const char *cn, int nou, size_t *len)
{
	EVP_PKEY *priv = NULL, *pub;
	uint8_t *spki = NULL, *der = NULL;
	size_t slen = 0;
	X509 *x;
	X509_NAME *name;
	int n;

	assert_int_equal(hsm_get_private_key(H, id, 1, &priv), 0);
	assert_int_equal(hsm_get_spki(H, id, 1, &spki, &slen), 0);
	pub = parse_spki(spki, slen);
	x = X509_new();
	assert_non_null(x);
	assert_int_equal(X509_set_version(x, 2), 1);
	assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 42), 1);
	name = X509_get_subject_name(x);
	assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
	    (const unsigned char *)cn, -1, -1, 0), 1);
	for (; nou > 0; nou--)
		assert_int_equal(X509_NAME_add_entry_by_txt(name, "OU",
		    MBSTRING_UTF8, (const unsigned char *)"keyline keyline "
		    "keyline keyline keyline keyline keyline keyline ", -1,
		    -1, 0), 1);
	assert_int_equal(X509_set_issuer_name(x, name), 1);
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
	assert_int_equal(X509_set_pubkey(x, pub), 1);
	assert_true(X509_sign(x, priv, EVP_sha256()) > 0);
	assert_int_equal(X509_verify(x, pub), 1);
	n = i2d_X509(x, &der);
	assert_true(n > 0);
	*len = (size_t)n;
	X509_free(x);
	EVP_PKEY_free(pub);
	EVP_PKEY_free(priv);
	OPENSSL_free(spki);
	return der;
}

static uint8_t *
self_signed(const uint8_t *id, const char *cn, size_t *len)
{
	return self_signed_ou(id, cn, 0, len);
}

/*
 * hsm.c reads a certificate's fields with OpenSSL's generic parser, not
 * d2i_X509 (docs/hsm.md): what is not DER, or not shaped as a
 * certificate, is still refused.  c is a good certificate of len bytes
 * (its outer length in two bytes: 30 82 hi lo).
 */
static void
check_not_certs(const uint8_t *c, size_t len)
{
	uint8_t *b = malloc(len + 8);
	uint8_t *csr = NULL;
	size_t clen = 0, vo;

	assert_non_null(b);
	assert_int_equal(c[0], 0x30);
	assert_int_equal(c[1], 0x82);
	/* BER, not DER: the outer length in three bytes. */
	b[0] = 0x30;
	b[1] = 0x83;
	b[2] = 0x00;
	memcpy(b + 3, c + 2, len - 2);
	assert_int_equal(hsm_store_cert(H, ID1, 1, "client", b, len + 1),
	    KL_ERR_INVALID);
	/* Anything after it. */
	memcpy(b, c, len);
	b[len] = 0x00;
	assert_int_equal(hsm_store_cert(H, ID1, 1, "client", b, len + 1),
	    KL_ERR_INVALID);
	/* Three elements that are no certificate: the TBSCertificate a SET. */
	memcpy(b, c, len);
	assert_int_equal(b[4], 0x30);
	b[4] = 0x31;
	assert_int_equal(hsm_store_cert(H, ID1, 1, "client", b, len),
	    KL_ERR_INVALID);
	/* A context tag other than [0] where the version goes. */
	memcpy(b, c, len);
	vo = 4 + 2 + ((b[5] & 0x80) != 0 ? (size_t)(b[5] & 0x7f) : 0);
	assert_int_equal(b[vo], 0xa0);
	b[vo] = 0xa1;
	assert_int_equal(hsm_store_cert(H, ID1, 1, "client", b, len),
	    KL_ERR_INVALID);
	/* A CSR is not a certificate. */
	assert_int_equal(hsm_make_csr(H, ID2, 1, "board-0001", &csr, &clen),
	    0);
	assert_int_equal(hsm_store_cert(H, ID1, 1, "client", csr, clen),
	    KL_ERR_INVALID);
	OPENSSL_free(csr);
	free(b);
}

static void
test_certs(void **state)
{
	uint8_t *c1, *c2, *back = NULL;
	size_t l1 = 0, l2 = 0, blen = 0;

	(void)state;
	need_hsm();
	/* EC (id 02) and RSA (id 03) keys both sign certificates. */
	c1 = self_signed(ID2, "board-0001", &l1);
	c2 = self_signed(ID3, "board-0001-rsa", &l2);
	assert_int_equal(hsm_get_cert(H, ID1, 1, &back, &blen),
	    KL_ERR_NOT_FOUND);
	assert_int_equal(hsm_store_cert(H, ID1, 1, "client", c1, l1), 0);
	assert_int_equal(hsm_get_cert(H, ID1, 1, &back, &blen), 0);
	assert_int_equal(blen, l1);
	assert_memory_equal(back, c1, l1);
	OPENSSL_free(back);
	back = NULL;
	assert_int_equal(hsm_store_cert(H, ID1, 1, "client", c2, l2), 0);
	assert_int_equal(hsm_get_cert(H, ID1, 1, &back, &blen), 0);
	assert_int_equal(blen, l2);
	assert_memory_equal(back, c2, l2);
	OPENSSL_free(back);
	/* Stored and read back in one call: what the token holds, and it
	 * replaced c2 as hsm_store_cert() does. */
	back = NULL;
	assert_int_equal(hsm_store_cert_back(H, ID1, 1, "client", c1, l1,
	    &back, &blen), 0);
	assert_int_equal(blen, l1);
	assert_memory_equal(back, c1, l1);
	OPENSSL_free(back);
	back = NULL;
	assert_int_equal(hsm_get_cert(H, ID1, 1, &back, &blen), 0);
	assert_int_equal(blen, l1);
	assert_memory_equal(back, c1, l1);
	OPENSSL_free(back);
	assert_int_equal(hsm_store_cert_back(H, ID1, 1, "client", c1, l1,
	    NULL, &blen), KL_ERR_INVALID);
	assert_int_equal(hsm_store_cert_back(H, ID1, 1, "client", c1, l1 - 1,
	    &back, &blen), KL_ERR_INVALID);
	/* Truncated and bit-flipped DER is refused. */
	assert_int_equal(hsm_store_cert(H, ID1, 1, "client", c1, l1 - 1),
	    KL_ERR_INVALID);
	c1[0] ^= 0x01;
	assert_int_equal(hsm_store_cert(H, ID1, 1, "client", c1, l1),
	    KL_ERR_INVALID);
	c1[0] ^= 0x01;
	check_not_certs(c1, l1);
	OPENSSL_free(c1);
	OPENSSL_free(c2);
}

/* The module's own function list and a session on the test token. */
static CK_FUNCTION_LIST_PTR
raw_session(void **dl, CK_SESSION_HANDLE *s)
{
	CK_RV (*get_list)(CK_FUNCTION_LIST_PTR_PTR);
	CK_FUNCTION_LIST_PTR fl = NULL;
	CK_SLOT_ID slots[8];
	CK_ULONG nslots = 8, i;
	CK_RV rv;

	*dl = dlopen(MODULE, RTLD_NOW | RTLD_LOCAL);
	assert_non_null(*dl);
	*(void **)&get_list = dlsym(*dl, "C_GetFunctionList");
	assert_non_null(get_list);
	assert_int_equal(get_list(&fl), CKR_OK);
	rv = fl->C_Initialize(NULL);
	assert_true(rv == CKR_CRYPTOKI_ALREADY_INITIALIZED);
	assert_int_equal(fl->C_GetSlotList(CK_TRUE, slots, &nslots), CKR_OK);
	for (i = 0; i < nslots; i++) {
		CK_TOKEN_INFO ti;

		if (fl->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
		    memcmp(ti.label, LABEL, strlen(LABEL)) == 0)
			break;
	}
	assert_true(i < nslots);
	assert_int_equal(fl->C_OpenSession(slots[i], CKF_SERIAL_SESSION,
	    NULL, NULL, s), CKR_OK);
	return fl;
}

/*
 * hsm_store_cert() makes the certificate object itself (it used to be
 * libp11's PKCS11_store_certificate()): the same attributes as libp11
 * 0.4.12 gives it, hashes following the signature's digest.  And a
 * certificate larger than the first guess of hsm_get_cert() reads back
 * whole.
 */
static void
test_cert_object(void **state)
{
	static const uint8_t ID4[] = { 0x04 };
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE, gcls = 0;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_ID, (void *)ID4, 1 },
	};
	CK_CERTIFICATE_TYPE ctype = 0;
	CK_MECHANISM_TYPE hash_alg = 0;
	CK_BBOOL tok = CK_FALSE;
	uint8_t subj[8192], iss[8192], hash[64], val[16384], label[64];
	CK_ATTRIBUTE a[] = {
		{ CKA_CLASS, &gcls, sizeof(gcls) },
		{ CKA_TOKEN, &tok, sizeof(tok) },
		{ CKA_CERTIFICATE_TYPE, &ctype, sizeof(ctype) },
		{ CKA_SUBJECT, subj, sizeof(subj) },
		{ CKA_ISSUER, iss, sizeof(iss) },
		{ CKA_NAME_HASH_ALGORITHM, &hash_alg, sizeof(hash_alg) },
		{ CKA_HASH_OF_SUBJECT_PUBLIC_KEY, hash, sizeof(hash) },
		{ CKA_VALUE, val, sizeof(val) },
		{ CKA_LABEL, label, sizeof(label) },
	};
	CK_FUNCTION_LIST_PTR fl;
	CK_SESSION_HANDLE s = 0;
	CK_OBJECT_HANDLE obj;
	CK_ULONG n = 0;
	uint8_t *der, *back = NULL, md[EVP_MAX_MD_SIZE];
	unsigned char *name = NULL;
	unsigned int mdlen = 0;
	size_t len = 0, blen = 0;
	const unsigned char *p;
	X509 *x;
	int nlen;
	void *dl;

	(void)state;
	need_hsm();
	/* Larger than hsm_get_cert()'s first guess (4 KiB). */
	der = self_signed_ou(ID2, "board-0001", 80, &len);
	assert_true(len > 4096);
	assert_int_equal(hsm_store_cert(H, ID4, 1, "client", der, len), 0);
	assert_int_equal(hsm_get_cert(H, ID4, 1, &back, &blen), 0);
	assert_int_equal(blen, len);
	assert_memory_equal(back, der, len);
	OPENSSL_free(back);
	back = NULL;
	assert_int_equal(hsm_store_cert_back(H, ID4, 1, "client", der, len,
	    &back, &blen), 0);
	assert_int_equal(blen, len);
	assert_memory_equal(back, der, len);
	OPENSSL_free(back);

	fl = raw_session(&dl, &s);
	assert_int_equal(fl->C_FindObjectsInit(s, tmpl, 2), CKR_OK);
	assert_int_equal(fl->C_FindObjects(s, &obj, 1, &n), CKR_OK);
	assert_int_equal(fl->C_FindObjectsFinal(s), CKR_OK);
	assert_int_equal(n, 1);
	assert_int_equal(fl->C_GetAttributeValue(s, obj, a,
	    sizeof(a) / sizeof(a[0])), CKR_OK);
	assert_int_equal(gcls, CKO_CERTIFICATE);
	assert_int_equal(tok, CK_TRUE);
	assert_int_equal(ctype, CKC_X_509);
	assert_int_equal(a[7].ulValueLen, len);
	assert_memory_equal(val, der, len);
	assert_int_equal(a[8].ulValueLen, strlen("client"));
	assert_memory_equal(label, "client", strlen("client"));
	p = der;
	x = d2i_X509(NULL, &p, (long)len);
	assert_non_null(x);
	nlen = i2d_X509_NAME(X509_get_subject_name(x), &name);
	assert_int_equal(a[3].ulValueLen, nlen);
	assert_memory_equal(subj, name, (size_t)nlen);
	OPENSSL_free(name);
	name = NULL;
	nlen = i2d_X509_NAME(X509_get_issuer_name(x), &name);
	assert_int_equal(a[4].ulValueLen, nlen);
	assert_memory_equal(iss, name, (size_t)nlen);
	OPENSSL_free(name);
	/* ecdsa-with-SHA256: SHA-256, as libp11 0.4.12 chose. */
	assert_int_equal(hash_alg, CKM_SHA256);
	assert_int_equal(X509_pubkey_digest(x, EVP_sha256(), md, &mdlen), 1);
	assert_int_equal(a[6].ulValueLen, mdlen);
	assert_memory_equal(hash, md, mdlen);
	X509_free(x);
	assert_int_equal(fl->C_CloseSession(s), CKR_OK);
	dlclose(dl);
	assert_int_equal(hsm_delete_cert(H, ID4, 1), 0);
	OPENSSL_free(der);
}

/* Objects of a type ("privkey", "pubkey") whose CKA_ID is exactly idhex,
 * read from pkcs11-tool's listing (it does not filter by --id). */
static int
count_exact(const char *type, const char *idhex)
{
	char cmd[512], line[256], want[64];
	FILE *p;
	int n = 0;

	snprintf(cmd, sizeof(cmd), "pkcs11-tool --module " MODULE
	    " --login --pin " PIN " --list-objects --type %s 2>/dev/null",
	    type);
	snprintf(want, sizeof(want), "ID:%s", idhex);
	p = popen(cmd, "r");
	assert_non_null(p);
	while (fgets(line, sizeof(line), p) != NULL) {
		char *q = line, *w = line;

		for (; *q != '\0'; q++)	/* drop blanks and the newline */
			if (*q != ' ' && *q != '\t' && *q != '\n')
				*w++ = *q;
		*w = '\0';
		if (strcmp(line, want) == 0)
			n++;
	}
	pclose(p);
	return n;
}

/* A committed re-provisioning: the staged pair takes the live id, the
 * old pair goes, a second run changes nothing, and the moved key signs. */
static void
test_move_id(void **state)
{
	static const uint8_t live[] = { 0x05 }, pend[] = { 0x05, 0xff, 'K',
	    'L', 'P' }, other[] = { 0x07, 0xff, 'K', 'L', 'P' },
	    suffix[] = { 0xff, 'K', 'L', 'P' };
	uint8_t *old = NULL, *nw = NULL, *now = NULL;
	size_t olen = 0, nlen = 0, nowlen = 0;
	EVP_PKEY *pk;
	int moved = -1, gone = -1;

	(void)state;
	need_hsm();
	assert_int_equal(hsm_generate_key(H, HSM_KEY_EC_P256, live, 1, "tls",
	    &old, &olen), 0);
	assert_int_equal(hsm_generate_key(H, HSM_KEY_EC_P256, pend,
	    sizeof(pend), "tls", &nw, &nlen), 0);
	/* Staging left the live pair alone. */
	assert_int_equal(hsm_get_spki(H, live, 1, &now, &nowlen), 0);
	assert_int_equal(nowlen, olen);
	assert_memory_equal(now, old, olen);
	OPENSSL_free(now);
	now = NULL;

	assert_int_equal(hsm_move_id(H, pend, sizeof(pend), live, 1, &moved),
	    0);
	assert_int_equal(moved, 2);	/* private and public */
	assert_int_equal(count_exact("privkey", "05"), 1);
	assert_int_equal(count_exact("pubkey", "05"), 1);
	assert_int_equal(count_exact("privkey", "05ff4b4c50"), 0);
	assert_int_equal(hsm_get_spki(H, live, 1, &now, &nowlen), 0);
	assert_int_equal(nowlen, nlen);
	assert_memory_equal(now, nw, nlen);
	OPENSSL_free(now);
	now = NULL;
	assert_int_equal(hsm_get_spki(H, pend, sizeof(pend), &now, &nowlen),
	    KL_ERR_NOT_FOUND);
	/* Again (a power cut after the move): nothing to do, nothing lost. */
	assert_int_equal(hsm_move_id(H, pend, sizeof(pend), live, 1, &moved),
	    0);
	assert_int_equal(moved, 0);
	assert_int_equal(count_exact("privkey", "05"), 1);
	pk = parse_spki(nw, nlen);
	check_sign(live, pk);
	check_csr(live, pk, "moved-key");
	EVP_PKEY_free(pk);

	/* Staged objects left by an interrupted session are found by their
	 * suffix; live ones are not touched. */
	OPENSSL_free(now);
	now = NULL;
	assert_int_equal(hsm_generate_key(H, HSM_KEY_EC_P256, other,
	    sizeof(other), "tls", &now, &nowlen), 0);
	OPENSSL_free(now);
	now = NULL;
	assert_int_equal(hsm_destroy_suffix(H, suffix, sizeof(suffix), &gone),
	    0);
	assert_int_equal(gone, 2);
	assert_int_equal(hsm_get_spki(H, other, sizeof(other), &now, &nowlen),
	    KL_ERR_NOT_FOUND);
	assert_int_equal(count_exact("privkey", "05"), 1);
	assert_int_equal(hsm_destroy_id(H, live, 1), 0);
	assert_int_equal(count_exact("privkey", "05"), 0);
	assert_int_equal(hsm_move_id(H, pend, 0, live, 1, NULL),
	    KL_ERR_INVALID);
	OPENSSL_free(old);
	OPENSSL_free(nw);
}

static void
test_missing(void **state)
{
	static const uint8_t ID9[] = { 0x09 };
	uint8_t *out = (uint8_t *)0x1;
	size_t len = 7;
	EVP_PKEY *pk = (EVP_PKEY *)0x1;
	struct hsm_key_attrs ka;

	(void)state;
	need_hsm();
	assert_int_equal(hsm_sign(H, ID9, 1, (const uint8_t *)"x", 1, &out,
	    &len), KL_ERR_NOT_FOUND);
	assert_int_equal(hsm_make_csr(H, ID9, 1, "x", &out, &len),
	    KL_ERR_NOT_FOUND);
	assert_int_equal(hsm_get_spki(H, ID9, 1, &out, &len),
	    KL_ERR_NOT_FOUND);
	assert_int_equal(hsm_get_private_key(H, ID9, 1, &pk),
	    KL_ERR_NOT_FOUND);
	assert_int_equal(hsm_key_attrs(H, ID9, 1, &ka), KL_ERR_NOT_FOUND);
	assert_ptr_equal(out, (uint8_t *)0x1);
	assert_int_equal(len, 7);
	assert_ptr_equal(pk, (EVP_PKEY *)0x1);
	assert_int_equal(hsm_sign(H, NULL, 0, (const uint8_t *)"x", 1, &out,
	    &len), KL_ERR_INVALID);
}

/*
 * Nothing can read the private key out, checked at the PKCS#11 level with
 * our own session on the module (login is per application, so it is
 * already logged in through H).  pkcs11-tool is no help here: its
 * --read-object on a private key prints "not supported" and exits 0.
 */
static CK_RV
read_priv_attr(CK_FUNCTION_LIST_PTR fl, CK_SESSION_HANDLE s,
    const uint8_t *id, CK_ATTRIBUTE_TYPE type)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_ID, (void *)id, 1 },
	};
	CK_OBJECT_HANDLE obj;
	CK_ULONG n = 0;
	uint8_t buf[1024];
	CK_ATTRIBUTE a = { type, buf, sizeof(buf) };

	assert_int_equal(fl->C_FindObjectsInit(s, tmpl, 2), CKR_OK);
	assert_int_equal(fl->C_FindObjects(s, &obj, 1, &n), CKR_OK);
	assert_int_equal(fl->C_FindObjectsFinal(s), CKR_OK);
	assert_int_equal(n, 1);
	return fl->C_GetAttributeValue(s, obj, &a, 1);
}

static void
test_not_extractable(void **state)
{
	CK_FUNCTION_LIST_PTR fl;
	CK_SESSION_HANDLE s = 0;
	void *dl;

	(void)state;
	need_hsm();
	fl = raw_session(&dl, &s);
	assert_int_equal(read_priv_attr(fl, s, ID2, CKA_VALUE),
	    CKR_ATTRIBUTE_SENSITIVE);
	assert_int_equal(read_priv_attr(fl, s, ID3, CKA_PRIVATE_EXPONENT),
	    CKR_ATTRIBUTE_SENSITIVE);
	assert_int_equal(read_priv_attr(fl, s, ID3, CKA_PRIME_1),
	    CKR_ATTRIBUTE_SENSITIVE);
	assert_int_equal(fl->C_CloseSession(s), CKR_OK);
	dlclose(dl);
}

/* A second handle on the same module in one process is refused, and the
 * first keeps working (libp11 would otherwise break its sessions). */
static void
test_second_open(void **state)
{
	struct hsm *h2 = NULL;
	uint8_t *sig = NULL;
	size_t slen = 0;

	(void)state;
	need_hsm();
	assert_int_equal(hsm_open(&h2, MODULE, LABEL, PIN), KL_ERR_EXISTS);
	assert_null(h2);
	assert_int_equal(hsm_sign(H, ID2, 1, (const uint8_t *)"x", 1, &sig,
	    &slen), 0);
	OPENSSL_free(sig);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_types),
		cmocka_unit_test(test_id_from_hex),
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_token_info),
		cmocka_unit_test(test_ec_key),
		cmocka_unit_test(test_rsa_key),
		cmocka_unit_test(test_certs),
		cmocka_unit_test(test_cert_object),
		cmocka_unit_test(test_missing),
		cmocka_unit_test(test_move_id),
		cmocka_unit_test(test_second_open),
		cmocka_unit_test(test_not_extractable),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
