/*
 * config.c: station.conf into struct config (see config.h).
 *
 * Every key is one row of config_keys: where it goes in struct config and
 * which checker turns the text into a value.  [slots] is the one section
 * whose keys are not names but jig slot numbers.  Parsing fills a private
 * copy; the caller's struct is written only when the whole file, and the
 * checks across keys after it, passed.
 */
#include "station/config/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libgen.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "station/config/devid.h"
#include "common/err.h"
#include "common/ini.h"
#include "station/link/link.h"
#include "station/link/serial.h"

enum config_type {
	CT_STR,		/* copied as is */
	CT_PATH,	/* relative to the config file's directory */
	CT_BOOL,
	CT_INT,		/* min..max */
	CT_HEXID,	/* CKA_ID in hex, 1..16 bytes */
	CT_KEYTYPE,
	CT_TEMPLATE,	/* device ID template */
	CT_BAUD,
	CT_URL,		/* https://host... */
	CT_BACKEND,
	CT_ENVNAME,	/* name of an environment variable */
	CT_MODULE_ENV,	/* NAME=path */
	CT_ADDR,	/* numeric IPv4 or IPv6 address */
	CT_CAURL,	/* http:// or https:// URL of a remote CA */
	CT_USB_IDS,	/* VID:PID, VID:PID ... (struct config_usb_ids) */
	CT_POWER,	/* none | usb-hub | virtual-jig */
	CT_OFFLINE,	/* wait | local */
	CT_CREDENTIAL,	/* a systemd credential's name */
};

struct config_key {
	const char *section;
	const char *key;
	enum config_type type;
	size_t off;
	size_t size;
	long min, max;
};

#define CF(m) offsetof(struct config, m), sizeof(((struct config *)0)->m)

static const struct config_key config_keys[] = {
	{ "station", "id", CT_STR, CF(station_id), 0, 0 },
	{ "station", "operator", CT_STR, CF(operator_name), 0, 0 },
	{ "station", "work_order", CT_STR, CF(work_order), 0, 0 },
	{ "station", "audit_db", CT_PATH, CF(audit_db), 0, 0 },
	{ "station", "device_id_template", CT_TEMPLATE,
	    CF(device_id_template), 0, 0 },

	{ "keys", "type", CT_KEYTYPE, CF(key_type), 0, 0 },
	{ "keys", "tls_key_id", CT_HEXID, CF(tls_key_id), 0, 0 },
	{ "keys", "cert_id", CT_HEXID, CF(cert_id), 0, 0 },
	{ "keys", "uptane_key", CT_BOOL, CF(uptane_key), 0, 0 },
	{ "keys", "uptane_key_id", CT_HEXID, CF(uptane_key_id), 0, 0 },
	{ "keys", "label", CT_STR, CF(key_label), 0, 0 },

	{ "link", "baud", CT_BAUD, CF(baud), 0, 0 },
	{ "link", "timeout_ms", CT_INT, CF(timeout_ms), 1, 600000 },
	{ "link", "keygen_timeout_ms", CT_INT, CF(keygen_timeout_ms), 1,
	    3600000 },
	{ "link", "attempts", CT_INT, CF(attempts), 1, 100 },
	{ "link", "resends", CT_INT, CF(resends), 0, 1000 },

	{ "ca", "backend", CT_BACKEND, CF(ca_backend), 0, 0 },
	{ "ca", "issuer_cert", CT_PATH, CF(ca_issuer_cert), 0, 0 },
	{ "ca", "fleet_root", CT_PATH, CF(fleet_root), 0, 0 },
	{ "ca", "intermediates", CT_PATH, CF(ca_intermediates), 0, 0 },
	{ "ca", "module", CT_PATH, CF(ca_module), 0, 0 },
	{ "ca", "module_env", CT_MODULE_ENV, CF(ca_module_env), 0, 0 },
	{ "ca", "token_label", CT_STR, CF(ca_token_label), 0, 0 },
	{ "ca", "key_id", CT_HEXID, CF(ca_key_id), 0, 0 },
	{ "ca", "pin_file", CT_PATH, CF(ca_pin_file), 0, 0 },
	{ "ca", "pin_env", CT_ENVNAME, CF(ca_pin_env), 0, 0 },
	{ "ca", "pin_credential", CT_CREDENTIAL, CF(ca_pin_credential), 0, 0 },
	{ "ca", "validity_days", CT_INT, CF(validity_days), 1, 36500 },
	{ "ca", "subject_extra", CT_STR, CF(ca_subject_extra), 0, 0 },
	{ "ca", "max_validity_days", CT_INT, CF(ca_max_validity_days), 1,
	    36500 },
	{ "ca", "request_timeout_ms", CT_INT, CF(ca_request_timeout_ms), 100,
	    600000 },
	{ "ca", "retry_base_ms", CT_INT, CF(ca_retry_base_ms), 1, 600000 },
	{ "ca", "retry_max_ms", CT_INT, CF(ca_retry_max_ms), 1, 3600000 },
	{ "ca", "wait_deadline_s", CT_INT, CF(ca_wait_deadline_s), 0, 86400 },
	{ "ca", "dev_key_pem", CT_PATH, CF(ca_dev_key_pem), 0, 0 },
	{ "ca", "dev_allow_pem_key", CT_BOOL, CF(ca_dev_allow_pem), 0, 0 },
	{ "ca", "url", CT_CAURL, CF(ca_url), 0, 0 },
	{ "ca", "auth_key_file", CT_PATH, CF(ca_auth_key_file), 0, 0 },
	{ "ca", "profile", CT_STR, CF(ca_profile), 0, 0 },
	{ "ca", "label", CT_STR, CF(ca_label), 0, 0 },
	{ "ca", "server_cert", CT_PATH, CF(ca_server_cert), 0, 0 },
	{ "ca", "cmp_secret_file", CT_PATH, CF(ca_cmp_secret_file), 0, 0 },
	{ "ca", "cmp_ref", CT_STR, CF(ca_cmp_ref), 0, 0 },
	{ "ca", "cmp_client_cert", CT_PATH, CF(ca_cmp_client_cert), 0, 0 },
	{ "ca", "cmp_client_key", CT_PATH, CF(ca_cmp_client_key), 0, 0 },
	{ "ca", "cmp_server_cert", CT_PATH, CF(ca_cmp_server_cert), 0, 0 },

	{ "ota", "root_crt", CT_PATH, CF(root_crt), 0, 0 },
	{ "ota", "gateway_url", CT_URL, CF(gateway_url), 0, 0 },
	{ "ota", "credentials_zip", CT_PATH, CF(credentials_zip), 0, 0 },

	{ "registry", "conninfo", CT_STR, CF(registry_conninfo), 0, 0 },
	{ "registry", "password_file", CT_PATH, CF(registry_password_file), 0,
	    0 },
	{ "registry", "root_cert", CT_PATH, CF(registry_root_cert), 0, 0 },
	{ "registry", "lease_s", CT_INT, CF(registry_lease_s), 10, 86400 },
	{ "registry", "timeout_s", CT_INT, CF(registry_timeout_s), 1, 60 },
	{ "registry", "wait_deadline_s", CT_INT, CF(registry_wait_deadline_s),
	    0, 86400 },
	{ "registry", "offline", CT_OFFLINE, CF(registry_offline), 0, 0 },

	{ "http", "enabled", CT_BOOL, CF(http_enabled), 0, 0 },
	{ "http", "bind", CT_ADDR, CF(http_bind), 0, 0 },
	{ "http", "port", CT_INT, CF(http_port), 1, 65535 },
	{ "http", "token_file", CT_PATH, CF(http_token_file), 0, 0 },
	{ "http", "token_credential", CT_CREDENTIAL, CF(http_token_credential),
	    0, 0 },
	{ "http", "tls_cert", CT_PATH, CF(http_tls_cert), 0, 0 },
	{ "http", "tls_key", CT_PATH, CF(http_tls_key), 0, 0 },
	{ "http", "max_connections", CT_INT, CF(http_max_connections), 1,
	    1024 },
	{ "http", "max_connections_per_ip", CT_INT,
	    CF(http_max_connections_per_ip), 1, 1024 },
	{ "http", "rate_limit", CT_INT, CF(http_rate_limit), 0, 100000 },
	{ "http", "rate_burst", CT_INT, CF(http_rate_burst), 1, 100000 },
	{ "http", "status_cache_ms", CT_INT, CF(http_status_cache_ms), 0,
	    10000 },

	{ "jig", "usb_ids", CT_USB_IDS, CF(jig_usb_ids), 0, 0 },
	{ "jig", "power", CT_POWER, CF(jig_power), 0, 0 },
	{ "jig", "power_off_ms", CT_INT, CF(jig_power_off_ms), 100, 60000 },
	{ "jig", "control", CT_PATH, CF(jig_control), 0, 0 },
	{ "jig", "power_retry", CT_BOOL, CF(jig_power_retry), 0, 0 },
	{ "jig", "hold_boards", CT_INT, CF(jig_hold_boards), 0, 64 },
	{ "jig", "hold_window_s", CT_INT, CF(jig_hold_window_s), 1, 86400 },
	{ "jig", "hold_failures", CT_INT, CF(jig_hold_failures), 0, 1000 },

	{ "audit", "checkpoint_key_id", CT_HEXID, CF(audit_checkpoint_key_id),
	    0, 0 },
	{ "audit", "checkpoint_cert", CT_PATH, CF(audit_checkpoint_cert), 0, 0 },
	{ "audit", "checkpoint_every", CT_INT, CF(audit_checkpoint_every), 1,
	    1000000 },
};

