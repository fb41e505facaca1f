/*
 * hsm.c: keys, CSRs and certificates inside a PKCS#11 token (see hsm.h).
 *
 * Two handles on the same module live side by side in a struct hsm:
 *  - libp11 (PKCS11_CTX) finds the token and hands out EVP_PKEYs whose
 *    private operations run in the token;
 *  - the module's own CK_FUNCTION_LIST (dlopen of the same .so, which
 *    returns the handle libp11 already holds) with our own RW session, for
 *    what libp11 0.4.12 cannot do or does at a cost: generate EC keys,
 *    read attributes, find and destroy objects by CKA_ID without going
 *    through libp11's cache, store certificates.  SoftHSM re-checks its
 *    object files in every search and attribute read, so each request
 *    makes as few of them as it can (docs/hsm.md, "How objects are
 *    found").
 * Login is per application in PKCS#11, so the one C_Login on our session
 * logs libp11's session in too.  We log in on the raw session rather than
 * with PKCS11_login() because that gives us the exact CK_RV for a wrong
 * PIN and because libp11 keeps a strdup of the PIN for re-login after
 * fork(), which we do not want lingering.
 *
 * libp11 0.4.12 caches key objects per token: PKCS11_enumerate_keys()
 * re-runs C_FindObjects and appends new handles, but never drops handles
 * that were destroyed behind its back.  So the raw API is the authority on
 * what exists, libp11's list is only used to get an EVP_PKEY, and the
 * newest (last) libp11 entry with an id is the live one; signatures from
 * hsm_sign() and hsm_make_csr() are checked against the public key object
 * before they are handed out.
 */
#include "hsm/hsm.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <libp11.h>
#include <p11-kit/pkcs11.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "common/err.h"
#include "common/log.h"

/* Objects with one CKA_ID that we look at in one go; more is a mess we
 * refuse rather than half-handle. */
#define HSM_MAX_OBJS 16
/* CKA_ID lengths we accept (aktualizr uses one byte). */
#define HSM_MAX_ID 64
#define HSM_MAX_CERT (64 * 1024)

struct hsm {
	PKCS11_CTX *ctx;
	PKCS11_SLOT *slots;
	unsigned int nslots;
	PKCS11_SLOT *slot;	/* borrowed from slots */
	void *dl;
	CK_FUNCTION_LIST_PTR fl;
	CK_SESSION_HANDLE sess;
	int have_sess;
	int claimed;		/* holds the module's mod_open entry */
	CK_BYTE ck_major, ck_minor;	/* the module's Cryptoki version */
	int no_self_check;	/* hsm_set_self_check(h, 0) */
};

/*
 * One struct hsm per module per process.  libp11 0.4.12 treats the module
 * as its own: opening a second PKCS11_CTX on it invalidated the first
 * one's sessions (CKR_SESSION_HANDLE_INVALID, seen with SoftHSM), its
 * PKCS11_release_all_slots() ends every session on the slot and
 * PKCS11_CTX_unload() calls C_Finalize.  Rather than let one handle break
 * another silently, hsm_open() refuses a module this process already has
 * open (dlopen returns the same handle for the same .so).
 */
#define HSM_MAX_MODULES 8
static pthread_mutex_t mod_lock = PTHREAD_MUTEX_INITIALIZER;
static void *mod_open[HSM_MAX_MODULES];

/* 0, KL_ERR_EXISTS (already open here) or KL_ERR_TOO_BIG. */
static int
mod_claim(void *dl)
{
	size_t i, free_slot = HSM_MAX_MODULES;
	int r = 0;

	pthread_mutex_lock(&mod_lock);
	for (i = 0; i < HSM_MAX_MODULES; i++) {
		if (mod_open[i] == dl) {
			r = KL_ERR_EXISTS;
			goto out;
		}
		if (mod_open[i] == NULL && free_slot == HSM_MAX_MODULES)
			free_slot = i;
	}
	if (free_slot == HSM_MAX_MODULES)
		r = KL_ERR_TOO_BIG;
	else
		mod_open[free_slot] = dl;
out:
	pthread_mutex_unlock(&mod_lock);
	return r;
}

static void
mod_release(void *dl)
{
	size_t i;

	pthread_mutex_lock(&mod_lock);
	for (i = 0; i < HSM_MAX_MODULES; i++)
		if (mod_open[i] == dl)
			mod_open[i] = NULL;
	pthread_mutex_unlock(&mod_lock);
}

struct key_type_entry {
	enum hsm_key_type type;
	const char *name;
	CK_ULONG bits;		/* RSA only */
};

static const struct key_type_entry key_types[] = {
	{ HSM_KEY_EC_P256, "ec-p256", 0 },
	{ HSM_KEY_RSA2048, "rsa2048", 2048 },
	{ HSM_KEY_RSA3072, "rsa3072", 3072 },
};

/* DER OID 1.2.840.10045.3.1.7 (prime256v1) for CKA_EC_PARAMS. */
static const CK_BYTE p256_oid[] = {
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07
};

static const struct key_type_entry *
key_type_lookup(enum hsm_key_type t)
{
	size_t i;

	for (i = 0; i < sizeof(key_types) / sizeof(key_types[0]); i++)
		if (key_types[i].type == t)
			return &key_types[i];
	return NULL;
}

int
hsm_key_type_from_name(const char *name, enum hsm_key_type *out)
{
	size_t i;

	if (name == NULL || out == NULL)
		return KL_ERR_INVALID;
	for (i = 0; i < sizeof(key_types) / sizeof(key_types[0]); i++) {
		if (strcmp(key_types[i].name, name) == 0) {
			*out = key_types[i].type;
			return 0;
		}
	}
	return KL_ERR_INVALID;
}

const char *
hsm_key_type_name(enum hsm_key_type t)
{
	const struct key_type_entry *e = key_type_lookup(t);

	return e != NULL ? e->name : "unknown";
}

/* Map a CK_RV where it enters; the value is logged, never the PIN. */
static int
ck_fail(const char *op, CK_RV rv)
{
	log_error("hsm: %s failed: CK_RV 0x%08lx", op, (unsigned long)rv);
	switch (rv) {
	case CKR_PIN_INCORRECT:
	case CKR_PIN_INVALID:
	case CKR_PIN_LEN_RANGE:
	case CKR_PIN_EXPIRED:
	case CKR_PIN_LOCKED:
	case CKR_USER_PIN_NOT_INITIALIZED:
		return KL_ERR_HSM_LOGIN;
	case CKR_HOST_MEMORY:
		return KL_ERR_NOMEM;
	default:
		return KL_ERR_HSM;
	}
}

static int
crypto_fail(const char *what)
{
	log_openssl(what);
	return KL_ERR_CRYPTO;
}

static int
check_id(const uint8_t *id, size_t id_len)
{
	if (id == NULL || id_len == 0 || id_len > HSM_MAX_ID)
		return KL_ERR_INVALID;
	return 0;
}

int
hsm_id_from_hex(const char *hex, uint8_t *id, size_t idsz, size_t *id_len)
{
	size_t n, i;
	uint8_t tmp[HSM_MAX_ID];

	if (hex == NULL || id == NULL || id_len == NULL)
		return KL_ERR_INVALID;
	n = strlen(hex);
	if (n == 0 || n % 2 != 0 || n / 2 > idsz || n / 2 > sizeof(tmp))
		return KL_ERR_INVALID;
	for (i = 0; i < n; i++) {
		char c = hex[i];
		int v;

		if (c >= '0' && c <= '9')
			v = c - '0';
		else if (c >= 'a' && c <= 'f')
			v = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v = c - 'A' + 10;
		else
			return KL_ERR_INVALID;
		if (i % 2 == 0)
			tmp[i / 2] = (uint8_t)(v << 4);
		else
			tmp[i / 2] |= (uint8_t)v;
	}
	memcpy(id, tmp, n / 2);
	*id_len = n / 2;
	return 0;
}

/* Copy a libp11 string into a fixed field, blank padding removed. */
static void
copy_field(char *dst, size_t dstsz, const char *src)
{
	size_t n;

	if (src == NULL)
		src = "";
	n = strnlen(src, dstsz - 1);
	memcpy(dst, src, n);
	while (n > 0 && (dst[n - 1] == ' ' || dst[n - 1] == '\0'))
		n--;
	dst[n] = '\0';
}

static void
label_of(const PKCS11_TOKEN *tok, char *buf, size_t bufsz)
{
	copy_field(buf, bufsz, tok->label);
}

