/*
 * main.c: the `keyline` command: a table of sub-commands.
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
	{ "help", cmd_help, "this list" },
};

static int
cmd_version(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("keyline %s (%s)\n", KEYLINE_VERSION,
	    OpenSSL_version(OPENSSL_VERSION));
	return 0;
}

static int
cmd_help(int argc, char **argv)
{
	size_t i;

	(void)argc;
	(void)argv;
	printf("usage: keyline COMMAND [OPTIONS]\n\ncommands:\n");
	for (i = 0; i < sizeof(keyline_cmds) / sizeof(keyline_cmds[0]); i++)
		printf("  %-10s %s\n", keyline_cmds[i].name,
		    keyline_cmds[i].summary);
	return 0;
}

int
main(int argc, char **argv)
{
	size_t i;

	/* Before anything reads a PIN, a token or a MAC key: a core file or
	 * a same-user ptrace would otherwise hold them (secret.h). */
	if (secret_no_dumps() != 0) {
		fprintf(stderr, "keyline: cannot turn core dumps off\n");
		return 2;
	}
	log_init("keyline", LOG_LVL_INFO);
	if (argc < 2) {
		cmd_help(0, NULL);
		return 2;
	}
	for (i = 0; i < sizeof(keyline_cmds) / sizeof(keyline_cmds[0]); i++)
		if (strcmp(argv[1], keyline_cmds[i].name) == 0)
			return keyline_cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "keyline: unknown command '%s' (try keyline help)\n",
	    argv[1]);
	return 2;
}
