/*
 * test_agent.c: hostile requests against the real board agent.
 *
 * One board on the virtual jig (real keyline-agent, real SoftHSM token,
 * real pty); the station side is the real link layer.  Every request here
 * is one a broken or malicious station could send.  The agent must answer
 * each with an error (never crash, never hang), stay alive for the next
 * HELLO, and write nothing outside its import directory.  A positive
 * control (a real PUT_FILE + COMMIT + FILE_HASH, a real KEYGEN + SIGN)
 * shows the refusals are specific, not that everything fails.
 *
 * The board tree (board.conf, rootfs, everything but the token and the
 * import directory) is listed with find(1) before the first hostile
 * request and must be the same, name for name, size for size, mtime for
 * mtime, at the end.
 *
 * Board 1 is a virtual board as keyline-jig writes it (allow_reprovision =
 * yes), with a few test ids and labels added to its allow lists; board 2
 * keeps the production defaults the jig writes but has re-provisioning
 * off, so the "never destroys what it did not make" rule shows there.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/buf.h"
#include "common/err.h"
#include "station/link/frame.h"
#include "station/link/link.h"
#include "station/link/serial.h"
#include "station/link/proto.h"
#include "tests/unit/testutil.h"

#define CALL_MS 5000		/* per attempt; the agent answers at once */
#define KEYGEN_MS 60000

static char dir[256];
static char top[4096];
static char serial[64];
static char board[512];		/* DIR/boards/<serial> */
static char import[600];	/* its rootfs/var/sota/import */
static char serial2[64], board2[512], import2[600];	/* board 2 */
static int etc_x_existed;	/* /etc/x before we started (we may be root) */
static struct link *lk;		/* the board being talked to: lk1 or lk2 */
static struct link *lk1, *lk2;
static struct buf req, resp;
static char msg[1024];

/* One exchange; req as built by the caller. */
static int
call(uint8_t type, int timeout_ms)
{
	msg[0] = '\0';
	return link_call(lk, type, &req, &resp, timeout_ms, msg, sizeof(msg));
}

static int
hello(uint32_t vmin, uint32_t vmax)
{
	buf_reset(&req);
	if (proto_put_u32(&req, PT_VERSION_MIN, vmin) != 0 ||
	    proto_put_u32(&req, PT_VERSION_MAX, vmax) != 0)
		return KL_ERR_INTERNAL;
	return call(PROTO_HELLO, CALL_MS);
}

/* The agent is alive and answers a proper HELLO with its serial.  Also
 * starts a new session: the agent discards anything staged. */
static void
assert_alive(void)
{
	char got[PROTO_MAX_STR + 1];
	uint32_t v;

	/* A version 1 session: the requests below are version 1's. */
	link_set_compact(lk, 0);
	assert_int_equal(hello(PROTO_VERSION_MIN, 1), 0);
	assert_int_equal(proto_get_u32(resp.data, resp.len, PT_VERSION, &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(proto_get_str(resp.data, resp.len, PT_SERIAL, got,
	    sizeof(got)), 0);
	assert_string_equal(got, lk == lk2 ? serial2 : serial);
}

/* r is an error answer to type whose words contain each of want[]. */
static void
assert_refused(int r, uint8_t type, const char *const *want, size_t nwant)
{
	size_t i;

	if (r != KL_ERR_REMOTE)
		fail_msg("%s: expected an error answer, got %s (%s)",
		    proto_type_name(type), kl_errname(r), msg);
	for (i = 0; i < nwant; i++)
		if (strstr(msg, want[i]) == NULL)
			fail_msg("%s: answer '%s' lacks '%s'",
			    proto_type_name(type), msg, want[i]);
}

/* Send req as type: it must be refused with all the words given. */
#define REFUSED(type, ms, ...) do {					\
	static const char *const w_[] = { __VA_ARGS__ };		\
	int r_ = call((type), (ms));					\
	assert_refused(r_, (type), w_, sizeof(w_) / sizeof(w_[0]));	\
} while (0)

/* The same for an answer already received into r and msg. */
#define REFUSED_R(r, type, ...) do {					\
	static const char *const w_[] = { __VA_ARGS__ };		\
	assert_refused((r), (type), w_, sizeof(w_) / sizeof(w_[0]));	\
} while (0)

static void
put_file_req(const void *name, size_t name_len, uint32_t mode,
    const void *data, size_t len)
{
	buf_reset(&req);
	assert_int_equal(proto_put_bytes(&req, PT_FILE_NAME, name, name_len),
	    0);
	assert_int_equal(proto_put_u32(&req, PT_FILE_MODE, mode), 0);
	assert_int_equal(proto_put_bytes(&req, PT_FILE_DATA, data, len), 0);
}

static void
name_req(const char *name)
{
	buf_reset(&req);
	assert_int_equal(proto_put_str(&req, PT_FILE_NAME, name), 0);
}

/* Entries of the import dir, hidden ones (staged temps) included. */
static int
import_count(const char *except)
{
	DIR *d = opendir(import);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (except != NULL && strcmp(e->d_name, except) == 0)
			continue;
		print_message("import dir holds: %s\n", e->d_name);
		n++;
	}
	closedir(d);
	return n;
}

static int
exists(const char *fmt, ...)
{
	char path[1024];
	struct stat st;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	return lstat(path, &st) == 0;
}

/* Nothing named like the hostile names anywhere the agent could reach. */
static void
assert_no_escape(void)
{
	static const char *const where[] = { "", "/rootfs", "/rootfs/var",
		"/rootfs/var/sota", "/rootfs/var/sota/import" };
	static const char *const names[] = { "evil", ".evil.keyline-tmp",
		"a", "etc", "x", "x.keyline-tmp" };
	size_t i, j;

	for (i = 0; i < sizeof(where) / sizeof(where[0]); i++)
		for (j = 0; j < sizeof(names) / sizeof(names[0]); j++)
			if (exists("%s%s/%s", board, where[i], names[j]))
				fail_msg("%s%s/%s exists", board, where[i],
				    names[j]);
	assert_false(exists("%s/boards/evil", dir));
	assert_false(exists("%s/evil", dir));
	if (!etc_x_existed) {
		assert_false(exists("/etc/x"));
		assert_false(exists("/etc/x.keyline-tmp"));
	}
}

/* The board tree outside the token and the import dir, as find sees it. */
static int
snapshot(const char *out)
{
	return tu_sh("find '%s' -path '%s/tokens' -prune -o -path '%s' -prune "
	    "-o -printf '%%p %%y %%s %%m %%T@\\n' | sort >'%s/%s'", board,
	    board, import, dir, out);
}

static int teardown(void **state);

static int
setup_failed(const char *why)
{
	fprintf(stderr, "test_agent setup: %s\n", why);
	tu_sh("cat '%s/setup.log' '%s/jig.log' >&2 2>/dev/null", dir, dir);
	teardown(NULL);
	return -1;
}

/* Talk to board 1 or board 2 from now on. */
static void
use_board(int n)
{
	lk = n == 2 ? lk2 : lk1;
}