/* The module's own function list; the same image libp11 will load. */
static int
raw_load(struct hsm *h, const char *module)
{
	CK_RV (*get_list)(CK_FUNCTION_LIST_PTR_PTR);
	CK_RV rv;
	int r;

	/* dlopen of a .so already loaded returns the same handle. */
	h->dl = dlopen(module, RTLD_NOW | RTLD_LOCAL);
	if (h->dl == NULL) {
		log_error("hsm: dlopen %s: %s", module, dlerror());
		return KL_ERR_NOT_FOUND;
	}
	*(void **)&get_list = dlsym(h->dl, "C_GetFunctionList");
	if (get_list == NULL) {
		log_error("hsm: %s has no C_GetFunctionList", module);
		return KL_ERR_NOT_FOUND;
	}
	rv = get_list(&h->fl);
	if (rv != CKR_OK || h->fl == NULL)
		return ck_fail("C_GetFunctionList", rv);
	r = mod_claim(h->dl);
	if (r == KL_ERR_EXISTS)
		log_error("hsm: %s is already open in this process", module);
	else if (r != 0)
		log_error("hsm: too many PKCS#11 modules open");
	if (r != 0)
		return r;
	h->claimed = 1;
	return 0;
}

/*
 * Our own RW session on libp11's slot, logged in as user.  The module is
 * initialised already: PKCS11_CTX_load called C_Initialize, and
 * PKCS11_CTX_unload calls C_Finalize.
 */
static int
raw_login(struct hsm *h, const char *pin)
{
	CK_SLOT_ID slot_id;
	CK_INFO info;
	CK_RV rv;

	/* For the certificate template (cert_create), as libp11 asks. */
	rv = h->fl->C_GetInfo(&info);
	if (rv != CKR_OK)
		return ck_fail("C_GetInfo", rv);
	h->ck_major = info.cryptokiVersion.major;
	h->ck_minor = info.cryptokiVersion.minor;
	slot_id = PKCS11_get_slotid_from_slot(h->slot);
	rv = h->fl->C_OpenSession(slot_id, CKF_SERIAL_SESSION | CKF_RW_SESSION,
	    NULL, NULL, &h->sess);
	if (rv != CKR_OK)
		return ck_fail("C_OpenSession", rv);
	h->have_sess = 1;
	/* C_Login only reads the PIN; its prototype lacks the const. */
	rv = h->fl->C_Login(h->sess, CKU_USER,
	    (CK_UTF8CHAR_PTR)(uintptr_t)pin, (CK_ULONG)strlen(pin));
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
		return ck_fail("C_Login", rv);
	return 0;
}

int
hsm_open(struct hsm **out, const char *module, const char *token_label,
    const char *pin)
{
	struct hsm *h = NULL;
	char label[33];
	unsigned int i;
	int r = KL_ERR_INTERNAL;

	if (out == NULL || module == NULL || pin == NULL)
		return KL_ERR_INVALID;
	h = OPENSSL_zalloc(sizeof(*h));
	if (h == NULL)
		return KL_ERR_NOMEM;
	/* Claimed before libp11 touches the module. */
	if ((r = raw_load(h, module)) != 0)
		goto out;
	h->ctx = PKCS11_CTX_new();
	if (h->ctx == NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	if (PKCS11_CTX_load(h->ctx, module) != 0) {
		log_error("hsm: libp11 cannot load PKCS#11 module %s", module);
		log_openssl("hsm: PKCS11_CTX_load");
		PKCS11_CTX_free(h->ctx);
		h->ctx = NULL;
		r = KL_ERR_HSM;
		goto out;
	}
	if (PKCS11_enumerate_slots(h->ctx, &h->slots, &h->nslots) != 0) {
		log_openssl("hsm: PKCS11_enumerate_slots");
		h->slots = NULL;
		r = KL_ERR_HSM;
		goto out;
	}
	for (i = 0; i < h->nslots; i++) {
		PKCS11_TOKEN *tok = h->slots[i].token;

		if (tok == NULL || !tok->initialized)
			continue;
		label_of(tok, label, sizeof(label));
		if (token_label == NULL || token_label[0] == '\0' ||
		    strcmp(label, token_label) == 0) {
			h->slot = &h->slots[i];
			break;
		}
	}
	if (h->slot == NULL) {
		log_error("hsm: no initialised token labelled '%s' in %s",
		    token_label != NULL ? token_label : "", module);
		r = KL_ERR_NOT_FOUND;
		goto out;
	}
	if (PKCS11_open_session(h->slot, 1) != 0) {
		log_openssl("hsm: PKCS11_open_session");
		r = KL_ERR_HSM;
		goto out;
	}
	if ((r = raw_login(h, pin)) != 0)
		goto out;
	*out = h;
	h = NULL;
	r = 0;
out:
	hsm_close(h);
	return r;
}

void
hsm_close(struct hsm *h)
{
	if (h == NULL)
		return;
	if (h->have_sess)
		(void)h->fl->C_CloseSession(h->sess);
	if (h->ctx != NULL) {
		if (h->slots != NULL)
			PKCS11_release_all_slots(h->ctx, h->slots, h->nslots);
		/* C_Finalize happens here: libp11 owns initialisation. */
		PKCS11_CTX_unload(h->ctx);
		PKCS11_CTX_free(h->ctx);
	}
	if (h->claimed)
		mod_release(h->dl);
	if (h->dl != NULL)
		dlclose(h->dl);
	OPENSSL_free(h);
}

void
hsm_set_self_check(struct hsm *h, int on)
{
	if (h != NULL)
		h->no_self_check = !on;
}

int
hsm_token_info(struct hsm *h, struct hsm_token_info *info)
{
	const PKCS11_TOKEN *tok;
	struct hsm_token_info ti;

	if (h == NULL || info == NULL)
		return KL_ERR_INVALID;
	tok = h->slot->token;
	memset(&ti, 0, sizeof(ti));
	copy_field(ti.label, sizeof(ti.label), tok->label);
	copy_field(ti.manufacturer, sizeof(ti.manufacturer), tok->manufacturer);
	copy_field(ti.model, sizeof(ti.model), tok->model);
	copy_field(ti.serial, sizeof(ti.serial), tok->serialnr);
	*info = ti;
	return 0;
}

/* All objects of a class with that CKA_ID, through our session. */
static int
find_objs(struct hsm *h, CK_OBJECT_CLASS cls, const uint8_t *id,
    size_t id_len, CK_OBJECT_HANDLE *objs, CK_ULONG *n)
{
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_ID, (void *)id, (CK_ULONG)id_len },
	};
	CK_ULONG got = 0, more = 0;
	CK_OBJECT_HANDLE extra;
	CK_RV rv;

	rv = h->fl->C_FindObjectsInit(h->sess, tmpl, 2);
	if (rv != CKR_OK)
		return ck_fail("C_FindObjectsInit", rv);
	rv = h->fl->C_FindObjects(h->sess, objs, HSM_MAX_OBJS, &got);
	if (rv == CKR_OK && got == HSM_MAX_OBJS)
		rv = h->fl->C_FindObjects(h->sess, &extra, 1, &more);
	(void)h->fl->C_FindObjectsFinal(h->sess);
	if (rv != CKR_OK)
		return ck_fail("C_FindObjects", rv);
	if (more != 0) {
		log_error("hsm: more than %d objects share one CKA_ID",
		    HSM_MAX_OBJS);
		return KL_ERR_HSM;
	}
	*n = got;
	return 0;
}

/* The one object of a class with that id, or KL_ERR_NOT_FOUND. */
static int
find_one(struct hsm *h, CK_OBJECT_CLASS cls, const uint8_t *id,
    size_t id_len, CK_OBJECT_HANDLE *obj)
{
	CK_OBJECT_HANDLE objs[HSM_MAX_OBJS];
	CK_ULONG n = 0;
	int r;

	r = find_objs(h, cls, id, id_len, objs, &n);
	if (r != 0)
		return r;
	if (n == 0)
		return KL_ERR_NOT_FOUND;
	if (n > 1)
		log_warn("hsm: %lu objects of class %lu share one CKA_ID; "
		    "using the first", (unsigned long)n, (unsigned long)cls);
	*obj = objs[0];
	return 0;
}

static int
destroy_id(struct hsm *h, CK_OBJECT_CLASS cls, const uint8_t *id,
    size_t id_len)
{
	CK_OBJECT_HANDLE objs[HSM_MAX_OBJS];
	CK_ULONG n = 0, i;
	CK_RV rv;
	int r;

	r = find_objs(h, cls, id, id_len, objs, &n);
	if (r != 0)
		return r;
	for (i = 0; i < n; i++) {
		rv = h->fl->C_DestroyObject(h->sess, objs[i]);
		if (rv != CKR_OK)
			return ck_fail("C_DestroyObject", rv);
	}
	return 0;
}

static const CK_OBJECT_CLASS hsm_classes[] = {
	CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_CERTIFICATE,
};
#define HSM_NCLASSES (sizeof(hsm_classes) / sizeof(hsm_classes[0]))

/* Index of a class in hsm_classes; HSM_NCLASSES for another class. */
static size_t
class_index(CK_OBJECT_CLASS cls)
{
	size_t c;

	for (c = 0; c < HSM_NCLASSES; c++)
		if (hsm_classes[c] == cls)
			break;
	return c;
}

