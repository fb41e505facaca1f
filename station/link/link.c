/*
 * link.c: request/response exchanges over a transport (see link.h).
 *
 * Every request gets a fresh seq.  An attempt ends early when the board
 * NAKs the request or the answer arrives corrupt; it ends late when nothing
 * arrives in timeout_ms.  Either way the same bytes (same seq) are sent
 * again, and the board replays its cached answer instead of re-running the
 * command, so a retried KEYGEN never makes a second key.
 *
 * The two kinds of failed attempt have their own budgets.  Silence means
 * the board may be gone, so it gets few tries (attempts), each a whole
 * timeout long.  Corruption means the board is there and the line is
 * noisy; a resend costs one frame time, and on a noisy line a 1 KiB frame
 * can fail half its tries, so it gets many more (resends).
 */
#include "station/link/link.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "common/err.h"
#include "station/link/frame.h"
#include "common/log.h"
#include "station/link/proto.h"

#define LINK_DEFAULT_ATTEMPTS 4
#define LINK_DEFAULT_RESENDS 16
#define LINK_READ_CHUNK 4096
#define LINK_CANCEL_POLL_MS 200

struct link {
	const struct link_ops *ops;
	void *ctx;
	char path[256];
	uint16_t seq;
	int attempts;
	int resends;
	struct frame_decoder dec;
	struct buf out;
	struct link_stats st;
	const volatile int *cancel;
};

int
link_open(struct link **out, const struct link_ops *ops, const char *path,
    const struct link_params *p)
{
	struct link *l;
	int r;

	if ((l = calloc(1, sizeof(*l))) == NULL)
		return KL_ERR_NOMEM;
	l->ops = ops;
	l->attempts = LINK_DEFAULT_ATTEMPTS;
	l->resends = LINK_DEFAULT_RESENDS;
	snprintf(l->path, sizeof(l->path), "%s", path);
	frame_decoder_init(&l->dec);
	buf_init(&l->out, FRAME_MAX_LEN);
	if ((r = ops->open(path, p, &l->ctx)) != 0) {
		link_close(l);
		return r;
	}
	/* Bytes a previous session left in the line belong to no one. */
	if (ops->flush != NULL)
		ops->flush(l->ctx);
	/* Start at a random seq so a board's cached answer from an earlier
	 * session is not mistaken for this one's. */
	if (RAND_bytes((unsigned char *)&l->seq, sizeof(l->seq)) != 1)
		l->seq = (uint16_t)(time(NULL) ^ (uintptr_t)l);
	*out = l;
	return 0;
}

void
link_close(struct link *l)
{
	if (l == NULL)
		return;
	if (l->ctx != NULL)
		l->ops->close(l->ctx);
	frame_decoder_free(&l->dec);
	buf_free(&l->out);
	free(l);
}

void
link_set_attempts(struct link *l, int attempts)
{
	l->attempts = attempts > 0 ? attempts : 1;
}

void
link_set_resends(struct link *l, int resends)
{
	l->resends = resends >= 0 ? resends : 0;
}

void
link_set_cancel(struct link *l, const volatile int *flag)
{
	l->cancel = flag;
}

const struct link_stats *
link_stats(const struct link *l)
{
	return &l->st;
}

static int64_t
link_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An error answer: its code and words. */
static int
link_remote_error(const struct frame *f, char *remote_err, size_t errsz)
{
	char msg[PROTO_MAX_STR + 1];
	uint32_t code = 0;

	if (proto_get_str(f->payload, f->len, PT_ERR_MSG, msg,
	    sizeof(msg)) != 0)
		snprintf(msg, sizeof(msg), "(no message)");
	(void)proto_get_u32(f->payload, f->len, PT_ERR_CODE, &code);
	if (remote_err != NULL && errsz > 0)
		snprintf(remote_err, errsz, "%s (%s)", msg,
		    kl_errname((int)(int32_t)code));
	return KL_ERR_REMOTE;
}

enum link_wait { LINK_GOT, LINK_RESEND };