static int
setup(void **state)
{
	struct link_params lp = { .baud = 0 };
	const char *bin = getenv("KEYLINE_BIN");
	char path[512];
	FILE *f;
	int ok;

	(void)state;
	if (getcwd(top, sizeof(top)) == NULL ||
	    tu_tmpdir(dir, sizeof(dir), "test_agent") != 0)
		return -1;
	etc_x_existed = exists("/etc/x");
	buf_init(&req, FRAME_MAX_PAYLOAD);
	buf_init(&resp, FRAME_MAX_PAYLOAD);
	/* Two boards, their board.conf changed before the agents start. */
	if (tu_sh("cd '%s' && KEYLINE_BIN='%s' bash -c '. scripts/line.sh "
	    "&& line_setup %s 2' >%s/setup.log 2>&1", top,
	    bin != NULL ? bin : "build/san/bin", dir, dir) != 0)
		return setup_failed("the virtual boards were not made");
	snprintf(path, sizeof(path), "%s/boards.list", dir);
	if ((f = fopen(path, "r")) == NULL)
		return setup_failed("no boards.list");
	ok = fscanf(f, "%63s %63s", serial, serial2) == 2;
	fclose(f);
	if (!ok)
		return setup_failed("boards.list lacks two boards");
	snprintf(board, sizeof(board), "%s/boards/%s", dir, serial);
	snprintf(import, sizeof(import), "%s/rootfs/var/sota/import", board);
	snprintf(board2, sizeof(board2), "%s/boards/%s", dir, serial2);
	snprintf(import2, sizeof(import2), "%s/rootfs/var/sota/import",
	    board2);
	/* keyline-jig init writes the allow lists keyline's station needs
	 * and lets a virtual board be provisioned again. */
	if (tu_sh("grep -qx 'allow_key_ids = 01,02,03' '%s/board.conf' && "
	    "grep -qx 'allow_labels = keyline,uptane' '%s/board.conf' && "
	    "grep -qx 'allow_files = client.pem,root.crt,gateway.url' "
	    "'%s/board.conf' && grep -qx 'allow_reprovision = yes' "
	    "'%s/board.conf'", board, board, board, board) != 0)
		return setup_failed("keyline-jig init wrote no allow_* keys");
	if (tu_sh("sed -i 's/^allow_key_ids = .*/allow_key_ids = "
	    "01,02,03,7a,7c,7e/; s/^allow_labels = .*/allow_labels = "
	    "keyline,uptane,test-agent,tls/' '%s/board.conf' && "
	    "sed -i 's/^allow_reprovision = .*/allow_reprovision = no/' "
	    "'%s/board.conf'", board, board2) != 0)
		return setup_failed("cannot edit board.conf");
	if (tu_sh("cd '%s' && KEYLINE_BIN='%s' bash -c '. scripts/line.sh "
	    "&& line_start %s' >>%s/setup.log 2>&1", top,
	    bin != NULL ? bin : "build/san/bin", dir, dir) != 0)
		return setup_failed("the virtual jig did not start");

	snprintf(path, sizeof(path), "%s/slots/2", dir);
	if (link_open(&lk2, &serial_link_ops, path, &lp) != 0)
		return setup_failed("cannot open slot 2");
	snprintf(path, sizeof(path), "%s/slots/1", dir);
	if (link_open(&lk1, &serial_link_ops, path, &lp) != 0)
		return setup_failed("cannot open slot 1");
	/* The agents may still be opening their tokens: the first HELLO
	 * gets link_call's retries. */
	use_board(2);
	if (hello(PROTO_VERSION_MIN, PROTO_VERSION_MAX) != 0)
		return setup_failed("agent 2 does not answer HELLO");
	use_board(1);
	if (hello(PROTO_VERSION_MIN, PROTO_VERSION_MAX) != 0)
		return setup_failed("the agent does not answer HELLO");
	if (snapshot("tree.before") != 0)
		return setup_failed("cannot list the board tree");
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	link_close(lk1);
	link_close(lk2);
	lk = lk1 = lk2 = NULL;
	buf_free(&req);
	buf_free(&resp);
	/* Also called by setup_failed(); cmocka may call it again. */
	if (dir[0] == '\0')
		return 0;
	tu_line_cleanup(top, dir);
	dir[0] = '\0';
	return 0;
}

static void
test_put_file_bad_names(void **state)
{
	static const char *const bad[] = { "../evil", "a/b", "/etc/x",
		".hidden", "..", ".", "", "evil name", "evil\x01", "evil\t",
		"evil\x7f", "ev\xc3\xa9il", "import/../evil", "\\evil" };
	char long_name[PROTO_MAX_STR + 2];
	static const uint8_t nul_name[] = { 'e', 'v', 'i', 'l', 0, 'x' };
	const char data[] = "evil\n";
	size_t i;

	(void)state;
	assert_alive();
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		put_file_req(bad[i], strlen(bad[i]), 0644, data, strlen(data));
		REFUSED(PROTO_PUT_FILE, CALL_MS, "not a plain name", "(path)");
	}
	/* 65 characters: one over the limit; 64 is the positive twin. */
	memset(long_name, 'e', sizeof(long_name));
	put_file_req(long_name, 65, 0644, data, strlen(data));
	REFUSED(PROTO_PUT_FILE, CALL_MS, "not a plain name", "(path)");
	/* Longer than any string field at all. */
	put_file_req(long_name, PROTO_MAX_STR + 1, 0644, data, strlen(data));
	REFUSED(PROTO_PUT_FILE, CALL_MS, "not a plain name", "(path)");
	/* A NUL inside: "evil" must not be what reaches openat(). */
	put_file_req(nul_name, sizeof(nul_name), 0644, data, strlen(data));
	REFUSED(PROTO_PUT_FILE, CALL_MS, "not a plain name", "(path)");
	/* None of it is staged: COMMIT has nothing to do. */
	buf_reset(&req);
	REFUSED(PROTO_COMMIT, CALL_MS, "nothing staged");
	assert_int_equal(import_count(NULL), 0);
	assert_no_escape();

	/* 64 characters is a plain name, refused only because the board
	 * does not list it; so is pkey.pem (the key stays in the token). */
	put_file_req(long_name, 64, 0644, data, strlen(data));
	REFUSED(PROTO_PUT_FILE, CALL_MS, "not in this board's allow_files",
	    "(path)");
	put_file_req("pkey.pem", 8, 0600, data, strlen(data));
	REFUSED(PROTO_PUT_FILE, CALL_MS, "file name 'pkey.pem' refused",
	    "not in this board's allow_files", "(path)");
	buf_reset(&req);
	REFUSED(PROTO_COMMIT, CALL_MS, "nothing staged");
	assert_int_equal(import_count(NULL), 0);
	assert_false(exists("%s/pkey.pem", import));
	/* A listed name is staged, then discarded. */
	put_file_req("gateway.url", 11, 0644, data, strlen(data));
	assert_int_equal(call(PROTO_PUT_FILE, CALL_MS), 0);
	buf_reset(&req);
	assert_int_equal(call(PROTO_ABORT, CALL_MS), 0);
	assert_int_equal(import_count(NULL), 0);
	assert_alive();
}

static void
test_put_file_too_big(void **state)
{
	static uint8_t data[PROTO_MAX_FILE + 1];
	size_t n = sizeof(data);

	(void)state;
	memset(data, 'A', n);
	assert_alive();
	/* Fits a frame easily: the agent's own limit must refuse it. */
	put_file_req("client.pem", 10, 0644, data, n);
	assert_true(req.len < FRAME_MAX_PAYLOAD);
	REFUSED(PROTO_PUT_FILE, CALL_MS, "larger than 32768 bytes",
	    "(too_big)");
	buf_reset(&req);
	REFUSED(PROTO_COMMIT, CALL_MS, "nothing staged");
	assert_int_equal(import_count(NULL), 0);
	assert_alive();
}

