/*
 * cmd_audit.c: "keyline audit verify" checks the hash chain of an audit
 * database and prints its head (the value worth writing down elsewhere);
 * "keyline audit export" writes every row as CSV or JSON for an auditor.
 * "keyline audit verify --plant" checks every station's chain in the plant
 * store (db/ship.h) and, with --db, that the local head is there.
 *
 * Exit codes are the contract with scripts: 0 intact / done, 1 broken (or
 * export failed part way), 2 could not even look (usage, open).
 */
#include "station/cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "db/audit.h"
#include "db/ship.h"
#include "common/err.h"

enum {
	CMD_AUDIT_OK = 0,
	CMD_AUDIT_FAIL = 1,
	CMD_AUDIT_USAGE = 2,
};

struct cmd_audit_verb {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *usage;	/* synopsis lines */
	const char *options;	/* one line per option */
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
	  .usage = "  keyline audit verify --db FILE [--anchor HEAD-HASH]\n"
	      "      [--checkpoint-cert FILE [--root FILE] "
	      "[--require-checkpoints]]\n"
	      "  keyline audit verify --plant CONNINFO [--station ID] "
	      "[--db FILE]\n"
	      "      [--password-file FILE]\n",
	  .options =
	      "  -d, --db FILE        the audit log (opened read-only)\n"
	      "  -a, --anchor HEAD-HASH\n"
	      "                       a head written down earlier must still "
	      "be a row\n"
	      "  -c, --checkpoint-cert FILE\n"
	      "                       check the signed checkpoints with this "
	      "certificate\n"
	      "  -r, --root FILE      which must chain to these roots (PEM)\n"
	      "  -R, --require-checkpoints\n"
	      "                       fail when the log holds no checkpoint\n"
	      "  -p, --plant CONNINFO every station's chain in the plant "
	      "store; with --db,\n"
	      "                       also that the local head is there\n"
	      "  -s, --station ID     with --plant: that station only\n"
	      "  -P, --password-file FILE\n"
	      "                       with --plant: the role's password "
	      "(mode 600)\n"
	      "  -h, --help           this text\n"
	      "  exit: 0 intact, 1 broken, 2 could not look (usage, open)\n" },
	{ .name = "export", .run = cmd_audit_export,
	  .usage = "  keyline audit export --db FILE --format csv|json "
	      "[--out FILE]\n",
	  .options =
	      "  -d, --db FILE        the audit log (opened read-only)\n"
	      "  -f, --format csv|json\n"
	      "                       every row: CSV with a header line, or a "
	      "JSON array\n"
	      "  -o, --out FILE       write to a new FILE (never overwritten; "
	      "default stdout)\n"
	      "  -h, --help           this text\n"
	      "  exit: 0 done, 1 export failed part way, 2 usage or open\n" },
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Every verb's synopsis; verb (NULL: all) adds the options. */
static void
cmd_audit_usage_of(FILE *fp, const struct cmd_audit_verb *verb)
{
	size_t i;

	fputs("usage:\n", fp);
	for (i = 0; i < NELEM(cmd_audit_verbs); i++)
		if (verb == NULL || verb == &cmd_audit_verbs[i])
			fputs(cmd_audit_verbs[i].usage, fp);
	for (i = 0; i < NELEM(cmd_audit_verbs); i++)
		if (verb == NULL || verb == &cmd_audit_verbs[i])
			fprintf(fp, "\n%s:\n%s",
			    verb == NULL ? cmd_audit_verbs[i].name : "options",
			    cmd_audit_verbs[i].options);
}

static void
cmd_audit_usage(FILE *fp)
{
	cmd_audit_usage_of(fp, NULL);
}

