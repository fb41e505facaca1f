/* test_config.c: station.conf, good and broken, through real files. */
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

#include "station/config/config.h"
#include "common/err.h"

struct fixture {
	char dir[64];		/* realpath of a fresh temp dir */
	char path[128];		/* dir/station.conf */
	struct config *cfg;
	char err[512];
};

/* 14 lines; tests append to it and count from line 15. */
static const char base_conf[] =
    "# station under test\n"
    "[station]\n"
    "id = st-1\n"
    "audit_db = audit.db\n"
    "[ca]\n"
    "issuer_cert = ca/issuer.pem\n"
    "fleet_root = /etc/keyline/root.pem\n"
    "key_id = 10\n"
    "pin_file = pin\n"
    "[ota]\n"
    "gateway_url = https://gw.example.com:8443/path\n"
    "root_crt = root.crt\n"
    "[slots]\n"
    "1 = /dev/ttyACM0\n";
#define BASE_LINES 14

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char tmpl[] = "/tmp/test_config.XXXXXX", *real;

	if (f == NULL || mkdtemp(tmpl) == NULL ||
	    (real = realpath(tmpl, NULL)) == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "%s", real);
	free(real);
	snprintf(f->path, sizeof(f->path), "%s/station.conf", f->dir);
	if ((f->cfg = malloc(sizeof(*f->cfg))) == NULL)
		return -1;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	unlink(f->path);
	rmdir(f->dir);
	free(f->cfg);
	free(f);
	return 0;
}

static void
write_file(const char *path, const char *a, size_t alen, const char *b)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	if (alen > 0)
		assert_int_equal(fwrite(a, 1, alen, fp), alen);
	if (b != NULL)
		fputs(b, fp);
	assert_int_equal(fclose(fp), 0);
}

static int
load_text(struct fixture *f, const char *text, const char *extra)
{
	write_file(f->path, text, strlen(text), extra);
	f->err[0] = '\0';
	memset(f->cfg, 0x5a, sizeof(*f->cfg));
	return config_load(f->path, f->cfg, f->err, sizeof(f->err));
}

static void
test_good(void **state)
{
	struct fixture *f = *state;
	struct config *c = f->cfg;
	char want[256];

	assert_int_equal(load_text(f, base_conf,
	    "2 = /dev/pts/7\n"
	    "[link]\nbaud = 921600\ntimeout_ms = 250\n"
	    "[keys]\ntype = rsa2048\nuptane_key = yes\nlabel = board\n"
	    "[ca]\nmodule_env = SOFTHSM2_CONF=softhsm2.conf\n"
	    "token_label = station\n"), 0);
	assert_string_equal(c->path, f->path);
	assert_string_equal(c->station_id, "st-1");
	snprintf(want, sizeof(want), "%s/audit.db", f->dir);
	assert_string_equal(c->audit_db, want);
	snprintf(want, sizeof(want), "%s/ca/issuer.pem", f->dir);
	assert_string_equal(c->ca_issuer_cert, want);
	assert_string_equal(c->fleet_root, "/etc/keyline/root.pem");
	snprintf(want, sizeof(want), "%s/pin", f->dir);
	assert_string_equal(c->ca_pin_file, want);
	snprintf(want, sizeof(want), "SOFTHSM2_CONF=%s/softhsm2.conf",
	    f->dir);
	assert_string_equal(c->ca_module_env, want);
	assert_string_equal(c->ca_token_label, "station");
	assert_string_equal(c->ca_key_id, "10");
	assert_string_equal(c->gateway_url, "https://gw.example.com:8443/path");
	assert_int_equal(c->baud, 921600);
	assert_int_equal(c->timeout_ms, 250);
	assert_string_equal(c->key_type, "rsa2048");
	assert_int_equal(c->uptane_key, 1);
	assert_string_equal(c->key_label, "board");
	assert_int_equal(c->nslots, 2);
	assert_int_equal(c->slots[0].number, 1);
	assert_string_equal(c->slots[0].device, "/dev/ttyACM0");
	assert_int_equal(c->slots[1].number, 2);
	assert_string_equal(c->slots[1].device, "/dev/pts/7");

	/* Defaults for what was not set. */
	assert_string_equal(c->device_id_template, "{model}-{serial}");
	assert_string_equal(c->tls_key_id, "02");
	assert_string_equal(c->cert_id, "01");
	assert_string_equal(c->uptane_key_id, "03");
	assert_int_equal(c->keygen_timeout_ms, 60000);
	assert_int_equal(c->attempts, 4);
	assert_int_equal(c->resends, 16);
	assert_string_equal(c->ca_backend, "local");
	assert_int_equal(c->validity_days, 3650);
	assert_string_equal(c->ca_module, "/usr/lib/softhsm/libsofthsm2.so");
	assert_string_equal(c->operator_name, "");
	assert_int_equal(c->ca_dev_allow_pem, 0);
}