#define CONFIG_NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))

/* Sections with names; [slots] is handled apart. */
static const char *const config_sections[] = {
	"station", "keys", "link", "ca", "ota", "http", "jig", "audit",
	"registry",
};

static const char *const config_key_types[] = {
	"ec-p256", "rsa2048", "rsa3072",
};

/* [jig] power, in enum config_jig_power order. */
static const char *const config_powers[] = {
	"none", "usb-hub", "virtual-jig",
};

/* [registry] offline, in enum config_offline order. */
static const char *const config_offlines[] = {
	"wait", "local",
};

static const char *const config_backends[] = {
	"local", "cfssl", "cmp",
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

struct config_parse {
	struct config *cfg;
	char base_dir[PATH_MAX];
	unsigned char seen[CONFIG_NKEYS];
	unsigned char slot_seen[CONFIG_MAX_SLOTS + 1];
};

static int
config_in_list(const char *v, const char *const *list, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(v, list[i]) == 0)
			return 1;
	return 0;
}

static int
config_is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
	    (c >= 'A' && c <= 'F');
}

static int
config_check_hexid(const char *v, char *why, size_t whysz)
{
	size_t i, n = strlen(v);

	for (i = 0; i < n; i++) {
		if (!config_is_hex(v[i])) {
			snprintf(why, whysz, "not a hex ID: '%s'", v);
			return KL_ERR_CONFIG;
		}
	}
	if (n == 0 || n % 2 != 0 || n > 32) {
		snprintf(why, whysz,
		    "hex ID must be 1..16 bytes (2..32 hex digits, even): "
		    "'%s'", v);
		return KL_ERR_CONFIG;
	}
	return 0;
}

static int
config_check_envname(const char *v, size_t len_max, char *why, size_t whysz)
{
	size_t i;

	for (i = 0; v[i] != '\0' && i < len_max; i++) {
		char c = v[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    c == '_' || (i > 0 && c >= '0' && c <= '9')))
			break;
	}
	if (i == 0 || v[i] != '\0') {
		snprintf(why, whysz, "not an environment variable name");
		return KL_ERR_CONFIG;
	}
	return 0;
}