/*
 * The private keys, public keys and certificates with one CKA_ID, from
 * one search.  SoftHSM's file store re-checks every object of the token
 * (open, lock, read the generation, close) in each C_FindObjectsInit
 * whatever the template, and one object per C_GetAttributeValue; so one
 * search by CKA_ID and a CKA_CLASS read per hit costs less than a search
 * per class, and a request that needs two classes looks once.
 */
struct id_objs {
	CK_OBJECT_HANDLE h[HSM_NCLASSES][HSM_MAX_OBJS];
	CK_ULONG n[HSM_NCLASSES];
};

static int
find_id(struct hsm *h, const uint8_t *id, size_t id_len, struct id_objs *o)
{
	CK_ATTRIBUTE tmpl = { CKA_ID, (void *)id, (CK_ULONG)id_len };
	CK_OBJECT_HANDLE objs[HSM_NCLASSES * HSM_MAX_OBJS + 1];
	CK_OBJECT_CLASS cls;
	CK_ATTRIBUTE a = { CKA_CLASS, &cls, sizeof(cls) };
	CK_ULONG got = 0, i;
	size_t c;
	CK_RV rv;

	memset(o, 0, sizeof(*o));
	rv = h->fl->C_FindObjectsInit(h->sess, &tmpl, 1);
	if (rv != CKR_OK)
		return ck_fail("C_FindObjectsInit", rv);
	rv = h->fl->C_FindObjects(h->sess, objs,
	    sizeof(objs) / sizeof(objs[0]), &got);
	(void)h->fl->C_FindObjectsFinal(h->sess);
	if (rv != CKR_OK)
		return ck_fail("C_FindObjects", rv);
	if (got == sizeof(objs) / sizeof(objs[0])) {
		log_error("hsm: more than %d objects share one CKA_ID",
		    (int)(HSM_NCLASSES * HSM_MAX_OBJS));
		return KL_ERR_HSM;
	}
	for (i = 0; i < got; i++) {
		a.ulValueLen = sizeof(cls);
		rv = h->fl->C_GetAttributeValue(h->sess, objs[i], &a, 1);
		if (rv != CKR_OK)
			return ck_fail("C_GetAttributeValue(CKA_CLASS)", rv);
		if ((c = class_index(cls)) == HSM_NCLASSES)
			continue;	/* data objects, secret keys: not ours */
		if (o->n[c] == HSM_MAX_OBJS) {
			log_error("hsm: more than %d objects share one CKA_ID",
			    HSM_MAX_OBJS);
			return KL_ERR_HSM;
		}
		o->h[c][o->n[c]++] = objs[i];
	}
	return 0;
}

/* The one object of a class in o, or KL_ERR_NOT_FOUND (as find_one). */
static int
id_objs_one(const struct id_objs *o, CK_OBJECT_CLASS cls,
    CK_OBJECT_HANDLE *obj)
{
	size_t c = class_index(cls);

	if (o->n[c] == 0)
		return KL_ERR_NOT_FOUND;
	if (o->n[c] > 1)
		log_warn("hsm: %lu objects of class %lu share one CKA_ID; "
		    "using the first", (unsigned long)o->n[c],
		    (unsigned long)cls);
	*obj = o->h[c][0];
	return 0;
}

/* Destroy the objects of class index c in o. */
static int
destroy_objs(struct hsm *h, const struct id_objs *o, size_t c)
{
	CK_ULONG i;
	CK_RV rv;

	for (i = 0; i < o->n[c]; i++) {
		rv = h->fl->C_DestroyObject(h->sess, o->h[c][i]);
		if (rv != CKR_OK)
			return ck_fail("C_DestroyObject", rv);
	}
	return 0;
}

/* Every private key, public key and certificate with that id, in that
 * order. */
static int
destroy_all_id(struct hsm *h, const uint8_t *id, size_t id_len)
{
	struct id_objs o;
	size_t c;
	int r;

	if ((r = find_id(h, id, id_len, &o)) != 0)
		return r;
	for (c = 0; c < HSM_NCLASSES; c++)
		if ((r = destroy_objs(h, &o, c)) != 0)
			return r;
	return 0;
}

/* Variable-length attribute into an OPENSSL_malloc'd buffer. */
static int
get_attr_alloc(struct hsm *h, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_TYPE type,
    size_t max, uint8_t **val, size_t *len)
{
	CK_ATTRIBUTE a = { type, NULL, 0 };
	uint8_t *p = NULL;
	CK_RV rv;

	rv = h->fl->C_GetAttributeValue(h->sess, obj, &a, 1);
	if (rv != CKR_OK)
		return ck_fail("C_GetAttributeValue", rv);
	if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen == 0 ||
	    a.ulValueLen > max) {
		log_error("hsm: attribute 0x%lx unavailable or too long",
		    (unsigned long)type);
		return KL_ERR_HSM;
	}
	p = OPENSSL_malloc(a.ulValueLen);
	if (p == NULL)
		return KL_ERR_NOMEM;
	a.pValue = p;
	rv = h->fl->C_GetAttributeValue(h->sess, obj, &a, 1);
	if (rv != CKR_OK) {
		OPENSSL_free(p);
		return ck_fail("C_GetAttributeValue", rv);
	}
	*val = p;
	*len = a.ulValueLen;
	return 0;
}

/*
 * A P-256 public key's SubjectPublicKeyInfo is these 26 bytes and the
 * 65-byte uncompressed point: built from the token's attributes by hand,
 * since OpenSSL 3.0 runs a provider encoder chain for every key it writes
 * out (about half a millisecond each, twice per board on the board's
 * side: KEYGEN's answer and the CSR).  certcheck_spki_is_p256() reads the
 * same layout on the station, which also checks the point is on the curve.
 */
static const uint8_t p256_spki_prefix[] = {
	0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d,
	0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01,
	0x07, 0x03, 0x42, 0x00,
};
#define HSM_P256_POINT_LEN 65

/* The uncompressed point in CKA_EC_POINT: a DER OCTET STRING (04 41 ...)
 * as PKCS#11 says, or the raw point as old modules give it.  NULL when it
 * is neither. */
static const uint8_t *
ec_point_raw(const uint8_t *ptval, size_t ptlen)
{
	const uint8_t *pt = NULL;

	if (ptlen == HSM_P256_POINT_LEN + 2 && ptval[0] == 0x04 &&
	    ptval[1] == HSM_P256_POINT_LEN)
		pt = ptval + 2;
	else if (ptlen == HSM_P256_POINT_LEN)
		pt = ptval;
	if (pt == NULL || pt[0] != 0x04) {
		log_error("hsm: CKA_EC_POINT is not an uncompressed P-256 point");
		return NULL;
	}
	return pt;
}

/* The SubjectPublicKeyInfo of a P-256 point, allocated with
 * OPENSSL_malloc (the caller frees it as it frees i2d output). */
static int
ec_spki(const uint8_t *pt, uint8_t **spki, size_t *spki_len)
{
	uint8_t *d;

	if ((d = OPENSSL_malloc(sizeof(p256_spki_prefix) +
	    HSM_P256_POINT_LEN)) == NULL)
		return KL_ERR_NOMEM;
	memcpy(d, p256_spki_prefix, sizeof(p256_spki_prefix));
	memcpy(d + sizeof(p256_spki_prefix), pt, HSM_P256_POINT_LEN);
	*spki = d;
	*spki_len = sizeof(p256_spki_prefix) + HSM_P256_POINT_LEN;
	return 0;
}

/* A public key of type ("EC", "RSA") from the parameters in bld; what
 * names it in an error. */
static int
pub_fromdata(const char *type, OSSL_PARAM_BLD *bld, const char *what,
    EVP_PKEY **out)
{
	OSSL_PARAM *prm;
	EVP_PKEY_CTX *pctx = NULL;
	EVP_PKEY *pk = NULL;
	int r = 0;

	if ((prm = OSSL_PARAM_BLD_to_param(bld)) == NULL)
		return crypto_fail(what);
	pctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	if (pctx == NULL || EVP_PKEY_fromdata_init(pctx) <= 0 ||
	    EVP_PKEY_fromdata(pctx, &pk, EVP_PKEY_PUBLIC_KEY, prm) <= 0)
		r = crypto_fail(what);
	else
		*out = pk;
	EVP_PKEY_CTX_free(pctx);
	OSSL_PARAM_free(prm);
	return r;
}

/* EVP_PKEY from the uncompressed P-256 point pt (EVP_PKEY_fromdata checks
 * it is on the curve). */
static int
ec_parse(const uint8_t *pt, EVP_PKEY **out)
{
	OSSL_PARAM_BLD *bld;
	int r;

	if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
	    !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
	    SN_X9_62_prime256v1, 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY,
	    pt, HSM_P256_POINT_LEN))
		r = crypto_fail("hsm: EC public key");
	else
		r = pub_fromdata("EC", bld, "hsm: EC public key", out);
	OSSL_PARAM_BLD_free(bld);
	return r;
}

