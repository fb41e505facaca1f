/*
 * cmd_plant.c: `keyline plant init` (cli.h, docs/plant.md): the plant
 * administrator creates or migrates the registry's schema on PostgreSQL
 * and the role stations log in as.  Run once per plant, and again after
 * an upgrade; running it twice changes nothing.
 *
 * Exit codes: 0 done, 2 usage or failure (the reason on stderr after
 * "keyline plant: ").
 */
#include "station/cli/cli.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "db/plant.h"

enum {
	CMD_PLANT_OK = 0,
	CMD_PLANT_FAIL = 2,
	CMD_PLANT_USAGE = 2,
};

struct cmd_plant_verb {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *usage;	/* synopsis line */
	const char *options;	/* one line per option */
};

static int cmd_plant_init(int argc, char **argv);
static int cmd_plant_sql(int argc, char **argv);

static const struct cmd_plant_verb cmd_plant_verbs[] = {
	{ .name = "init", .run = cmd_plant_init,
	  .usage = "  keyline plant init --admin CONNINFO --station-role ROLE "
	      "[--password-file FILE]\n",
	  .options =
	      "  -a, --admin CONNINFO  libpq connection string (or "
	      "service=NAME) of a role\n"
	      "                        that may create tables and roles; no "
	      "password=\n"
	      "                        (a passfile, a client certificate or "
	      "peer);\n"
	      "                        over TCP: sslmode=verify-full "
	      "sslrootcert=FILE\n"
	      "  -s, --station-role ROLE\n"
	      "                        the role stations log in as (created "
	      "if missing)\n"
	      "  -p, --password-file FILE\n"
	      "                        its password (mode 600, ours, one "
	      "line)\n"
	      "  -h, --help            this text\n" },
	{ .name = "sql", .run = cmd_plant_sql,
	  .usage = "  keyline plant sql claim|provisioned\n",
	  .options =
	      "  claim, provisioned    print that statement as a station "
	      "sends it,\n"
	      "                        on one line (for load tests)\n"
	      "  -h, --help            this text\n" },
};

static const struct {
	const char *name;
	const char *sql;
} cmd_plant_statements[] = {
	{ "claim", plant_claim_sql },
	{ "provisioned", plant_provisioned_sql },
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Every verb's synopsis; verb (NULL: all) adds the options. */
static void
cmd_plant_usage_of(FILE *fp, const struct cmd_plant_verb *verb)
{
	size_t i;

	fputs("usage:\n", fp);
	for (i = 0; i < NELEM(cmd_plant_verbs); i++)
		if (verb == NULL || verb == &cmd_plant_verbs[i])
			fputs(cmd_plant_verbs[i].usage, fp);
	for (i = 0; i < NELEM(cmd_plant_verbs); i++)
		if (verb == NULL || verb == &cmd_plant_verbs[i])
			fprintf(fp, "\n%s:\n%s",
			    verb == NULL ? cmd_plant_verbs[i].name : "options",
			    cmd_plant_verbs[i].options);
	fputs("  exit: 0 done, 2 usage or failure\n", fp);
}

static void
cmd_plant_usage(FILE *fp)
{
	cmd_plant_usage_of(fp, NULL);
}

static int
cmd_plant_is_help(const char *arg)
{
	return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

static int
cmd_plant_init(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "admin", required_argument, NULL, 'a' },
		{ "station-role", required_argument, NULL, 's' },
		{ "password-file", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *admin = NULL, *role = NULL, *pwfile = NULL;
	char why[512] = "";
	int c, r;

	/* glibc: 0 also resets getopt's internal state. */
	optind = 0;
	while ((c = getopt_long(argc, argv, "+a:s:p:h", opts, NULL)) != -1) {
		switch (c) {
		case 'a':
			admin = optarg;
			break;
		case 's':
			role = optarg;
			break;
		case 'p':
			pwfile = optarg;
			break;
		case 'h':
			cmd_plant_usage_of(stdout, &cmd_plant_verbs[0]);
			return CMD_PLANT_OK;
		default:
			cmd_plant_usage(stderr);
			return CMD_PLANT_USAGE;
		}
	}
	if (optind != argc || admin == NULL || admin[0] == '\0' ||
	    role == NULL || role[0] == '\0' ||
	    (pwfile != NULL && pwfile[0] == '\0')) {
		cmd_plant_usage(stderr);
		return CMD_PLANT_USAGE;
	}
	if ((r = plant_init(admin, role, pwfile, why, sizeof(why))) != 0) {
		fprintf(stderr, "keyline plant: %s\n", why[0] != '\0' ? why :
		    kl_strerror(r));
		return CMD_PLANT_FAIL;
	}
	printf("plant registry: schema version %d, station role %s%s\n",
	    plant_schema_version, role,
	    pwfile != NULL ? " (password set)" : "");
	return CMD_PLANT_OK;
}

/* Print one of the statements a station sends, on one line. */
static int
cmd_plant_sql(int argc, char **argv)
{
	size_t i;

	if (argc == 2 && cmd_plant_is_help(argv[1])) {
		cmd_plant_usage_of(stdout, &cmd_plant_verbs[1]);
		return CMD_PLANT_OK;
	}
	if (argc != 2) {
		cmd_plant_usage_of(stderr, &cmd_plant_verbs[1]);
		return CMD_PLANT_USAGE;
	}
	for (i = 0; i < NELEM(cmd_plant_statements); i++)
		if (strcmp(argv[1], cmd_plant_statements[i].name) == 0) {
			printf("%s\n", cmd_plant_statements[i].sql);
			return CMD_PLANT_OK;
		}
	fprintf(stderr, "keyline plant: no statement \"%s\" (claim, "
	    "provisioned)\n", argv[1]);
	return CMD_PLANT_USAGE;
}

int
cmd_plant(int argc, char **argv)
{
	size_t i;

	if (argc < 2 || argv == NULL || argv[1] == NULL) {
		cmd_plant_usage(stderr);
		return CMD_PLANT_USAGE;
	}
	if (cmd_plant_is_help(argv[1])) {
		cmd_plant_usage(stdout);
		return CMD_PLANT_OK;
	}
	for (i = 0; i < NELEM(cmd_plant_verbs); i++)
		if (strcmp(argv[1], cmd_plant_verbs[i].name) == 0)
			return cmd_plant_verbs[i].run(argc - 1, argv + 1);
	fprintf(stderr, "keyline plant: unknown verb \"%s\"\n", argv[1]);
	cmd_plant_usage(stderr);
	return CMD_PLANT_USAGE;
}