static void
test_usb_jig(void **state)
{
	struct fixture *f = *state;
	struct config *c = f->cfg;
	char want[256];

	assert_int_equal(load_text(f, base_conf,
	    "2 = usb:1-2.3\n"
	    "3 = usb:12-1.1.1.1.1.1.7\n"
	    "4 = ttyS1\n"
	    "[jig]\nusb_ids = 1d6b:0104 , 0403:6001,10C4:EA60\n"
	    "power = usb-hub\npower_off_ms = 500\n"), 0);
	assert_int_equal(c->jig_usb_ids.n, 3);
	assert_int_equal(c->jig_usb_ids.id[0].vid, 0x1d6b);
	assert_int_equal(c->jig_usb_ids.id[0].pid, 0x0104);
	assert_int_equal(c->jig_usb_ids.id[1].vid, 0x0403);
	assert_int_equal(c->jig_usb_ids.id[1].pid, 0x6001);
	assert_int_equal(c->jig_usb_ids.id[2].vid, 0x10c4);
	assert_int_equal(c->jig_usb_ids.id[2].pid, 0xea60);
	assert_int_equal(c->jig_power, CONFIG_POWER_USB_HUB);
	assert_int_equal(c->jig_power_off_ms, 500);
	assert_int_equal(c->nslots, 4);
	/* Static slots stay paths; USB slots keep their port. */
	assert_string_equal(c->slots[0].usb_port, "");
	assert_string_equal(c->slots[1].usb_port, "1-2.3");
	assert_string_equal(c->slots[1].device, "usb:1-2.3");
	assert_string_equal(c->slots[2].usb_port, "12-1.1.1.1.1.1.7");
	snprintf(want, sizeof(want), "%s/ttyS1", f->dir);
	assert_string_equal(c->slots[3].device, want);
	assert_string_equal(c->slots[3].usb_port, "");

	/* Defaults. */
	assert_int_equal(load_text(f, base_conf, NULL), 0);
	assert_int_equal(c->jig_usb_ids.n, 0);
	assert_int_equal(c->jig_power, CONFIG_POWER_NONE);
	assert_int_equal(c->jig_power_off_ms, 2000);

	/* A USB slot needs IDs to match. */
	assert_int_equal(load_text(f, base_conf, "7 = usb:1-4\n"),
	    KL_ERR_CONFIG);
	snprintf(want, sizeof(want), "%s: [jig] usb_ids: required with usb: "
	    "slots (slot 7)", f->path);
	assert_string_equal(f->err, want);
}

static void
test_defaults(void **state)
{
	struct fixture *f = *state;
	struct config *c = f->cfg;

	assert_int_equal(load_text(f, base_conf, NULL), 0);
	assert_string_equal(c->key_type, "ec-p256");
	assert_int_equal(c->baud, 115200);
	assert_int_equal(c->timeout_ms, 5000);
	assert_string_equal(c->key_label, "keyline");
	assert_int_equal(c->uptane_key, 0);
	assert_int_equal(c->nslots, 1);
	/* [http] is off unless asked for, and loopback when on. */
	assert_int_equal(c->http_enabled, 0);
	assert_string_equal(c->http_bind, "127.0.0.1");
	assert_int_equal(c->http_port, 8080);
	assert_int_equal(c->http_max_connections, 16);
	assert_string_equal(c->http_token_file, "");
	assert_string_equal(c->http_tls_cert, "");
	assert_string_equal(c->http_tls_key, "");
}

static void
test_http(void **state)
{
	struct fixture *f = *state;
	struct config *c = f->cfg;
	char want[256];

	assert_int_equal(load_text(f, base_conf,
	    "[http]\nenabled = yes\nbind = ::1\nport = 9443\n"
	    "token_file = secrets/api.token\ntls_cert = tls/cert.pem\n"
	    "tls_key = /etc/keyline/key.pem\nmax_connections = 4\n"), 0);
	assert_int_equal(c->http_enabled, 1);
	assert_string_equal(c->http_bind, "::1");
	assert_int_equal(c->http_port, 9443);
	snprintf(want, sizeof(want), "%s/secrets/api.token", f->dir);
	assert_string_equal(c->http_token_file, want);
	snprintf(want, sizeof(want), "%s/tls/cert.pem", f->dir);
	assert_string_equal(c->http_tls_cert, want);
	assert_string_equal(c->http_tls_key, "/etc/keyline/key.pem");
	assert_int_equal(c->http_max_connections, 4);

	/* Disabled with no token is fine: nothing will listen. */
	assert_int_equal(load_text(f, base_conf,
	    "[http]\nenabled = no\nbind = 0.0.0.0\n"), 0);
	assert_int_equal(c->http_enabled, 0);
	assert_string_equal(c->http_bind, "0.0.0.0");

	/* Checks across keys name the key that is missing. */
	assert_int_equal(load_text(f, base_conf, "[http]\nenabled = yes\n"),
	    KL_ERR_CONFIG);
	snprintf(want, sizeof(want), "%s: [http] token_file: required when "
	    "enabled (or token_credential)", f->path);
	assert_string_equal(f->err, want);
	assert_int_equal(load_text(f, base_conf, "[http]\nenabled = yes\n"
	    "token_file = t\ntls_cert = c.pem\n"), KL_ERR_CONFIG);
	snprintf(want, sizeof(want), "%s: [http] tls_key: required with "
	    "tls_cert", f->path);
	assert_string_equal(f->err, want);
	assert_int_equal(load_text(f, base_conf, "[http]\nenabled = yes\n"
	    "token_file = t\ntls_key = k.pem\n"), KL_ERR_CONFIG);
	snprintf(want, sizeof(want), "%s: [http] tls_cert: required with "
	    "tls_key", f->path);
	assert_string_equal(f->err, want);
}