static int
rsa_parse(const uint8_t *mod, size_t mlen, const uint8_t *exp, size_t elen,
    EVP_PKEY **out)
{
	BIGNUM *bn_n, *bn_e;
	OSSL_PARAM_BLD *bld;
	int r;

	bn_n = BN_bin2bn(mod, (int)mlen, NULL);
	bn_e = BN_bin2bn(exp, (int)elen, NULL);
	if (bn_n == NULL || bn_e == NULL ||
	    (bld = OSSL_PARAM_BLD_new()) == NULL) {
		BN_free(bn_n);
		BN_free(bn_e);
		return crypto_fail("hsm: RSA public key");
	}
	if (!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e))
		r = crypto_fail("hsm: RSA public key");
	else
		r = pub_fromdata("RSA", bld, "hsm: RSA public key", out);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn_n);
	BN_free(bn_e);
	return r;
}

/* The attributes' limits: longer is KL_ERR_HSM. */
#define HSM_MAX_EC_ATTR 256
#define HSM_MAX_MODULUS 1024
#define HSM_MAX_EXPONENT 64

/* An attribute read into a fixed buffer: unavailable, empty or longer
 * than the buffer is KL_ERR_HSM, as get_attr_alloc() says. */
static int
attr_ok(const CK_ATTRIBUTE *a, size_t max)
{
	if (a->ulValueLen == CK_UNAVAILABLE_INFORMATION ||
	    a->ulValueLen == 0 || a->ulValueLen > max) {
		log_error("hsm: attribute 0x%lx unavailable or too long",
		    (unsigned long)a->type);
		return KL_ERR_HSM;
	}
	return 0;
}

/* RSA public key: modulus and exponent in one C_GetAttributeValue. */
static int
pub_rsa(struct hsm *h, CK_OBJECT_HANDLE obj, EVP_PKEY **out)
{
	uint8_t mod[HSM_MAX_MODULUS], exp[HSM_MAX_EXPONENT];
	CK_ATTRIBUTE a[] = {
		{ CKA_MODULUS, mod, sizeof(mod) },
		{ CKA_PUBLIC_EXPONENT, exp, sizeof(exp) },
	};
	CK_RV rv;
	int r;

	rv = h->fl->C_GetAttributeValue(h->sess, obj, a, 2);
	if (rv == CKR_BUFFER_TOO_SMALL) {
		/* As before: longer than we accept. */
		(void)attr_ok(&a[0], sizeof(mod));
		(void)attr_ok(&a[1], sizeof(exp));
		return KL_ERR_HSM;
	}
	if (rv != CKR_OK)
		return ck_fail("C_GetAttributeValue(RSA public key)", rv);
	if ((r = attr_ok(&a[0], sizeof(mod))) != 0 ||
	    (r = attr_ok(&a[1], sizeof(exp))) != 0)
		return r;
	return rsa_parse(mod, a[0].ulValueLen, exp, a[1].ulValueLen, out);
}

/* A public key object as read: its type, and the key itself. */
struct pub {
	CK_KEY_TYPE kt;
	uint8_t pt[HSM_P256_POINT_LEN];	/* CKK_EC: the uncompressed point */
	EVP_PKEY *pkey;		/* CKK_RSA always; CKK_EC when asked for
				 * (want_pkey); the caller frees it */
};

/* An EC key's point into p (and p->pkey when want_pkey), from its
 * CKA_EC_PARAMS and CKA_EC_POINT values. */
static int
pub_ec(struct pub *p, const uint8_t *params, size_t plen,
    const uint8_t *ptval, size_t ptlen, int want_pkey)
{
	const uint8_t *pt;

	if (plen != sizeof(p256_oid) || memcmp(params, p256_oid, plen) != 0) {
		log_error("hsm: EC key is not on P-256");
		return KL_ERR_UNSUPPORTED;
	}
	if ((pt = ec_point_raw(ptval, ptlen)) == NULL)
		return KL_ERR_HSM;
	memcpy(p->pt, pt, HSM_P256_POINT_LEN);
	return want_pkey ? ec_parse(p->pt, &p->pkey) : 0;
}

/* EC public key, one attribute at a time (the way for a module that
 * refuses the combined read in pub_obj()). */
static int
pub_ec_slow(struct hsm *h, CK_OBJECT_HANDLE obj, struct pub *p,
    int want_pkey)
{
	uint8_t *params = NULL, *pt = NULL;
	size_t plen = 0, ptlen = 0;
	int r;

	r = get_attr_alloc(h, obj, CKA_EC_PARAMS, HSM_MAX_EC_ATTR, &params,
	    &plen);
	if (r == 0)
		r = get_attr_alloc(h, obj, CKA_EC_POINT, HSM_MAX_EC_ATTR, &pt,
		    &ptlen);
	if (r == 0)
		r = pub_ec(p, params, plen, pt, ptlen, want_pkey);
	OPENSSL_free(pt);
	OPENSSL_free(params);
	return r;
}

/*
 * The public key object obj into p (memset by the caller): its type, an
 * EC key's point, and as an OpenSSL key when want_pkey or RSA.  An EC key
 * (the common case) takes one C_GetAttributeValue: the key type, the
 * curve and the point together.  An RSA key has no CKA_EC_PARAMS, so
 * that read fails with CKR_ATTRIBUTE_TYPE_INVALID; PKCS#11 still fills in
 * the attributes it has, so the key type says RSA and the modulus and
 * exponent are read next.  Anything else goes one attribute at a time as
 * before.
 */
static int
pub_obj(struct hsm *h, CK_OBJECT_HANDLE obj, struct pub *p, int want_pkey)
{
	uint8_t params[HSM_MAX_EC_ATTR], pt[HSM_MAX_EC_ATTR];
	CK_KEY_TYPE kt = (CK_KEY_TYPE)-1;
	CK_ATTRIBUTE a[] = {
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_EC_PARAMS, params, sizeof(params) },
		{ CKA_EC_POINT, pt, sizeof(pt) },
	};
	CK_RV rv;
	int r;

	rv = h->fl->C_GetAttributeValue(h->sess, obj, a, 3);
	if (rv == CKR_OK && kt == CKK_EC) {
		if ((r = attr_ok(&a[1], sizeof(params))) != 0 ||
		    (r = attr_ok(&a[2], sizeof(pt))) != 0)
			return r;
		r = pub_ec(p, params, a[1].ulValueLen, pt, a[2].ulValueLen,
		    want_pkey);
	} else if (rv == CKR_ATTRIBUTE_TYPE_INVALID &&
	    a[0].ulValueLen == sizeof(kt) && kt == CKK_RSA) {
		r = pub_rsa(h, obj, &p->pkey);
	} else {
		a[0].pValue = &kt;
		a[0].ulValueLen = sizeof(kt);
		rv = h->fl->C_GetAttributeValue(h->sess, obj, a, 1);
		if (rv != CKR_OK)
			return ck_fail("C_GetAttributeValue(CKA_KEY_TYPE)", rv);
		if (kt == CKK_EC) {
			r = pub_ec_slow(h, obj, p, want_pkey);
		} else if (kt == CKK_RSA) {
			r = pub_rsa(h, obj, &p->pkey);
		} else {
			log_error("hsm: unsupported key type 0x%lx",
			    (unsigned long)kt);
			return KL_ERR_UNSUPPORTED;
		}
	}
	if (r == 0)
		p->kt = kt;
	return r;
}

/* The SubjectPublicKeyInfo of public key object obj: a P-256 key's built
 * by bytes (ec_spki), an RSA key's by OpenSSL. */
static int
pub_spki(struct hsm *h, CK_OBJECT_HANDLE obj, uint8_t **spki,
    size_t *spki_len)
{
	struct pub p;
	unsigned char *der = NULL;
	int n, r;

	memset(&p, 0, sizeof(p));
	if ((r = pub_obj(h, obj, &p, 0)) != 0)
		goto out;
	if (p.kt == CKK_EC) {
		r = ec_spki(p.pt, spki, spki_len);
		goto out;
	}
	if ((n = i2d_PUBKEY(p.pkey, &der)) <= 0) {
		r = crypto_fail("hsm: i2d_PUBKEY");
		goto out;
	}
	*spki = der;
	*spki_len = (size_t)n;
out:
	EVP_PKEY_free(p.pkey);
	return r;
}

int
hsm_get_spki(struct hsm *h, const uint8_t *id, size_t id_len,
    uint8_t **spki, size_t *spki_len)
{
	CK_OBJECT_HANDLE obj;
	int r;

	if (h == NULL || spki == NULL || spki_len == NULL)
		return KL_ERR_INVALID;
	if ((r = check_id(id, id_len)) != 0)
		return r;
	if ((r = find_one(h, CKO_PUBLIC_KEY, id, id_len, &obj)) != 0)
		return r;
	return pub_spki(h, obj, spki, spki_len);
}

