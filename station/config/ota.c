/*
 * ota.c: root.crt and gateway.url for the boards (see ota.h).
 *
 * Both files are read once, with a size cap, checked, and kept in memory;
 * every board then gets the same bytes.  A credentials.zip comes from the
 * OTA server's web UI and holds more than we need (client keys for
 * shared-credential provisioning among them): only the two entries we use
 * are opened, by exact name.
 */
#include "station/config/ota.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <zip.h>

#include "common/err.h"
#include "common/fsutil.h"

#define OTA_ZIP_URL "autoprov.url"
#define OTA_ZIP_CA "server_ca.pem"
/* Certificates in root.crt; a bundle of more is not a root file. */
#define OTA_MAX_CERTS 16

void
ota_files_free(struct ota_files *f)
{
	if (f == NULL)
		return;
	free(f->root_crt);
	free(f->gateway_url);
	f->root_crt = NULL;
	f->root_crt_len = 0;
	f->gateway_url = NULL;
}

/* One or more PEM certificates, nothing broken among them, the first a
 * CA: aktualizr trusts exactly this file for the server's TLS. */
static int
ota_check_root(const uint8_t *pem, size_t len, const char *what, char *err,
    size_t errsz)
{
	BIO *in = NULL;
	X509 *x = NULL, *first = NULL;
	int n = 0, r = KL_ERR_CONFIG;
	uint32_t fl;

	if (len == 0) {
		snprintf(err, errsz, "%s: empty", what);
		return KL_ERR_CONFIG;
	}
	if (memchr(pem, '\0', len) != NULL) {
		snprintf(err, errsz, "%s: contains a NUL byte", what);
		return KL_ERR_CONFIG;
	}
	if ((in = BIO_new_mem_buf(pem, (int)len)) == NULL) {
		r = KL_ERR_NOMEM;
		snprintf(err, errsz, "%s: %s", what, kl_strerror(r));
		goto out;
	}
	ERR_set_mark();
	while ((x = PEM_read_bio_X509(in, NULL, NULL, NULL)) != NULL) {
		if (++n > OTA_MAX_CERTS) {
			ERR_pop_to_mark();
			snprintf(err, errsz, "%s: more than %d certificates",
			    what, OTA_MAX_CERTS);
			goto out;
		}
		if (first == NULL) {
			first = x;
			x = NULL;
		} else {
			X509_free(x);
			x = NULL;
		}
	}
	if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE) {
		ERR_pop_to_mark();
		snprintf(err, errsz, "%s: certificate %d does not parse",
		    what, n + 1);
		goto out;
	}
	ERR_pop_to_mark();
	if (first == NULL) {
		snprintf(err, errsz, "%s: no PEM certificate", what);
		goto out;
	}
	fl = X509_get_extension_flags(first);
	if ((fl & EXFLAG_INVALID) || !(fl & EXFLAG_BCONS) ||
	    !(fl & EXFLAG_CA)) {
		snprintf(err, errsz, "%s: the first certificate is not a CA "
		    "(basicConstraints CA:TRUE missing)", what);
		goto out;
	}
	r = 0;
out:
	X509_free(x);
	X509_free(first);
	BIO_free(in);
	return r;
}

/* The URL text as found (a file, possibly with a final newline) into
 * "URL\n". */
static int
ota_make_url(const char *text, size_t len, const char *what, char **out,
    char *err, size_t errsz)
{
	char why[256], *url = NULL;
	size_t i;
	int r;

	/* A final newline (or CRLF) and trailing blanks are normal in a
	 * file; anything else that is not printable is not. */
	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' ||
	    text[len - 1] == ' ' || text[len - 1] == '\t'))
		len--;
	if (len == 0) {
		snprintf(err, errsz, "%s: empty URL", what);
		return KL_ERR_CONFIG;
	}
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];

		if (c == '\n' || c == '\r') {
			snprintf(err, errsz, "%s: URL is more than one line",
			    what);
			return KL_ERR_CONFIG;
		}
		if (c < 0x20 || c == 0x7f) {
			snprintf(err, errsz, "%s: control character 0x%02x "
			    "in URL", what, c);
			return KL_ERR_CONFIG;
		}
	}
	if ((url = malloc(len + 2)) == NULL) {
		snprintf(err, errsz, "%s: %s", what, kl_strerror(KL_ERR_NOMEM));
		return KL_ERR_NOMEM;
	}
	memcpy(url, text, len);
	url[len] = '\0';
	why[0] = '\0';
	if ((r = config_check_url(url, why, sizeof(why))) != 0) {
		snprintf(err, errsz, "%s: %s", what, why);
		free(url);
		return KL_ERR_CONFIG;
	}
	url[len] = '\n';
	url[len + 1] = '\0';
	*out = url;
	return 0;
}