static void
test_file_hash_outside(void **state)
{
	static const char *const bad[] = { "../../board.conf",
		"../../../../board.conf", "/etc/passwd", "..", "." };
	char link_path[1024], target[1024];
	size_t i;
	int r;

	(void)state;
	assert_alive();
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		name_req(bad[i]);
		REFUSED(PROTO_FILE_HASH, CALL_MS, "not a plain name", "(path)");
		/* No hash, no size of anything. */
		assert_null(strstr(msg, "bytes"));
	}
	/* A symlink planted in the import dir is not followed to the PIN. */
	snprintf(link_path, sizeof(link_path), "%s/gateway.url", import);
	snprintf(target, sizeof(target), "%s/board.conf", board);
	assert_int_equal(symlink(target, link_path), 0);
	name_req("gateway.url");
	r = call(PROTO_FILE_HASH, CALL_MS);
	assert_int_equal(unlink(link_path), 0);
	REFUSED_R(r, PROTO_FILE_HASH, "(path)");
	/* Nor is a FIFO read (it would block the agent for good). */
	snprintf(link_path, sizeof(link_path), "%s/root.crt", import);
	assert_int_equal(mkfifo(link_path, 0644), 0);
	name_req("root.crt");
	r = call(PROTO_FILE_HASH, CALL_MS);
	assert_int_equal(unlink(link_path), 0);
	REFUSED_R(r, PROTO_FILE_HASH, "not a regular file", "(path)");
	/* A file that is not there is "not found", not a path refusal. */
	name_req("client.pem");
	REFUSED(PROTO_FILE_HASH, CALL_MS, "(not_found)");
	/* A plain name the board does not list is not even looked at. */
	name_req("absent.crt");
	REFUSED(PROTO_FILE_HASH, CALL_MS, "not in this board's allow_files",
	    "(path)");
	assert_alive();
}

static void
test_commit_nothing_staged(void **state)
{
	(void)state;
	assert_alive();
	buf_reset(&req);
	REFUSED(PROTO_COMMIT, CALL_MS, "nothing staged", "(not_found)");
	assert_alive();
}

static void
test_keygen_refused(void **state)
{
	static const uint8_t id17[17] = { 0x55 };

	(void)state;
	assert_alive();
	buf_reset(&req);
	assert_int_equal(proto_put_str(&req, PT_KEY_TYPE, "dsa-512"), 0);
	assert_int_equal(proto_put_bytes(&req, PT_KEY_ID, "\x55", 1), 0);
	assert_int_equal(proto_put_str(&req, PT_KEY_LABEL, "evil"), 0);
	REFUSED(PROTO_KEYGEN, KEYGEN_MS, "key type 'dsa-512' not supported",
	    "(unsupported)");

	buf_reset(&req);
	assert_int_equal(proto_put_str(&req, PT_KEY_TYPE, "ec-p256"), 0);
	assert_int_equal(proto_put_bytes(&req, PT_KEY_ID, id17, sizeof(id17)),
	    0);
	assert_int_equal(proto_put_str(&req, PT_KEY_LABEL, "evil"), 0);
	REFUSED(PROTO_KEYGEN, KEYGEN_MS, "key id longer than 16 bytes",
	    "(too_big)");

	/* An empty key id is no key id. */
	buf_reset(&req);
	assert_int_equal(proto_put_str(&req, PT_KEY_TYPE, "ec-p256"), 0);
	assert_int_equal(proto_put_bytes(&req, PT_KEY_ID, "", 0), 0);
	assert_int_equal(proto_put_str(&req, PT_KEY_LABEL, "evil"), 0);
	REFUSED(PROTO_KEYGEN, KEYGEN_MS, "key id missing", "(invalid)");
	assert_alive();
}

static void
sign_req(const void *id, size_t id_len, size_t ch_len)
{
	uint8_t ch[PROTO_MAX_CHALLENGE + 1];

	memset(ch, 0xc5, sizeof(ch));
	buf_reset(&req);
	assert_int_equal(proto_put_bytes(&req, PT_KEY_ID, id, id_len), 0);
	assert_int_equal(proto_put_bytes(&req, PT_CHALLENGE, ch, ch_len), 0);
}

/* Put the key made at id in place: a key commits only with a
 * certificate (any will do for the agent; the fleet root's here). */
static void
commit_key(const void *id, size_t id_len)
{
	char path[700];
	unsigned char *der = NULL;
	FILE *f;
	X509 *x;
	int n;

	snprintf(path, sizeof(path), "%s/ca/fleet-root.pem", dir);
	assert_non_null(f = fopen(path, "r"));
	assert_non_null(x = PEM_read_X509(f, NULL, NULL, NULL));
	fclose(f);
	assert_true((n = i2d_X509(x, &der)) > 0);
	buf_reset(&req);
	assert_int_equal(proto_put_bytes(&req, PT_KEY_ID, id, id_len), 0);
	assert_int_equal(proto_put_str(&req, PT_KEY_LABEL, "keyline"), 0);
	assert_int_equal(proto_put_bytes(&req, PT_CERT, der, (size_t)n), 0);
	assert_int_equal(call(PROTO_PUT_CERT, CALL_MS), 0);
	buf_reset(&req);
	assert_int_equal(call(PROTO_COMMIT, CALL_MS), 0);
	OPENSSL_free(der);
	X509_free(x);
}

static void
test_sign_refused(void **state)
{
	(void)state;
	assert_alive();
	/* A real key, so the refusals below are about the request only. */
	buf_reset(&req);
	assert_int_equal(proto_put_str(&req, PT_KEY_TYPE, "ec-p256"), 0);
	assert_int_equal(proto_put_bytes(&req, PT_KEY_ID, "\x7a", 1), 0);
	assert_int_equal(proto_put_str(&req, PT_KEY_LABEL, "test-agent"), 0);
	assert_int_equal(call(PROTO_KEYGEN, KEYGEN_MS), 0);
	/* Staged keys do not sign: the proof of possession is for the key
	 * in place. */
	sign_req("\x7a", 1, 32);
	REFUSED(PROTO_SIGN, KEYGEN_MS, "signing failed");
	commit_key("\x7c", 1);

	sign_req("\x7a", 1, PROTO_MAX_CHALLENGE + 1);
	REFUSED(PROTO_SIGN, KEYGEN_MS, "challenge longer than 64 bytes",
	    "(too_big)");
	sign_req("\x7b\x7b", 2, 32);
	REFUSED(PROTO_SIGN, KEYGEN_MS, "key id 7b7b refused",
	    "not in this board's allow_key_ids");
	sign_req("\x7a", 1, 0);
	REFUSED(PROTO_SIGN, KEYGEN_MS, "challenge missing", "(invalid)");

	/* Positive twin: the real key, a full 64-byte challenge. */
	sign_req("\x7a", 1, PROTO_MAX_CHALLENGE);
	assert_int_equal(call(PROTO_SIGN, KEYGEN_MS), 0);
	assert_alive();
}

