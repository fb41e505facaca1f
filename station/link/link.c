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
	struct buf out[LINK_PIPE_MAX];	/* frames of link_call_many */
	struct link_stats st;
	const volatile int *cancel;
	int compact;		/* v2 compact fields after HELLO */
	struct buf scratch;	/* a payload converted to or from them */
};

int
link_open(struct link **out, const struct link_ops *ops, const char *path,
    const struct link_params *p)
{
	struct link *l;
	size_t i;
	int r;

	if ((l = calloc(1, sizeof(*l))) == NULL)
		return KL_ERR_NOMEM;
	l->ops = ops;
	l->attempts = LINK_DEFAULT_ATTEMPTS;
	l->resends = LINK_DEFAULT_RESENDS;
	snprintf(l->path, sizeof(l->path), "%s", path);
	frame_decoder_init(&l->dec);
	buf_init(&l->scratch, FRAME_MAX_PAYLOAD);
	for (i = 0; i < LINK_PIPE_MAX; i++)
		buf_init(&l->out[i], FRAME_MAX_LEN);
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
	size_t i;

	if (l == NULL)
		return;
	if (l->ctx != NULL)
		l->ops->close(l->ctx);
	frame_decoder_free(&l->dec);
	buf_free(&l->scratch);
	for (i = 0; i < LINK_PIPE_MAX; i++)
		buf_free(&l->out[i]);
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
link_set_compact(struct link *l, int on)
{
	l->compact = on;
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

/* Where one request of link_call_many stands. */
struct link_slot {
	struct buf *frame;	/* encoded once; resent as is */
	uint16_t seq;
	int sent, done;
};

/* link_pump's "send the unanswered requests again" (positive: not an
 * error code). */
#define LINK_RESEND 1

/*
 * Reads one frame (or waits up to until deadline) and applies it to the
 * outstanding requests.  0 after progress or nothing, LINK_RESEND when
 * the board NAKed or an answer arrived corrupt, KL_ERR_TIMEOUT at the
 * deadline, or an error.
 */
static int
link_pump(struct link *l, struct link_req *rq, struct link_slot *sl,
    size_t from, size_t to, int64_t deadline, int *progress)
{
	uint8_t chunk[LINK_READ_CHUNK];
	struct frame f;
	int64_t left;
	size_t i;
	int n, r;

	for (;;) {
		while ((n = frame_decoder_next(&l->dec, &f)) != 0) {
			if (n < 0) {
				l->st.crc_errors++;
				return LINK_RESEND;
			}
			l->st.frames_rx++;
			log_debug("%s: got %s seq %u flags %u, %u bytes of "
			    "fields", l->path, proto_type_name(f.type), f.seq,
			    f.flags, (unsigned int)f.len);
			if (!(f.flags & FRAME_F_RESPONSE))
				continue;	/* our own echo; ignore */
			if (f.flags & FRAME_F_NAK) {
				l->st.naks++;
				return LINK_RESEND;
			}
			for (i = from; i < to; i++)
				if (sl[i].sent && !sl[i].done &&
				    sl[i].seq == f.seq)
					break;
			if (i == to)
				continue;	/* a late answer to an old try */
			if (f.type != rq[i].type) {
				log_error("%s: answer of type %s to a %s request",
				    l->path, proto_type_name(f.type),
				    proto_type_name(rq[i].type));
				return KL_ERR_PROTO;
			}
			sl[i].done = 1;
			*progress = 1;
			buf_reset(rq[i].resp);
			rq[i].rc = 0;
			rq[i].err[0] = '\0';
			if (f.flags & FRAME_F_COMPACT) {
				if (proto_tlv_expand(f.payload, f.len,
				    &l->scratch) != 0) {
					log_error("%s: %s answer has malformed "
					    "fields", l->path,
					    proto_type_name(rq[i].type));
					rq[i].rc = KL_ERR_PROTO;
					goto next;
				}
				f.payload = l->scratch.data;
				f.len = l->scratch.len;
			}
			if (f.flags & FRAME_F_ERROR)
				rq[i].rc = link_remote_error(&f, rq[i].err,
				    sizeof(rq[i].err));
			else if (proto_validate(f.payload, f.len) != 0) {
				log_error("%s: %s answer has malformed fields",
				    l->path, proto_type_name(rq[i].type));
				rq[i].rc = KL_ERR_PROTO;
			} else if ((r = buf_put(rq[i].resp, f.payload,
			    f.len)) != 0)
				return r;
next:
			if (i == from)
				return 0;
		}
		if (*progress)
			return 0;
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

static int
link_send_slot(struct link *l, struct link_slot *s, int timeout_ms)
{
	int r;

	r = l->ops->write(l->ctx, s->frame->data, s->frame->len, timeout_ms);
	if (r != 0)
		return r;
	l->st.bytes_tx += s->frame->len;
	l->st.frames_tx++;
	log_debug("%s: sent seq %u, %zu bytes", l->path, s->seq,
	    s->frame->len);
	s->sent = 1;
	return 0;
}

int
link_call_many(struct link *l, struct link_req *rq, size_t n, size_t *failed)
{
	struct link_slot sl[LINK_PIPE_MAX];
	size_t oldest = 0, next = 0, i;
	size_t inflight_bytes;
	int64_t deadline = 0;
	int timeouts = 0, corrupt = 0, progress, r = KL_ERR_INTERNAL;

	if (n == 0 || n > LINK_PIPE_MAX)
		return KL_ERR_INVALID;
	memset(sl, 0, sizeof(sl));
	for (i = 0; i < n; i++) {
		sl[i].frame = &l->out[i];
		buf_reset(sl[i].frame);
		if (++l->seq == 0)
			l->seq = 1;
		sl[i].seq = l->seq;
		rq[i].rc = 0;
		rq[i].err[0] = '\0';
		if (l->compact && rq[i].type != PROTO_HELLO &&
		    rq[i].req != NULL) {
			if ((r = proto_tlv_compact(rq[i].req->data,
			    rq[i].req->len, &l->scratch)) != 0)
				goto out;
			r = frame_encode(sl[i].frame, rq[i].type,
			    FRAME_F_COMPACT, sl[i].seq, l->scratch.data,
			    l->scratch.len);
		} else
			r = frame_encode(sl[i].frame, rq[i].type, 0, sl[i].seq,
			    rq[i].req != NULL ? rq[i].req->data : NULL,
			    rq[i].req != NULL ? rq[i].req->len : 0);
		if (r != 0)
			goto out;
	}
	while (oldest < n) {
		/* Fill the window: the oldest always goes; the others while
		 * they fit beside what is unanswered. */
		inflight_bytes = 0;
		for (i = oldest; i < next; i++)
			if (!sl[i].done)
				inflight_bytes += sl[i].frame->len;
		while (next < n && (next == oldest ||
		    (next - oldest < LINK_PIPE_MAX && inflight_bytes +
		    sl[next].frame->len <= LINK_PIPE_MAX_BYTES))) {
			if ((r = link_send_slot(l, &sl[next],
			    rq[next].timeout_ms)) != 0)
				goto out;
			inflight_bytes += sl[next].frame->len;
			if (next == oldest)
				deadline = link_now_ms() + rq[oldest].timeout_ms;
			next++;
		}
		progress = 0;
		r = link_pump(l, rq, sl, oldest, next, deadline, &progress);
		if (r == 0) {
			if (!sl[oldest].done)
				continue;
			while (oldest < n && sl[oldest].done)
				oldest++;
			/* Each request has its own budgets, and its own
			 * timeout from when the one before it was answered. */
			timeouts = corrupt = 0;
			if (oldest < n)
				deadline = link_now_ms() + rq[oldest].timeout_ms;
			continue;
		}
		if (r == KL_ERR_TIMEOUT) {
			frame_decoder_reset(&l->dec);
			if (++timeouts >= l->attempts)
				goto out;
		} else if (r == LINK_RESEND) {
			if (++corrupt > l->resends) {
				log_error("%s: %s: %d tries arrived corrupt; "
				    "the line is too noisy", l->path,
				    proto_type_name(rq[oldest].type), corrupt);
				r = KL_ERR_CRC;
				goto out;
			}
		} else
			goto out;
		/* Every unanswered request again, same bytes, same seq, in
		 * order: the board answers those it ran from its cache. */
		for (i = oldest; i < next; i++) {
			if (sl[i].done)
				continue;
			l->st.retries++;
			log_debug("%s: %s seq %u: sent again (%d timed out, "
			    "%d corrupt)", l->path, proto_type_name(rq[i].type),
			    sl[i].seq, timeouts, corrupt);
			if ((r = link_send_slot(l, &sl[i],
			    rq[i].timeout_ms)) != 0)
				goto out;
		}
		deadline = link_now_ms() + rq[oldest].timeout_ms;
	}
	r = 0;
out:
	if (r != 0 && failed != NULL)
		*failed = oldest < n ? oldest : n - 1;
	return r;
}

int
link_call(struct link *l, uint8_t type, const struct buf *req,
    struct buf *resp, int timeout_ms, char *remote_err, size_t errsz)
{
	struct link_req rq;
	int r;

	memset(&rq, 0, sizeof(rq));
	rq.type = type;
	rq.req = req;
	rq.resp = resp;
	rq.timeout_ms = timeout_ms;
	if ((r = link_call_many(l, &rq, 1, NULL)) != 0)
		return r;
	if (rq.rc == KL_ERR_REMOTE && remote_err != NULL && errsz > 0)
		snprintf(remote_err, errsz, "%s", rq.err);
	return rq.rc;
}