/*
 * Read until the answer to seq arrives (LINK_GOT, frame in *f), the attempt
 * should be cut short (LINK_RESEND), or an error.
 */
static int
link_await(struct link *l, uint8_t type, uint16_t seq, int timeout_ms,
    struct frame *f)
{
	uint8_t chunk[LINK_READ_CHUNK];
	int64_t deadline = link_now_ms() + timeout_ms;
	int64_t left;
	int n, r;

	for (;;) {
		while ((n = frame_decoder_next(&l->dec, f)) != 0) {
			if (n < 0) {
				l->st.crc_errors++;
				return LINK_RESEND;
			}
			l->st.frames_rx++;
			if (!(f->flags & FRAME_F_RESPONSE))
				continue;	/* our own echo; ignore */
			if (f->flags & FRAME_F_NAK) {
				l->st.naks++;
				return LINK_RESEND;
			}
			if (f->seq != seq)
				continue;	/* a late answer to an old try */
			if (f->type != type) {
				log_error("%s: answer of type %s to a %s request",
				    l->path, proto_type_name(f->type),
				    proto_type_name(type));
				return KL_ERR_PROTO;
			}
			return LINK_GOT;
		}
		if (l->cancel != NULL && *l->cancel)
			return KL_ERR_CANCELLED;
		left = deadline - link_now_ms();
		if (left <= 0)
			return KL_ERR_TIMEOUT;
		if (l->cancel != NULL && left > LINK_CANCEL_POLL_MS)
			left = LINK_CANCEL_POLL_MS;
		n = l->ops->read(l->ctx, chunk, sizeof(chunk), (int)left);
		if (n == KL_ERR_TIMEOUT)
			continue;
		if (n < 0)
			return n;
		l->st.bytes_rx += (uint64_t)n;
		if ((r = frame_decoder_push(&l->dec, chunk, (size_t)n)) != 0)
			return r;
	}
}

int
link_call(struct link *l, uint8_t type, const struct buf *req,
    struct buf *resp, int timeout_ms, char *remote_err, size_t errsz)
{
	struct frame f;
	uint16_t seq;
	int timeouts = 0, corrupt = 0, r = KL_ERR_TIMEOUT;

	if (++l->seq == 0)
		l->seq = 1;
	seq = l->seq;
	buf_reset(&l->out);
	if ((r = frame_encode(&l->out, type, 0, seq,
	    req != NULL ? req->data : NULL, req != NULL ? req->len : 0)) != 0)
		return r;
	for (;;) {
		if (timeouts + corrupt > 0) {
			l->st.retries++;
			log_debug("%s: %s seq %u: sent again (%d timed out, "
			    "%d corrupt)", l->path, proto_type_name(type), seq,
			    timeouts, corrupt);
		}
		r = l->ops->write(l->ctx, l->out.data, l->out.len, timeout_ms);
		if (r != 0)
			return r;
		l->st.bytes_tx += l->out.len;
		l->st.frames_tx++;
		r = link_await(l, type, seq, timeout_ms, &f);
		if (r == KL_ERR_TIMEOUT) {
			frame_decoder_reset(&l->dec);
			if (++timeouts >= l->attempts)
				return KL_ERR_TIMEOUT;
			continue;
		}
		if (r == LINK_RESEND) {
			if (++corrupt > l->resends) {
				log_error("%s: %s: %d tries arrived corrupt; "
				    "the line is too noisy", l->path,
				    proto_type_name(type), corrupt);
				return KL_ERR_CRC;
			}
			continue;
		}
		if (r != LINK_GOT)
			return r;
		if (f.flags & FRAME_F_ERROR)
			return link_remote_error(&f, remote_err, errsz);
		if (proto_validate(f.payload, f.len) != 0) {
			log_error("%s: %s answer has malformed fields", l->path,
			    proto_type_name(type));
			return KL_ERR_PROTO;
		}
		buf_reset(resp);
		return buf_put(resp, f.payload, f.len);
	}
}
