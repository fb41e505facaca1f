/*
 * cmd_console.c: `keyline console --config station.conf [--start]`
 * (cli.h): the station and its engine, then the operator's screen
 * (ui/console.h, docs/console.md).
 */
#include "station/cli/cli.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "ui/console.h"

static void
console_usage(FILE *f)
{
	fprintf(f, "usage: keyline console --config FILE [--start] "
	    "[--allow-root]\n"
	    "  the operator console (ncurses) over the line; keys are listed "
	    "on screen\n"
	    "  -c, --config FILE    station.conf (station.conf(5))\n"
	    "  -s, --start          start the line running at once "
	    "(default: paused)\n"
	    CLI_USAGE_ALLOW_ROOT
	    "  -h, --help           this text\n");
}

int
cmd_console(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "start", no_argument, NULL, 's' },
		{ CLI_OPT_ALLOW_ROOT, no_argument, NULL, 'A' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_station cs;
	struct cli_front front;
	const char *config_path = NULL;
	int opt, start = 0, rc;

	memset(&front, 0, sizeof(front));
	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:sh", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			break;
		case 's':
			start = 1;
			break;
		case 'A':
			front.allow_root = 1;
			break;
		case 'h':
			console_usage(stdout);
			return 0;
		default:
			console_usage(stderr);
			return 2;
		}
	}
	if (config_path == NULL || optind != argc) {
		console_usage(stderr);
		return 2;
	}
	/* The ring, polled (no on_event): the screen never runs inside the
	 * engine's lock. */
	if (cli_station_open(&cs, "console", config_path, &front) != 0)
		return 2;
	rc = console_run(&cs.st, cs.engine, config_path, start);
	cli_station_close(&cs);
	return rc;
}