int
config_check_url(const char *url, char *why, size_t whysz)
{
	static const char scheme[] = "https://";
	const char *host, *p;
	size_t i, hlen;
	long port;

	for (i = 0; url[i] != '\0'; i++) {
		unsigned char c = (unsigned char)url[i];

		if (c <= 0x20 || c == 0x7f) {
			snprintf(why, whysz,
			    "URL contains a space or control character");
			return KL_ERR_CONFIG;
		}
	}
	if (strncmp(url, scheme, sizeof(scheme) - 1) != 0) {
		snprintf(why, whysz, "URL must start with https://: '%s'",
		    url);
		return KL_ERR_CONFIG;
	}
	host = url + sizeof(scheme) - 1;
	hlen = strcspn(host, "/?#");
	if (memchr(host, '@', hlen) != NULL) {
		/* Credentials in the URL would be copied onto every board. */
		snprintf(why, whysz, "URL must not carry user information");
		return KL_ERR_CONFIG;
	}
	p = memchr(host, ':', hlen);
	if (host[0] == '[') {
		/* IPv6 literal: [addr] or [addr]:port */
		const char *close = memchr(host, ']', hlen);

		p = NULL;
		if (close == NULL || close == host + 1) {
			snprintf(why, whysz, "URL has a bad IPv6 host");
			return KL_ERR_CONFIG;
		}
		if (close + 1 < host + hlen) {
			if (close[1] != ':') {
				snprintf(why, whysz, "URL has a bad host");
				return KL_ERR_CONFIG;
			}
			p = close + 1;
		}
	} else if (p == host || hlen == 0) {
		snprintf(why, whysz, "URL has no host: '%s'", url);
		return KL_ERR_CONFIG;
	}
	if (p != NULL) {
		size_t plen = (size_t)(host + hlen - (p + 1));

		port = 0;
		for (i = 0; i < plen; i++) {
			if (p[1 + i] < '0' || p[1 + i] > '9' || i >= 5) {
				port = -1;
				break;
			}
			port = port * 10 + (p[1 + i] - '0');
		}
		if (plen == 0 || port < 1 || port > 65535) {
			snprintf(why, whysz, "URL has a bad port: '%s'", url);
			return KL_ERR_CONFIG;
		}
	}
	return 0;
}

/*
 * A systemd credential's name: it becomes one file name under
 * $CREDENTIALS_DIRECTORY, so no '/', no leading '.', nothing a shell or
 * a unit file would quote.
 */
static int
config_check_credential(const char *v, char *why, size_t whysz)
{
	size_t i, n = strlen(v);

	for (i = 0; i < n; i++) {
		char c = v[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '_' || c == '-' ||
		    (c == '.' && i > 0)))
			break;
	}
	if (n == 0 || n > 64 || i != n) {
		snprintf(why, whysz, "not a credential name (1..64 of "
		    "A-Z a-z 0-9 . _ -, not starting with '.'): '%s'", v);
		return KL_ERR_CONFIG;
	}
	return 0;
}

/* A remote CA: http:// or https://, then the same host and port rules as
 * gateway_url (checked on the https:// form). */
static int
config_check_ca_url(const char *v, char *why, size_t whysz)
{
	char tmp[1024];

	if (strncmp(v, "https://", 8) == 0)
		return config_check_url(v, why, whysz);
	if (strncmp(v, "http://", 7) != 0) {
		snprintf(why, whysz, "URL must start with http:// or "
		    "https://: '%s'", v);
		return KL_ERR_CONFIG;
	}
	if (snprintf(tmp, sizeof(tmp), "https://%s", v + 7) >=
	    (int)sizeof(tmp)) {
		snprintf(why, whysz, "URL too long");
		return KL_ERR_CONFIG;
	}
	return config_check_url(tmp, why, whysz);
}

/* Numeric only: a host name would make the listening address depend on
 * the resolver at start-up, and the API is meant to bind loopback. */
static int
config_check_addr(const char *v, char *why, size_t whysz)
{
	unsigned char a[sizeof(struct in6_addr)];

	if (v[0] == '\0' || (inet_pton(AF_INET, v, a) != 1 &&
	    inet_pton(AF_INET6, v, a) != 1)) {
		snprintf(why, whysz, "not a numeric IPv4 or IPv6 address: "
		    "'%s'", v);
		return KL_ERR_CONFIG;
	}
	return 0;
}

/* Exactly four hex digits: "0403". */
static int
config_hex16(const char *v, size_t len, uint16_t *out)
{
	unsigned int x = 0;
	size_t i;

	if (len != 4)
		return -1;
	for (i = 0; i < len; i++) {
		if (!config_is_hex(v[i]))
			return -1;
		x = x * 16 + (unsigned int)(v[i] <= '9' ? v[i] - '0' :
		    (v[i] | 0x20) - 'a' + 10);
	}
	*out = (uint16_t)x;
	return 0;
}

/* "1d6b:0104, 0403:6001": comma separated, spaces around items allowed. */
static int
config_set_usb_ids(const char *v, struct config_usb_ids *out, char *why,
    size_t whysz)
{
	struct config_usb_ids ids;
	const char *p = v;

	memset(&ids, 0, sizeof(ids));
	for (;;) {
		size_t len;
		const char *colon;

		while (*p == ' ' || *p == '\t')
			p++;
		len = strcspn(p, ",");
		while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		colon = memchr(p, ':', len);
		if (ids.n == CONFIG_MAX_USB_IDS) {
			snprintf(why, whysz, "more than %d VID:PID pairs",
			    CONFIG_MAX_USB_IDS);
			return KL_ERR_CONFIG;
		}
		if (colon == NULL ||
		    config_hex16(p, (size_t)(colon - p),
		    &ids.id[ids.n].vid) != 0 ||
		    config_hex16(colon + 1, len - (size_t)(colon - p) - 1,
		    &ids.id[ids.n].pid) != 0) {
			snprintf(why, whysz, "not a VID:PID pair (4 hex digits "
			    "each, like 0403:6001): '%.*s'", (int)len, p);
			return KL_ERR_CONFIG;
		}
		ids.n++;
		p += strcspn(p, ",");
		if (*p == '\0')
			break;
		p++;
	}
	*out = ids;
	return 0;
}

