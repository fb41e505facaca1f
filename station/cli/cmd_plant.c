/*
 * cmd_plant.c: `keyline plant init` (cli.h, docs/plant.md).
 */
#include "station/cli/cli.h"

#include <stdio.h>

int
cmd_plant(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "keyline plant: not built yet\n");
	return 2;
}