static void
test_malformed_tlv(void **state)
{
	/* FILE_NAME "evil", then a FILE_DATA field claiming 16 bytes of 3. */
	static const uint8_t bad[] = { PT_FILE_NAME, 0, 0, 0, 4, 'e', 'v',
		'i', 'l', PT_FILE_DATA, 0, 0, 0, 16, 'a', 'b', 'c' };
	/* A field header cut short. */
	static const uint8_t cut[] = { PT_VERSION_MIN, 0, 0 };
	/* A length near 4 GiB: an overflow bait for pointer arithmetic. */
	static const uint8_t huge[] = { PT_FILE_NAME, 0xff, 0xff, 0xff, 0xfb,
		'e', 'v', 'i', 'l' };

	(void)state;
	assert_alive();
	buf_reset(&req);
	assert_int_equal(buf_put(&req, bad, sizeof(bad)), 0);
	REFUSED(PROTO_PUT_FILE, CALL_MS, "malformed", "(protocol)");
	buf_reset(&req);
	assert_int_equal(buf_put(&req, cut, sizeof(cut)), 0);
	REFUSED(PROTO_HELLO, CALL_MS, "malformed", "(protocol)");
	buf_reset(&req);
	assert_int_equal(buf_put(&req, huge, sizeof(huge)), 0);
	REFUSED(PROTO_FILE_HASH, CALL_MS, "malformed", "(protocol)");
	buf_reset(&req);
	REFUSED(PROTO_COMMIT, CALL_MS, "nothing staged");
	assert_int_equal(import_count(NULL), 0);
	assert_alive();
}

static void
test_unknown_type(void **state)
{
	(void)state;
	assert_alive();
	buf_reset(&req);
	REFUSED(0x55, CALL_MS, "unknown message type 0x55", "(unsupported)");
	REFUSED(0x00, CALL_MS, "unknown message type 0x00", "(unsupported)");
	REFUSED(0xff, CALL_MS, "unknown message type 0xff", "(unsupported)");
	assert_alive();
}

static void
test_hello_version(void **state)
{
	uint32_t v = 0;

	(void)state;
	assert_alive();
	assert_int_equal(hello(7, 9), KL_ERR_REMOTE);
	assert_non_null(strstr(msg, "no common protocol version"));
	assert_non_null(strstr(msg, "station 7..9"));
	assert_non_null(strstr(msg, "(version)"));
	/* An inverted range meets nothing either. */
	assert_int_equal(hello(1, 0), KL_ERR_REMOTE);
	assert_non_null(strstr(msg, "(version)"));
	/* A range that covers both is agreed on the board's highest. */
	assert_int_equal(hello(0, 9), 0);
	assert_int_equal(proto_get_u32(resp.data, resp.len, PT_VERSION, &v),
	    0);
	assert_int_equal(v, PROTO_VERSION_MAX);
	assert_alive();
}

/* A version 2 session: compact fields from here on (until assert_alive). */
static void
hello_v2(void)
{
	uint32_t v;

	link_set_compact(lk, 0);
	assert_int_equal(hello(1, PROTO_VERSION_MAX), 0);
	assert_int_equal(proto_get_u32(resp.data, resp.len, PT_VERSION, &v), 0);
	assert_int_equal(v, 2);
	link_set_compact(lk, 1);
}

/*
 * Version 2's new fields from a hostile station: PUT_FILE's second file
 * and FILE_DER, and the certificate file COMMIT stages, are held to
 * allow_files and to one DER SEQUENCE.
 */
static void
test_v2_refusals(void **state)
{
	static const uint8_t der[] = { 0x30, 0x03, 0x02, 0x01, 0x05 };
	static const uint8_t notder[] = { 0x30, 0x05, 0x02, 0x01, 0x05 };
	char path[1024];

	(void)state;
	hello_v2();
	/* A second file in one PUT_FILE is checked like the first. */
	buf_reset(&req);
	assert_int_equal(proto_put_str(&req, PT_FILE_NAME, "root.crt"), 0);
	assert_int_equal(proto_put_bytes(&req, PT_FILE_DATA, "x", 1), 0);
	assert_int_equal(proto_put_str(&req, PT_FILE_NAME, "pkey.pem"), 0);
	assert_int_equal(proto_put_bytes(&req, PT_FILE_DATA, "x", 1), 0);
	REFUSED(PROTO_PUT_FILE, CALL_MS, "'pkey.pem' refused",
	    "allow_files", "(path)");
	snprintf(path, sizeof(path), "%s/pkey.pem", import);
	assert_int_not_equal(access(path, F_OK), 0);
	/* FILE_DER must be one DER SEQUENCE, whole. */
	buf_reset(&req);
	assert_int_equal(proto_put_str(&req, PT_FILE_NAME, "root.crt"), 0);
	assert_int_equal(proto_put_bytes(&req, PT_FILE_DER, notder,
	    sizeof(notder)), 0);
	REFUSED(PROTO_PUT_FILE, CALL_MS, "not one DER SEQUENCE", "(invalid)");
	buf_reset(&req);
	assert_int_equal(proto_put_str(&req, PT_FILE_NAME, "root.crt"), 0);
	assert_int_equal(proto_put_bytes(&req, PT_FILE_DER, der,
	    sizeof(der) - 1), 0);
	REFUSED(PROTO_PUT_FILE, CALL_MS, "not one DER SEQUENCE", "(invalid)");
	/* The file COMMIT stages from the certificate: allow_files too. */
	buf_reset(&req);
	assert_int_equal(proto_put_bytes(&req, PT_KEY_ID, "\x01", 1), 0);
	assert_int_equal(proto_put_str(&req, PT_KEY_LABEL, "keyline"), 0);
	assert_int_equal(proto_put_bytes(&req, PT_CERT, der, sizeof(der)), 0);
	assert_int_equal(proto_put_str(&req, PT_CERT_FILE, "pkey.pem"), 0);
	REFUSED(PROTO_COMMIT, CALL_MS, "'pkey.pem' refused", "allow_files");
	assert_int_not_equal(access(path, F_OK), 0);
	buf_reset(&req);
	assert_int_equal(proto_put_bytes(&req, PT_KEY_ID, "\x01", 1), 0);
	assert_int_equal(proto_put_str(&req, PT_KEY_LABEL, "keyline"), 0);
	assert_int_equal(proto_put_bytes(&req, PT_CERT, "xyz", 3), 0);
	assert_int_equal(proto_put_str(&req, PT_CERT_FILE, "client.pem"), 0);
	REFUSED(PROTO_COMMIT, CALL_MS, "not one DER SEQUENCE");
	snprintf(path, sizeof(path), "%s/client.pem", import);
	assert_int_not_equal(access(path, F_OK), 0);
	assert_alive();
}

/* A version 2 PUT_FILE stages both its files, the DER one as PEM, and
 * answers nothing but success; a v2 KEYGEN with a CN answers a CSR for
 * the key it made and the start of that key's SPKI hash. */