/* A port path as the kernel names a USB device in sysfs: "1-2.3" is bus
 * 1, port 2 of the root hub, port 3 of the hub there.  Canonical form
 * only (no leading zeros), so two spellings cannot name one port. */
static int
config_check_usb_port(const char *v, char *why, size_t whysz)
{
	const char *p = v;
	int part = 0, sep = '-';

	if (strlen(v) >= CONFIG_USB_PORT_MAX)
		goto bad;
	for (;;) {
		long n = 0;
		int digits = 0;

		if (*p == '0')
			goto bad;
		while (*p >= '0' && *p <= '9' && digits < 4) {
			n = n * 10 + (*p - '0');
			p++;
			digits++;
		}
		if (digits == 0 || n > (part == 0 ? 999 : 255))
			goto bad;
		part++;
		if (*p == '\0')
			break;
		if (*p != sep || part > 7)
			goto bad;
		sep = '.';
		p++;
	}
	if (part >= 2)
		return 0;
bad:
	snprintf(why, whysz, "not a USB port path (bus-port[.port]..., like "
	    "1-2.3): '%s'", v);
	return KL_ERR_CONFIG;
}

static int
config_set_module_env(struct config_parse *cp, const char *v, char *out,
    size_t outsz, char *why, size_t whysz)
{
	char name[CONFIG_STR], path[PATH_MAX];
	const char *eq = strchr(v, '=');
	size_t nlen;
	int n, rc;

	if (eq == NULL || eq == v || (size_t)(eq - v) >= sizeof(name)) {
		snprintf(why, whysz, "expected NAME=path: '%s'", v);
		return KL_ERR_CONFIG;
	}
	nlen = (size_t)(eq - v);
	memcpy(name, v, nlen);
	name[nlen] = '\0';
	if ((rc = config_check_envname(name, sizeof(name), why, whysz)) != 0)
		return rc;
	if ((rc = ini_to_path(eq + 1, cp->base_dir, path, sizeof(path), why,
	    whysz)) != 0)
		return rc;
	n = snprintf(out, outsz, "%s=%s", name, path);
	if (n < 0 || (size_t)n >= outsz) {
		snprintf(why, whysz, "longer than %zu characters", outsz - 1);
		return KL_ERR_CONFIG;
	}
	return 0;
}

/* One of names, stored as its index ("unknown <what> 'x' (a, b, c)"). */
static int
config_set_choice(const char *v, const char *const *names, size_t n,
    const char *what, void *field, char *why, size_t whysz)
{
	size_t i, len;

	for (i = 0; i < n; i++)
		if (strcmp(v, names[i]) == 0) {
			*(int *)field = (int)i;
			return 0;
		}
	len = (size_t)snprintf(why, whysz, "unknown %s '%s' (", what, v);
	for (i = 0; i < n && len < whysz; i++)
		len += (size_t)snprintf(why + len, whysz - len, "%s%s",
		    i > 0 ? ", " : "", names[i]);
	if (len < whysz)
		snprintf(why + len, whysz - len, ")");
	return KL_ERR_CONFIG;
}

static int
config_set(struct config_parse *cp, const struct config_key *k,
    const char *v, char *why, size_t whysz)
{
	char *field = (char *)cp->cfg + k->off;
	long n;
	int b, rc;

	switch (k->type) {
	case CT_STR:
		/* Empty is the same as unset; required keys are checked
		 * after the whole file. */
		return ini_to_str(v, field, k->size, why, whysz);
	case CT_PATH:
		return ini_to_path(v, cp->base_dir, field, k->size, why,
		    whysz);
	case CT_BOOL:
		if ((rc = ini_to_bool(v, &b, why, whysz)) != 0)
			return rc;
		*(int *)(void *)field = b;
		return 0;
	case CT_INT:
		if ((rc = ini_to_long(v, k->min, k->max, &n, why, whysz)) != 0)
			return rc;
		*(int *)(void *)field = (int)n;
		return 0;
	case CT_BAUD:
		if ((rc = ini_to_long(v, 1, 4000000, &n, why, whysz)) != 0)
			return rc;
		/* Exactly what the serial transport can set. */
		if (!serial_baud_supported((int)n)) {
			snprintf(why, whysz, "not a standard baud rate: '%s'",
			    v);
			return KL_ERR_CONFIG;
		}
		*(int *)(void *)field = (int)n;
		return 0;
	case CT_HEXID:
		if ((rc = config_check_hexid(v, why, whysz)) != 0)
			return rc;
		return ini_to_str(v, field, k->size, why, whysz);
	case CT_KEYTYPE:
		if (!config_in_list(v, config_key_types,
		    NELEM(config_key_types))) {
			snprintf(why, whysz,
			    "unknown key type '%s' (ec-p256, rsa2048, "
			    "rsa3072)", v);
			return KL_ERR_CONFIG;
		}
		return ini_to_str(v, field, k->size, why, whysz);
	case CT_BACKEND:
		if (!config_in_list(v, config_backends,
		    NELEM(config_backends))) {
			snprintf(why, whysz, "unknown CA backend '%s' (local, "
			    "cfssl, cmp)",
			    v);
			return KL_ERR_CONFIG;
		}
		return ini_to_str(v, field, k->size, why, whysz);
	case CT_TEMPLATE:
		if ((rc = devid_check_template(v, why, whysz)) != 0)
			return KL_ERR_CONFIG;
		return ini_to_str(v, field, k->size, why, whysz);
	case CT_URL:
		if ((rc = config_check_url(v, why, whysz)) != 0)
			return rc;
		return ini_to_str(v, field, k->size, why, whysz);
	case CT_ENVNAME:
		if ((rc = config_check_envname(v, k->size, why, whysz)) != 0)
			return rc;
		return ini_to_str(v, field, k->size, why, whysz);
	case CT_MODULE_ENV:
		return config_set_module_env(cp, v, field, k->size, why,
		    whysz);
	case CT_ADDR:
		if ((rc = config_check_addr(v, why, whysz)) != 0)
			return rc;
		return ini_to_str(v, field, k->size, why, whysz);
	case CT_CAURL:
		if ((rc = config_check_ca_url(v, why, whysz)) != 0)
			return rc;
		return ini_to_str(v, field, k->size, why, whysz);
	case CT_USB_IDS:
		return config_set_usb_ids(v, (struct config_usb_ids *)(void *)
		    field, why, whysz);
	case CT_POWER:
		return config_set_choice(v, config_powers, NELEM(config_powers),
		    "power control", field, why, whysz);
	case CT_OFFLINE:
		return config_set_choice(v, config_offlines,
		    NELEM(config_offlines), "offline mode", field, why, whysz);
	case CT_CREDENTIAL:
		if ((rc = config_check_credential(v, why, whysz)) != 0)
			return rc;
		return ini_to_str(v, field, k->size, why, whysz);
	}
	snprintf(why, whysz, "internal: no checker for this key");
	return KL_ERR_INTERNAL;
}

