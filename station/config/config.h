/*
 * config.h: station.conf (docs/config.md has every key).
 *
 * Relative paths are resolved against the directory of the config file.
 * Secrets are never in this file: the CA token PIN comes from pin_file,
 * the environment variable named by pin_env or the systemd credential
 * named by pin_credential, read at start-up into memory that is wiped
 * after login; the HTTP API's bearer token comes from [http] token_file
 * or token_credential, read when the server starts.  A credential name
 * is resolved at load time into the matching *_file field as
 * $CREDENTIALS_DIRECTORY/NAME (docs/install.md).
 */
#ifndef KL_CONFIG_H
#define KL_CONFIG_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_MAX_SLOTS 128
#define CONFIG_STR 128
#define CONFIG_MAX_USB_IDS 16
/* "1-2.3.4": bus 1..999, then up to 7 hub ports of 1..255 (USB allows
 * at most 7 tiers below the root). */
#define CONFIG_USB_PORT_MAX 32

struct config_slot {
	int number;			/* 1..CONFIG_MAX_SLOTS */
	/* Static slot: the serial device (/dev/ttyACM0, a pty, ...).
	 * USB slot: "usb:" and the port path, kept for display only. */
	char device[PATH_MAX];
	/* USB slot: the port path ("1-2.3"); "" for a static slot. */
	char usb_port[CONFIG_USB_PORT_MAX];
};

struct config_usb_id {
	uint16_t vid, pid;
};

/* [jig] usb_ids: the USB devices that are boards (or their adapters). */
struct config_usb_ids {
	int n;
	struct config_usb_id id[CONFIG_MAX_USB_IDS];
};

enum config_jig_power {
	CONFIG_POWER_NONE = 0,		/* power = none */
	CONFIG_POWER_USB_HUB,		/* power = usb-hub */
	CONFIG_POWER_VIRTUAL_JIG,	/* power = virtual-jig (keyline-jig's
					 * control socket) */
};

enum config_offline {
	CONFIG_OFFLINE_WAIT = 0,	/* offline = wait: boards wait for the
					 * registry */
	CONFIG_OFFLINE_LOCAL,		/* offline = local: boards go on the
					 * station's own check; reconciled
					 * when the registry is back */
};

struct config {
	char path[PATH_MAX];

	/* [station] */
	char station_id[CONFIG_STR];		/* id (required) */
	char operator_name[CONFIG_STR];		/* operator */
	char work_order[CONFIG_STR];		/* work_order */
	char audit_db[PATH_MAX];		/* audit_db (required) */
	char device_id_template[CONFIG_STR];	/* device_id_template */

	/* [keys] */
	char key_type[16];			/* type: ec-p256 | rsa2048 | rsa3072 */
	char tls_key_id[33];			/* tls_key_id, hex, default 02 */
	char cert_id[33];			/* cert_id, hex, default 01 */
	int uptane_key;				/* uptane_key: bool */
	char uptane_key_id[33];			/* uptane_key_id, default 03 */
	char key_label[CONFIG_STR];		/* label, default "keyline" */

	/* [link] */
	int baud;				/* baud, default 115200 */
	int timeout_ms;				/* timeout_ms, default 5000 */
	int keygen_timeout_ms;			/* keygen_timeout_ms, default 60000 */
	int attempts;				/* attempts, default 4 */
	int resends;				/* resends, default 16 */

	/* [ca] */
	char ca_backend[16];			/* backend: local | cfssl | cmp */
	char ca_issuer_cert[PATH_MAX];		/* issuer_cert (required for local) */
	char fleet_root[PATH_MAX];		/* fleet_root (required) */
	char ca_intermediates[PATH_MAX];	/* intermediates, optional */
	char ca_module[PATH_MAX];		/* module */
	char ca_module_env[PATH_MAX];		/* module_env: NAME=value, value a
						 * path resolved like others */
	char ca_token_label[CONFIG_STR];	/* token_label */
	char ca_key_id[33];			/* key_id, hex */
	char ca_pin_file[PATH_MAX];		/* pin_file; with pin_credential,
						 * $CREDENTIALS_DIRECTORY/NAME */
	char ca_pin_env[CONFIG_STR];		/* pin_env */
	char ca_pin_credential[CONFIG_STR];	/* pin_credential: a systemd
						 * credential's name */
	int validity_days;			/* validity_days, default 3650:
						 * what the local CA issues */
	char ca_subject_extra[512];		/* subject_extra: fixed subject
						 * entries of the device profile,
						 * "O=Fleet,OU=devices"; default
						 * none (CN only) */
	int ca_max_validity_days;		/* max_validity_days, default
						 * 3650: the longest lifetime
						 * validation accepts, whatever
						 * the CA */
	int ca_request_timeout_ms;		/* request_timeout_ms, default
						 * 10000: one request to a CA */
	int ca_retry_base_ms;			/* retry_base_ms, default 500:
						 * first wait after a CA outage,
						 * doubled up to retry_max_ms,
						 * with jitter */
	int ca_retry_max_ms;			/* retry_max_ms, default 30000 */
	int ca_wait_deadline_s;			/* wait_deadline_s, default 600:
						 * a board waiting this long for
						 * the CA fails */
	char ca_dev_key_pem[PATH_MAX];		/* dev_key_pem */
	int ca_dev_allow_pem;			/* dev_allow_pem_key: bool */
	/* [ca] remote backends (docs/ca-remote.md); secrets stay in files
	 * read at start-up, never in this struct */
	char ca_url[1024];			/* url: http(s):// of the CA */
	char ca_auth_key_file[PATH_MAX];	/* auth_key_file: CFSSL HMAC key,
						 * hex */
	char ca_profile[CONFIG_STR];		/* profile: CFSSL signing profile */
	char ca_label[CONFIG_STR];		/* label: multirootca label */
	char ca_server_cert[PATH_MAX];		/* server_cert: pinned TLS cert of
						 * the CFSSL server (https) */
	char ca_cmp_secret_file[PATH_MAX];	/* cmp_secret_file: MAC secret */
	char ca_cmp_ref[CONFIG_STR];		/* cmp_ref: sender reference */
	char ca_cmp_client_cert[PATH_MAX];	/* cmp_client_cert: station's CMP
						 * certificate (signature) */
	char ca_cmp_client_key[PATH_MAX];	/* cmp_client_key: PEM, dev only */
	char ca_cmp_server_cert[PATH_MAX];	/* cmp_server_cert: the CMP
						 * server's signing cert, pinned */