/* A snippet appended to base_conf; the error must be exactly
 * "<path>:<line>: <rest>" where line counts from the end of base_conf. */
struct bad_case {
	const char *snippet;
	int line;		/* line of the snippet that is wrong (1-based) */
	const char *rest;	/* expected text after "path:line: " */
};

static void
test_bad_keys(void **state)
{
	static const struct bad_case cases[] = {
		{ "[link]\nbaud = fast\n", 2,
		    "[link] baud: not a number: 'fast'" },
		{ "[link]\nbaud = 115201\n", 2,
		    "[link] baud: not a standard baud rate: '115201'" },
		{ "[link]\nattempts = 0\n", 2,
		    "[link] attempts: out of range 1..100: '0'" },
		{ "[link]\nresends = 1001\n", 2,
		    "[link] resends: out of range 0..1000: '1001'" },
		{ "[link]\ntimeout_ms = 5000\ntimeout_ms = 6000\n", 3,
		    "[link] timeout_ms: duplicate key" },
		{ "[link]\nspeed = 9600\n", 2,
		    "[link] speed: unknown key 'speed' in [link]" },
		{ "[linq]\nbaud = 9600\n", 2,
		    "[linq] baud: unknown section [linq]" },
		{ "[keys]\ntype = ed25519\n", 2,
		    "[keys] type: unknown key type 'ed25519' (ec-p256, "
		    "rsa2048, rsa3072)" },
		{ "[keys]\ntls_key_id = 0g\n", 2,
		    "[keys] tls_key_id: not a hex ID: '0g'" },
		{ "[keys]\ncert_id = 123\n", 2,
		    "[keys] cert_id: hex ID must be 1..16 bytes (2..32 hex "
		    "digits, even): '123'" },
		{ "[keys]\ncert_id = "
		    "000102030405060708090a0b0c0d0e0f10\n", 2,
		    "[keys] cert_id: hex ID must be 1..16 bytes (2..32 hex "
		    "digits, even): '000102030405060708090a0b0c0d0e0f10'" },
		{ "[keys]\nuptane_key = maybe\n", 2,
		    "[keys] uptane_key: not yes/no: 'maybe'" },
		{ "[station]\ndevice_id_template = {model}-{sn}\n", 2,
		    "[station] device_id_template: unknown placeholder at "
		    "position 9 (known: {serial} {model} {hsm_serial} "
		    "{station})" },
		{ "[station]\nid = st-2\n", 2, "[station] id: duplicate key" },
		{ "[station]\noperator =\noperator = x\n", 3,
		    "[station] operator: duplicate key" },
		{ "[ca]\nbackend = vault\n", 2,
		    "[ca] backend: unknown CA backend 'vault' "
		    "(local, cfssl, cmp)" },
		{ "[ca]\nvalidity_days = -1\n", 2,
		    "[ca] validity_days: out of range 1..36500: '-1'" },
		{ "[ca]\nmax_validity_days = 0\n", 2,
		    "[ca] max_validity_days: out of range 1..36500: '0'" },
		{ "[registry]\nlease_s = 5\n", 2,
		    "[registry] lease_s: out of range 10..86400: '5'" },
		{ "[registry]\noffline = maybe\n", 2,
		    "[registry] offline: unknown offline mode 'maybe' (wait, "
		    "local)" },
		{ "[jig]\npower = relay\n", 2,
		    "[jig] power: unknown power control 'relay' (none, "
		    "usb-hub, virtual-jig)" },
		{ "[registry]\nconninfo = a\nconninfo = b\n", 3,
		    "[registry] conninfo: duplicate key" },
		{ "[registry]\npasword_file = x\n", 2,
		    "[registry] pasword_file: unknown key 'pasword_file' in "
		    "[registry]" },
		{ "[ca]\npin_env = 9PIN\n", 2,
		    "[ca] pin_env: not an environment variable name" },
		{ "[ca]\nmodule_env = /x/y.conf\n", 2,
		    "[ca] module_env: expected NAME=path: '/x/y.conf'" },
		{ "[ca]\nissuer_cert =\n", 2,
		    "[ca] issuer_cert: duplicate key" },
		{ "[ca]\nintermediates =\n", 2,
		    "[ca] intermediates: empty path" },
		{ "[ota]\ngateway_url = https://b\n", 2,
		    "[ota] gateway_url: duplicate key" },
		{ "[slots]\n1 = /dev/ttyUSB0\n", 2,
		    "[slots] 1: slot 1 given twice" },
		{ "[slots]\n01 = /dev/ttyUSB0\n", 2,
		    "[slots] 01: slot 1 given twice" },
		{ "[slots]\n0 = /dev/ttyUSB0\n", 2,
		    "[slots] 0: out of range 1..128: '0'" },
		{ "[slots]\n129 = /dev/ttyUSB0\n", 2,
		    "[slots] 129: out of range 1..128: '129'" },
		{ "[slots]\nfirst = /dev/ttyUSB0\n", 2,
		    "[slots] first: not a number: 'first'" },
		{ "[slots]\n5 =\n", 2, "[slots] 5: empty device path" },
		/* Broken lines and bytes. */
		{ "[link\n", 1, "section header without closing ']'" },
		{ "[link]\nbaud 9600\n", 2,
		    "expected 'key = value', '[section]' or a comment" },
		{ "[station]\noperator = Bob\x1b[2J\n", 2,
		    "control character 0x1b at column 15" },
		{ "[http]\nenabled = sometimes\n", 2,
		    "[http] enabled: not yes/no: 'sometimes'" },
		{ "[http]\nport = 0\n", 2,
		    "[http] port: out of range 1..65535: '0'" },
		{ "[http]\nport = 65536\n", 2,
		    "[http] port: out of range 1..65535: '65536'" },
		{ "[http]\nport = 80x\n", 2,
		    "[http] port: not a number: '80x'" },
		{ "[http]\nmax_connections = 0\n", 2,
		    "[http] max_connections: out of range 1..1024: '0'" },
		/* [jig] and USB slots. */
		{ "[jig]\nusb_ids = 0403:6001,\n", 2,
		    "[jig] usb_ids: not a VID:PID pair (4 hex digits each, "
		    "like 0403:6001): ''" },
		{ "[jig]\nusb_ids = 403:6001\n", 2,
		    "[jig] usb_ids: not a VID:PID pair (4 hex digits each, "
		    "like 0403:6001): '403:6001'" },
		{ "[jig]\nusb_ids = 0403-6001\n", 2,
		    "[jig] usb_ids: not a VID:PID pair (4 hex digits each, "
		    "like 0403:6001): '0403-6001'" },
		{ "[jig]\nusb_ids = 0403:60g1\n", 2,
		    "[jig] usb_ids: not a VID:PID pair (4 hex digits each, "
		    "like 0403:6001): '0403:60g1'" },
		{ "[jig]\nusb_ids = 0403:6001 0403:6015\n", 2,
		    "[jig] usb_ids: not a VID:PID pair (4 hex digits each, "
		    "like 0403:6001): '0403:6001 0403:6015'" },
		{ "[jig]\nusb_ids = 0001:0001,0001:0002,0001:0003,"
		    "0001:0004,0001:0005,0001:0006,0001:0007,0001:0008,"
		    "0001:0009,0001:000a,0001:000b,0001:000c,0001:000d,"
		    "0001:000e,0001:000f,0001:0010,0001:0011\n", 2,
		    "[jig] usb_ids: more than 16 VID:PID pairs" },
		{ "[jig]\npower = relay\n", 2,
		    "[jig] power: unknown power control 'relay' (none, "
		    "usb-hub, virtual-jig)" },
		{ "[jig]\npower_off_ms = 10\n", 2,
		    "[jig] power_off_ms: out of range 100..60000: '10'" },
		{ "[jig]\nhub = 1-2\n", 2,
		    "[jig] hub: unknown key 'hub' in [jig]" },
		{ "[slots]\n2 = usb:\n", 2,
		    "[slots] 2: not a USB port path (bus-port[.port]..., like "
		    "1-2.3): ''" },
		{ "[slots]\n2 = usb:1\n", 2,
		    "[slots] 2: not a USB port path (bus-port[.port]..., like "
		    "1-2.3): '1'" },
		{ "[slots]\n2 = usb:1-02\n", 2,
		    "[slots] 2: not a USB port path (bus-port[.port]..., like "
		    "1-2.3): '1-02'" },
		{ "[slots]\n2 = usb:1.2-3\n", 2,
		    "[slots] 2: not a USB port path (bus-port[.port]..., like "
		    "1-2.3): '1.2-3'" },
		{ "[slots]\n2 = usb:1-2.256\n", 2,
		    "[slots] 2: not a USB port path (bus-port[.port]..., like "
		    "1-2.3): '1-2.256'" },
		{ "[slots]\n2 = usb:1-2.\n", 2,
		    "[slots] 2: not a USB port path (bus-port[.port]..., like "
		    "1-2.3): '1-2.'" },
		{ "[slots]\n2 = usb:1-1.1.1.1.1.1.1.1\n", 2,
		    "[slots] 2: not a USB port path (bus-port[.port]..., like "
		    "1-2.3): '1-1.1.1.1.1.1.1.1'" },
		{ "[slots]\n2 = usb:1-2.3 \n3 = usb:1-2.3\n", 3,
		    "[slots] 3: port 1-2.3 is slot 2 already" },
		{ "[http]\nbind = localhost\n", 2,
		    "[http] bind: not a numeric IPv4 or IPv6 address: "
		    "'localhost'" },
		{ "[http]\nbind = 127.0.0.256\n", 2,
		    "[http] bind: not a numeric IPv4 or IPv6 address: "
		    "'127.0.0.256'" },
		{ "[http]\nbind = 127.0.0.1\nbind = ::1\n", 3,
		    "[http] bind: duplicate key" },
		{ "[http]\ntoken = abc\n", 2,
		    "[http] token: unknown key 'token' in [http]" },
		{ "[http]\ntoken_file =\n", 2,
		    "[http] token_file: empty path" },
		{ "[station]\noperator = a\tb\n", 2,
		    "[station] operator: control character 0x09 in value" },
	};
	struct fixture *f = *state;
	char want[768];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct bad_case *c = &cases[i];

		assert_int_equal(load_text(f, base_conf, c->snippet),
		    KL_ERR_CONFIG);
		snprintf(want, sizeof(want), "%s:%d: %s", f->path,
		    BASE_LINES + c->line, c->rest);
		if (strcmp(f->err, want) != 0)
			fail_msg("case %zu:\n got '%s'\nwant '%s'", i, f->err,
			    want);
		/* The caller's struct is untouched on error. */
		assert_int_equal(f->cfg->station_id[0], 0x5a);
	}
}

