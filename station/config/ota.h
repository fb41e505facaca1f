/*
 * ota.h: what every board gets for its OTA client besides its own
 * certificate: root.crt (the OTA server's gateway root CA) and gateway.url.
 *
 * From [ota] root_crt + gateway_url, or from the OTA server's
 * credentials.zip ([ota] credentials_zip: autoprov.url -> gateway.url,
 * server_ca.pem -> root.crt; the entries at the top level or inside one
 * folder).  Both are checked once at start-up so a bad file stops the
 * station rather than every board: root.crt is one or more PEM X.509
 * certificates and the first is a CA (basicConstraints CA:TRUE); the URL
 * is https, one line, no control characters (config_check_url()).
 */
#ifndef KL_OTA_H
#define KL_OTA_H

#include <stddef.h>
#include <stdint.h>

#include "station/config/config.h"
#include "station/link/proto.h"

/* Entries of credentials.zip and root_crt files are at most this big:
 * what a board accepts in one PUT_FILE, so a file that passes here never
 * fails every board at the write step. */
#define OTA_MAX_FILE PROTO_MAX_FILE

struct ota_files {
	uint8_t *root_crt;	/* owned: the PEM bytes as they go to the board */
	size_t root_crt_len;
	char *gateway_url;	/* owned: the file's content, URL + "\n" */
};

/*
 * Fill *out from cfg.  0, or KL_ERR_CONFIG (a check failed: the message
 * names the file and, for a zip, the entry), KL_ERR_IO, KL_ERR_NOMEM, with
 * words in err.  *out is written only on success; free with
 * ota_files_free().
 */
int ota_load(const struct config *cfg, struct ota_files *out, char *err,
    size_t errsz);

/* Frees the contents and zeroes *f; accepts NULL and a zeroed struct. */
void ota_files_free(struct ota_files *f);

#endif
