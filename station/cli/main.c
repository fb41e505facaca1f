/*
 * main.c: the `keyline` command: a table of sub-commands, and the help
 * around them (keyline --help, help COMMAND, --version).  The manual is
 * docs/man/keyline.1 and one page per command.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "station/cli/cli.h"
#include "common/log.h"
#include "common/secret.h"
#include "station/version.h"

struct keyline_cmd {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *summary;
};

static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);

static const struct keyline_cmd keyline_cmds[] = {
	{ "batch", cmd_batch, "provision the jig headless, JSON lines out" },
	{ "console", cmd_console, "operator console (ncurses)" },
	{ "audit", cmd_audit, "verify or export the audit log" },
	{ "jig", cmd_jig, "USB jig: scan devices and slots, power-cycle a slot" },
	{ "plant", cmd_plant, "plant registry on PostgreSQL: create its schema and station role" },
	{ "version", cmd_version, "print the version" },
	{ "help", cmd_help, "this list, or a command's usage: help COMMAND" },
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static int
keyline_is_help(const char *arg)
{
	return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

static const struct keyline_cmd *
keyline_cmd_named(const char *name)
{
	size_t i;

	for (i = 0; i < NELEM(keyline_cmds); i++)
		if (strcmp(name, keyline_cmds[i].name) == 0)
			return &keyline_cmds[i];
	return NULL;
}

static int
cmd_version(int argc, char **argv)
{
	if (argc == 2 && keyline_is_help(argv[1])) {
		printf("usage: keyline version   (or keyline --version)\n");
		return 0;
	}
	if (argc > 1) {
		fprintf(stderr, "usage: keyline version\n");
		return 2;
	}
	printf("keyline %s (%s)\n", KEYLINE_VERSION,
	    OpenSSL_version(OPENSSL_VERSION));
	return 0;
}

static void
keyline_list(FILE *fp)
{
	size_t i;

	fprintf(fp, "usage: keyline COMMAND [OPTIONS]\n"
	    "       keyline help COMMAND | COMMAND --help   that command's "
	    "usage\n"
	    "       keyline --version\n\ncommands:\n");
	for (i = 0; i < NELEM(keyline_cmds); i++)
		fprintf(fp, "  %-10s %s\n", keyline_cmds[i].name,
		    keyline_cmds[i].summary);
	fprintf(fp, "\nmanual: keyline(1), keyline-COMMAND(1), "
	    "station.conf(5)\n");
}

/*
 * help COMMAND is COMMAND --help: one usage text per command, kept where
 * its options are parsed.
 */
static int
cmd_help(int argc, char **argv)
{
	const struct keyline_cmd *c;
	char *args[3];

	if (argc == 1 || (argc == 2 && keyline_is_help(argv[1]))) {
		keyline_list(stdout);
		return 0;
	}
	if (argc > 2 || (c = keyline_cmd_named(argv[1])) == NULL) {
		fprintf(stderr, "keyline help: no command '%s' (try keyline "
		    "help)\n", argv[1]);
		return 2;
	}
	if (c->fn == cmd_help) {
		printf("usage: keyline help [COMMAND]\n");
		return 0;
	}
	args[0] = argv[1];
	args[1] = "--help";
	args[2] = NULL;
	return c->fn(2, args);
}

int
main(int argc, char **argv)
{
	const struct keyline_cmd *c;

	/* Before anything reads a PIN, a token or a MAC key: a core file or
	 * a same-user ptrace would otherwise hold them (secret.h). */
	if (secret_no_dumps() != 0) {
		fprintf(stderr, "keyline: cannot turn core dumps off\n");
		return 2;
	}
	log_init("keyline", LOG_LVL_INFO);
	if (argc < 2) {
		keyline_list(stderr);
		return 2;
	}
	if (keyline_is_help(argv[1]))
		return cmd_help(1, argv + 1);
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)
		return cmd_version(1, argv + 1);
	if ((c = keyline_cmd_named(argv[1])) != NULL)
		return c->fn(argc - 1, argv + 1);
	fprintf(stderr, "keyline: unknown command '%s' (try keyline help)\n",
	    argv[1]);
	return 2;
}