static void
test_bad_urls(void **state)
{
	static const struct {
		const char *url, *words;
	} cases[] = {
		{ "http://gw.example.com/", "must start with https://" },
		{ "HTTPS://gw/", "must start with https://" },
		{ "https://", "no host" },
		{ "https:///path", "no host" },
		{ "https://:443/", "no host" },
		{ "https://gw:0/", "bad port" },
		{ "https://gw:65536/", "bad port" },
		{ "https://gw:/", "bad port" },
		{ "https://gw:44x/", "bad port" },
		{ "https://user:pw@gw/", "user information" },
		{ "https://gw/a b", "space or control" },
		{ "https://[]/", "bad IPv6" },
		{ "https://[::1]x/", "bad host" },
	};
	char why[256];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		why[0] = '\0';
		if (config_check_url(cases[i].url, why, sizeof(why)) !=
		    KL_ERR_CONFIG || strstr(why, cases[i].words) == NULL)
			fail_msg("'%s': '%s'", cases[i].url, why);
	}
	assert_int_equal(config_check_url("https://gw", why, sizeof(why)), 0);
	assert_int_equal(config_check_url("https://[::1]:8443/x?y#z", why,
	    sizeof(why)), 0);
	assert_int_equal(config_check_url("https://a.b:65535", why,
	    sizeof(why)), 0);
}

