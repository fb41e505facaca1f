/* test_ota.c: root.crt and gateway.url from files and from credentials.zip
 * archives built here with libzip. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <zip.h>

#include "station/config/config.h"
#include "common/err.h"
#include "station/config/ota.h"
#include "tests/unit/pki_util.h"

struct fx {
	char dir[64];
	char zip[128], crt[128];
	char *ca_pem, *leaf_pem;	/* PEM text */
	struct config *cfg;
	char err[512];
};

static char *
pem_of(X509 *x)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out;
	long n;

	if (b == NULL || !PEM_write_bio_X509(b, x))
		return NULL;
	n = BIO_get_mem_data(b, &data);
	out = malloc((size_t)n + 1);
	if (out != NULL) {
		memcpy(out, data, (size_t)n);
		out[n] = '\0';
	}
	BIO_free(b);
	return out;
}

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	EVP_PKEY *ck = pki_ec_key(), *lk = pki_ec_key();
	X509 *ca, *leaf;
	struct pki_opts o = { 0 };

	if (f == NULL || ck == NULL || lk == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_ota.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->zip, sizeof(f->zip), "%s/credentials.zip", f->dir);
	snprintf(f->crt, sizeof(f->crt), "%s/root.crt", f->dir);
	ca = pki_make_ca("ota-gateway-root", ck, NULL, NULL);
	o.cn = "gw.example.com";
	o.key = lk;
	o.issuer = ca;
	o.issuer_key = ck;
	o.ku = "critical,digitalSignature";
	o.eku = "serverAuth";
	leaf = pki_make_cert(&o);
	if (ca == NULL || leaf == NULL)
		return -1;
	f->ca_pem = pem_of(ca);
	f->leaf_pem = pem_of(leaf);
	X509_free(ca);
	X509_free(leaf);
	EVP_PKEY_free(ck);
	EVP_PKEY_free(lk);
	if (f->ca_pem == NULL || f->leaf_pem == NULL ||
	    (f->cfg = calloc(1, sizeof(*f->cfg))) == NULL)
		return -1;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;

	unlink(f->zip);
	unlink(f->crt);
	rmdir(f->dir);
	free(f->ca_pem);
	free(f->leaf_pem);
	free(f->cfg);
	free(f);
	return 0;
}

static void
write_file(const char *path, const void *data, size_t len)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	if (len > 0)
		assert_int_equal(fwrite(data, 1, len, fp), len);
	assert_int_equal(fclose(fp), 0);
}

/* entries: name, content pairs, NULL-terminated. */
static void
make_zip(const char *path, const char *const *entries)
{
	zip_t *za;
	int zerr = 0;

	za = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &zerr);
	assert_non_null(za);
	for (; entries[0] != NULL; entries += 2) {
		zip_source_t *src = zip_source_buffer(za, entries[1],
		    strlen(entries[1]), 0);

		assert_non_null(src);
		if (zip_file_add(za, entries[0], src, ZIP_FL_OVERWRITE) < 0) {
			zip_source_free(src);
			fail_msg("zip_file_add %s: %s", entries[0],
			    zip_strerror(za));
		}
	}
	assert_int_equal(zip_close(za), 0);
}

/* Load; on failure check out was not touched. */
static int
load(struct fx *f, struct ota_files *out)
{
	struct ota_files sentinel = {
		.root_crt = (uint8_t *)"x", .root_crt_len = 1,
		.gateway_url = (char *)"y",
	};
	int rc;

	*out = sentinel;
	f->err[0] = '\0';
	rc = ota_load(f->cfg, out, f->err, sizeof(f->err));
	if (rc != 0)
		assert_memory_equal(out, &sentinel, sizeof(sentinel));
	return rc;
}

static void
use_zip(struct fx *f)
{
	memset(f->cfg, 0, sizeof(*f->cfg));
	snprintf(f->cfg->path, sizeof(f->cfg->path), "station.conf");
	snprintf(f->cfg->credentials_zip, sizeof(f->cfg->credentials_zip),
	    "%s", f->zip);
}