/*
 * Index of the entry called base at the top level or in one folder, and
 * that folder's length in *dirlen (0 at the top level).  Exactly one such
 * entry may exist.
 */
static int
ota_zip_find(zip_t *za, const char *zpath, const char *base,
    zip_uint64_t *idx, const char **dir, size_t *dirlen, char *err,
    size_t errsz)
{
	zip_int64_t n = zip_get_num_entries(za, 0), i;
	size_t blen = strlen(base);
	int found = 0;

	for (i = 0; i < n; i++) {
		const char *name = zip_get_name(za, (zip_uint64_t)i, 0);
		const char *slash;
		size_t nlen;

		if (name == NULL)
			continue;
		nlen = strlen(name);
		if (nlen < blen || strcmp(name + nlen - blen, base) != 0)
			continue;
		if (nlen == blen) {
			slash = NULL;
		} else {
			/* "folder/base": one component, not empty. */
			slash = name + nlen - blen - 1;
			if (*slash != '/' || slash == name ||
			    memchr(name, '/', (size_t)(slash - name)) != NULL)
				continue;
		}
		if (found++) {
			snprintf(err, errsz, "%s: more than one %s", zpath,
			    base);
			return KL_ERR_CONFIG;
		}
		*idx = (zip_uint64_t)i;
		*dir = name;
		*dirlen = slash != NULL ? (size_t)(slash - name) : 0;
	}
	if (!found) {
		snprintf(err, errsz, "%s: no %s in the archive", zpath, base);
		return KL_ERR_CONFIG;
	}
	return 0;
}

/* Read an entry, never more than OTA_MAX_FILE bytes whatever the
 * directory claims (a zip bomb claims little). */
static int
ota_zip_read(zip_t *za, const char *zpath, zip_uint64_t idx,
    const char *base, uint8_t **out, size_t *outlen, char *err, size_t errsz)
{
	zip_file_t *zf = NULL;
	zip_stat_t st;
	uint8_t *data = NULL;
	size_t len = 0;
	zip_int64_t got;
	int r = KL_ERR_CONFIG;

	zip_stat_init(&st);
	if (zip_stat_index(za, idx, 0, &st) != 0) {
		snprintf(err, errsz, "%s: %s: %s", zpath, base,
		    zip_strerror(za));
		goto out;
	}
	if ((st.valid & ZIP_STAT_SIZE) && st.size > OTA_MAX_FILE) {
		snprintf(err, errsz, "%s: %s: larger than %d bytes", zpath,
		    base, OTA_MAX_FILE);
		goto out;
	}
	if ((data = malloc(OTA_MAX_FILE + 1)) == NULL) {
		r = KL_ERR_NOMEM;
		snprintf(err, errsz, "%s: %s", zpath, kl_strerror(r));
		goto out;
	}
	if ((zf = zip_fopen_index(za, idx, 0)) == NULL) {
		snprintf(err, errsz, "%s: %s: %s", zpath, base,
		    zip_strerror(za));
		goto out;
	}
	while (len < OTA_MAX_FILE + 1) {
		got = zip_fread(zf, data + len, OTA_MAX_FILE + 1 - len);
		if (got < 0) {
			snprintf(err, errsz, "%s: %s: %s", zpath, base,
			    zip_file_strerror(zf));
			goto out;
		}
		if (got == 0)
			break;
		len += (size_t)got;
	}
	if (len > OTA_MAX_FILE) {
		snprintf(err, errsz, "%s: %s: larger than %d bytes", zpath,
		    base, OTA_MAX_FILE);
		goto out;
	}
	*out = data;
	*outlen = len;
	data = NULL;
	r = 0;
out:
	if (zf != NULL)
		zip_fclose(zf);
	free(data);
	return r;
}