static void
test_required(void **state)
{
	static const struct {
		const char *text, *rest;
	} cases[] = {
		{ "[station]\naudit_db = a\n[ca]\nissuer_cert = i\n"
		    "fleet_root = r\nkey_id = 01\npin_env = P\n[ota]\n"
		    "credentials_zip = c.zip\n",
		    "[station] id: required" },
		{ "[station]\nid = s\n[ca]\nissuer_cert = i\n"
		    "fleet_root = r\nkey_id = 01\npin_env = P\n[ota]\n"
		    "credentials_zip = c.zip\n",
		    "[station] audit_db: required" },
		{ "[station]\nid = s\naudit_db = a\n[ca]\n"
		    "fleet_root = r\nkey_id = 01\npin_env = P\n[ota]\n"
		    "credentials_zip = c.zip\n",
		    "[ca] issuer_cert: required" },
		{ "[station]\nid = s\naudit_db = a\n[ca]\nissuer_cert = i\n"
		    "key_id = 01\npin_env = P\n[ota]\n"
		    "credentials_zip = c.zip\n",
		    "[ca] fleet_root: required" },
		{ "[station]\nid = s\naudit_db = a\n[ca]\nissuer_cert = i\n"
		    "fleet_root = r\nkey_id = 01\npin_env = P\n",
		    "[ota] credentials_zip: required (or gateway_url and "
		    "root_crt)" },
		{ "[station]\nid = s\naudit_db = a\n[ca]\nissuer_cert = i\n"
		    "fleet_root = r\nkey_id = 01\npin_env = P\n[ota]\n"
		    "gateway_url = https://gw\n",
		    "[ota] root_crt: required (with gateway_url)" },
		{ "[station]\nid = s\naudit_db = a\n[ca]\nissuer_cert = i\n"
		    "fleet_root = r\nkey_id = 01\npin_env = P\n[ota]\n"
		    "root_crt = r.crt\n",
		    "[ota] gateway_url: required (with root_crt)" },
		{ "[station]\nid = s\naudit_db = a\n[ca]\nissuer_cert = i\n"
		    "fleet_root = r\nkey_id = 01\npin_env = P\n[ota]\n"
		    "root_crt = r.crt\ncredentials_zip = c.zip\n",
		    "[ota] credentials_zip: set either credentials_zip or "
		    "gateway_url and root_crt, not both" },
		{ "[station]\nid = s\naudit_db = a\n[ca]\nissuer_cert = i\n"
		    "fleet_root = r\n[ota]\ncredentials_zip = c.zip\n",
		    "[ca] key_id: required" },
		{ "[station]\nid = s\naudit_db = a\n[ca]\nissuer_cert = i\n"
		    "fleet_root = r\nkey_id = 01\npin_env = P\n"
		    "validity_days = 400\nmax_validity_days = 365\n[ota]\n"
		    "credentials_zip = c.zip\n",
		    "[ca] validity_days: 400 is more than max_validity_days "
		    "(365): every certificate would be refused" },
		{ "[station]\nid = s\naudit_db = a\n[ca]\nissuer_cert = i\n"
		    "fleet_root = r\nkey_id = 01\n[ota]\n"
		    "credentials_zip = c.zip\n",
		    "[ca] pin_file: required (or pin_env, pin_credential) with "
		    "key_id" },
		{ "[station]\nid = s\naudit_db = a\n[ca]\nissuer_cert = i\n"
		    "fleet_root = r\ndev_key_pem = ca.key\n[ota]\n"
		    "credentials_zip = c.zip\n",
		    "[ca] dev_key_pem: refused: the CA private key would be a "
		    "file on disk; keep it in the token (key_id) or set "
		    "dev_allow_pem_key = yes for development" },
		{ "[station]\nid = s\naudit_db = a\n[ca]\nissuer_cert = i\n"
		    "fleet_root = r\ndev_key_pem = ca.key\n"
		    "dev_allow_pem_key = no\n[ota]\ncredentials_zip = c.zip\n",
		    "[ca] dev_key_pem: refused: the CA private key would be a "
		    "file on disk; keep it in the token (key_id) or set "
		    "dev_allow_pem_key = yes for development" },
		{ "[station]\nid = s\naudit_db = a\n[ca]\nissuer_cert = i\n"
		    "fleet_root = r\ndev_key_pem = ca.key\nkey_id = 01\n"
		    "dev_allow_pem_key = yes\n[ota]\ncredentials_zip = c.zip\n",
		    "[ca] dev_key_pem: set either key_id or dev_key_pem, not "
		    "both" },
		{ "[station]\nid = s\naudit_db = a\n[keys]\nuptane_key = yes\n"
		    "uptane_key_id = 02\n[ca]\nissuer_cert = i\n"
		    "fleet_root = r\nkey_id = 01\npin_env = P\n[ota]\n"
		    "credentials_zip = c.zip\n",
		    "[keys] uptane_key_id: same ID as tls_key_id" },
		/* CMP over https pins the server's TLS certificate. */
		{ "[station]\nid = s\naudit_db = a\n[ca]\nbackend = cmp\n"
		    "url = https://ca:8443/pkix\nfleet_root = r\n"
		    "cmp_secret_file = s\ncmp_ref = k\n[ota]\n"
		    "credentials_zip = c.zip\n",
		    "[ca] server_cert: required with an https:// url (the CA "
		    "server's certificate is pinned)" },
		{ "[station]\nid = s\naudit_db = a\n[ca]\nbackend = cmp\n"
		    "url = http://ca:8080/pkix\nfleet_root = r\n"
		    "cmp_secret_file = s\ncmp_ref = k\nserver_cert = t.pem\n"
		    "[ota]\ncredentials_zip = c.zip\n",
		    "[ca] server_cert: only with an https:// url" },
		/* A [registry] key without conninfo would do nothing. */
		{ "[station]\nid = s\naudit_db = a\n[ca]\nissuer_cert = i\n"
		    "fleet_root = r\nkey_id = 01\npin_env = P\n[ota]\n"
		    "credentials_zip = c.zip\n[registry]\noffline = local\n",
		    "[registry] offline: only with conninfo (without it the "
		    "station has no plant registry)" },
	};
	struct fixture *f = *state;
	char want[768];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(load_text(f, cases[i].text, NULL),
		    KL_ERR_CONFIG);
		snprintf(want, sizeof(want), "%s: %s", f->path,
		    cases[i].rest);
		if (strcmp(f->err, want) != 0)
			fail_msg("case %zu:\n got '%s'\nwant '%s'", i, f->err,
			    want);
	}

	/* The development key with its flag is accepted. */
	assert_int_equal(load_text(f,
	    "[station]\nid = s\naudit_db = a\n[ca]\nissuer_cert = i\n"
	    "fleet_root = r\ndev_key_pem = ca.key\ndev_allow_pem_key = yes\n"
	    "[ota]\ncredentials_zip = c.zip\n", NULL), 0);
	assert_int_equal(f->cfg->ca_dev_allow_pem, 1);
	assert_int_equal(f->cfg->nslots, 0);
	assert_int_equal(f->cfg->registry_offline, CONFIG_OFFLINE_WAIT);

	/* With conninfo, offline = local is taken. */
	assert_int_equal(load_text(f,
	    "[station]\nid = s\naudit_db = a\n[ca]\nissuer_cert = i\n"
	    "fleet_root = r\nkey_id = 01\npin_env = P\n[ota]\n"
	    "credentials_zip = c.zip\n[registry]\nconninfo = host=/run/pg\n"
	    "offline = local\n", NULL), 0);
	assert_int_equal(f->cfg->registry_offline, CONFIG_OFFLINE_LOCAL);
}