static void
test_files(void **state)
{
	struct fx *f = *state;
	struct ota_files o;
	char both[8192], big[OTA_MAX_FILE + 16];

	memset(f->cfg, 0, sizeof(*f->cfg));
	snprintf(f->cfg->root_crt, sizeof(f->cfg->root_crt), "%s", f->crt);
	snprintf(f->cfg->gateway_url, sizeof(f->cfg->gateway_url),
	    "https://gw.example.com:8443");
	write_file(f->crt, f->ca_pem, strlen(f->ca_pem));
	assert_int_equal(load(f, &o), 0);
	assert_string_equal(o.gateway_url, "https://gw.example.com:8443\n");
	assert_int_equal(o.root_crt_len, strlen(f->ca_pem));
	assert_memory_equal(o.root_crt, f->ca_pem, o.root_crt_len);
	ota_files_free(&o);
	assert_null(o.root_crt);
	ota_files_free(&o);
	ota_files_free(NULL);

	/* CA first, then more: fine.  Leaf first: not a CA. */
	snprintf(both, sizeof(both), "%s%s", f->ca_pem, f->leaf_pem);
	write_file(f->crt, both, strlen(both));
	assert_int_equal(load(f, &o), 0);
	ota_files_free(&o);
	snprintf(both, sizeof(both), "%s%s", f->leaf_pem, f->ca_pem);
	write_file(f->crt, both, strlen(both));
	assert_int_equal(load(f, &o), KL_ERR_CONFIG);
	{
		char want[256];

		snprintf(want, sizeof(want), "%s: the first certificate is "
		    "not a CA (basicConstraints CA:TRUE missing)", f->crt);
		assert_string_equal(f->err, want);
	}

	/* A broken second certificate. */
	snprintf(both, sizeof(both), "%s-----BEGIN CERTIFICATE-----\nAAAA\n"
	    "-----END CERTIFICATE-----\n", f->ca_pem);
	write_file(f->crt, both, strlen(both));
	assert_int_equal(load(f, &o), KL_ERR_CONFIG);
	assert_non_null(strstr(f->err, "certificate 2 does not parse"));

	/* Truncated PEM, empty, garbage, NUL. */
	write_file(f->crt, f->ca_pem, strlen(f->ca_pem) / 2);
	assert_int_equal(load(f, &o), KL_ERR_CONFIG);
	write_file(f->crt, "", 0);
	assert_int_equal(load(f, &o), KL_ERR_CONFIG);
	assert_non_null(strstr(f->err, ": empty"));
	write_file(f->crt, "hello\n", 6);
	assert_int_equal(load(f, &o), KL_ERR_CONFIG);
	assert_non_null(strstr(f->err, "no PEM certificate"));
	write_file(f->crt, f->ca_pem, strlen(f->ca_pem) + 1);
	assert_int_equal(load(f, &o), KL_ERR_CONFIG);
	assert_non_null(strstr(f->err, "NUL byte"));

	/* Over the size cap. */
	memset(big, '\n', sizeof(big));
	memcpy(big, f->ca_pem, strlen(f->ca_pem));
	write_file(f->crt, big, sizeof(big));
	assert_int_equal(load(f, &o), KL_ERR_CONFIG);
	assert_non_null(strstr(f->err, "larger than 32768 bytes"));

	/* Missing file. */
	unlink(f->crt);
	assert_int_equal(load(f, &o), KL_ERR_IO);

	/* Bad URLs given straight in the struct (config_load would refuse
	 * them too; ota_load does not rely on that). */
	write_file(f->crt, f->ca_pem, strlen(f->ca_pem));
	snprintf(f->cfg->gateway_url, sizeof(f->cfg->gateway_url),
	    "http://gw.example.com");
	assert_int_equal(load(f, &o), KL_ERR_CONFIG);
	assert_string_equal(f->err, "[ota] gateway_url: URL must start with "
	    "https://: 'http://gw.example.com'");
	snprintf(f->cfg->gateway_url, sizeof(f->cfg->gateway_url),
	    "https://a\nhttps://b");
	assert_int_equal(load(f, &o), KL_ERR_CONFIG);
	assert_non_null(strstr(f->err, "more than one line"));
	snprintf(f->cfg->gateway_url, sizeof(f->cfg->gateway_url),
	    "https://gw\x1b");
	assert_int_equal(load(f, &o), KL_ERR_CONFIG);
	assert_non_null(strstr(f->err, "control character 0x1b"));
	f->cfg->gateway_url[0] = '\0';
	assert_int_equal(load(f, &o), KL_ERR_CONFIG);
}

