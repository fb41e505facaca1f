/*
 * cmd_batch.c: `keyline batch --config station.conf [--count N | --line]
 * [--reprovision DEVICE-ID]...` (cli.h; the output is docs/batch.md,
 * the manual keyline-batch(1)).
 *
 * Builds the station from its config (audit log, CA, trust anchors, OTA
 * files), runs the engine once over the jig and reports every event as a
 * JSON line, so a line controller can follow a run with nothing more than
 * a pipe.
 */
#include "station/cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "db/audit.h"
#include "station/ca/ca.h"
#include "station/ca/certcheck.h"
#include "station/config/config.h"
#include "common/err.h"
#include "common/log.h"
#include "station/config/ota.h"
#include "station/service.h"
#include "station/station.h"

#define BATCH_MAX_REPROVISION 256

struct batch {
	uint64_t bytes;		/* on the wire, both ways, all boards */
	uint32_t retries;
	int quiet;
};

static struct engine *batch_engine;
static volatile sig_atomic_t batch_stop;

static void
batch_signal(int sig)
{
	(void)sig;
	batch_stop = 1;
	if (batch_engine != NULL)
		engine_cancel(batch_engine);
}

static void
batch_print(json_t *o)
{
	if (o == NULL)
		return;
	json_dumpf(o, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
	fputc('\n', stdout);
	fflush(stdout);
	json_decref(o);
}

static void
batch_event(void *arg, const struct engine_event *ev)
{
	struct batch *bt = arg;
	json_t *o;

	if (ev->kind == EV_PASSED || ev->kind == EV_FAILED ||
	    ev->kind == EV_ALREADY) {
		bt->bytes += ev->bytes_tx + ev->bytes_rx;
		bt->retries += ev->retries;
	}
	service_event(ev);
	if (bt->quiet && ev->kind == EV_STEP)
		return;
	o = json_pack("{s:I, s:I, s:s, s:i, s:s, s:s, s:s, s:I}",
	    "seq", (json_int_t)ev->seq,
	    "time_ms", (json_int_t)ev->time_ms,
	    "event", engine_event_kind_name(ev->kind),
	    "slot", ev->slot,
	    "step", engine_step_name(ev->step),
	    "serial", ev->serial,
	    "device_id", ev->device_id,
	    "elapsed_ms", (json_int_t)ev->elapsed_ms);
	if (o == NULL) {
		/* Never drop a board from the stream: say that it happened. */
		printf("{\"seq\":%llu,\"event\":\"%s\",\"slot\":%d,"
		    "\"message\":\"event text not representable in JSON\"}\n",
		    (unsigned long long)ev->seq,
		    engine_event_kind_name(ev->kind), ev->slot);
		fflush(stdout);
		return;
	}
	if (ev->message[0] != '\0')
		json_object_set_new(o, "message", json_string(ev->message));
	if (ev->kind == EV_FAILED)
		json_object_set_new(o, "error", json_string(kl_errname(ev->err)));
	if (ev->kind == EV_PASSED || ev->kind == EV_FAILED ||
	    ev->kind == EV_ALREADY) {
		if (ev->cert_serial[0] != '\0')
			json_object_set_new(o, "cert_serial",
			    json_string(ev->cert_serial));
		if (ev->cert_fpr[0] != '\0')
			json_object_set_new(o, "cert_fpr",
			    json_string(ev->cert_fpr));
		if (ev->key_fpr[0] != '\0')
			json_object_set_new(o, "key_fpr",
			    json_string(ev->key_fpr));
		json_object_set_new(o, "bytes_tx",
		    json_integer((json_int_t)ev->bytes_tx));
		json_object_set_new(o, "bytes_rx",
		    json_integer((json_int_t)ev->bytes_rx));
		json_object_set_new(o, "retries", json_integer(ev->retries));
	}
	batch_print(o);
}

static void
batch_usage(FILE *f)
{
	fprintf(f,
	    "usage: keyline batch --config FILE [--count N | --line]\n"
	    "           [--reprovision DEVICE-ID]... [--quiet] [--verbose] "
	    "[--allow-root]\n"
	    "  provision the jig headless: one JSON object per event on "
	    "stdout\n"
	    "  -c, --config FILE    station.conf (station.conf(5))\n"
	    "  -n, --count N        one pass over the first N slots "
	    "(default: all)\n"
	    "  -l, --line           run the line until SIGINT/SIGTERM: each "
	    "new board\n"
	    "                       is provisioned as it arrives\n"
	    "  -r, --reprovision DEVICE-ID\n"
	    "                       provision DEVICE-ID again although it "
	    "was\n"
	    "                       provisioned (repeatable; audited)\n"
	    "  -q, --quiet          leave out the step events\n"
	    "  -v, --verbose        debug log on stderr\n"
	    CLI_USAGE_ALLOW_ROOT
	    "  -h, --help           this text\n"
	    "  exit: 0 every board passed or was already provisioned, 1 a "
	    "board failed,\n"
	    "  2 usage, configuration or start-up error (see keyline-batch(1))"
	    "\n");
}

static double
mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* User and system CPU of the whole process, in seconds. */
static double
batch_cpu_s(const struct rusage *ru)
{
	return (double)ru->ru_utime.tv_sec + ru->ru_utime.tv_usec / 1e6 +
	    (double)ru->ru_stime.tv_sec + ru->ru_stime.tv_usec / 1e6;
}

int
cmd_batch(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "count", required_argument, NULL, 'n' },
		{ "reprovision", required_argument, NULL, 'r' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "line", no_argument, NULL, 'l' },
		{ "verbose", no_argument, NULL, 'v' },
		{ CLI_OPT_ALLOW_ROOT, no_argument, NULL, 'A' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *reprov[BATCH_MAX_REPROVISION];
	const char *config_path = NULL;
	struct cli_station cs;
	struct cli_front front;
	struct engine_counts counts;
	struct batch bt;
	struct rusage ru;
	struct sigaction sa;
	char audit_hash[AUDIT_HASH_HEX + 1];
	int64_t audit_rows;
	long count = 0;
	char *end;
	int nreprov = 0, c, r, n, exit_code = 2, line = 0, allow_root = 0;
	double t0, elapsed, cpu, cpu0;

	memset(&bt, 0, sizeof(bt));
	optind = 1;
	while ((c = getopt_long(argc, argv, "c:n:r:qlvh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config_path = optarg;
			break;
		case 'n':
			errno = 0;
			count = strtol(optarg, &end, 10);
			if (errno != 0 || *end != '\0' || count < 1 ||
			    count > CONFIG_MAX_SLOTS) {
				fprintf(stderr, "keyline batch: --count: not a "
				    "number from 1 to %d: '%s'\n",
				    CONFIG_MAX_SLOTS, optarg);
				return 2;
			}
			break;
		case 'r':
			if (nreprov >= BATCH_MAX_REPROVISION) {
				fprintf(stderr, "keyline batch: too many "
				    "--reprovision\n");
				return 2;
			}
			reprov[nreprov++] = optarg;
			break;
		case 'q':
			bt.quiet = 1;
			break;
		case 'l':
			line = 1;
			break;
		case 'v':
			log_init("keyline", LOG_LVL_DEBUG);
			break;
		case 'A':
			allow_root = 1;
			break;
		case 'h':
			batch_usage(stdout);
			return 0;
		default:
			batch_usage(stderr);
			return 2;
		}
	}
	if (config_path == NULL || optind != argc || (line && count > 0)) {
		batch_usage(stderr);
		return 2;
	}
	memset(&front, 0, sizeof(front));
	front.reprovision = reprov;
	front.nreprovision = nreprov;
	front.allow_root = allow_root;
	front.on_event = batch_event;
	front.arg = &bt;
	/* Under systemd: log lines into the journal with board fields. */
	(void)service_journal_init();
	if (cli_station_open(&cs, "batch", config_path, &front) != 0)
		return 2;
	batch_engine = cs.engine;
	if (count > cs.st.cfg->nslots) {
		fprintf(stderr, "keyline batch: --count %ld but %s has %d "
		    "slot(s)\n", count, config_path, cs.st.cfg->nslots);
		goto out;
	}
	/* The first Ctrl-C stops the line cleanly; a second one ends the
	 * process at once (SA_RESETHAND). */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = batch_signal;
	sa.sa_flags = SA_RESETHAND;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* A reader that goes away must not kill the station mid-board. */
	signal(SIGPIPE, SIG_IGN);

	/* Start-up (libraries, tokens, the trust store, the audit log) is
	 * paid once per run: reported on its own, so that the per-board
	 * figure is what a line running all shift pays for each board. */
	getrusage(RUSAGE_SELF, &ru);
	cpu0 = batch_cpu_s(&ru);
	t0 = mono_s();
	if (line) {
		if ((r = engine_start(batch_engine)) != 0) {
			fprintf(stderr, "keyline batch: cannot start the line: "
			    "%s\n", kl_strerror(r));
			goto out;
		}
		engine_set_running(batch_engine, 1);
		service_ready(batch_engine);
		while (!batch_stop) {
			usleep(100 * 1000);
			service_tick(batch_engine);
		}
		/* Boards not yet writing roll back; writing ones finish. */
		service_stopping();
		engine_stop(batch_engine);
	} else {
		(void)engine_run(batch_engine, (int)count);
	}
	elapsed = mono_s() - t0;
	engine_counts(batch_engine, &counts);
	n = counts.passed + counts.failed + counts.already;
	getrusage(RUSAGE_SELF, &ru);
	cpu = batch_cpu_s(&ru);
	/* The head leaves the station in the summary: a copy kept by whoever
	 * reads this output is an anchor against truncation. */
	if (audit_head(cs.st.audit, &audit_rows, audit_hash,
	    sizeof(audit_hash)) != 0) {
		audit_rows = -1;
		audit_hash[0] = '\0';
	}
	batch_print(json_pack("{s:s, s:i, s:i, s:i, s:i, s:f, s:f, s:f, s:f, "
	    "s:f, s:I, s:I, s:i, s:I, s:s?}",
	    "event", "summary",
	    "boards", n,
	    "passed", counts.passed,
	    "already_provisioned", counts.already,
	    "failed", counts.failed,
	    "elapsed_s", elapsed,
	    "boards_per_s", elapsed > 0 ? n / elapsed : 0.0,
	    "cpu_s_per_board", n > 0 ? cpu / n : 0.0,
	    "run_cpu_s_per_board", n > 0 ? (cpu - cpu0) / n : 0.0,
	    "startup_cpu_s", cpu0,
	    "peak_rss_kb", (json_int_t)ru.ru_maxrss,
	    "wire_bytes_per_board", (json_int_t)(n > 0 ? bt.bytes / (uint64_t)n :
	    0),
	    "retries", (int)bt.retries,
	    "audit_rows", (json_int_t)audit_rows,
	    "audit_head", audit_hash[0] != '\0' ? audit_hash : NULL));
	/* A line stopped by the operator with nothing failed is a success,
	 * even if no board came; one pass must have provisioned boards (or
	 * found them already provisioned: re-running a batch after a crash
	 * just works). */
	exit_code = counts.failed == 0 && (n > 0 || line) ? 0 : 1;
out:
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	batch_engine = NULL;
	cli_station_close(&cs);
	return exit_code;
}