static int
ota_load_zip(const char *zpath, struct ota_files *f, char *err, size_t errsz)
{
	zip_t *za = NULL;
	zip_uint64_t iu = 0, ic = 0;
	const char *du = NULL, *dc = NULL;
	size_t dulen = 0, dclen = 0, ulen = 0;
	uint8_t *url = NULL;
	char what[PATH_MAX + 64];
	int zerr = 0, r = KL_ERR_CONFIG;

	if ((za = zip_open(zpath, ZIP_RDONLY, &zerr)) ==
	    NULL) {
		zip_error_t ze;

		zip_error_init_with_code(&ze, zerr);
		snprintf(err, errsz, "%s: %s", zpath, zip_error_strerror(&ze));
		zip_error_fini(&ze);
		r = zerr == ZIP_ER_NOENT || zerr == ZIP_ER_OPEN ||
		    zerr == ZIP_ER_READ ? KL_ERR_IO : KL_ERR_CONFIG;
		goto out;
	}
	if ((r = ota_zip_find(za, zpath, OTA_ZIP_URL, &iu, &du, &dulen, err,
	    errsz)) != 0 ||
	    (r = ota_zip_find(za, zpath, OTA_ZIP_CA, &ic, &dc, &dclen, err,
	    errsz)) != 0)
		goto out;
	if (dulen != dclen || memcmp(du, dc, dulen) != 0) {
		snprintf(err, errsz, "%s: %s and %s are in different folders",
		    zpath, OTA_ZIP_URL, OTA_ZIP_CA);
		r = KL_ERR_CONFIG;
		goto out;
	}
	if ((r = ota_zip_read(za, zpath, iu, OTA_ZIP_URL, &url, &ulen, err,
	    errsz)) != 0 ||
	    (r = ota_zip_read(za, zpath, ic, OTA_ZIP_CA, &f->root_crt,
	    &f->root_crt_len, err, errsz)) != 0)
		goto out;
	snprintf(what, sizeof(what), "%s: %s", zpath, OTA_ZIP_URL);
	if ((r = ota_make_url((const char *)url, ulen, what, &f->gateway_url,
	    err, errsz)) != 0)
		goto out;
	snprintf(what, sizeof(what), "%s: %s", zpath, OTA_ZIP_CA);
	if ((r = ota_check_root(f->root_crt, f->root_crt_len, what, err,
	    errsz)) != 0)
		goto out;
	r = 0;
out:
	free(url);
	if (za != NULL)
		zip_discard(za);
	return r;
}

int
ota_load(const struct config *cfg, struct ota_files *out, char *err,
    size_t errsz)
{
	struct ota_files f = { 0 };
	int r = KL_ERR_INTERNAL;

	if (cfg == NULL || out == NULL) {
		snprintf(err, errsz, "ota: no configuration");
		return KL_ERR_INVALID;
	}
	if (cfg->credentials_zip[0] != '\0') {
		if ((r = ota_load_zip(cfg->credentials_zip, &f, err, errsz))
		    != 0)
			goto out;
	} else {
		if (cfg->root_crt[0] == '\0' || cfg->gateway_url[0] == '\0') {
			snprintf(err, errsz, "%s: [ota] needs credentials_zip "
			    "or gateway_url and root_crt", cfg->path);
			r = KL_ERR_CONFIG;
			goto out;
		}
		r = fsutil_read_capped(cfg->root_crt, OTA_MAX_FILE,
		    &f.root_crt, &f.root_crt_len, err, errsz);
		if (r == KL_ERR_TOO_BIG)
			r = KL_ERR_CONFIG;
		if (r != 0 || (r = ota_check_root(f.root_crt, f.root_crt_len,
		    cfg->root_crt, err, errsz)) != 0)
			goto out;
		if ((r = ota_make_url(cfg->gateway_url,
		    strlen(cfg->gateway_url), "[ota] gateway_url",
		    &f.gateway_url, err, errsz)) != 0)
			goto out;
	}
	*out = f;
	memset(&f, 0, sizeof(f));
	r = 0;
out:
	ota_files_free(&f);
	return r;
}