static void
test_zip_good(void **state)
{
	struct fx *f = *state;
	struct ota_files o;
	const char *top[] = {
		"treehub.json", "{}",
		"autoprov.url", "https://gw.example.com:443\n",
		"autoprov_credentials.p12", "not-looked-at",
		"server_ca.pem", f->ca_pem,
		NULL,
	};
	const char *folder[] = {
		"creds/", "",
		"creds/autoprov.url", "https://ota.example.org/  \r\n",
		"creds/server_ca.pem", f->ca_pem,
		NULL,
	};

	use_zip(f);
	make_zip(f->zip, top);
	assert_int_equal(load(f, &o), 0);
	assert_string_equal(o.gateway_url, "https://gw.example.com:443\n");
	assert_int_equal(o.root_crt_len, strlen(f->ca_pem));
	assert_memory_equal(o.root_crt, f->ca_pem, o.root_crt_len);
	ota_files_free(&o);

	make_zip(f->zip, folder);
	assert_int_equal(load(f, &o), 0);
	assert_string_equal(o.gateway_url, "https://ota.example.org/\n");
	ota_files_free(&o);
}

static void
test_zip_bad(void **state)
{
	static const struct {
		const char *entries[8];
		const char *words;
	} cases[] = {
		{ { "autoprov.url", "http://gw.example.com\n",
		    "server_ca.pem", "CA", NULL },
		    "credentials.zip: autoprov.url: URL must start with "
		    "https://: 'http://gw.example.com'" },
		{ { "autoprov.url", "https://gw\n", NULL },
		    "credentials.zip: no server_ca.pem in the archive" },
		{ { "server_ca.pem", "CA", NULL },
		    "credentials.zip: no autoprov.url in the archive" },
		{ { "a/autoprov.url", "https://gw\n", "b/server_ca.pem", "CA",
		    NULL },
		    "autoprov.url and server_ca.pem are in different folders" },
		{ { "autoprov.url", "https://gw\n", "x/autoprov.url",
		    "https://gw\n", "server_ca.pem", "CA", NULL },
		    "credentials.zip: more than one autoprov.url" },
		{ { "a/b/autoprov.url", "https://gw\n", "a/b/server_ca.pem",
		    "CA", NULL },
		    "no autoprov.url in the archive" },
		{ { "my-autoprov.url", "https://gw\n", "server_ca.pem", "CA",
		    NULL },
		    "no autoprov.url in the archive" },
		{ { "autoprov.url", "https://gw\nhttps://evil\n",
		    "server_ca.pem", "CA", NULL },
		    "autoprov.url: URL is more than one line" },
		{ { "autoprov.url", "https://g\tw\n", "server_ca.pem", "CA",
		    NULL },
		    "autoprov.url: control character 0x09 in URL" },
		{ { "autoprov.url", "\n\n", "server_ca.pem", "CA", NULL },
		    "autoprov.url: empty URL" },
		{ { "autoprov.url", "https://gw\n", "server_ca.pem",
		    "not a cert", NULL },
		    "server_ca.pem: no PEM certificate" },
		{ { "autoprov.url", "https://gw\n", "server_ca.pem", "LEAF",
		    NULL },
		    "server_ca.pem: the first certificate is not a CA" },
	};
	struct fx *f = *state;
	struct ota_files o;
	size_t i, j;

	use_zip(f);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *e[8];

		/* "CA" / "LEAF" stand for the real PEM texts. */
		for (j = 0; j < 8; j++) {
			e[j] = cases[i].entries[j];
			if (e[j] != NULL && j % 2 == 1 &&
			    strcmp(e[j], "CA") == 0)
				e[j] = f->ca_pem;
			if (e[j] != NULL && j % 2 == 1 &&
			    strcmp(e[j], "LEAF") == 0)
				e[j] = f->leaf_pem;
		}
		make_zip(f->zip, e);
		if (load(f, &o) != KL_ERR_CONFIG ||
		    strstr(f->err, cases[i].words) == NULL ||
		    strncmp(f->err, f->zip, strlen(f->zip)) != 0)
			fail_msg("case %zu: '%s'", i, f->err);
	}

	/* An entry over the cap (a zip bomb would claim far more). */
	{
		char *big = malloc(OTA_MAX_FILE + 2);
		const char *e[] = { "autoprov.url", NULL, "server_ca.pem",
			NULL, NULL };

		assert_non_null(big);
		memset(big, 'a', OTA_MAX_FILE + 1);
		big[OTA_MAX_FILE + 1] = '\0';
		e[1] = "https://gw\n";
		e[3] = big;
		make_zip(f->zip, e);
		assert_int_equal(load(f, &o), KL_ERR_CONFIG);
		assert_non_null(strstr(f->err,
		    "server_ca.pem: larger than 32768 bytes"));
		free(big);
	}
}

