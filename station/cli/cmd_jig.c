/*
 * cmd_jig.c: "keyline jig scan" lists the USB devices of the jig (those in
 * [jig] usb_ids) with bus, port path, serial, tty and the slot their port
 * maps to, then the USB slots that are empty; "keyline jig power" power-
 * cycles one slot through its hub.  For wiring a jig and checking it
 * before a shift, not for the line itself (the engine does that).
 */
#include "station/cli/cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "station/config/config.h"
#include "common/err.h"
#include "common/ini.h"
#include "station/jig/usbjig.h"

enum {
	CMD_JIG_OK = 0,
	CMD_JIG_FAIL = 1,
	CMD_JIG_USAGE = 2,
};

struct cmd_jig_verb {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *usage;	/* synopsis line */
	const char *options;	/* one line per option */
};

static int cmd_jig_scan(int argc, char **argv);
static int cmd_jig_power(int argc, char **argv);

static const struct cmd_jig_verb cmd_jig_verbs[] = {
	{ .name = "scan", .run = cmd_jig_scan,
	  .usage = "  keyline jig scan --config FILE [--json]\n",
	  .options =
	      "  -c, --config FILE    station.conf: [jig] usb_ids and the "
	      "usb: slots\n"
	      "  -j, --json           one JSON object instead of a table\n"
	      "  -h, --help           this text\n" },
	{ .name = "power", .run = cmd_jig_power,
	  .usage = "  keyline jig power --config FILE --slot N\n",
	  .options =
	      "  -c, --config FILE    station.conf: [jig] power = usb-hub\n"
	      "  -s, --slot N         the slot to power-cycle (use it on an "
	      "idle jig)\n"
	      "  -h, --help           this text\n" },
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Every verb's synopsis; verb (NULL: all) adds the options. */
static void
cmd_jig_usage_of(FILE *fp, const struct cmd_jig_verb *verb)
{
	size_t i;

	fputs("usage:\n", fp);
	for (i = 0; i < NELEM(cmd_jig_verbs); i++)
		if (verb == NULL || verb == &cmd_jig_verbs[i])
			fputs(cmd_jig_verbs[i].usage, fp);
	for (i = 0; i < NELEM(cmd_jig_verbs); i++)
		if (verb == NULL || verb == &cmd_jig_verbs[i])
			fprintf(fp, "\n%s:\n%s",
			    verb == NULL ? cmd_jig_verbs[i].name : "options",
			    cmd_jig_verbs[i].options);
	fputs("  exit: 0 done, 1 the jig failed, 2 usage or configuration\n",
	    fp);
}

static void
cmd_jig_usage(FILE *fp)
{
	cmd_jig_usage_of(fp, NULL);
}

/* The config and an open jig; after saying why, CMD_JIG_USAGE for a
 * configuration error, CMD_JIG_FAIL when the machine failed us (memory,
 * libusb), like the other commands' exit codes. */
static int
cmd_jig_open(const char *path, struct config **cfg, struct usbjig **j)
{
	char err[512];
	int ret;

	if ((*cfg = malloc(sizeof(**cfg))) == NULL) {
		fprintf(stderr, "keyline jig: %s\n",
		    kl_strerror(KL_ERR_NOMEM));
		return CMD_JIG_FAIL;
	}
	if (config_load(path, *cfg, err, sizeof(err)) != 0)
		ret = CMD_JIG_USAGE;
	else if (usbjig_open(j, *cfg, err, sizeof(err)) != 0)
		ret = CMD_JIG_FAIL;
	else
		return CMD_JIG_OK;
	fprintf(stderr, "keyline jig: %s\n", err);
	free(*cfg);
	*cfg = NULL;
	return ret;
}

static json_t *
cmd_jig_str_or_null(const char *s)
{
	return s[0] != '\0' ? json_string(s) : json_null();
}

/* A slot wired to a USB port ([slots] usb:) with no device found on it. */
static int
cmd_jig_slot_empty(const struct config_slot *cs, const struct usbjig_dev *d,
    int n)
{
	int i;

	if (cs->usb_port[0] == '\0')
		return 0;
	for (i = 0; i < n; i++)
		if (d[i].slot == cs->number)
			return 0;
	return 1;
}

static int
cmd_jig_print_json(const struct config *cfg, const struct usbjig_dev *d,
    int n)
{
	json_t *root = json_object(), *devs = json_array(),
	    *empty = json_array();
	char vid[8], pid[8];
	int i, k, r = CMD_JIG_FAIL;

	if (root == NULL || devs == NULL || empty == NULL)
		goto out;
	for (i = 0; i < n; i++) {
		json_t *o;

		snprintf(vid, sizeof(vid), "%04x", d[i].vid);
		snprintf(pid, sizeof(pid), "%04x", d[i].pid);
		/* "o" steals each value, also when packing fails. */
		o = json_pack("{s:i, s:s, s:s, s:s, s:o, s:o, s:o}",
		    "bus", d[i].bus, "port", d[i].port, "vid", vid,
		    "pid", pid, "serial", cmd_jig_str_or_null(d[i].serial),
		    "tty", cmd_jig_str_or_null(d[i].tty),
		    "slot", d[i].slot > 0 ? json_integer(d[i].slot) :
		    json_null());
		if (o == NULL || json_array_append_new(devs, o) != 0)
			goto out;
	}
	for (k = 0; k < cfg->nslots; k++) {
		const struct config_slot *cs = &cfg->slots[k];

		if (!cmd_jig_slot_empty(cs, d, n))
			continue;
		if (json_array_append_new(empty, json_pack("{s:i, s:s}",
		    "slot", cs->number, "port", cs->usb_port)) != 0)
			goto out;
	}
	if (json_object_set_new(root, "devices", devs) != 0) {
		devs = NULL;
		goto out;
	}
	devs = NULL;
	if (json_object_set_new(root, "empty_slots", empty) != 0) {
		empty = NULL;
		goto out;
	}
	empty = NULL;
	if (json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0)
		goto out;
	putchar('\n');
	r = CMD_JIG_OK;
out:
	json_decref(devs);
	json_decref(empty);
	json_decref(root);
	return r;
}

static void
cmd_jig_print_table(const struct config *cfg, const struct usbjig_dev *d,
    int n)
{
	int i, k;

	printf("%-5s %-16s %-9s %-20s %s\n", "SLOT", "PORT", "VID:PID",
	    "SERIAL", "TTY");
	for (i = 0; i < n; i++) {
		char slot[12] = "-";

		if (d[i].slot > 0)
			snprintf(slot, sizeof(slot), "%d", d[i].slot);
		printf("%-5s %-16s %04x:%04x %-20s %s\n", slot, d[i].port,
		    d[i].vid, d[i].pid, d[i].serial[0] ? d[i].serial : "-",
		    d[i].tty[0] ? d[i].tty : "-");
	}
	for (k = 0; k < cfg->nslots; k++) {
		const struct config_slot *cs = &cfg->slots[k];

		if (cmd_jig_slot_empty(cs, d, n))
			printf("%-5d %-16s (empty)\n", cs->number,
			    cs->usb_port);
	}
}

static int
cmd_jig_scan(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL;
	struct config *cfg = NULL;
	struct usbjig *j = NULL;
	struct usbjig_dev *devs = NULL;
	int c, n = 0, json = 0, r, ret;

	optind = 0;
	while ((c = getopt_long(argc, argv, "+c:jh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			cmd_jig_usage_of(stdout, &cmd_jig_verbs[0]);
			return CMD_JIG_OK;
		default:
			cmd_jig_usage(stderr);
			return CMD_JIG_USAGE;
		}
	}
	if (path == NULL || optind != argc) {
		cmd_jig_usage(stderr);
		return CMD_JIG_USAGE;
	}
	if ((ret = cmd_jig_open(path, &cfg, &j)) != CMD_JIG_OK)
		return ret;
	if ((r = usbjig_scan(j, &devs, &n)) != 0) {
		fprintf(stderr, "keyline jig: scan failed: %s\n",
		    kl_strerror(r));
		ret = CMD_JIG_FAIL;
		goto out;
	}
	if (json)
		ret = cmd_jig_print_json(cfg, devs, n);
	else
		cmd_jig_print_table(cfg, devs, n);
	if (fflush(stdout) != 0)
		ret = CMD_JIG_FAIL;
out:
	free(devs);
	usbjig_close(j);
	free(cfg);
	return ret;
}

static int
cmd_jig_power(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "slot", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL, *slot = NULL;
	struct config *cfg = NULL;
	struct usbjig *j = NULL;
	char why[128];
	long n = 0;
	int c, r, ret;

	optind = 0;
	while ((c = getopt_long(argc, argv, "+c:s:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 's':
			slot = optarg;
			break;
		case 'h':
			cmd_jig_usage_of(stdout, &cmd_jig_verbs[1]);
			return CMD_JIG_OK;
		default:
			cmd_jig_usage(stderr);
			return CMD_JIG_USAGE;
		}
	}
	if (path == NULL || slot == NULL || optind != argc) {
		cmd_jig_usage(stderr);
		return CMD_JIG_USAGE;
	}
	if (ini_to_long(slot, 1, CONFIG_MAX_SLOTS, &n, why, sizeof(why)) != 0) {
		fprintf(stderr, "keyline jig: --slot: %s\n", why);
		return CMD_JIG_USAGE;
	}
	if ((ret = cmd_jig_open(path, &cfg, &j)) != CMD_JIG_OK)
		return ret;
	if ((r = usbjig_power_cycle(j, (int)n)) != 0) {
		fprintf(stderr, "keyline jig: slot %ld: power cycle: %s\n", n,
		    kl_strerror(r));
		ret = CMD_JIG_FAIL;
	} else {
		printf("slot %ld: power cycled\n", n);
	}
	usbjig_close(j);
	free(cfg);
	return ret;
}

int
cmd_jig(int argc, char **argv)
{
	size_t i;

	if (argc < 2) {
		cmd_jig_usage(stderr);
		return CMD_JIG_USAGE;
	}
	for (i = 0; i < NELEM(cmd_jig_verbs); i++)
		if (strcmp(argv[1], cmd_jig_verbs[i].name) == 0)
			return cmd_jig_verbs[i].run(argc - 1, argv + 1);
	if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		cmd_jig_usage(stdout);
		return CMD_JIG_OK;
	}
	fprintf(stderr, "keyline jig: unknown verb '%s'\n", argv[1]);
	cmd_jig_usage(stderr);
	return CMD_JIG_USAGE;
}
