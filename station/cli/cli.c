/*
 * cli.c: the start-up batch and console share (cli.h).
 */
#include "station/cli/cli.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "station/config/config.h"
#include "common/err.h"
#include "ui/http.h"

int
cli_station_open(struct cli_station *cs, const char *cmd,
    const char *config_path, const struct cli_front *front)
{
	struct engine_opts eo;
	char err[1024];
	int r;

	memset(cs, 0, sizeof(*cs));
	/*
	 * Before anything is read: root could open any file station.conf
	 * names and would hold the CA token's session and the API's socket
	 * with every privilege.  A plant runs the station as a dedicated
	 * user with the udev rule for the jig (docs/install.md); a lab that
	 * knows better says so.
	 */
	if (geteuid() == 0 && !front->allow_root) {
		fprintf(stderr, "keyline %s: refusing to run as root: a "
		    "network-facing station holding the CA PIN should run as "
		    "a dedicated user (see docs/install.md), or pass "
		    "--allow-root\n", cmd);
		return 2;
	}
	if ((r = station_open(&cs->st, config_path, err, sizeof(err))) != 0) {
		fprintf(stderr, "keyline %s: %s\n", cmd, err);
		return 2;
	}
	station_engine_opts(&cs->st, &eo);
	eo.on_event = front->on_event;
	eo.arg = front->arg;
	eo.reprovision = front->reprovision;
	eo.nreprovision = front->nreprovision;
	if ((r = engine_new(&cs->engine, &eo)) != 0) {
		fprintf(stderr, "keyline %s: cannot set up the engine: %s\n",
		    cmd, kl_strerror(r));
		goto fail;
	}
	station_bind_engine(&cs->st, cs->engine);
	/* The status API beside the front-end; bind errors before any board
	 * starts. */
	if (cs->st.cfg->http_enabled) {
		struct http_opts ho;

		memset(&ho, 0, sizeof(ho));
		ho.engine = cs->engine;
		ho.audit = cs->st.audit;
		ho.cfg = cs->st.cfg;
		ho.ship = cs->st.ship;
		if ((r = http_start(&cs->http, &ho, err, sizeof(err))) != 0) {
			fprintf(stderr, "keyline %s: status API: %s\n", cmd,
			    err);
			goto fail;
		}
	}
	return 0;
fail:
	cli_station_close(cs);
	return 2;
}

void
cli_station_close(struct cli_station *cs)
{
	struct engine *e = cs->engine;

	http_stop(cs->http);
	cs->http = NULL;
	cs->engine = NULL;
	station_bind_engine(&cs->st, NULL);
	engine_free(e);
	station_close(&cs->st);
}