static void
test_io(void **state)
{
	struct fixture *f = *state;
	char missing[160], *big;
	size_t n;

	snprintf(missing, sizeof(missing), "%s/nope.conf", f->dir);
	assert_int_equal(config_load(missing, f->cfg, f->err,
	    sizeof(f->err)), KL_ERR_IO);
	assert_non_null(strstr(f->err, missing));

	/* Overlong line. */
	n = 2000;
	big = malloc(n + 32);
	assert_non_null(big);
	memcpy(big, "[station]\noperator = ", 21);
	memset(big + 21, 'o', n);
	big[21 + n] = '\0';
	assert_int_equal(load_text(f, big, "\n"), KL_ERR_CONFIG);
	{
		char want[256];

		snprintf(want, sizeof(want),
		    "%s:2: line longer than 1024 bytes", f->path);
		assert_string_equal(f->err, want);
	}
	/* A value that fits the line but not the field. */
	memset(big + 21, 'o', 200);
	big[221] = '\0';
	assert_int_equal(load_text(f, big, "\n"), KL_ERR_CONFIG);
	assert_non_null(strstr(f->err,
	    ":2: [station] operator: longer than 127 characters"));
	free(big);

	/* Garbage: binary bytes. */
	{
		static const char junk[] = "\x7f" "ELF\x02\x01\x01";

		write_file(f->path, junk, sizeof(junk), NULL);
		assert_int_equal(config_load(f->path, f->cfg, f->err,
		    sizeof(f->err)), KL_ERR_CONFIG);
		assert_non_null(strstr(f->err, ":1: control character 0x7f"));
	}
}