int
hsm_generate_key(struct hsm *h, enum hsm_key_type t, const uint8_t *id,
    size_t id_len, const char *label, uint8_t **spki, size_t *spki_len)
{
	const struct key_type_entry *kte = key_type_lookup(t);
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ULONG bits;
	CK_BYTE exp65537[] = { 0x01, 0x00, 0x01 };
	CK_MECHANISM mech = { 0, NULL, 0 };
	CK_ATTRIBUTE pub[8], priv[8];
	CK_ULONG npub = 0, npriv = 0;
	CK_OBJECT_HANDLE hpub, hpriv;
	CK_ULONG label_len;
	CK_RV rv;
	int r;

	if (h == NULL || kte == NULL || label == NULL || spki == NULL ||
	    spki_len == NULL)
		return KL_ERR_INVALID;
	if ((r = check_id(id, id_len)) != 0)
		return r;
	label_len = (CK_ULONG)strlen(label);
	bits = kte->bits;

	/* Re-provisioning: the old pair and its certificate go first, so
	 * there is never more than one object of a class per id. */
	if ((r = destroy_all_id(h, id, id_len)) != 0)
		return r;

#define ADD(arr, n, t, v, l) do { \
	(arr)[(n)].type = (t); (arr)[(n)].pValue = (void *)(v); \
	(arr)[(n)].ulValueLen = (CK_ULONG)(l); (n)++; } while (0)
	ADD(pub, npub, CKA_TOKEN, &yes, sizeof(yes));
	ADD(pub, npub, CKA_VERIFY, &yes, sizeof(yes));
	ADD(pub, npub, CKA_ID, id, id_len);
	ADD(pub, npub, CKA_LABEL, label, label_len);
	ADD(priv, npriv, CKA_TOKEN, &yes, sizeof(yes));
	ADD(priv, npriv, CKA_PRIVATE, &yes, sizeof(yes));
	ADD(priv, npriv, CKA_SENSITIVE, &yes, sizeof(yes));
	ADD(priv, npriv, CKA_EXTRACTABLE, &no, sizeof(no));
	ADD(priv, npriv, CKA_SIGN, &yes, sizeof(yes));
	ADD(priv, npriv, CKA_ID, id, id_len);
	ADD(priv, npriv, CKA_LABEL, label, label_len);
	if (t == HSM_KEY_EC_P256) {
		mech.mechanism = CKM_EC_KEY_PAIR_GEN;
		ADD(pub, npub, CKA_EC_PARAMS, p256_oid, sizeof(p256_oid));
	} else {
		mech.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
		ADD(pub, npub, CKA_MODULUS_BITS, &bits, sizeof(bits));
		ADD(pub, npub, CKA_PUBLIC_EXPONENT, exp65537, sizeof(exp65537));
	}
#undef ADD

	rv = h->fl->C_GenerateKeyPair(h->sess, &mech, pub, npub, priv, npriv,
	    &hpub, &hpriv);
	if (rv != CKR_OK)
		return ck_fail("C_GenerateKeyPair", rv);
	/* libp11 is not told: only hsm_get_private_key() uses its lists,
	 * and it has libp11 search again. */
	return pub_spki(h, hpub, spki, spki_len);
}

int
hsm_get_private_key(struct hsm *h, const uint8_t *id, size_t id_len,
    EVP_PKEY **out)
{
	CK_OBJECT_HANDLE obj;
	PKCS11_KEY *keys = NULL, *key = NULL;
	unsigned int n = 0, i;
	EVP_PKEY *pk;
	int r;

	if (h == NULL || out == NULL)
		return KL_ERR_INVALID;
	if ((r = check_id(id, id_len)) != 0)
		return r;
	/* The token, not libp11's cache, says whether the key exists. */
	r = find_one(h, CKO_PRIVATE_KEY, id, id_len, &obj);
	if (r != 0)
		return r;
	/* libp11 searches again and appends what it has not seen (it
	 * used to be told after every key generation; only this function
	 * needs its lists).  Public keys too: libp11 may look there for an
	 * EC key's point. */
	if (PKCS11_enumerate_public_keys(h->slot->token, &keys, &n) != 0 ||
	    PKCS11_enumerate_keys(h->slot->token, &keys, &n) != 0) {
		log_openssl("hsm: PKCS11_enumerate_keys");
		return KL_ERR_HSM;
	}
	/* libp11 appends new handles and keeps destroyed ones: the last
	 * entry with the id is the one we made most recently. */
	for (i = 0; i < n; i++)
		if (keys[i].id_len == id_len &&
		    memcmp(keys[i].id, id, id_len) == 0)
			key = &keys[i];
	if (key == NULL) {
		log_error("hsm: libp11 does not list the private key");
		return KL_ERR_NOT_FOUND;
	}
	pk = PKCS11_get_private_key(key);
	if (pk == NULL) {
		log_openssl("hsm: PKCS11_get_private_key");
		return KL_ERR_HSM;
	}
	*out = pk;
	return 0;
}

/*
 * The key pair with that id from one search: the private key's handle,
 * and the public key (pub, memset here; pub->pkey set for RSA and when
 * want_pkey, the caller frees it).  KL_ERR_NOT_FOUND without either.
 */
static int
key_pair(struct hsm *h, const uint8_t *id, size_t id_len,
    CK_OBJECT_HANDLE *key, struct pub *pub, int want_pkey)
{
	struct id_objs o;
	CK_OBJECT_HANDLE pobj;
	int r;

	memset(pub, 0, sizeof(*pub));
	if ((r = find_id(h, id, id_len, &o)) != 0 ||
	    (r = id_objs_one(&o, CKO_PRIVATE_KEY, key)) != 0 ||
	    (r = id_objs_one(&o, CKO_PUBLIC_KEY, &pobj)) != 0)
		return r;
	return pub_obj(h, pobj, pub, want_pkey);
}

/*
 * Sign SHA-256(data) with the token key through the module itself, by the
 * key's handle, and check the result against the public key object.  Not
 * through libp11: it caches CKA_ID per handle, and hsm_move_id() changes
 * a key's CKA_ID under it (a committed re-provisioning).  kt is the key
 * type of the public key with the same id: a private key of another type
 * fails C_SignInit (CKR_KEY_TYPE_INCONSISTENT), as its signature would
 * fail the check against the public key.
 */
static int
raw_sign(struct hsm *h, CK_OBJECT_HANDLE key, CK_KEY_TYPE kt,
    const uint8_t *data, size_t len, uint8_t **sig, size_t *sig_len)
{
	CK_MECHANISM mech = { 0, NULL, 0 };
	uint8_t md[32], raw[1024], *der = NULL;
	CK_ULONG rawlen = sizeof(raw);
	ECDSA_SIG *es = NULL;
	BIGNUM *br = NULL, *bs = NULL;
	const uint8_t *in;
	CK_ULONG inlen;
	CK_RV rv;
	int n, r = KL_ERR_CRYPTO;

	if (kt == CKK_EC) {
		/* CKM_ECDSA signs a digest we make. */
		if (EVP_Digest(data, len, md, NULL, EVP_sha256(), NULL) != 1)
			return crypto_fail("hsm: sha-256");
		mech.mechanism = CKM_ECDSA;
		in = md;
		inlen = sizeof(md);
	} else if (kt == CKK_RSA) {
		mech.mechanism = CKM_SHA256_RSA_PKCS;
		in = data;
		inlen = (CK_ULONG)len;
	} else {
		log_error("hsm: unsupported key type 0x%lx", (unsigned long)kt);
		return KL_ERR_UNSUPPORTED;
	}
	if ((rv = h->fl->C_SignInit(h->sess, &mech, key)) != CKR_OK)
		return ck_fail("C_SignInit", rv);
	rv = h->fl->C_Sign(h->sess, (CK_BYTE_PTR)in, inlen, raw, &rawlen);
	if (rv != CKR_OK)
		return ck_fail("C_Sign", rv);
	if (kt == CKK_RSA) {
		if ((der = OPENSSL_malloc(rawlen)) == NULL)
			return KL_ERR_NOMEM;
		memcpy(der, raw, rawlen);
		*sig = der;
		*sig_len = rawlen;
		return 0;
	}
	/* PKCS#11 gives r || s; X.509 and TLS want the DER ECDSA-Sig-Value. */
	if (rawlen == 0 || rawlen % 2 != 0 ||
	    (br = BN_bin2bn(raw, (int)(rawlen / 2), NULL)) == NULL ||
	    (bs = BN_bin2bn(raw + rawlen / 2, (int)(rawlen / 2), NULL)) ==
	    NULL || (es = ECDSA_SIG_new()) == NULL ||
	    ECDSA_SIG_set0(es, br, bs) != 1) {
		r = crypto_fail("hsm: ECDSA signature");
		goto out;
	}
	br = bs = NULL;
	if ((n = i2d_ECDSA_SIG(es, &der)) <= 0) {
		r = crypto_fail("hsm: i2d_ECDSA_SIG");
		goto out;
	}
	*sig = der;
	*sig_len = (size_t)n;
	r = 0;
out:
	BN_free(br);
	BN_free(bs);
	ECDSA_SIG_free(es);
	return r;
}

