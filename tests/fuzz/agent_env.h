/*
 * agent_env.h: a keyline-agent for the agent targets, built from
 * fixtures/agent/agent.c itself (its main left out with KEYLINE_FUZZ):
 * a SoftHSM token initialised in a temp directory, board.conf beside it
 * (keyline's allow lists, re-provisioning off, as on a production board),
 * an import directory, and a link transport that does not write to a
 * tty but checks every answer the agent sends (one whole frame, a
 * response, TLV fields that validate).
 *
 * Include this instead of agent.c; it renames agent.c's serial_link_ops
 * to the in-memory transport defined here.
 */
#ifndef KL_FUZZ_AGENT_ENV_H
#define KL_FUZZ_AGENT_ENV_H

#include "tests/fuzz/fuzz.h"

#include "station/link/link.h"
#include "station/link/serial.h"

/* link.h (above) declared serial_link_ops; agent.c's uses of it are
 * renamed to this transport, defined below. */
extern const struct link_ops fuzz_agent_link_ops;
#define serial_link_ops fuzz_agent_link_ops
#include "../../fixtures/agent/agent.c"
#undef serial_link_ops

#define FZ_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define FZ_LABEL "fuzz-board"
#define FZ_PIN "1234"

/* The last answer the agent sent, decoded (fz_answer.n == 0: none). */
struct fz_answer {
	int n;			/* answers sent since the last reset */
	uint8_t type, flags;
	uint16_t seq;
};

static struct fz_answer fz_answer;
static int fz_devnull = -1;

static int
fz_agent_write(void *ctx, const void *p, size_t n, int timeout_ms)
{
	struct frame_decoder d;
	struct frame f;
	int r;

	(void)ctx;
	(void)timeout_ms;
	frame_decoder_init(&d);
	FUZZ_CHECK(frame_decoder_push(&d, p, n) == 0, "answer too big");
	r = frame_decoder_next(&d, &f);
	FUZZ_CHECK(r == 1, "the agent sent something that is not a frame");
	FUZZ_CHECK(f.len + FRAME_HDR_LEN + FRAME_TRAILER_LEN == n,
	    "the agent sent bytes after its frame");
	FUZZ_CHECK(f.flags & FRAME_F_RESPONSE, "answer without RESPONSE");
	if (f.flags & FRAME_F_COMPACT) {
		/* Version 2's compact fields: read as the station would. */
		static struct buf wide;

		if (wide.max == 0)
			buf_init(&wide, FRAME_MAX_PAYLOAD);
		FUZZ_CHECK(proto_tlv_expand(f.payload, f.len, &wide) == 0,
		    "answer with malformed compact fields");
		f.payload = wide.data;
		f.len = (uint32_t)wide.len;
	}
	FUZZ_CHECK(proto_validate(f.payload, f.len) == 0,
	    "answer with malformed fields");
	if ((f.flags & FRAME_F_ERROR) && !(f.flags & FRAME_F_NAK)) {
		uint32_t code;
		char msg[PROTO_MAX_STR + 1];

		FUZZ_CHECK(proto_get_u32(f.payload, f.len, PT_ERR_CODE,
		    &code) == 0 && (int32_t)code < 0,
		    "error answer without a negative code");
		FUZZ_CHECK(proto_get_str(f.payload, f.len, PT_ERR_MSG, msg,
		    sizeof(msg)) == 0, "error answer without words");
	}
	fz_answer.n++;
	fz_answer.type = f.type;
	fz_answer.flags = f.flags;
	fz_answer.seq = f.seq;
	frame_decoder_free(&d);
	/* Where a tty would be: /dev/null. */
	if (fz_devnull >= 0)
		(void)write(fz_devnull, p, n);
	return 0;
}

static int
fz_agent_open(const char *path, const struct link_params *lp, void **ctx)
{
	(void)path;
	(void)lp;
	*ctx = &fz_answer;
	return 0;
}