/* The verb running now, for its own --help (argv[0] is the verb). */
static const struct cmd_audit_verb *
cmd_audit_verb_named(const char *name)
{
	size_t i;

	for (i = 0; i < NELEM(cmd_audit_verbs); i++)
		if (strcmp(name, cmd_audit_verbs[i].name) == 0)
			return &cmd_audit_verbs[i];
	return NULL;
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

/*
 * The checkpoint certificate's key, after checking the certificate chains
 * to root (PEM, may hold several) when root is given.  NULL with the
 * reason on stderr.
 */
static EVP_PKEY *
cmd_audit_ckpt_key(const char *cert_path, const char *root)
{
	X509_STORE *store = NULL;
	X509_STORE_CTX *xs = NULL;
	EVP_PKEY *k = NULL;
	X509 *x = NULL;
	FILE *fp;

	if ((fp = fopen(cert_path, "r")) == NULL) {
		fprintf(stderr, "keyline audit: --checkpoint-cert: cannot open "
		    "%s: %s\n", cert_path, strerror(errno));
		return NULL;
	}
	x = PEM_read_X509(fp, NULL, NULL, NULL);
	fclose(fp);
	if (x == NULL) {
		fprintf(stderr, "keyline audit: --checkpoint-cert: %s is not a "
		    "PEM certificate\n", cert_path);
		goto out;
	}
	if (root != NULL) {
		if ((store = X509_STORE_new()) == NULL ||
		    X509_STORE_load_file(store, root) != 1) {
			fprintf(stderr, "keyline audit: --root: cannot load %s\n",
			    root);
			goto out;
		}
		if ((xs = X509_STORE_CTX_new()) == NULL ||
		    X509_STORE_CTX_init(xs, store, x, NULL) != 1)
			goto out;
		if (X509_verify_cert(xs) != 1) {
			fprintf(stderr, "audit checkpoint certificate %s does not "
			    "chain to %s: %s\n", cert_path, root,
			    X509_verify_cert_error_string(
			    X509_STORE_CTX_get_error(xs)));
			goto out;
		}
	}
	if ((k = X509_get_pubkey(x)) == NULL)
		fprintf(stderr, "keyline audit: --checkpoint-cert: no usable "
		    "key in %s\n", cert_path);
 out:
	ERR_clear_error();
	X509_STORE_CTX_free(xs);
	X509_STORE_free(store);
	X509_free(x);
	return k;
}

/* getopt_long over the verb's own arguments (argv[0] is the verb). */
static void
cmd_audit_getopt_reset(void)
{
	/* glibc: 0 also resets getopt's internal state, so a second call
	 * in the same process (tests, a shell) starts clean. */
	optind = 0;
}

static void
cmd_audit_plant_station(void *arg, const char *station, int64_t rows,
    const char *head)
{
	(void)arg;
	printf("station %s: %" PRId64 " rows, head %s\n", station, rows, head);
}

/* The local log's newest row: its id, station and row_hash. */
struct cmd_audit_head {
	int64_t id;
	char station[128];
	char hash[AUDIT_HASH_HEX + 1];
};

static int
cmd_audit_head_row(void *arg, const struct audit_row *row)
{
	struct cmd_audit_head *h = arg;

	h->id = row->id;
	snprintf(h->station, sizeof(h->station), "%s", row->station != NULL ?
	    row->station : "");
	snprintf(h->hash, sizeof(h->hash), "%s", row->row_hash != NULL ?
	    row->row_hash : "");
	return 0;
}

/*
 * --plant: every station's chain in the plant store (or station's), then
 * with db the local log: its own chain, and its head row in the plant
 * store under the same seq with the same row_hash.  Both chains verified
 * and one common row mean every row up to it is the same on both sides.
 */
static int
cmd_audit_verify_plant(const char *conninfo, const char *station,
    const char *db, const char *password_file)
{
	struct ship_verify_report rep;
	struct ship_reader *rd = NULL;
	struct audit *a = NULL;
	struct cmd_audit_head h;
	char why[600] = "", lwhy[256] = "", head[AUDIT_HASH_HEX + 1];
	char phash[AUDIT_HASH_HEX + 1];
	int64_t rows = 0, bad = 0, next = 0, last = 0;
	int r, found = 0, ret = CMD_AUDIT_USAGE;

	/* The local file first: a missing one costs the server nothing. */
	if (db != NULL && cmd_audit_open(db, &a) != 0)
		goto out;
	if ((r = ship_reader_open(&rd, conninfo, password_file, why,
	    sizeof(why))) != 0) {
		fprintf(stderr, "keyline audit: %s\n", why);
		goto out;
	}
	r = ship_reader_verify(rd, station, cmd_audit_plant_station, NULL,
	    &rep);
	if (r == KL_ERR_AUDIT_CHAIN) {
		fprintf(stderr, "plant audit chain broken: station %s row %"
		    PRId64 ": %s\n", rep.bad_station, rep.bad_seq, rep.why);
		ret = CMD_AUDIT_FAIL;
		goto out;
	}
	if (r == KL_ERR_NOT_FOUND) {
		fprintf(stderr, "plant audit: %s\n", rep.why);
		ret = CMD_AUDIT_FAIL;
		goto out;
	}
	if (r != 0) {
		fprintf(stderr, "keyline audit: cannot verify the plant store: "
		    "%s\n", rep.why[0] ? rep.why : kl_strerror(r));
		goto out;
	}
	printf("plant audit chains ok: %" PRId64 " stations, %" PRId64
	    " rows\n", rep.stations, rep.rows);
	if (a != NULL) {
		r = audit_verify_head(a, &rows, &bad, lwhy, sizeof(lwhy), head,
		    sizeof(head));
		if (r == KL_ERR_AUDIT_CHAIN) {
			fprintf(stderr, "audit chain broken at row %" PRId64
			    ": %s\n", bad, lwhy);
			ret = CMD_AUDIT_FAIL;
			goto out;
		}
		if (r != 0) {
			fprintf(stderr, "keyline audit: cannot verify %s: %s\n",
			    db, kl_strerror(r));
			goto out;
		}
		printf("audit chain ok: %" PRId64 " rows, head %s\n", rows,
		    head);
		if (rows == 0) {
			printf("the local log is empty: nothing to find in the "
			    "plant store\n");
			ret = fflush(stdout) == 0 ? CMD_AUDIT_OK : CMD_AUDIT_FAIL;
			goto out;
		}
		memset(&h, 0, sizeof(h));
		if ((r = audit_events_since(a, rows - 1, 1, cmd_audit_head_row,
		    &h, &next, NULL)) != 0 || h.id != rows) {
			fprintf(stderr, "keyline audit: cannot read the head of "
			    "%s: %s\n", db, kl_strerror(r));
			goto out;
		}
		if (station != NULL && strcmp(station, h.station) != 0) {
			fprintf(stderr, "keyline audit: the head of %s is station "
			    "%s's, not %s\n", db, h.station, station);
			ret = CMD_AUDIT_FAIL;
			goto out;
		}
		if ((r = ship_reader_row(rd, h.station, h.id, &found, phash,
		    &last, why, sizeof(why))) != 0) {
			fprintf(stderr, "keyline audit: cannot read the plant "
			    "store: %s\n", why);
			goto out;
		}
		if (!found) {
			fprintf(stderr, "local head not in the plant store: "
			    "station %s row %" PRId64 " (%s); the plant store "
			    "holds rows 1..%" PRId64 " of it%s\n", h.station,
			    h.id, h.hash, last, last < h.id ?
			    ": not shipped yet, or lost" : "");
			ret = CMD_AUDIT_FAIL;
			goto out;
		}
		if (strcmp(phash, h.hash) != 0) {
			fprintf(stderr, "local head differs from the plant "
			    "store: station %s row %" PRId64 " is %s locally, "
			    "%s in the plant store: one of them was "
			    "rewritten\n", h.station, h.id, h.hash, phash);
			ret = CMD_AUDIT_FAIL;
			goto out;
		}
		printf("local head in the plant store: station %s row %" PRId64
		    "%s\n", h.station, h.id, last > h.id ?
		    " (the plant store holds later rows of it)" : "");
	}
	ret = fflush(stdout) == 0 ? CMD_AUDIT_OK : CMD_AUDIT_FAIL;
out:
	ship_reader_close(rd);
	audit_close(a);
	return ret;
}

static int
cmd_audit_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "anchor", required_argument, NULL, 'a' },
		{ "checkpoint-cert", required_argument, NULL, 'c' },
		{ "root", required_argument, NULL, 'r' },
		{ "require-checkpoints", no_argument, NULL, 'R' },
		{ "plant", required_argument, NULL, 'p' },
		{ "station", required_argument, NULL, 's' },
		{ "password-file", required_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct audit *a = NULL;
	struct audit_ckpt_report rep;
	EVP_PKEY *ckpt_key = NULL;
	const char *db = NULL, *anchor = NULL, *ckpt_cert = NULL, *root = NULL;
	const char *plant = NULL, *station = NULL, *pwfile = NULL;
	int require_ckpt = 0;
	char why[256] = "", head[AUDIT_HASH_HEX + 1];
	int64_t rows = 0, bad = 0, anchor_id = 0;
	int c, r, ret = CMD_AUDIT_USAGE;

	cmd_audit_getopt_reset();
	while ((c = getopt_long(argc, argv, "+d:a:c:r:Rp:s:P:h", opts,
	    NULL)) != -1) {
		switch (c) {
		case 'p':
			plant = optarg;
			break;
		case 's':
			station = optarg;
			break;
		case 'P':
			pwfile = optarg;
			break;
		case 'd':
			db = optarg;
			break;
		case 'a':
			anchor = optarg;
			break;
		case 'c':
			ckpt_cert = optarg;
			break;
		case 'r':
			root = optarg;
			break;
		case 'R':
			require_ckpt = 1;
			break;
		case 'h':
			cmd_audit_usage_of(stdout,
			    cmd_audit_verb_named(argv[0]));
			return CMD_AUDIT_OK;
		default:
			cmd_audit_usage(stderr);
			return CMD_AUDIT_USAGE;
		}
	}
	/* --plant has options of its own; the local ones would be checked
	 * on one side only. */
	if (plant != NULL) {
		if (optind != argc || anchor != NULL || ckpt_cert != NULL ||
		    root != NULL || require_ckpt) {
			cmd_audit_usage(stderr);
			return CMD_AUDIT_USAGE;
		}
		return cmd_audit_verify_plant(plant, station, db, pwfile);
	}
	if (station != NULL || pwfile != NULL) {
		cmd_audit_usage(stderr);
		return CMD_AUDIT_USAGE;
	}
	/* --root and --require-checkpoints are about checkpoints: without
	 * the certificate they would silently check nothing. */
	if (db == NULL || optind != argc ||
	    ((root != NULL || require_ckpt) && ckpt_cert == NULL)) {
		cmd_audit_usage(stderr);
		return CMD_AUDIT_USAGE;
	}
	if (ckpt_cert != NULL &&
	    (ckpt_key = cmd_audit_ckpt_key(ckpt_cert, root)) == NULL)
		goto out;
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
	/* The chain ties every row to the ones after it; a checkpoint ties
	 * a row to a signature only the station token can make. */
	memset(&rep, 0, sizeof(rep));
	if (ckpt_key != NULL) {
		r = audit_verify_checkpoints(a, ckpt_key, &rep);
		if (r == KL_ERR_AUDIT_CHAIN) {
			fprintf(stderr, "audit checkpoint %" PRId64 " fails: %s\n",
			    rep.bad_id, rep.why);
			ret = CMD_AUDIT_FAIL;
			goto out;
		}
		if (r != 0) {
			fprintf(stderr, "keyline audit: cannot verify checkpoints "
			    "in %s: %s\n", db, kl_strerror(r));
			goto out;
		}
		if (rep.count == 0) {
			fprintf(stderr, "WARNING: NO CHECKPOINTS in %s%s: nothing "
			    "signed vouches for any row, and the whole log may "
			    "have been rewritten\n", db, rep.table ? "" :
			    " (no checkpoints table)");
			if (require_ckpt) {
				fprintf(stderr, "audit checkpoints required "
				    "(--require-checkpoints)\n");
				ret = CMD_AUDIT_FAIL;
				goto out;
			}
		}
	}
	printf("audit chain ok: %" PRId64 " rows, head %s\n", rows, head);
	if (anchor != NULL)
		printf("anchor found at row %" PRId64 "\n", anchor_id);
	if (ckpt_key != NULL && rep.count == 0)
		printf("no checkpoints\n");
	else if (ckpt_key != NULL) {
		printf("checkpoints ok: %" PRId64 " signed, newest %" PRId64
		    " (%s, %s, station %s) at row %" PRId64 "\n", rep.count,
		    rep.newest_id, rep.newest_reason, rep.newest_time,
		    rep.newest_station, rep.newest_row);
		if (rep.newest_row < rows)
			printf("rows %" PRId64 "..%" PRId64 " are after the "
			    "newest checkpoint: only the chain vouches for "
			    "them\n", rep.newest_row + 1, rows);
	}
	ret = fflush(stdout) == 0 ? CMD_AUDIT_OK : CMD_AUDIT_FAIL;
 out:
	EVP_PKEY_free(ckpt_key);
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
			cmd_audit_usage_of(stdout,
			    cmd_audit_verb_named(argv[0]));
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
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		cmd_audit_usage(stdout);
		return CMD_AUDIT_OK;
	}
	for (i = 0; i < NELEM(cmd_audit_verbs); i++)
		if (strcmp(argv[1], cmd_audit_verbs[i].name) == 0)
			return cmd_audit_verbs[i].run(argc - 1, argv + 1);
	fprintf(stderr, "keyline audit: unknown verb \"%s\"\n", argv[1]);
	cmd_audit_usage(stderr);
	return CMD_AUDIT_USAGE;
}
