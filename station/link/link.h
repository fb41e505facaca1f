/*
 * link.h: the station's end of a board link.
 *
 * A transport is an ops table (serial termios today, USB later) with a
 * written contract, so a test can put a real pty or a simulated USB device
 * underneath.  On top, link_call() does one request/response exchange with
 * retries: a lost, corrupt or NAKed exchange is sent again with the same seq,
 * and the board answers a repeated seq from its cache without running the
 * command twice (docs/protocol.md).
 */
#ifndef KL_LINK_H
#define KL_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define PROTO_LINK_ERR_MAX 320	/* an error answer's words and code name */

struct link_params {
	int baud;		/* serial only; 0 = leave as is */
};

/*
 * Contract for transports.  All calls may block at most timeout_ms.
 *   open:  0 and *ctx, or KL_ERR_IO / KL_ERR_NOT_FOUND.
 *   read:  bytes read (> 0), KL_ERR_TIMEOUT when nothing arrived in time,
 *          KL_ERR_CLOSED when the other end is gone, KL_ERR_IO otherwise.
 *   write: 0 when all n bytes were written, KL_ERR_TIMEOUT, KL_ERR_CLOSED,
 *          KL_ERR_IO.
 *   close: releases ctx; accepts NULL.
 */
struct link_ops {
	const char *name;
	int (*open)(const char *path, const struct link_params *p, void **ctx);
	int (*read)(void *ctx, void *p, size_t n, int timeout_ms);
	int (*write)(void *ctx, const void *p, size_t n, int timeout_ms);
	void (*close)(void *ctx);
	/* Discard bytes queued in either direction (after an error). */
	void (*flush)(void *ctx);
};

struct link_stats {
	uint64_t bytes_tx;
	uint64_t bytes_rx;
	uint32_t frames_tx;
	uint32_t frames_rx;
	uint32_t retries;	/* requests sent again */
	uint32_t crc_errors;	/* corrupt frames received */
	uint32_t naks;		/* NAKs received from the board */
};

struct link;

/* Opens path through ops.  Caller frees with link_close(). */
int link_open(struct link **out, const struct link_ops *ops, const char *path,
    const struct link_params *p);
void link_close(struct link *l);

/*
 * While *flag is non-zero, link_call gives up within ~200 ms with
 * KL_ERR_CANCELLED instead of waiting out its timeout.  flag is borrowed
 * (NULL: never cancelled); the engine points it at its cancel flag only
 * while nothing has been written to the board.
 */
void link_set_cancel(struct link *l, const volatile int *flag);

/*
 * Attempts per exchange that may time out (first try included); default 4.
 * Resends: how many more times a request is sent because it was NAKed or
 * its answer arrived corrupt; default 16.  A live board on a noisy line
 * costs a frame time per resend, a dead one a whole timeout per attempt.
 */
void link_set_attempts(struct link *l, int attempts);
void link_set_resends(struct link *l, int resends);

/*
 * One exchange: send type with req (may be NULL for an empty payload), wait
 * up to timeout_ms per attempt for the answer.  On success resp holds the
 * answer's payload (resp is reset first, its max must be >=
 * FRAME_MAX_PAYLOAD).  If the board answers with an error frame, returns
 * KL_ERR_REMOTE and copies its message into remote_err (may be NULL).
 * Other returns: KL_ERR_TIMEOUT after `attempts` attempts timed out,
 * KL_ERR_CRC after `resends` resends for corruption were not enough,
 * KL_ERR_CLOSED, KL_ERR_IO, KL_ERR_PROTO.
 */
int link_call(struct link *l, uint8_t type, const struct buf *req,
    struct buf *resp, int timeout_ms, char *remote_err, size_t errsz);

/*
 * From now on, requests but HELLO go with their fields in the compact
 * form of protocol version 2 (FRAME_F_COMPACT, proto_tlv_compact); the
 * engine sets it once HELLO agreed version 2.  Answers flagged so are
 * read whatever this says.  Callers keep the 4-byte form.
 */
void link_set_compact(struct link *l, int on);

/*
 * Pipelining (protocol v2, docs/protocol.md "Pipelining"): up to
 * LINK_PIPE_MAX requests outstanding at once, their frames together at
 * most LINK_PIPE_MAX_BYTES (well under a 4 KiB tty buffer; a request
 * that would pass it waits until earlier ones are answered).  Only
 * requests that do not depend on each other's order go in one call: after
 * a NAK the board may run them in another order.
 */
#define LINK_PIPE_MAX 4
#define LINK_PIPE_MAX_BYTES 3072

struct link_req {
	uint8_t type;
	const struct buf *req;	/* NULL: empty payload; borrowed */
	struct buf *resp;	/* the answer's payload (max >=
				 * FRAME_MAX_PAYLOAD); borrowed */
	int timeout_ms;		/* per attempt, from when the request
				 * before it was answered */
	int rc;			/* out: 0, KL_ERR_REMOTE (words in err) or
				 * KL_ERR_PROTO (malformed fields) */
	char err[PROTO_LINK_ERR_MAX];
};

/*
 * Sends rq[0..n-1] (n <= LINK_PIPE_MAX) each under its own seq, without
 * waiting for one answer before the next request, and collects the
 * answers, matched by seq.  When the board NAKs, an answer arrives
 * corrupt or the oldest unanswered request times out, every unanswered
 * request is sent again with its seq (the board answers a repeat from its
 * cache of recent answers).  Each request has the budgets of link_call.
 * 0 when every request got an answer (each rq[i].rc says which kind);
 * otherwise the exchange failed as link_call would (KL_ERR_TIMEOUT,
 * KL_ERR_CRC, KL_ERR_CLOSED, KL_ERR_IO, KL_ERR_PROTO, KL_ERR_CANCELLED),
 * *failed (may be NULL) the index of the request it failed at.
 */
int link_call_many(struct link *l, struct link_req *rq, size_t n,
    size_t *failed);

const struct link_stats *link_stats(const struct link *l);

#endif