static void
test_zip_garbage(void **state)
{
	struct fx *f = *state;
	struct ota_files o;
	const char *good[] = {
		"autoprov.url", "https://gw.example.com\n",
		"server_ca.pem", f->ca_pem,
		NULL,
	};
	uint8_t *data, *copy;
	long n;
	size_t len, i;
	FILE *fp;
	int rc, passed = 0;

	use_zip(f);
	/* Not a zip, missing. */
	{
		static const char junk[] = "PK\x03\x04 not really";

		write_file(f->zip, junk, sizeof(junk) - 1);
	}
	assert_int_equal(load(f, &o), KL_ERR_CONFIG);
	assert_int_equal(strncmp(f->err, f->zip, strlen(f->zip)), 0);
	unlink(f->zip);
	assert_int_equal(load(f, &o), KL_ERR_IO);

	make_zip(f->zip, good);
	fp = fopen(f->zip, "r");
	assert_non_null(fp);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	assert_true(n > 0);
	len = (size_t)n;
	data = malloc(len);
	copy = malloc(len);
	assert_non_null(data);
	assert_non_null(copy);
	assert_int_equal(fread(data, 1, len, fp), len);
	fclose(fp);

	/* Truncations are refused. */
	for (i = 0; i < len; i += 7) {
		write_file(f->zip, data, i);
		rc = load(f, &o);
		if (rc == 0)
			fail_msg("truncated to %zu bytes accepted", i);
	}
	/* Byte flips: refused or, where the flip hits something unused,
	 * accepted with the right content; never anything else. */
	for (i = 0; i < len; i++) {
		memcpy(copy, data, len);
		copy[i] ^= 0x5a;
		write_file(f->zip, copy, len);
		rc = load(f, &o);
		if (rc == 0) {
			passed++;
			assert_string_equal(o.gateway_url,
			    "https://gw.example.com\n");
			ota_files_free(&o);
			continue;
		}
		assert_true(rc == KL_ERR_CONFIG || rc == KL_ERR_IO);
	}
	assert_true(passed < (int)len / 2);
	free(data);
	free(copy);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_files),
		cmocka_unit_test(test_zip_good),
		cmocka_unit_test(test_zip_bad),
		cmocka_unit_test(test_zip_garbage),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