/* Every prefix of a good file, and every bit flip of it: 0, or
 * KL_ERR_CONFIG with a message that names the file. */
static void
test_truncated_and_flipped(void **state)
{
	struct fixture *f = *state;
	size_t len = strlen(base_conf), i, bit;
	char copy[sizeof(base_conf)];
	int rc, ok = 0;

	/* Up to the line that completes the required keys, every prefix
	 * fails; after it, a cut slot line still parses. */
	for (i = 0; i < len; i++) {
		write_file(f->path, base_conf, i, NULL);
		rc = config_load(f->path, f->cfg, f->err, sizeof(f->err));
		if (i < (size_t)(strstr(base_conf, "root.crt") - base_conf)) {
			assert_int_equal(rc, KL_ERR_CONFIG);
		} else if (rc == 0) {
			continue;
		}
		assert_int_equal(rc, KL_ERR_CONFIG);
		assert_int_equal(strncmp(f->err, f->path, strlen(f->path)), 0);
	}
	for (i = 0; i < len; i++) {
		for (bit = 0; bit < 8; bit++) {
			memcpy(copy, base_conf, len);
			copy[i] = (char)(copy[i] ^ (1 << bit));
			write_file(f->path, copy, len, NULL);
			rc = config_load(f->path, f->cfg, f->err,
			    sizeof(f->err));
			if (rc == 0) {
				ok++;
				continue;
			}
			assert_int_equal(rc, KL_ERR_CONFIG);
			assert_int_equal(strncmp(f->err, f->path,
			    strlen(f->path)), 0);
		}
	}
	/* Some flips are harmless (a letter in a comment or a value); most
	 * are not.  Both kinds must have happened. */
	assert_true(ok > 0);
	assert_true(ok < (int)(len * 8) / 2);
}

/* base_conf without its pin_file line, then extra. */
static int
load_no_pin(struct fixture *f, const char *extra)
{
	char text[sizeof(base_conf)];
	const char *pin = strstr(base_conf, "pin_file = pin\n");
	size_t head = (size_t)(pin - base_conf);

	memcpy(text, base_conf, head);
	snprintf(text + head, sizeof(text) - head, "%s",
	    pin + strlen("pin_file = pin\n"));
	return load_text(f, text, extra);
}

/*
 * [ca] pin_credential and [http] token_credential: systemd credentials,
 * read from $CREDENTIALS_DIRECTORY/NAME; refused without that variable
 * and beside the file or environment key of the same secret.
 */