static void
test_v2_put_file_and_keygen(void **state)
{
	static const uint8_t der[] = { 0x30, 0x03, 0x02, 0x01, 0x05 };
	static const char pem[] = "-----BEGIN CERTIFICATE-----\nMAMCAQU=\n"
	    "-----END CERTIFICATE-----\n";
	char path[1024], back[256];
	const uint8_t *p, *chk;
	const unsigned char *q;
	unsigned char *spki = NULL;
	unsigned int mdlen = 0;
	uint8_t md[32];
	X509_REQ *csr;
	size_t n, cn;
	FILE *f;
	int len;

	(void)state;
	hello_v2();
	buf_reset(&req);
	assert_int_equal(proto_put_str(&req, PT_FILE_NAME, "root.crt"), 0);
	assert_int_equal(proto_put_bytes(&req, PT_FILE_DER, der, sizeof(der)),
	    0);
	assert_int_equal(proto_put_str(&req, PT_FILE_NAME, "gateway.url"), 0);
	assert_int_equal(proto_put_bytes(&req, PT_FILE_DATA, "https://x\n",
	    10), 0);
	assert_int_equal(call(PROTO_PUT_FILE, CALL_MS), 0);
	assert_int_equal(resp.len, 0);
	snprintf(path, sizeof(path), "%s/.root.crt.keyline-tmp", import);
	assert_non_null(f = fopen(path, "r"));
	n = fread(back, 1, sizeof(back), f);
	fclose(f);
	assert_int_equal(n, sizeof(pem) - 1);
	assert_memory_equal(back, pem, n);
	snprintf(path, sizeof(path), "%s/.gateway.url.keyline-tmp", import);
	assert_int_equal(access(path, F_OK), 0);

	buf_reset(&req);
	assert_int_equal(proto_put_str(&req, PT_KEY_TYPE, "ec-p256"), 0);
	assert_int_equal(proto_put_bytes(&req, PT_KEY_ID, "\x02", 1), 0);
	assert_int_equal(proto_put_str(&req, PT_KEY_LABEL, "keyline"), 0);
	assert_int_equal(proto_put_str(&req, PT_SUBJECT_CN, "v2-board"), 0);
	assert_int_equal(call(PROTO_KEYGEN, KEYGEN_MS), 0);
	assert_int_equal(proto_get_bytes(resp.data, resp.len, PT_SPKI, 4096,
	    &p, &n), KL_ERR_NOT_FOUND);
	assert_int_equal(proto_get_bytes(resp.data, resp.len, PT_KEY_CHECK,
	    32, &chk, &cn), 0);
	assert_int_equal(cn, PROTO_KEY_CHECK_LEN);
	assert_int_equal(proto_get_bytes(resp.data, resp.len, PT_CSR, 16384,
	    &p, &n), 0);
	q = p;
	assert_non_null(csr = d2i_X509_REQ(NULL, &q, (long)n));
	assert_int_equal(X509_REQ_verify(csr, X509_REQ_get0_pubkey(csr)), 1);
	assert_true((len = i2d_PUBKEY(X509_REQ_get0_pubkey(csr), &spki)) > 0);
	assert_int_equal(EVP_Digest(spki, (size_t)len, md, &mdlen,
	    EVP_sha256(), NULL), 1);
	assert_memory_equal(md, chk, PROTO_KEY_CHECK_LEN);
	OPENSSL_free(spki);
	X509_REQ_free(csr);
	/* A new session throws the staged files and key away. */
	assert_alive();
	assert_int_not_equal(access(path, F_OK), 0);
}

static void
sha256(const void *p, size_t n, uint8_t md[32])
{
	unsigned int len = 0;

	assert_int_equal(EVP_Digest(p, n, md, &len, EVP_sha256(), NULL), 1);
	assert_int_equal(len, 32);
}

static void
test_put_file_positive(void **state)
{
	static const char pem[] = "-----BEGIN CERTIFICATE-----\n"
	    "a2V5bGluZSB0ZXN0X2FnZW50IHBvc2l0aXZlIGNvbnRyb2w=\n"
	    "-----END CERTIFICATE-----\n";
	char path[1024], back[sizeof(pem) + 16], outside[512];
	const uint8_t *h;
	uint8_t md[32];
	uint32_t size;
	size_t hl, n;
	struct stat st;
	FILE *f;

	(void)state;
	assert_alive();
	sha256(pem, strlen(pem), md);

	/* A symlink planted where client.pem goes, pointing outside: COMMIT
	 * must replace the link, not write through it. */
	snprintf(outside, sizeof(outside), "%s/outside-target", dir);
	assert_int_equal(tu_sh("printf original >'%s'", outside), 0);
	snprintf(path, sizeof(path), "%s/client.pem", import);
	assert_int_equal(symlink(outside, path), 0);

	put_file_req("root.crt", 8, 0644, pem, strlen(pem));
	assert_int_equal(call(PROTO_PUT_FILE, CALL_MS), 0);
	assert_int_equal(proto_get_bytes(resp.data, resp.len, PT_SHA256, 32,
	    &h, &hl), 0);
	assert_int_equal(hl, 32);
	assert_memory_equal(h, md, 32);
	/* Asks for setuid, exec and world write: gets 0644 at most. */
	put_file_req("client.pem", 10, 06777, pem, strlen(pem));
	assert_int_equal(call(PROTO_PUT_FILE, CALL_MS), 0);
	buf_reset(&req);
	assert_int_equal(call(PROTO_COMMIT, CALL_MS), 0);

	name_req("root.crt");
	assert_int_equal(call(PROTO_FILE_HASH, CALL_MS), 0);
	assert_int_equal(proto_get_bytes(resp.data, resp.len, PT_SHA256, 32,
	    &h, &hl), 0);
	assert_int_equal(hl, 32);
	assert_memory_equal(h, md, 32);
	assert_int_equal(proto_get_u32(resp.data, resp.len, PT_FILE_SIZE,
	    &size), 0);
	assert_int_equal(size, strlen(pem));

	snprintf(path, sizeof(path), "%s/root.crt", import);
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0644);
	f = fopen(path, "r");
	assert_non_null(f);
	n = fread(back, 1, sizeof(back), f);
	fclose(f);
	assert_int_equal(n, strlen(pem));
	assert_memory_equal(back, pem, n);

	snprintf(path, sizeof(path), "%s/client.pem", import);
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0644);
	f = fopen(outside, "r");
	assert_non_null(f);
	n = fread(back, 1, sizeof(back), f);
	fclose(f);
	assert_int_equal(n, 8);
	assert_memory_equal(back, "original", 8);

	/* Exactly the two files, no temp left over. */
	assert_int_equal(unlink(path), 0);
	assert_int_equal(import_count("root.crt"), 0);
	assert_alive();
}

/*
 * REMOVE takes back one file (and its staged copy); DEL_CERT the
 * certificate objects with an id.  Hostile names are refused like
 * PUT_FILE's; a symlink planted in the import dir is removed, not
 * followed; removing what is not there succeeds.
 */