	/* [ota] */
	char root_crt[PATH_MAX];		/* root_crt */
	char gateway_url[1024];			/* gateway_url: https only */
	char credentials_zip[PATH_MAX];		/* credentials_zip */

	/* [registry]  the plant registry on PostgreSQL (docs/plant.md);
	 * off without conninfo */
	char registry_conninfo[1024];		/* conninfo: libpq string or
						 * service=NAME; no password */
	char registry_password_file[PATH_MAX];	/* password_file: mode 600 */
	char registry_root_cert[PATH_MAX];	/* root_cert: the server's CA,
						 * pinned; required over TCP */
	int registry_lease_s;			/* lease_s, default 900 */
	int registry_timeout_s;			/* timeout_s, default 5 */
	int registry_wait_deadline_s;		/* wait_deadline_s, default 600:
						 * a board waiting this long for
						 * an unreachable registry
						 * fails */
	int registry_offline;			/* offline: enum config_offline,
						 * default wait */

	/* [http]  read-only status API (docs/http-api.md) */
	int http_enabled;			/* enabled: bool, default no */
	char http_bind[64];			/* bind: IPv4 or IPv6 literal,
						 * default 127.0.0.1 */
	int http_port;				/* port: 1..65535, default 8080 */
	char http_token_file[PATH_MAX];		/* token_file: required when
						 * enabled (or token_credential,
						 * resolved into it) */
	char http_token_credential[CONFIG_STR];	/* token_credential: a
						 * systemd credential's name */
	char http_tls_cert[PATH_MAX];		/* tls_cert: PEM, with tls_key */
	char http_tls_key[PATH_MAX];		/* tls_key: PEM, with tls_cert */
	int http_max_connections;		/* max_connections: 1..1024,
						 * default 16 */
	int http_max_connections_per_ip;	/* max_connections_per_ip:
						 * 1..1024, default 4 */
	int http_rate_limit;			/* rate_limit: requests/s per
						 * client address, 0..100000,
						 * 0 off, default 20 */
	int http_rate_burst;			/* rate_burst: 1..100000,
						 * default 40 */
	int http_status_cache_ms;		/* status_cache_ms: 0..10000,
						 * default 250 */

	/* [jig]  real jigs on USB (docs/usb-jig.md) */
	struct config_usb_ids jig_usb_ids;	/* usb_ids: VID:PID, ... */
	int jig_power;				/* power: enum config_jig_power */
	int jig_power_off_ms;			/* power_off_ms, default 2000:
						 * how long a slot stays off
						 * in a power cycle */
	char jig_control[PATH_MAX];		/* control: keyline-jig's socket,
						 * with power = virtual-jig */
	int jig_power_retry;			/* power_retry: bool, default
						 * yes: a board that stops
						 * answering before the CA
						 * step is power-cycled and
						 * tried once more */
	/* Line mode: a slot is held for the operator (docs/architecture.md,
	 * "Held slots") when more than hold_boards boards start in it
	 * within hold_window_s, or hold_failures boards in a row fail.
	 * 0 switches a rule off. */
	int jig_hold_boards;			/* hold_boards, 0..64, default 20 */
	int jig_hold_window_s;			/* hold_window_s, default 60 */
	int jig_hold_failures;			/* hold_failures, default 5 */

	/* [audit] signed checkpoints of the chain head (docs/audit.md) */
	char audit_checkpoint_key_id[33];	/* checkpoint_key_id, hex: a key in
						 * the station token; "" = off */
	char audit_checkpoint_cert[PATH_MAX];	/* checkpoint_cert: its certificate */
	int audit_checkpoint_every;		/* checkpoint_every, default 100 */

	/* [slots]  N = device, or N = usb:PORT-PATH */
	struct config_slot slots[CONFIG_MAX_SLOTS];
	int nslots;
};

/*
 * Defaults, then path.  0, or KL_ERR_CONFIG / KL_ERR_IO with a message that
 * names the file, the line and the key in err ("station.conf:12: [link]
 * baud: not a number: 'fast'"), or, for a missing required key,
 * "station.conf: [ca] fleet_root: required".
 */
int config_load(const char *path, struct config *out, char *err,
    size_t errsz);

/*
 * The check behind [ota] gateway_url, also used for a credentials.zip's
 * autoprov.url: "https://" and a non-empty host (optional :port 1..65535),
 * no user information, no spaces or control characters.  0 or
 * KL_ERR_CONFIG with why.
 */
int config_check_url(const char *url, char *why, size_t whysz);

#endif