static int
config_slot(struct config_parse *cp, const char *key, const char *value,
    char *why, size_t whysz)
{
	struct config_slot *s;
	long n;
	int rc;

	if ((rc = ini_to_long(key, 1, CONFIG_MAX_SLOTS, &n, why, whysz)) != 0)
		return rc;
	if (cp->slot_seen[n]) {
		snprintf(why, whysz, "slot %ld given twice", n);
		return KL_ERR_CONFIG;
	}
	if (value[0] == '\0') {
		snprintf(why, whysz, "empty device path");
		return KL_ERR_CONFIG;
	}
	/* nslots < CONFIG_MAX_SLOTS: numbers are 1..MAX and unique. */
	s = &cp->cfg->slots[cp->cfg->nslots];
	memset(s, 0, sizeof(*s));
	if (strncmp(value, "usb:", 4) == 0) {
		/* Whatever is plugged into that hub port is this slot. */
		int i;

		if ((rc = config_check_usb_port(value + 4, why, whysz)) != 0)
			return rc;
		for (i = 0; i < cp->cfg->nslots; i++) {
			if (strcmp(cp->cfg->slots[i].usb_port,
			    value + 4) == 0) {
				snprintf(why, whysz, "port %s is slot %d "
				    "already", value + 4,
				    cp->cfg->slots[i].number);
				return KL_ERR_CONFIG;
			}
		}
		snprintf(s->usb_port, sizeof(s->usb_port), "%s", value + 4);
		snprintf(s->device, sizeof(s->device), "%s", value);
	} else if ((rc = ini_to_path(value, cp->base_dir, s->device,
	    sizeof(s->device), why, whysz)) != 0) {
		/* Relative like every other path: a jig's slot links sit
		 * beside its station.conf. */
		return rc;
	}
	s->number = (int)n;
	cp->slot_seen[n] = 1;
	cp->cfg->nslots++;
	return 0;
}

static int
config_cb(void *arg, const char *section, const char *key, const char *value,
    char *why, size_t whysz)
{
	struct config_parse *cp = arg;
	size_t i;

	if (section[0] == '\0') {
		snprintf(why, whysz, "key outside any [section]");
		return KL_ERR_CONFIG;
	}
	if (strcmp(section, "slots") == 0)
		return config_slot(cp, key, value, why, whysz);
	for (i = 0; i < CONFIG_NKEYS; i++) {
		if (strcmp(config_keys[i].section, section) == 0 &&
		    strcmp(config_keys[i].key, key) == 0)
			break;
	}
	if (i == CONFIG_NKEYS) {
		if (!config_in_list(section, config_sections,
		    NELEM(config_sections)))
			snprintf(why, whysz, "unknown section [%s]", section);
		else
			snprintf(why, whysz, "unknown key '%s' in [%s]", key,
			    section);
		return KL_ERR_CONFIG;
	}
	if (cp->seen[i]) {
		snprintf(why, whysz, "duplicate key");
		return KL_ERR_CONFIG;
	}
	cp->seen[i] = 1;
	return config_set(cp, &config_keys[i], value, why, whysz);
}

static void
config_defaults(struct config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->device_id_template, sizeof(c->device_id_template),
	    "{model}-{serial}");
	snprintf(c->key_type, sizeof(c->key_type), "ec-p256");
	snprintf(c->tls_key_id, sizeof(c->tls_key_id), "02");
	snprintf(c->cert_id, sizeof(c->cert_id), "01");
	snprintf(c->uptane_key_id, sizeof(c->uptane_key_id), "03");
	snprintf(c->key_label, sizeof(c->key_label), "keyline");
	c->baud = 115200;
	c->timeout_ms = 5000;
	c->keygen_timeout_ms = 60000;
	c->attempts = 4;
	c->resends = 16;
	snprintf(c->ca_backend, sizeof(c->ca_backend), "local");
	c->validity_days = 3650;
	c->ca_max_validity_days = 3650;
	c->registry_lease_s = 900;
	c->registry_timeout_s = 5;
	c->registry_wait_deadline_s = 600;
	c->ca_request_timeout_ms = 10000;
	c->ca_retry_base_ms = 500;
	c->ca_retry_max_ms = 30000;
	c->ca_wait_deadline_s = 600;
	snprintf(c->ca_module, sizeof(c->ca_module),
	    "/usr/lib/softhsm/libsofthsm2.so");
	snprintf(c->http_bind, sizeof(c->http_bind), "127.0.0.1");
	c->http_port = 8080;
	c->http_max_connections = 16;
	c->http_max_connections_per_ip = 4;
	c->http_rate_limit = 20;
	c->http_rate_burst = 40;
	c->http_status_cache_ms = 250;
	c->jig_power = CONFIG_POWER_NONE;
	c->jig_power_off_ms = 2000;
	c->jig_power_retry = 1;
	c->jig_hold_boards = 20;
	c->jig_hold_window_s = 60;
	c->jig_hold_failures = 5;
	c->audit_checkpoint_every = 100;
}