static void
test_remove_and_del_cert(void **state)
{
	static const char *const bad[] = { "../../board.conf", "/etc/passwd",
		"..", ".", "", "a/b", ".hidden", "evil\x01" };
	static const char data[] = "keyline remove test\n";
	char outside[512], path[1024];
	uint8_t long_id[PROTO_MAX_KEY_ID + 1];
	size_t i;

	(void)state;
	assert_alive();
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		name_req(bad[i]);
		REFUSED(PROTO_REMOVE, CALL_MS, "not a plain name", "(path)");
	}
	assert_true(exists("%s/board.conf", board));

	/* A link in the import dir pointing outside: the link goes, its
	 * target stays. */
	snprintf(outside, sizeof(outside), "%s/remove-target", dir);
	assert_int_equal(tu_sh("printf keep >'%s'", outside), 0);
	snprintf(path, sizeof(path), "%s/gateway.url", import);
	assert_int_equal(symlink(outside, path), 0);
	name_req("gateway.url");
	assert_int_equal(call(PROTO_REMOVE, CALL_MS), 0);
	assert_false(exists("%s", path));
	assert_true(exists("%s", outside));

	/* One committed file, one staged: both go, and COMMIT then has
	 * nothing left to put in place. */
	put_file_req("root.crt", 8, 0644, data, strlen(data));
	assert_int_equal(call(PROTO_PUT_FILE, CALL_MS), 0);
	buf_reset(&req);
	assert_int_equal(call(PROTO_COMMIT, CALL_MS), 0);
	put_file_req("client.pem", 10, 0644, data, strlen(data));
	assert_int_equal(call(PROTO_PUT_FILE, CALL_MS), 0);
	assert_int_equal(import_count("root.crt"), 1);	/* the staged temp */
	name_req("root.crt");
	assert_int_equal(call(PROTO_REMOVE, CALL_MS), 0);
	name_req("client.pem");
	assert_int_equal(call(PROTO_REMOVE, CALL_MS), 0);
	assert_int_equal(import_count(NULL), 0);
	buf_reset(&req);
	REFUSED(PROTO_COMMIT, CALL_MS, "nothing staged");
	/* Not there: still fine, so a station can always send the list. */
	name_req("client.pem");
	assert_int_equal(call(PROTO_REMOVE, CALL_MS), 0);

	/* DEL_CERT: the key id is checked; an id with no certificate is
	 * fine (integration test 21 deletes a real one). */
	buf_reset(&req);
	REFUSED(PROTO_DEL_CERT, CALL_MS, "key id missing", "(invalid)");
	memset(long_id, 1, sizeof(long_id));
	buf_reset(&req);
	assert_int_equal(proto_put_bytes(&req, PT_KEY_ID, long_id,
	    sizeof(long_id)), 0);
	REFUSED(PROTO_DEL_CERT, CALL_MS, "key id longer than 16 bytes");
	buf_reset(&req);
	assert_int_equal(proto_put_bytes(&req, PT_KEY_ID, "\x7e", 1), 0);
	assert_int_equal(call(PROTO_DEL_CERT, CALL_MS), 0);
	assert_alive();
}

static void
test_still_alive_tree_unchanged(void **state)
{
	(void)state;
	assert_alive();
	assert_no_escape();
	assert_int_equal(snapshot("tree.after"), 0);
	if (tu_sh("diff '%s/tree.before' '%s/tree.after' >&2", dir, dir) != 0)
		fail_msg("the board tree outside the import dir changed");
	/* The agent never died and was never restarted. */
	assert_int_not_equal(tu_sh("grep -q 'exited' '%s/jig.log'", dir), 0);
}

static void
inquire_req(const void *key_id, size_t klen, const void *cert_id,
    size_t clen, const char *name)
{
	buf_reset(&req);
	if (key_id != NULL)
		assert_int_equal(proto_put_bytes(&req, PT_KEY_ID, key_id, klen),
		    0);
	if (cert_id != NULL)
		assert_int_equal(proto_put_bytes(&req, PT_CERT_ID, cert_id,
		    clen), 0);
	if (name != NULL)
		assert_int_equal(proto_put_str(&req, PT_FILE_NAME, name), 0);
}

/* INQUIRE tells what is in place and nothing staged: a new key waits
 * under its pending id until COMMIT, which refuses a key without its
 * certificate.  Hostile INQUIREs are refused with words. */
static void
test_inquire_and_staged_key(void **state)
{
	const uint8_t *p;
	size_t n;

	(void)state;
	assert_alive();
	inquire_req("\x02", 1, "\x01", 1, "client.pem");
	assert_int_equal(call(PROTO_INQUIRE, CALL_MS), 0);
	assert_int_equal(proto_get_bytes(resp.data, resp.len, PT_SPKI, 4096,
	    &p, &n), KL_ERR_NOT_FOUND);
	assert_int_equal(proto_get_bytes(resp.data, resp.len, PT_CERT, 65536,
	    &p, &n), KL_ERR_NOT_FOUND);
	assert_int_equal(proto_get_bytes(resp.data, resp.len, PT_SHA256, 32,
	    &p, &n), KL_ERR_NOT_FOUND);

	buf_reset(&req);
	assert_int_equal(proto_put_str(&req, PT_KEY_TYPE, "ec-p256"), 0);
	assert_int_equal(proto_put_bytes(&req, PT_KEY_ID, "\x02", 1), 0);
	assert_int_equal(proto_put_str(&req, PT_KEY_LABEL, "tls"), 0);
	assert_int_equal(call(PROTO_KEYGEN, KEYGEN_MS), 0);
	/* Staged, not in place. */
	inquire_req("\x02", 1, "\x01", 1, "client.pem");
	assert_int_equal(call(PROTO_INQUIRE, CALL_MS), 0);
	assert_int_equal(proto_get_bytes(resp.data, resp.len, PT_SPKI, 4096,
	    &p, &n), KL_ERR_NOT_FOUND);
	buf_reset(&req);
	REFUSED(PROTO_COMMIT, CALL_MS, "new key without its certificate",
	    "(invalid)");
	buf_reset(&req);
	assert_int_equal(call(PROTO_ABORT, CALL_MS), 0);
	buf_reset(&req);
	REFUSED(PROTO_COMMIT, CALL_MS, "nothing staged");

	inquire_req("\x02", 1, NULL, 0, "client.pem");
	REFUSED(PROTO_INQUIRE, CALL_MS, "certificate id missing", "(invalid)");
	inquire_req("\x02", 1, "01234567890123456", 17, "client.pem");
	REFUSED(PROTO_INQUIRE, CALL_MS, "certificate id", "(invalid)");
	inquire_req("\x02", 1, "\x01", 1, "../../etc/passwd");
	REFUSED(PROTO_INQUIRE, CALL_MS, "not a plain name", "(path)");
	inquire_req(NULL, 0, "\x01", 1, "client.pem");
	REFUSED(PROTO_INQUIRE, CALL_MS, "key id missing", "(invalid)");
	/* The staging suffix is the agent's own: a station cannot name a
	 * staged object (and so destroy or move it by hand). */
	buf_reset(&req);
	assert_int_equal(proto_put_bytes(&req, PT_KEY_ID, "\x01\xffKLP", 5),
	    0);
	REFUSED(PROTO_DEL_CERT, CALL_MS, "staging suffix", "(invalid)");
	assert_alive();
}

