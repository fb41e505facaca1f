/*
 * cli.h: the `keyline` command line (station/cli/): one file per command,
 * tmux-style, and the start-up they share.
 *
 * Each cmd_* takes the arguments after the command name (argv[0] is the
 * command) and returns the process exit status: 0 done, 1 a board or the
 * work failed, 2 a usage or start-up error (a broken station.conf, an
 * audit log that cannot be written, a CA that cannot be opened).
 */
#ifndef KL_CLI_H
#define KL_CLI_H

#include "station/engine/engine.h"
#include "station/station.h"

struct http;

int cmd_batch(int argc, char **argv);	/* cmd_batch.c */
int cmd_console(int argc, char **argv);	/* cmd_console.c */
int cmd_audit(int argc, char **argv);	/* cmd_audit.c */
int cmd_jig(int argc, char **argv);	/* cmd_jig.c */
int cmd_plant(int argc, char **argv);	/* cmd_plant.c */

/*
 * The option every station command takes to run as root anyway, and the
 * line its usage prints for it.  Batch and console refuse root because
 * they open the CA token with its PIN and may serve the status API;
 * audit, jig, plant, help and version do neither and run as anyone.
 */
#define CLI_OPT_ALLOW_ROOT "allow-root"
#define CLI_USAGE_ALLOW_ROOT \
	"      --allow-root     run even as root (refused otherwise; see " \
	"keyline(1))\n"

/*
 * A station running an engine, with the status API beside it when
 * station.conf enables it: what batch and console start the same way.
 */
struct cli_station {
	struct station st;		/* owned */
	struct engine *engine;		/* owned */
	struct http *http;		/* owned; NULL without [http] */
};

/* What a front-end adds to the engine's options. */
struct cli_front {
	engine_event_fn on_event;	/* NULL: the front-end polls the ring */
	void *arg;
	const char *const *reprovision;	/* borrowed for the station's life */
	int nreprovision;
	int allow_root;			/* --allow-root: run even as root */
};

/*
 * The refusal to run as root (unless front->allow_root) -> station_open
 * -> the engine (with front's additions) -> the USB jig's hotplug bound
 * to it -> the status API if enabled.  0, or 2 with the
 * reason printed on stderr after "keyline CMD: " (cmd names the
 * command), and nothing left open.  Close with cli_station_close.
 */
int cli_station_open(struct cli_station *cs, const char *cmd,
    const char *config_path, const struct cli_front *front);

/* The API first (it reads the engine), then the engine, then the
 * station.  cs may be half-opened by a failed cli_station_open. */
void cli_station_close(struct cli_station *cs);

#endif
