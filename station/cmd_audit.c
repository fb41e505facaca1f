/*
 * cmd_audit.c: "keyline audit verify" checks the hash chain of an audit
 * database and prints its head (the value worth writing down elsewhere);
 * "keyline audit export" writes every row as CSV or JSON for an auditor.
 *
 * Exit codes are the contract with scripts: 0 intact / done, 1 broken (or
 * export failed part way), 2 could not even look (usage, open).
 */
#include "station/cmd_audit.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db/audit.h"
#include "station/err.h"

enum {
	CMD_AUDIT_OK = 0,
	CMD_AUDIT_FAIL = 1,
	CMD_AUDIT_USAGE = 2,
};

struct cmd_audit_verb {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *usage;
};

struct cmd_audit_format {
	const char *name;
	enum audit_format fmt;
};

static const struct cmd_audit_format cmd_audit_formats[] = {
	{ .name = "csv", .fmt = AUDIT_FMT_CSV },
	{ .name = "json", .fmt = AUDIT_FMT_JSON },
};

static int cmd_audit_verify(int argc, char **argv);
static int cmd_audit_export(int argc, char **argv);

static const struct cmd_audit_verb cmd_audit_verbs[] = {
	{ .name = "verify", .run = cmd_audit_verify,
	  .usage = "keyline audit verify --db FILE [--anchor HEAD-HASH]" },
	{ .name = "export", .run = cmd_audit_export,
	  .usage = "keyline audit export --db FILE --format csv|json "
	      "[--out FILE]" },
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static void
cmd_audit_usage(FILE *fp)
{
	size_t i;

	fputs("usage:\n", fp);
	for (i = 0; i < NELEM(cmd_audit_verbs); i++)
		fprintf(fp, "  %s\n", cmd_audit_verbs[i].usage);
}

/*
 * Only an existing regular file will do, said in plain words (SQLite would
 * say "unable to open database file"); it is opened read-only, so verify
 * and export work on an auditor's read-only copy and never change it.
 */
static int
cmd_audit_open(const char *path, struct audit **out)
{
	struct stat sb;
	int r;

	if (stat(path, &sb) != 0) {
		fprintf(stderr, "keyline audit: cannot open %s: %s\n", path,
		    strerror(errno));
		return KL_ERR_IO;
	}
	if (!S_ISREG(sb.st_mode)) {
		fprintf(stderr, "keyline audit: %s is not a regular file\n",
		    path);
		return KL_ERR_IO;
	}
	if ((r = audit_open_readonly(out, path)) != 0)
		fprintf(stderr, "keyline audit: cannot open %s: %s\n", path,
		    kl_strerror(r));
	return r;
}

/* getopt_long over the verb's own arguments (argv[0] is the verb). */
static void
cmd_audit_getopt_reset(void)
{
	/* glibc: 0 also resets getopt's internal state, so a second call
	 * in the same process (tests, a shell) starts clean. */
	optind = 0;
}

static int
cmd_audit_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "anchor", required_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct audit *a = NULL;
	const char *db = NULL, *anchor = NULL;
	char why[256] = "", head[AUDIT_HASH_HEX + 1];
	int64_t rows = 0, bad = 0, anchor_id = 0;
	int c, r, ret = CMD_AUDIT_USAGE;

	cmd_audit_getopt_reset();
	while ((c = getopt_long(argc, argv, "+d:a:h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			db = optarg;
			break;
		case 'a':
			anchor = optarg;
			break;
		case 'h':
			cmd_audit_usage(stdout);
			return CMD_AUDIT_OK;
		default:
			cmd_audit_usage(stderr);
			return CMD_AUDIT_USAGE;
		}
	}
	if (db == NULL || optind != argc) {
		cmd_audit_usage(stderr);
		return CMD_AUDIT_USAGE;
	}
	if (cmd_audit_open(db, &a) != 0)
		goto out;
	r = audit_verify_head(a, &rows, &bad, why, sizeof(why), head,
	    sizeof(head));
	if (r == KL_ERR_AUDIT_CHAIN) {
		fprintf(stderr, "audit chain broken at row %" PRId64 ": %s\n",
		    bad, why);
		ret = CMD_AUDIT_FAIL;
		goto out;
	}
	if (r != 0) {
		/* Could not read to the end: not "intact", but not proof of
		 * tampering either. */
		fprintf(stderr, "keyline audit: cannot verify %s: %s\n", db,
		    kl_strerror(r));
		goto out;
	}
	/* A head recorded earlier must still be in the chain: the chain
	 * alone cannot show rows cut from its end. */
	if (anchor != NULL) {
		r = audit_find_row_hash(a, anchor, &anchor_id);
		if (r == KL_ERR_INVALID) {
			fprintf(stderr, "keyline audit: --anchor: not a row hash "
			    "(64 lowercase hex digits)\n");
			goto out;
		}
		if (r != 0) {
			fprintf(stderr, "keyline audit: cannot verify %s: %s\n",
			    db, kl_strerror(r));
			goto out;
		}
		if (anchor_id == 0) {
			fprintf(stderr, "audit anchor not found: no row has hash "
			    "%s; rows after it were removed or the log was "
			    "rewritten\n", anchor);
			ret = CMD_AUDIT_FAIL;
			goto out;
		}
	}
	printf("audit chain ok: %" PRId64 " rows, head %s\n", rows, head);
	if (anchor != NULL)
		printf("anchor found at row %" PRId64 "\n", anchor_id);
	ret = fflush(stdout) == 0 ? CMD_AUDIT_OK : CMD_AUDIT_FAIL;
 out:
	audit_close(a);
	return ret;
}

static int
cmd_audit_export(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "format", required_argument, NULL, 'f' },
		{ "out", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const struct cmd_audit_format *fmt = NULL;
	struct audit *a = NULL;
	const char *db = NULL, *outpath = NULL;
	FILE *out = NULL;
	size_t i;
	int c, r, fd, ret = CMD_AUDIT_USAGE;

	cmd_audit_getopt_reset();
	while ((c = getopt_long(argc, argv, "+d:f:o:h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			db = optarg;
			break;
		case 'f':
			fmt = NULL;
			for (i = 0; i < NELEM(cmd_audit_formats); i++)
				if (strcmp(optarg, cmd_audit_formats[i].name) == 0)
					fmt = &cmd_audit_formats[i];
			if (fmt == NULL) {
				fprintf(stderr, "keyline audit: unknown format "
				    "\"%s\" (csv or json)\n", optarg);
				return CMD_AUDIT_USAGE;
			}
			break;
		case 'o':
			outpath = optarg;
			break;
		case 'h':
			cmd_audit_usage(stdout);
			return CMD_AUDIT_OK;
		default:
			cmd_audit_usage(stderr);
			return CMD_AUDIT_USAGE;
		}
	}
	if (db == NULL || fmt == NULL || optind != argc) {
		cmd_audit_usage(stderr);
		return CMD_AUDIT_USAGE;
	}
	if (cmd_audit_open(db, &a) != 0)
		goto out;
	/*
	 * O_EXCL: the file is always one we created, so removing it after a
	 * failed export can never delete an older export or, run as root, a
	 * device node.  To write elsewhere, leave out --out and redirect.
	 */
	if (outpath == NULL || strcmp(outpath, "-") == 0) {
		out = stdout;
		outpath = NULL;
	} else if ((fd = open(outpath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    0644)) < 0) {
		fprintf(stderr, "keyline audit: cannot create %s: %s%s\n",
		    outpath, strerror(errno), errno == EEXIST ?
		    " (will not overwrite)" : "");
		goto out;
	} else if ((out = fdopen(fd, "w")) == NULL) {
		fprintf(stderr, "keyline audit: cannot create %s: %s\n",
		    outpath, strerror(errno));
		close(fd);
		(void)unlink(outpath);
		goto out;
	}
	r = audit_export(a, out, fmt->fmt);
	if (out != stdout && fclose(out) != 0 && r == 0)
		r = KL_ERR_IO;
	out = NULL;
	if (r != 0) {
		fprintf(stderr, "keyline audit: export failed: %s\n",
		    kl_strerror(r));
		/* A partial export looks like a complete one to whoever
		 * opens it later. */
		if (outpath != NULL)
			(void)unlink(outpath);
		ret = CMD_AUDIT_FAIL;
		goto out;
	}
	ret = CMD_AUDIT_OK;
 out:
	if (out != NULL && out != stdout)
		fclose(out);
	audit_close(a);
	return ret;
}

int
cmd_audit(int argc, char **argv)
{
	size_t i;

	if (argc < 2 || argv == NULL || argv[1] == NULL) {
		cmd_audit_usage(stderr);
		return CMD_AUDIT_USAGE;
	}
	for (i = 0; i < NELEM(cmd_audit_verbs); i++)
		if (strcmp(argv[1], cmd_audit_verbs[i].name) == 0)
			return cmd_audit_verbs[i].run(argc - 1, argv + 1);
	fprintf(stderr, "keyline audit: unknown verb \"%s\"\n", argv[1]);
	cmd_audit_usage(stderr);
	return CMD_AUDIT_USAGE;
}