/* pkcs11-tool on a board's token, beside its running agent. */
static int
p11(const char *b, const char *ser, const char *fmt, ...)
{
	char args[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	return tu_sh("SOFTHSM2_CONF='%s/softhsm2.conf' pkcs11-tool --module "
	    "/usr/lib/softhsm/libsofthsm2.so --token-label board-%s --login "
	    "--pin 1234 %s >>'%s/p11.log' 2>&1", b, ser, args, dir);
}

static void
keygen_req(uint8_t type_msg, const void *id, size_t id_len,
    const char *label)
{
	buf_reset(&req);
	if (type_msg == PROTO_KEYGEN)
		assert_int_equal(proto_put_str(&req, PT_KEY_TYPE, "ec-p256"),
		    0);
	assert_int_equal(proto_put_bytes(&req, PT_KEY_ID, id, id_len), 0);
	assert_int_equal(proto_put_str(&req, PT_KEY_LABEL, label), 0);
}

/* PUT_CERT of a real certificate (the fleet root's) at id. */
static void
cert_req(const void *id, size_t id_len)
{
	char path[700];
	unsigned char *der = NULL;
	FILE *f;
	X509 *x;
	int n;

	snprintf(path, sizeof(path), "%s/ca/fleet-root.pem", dir);
	assert_non_null(f = fopen(path, "r"));
	assert_non_null(x = PEM_read_X509(f, NULL, NULL, NULL));
	fclose(f);
	assert_true((n = i2d_X509(x, &der)) > 0);
	buf_reset(&req);
	assert_int_equal(proto_put_bytes(&req, PT_KEY_ID, id, id_len), 0);
	assert_int_equal(proto_put_str(&req, PT_KEY_LABEL, "keyline"), 0);
	assert_int_equal(proto_put_bytes(&req, PT_CERT, der, (size_t)n), 0);
	OPENSSL_free(der);
	X509_free(x);
}

/*
 * A key the station has no business with (CKA_ID 42, made by someone
 * else) survives a KEYGEN + PUT_CERT + COMMIT at its id: the id is not in
 * allow_key_ids, so nothing is staged there, on a board that does allow
 * re-provisioning.  Labels are listed too.
 */
static void
test_unlisted_id_keeps_key(void **state)
{
	char before[600], after[600];

	(void)state;
	use_board(1);
	assert_alive();
	snprintf(before, sizeof(before), "%s/unrelated.before.der", dir);
	snprintf(after, sizeof(after), "%s/unrelated.after.der", dir);
	assert_int_equal(p11(board, serial, "--keypairgen --key-type "
	    "EC:prime256v1 --id 42 --label unrelated"), 0);
	assert_int_equal(p11(board, serial, "--read-object --type pubkey "
	    "--id 42 --output-file '%s'", before), 0);

	/* What destroyed it before: answers checked below. */
	keygen_req(PROTO_KEYGEN, "\x42", 1, "keyline");
	(void)call(PROTO_KEYGEN, KEYGEN_MS);
	cert_req("\x42", 1);
	(void)call(PROTO_PUT_CERT, CALL_MS);
	buf_reset(&req);
	(void)call(PROTO_COMMIT, CALL_MS);
	assert_int_equal(p11(board, serial, "--read-object --type pubkey "
	    "--id 42 --output-file '%s'", after), 0);
	if (tu_sh("cmp -s '%s' '%s'", before, after) != 0)
		fail_msg("the key at CKA_ID 42 was replaced");
	assert_int_equal(tu_sh("SOFTHSM2_CONF='%s/softhsm2.conf' pkcs11-tool "
	    "--module /usr/lib/softhsm/libsofthsm2.so --token-label board-%s "
	    "--login --pin 1234 --list-objects --type privkey 2>/dev/null | "
	    "grep -q 'label: *unrelated'", board, serial), 0);

	keygen_req(PROTO_KEYGEN, "\x42", 1, "keyline");
	REFUSED(PROTO_KEYGEN, KEYGEN_MS, "key id 42 refused",
	    "not in this board's allow_key_ids", "(invalid)");
	keygen_req(PROTO_UPTANE_KEYGEN, "\x42", 1, "uptane");
	REFUSED(PROTO_UPTANE_KEYGEN, KEYGEN_MS, "key id 42 refused");
	cert_req("\x42", 1);
	REFUSED(PROTO_PUT_CERT, CALL_MS, "key id 42 refused");
	buf_reset(&req);
	assert_int_equal(proto_put_bytes(&req, PT_KEY_ID, "\x42", 1), 0);
	REFUSED(PROTO_DEL_CERT, CALL_MS, "key id 42 refused");
	sign_req("\x42", 1, 32);
	REFUSED(PROTO_SIGN, KEYGEN_MS, "key id 42 refused");
	inquire_req("\x02", 1, "\x42", 1, "client.pem");
	REFUSED(PROTO_INQUIRE, CALL_MS, "certificate id 42 refused");
	buf_reset(&req);
	REFUSED(PROTO_COMMIT, CALL_MS, "nothing staged");
	/* A listed id with a label the board does not list. */
	keygen_req(PROTO_KEYGEN, "\x02", 1, "evil");
	REFUSED(PROTO_KEYGEN, KEYGEN_MS, "key label 'evil' refused",
	    "not in this board's allow_labels", "(invalid)");
	assert_alive();
}

/*
 * SIGN signs SHA-256 over "keyline-pop-v1\0" and the challenge: the
 * signature does not verify over the station's bytes alone.
 */
static void
test_sign_domain_separated(void **state)
{
	static const uint8_t context[] = "keyline-pop-v1";
	uint8_t ch[32], msg2[sizeof(context) + sizeof(ch)], sig[1024];
	uint8_t spki[4096];
	const uint8_t *p, *q;
	size_t n, sig_len, spki_len;
	EVP_MD_CTX *md;
	EVP_PKEY *pk;

	(void)state;
	use_board(1);
	assert_alive();
	keygen_req(PROTO_KEYGEN, "\x7a", 1, "test-agent");
	assert_int_equal(call(PROTO_KEYGEN, KEYGEN_MS), 0);
	commit_key("\x7c", 1);
	inquire_req("\x7a", 1, "\x7c", 1, "client.pem");
	assert_int_equal(call(PROTO_INQUIRE, CALL_MS), 0);
	assert_int_equal(proto_get_bytes(resp.data, resp.len, PT_SPKI,
	    sizeof(spki), &p, &n), 0);
	memcpy(spki, p, n);
	spki_len = n;
	sign_req("\x7a", 1, sizeof(ch));
	memset(ch, 0xc5, sizeof(ch));	/* what sign_req sends */
	assert_int_equal(call(PROTO_SIGN, KEYGEN_MS), 0);
	assert_int_equal(proto_get_bytes(resp.data, resp.len, PT_SIGNATURE,
	    sizeof(sig), &p, &n), 0);
	memcpy(sig, p, n);
	sig_len = n;

	q = spki;
	assert_non_null(pk = d2i_PUBKEY(NULL, &q, (long)spki_len));
	assert_non_null(md = EVP_MD_CTX_new());
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL,
	    pk), 1);
	if (EVP_DigestVerify(md, sig, sig_len, ch, sizeof(ch)) == 1)
		fail_msg("SIGN signed the station's raw challenge");
	EVP_MD_CTX_free(md);
	memcpy(msg2, context, sizeof(context));
	memcpy(msg2 + sizeof(context), ch, sizeof(ch));
	assert_non_null(md = EVP_MD_CTX_new());
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL,
	    pk), 1);
	assert_int_equal(EVP_DigestVerify(md, sig, sig_len, msg2,
	    sizeof(msg2)), 1);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pk);
	assert_alive();
}

/*
 * Nothing is written to an import directory, or below a parent, that
 * someone else can write, nor through a symlink.
 */