int
hsm_sign(struct hsm *h, const uint8_t *id, size_t id_len,
    const uint8_t *data, size_t len, uint8_t **sig, size_t *sig_len)
{
	CK_OBJECT_HANDLE key;
	struct pub pub;
	EVP_MD_CTX *md = NULL;
	uint8_t *s = NULL;
	size_t slen = 0;
	int r;

	if (h == NULL || (data == NULL && len != 0) || sig == NULL ||
	    sig_len == NULL)
		return KL_ERR_INVALID;
	if ((r = check_id(id, id_len)) != 0)
		return r;
	if (data == NULL)
		data = (const uint8_t *)"";
	if ((r = key_pair(h, id, id_len, &key, &pub,
	    !h->no_self_check)) != 0)
		goto out;
	if ((r = raw_sign(h, key, pub.kt, data, len, &s, &slen)) != 0)
		goto out;
	if (h->no_self_check)
		goto done;
	if ((md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL,
	    pub.pkey) <= 0) {
		r = crypto_fail("hsm: verify init");
		goto out;
	}
	if (EVP_DigestVerify(md, s, slen, data, len) != 1) {
		ERR_clear_error();
		log_error("hsm: token signature does not match the public key");
		r = KL_ERR_HSM;
		goto out;
	}
done:
	*sig = s;
	*sig_len = slen;
	s = NULL;
	r = 0;
out:
	OPENSSL_free(s);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pub.pkey);
	return r;
}

/*
 * The request's SubjectPublicKeyInfo.  A P-256 key's goes in as its
 * algorithm, curve and point, the bytes ec_spki() writes: handing OpenSSL
 * the EVP_PKEY (X509_REQ_set_pubkey) would run an encoder chain to make
 * the same bytes.  KL_ERR_CRYPTO when OpenSSL refuses.
 */
static int
csr_set_pubkey(X509_REQ *req, const struct pub *pub)
{
	X509_PUBKEY *xpk;
	uint8_t *pt;

	if (pub->kt != CKK_EC)
		return X509_REQ_set_pubkey(req, pub->pkey) ? 0 :
		    crypto_fail("hsm: CSR public key");
	if ((xpk = X509_REQ_get_X509_PUBKEY(req)) == NULL ||
	    (pt = OPENSSL_memdup(pub->pt, HSM_P256_POINT_LEN)) == NULL)
		return crypto_fail("hsm: CSR public key");
	if (!X509_PUBKEY_set0_param(xpk, OBJ_nid2obj(NID_X9_62_id_ecPublicKey),
	    V_ASN1_OBJECT, OBJ_nid2obj(NID_X9_62_prime256v1), pt,
	    HSM_P256_POINT_LEN)) {
		OPENSSL_free(pt);
		return crypto_fail("hsm: CSR public key");
	}
	return 0;
}

/*
 * The request is signed through the module by the key's handle (see
 * raw_sign), not through libp11, whose cached ids go stale once a key has
 * been moved by hsm_move_id().
 */
int
hsm_make_csr(struct hsm *h, const uint8_t *id, size_t id_len,
    const char *cn, uint8_t **der, size_t *der_len)
{
	CK_OBJECT_HANDLE key;
	struct pub pub;
	X509_REQ *req = NULL;
	X509_NAME *name = NULL;
	X509_ALGOR *alg = NULL;
	ASN1_BIT_STRING *bits = NULL;
	unsigned char *out = NULL, *tbs = NULL;
	uint8_t *sig = NULL;
	size_t sig_len = 0;
	int n, ec, r;

	if (h == NULL || cn == NULL || cn[0] == '\0' || der == NULL ||
	    der_len == NULL)
		return KL_ERR_INVALID;
	if ((r = check_id(id, id_len)) != 0)
		return r;
	memset(&pub, 0, sizeof(pub));
	if ((r = key_pair(h, id, id_len, &key, &pub,
	    !h->no_self_check)) != 0)
		goto out;
	ec = pub.kt == CKK_EC;
	r = KL_ERR_CRYPTO;
	req = X509_REQ_new();
	name = X509_NAME_new();
	alg = X509_ALGOR_new();
	if (req == NULL || name == NULL || alg == NULL ||
	    !X509_REQ_set_version(req, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
	    (const unsigned char *)cn, -1, -1, 0) ||
	    !X509_REQ_set_subject_name(req, name) ||
	    (r = csr_set_pubkey(req, &pub)) != 0 ||
	    !X509_ALGOR_set0(alg, OBJ_nid2obj(ec ? NID_ecdsa_with_SHA256 :
	    NID_sha256WithRSAEncryption), ec ? V_ASN1_UNDEF : V_ASN1_NULL,
	    NULL) ||
	    !X509_REQ_set1_signature_algo(req, alg)) {
		r = r != 0 ? r : crypto_fail("hsm: CSR");
		goto out;
	}
	if ((n = i2d_re_X509_REQ_tbs(req, &tbs)) <= 0) {
		r = crypto_fail("hsm: CSR encoding");
		goto out;
	}
	if ((r = raw_sign(h, key, pub.kt, tbs, (size_t)n, &sig, &sig_len)) != 0)
		goto out;
	r = KL_ERR_CRYPTO;
	if ((bits = ASN1_BIT_STRING_new()) == NULL ||
	    !ASN1_BIT_STRING_set(bits, sig, (int)sig_len)) {
		r = crypto_fail("hsm: CSR signature");
		goto out;
	}
	/* A signature is whole bytes: no unused bits. */
	bits->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
	bits->flags |= ASN1_STRING_FLAG_BITS_LEFT;
	X509_REQ_set0_signature(req, bits);
	bits = NULL;
	/* Proof that the token key is the one in the SPKI. */
	if (!h->no_self_check && X509_REQ_verify(req, pub.pkey) != 1) {
		ERR_clear_error();
		log_error("hsm: CSR signature does not match the public key");
		r = KL_ERR_HSM;
		goto out;
	}
	n = i2d_X509_REQ(req, &out);
	if (n <= 0) {
		r = crypto_fail("hsm: i2d_X509_REQ");
		goto out;
	}
	*der = out;
	*der_len = (size_t)n;
	r = 0;
out:
	ASN1_BIT_STRING_free(bits);
	OPENSSL_free(sig);
	OPENSSL_free(tbs);
	X509_ALGOR_free(alg);
	X509_NAME_free(name);
	X509_REQ_free(req);
	EVP_PKEY_free(pub.pkey);
	return r;
}

/* Certificates we expect fit this; a longer one costs a second call. */
#define HSM_CERT_GUESS 4096

/*
 * CKA_VALUE of a certificate object in one C_GetAttributeValue when it
 * fits HSM_CERT_GUESS bytes (a device certificate is well under 1 KiB);
 * otherwise, or if the module will not say, by size first as
 * get_attr_alloc() does.
 */
static int
cert_value(struct hsm *h, CK_OBJECT_HANDLE obj, uint8_t **der,
    size_t *der_len)
{
	CK_ATTRIBUTE a;
	uint8_t *p;
	CK_RV rv;

	if ((p = OPENSSL_malloc(HSM_CERT_GUESS)) == NULL)
		return KL_ERR_NOMEM;
	a.type = CKA_VALUE;
	a.pValue = p;
	a.ulValueLen = HSM_CERT_GUESS;
	rv = h->fl->C_GetAttributeValue(h->sess, obj, &a, 1);
	if (rv == CKR_OK && a.ulValueLen != 0 &&
	    a.ulValueLen != CK_UNAVAILABLE_INFORMATION &&
	    a.ulValueLen <= HSM_CERT_GUESS) {
		*der = p;
		*der_len = a.ulValueLen;
		return 0;
	}
	OPENSSL_free(p);
	if (rv != CKR_OK && rv != CKR_BUFFER_TOO_SMALL)
		return ck_fail("C_GetAttributeValue", rv);
	return get_attr_alloc(h, obj, CKA_VALUE, HSM_MAX_CERT, der, der_len);
}

/*
 * What a certificate object needs from its certificate: the subject and
 * issuer Names as DER, the signature's algorithm, and the bits of the
 * subjectPublicKey.  They are read with OpenSSL's generic parser
 * (d2i_ASN1_SEQUENCE_ANY), not d2i_X509: d2i_X509 decodes the public key
 * too, through a provider decoder chain that costs OpenSSL 3.0 about as
 * many instructions as the rest of a board's COMMIT.  The station checked
 * the certificate in full before sending it; here it must be DER (it
 * encodes back to the same bytes) and shaped as X.509 says: a SEQUENCE of
 * the TBSCertificate SEQUENCE, the signature algorithm and a BIT STRING,
 * the TBSCertificate holding serial, signature, issuer, validity, subject
 * and subjectPublicKeyInfo after an optional [0] version.
 */
struct cert_fields {
	const uint8_t *subj, *iss, *key;	/* into the parses below */
	size_t subj_len, iss_len, key_len;
	int sig_nid;			/* NID_undef when unknown */
	STACK_OF(ASN1_TYPE) *outer, *tbs, *spki, *alg;
};