static void
test_credentials(void **state)
{
	struct fixture *f = *state;
	struct config *c = f->cfg;
	char want[768];
	static const struct {
		const char *snippet, *err;
	} bad[] = {
		{ "[ca]\npin_credential = ../pin\n",
		    ":15: [ca] pin_credential: not a credential name (1..64 of "
		    "A-Z a-z 0-9 . _ -, not starting with '.'): '../pin'" },
		{ "[ca]\npin_credential = .pin\n",
		    ":15: [ca] pin_credential: not a credential name (1..64 of "
		    "A-Z a-z 0-9 . _ -, not starting with '.'): '.pin'" },
		{ "[ca]\npin_credential = a/b\n",
		    ":15: [ca] pin_credential: not a credential name (1..64 of "
		    "A-Z a-z 0-9 . _ -, not starting with '.'): 'a/b'" },
		{ "[http]\ntoken_credential = a b\n",
		    ":15: [http] token_credential: not a credential name "
		    "(1..64 of A-Z a-z 0-9 . _ -, not starting with '.'): "
		    "'a b'" },
		{ "[ca]\npin_credential = ca-pin\npin_credential = x\n",
		    ":16: [ca] pin_credential: duplicate key" },
		{ "[ca]\npin_credential = ca-pin\npin_env = PIN\n",
		    ": [ca] pin_credential: set either pin_credential or "
		    "pin_env, not both" },
		{ "[ca]\npin_credential = ca-pin\npin_file = p\n",
		    ": [ca] pin_credential: set either pin_credential or "
		    "pin_file, not both" },
		{ "[ca]\npin_credential = ca-pin\n[http]\nenabled = yes\n"
		    "token_credential = t\ntoken_file = t\n",
		    ": [http] token_credential: set either token_credential "
		    "or token_file, not both" },
	};
	size_t i;

	/* A 65-character name is one too many. */
	char longname[128];

	assert_int_equal(setenv("CREDENTIALS_DIRECTORY",
	    "/run/credentials/keyline-line@l1.service", 1), 0);
	assert_int_equal(load_no_pin(f, "[ca]\npin_credential = ca-pin\n"
	    "[http]\nenabled = yes\ntoken_credential = api.token\n"), 0);
	assert_string_equal(c->ca_pin_credential, "ca-pin");
	assert_string_equal(c->ca_pin_file,
	    "/run/credentials/keyline-line@l1.service/ca-pin");
	assert_string_equal(c->ca_pin_env, "");
	assert_string_equal(c->http_token_credential, "api.token");
	assert_string_equal(c->http_token_file,
	    "/run/credentials/keyline-line@l1.service/api.token");
	/* The credential satisfies "a PIN with key_id" and "a token when
	 * enabled" on its own. */
	assert_int_equal(load_no_pin(f, "[ca]\npin_credential = A_b-9.x\n"),
	    0);
	assert_string_equal(c->ca_pin_file,
	    "/run/credentials/keyline-line@l1.service/A_b-9.x");
	assert_string_equal(c->http_token_file, "");

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(load_no_pin(f, bad[i].snippet),
		    KL_ERR_CONFIG);
		snprintf(want, sizeof(want), "%s%s", f->path, bad[i].err);
		assert_string_equal(f->err, want);
	}
	memset(longname, 'a', 65);
	longname[65] = '\0';
	snprintf(want, sizeof(want), "[ca]\npin_credential = %s\n", longname);
	assert_int_equal(load_no_pin(f, want), KL_ERR_CONFIG);
	longname[64] = '\0';
	snprintf(want, sizeof(want), "[ca]\npin_credential = %s\n", longname);
	assert_int_equal(load_no_pin(f, want), 0);

	/* Outside systemd (or a relative value, which systemd never
	 * sets): refused, naming the key. */
	assert_int_equal(setenv("CREDENTIALS_DIRECTORY", "run/creds", 1), 0);
	assert_int_equal(load_no_pin(f, "[ca]\npin_credential = ca-pin\n"),
	    KL_ERR_CONFIG);
	assert_int_equal(unsetenv("CREDENTIALS_DIRECTORY"), 0);
	memset(c, 0x5a, sizeof(*c));
	assert_int_equal(load_no_pin(f, "[http]\nenabled = yes\n"
	    "token_credential = api\n[ca]\npin_env = PIN\n"),
	    KL_ERR_CONFIG);
	snprintf(want, sizeof(want), "%s: [http] token_credential: "
	    "$CREDENTIALS_DIRECTORY is not set: systemd sets it for a service "
	    "with LoadCredential= or SetCredential= (outside systemd use the "
	    "file or environment keys)", f->path);
	assert_string_equal(f->err, want);
	/* Nothing written on failure. */
	assert_int_equal((unsigned char)c->station_id[0], 0x5a);
	/* The file keys are untouched by all this. */
	assert_int_equal(load_text(f, base_conf, NULL), 0);
	assert_string_equal(c->ca_pin_credential, "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_good, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defaults, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_bad_keys, setup,
		    teardown),
		cmocka_unit_test(test_bad_urls),
		cmocka_unit_test_setup_teardown(test_http, setup, teardown),
		cmocka_unit_test_setup_teardown(test_credentials, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_usb_jig, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_required, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_io, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_and_flipped,
		    setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