static void
test_import_dir_unsafe(void **state)
{
	static const char data[] = "keyline unsafe dir test\n";
	char parent[700], real[700];
	struct stat st;

	(void)state;
	use_board(1);
	assert_alive();
	assert_int_equal(chmod(import, 0777), 0);
	put_file_req("client.pem", 10, 0644, data, strlen(data));
	REFUSED(PROTO_PUT_FILE, CALL_MS, "import directory unsafe",
	    "is writable by group or others", "(path)");
	name_req("client.pem");
	REFUSED(PROTO_REMOVE, CALL_MS, "import directory unsafe");
	assert_int_equal(chmod(import, 0775), 0);
	put_file_req("client.pem", 10, 0644, data, strlen(data));
	REFUSED(PROTO_PUT_FILE, CALL_MS, "writable by group or others");
	assert_int_equal(chmod(import, 0755), 0);
	assert_int_equal(import_count(NULL), 0);

	/* A parent that others may write. */
	snprintf(parent, sizeof(parent), "%s/rootfs/var", board);
	assert_int_equal(stat(parent, &st), 0);
	assert_int_equal(chmod(parent, 0777), 0);
	put_file_req("client.pem", 10, 0644, data, strlen(data));
	REFUSED(PROTO_PUT_FILE, CALL_MS, "import directory unsafe",
	    "rootfs/var is writable by group or others");
	assert_int_equal(chmod(parent, st.st_mode & 07777), 0);
	assert_int_equal(import_count(NULL), 0);

	/* Positive twin: the same request once the modes are right. */
	put_file_req("client.pem", 10, 0644, data, strlen(data));
	assert_int_equal(call(PROTO_PUT_FILE, CALL_MS), 0);
	buf_reset(&req);
	assert_int_equal(call(PROTO_ABORT, CALL_MS), 0);
	assert_int_equal(import_count(NULL), 0);

	/* Board 2: its import directory swapped for a symlink. */
	use_board(2);
	assert_alive();
	snprintf(real, sizeof(real), "%s.real", import2);
	assert_int_equal(rename(import2, real), 0);
	assert_int_equal(symlink(real, import2), 0);
	put_file_req("client.pem", 10, 0644, data, strlen(data));
	REFUSED(PROTO_PUT_FILE, CALL_MS, "import directory unsafe",
	    "is a symlink");
	assert_int_equal(unlink(import2), 0);
	assert_int_equal(rename(real, import2), 0);
	put_file_req("client.pem", 10, 0644, data, strlen(data));
	assert_int_equal(call(PROTO_PUT_FILE, CALL_MS), 0);
	buf_reset(&req);
	assert_int_equal(call(PROTO_ABORT, CALL_MS), 0);
	assert_alive();
	use_board(1);
}

/*
 * Board 2 has re-provisioning off: a session may replace or remove what
 * it committed itself, and nothing that was there before it.
 */
static void
test_reprovision_off(void **state)
{
	static const char data[] = "keyline reprovision test\n";
	uint8_t spki[4096];
	const uint8_t *p;
	size_t n, spki_len;

	(void)state;
	use_board(2);
	assert_alive();
	/* A first provisioning: nothing was there, so it commits. */
	keygen_req(PROTO_KEYGEN, "\x02", 1, "keyline");
	assert_int_equal(call(PROTO_KEYGEN, KEYGEN_MS), 0);
	assert_int_equal(proto_get_bytes(resp.data, resp.len, PT_SPKI,
	    sizeof(spki), &p, &n), 0);
	memcpy(spki, p, n);
	spki_len = n;
	put_file_req("client.pem", 10, 0644, data, strlen(data));
	assert_int_equal(call(PROTO_PUT_FILE, CALL_MS), 0);
	commit_key("\x01", 1);
	/* What this session made it may take back (a failed proof of
	 * possession clears the board). */
	put_file_req("root.crt", 8, 0644, data, strlen(data));
	assert_int_equal(call(PROTO_PUT_FILE, CALL_MS), 0);
	buf_reset(&req);
	assert_int_equal(call(PROTO_COMMIT, CALL_MS), 0);
	name_req("root.crt");
	assert_int_equal(call(PROTO_REMOVE, CALL_MS), 0);

	/* A new session: the provisioned set is not its own. */
	assert_alive();
	buf_reset(&req);
	assert_int_equal(proto_put_bytes(&req, PT_KEY_ID, "\x01", 1), 0);
	REFUSED(PROTO_DEL_CERT, CALL_MS,
	    "refusing to delete the certificate at CKA_ID 01",
	    "re-provisioning is off on this board", "(exists)");
	name_req("client.pem");
	REFUSED(PROTO_REMOVE, CALL_MS, "refusing to remove client.pem",
	    "(exists)");
	keygen_req(PROTO_KEYGEN, "\x02", 1, "keyline");
	assert_int_equal(call(PROTO_KEYGEN, KEYGEN_MS), 0);
	cert_req("\x01", 1);
	assert_int_equal(call(PROTO_PUT_CERT, CALL_MS), 0);
	buf_reset(&req);
	REFUSED(PROTO_COMMIT, CALL_MS,
	    "refusing to replace the key at CKA_ID 02", "(exists)");
	buf_reset(&req);
	assert_int_equal(call(PROTO_ABORT, CALL_MS), 0);
	put_file_req("client.pem", 10, 0644, "x", 1);
	assert_int_equal(call(PROTO_PUT_FILE, CALL_MS), 0);
	buf_reset(&req);
	REFUSED(PROTO_COMMIT, CALL_MS, "refusing to replace client.pem");
	buf_reset(&req);
	assert_int_equal(call(PROTO_ABORT, CALL_MS), 0);

	/* All still there, the key the first session made. */
	inquire_req("\x02", 1, "\x01", 1, "client.pem");
	assert_int_equal(call(PROTO_INQUIRE, CALL_MS), 0);
	assert_int_equal(proto_get_bytes(resp.data, resp.len, PT_SPKI,
	    sizeof(spki), &p, &n), 0);
	assert_int_equal(n, spki_len);
	assert_memory_equal(p, spki, n);
	assert_int_equal(proto_get_bytes(resp.data, resp.len, PT_CERT,
	    65536, &p, &n), 0);
	assert_int_equal(proto_get_bytes(resp.data, resp.len, PT_SHA256, 32,
	    &p, &n), 0);
	assert_true(exists("%s/client.pem", import2));

	/* A file that was not there may be added. */
	put_file_req("gateway.url", 11, 0644, data, strlen(data));
	assert_int_equal(call(PROTO_PUT_FILE, CALL_MS), 0);
	buf_reset(&req);
	assert_int_equal(call(PROTO_COMMIT, CALL_MS), 0);
	assert_alive();
	use_board(1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_file_bad_names),
		cmocka_unit_test(test_put_file_too_big),
		cmocka_unit_test(test_file_hash_outside),
		cmocka_unit_test(test_commit_nothing_staged),
		cmocka_unit_test(test_keygen_refused),
		cmocka_unit_test(test_sign_refused),
		cmocka_unit_test(test_malformed_tlv),
		cmocka_unit_test(test_unknown_type),
		cmocka_unit_test(test_hello_version),
		cmocka_unit_test(test_v2_refusals),
		cmocka_unit_test(test_v2_put_file_and_keygen),
		cmocka_unit_test(test_put_file_positive),
		cmocka_unit_test(test_remove_and_del_cert),
		cmocka_unit_test(test_inquire_and_staged_key),
		cmocka_unit_test(test_unlisted_id_keeps_key),
		cmocka_unit_test(test_sign_domain_separated),
		cmocka_unit_test(test_import_dir_unsafe),
		cmocka_unit_test(test_reprovision_off),
		cmocka_unit_test(test_still_alive_tree_unchanged),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