/*
 * Which [ca] keys each backend needs and which it would silently ignore
 * (an error: a key that does nothing is a typo or a misunderstanding).
 */
enum { CA_NEED = 1, CA_NO = 2 };

static const struct {
	const char *backend, *key;
	size_t off;
	int rule;
} config_ca_rules[] = {
#define CAK(m) offsetof(struct config, m)
	{ "local", "issuer_cert", CAK(ca_issuer_cert), CA_NEED },
	{ "local", "url", CAK(ca_url), CA_NO },
	{ "local", "auth_key_file", CAK(ca_auth_key_file), CA_NO },
	{ "local", "profile", CAK(ca_profile), CA_NO },
	{ "local", "label", CAK(ca_label), CA_NO },
	{ "local", "server_cert", CAK(ca_server_cert), CA_NO },
	{ "local", "cmp_secret_file", CAK(ca_cmp_secret_file), CA_NO },
	{ "local", "cmp_ref", CAK(ca_cmp_ref), CA_NO },
	{ "local", "cmp_client_cert", CAK(ca_cmp_client_cert), CA_NO },
	{ "local", "cmp_client_key", CAK(ca_cmp_client_key), CA_NO },
	{ "local", "cmp_server_cert", CAK(ca_cmp_server_cert), CA_NO },

	{ "cfssl", "url", CAK(ca_url), CA_NEED },
	{ "cfssl", "auth_key_file", CAK(ca_auth_key_file), CA_NEED },
	{ "cfssl", "key_id", CAK(ca_key_id), CA_NO },
	{ "cfssl", "dev_key_pem", CAK(ca_dev_key_pem), CA_NO },
	{ "cfssl", "cmp_secret_file", CAK(ca_cmp_secret_file), CA_NO },
	{ "cfssl", "cmp_ref", CAK(ca_cmp_ref), CA_NO },
	{ "cfssl", "cmp_client_cert", CAK(ca_cmp_client_cert), CA_NO },
	{ "cfssl", "cmp_client_key", CAK(ca_cmp_client_key), CA_NO },
	{ "cfssl", "cmp_server_cert", CAK(ca_cmp_server_cert), CA_NO },

	{ "cmp", "url", CAK(ca_url), CA_NEED },
	{ "cmp", "dev_key_pem", CAK(ca_dev_key_pem), CA_NO },
	{ "cmp", "auth_key_file", CAK(ca_auth_key_file), CA_NO },
	{ "cmp", "profile", CAK(ca_profile), CA_NO },
	{ "cmp", "label", CAK(ca_label), CA_NO },
#undef CAK
};

static int
config_check_ca_backend(const struct config *c, char *err, size_t errsz)
{
	const char *p = c->path, *b = c->ca_backend;
	size_t i;
	int set;

	for (i = 0; i < NELEM(config_ca_rules); i++) {
		if (strcmp(config_ca_rules[i].backend, b) != 0)
			continue;
		set = ((const char *)c + config_ca_rules[i].off)[0] != '\0';
		if (config_ca_rules[i].rule == CA_NEED && !set) {
			/* The local wording predates remote backends. */
			snprintf(err, errsz, "%s: [ca] %s: required%s%s", p,
			    config_ca_rules[i].key,
			    strcmp(b, "local") == 0 ? "" : " with backend = ",
			    strcmp(b, "local") == 0 ? "" : b);
			return KL_ERR_CONFIG;
		}
		if (config_ca_rules[i].rule == CA_NO && set) {
			snprintf(err, errsz, "%s: [ca] %s: not used by "
			    "backend = %s", p, config_ca_rules[i].key, b);
			return KL_ERR_CONFIG;
		}
	}
	if (strcmp(b, "cfssl") == 0 || strcmp(b, "cmp") == 0) {
		int https = strncmp(c->ca_url, "https://", 8) == 0;

		if (https && c->ca_server_cert[0] == '\0') {
			snprintf(err, errsz, "%s: [ca] server_cert: required "
			    "with an https:// url (the CA server's certificate "
			    "is pinned)", p);
			return KL_ERR_CONFIG;
		}
		if (!https && c->ca_server_cert[0] != '\0') {
			snprintf(err, errsz, "%s: [ca] server_cert: only with "
			    "an https:// url", p);
			return KL_ERR_CONFIG;
		}
	}
	if (strcmp(b, "cmp") == 0) {
		int mac = c->ca_cmp_secret_file[0] != '\0';
		int sig = c->ca_cmp_client_cert[0] != '\0';

		if (mac == sig) {
			snprintf(err, errsz, "%s: [ca] cmp_secret_file: set "
			    "either cmp_secret_file (MAC) or cmp_client_cert "
			    "(signature)%s", p, mac ? ", not both" : "");
			return KL_ERR_CONFIG;
		}
		if (mac && c->ca_cmp_ref[0] == '\0') {
			snprintf(err, errsz, "%s: [ca] cmp_ref: required with "
			    "cmp_secret_file", p);
			return KL_ERR_CONFIG;
		}
		if (mac && (c->ca_cmp_client_key[0] != '\0' ||
		    c->ca_cmp_server_cert[0] != '\0' ||
		    c->ca_key_id[0] != '\0')) {
			snprintf(err, errsz, "%s: [ca] cmp_secret_file: MAC "
			    "protection uses no client key, key_id or "
			    "cmp_server_cert", p);
			return KL_ERR_CONFIG;
		}
		if (sig && c->ca_cmp_server_cert[0] == '\0') {
			snprintf(err, errsz, "%s: [ca] cmp_server_cert: "
			    "required with cmp_client_cert", p);
			return KL_ERR_CONFIG;
		}
		if (sig && (c->ca_cmp_client_key[0] != '\0') ==
		    (c->ca_key_id[0] != '\0')) {
			snprintf(err, errsz, "%s: [ca] key_id: the station's "
			    "CMP key is key_id in the token or cmp_client_key, "
			    "exactly one", p);
			return KL_ERR_CONFIG;
		}
		if (c->ca_cmp_client_key[0] != '\0' && !c->ca_dev_allow_pem) {
			snprintf(err, errsz, "%s: [ca] cmp_client_key: refused: "
			    "the station's key would be a file on disk; keep it "
			    "in the token (key_id) or set dev_allow_pem_key = "
			    "yes for development", p);
			return KL_ERR_CONFIG;
		}
	}
	return 0;
}