static void
cert_fields_free(struct cert_fields *f)
{
	sk_ASN1_TYPE_pop_free(f->outer, ASN1_TYPE_free);
	sk_ASN1_TYPE_pop_free(f->tbs, ASN1_TYPE_free);
	sk_ASN1_TYPE_pop_free(f->spki, ASN1_TYPE_free);
	sk_ASN1_TYPE_pop_free(f->alg, ASN1_TYPE_free);
	memset(f, 0, sizeof(*f));
}

/* Element i of sk when it has ASN.1 type want, else NULL. */
static ASN1_TYPE *
seq_elem(STACK_OF(ASN1_TYPE) *sk, int i, int want)
{
	ASN1_TYPE *t;

	if (i < 0 || i >= sk_ASN1_TYPE_num(sk))
		return NULL;
	t = sk_ASN1_TYPE_value(sk, i);
	return t != NULL && ASN1_TYPE_get(t) == want ? t : NULL;
}

/* The elements of a SEQUENCE element t (its whole encoding, which the
 * generic parser keeps), all of it consumed; NULL when it is not one. */
static STACK_OF(ASN1_TYPE) *
seq_of(const ASN1_TYPE *t)
{
	const unsigned char *p, *end;
	STACK_OF(ASN1_TYPE) *sk;

	if (t == NULL || ASN1_TYPE_get(t) != V_ASN1_SEQUENCE)
		return NULL;
	p = ASN1_STRING_get0_data(t->value.sequence);
	end = p + ASN1_STRING_length(t->value.sequence);
	sk = d2i_ASN1_SEQUENCE_ANY(NULL, &p, (long)(end - p));
	if (sk != NULL && p != end) {
		sk_ASN1_TYPE_pop_free(sk, ASN1_TYPE_free);
		sk = NULL;
	}
	return sk;
}

static int
cert_fields_read(const uint8_t *der, size_t der_len, struct cert_fields *f)
{
	const unsigned char *p = der;
	unsigned char *again = NULL;
	const ASN1_TYPE *t;
	int n, v;

	memset(f, 0, sizeof(*f));
	f->outer = d2i_ASN1_SEQUENCE_ANY(NULL, &p, (long)der_len);
	if (f->outer == NULL || p != der + der_len ||
	    sk_ASN1_TYPE_num(f->outer) != 3 ||
	    seq_elem(f->outer, 2, V_ASN1_BIT_STRING) == NULL)
		goto bad;
	n = i2d_ASN1_SEQUENCE_ANY(f->outer, &again);
	if (n <= 0 || (size_t)n != der_len || memcmp(again, der, der_len) != 0)
		goto bad;
	if ((f->tbs = seq_of(seq_elem(f->outer, 0, V_ASN1_SEQUENCE))) == NULL ||
	    (f->alg = seq_of(seq_elem(f->outer, 1, V_ASN1_SEQUENCE))) == NULL ||
	    (t = seq_elem(f->alg, 0, V_ASN1_OBJECT)) == NULL)
		goto bad;
	f->sig_nid = OBJ_obj2nid(t->value.object);
	/* [0] version, when there, is context-specific: "other", kept
	 * whole (its first byte the tag, constructed [0]). */
	if ((t = seq_elem(f->tbs, 0, V_ASN1_OTHER)) != NULL &&
	    (ASN1_STRING_length(t->value.asn1_string) < 1 ||
	    ASN1_STRING_get0_data(t->value.asn1_string)[0] != 0xa0))
		goto bad;
	v = t != NULL;
	if (seq_elem(f->tbs, v, V_ASN1_INTEGER) == NULL ||
	    seq_elem(f->tbs, v + 1, V_ASN1_SEQUENCE) == NULL ||
	    (t = seq_elem(f->tbs, v + 2, V_ASN1_SEQUENCE)) == NULL)
		goto bad;
	f->iss = ASN1_STRING_get0_data(t->value.sequence);
	f->iss_len = (size_t)ASN1_STRING_length(t->value.sequence);
	if (seq_elem(f->tbs, v + 3, V_ASN1_SEQUENCE) == NULL ||
	    (t = seq_elem(f->tbs, v + 4, V_ASN1_SEQUENCE)) == NULL)
		goto bad;
	f->subj = ASN1_STRING_get0_data(t->value.sequence);
	f->subj_len = (size_t)ASN1_STRING_length(t->value.sequence);
	if ((f->spki = seq_of(seq_elem(f->tbs, v + 5, V_ASN1_SEQUENCE))) ==
	    NULL || sk_ASN1_TYPE_num(f->spki) != 2 ||
	    seq_elem(f->spki, 0, V_ASN1_SEQUENCE) == NULL ||
	    (t = seq_elem(f->spki, 1, V_ASN1_BIT_STRING)) == NULL)
		goto bad;
	f->key = ASN1_STRING_get0_data(t->value.bit_string);
	f->key_len = (size_t)ASN1_STRING_length(t->value.bit_string);
	OPENSSL_free(again);
	return 0;
bad:
	ERR_clear_error();
	OPENSSL_free(again);
	cert_fields_free(f);
	log_error("hsm: certificate DER is not an X.509 certificate");
	return KL_ERR_INVALID;
}

/*
 * The template libp11 0.4.12's PKCS11_store_certificate() builds, made
 * here so that C_CreateObject runs on our session: libp11 would then read
 * the new object's attributes back one by one (seven calls) into a list
 * nothing here uses.  CKA_NAME_HASH_ALGORITHM and
 * CKA_HASH_OF_SUBJECT_PUBLIC_KEY follow the certificate's signature
 * digest as libp11 does (SHA-1 for a digest it does not list; SHA-3,
 * which newer libp11 lists, is SHA-1 here too), and only for modules of
 * Cryptoki 2.30 or later.  CKA_VALUE is der itself.
 */
static int
cert_create(struct hsm *h, const struct cert_fields *f, const uint8_t *der,
    size_t der_len, const char *label, const uint8_t *id, size_t id_len,
    CK_OBJECT_HANDLE *out)
{
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_CERTIFICATE_TYPE ctype = CKC_X_509;
	CK_BBOOL yes = CK_TRUE;
	CK_MECHANISM_TYPE ckm_md = CKM_SHA_1;
	CK_ATTRIBUTE a[10];
	CK_ULONG n = 0;
	CK_OBJECT_HANDLE obj;
	const EVP_MD *md;
	int md_nid = NID_sha1;
	unsigned char dig[EVP_MAX_MD_SIZE];
	unsigned int dig_len = 0;
	CK_RV rv;

	if (!OBJ_find_sigid_algs(f->sig_nid, &md_nid, NULL))
		md_nid = NID_sha1;
	switch (md_nid) {
	case NID_sha224:
		ckm_md = CKM_SHA224;
		break;
	case NID_sha256:
		ckm_md = CKM_SHA256;
		break;
	case NID_sha384:
		ckm_md = CKM_SHA384;
		break;
	case NID_sha512:
		ckm_md = CKM_SHA512;
		break;
	default:
		md_nid = NID_sha1;
		ckm_md = CKM_SHA_1;
		break;
	}
	md = EVP_get_digestbynid(md_nid);
#define ADD(t, v, l) do { \
	a[n].type = (t); a[n].pValue = (void *)(v); \
	a[n].ulValueLen = (CK_ULONG)(l); n++; } while (0)
	ADD(CKA_CLASS, &cls, sizeof(cls));
	ADD(CKA_TOKEN, &yes, sizeof(yes));
	ADD(CKA_CERTIFICATE_TYPE, &ctype, sizeof(ctype));
	ADD(CKA_SUBJECT, f->subj, f->subj_len);
	ADD(CKA_ISSUER, f->iss, f->iss_len);
	if (h->ck_major > 2 || (h->ck_major == 2 && h->ck_minor >= 30)) {
		ADD(CKA_NAME_HASH_ALGORITHM, &ckm_md, sizeof(ckm_md));
		/* As X509_pubkey_digest(): the subjectPublicKey's bits. */
		if (md != NULL && EVP_Digest(f->key, f->key_len, dig, &dig_len,
		    md, NULL))
			ADD(CKA_HASH_OF_SUBJECT_PUBLIC_KEY, dig, dig_len);
		else
			ERR_clear_error();
	}
	ADD(CKA_VALUE, der, der_len);
	ADD(CKA_LABEL, label, strlen(label));
	ADD(CKA_ID, id, id_len);
#undef ADD
	rv = h->fl->C_CreateObject(h->sess, a, n, &obj);
	if (rv != CKR_OK)
		return ck_fail("C_CreateObject(certificate)", rv);
	*out = obj;
	return 0;
}

/* hsm_store_cert(); *obj gets the new object's handle. */
static int
store_cert(struct hsm *h, const uint8_t *id, size_t id_len,
    const char *label, const uint8_t *der, size_t der_len,
    CK_OBJECT_HANDLE *obj)
{
	struct cert_fields f;
	int r;

	if (h == NULL || label == NULL || der == NULL || der_len == 0 ||
	    der_len > HSM_MAX_CERT)
		return KL_ERR_INVALID;
	if ((r = check_id(id, id_len)) != 0)
		return r;
	if ((r = cert_fields_read(der, der_len, &f)) != 0)
		return r;
	if ((r = destroy_id(h, CKO_CERTIFICATE, id, id_len)) == 0)
		r = cert_create(h, &f, der, der_len, label, id, id_len, obj);
	cert_fields_free(&f);
	return r;
}

