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
	fprintf(f, "usage: keyline console --config FILE [--start]\n"
	    "  the operator console (ncurses) over the line; keys are listed "
	    "on screen.\n"
	    "  --start  start the line running at once (default: paused)\n");
}

int
cmd_console(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "start", no_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_station cs;
	struct cli_front front;
	const char *config_path = NULL;
	int opt, start = 0, rc;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:sh", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			break;
		case 's':
			start = 1;
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
	/* The ring, polled: the screen never runs inside the engine's
	 * lock. */
	memset(&front, 0, sizeof(front));
	if (cli_station_open(&cs, "console", config_path, &front) != 0)
		return 2;
	rc = console_run(&cs.st, cs.engine, config_path, start);
	cli_station_close(&cs);
	return rc;
}