/*
 * [SECTION] KEY = NAME (a systemd credential) into the file path the
 * station reads, $CREDENTIALS_DIRECTORY/NAME.  Only the service manager
 * sets that variable (LoadCredential=, SetCredential=, for this process
 * and readable only by its user), so without it the credential cannot
 * be meant: refused, rather than looked for somewhere else.  The other
 * sources of the same secret (others, a NULL-terminated list of
 * key names and values) must be unset.
 */
static int
config_credential(const struct config *c, const char *section,
    const char *key, const char *name, const char *const *others,
    char *file, size_t filesz, char *err, size_t errsz)
{
	const char *dir;
	size_t i;

	if (name[0] == '\0')
		return 0;
	for (i = 0; others[i] != NULL; i += 2) {
		if (others[i + 1][0] != '\0') {
			snprintf(err, errsz, "%s: [%s] %s: set either %s or %s, "
			    "not both", c->path, section, key, key, others[i]);
			return KL_ERR_CONFIG;
		}
	}
	dir = getenv("CREDENTIALS_DIRECTORY");
	if (dir == NULL || dir[0] != '/') {
		snprintf(err, errsz, "%s: [%s] %s: $CREDENTIALS_DIRECTORY is "
		    "not set: systemd sets it for a service with "
		    "LoadCredential= or SetCredential= (outside systemd use "
		    "the file or environment keys)", c->path, section, key);
		return KL_ERR_CONFIG;
	}
	if (snprintf(file, filesz, "%s/%s", dir, name) >= (int)filesz) {
		snprintf(err, errsz, "%s: [%s] %s: $CREDENTIALS_DIRECTORY is "
		    "too long", c->path, section, key);
		return KL_ERR_CONFIG;
	}
	return 0;
}

static int
config_resolve_credentials(struct config *c, char *err, size_t errsz)
{
	const char *pin_others[] = {
		"pin_file", c->ca_pin_file, "pin_env", c->ca_pin_env, NULL,
	};
	const char *token_others[] = {
		"token_file", c->http_token_file, NULL,
	};
	int r;

	if ((r = config_credential(c, "ca", "pin_credential",
	    c->ca_pin_credential, pin_others, c->ca_pin_file,
	    sizeof(c->ca_pin_file), err, errsz)) != 0)
		return r;
	return config_credential(c, "http", "token_credential",
	    c->http_token_credential, token_others, c->http_token_file,
	    sizeof(c->http_token_file), err, errsz);
}