int
hsm_store_cert(struct hsm *h, const uint8_t *id, size_t id_len,
    const char *label, const uint8_t *der, size_t der_len)
{
	CK_OBJECT_HANDLE obj;

	return store_cert(h, id, id_len, label, der, der_len, &obj);
}

int
hsm_store_cert_back(struct hsm *h, const uint8_t *id, size_t id_len,
    const char *label, const uint8_t *der, size_t der_len, uint8_t **back,
    size_t *back_len)
{
	CK_OBJECT_HANDLE obj;
	int r;

	if (back == NULL || back_len == NULL)
		return KL_ERR_INVALID;
	if ((r = store_cert(h, id, id_len, label, der, der_len, &obj)) != 0)
		return r;
	/* By the handle C_CreateObject gave: no second search. */
	return cert_value(h, obj, back, back_len);
}

int
hsm_get_cert(struct hsm *h, const uint8_t *id, size_t id_len,
    uint8_t **der, size_t *der_len)
{
	CK_OBJECT_HANDLE obj;
	int r;

	if (h == NULL || der == NULL || der_len == NULL)
		return KL_ERR_INVALID;
	if ((r = check_id(id, id_len)) != 0)
		return r;
	r = find_one(h, CKO_CERTIFICATE, id, id_len, &obj);
	if (r != 0)
		return r;
	return cert_value(h, obj, der, der_len);
}

int
hsm_delete_cert(struct hsm *h, const uint8_t *id, size_t id_len)
{
	int r;

	if (h == NULL)
		return KL_ERR_INVALID;
	if ((r = check_id(id, id_len)) != 0)
		return r;
	return destroy_id(h, CKO_CERTIFICATE, id, id_len);
}

int
hsm_key_attrs(struct hsm *h, const uint8_t *id, size_t id_len,
    struct hsm_key_attrs *out)
{
	CK_OBJECT_HANDLE obj;
	CK_BBOOL sens = 0, extr = 0, asens = 0, nextr = 0;
	CK_ATTRIBUTE a[] = {
		{ CKA_SENSITIVE, &sens, sizeof(sens) },
		{ CKA_EXTRACTABLE, &extr, sizeof(extr) },
		{ CKA_ALWAYS_SENSITIVE, &asens, sizeof(asens) },
		{ CKA_NEVER_EXTRACTABLE, &nextr, sizeof(nextr) },
	};
	CK_RV rv;
	int r;

	if (h == NULL || out == NULL)
		return KL_ERR_INVALID;
	if ((r = check_id(id, id_len)) != 0)
		return r;
	r = find_one(h, CKO_PRIVATE_KEY, id, id_len, &obj);
	if (r != 0)
		return r;
	rv = h->fl->C_GetAttributeValue(h->sess, obj, a, 4);
	if (rv != CKR_OK)
		return ck_fail("C_GetAttributeValue(key attributes)", rv);
	out->sensitive = sens == CK_TRUE;
	out->extractable = extr == CK_TRUE;
	out->always_sensitive = asens == CK_TRUE;
	out->never_extractable = nextr == CK_TRUE;
	return 0;
}

int
hsm_move_id(struct hsm *h, const uint8_t *from, size_t from_len,
    const uint8_t *to, size_t to_len, int *moved)
{
	struct id_objs src, dst;
	CK_ATTRIBUTE a = { CKA_ID, (void *)to, (CK_ULONG)to_len };
	CK_ULONG i;
	size_t c;
	CK_RV rv;
	int r, count = 0, have_dst = 0;

	if (h == NULL)
		return KL_ERR_INVALID;
	if ((r = check_id(from, from_len)) != 0 ||
	    (r = check_id(to, to_len)) != 0)
		return r;
	/* Class by class, so that a power cut anywhere leaves a state
	 * that running this again completes: while objects of a class
	 * remain at from, those at to are the old ones.  That holds for
	 * one object per class at from, which staging guarantees (it
	 * destroys what is at the pending id first); with more, a cut
	 * between two of them would let the second run destroy the first
	 * one moved.
	 * Both ids are searched once, before anything changes (a search
	 * per class and id made the commit a dozen searches): moving
	 * one class to "to" leaves the other classes at "to" as they were,
	 * so what the searches found stays right class by class. */
	if ((r = find_id(h, from, from_len, &src)) != 0)
		return r;
	for (c = 0; c < HSM_NCLASSES; c++) {
		if (src.n[c] == 0)
			continue;
		if (!have_dst) {
			if ((r = find_id(h, to, to_len, &dst)) != 0)
				return r;
			have_dst = 1;
		}
		if ((r = destroy_objs(h, &dst, c)) != 0)
			return r;
		for (i = 0; i < src.n[c]; i++) {
			rv = h->fl->C_SetAttributeValue(h->sess, src.h[c][i],
			    &a, 1);
			if (rv != CKR_OK)
				return ck_fail("C_SetAttributeValue(CKA_ID)",
				    rv);
			count++;
		}
	}
	if (moved != NULL)
		*moved = count;
	return 0;
}

int
hsm_destroy_id(struct hsm *h, const uint8_t *id, size_t id_len)
{
	int r;

	if (h == NULL)
		return KL_ERR_INVALID;
	if ((r = check_id(id, id_len)) != 0)
		return r;
	return destroy_all_id(h, id, id_len);
}

/*
 * One search over every object (the template cannot say "ends with"),
 * each object's class and id in one C_GetAttributeValue, then the
 * hits destroyed class by class (private keys, public keys,
 * certificates) as the search per class used to.
 */
int
hsm_destroy_suffix(struct hsm *h, const uint8_t *suffix, size_t suffix_len,
    int *destroyed)
{
	CK_OBJECT_HANDLE batch[64], *hit[HSM_NCLASSES] = { NULL }, *grown;
	CK_ULONG n, i;
	size_t nhit[HSM_NCLASSES] = { 0 }, cap[HSM_NCLASSES] = { 0 }, c, k;
	uint8_t id[HSM_MAX_ID + 1];
	CK_OBJECT_CLASS cls;
	CK_ATTRIBUTE a[2];
	CK_RV rv;
	int count = 0, r = 0;

	if (h == NULL || suffix == NULL || suffix_len == 0)
		return KL_ERR_INVALID;
	/* Collect first, destroy after the search: a search's results are
	 * undefined once objects go under it. */
	rv = h->fl->C_FindObjectsInit(h->sess, NULL, 0);
	if (rv != CKR_OK) {
		r = ck_fail("C_FindObjectsInit", rv);
		goto out;
	}
	do {
		n = 0;
		rv = h->fl->C_FindObjects(h->sess, batch,
		    sizeof(batch) / sizeof(batch[0]), &n);
		for (i = 0; rv == CKR_OK && i < n; i++) {
			a[0].type = CKA_CLASS;
			a[0].pValue = &cls;
			a[0].ulValueLen = sizeof(cls);
			a[1].type = CKA_ID;
			a[1].pValue = id;
			a[1].ulValueLen = sizeof(id);
			if (h->fl->C_GetAttributeValue(h->sess, batch[i], a,
			    2) != CKR_OK ||
			    (c = class_index(cls)) == HSM_NCLASSES ||
			    a[1].ulValueLen == CK_UNAVAILABLE_INFORMATION ||
			    a[1].ulValueLen <= suffix_len ||
			    memcmp(id + a[1].ulValueLen - suffix_len, suffix,
			    suffix_len) != 0)
				continue;
			if (nhit[c] == cap[c]) {
				cap[c] = cap[c] ? 2 * cap[c] : 16;
				grown = realloc(hit[c], cap[c] *
				    sizeof(*hit[c]));
				if (grown == NULL) {
					(void)h->fl->C_FindObjectsFinal(
					    h->sess);
					r = KL_ERR_NOMEM;
					goto out;
				}
				hit[c] = grown;
			}
			hit[c][nhit[c]++] = batch[i];
		}
	} while (rv == CKR_OK && n == sizeof(batch) / sizeof(batch[0]));
	(void)h->fl->C_FindObjectsFinal(h->sess);
	if (rv != CKR_OK) {
		r = ck_fail("C_FindObjects", rv);
		goto out;
	}
	for (c = 0; c < HSM_NCLASSES; c++) {
		for (k = 0; k < nhit[c]; k++) {
			rv = h->fl->C_DestroyObject(h->sess, hit[c][k]);
			if (rv != CKR_OK) {
				r = ck_fail("C_DestroyObject", rv);
				goto out;
			}
			count++;
		}
	}
out:
	for (c = 0; c < HSM_NCLASSES; c++)
		free(hit[c]);
	if (destroyed != NULL)
		*destroyed = count;
	return r;
}