static int
fz_agent_read(void *ctx, void *p, size_t n, int timeout_ms)
{
	(void)ctx;
	(void)p;
	(void)n;
	(void)timeout_ms;
	return KL_ERR_CLOSED;
}

static void
fz_agent_close(void *ctx)
{
	(void)ctx;
}

const struct link_ops fuzz_agent_link_ops = {
	.name = "fuzz",
	.open = fz_agent_open,
	.read = fz_agent_read,
	.write = fz_agent_write,
	.close = fz_agent_close,
};

/* Paths of the environment, under fuzz_tmpdir(). */
static char fz_conf_path[PATH_MAX], fz_import[PATH_MAX];

/* softhsm2.conf, a fresh token and board.conf in the temp directory. */
static void
fz_agent_env(void)
{
	const char *dir = fuzz_tmpdir();
	char path[PATH_MAX], cmd[PATH_MAX + 256], text[2 * PATH_MAX];
	FILE *f;

	snprintf(path, sizeof(path), "%s/tokens", dir);
	FUZZ_CHECK(mkdir(path, 0700) == 0 || errno == EEXIST, "mkdir");
	snprintf(path, sizeof(path), "%s/softhsm2.conf", dir);
	FUZZ_CHECK((f = fopen(path, "w")) != NULL, "fopen");
	fprintf(f, "directories.tokendir = %s/tokens\nobjectstore.backend "
	    "= file\nlog.level = ERROR\n", dir);
	fclose(f);
	setenv("SOFTHSM2_CONF", path, 1);
	snprintf(cmd, sizeof(cmd), "softhsm2-util --init-token --free "
	    "--label " FZ_LABEL " --so-pin 5678 --pin " FZ_PIN
	    " >/dev/null 2>&1");
	FUZZ_CHECK(system(cmd) == 0, "softhsm2-util --init-token failed");
	snprintf(fz_import, sizeof(fz_import), "%s/rootfs/var/sota/import",
	    dir);
	snprintf(fz_conf_path, sizeof(fz_conf_path), "%s/board.conf", dir);
	snprintf(text, sizeof(text), "serial = FZ0001\nmodel = fuzz-board\n"
	    "module = " FZ_MODULE "\ntoken_label = " FZ_LABEL "\n"
	    "user_pin = " FZ_PIN "\nimport_dir = %s\n"
	    "allow_key_ids = 01,02,03\nallow_labels = keyline,uptane\n"
	    "allow_files = client.pem,root.crt,gateway.url\n"
	    "allow_reprovision = no\n", fz_import);
	fuzz_write_file(fz_conf_path, text, strlen(text));
}

/* Start an agent on the environment as main() does. */
static void
fz_agent_start(struct agent *a)
{
	int r;

	memset(a, 0, sizeof(*a));
	a->import_fd = -1;
	for (size_t ci = 0; ci < AGENT_CACHE_N; ci++)
		buf_init(&a->cache[ci].frame, FRAME_MAX_LEN);
	buf_init(&a->scratch, FRAME_MAX_PAYLOAD);
	a->version = 1;
	FUZZ_CHECK(conf_load(&a->conf, fz_conf_path) == 0, "board.conf");
	FUZZ_CHECK(fsutil_mkdirs(a->conf.import_dir, 0755) == 0, "mkdirs");
	a->import_fd = open(a->conf.import_dir, O_RDONLY | O_DIRECTORY |
	    O_CLOEXEC);
	FUZZ_CHECK(a->import_fd >= 0, "import dir");
	r = hsm_open(&a->hsm, a->conf.module, a->conf.token_label,
	    a->conf.user_pin);
	FUZZ_CHECK(r == 0, "hsm_open: %s", kl_strerror(r));
	FUZZ_CHECK(fuzz_agent_link_ops.open("fuzz", NULL, &a->link) == 0,
	    "open");
	fz_devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
}

/* Empty the import directory (files, temp files, anything the agent
 * left), so one input's files do not meet the next. */
static void
fz_agent_clear_import(void)
{
	fuzz_rm_contents(fz_import);
}

#endif