/* Checks across keys, once the whole file is read. */
static int
config_check_required(const struct config *c, char *err, size_t errsz)
{
	static const struct {
		const char *section, *key;
		size_t off;
	} required[] = {
		{ "station", "id", offsetof(struct config, station_id) },
		{ "station", "audit_db", offsetof(struct config, audit_db) },
		{ "ca", "fleet_root", offsetof(struct config, fleet_root) },
	};
	const char *p = c->path;
	size_t i;
	int r;

	for (i = 0; i < NELEM(required); i++) {
		if (((const char *)c + required[i].off)[0] == '\0') {
			snprintf(err, errsz, "%s: [%s] %s: required", p,
			    required[i].section, required[i].key);
			return KL_ERR_CONFIG;
		}
	}

	/* Where the board's root.crt and gateway.url come from. */
	if (c->credentials_zip[0] != '\0' &&
	    (c->gateway_url[0] != '\0' || c->root_crt[0] != '\0')) {
		snprintf(err, errsz,
		    "%s: [ota] credentials_zip: set either credentials_zip "
		    "or gateway_url and root_crt, not both", p);
		return KL_ERR_CONFIG;
	}
	if (c->credentials_zip[0] == '\0') {
		if (c->gateway_url[0] == '\0' && c->root_crt[0] == '\0') {
			snprintf(err, errsz,
			    "%s: [ota] credentials_zip: required (or "
			    "gateway_url and root_crt)", p);
			return KL_ERR_CONFIG;
		}
		if (c->gateway_url[0] == '\0') {
			snprintf(err, errsz, "%s: [ota] gateway_url: required "
			    "(with root_crt)", p);
			return KL_ERR_CONFIG;
		}
		if (c->root_crt[0] == '\0') {
			snprintf(err, errsz, "%s: [ota] root_crt: required "
			    "(with gateway_url)", p);
			return KL_ERR_CONFIG;
		}
	}

	if ((r = config_check_ca_backend(c, err, errsz)) != 0)
		return r;
	/* Where the CA key comes from: the token, or a file only on
	 * purpose. */
	if (c->ca_dev_key_pem[0] != '\0' && !c->ca_dev_allow_pem) {
		snprintf(err, errsz,
		    "%s: [ca] dev_key_pem: refused: the CA private key would "
		    "be a file on disk; keep it in the token (key_id) or set "
		    "dev_allow_pem_key = yes for development", p);
		return KL_ERR_CONFIG;
	}
	if (c->ca_dev_key_pem[0] != '\0' && c->ca_key_id[0] != '\0') {
		snprintf(err, errsz, "%s: [ca] dev_key_pem: set either key_id "
		    "or dev_key_pem, not both", p);
		return KL_ERR_CONFIG;
	}
	/* The local CA would issue what validation then refuses. */
	if (strcmp(c->ca_backend, "local") == 0 &&
	    c->validity_days > c->ca_max_validity_days) {
		snprintf(err, errsz, "%s: [ca] validity_days: %d is more than "
		    "max_validity_days (%d): every certificate would be "
		    "refused", p, c->validity_days, c->ca_max_validity_days);
		return KL_ERR_CONFIG;
	}
	if (strcmp(c->ca_backend, "local") == 0 &&
	    c->ca_dev_key_pem[0] == '\0' && c->ca_key_id[0] == '\0') {
		snprintf(err, errsz, "%s: [ca] key_id: required", p);
		return KL_ERR_CONFIG;
	}
	if (c->ca_key_id[0] != '\0') {
		if (c->ca_pin_file[0] == '\0' && c->ca_pin_env[0] == '\0') {
			snprintf(err, errsz, "%s: [ca] pin_file: required (or "
			    "pin_env, pin_credential) with key_id", p);
			return KL_ERR_CONFIG;
		}
	}
	/* The API is read-only but still shows serials and fingerprints:
	 * no token, no server.  TLS needs both halves. */
	if (c->http_enabled && c->http_token_file[0] == '\0') {
		snprintf(err, errsz, "%s: [http] token_file: required when "
		    "enabled (or token_credential)", p);
		return KL_ERR_CONFIG;
	}
	if ((c->http_tls_cert[0] == '\0') != (c->http_tls_key[0] == '\0')) {
		snprintf(err, errsz, "%s: [http] %s: required with %s", p,
		    c->http_tls_cert[0] == '\0' ? "tls_cert" : "tls_key",
		    c->http_tls_cert[0] == '\0' ? "tls_key" : "tls_cert");
		return KL_ERR_CONFIG;
	}
	/* A USB slot is found by port and by VID:PID; without IDs nothing
	 * could ever match. */
	for (i = 0; i < (size_t)c->nslots; i++) {
		if (c->slots[i].usb_port[0] != '\0' &&
		    c->jig_usb_ids.n == 0) {
			snprintf(err, errsz, "%s: [jig] usb_ids: required "
			    "with usb: slots (slot %d)", p,
			    c->slots[i].number);
			return KL_ERR_CONFIG;
		}
	}
	if ((c->jig_power == CONFIG_POWER_VIRTUAL_JIG) !=
	    (c->jig_control[0] != '\0')) {
		snprintf(err, errsz, "%s: [jig] %s", p,
		    c->jig_control[0] == '\0' ?
		    "control: required with power = virtual-jig" :
		    "control: only with power = virtual-jig");
		return KL_ERR_CONFIG;
	}
	if (c->uptane_key && strcmp(c->uptane_key_id, c->tls_key_id) == 0) {
		snprintf(err, errsz, "%s: [keys] uptane_key_id: same ID as "
		    "tls_key_id", p);
		return KL_ERR_CONFIG;
	}
	return 0;
}

/* A [registry] key without conninfo would do nothing: a typo, or a
 * registry the plant thinks this station uses and it does not. */
static int
config_check_registry(const struct config_parse *cp, char *err,
    size_t errsz)
{
	size_t i;

	if (cp->cfg->registry_conninfo[0] != '\0')
		return 0;
	for (i = 0; i < CONFIG_NKEYS; i++)
		if (cp->seen[i] &&
		    strcmp(config_keys[i].section, "registry") == 0) {
			snprintf(err, errsz, "%s: [registry] %s: only with "
			    "conninfo (without it the station has no plant "
			    "registry)", cp->cfg->path, config_keys[i].key);
			return KL_ERR_CONFIG;
		}
	return 0;
}

int
config_load(const char *path, struct config *out, char *err, size_t errsz)
{
	struct config_parse *cp = NULL;
	char tmp[PATH_MAX], *dir, *abs = NULL;
	int r = KL_ERR_INTERNAL;

	if (path == NULL || out == NULL) {
		snprintf(err, errsz, "config: no path");
		return KL_ERR_INVALID;
	}
	if ((cp = calloc(1, sizeof(*cp))) == NULL ||
	    (cp->cfg = malloc(sizeof(*cp->cfg))) == NULL) {
		r = KL_ERR_NOMEM;
		snprintf(err, errsz, "%s: %s", path, kl_strerror(r));
		goto out;
	}
	config_defaults(cp->cfg);
	if (snprintf(cp->cfg->path, sizeof(cp->cfg->path), "%s", path) >=
	    (int)sizeof(cp->cfg->path)) {
		snprintf(err, errsz, "config: path too long");
		r = KL_ERR_CONFIG;
		goto out;
	}
	snprintf(tmp, sizeof(tmp), "%s", path);
	dir = dirname(tmp);
	/* Absolute, so a later chdir() cannot move what the paths mean. */
	if ((abs = realpath(dir, NULL)) != NULL)
		dir = abs;
	if (snprintf(cp->base_dir, sizeof(cp->base_dir), "%s", dir) >=
	    (int)sizeof(cp->base_dir)) {
		snprintf(err, errsz, "%s: directory name too long", path);
		r = KL_ERR_CONFIG;
		goto out;
	}
	if ((r = ini_parse_file(path, config_cb, cp, err, errsz)) != 0)
		goto out;
	if ((r = config_resolve_credentials(cp->cfg, err, errsz)) != 0 ||
	    (r = config_check_required(cp->cfg, err, errsz)) != 0 ||
	    (r = config_check_registry(cp, err, errsz)) != 0)
		goto out;
	memcpy(out, cp->cfg, sizeof(*out));
	r = 0;
out:
	free(abs);
	if (cp != NULL)
		free(cp->cfg);
	free(cp);
	return r;
}
