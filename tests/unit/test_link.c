/*
 * test_link.c: link_call() over the real termios transport on a pty pair.
 *
 * The station end opens the pty slave through serial_link_ops exactly as it
 * opens /dev/ttyACM0.  A responder thread on the master plays the board: it
 * decodes requests with the real frame decoder and answers as a scenario
 * says (answer, drop, corrupt, NAK, error, silence, wrong type, stale
 * answer, hang up).  Like the agent it caches its answer per seq and replays
 * it for a repeated seq, counting how often it really "ran" a command.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <pty.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/err.h"
#include "station/link/frame.h"
#include "station/link/link.h"
#include "station/link/serial.h"
#include "station/link/proto.h"

#define SHORT_MS 100	/* per-attempt timeout where a timeout is expected */
#define LONG_MS 3000	/* where an answer is expected */
#define MAX_SEEN 64

enum scenario {
	SC_ANSWER,		/* answer every request */
	SC_DROP_FIRST,		/* ignore the first request */
	SC_CORRUPT_FIRST,	/* flip a payload byte of the first answer */
	SC_CORRUPT_FIRST_KL,	/* same, answer full of "KL" byte pairs */
	SC_NAK_FIRST,		/* NAK the first request */
	SC_NAK_MANY,		/* NAK the first nak_count requests */
	SC_ERROR,		/* error answer */
	SC_SILENT,		/* never answer */
	SC_WRONG_TYPE,		/* answer with another type */
	SC_STALE_FIRST,		/* an answer to an older seq, then the real one */
	SC_HANGUP,		/* close the master on the first request */
};

struct responder {
	int fd;			/* pty master; -1 once closed */
	enum scenario sc;
	int nak_count;		/* SC_NAK_MANY */
	pthread_t th;
	int started;
	pthread_mutex_t mu;
	int stop;
	/* What arrived, under mu. */
	int requests;
	uint16_t seqs[MAX_SEEN];
	uint8_t types[MAX_SEEN];
	int echoes;		/* frames with FRAME_F_RESPONSE: our own answers
				 * reflected by a pty not in raw mode */
	int bad_frames;
	int runs;		/* commands really executed (new seqs) */
	/* The board's answer cache. */
	int have_cache;
	uint16_t cache_seq;
	struct buf cache;	/* encoded answer frame */
};

struct fixture {
	int master;
	int slave;
	char path[128];
	struct responder rs;
	struct link *l;
	struct buf req;
	struct buf resp;
};

static void
write_all(int fd, const uint8_t *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(fd, p, n);
		if (w < 0 && (errno == EINTR || errno == EAGAIN)) {
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };

			(void)poll(&pfd, 1, 100);
			continue;
		}
		if (w <= 0)
			return;		/* station gone; the test will tell */
		p += w;
		n -= (size_t)w;
	}
}

/* The board "runs" a command: its answer echoes the request's payload in
 * PT_CSR and says which run this is in PT_FILE_SIZE. */
static void
run_command(struct responder *rs, const struct frame *f, struct buf *out)
{
	struct buf pl;

	buf_init(&pl, FRAME_MAX_PAYLOAD);
	rs->runs++;
	if (rs->sc == SC_CORRUPT_FIRST_KL) {
		/* Several byte pairs that look like a frame start, far enough
		 * apart that each has a whole "header" behind it. */
		static const char kl[] = "KL..........KL..........KL..........KL"
		    "..........KL..........KL..........";

		assert_int_equal(proto_put_bytes(&pl, PT_CERT, kl,
		    sizeof(kl) - 1), 0);
	}
	assert_int_equal(proto_put_bytes(&pl, PT_CSR, f->payload, f->len), 0);
	assert_int_equal(proto_put_u32(&pl, PT_FILE_SIZE, (uint32_t)rs->runs),
	    0);
	buf_reset(out);
	assert_int_equal(frame_encode(out, f->type, FRAME_F_RESPONSE, f->seq,
	    pl.data, pl.len), 0);
	buf_free(&pl);
}

static void
send_frame(struct responder *rs, uint8_t type, uint8_t flags, uint16_t seq,
    const struct buf *pl)
{
	struct buf out;

	buf_init(&out, FRAME_MAX_LEN);
	assert_int_equal(frame_encode(&out, type, flags, seq,
	    pl != NULL ? pl->data : NULL, pl != NULL ? pl->len : 0), 0);
	write_all(rs->fd, out.data, out.len);
	buf_free(&out);
}

static void
handle(struct responder *rs, const struct frame *f)
{
	struct buf pl, out;
	int n;

	pthread_mutex_lock(&rs->mu);
	if (f->flags & FRAME_F_RESPONSE) {
		rs->echoes++;
		pthread_mutex_unlock(&rs->mu);
		return;
	}
	n = ++rs->requests;
	if (n <= MAX_SEEN) {
		rs->seqs[n - 1] = f->seq;
		rs->types[n - 1] = f->type;
	}
	pthread_mutex_unlock(&rs->mu);

	switch (rs->sc) {
	case SC_SILENT:
		return;
	case SC_DROP_FIRST:
		if (n == 1)
			return;
		break;
	case SC_NAK_FIRST:
		if (n == 1) {
			send_frame(rs, f->type, FRAME_F_RESPONSE | FRAME_F_NAK,
			    f->seq, NULL);
			return;
		}
		break;
	case SC_NAK_MANY:
		if (n <= rs->nak_count) {
			send_frame(rs, 0, FRAME_F_RESPONSE | FRAME_F_NAK, 0,
			    NULL);
			return;
		}
		break;
	case SC_ERROR:
		buf_init(&pl, 1024);
		assert_int_equal(proto_put_u32(&pl, PT_ERR_CODE,
		    (uint32_t)KL_ERR_HSM), 0);
		assert_int_equal(proto_put_str(&pl, PT_ERR_MSG, "token full"),
		    0);
		send_frame(rs, f->type, FRAME_F_RESPONSE | FRAME_F_ERROR,
		    f->seq, &pl);
		buf_free(&pl);
		return;
	case SC_WRONG_TYPE:
		send_frame(rs, PROTO_SIGN, FRAME_F_RESPONSE, f->seq, NULL);
		return;
	case SC_STALE_FIRST:
		if (n == 1) {
			buf_init(&pl, 64);
			assert_int_equal(proto_put_str(&pl, PT_SERIAL,
			    "stale"), 0);
			send_frame(rs, PROTO_SIGN, FRAME_F_RESPONSE,
			    (uint16_t)(f->seq - 1), &pl);
			buf_free(&pl);
		}
		break;
	case SC_HANGUP:
		pthread_mutex_lock(&rs->mu);
		close(rs->fd);
		rs->fd = -1;
		pthread_mutex_unlock(&rs->mu);
		return;
	default:
		break;
	}

	/* Answer from the cache for a repeated seq, else run. */
	if (!rs->have_cache || rs->cache_seq != f->seq) {
		run_command(rs, f, &rs->cache);
		rs->have_cache = 1;
		rs->cache_seq = f->seq;
	}
	if ((rs->sc == SC_CORRUPT_FIRST || rs->sc == SC_CORRUPT_FIRST_KL) &&
	    n == 1) {
		buf_init(&out, FRAME_MAX_LEN);
		assert_int_equal(buf_put(&out, rs->cache.data, rs->cache.len),
		    0);
		out.data[FRAME_HDR_LEN + 2] ^= 0x20;	/* in the payload */
		write_all(rs->fd, out.data, out.len);
		buf_free(&out);
		return;
	}
	write_all(rs->fd, rs->cache.data, rs->cache.len);
}

static void *
responder_main(void *arg)
{
	struct responder *rs = arg;
	struct frame_decoder d;
	struct frame f;
	uint8_t chunk[4096];
	ssize_t got;
	int r, stop;

	frame_decoder_init(&d);
	for (;;) {
		struct pollfd pfd = { .fd = rs->fd, .events = POLLIN };

		pthread_mutex_lock(&rs->mu);
		stop = rs->stop || rs->fd < 0;
		pthread_mutex_unlock(&rs->mu);
		if (stop)
			break;
		if (poll(&pfd, 1, 20) <= 0)
			continue;
		got = read(rs->fd, chunk, sizeof(chunk));
		if (got <= 0) {
			if (got < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			usleep(10000);	/* slave not open: EIO until it is */
			continue;
		}
		if (frame_decoder_push(&d, chunk, (size_t)got) != 0)
			break;
		while ((r = frame_decoder_next(&d, &f)) != 0) {
			if (r < 0) {
				pthread_mutex_lock(&rs->mu);
				rs->bad_frames++;
				pthread_mutex_unlock(&rs->mu);
				continue;
			}
			handle(rs, &f);
			if (rs->fd < 0)
				break;
		}
	}
	frame_decoder_free(&d);
	return NULL;
}

static void
responder_start(struct fixture *fx, enum scenario sc)
{
	fx->rs.sc = sc;
	assert_int_equal(pthread_create(&fx->rs.th, NULL, responder_main,
	    &fx->rs), 0);
	fx->rs.started = 1;
}

static int
setup(void **state)
{
	struct link_params lp = { .baud = 115200 };
	struct fixture *fx;

	fx = calloc(1, sizeof(*fx));
	if (fx == NULL)
		return -1;
	if (openpty(&fx->master, &fx->slave, fx->path, NULL, NULL) != 0) {
		free(fx);
		return -1;
	}
	fx->rs.fd = fx->master;
	pthread_mutex_init(&fx->rs.mu, NULL);
	buf_init(&fx->rs.cache, FRAME_MAX_LEN);
	buf_init(&fx->req, FRAME_MAX_PAYLOAD);
	buf_init(&fx->resp, FRAME_MAX_PAYLOAD);
	if (link_open(&fx->l, &serial_link_ops, fx->path, &lp) != 0)
		return -1;
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *fx = *state;

	if (fx == NULL)
		return 0;
	pthread_mutex_lock(&fx->rs.mu);
	fx->rs.stop = 1;
	pthread_mutex_unlock(&fx->rs.mu);
	if (fx->rs.started)
		pthread_join(fx->rs.th, NULL);
	link_close(fx->l);
	if (fx->rs.fd >= 0)
		close(fx->rs.fd);
	if (fx->slave >= 0)
		close(fx->slave);
	pthread_mutex_destroy(&fx->rs.mu);
	buf_free(&fx->rs.cache);
	buf_free(&fx->req);
	buf_free(&fx->resp);
	free(fx);
	return 0;
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The answer carries the request payload back in PT_CSR. */
static void
assert_echo(const struct fixture *fx, uint32_t want_run)
{
	const uint8_t *p;
	uint32_t run;
	size_t n;

	assert_int_equal(proto_get_bytes(fx->resp.data, fx->resp.len, PT_CSR,
	    FRAME_MAX_PAYLOAD, &p, &n), 0);
	assert_int_equal(n, fx->req.len);
	if (n > 0)
		assert_memory_equal(p, fx->req.data, n);
	assert_int_equal(proto_get_u32(fx->resp.data, fx->resp.len,
	    PT_FILE_SIZE, &run), 0);
	assert_int_equal(run, want_run);
}

static void
test_answer(void **state)
{
	struct fixture *fx = *state;
	const struct link_stats *st;
	uint16_t seq1;

	responder_start(fx, SC_ANSWER);
	assert_int_equal(proto_put_str(&fx->req, PT_SUBJECT_CN, "dev-1"), 0);
	assert_int_equal(link_call(fx->l, PROTO_CSR, &fx->req, &fx->resp,
	    LONG_MS, NULL, 0), 0);
	assert_echo(fx, 1);

	/* A second call gets a fresh seq, and a fresh answer. */
	assert_int_equal(link_call(fx->l, PROTO_COMMIT, NULL, &fx->resp,
	    LONG_MS, NULL, 0), 0);
	pthread_mutex_lock(&fx->rs.mu);
	assert_int_equal(fx->rs.requests, 2);
	assert_int_equal(fx->rs.types[0], PROTO_CSR);
	assert_int_equal(fx->rs.types[1], PROTO_COMMIT);
	seq1 = fx->rs.seqs[0];
	assert_int_not_equal(fx->rs.seqs[1], seq1);
	assert_int_equal(fx->rs.runs, 2);
	assert_int_equal(fx->rs.echoes, 0);
	assert_int_equal(fx->rs.bad_frames, 0);
	pthread_mutex_unlock(&fx->rs.mu);

	st = link_stats(fx->l);
	assert_int_equal(st->retries, 0);
	assert_int_equal(st->frames_tx, 2);
	assert_int_equal(st->frames_rx, 2);
	assert_int_equal(st->crc_errors, 0);
	assert_true(st->bytes_tx > 0 && st->bytes_rx > 0);
}

static void
test_raw_mode(void **state)
{
	struct fixture *fx = *state;
	struct termios tio;
	uint8_t all[256 * 4];
	size_t i;

	/* The line discipline must not touch anything: no echo, no canonical
	 * mode, no signals, no CR/NL mapping, no XON/XOFF, no output
	 * processing. */
	assert_int_equal(tcgetattr(fx->slave, &tio), 0);
	assert_int_equal(tio.c_lflag & (ECHO | ECHONL | ICANON | ISIG | IEXTEN),
	    0);
	assert_int_equal(tio.c_iflag & (ICRNL | INLCR | IGNCR | IXON | ISTRIP),
	    0);
	assert_int_equal(tio.c_oflag & OPOST, 0);
	assert_int_equal(tio.c_cflag & CSIZE, CS8);
	assert_int_equal(tio.c_cflag & PARENB, 0);
	assert_int_equal(cfgetospeed(&tio), B115200);

	/* And in effect: every byte value both ways, including ^C, ^D, ^Q,
	 * ^S, CR, NL and DEL. */
	responder_start(fx, SC_ANSWER);
	for (i = 0; i < sizeof(all); i++)
		all[i] = (uint8_t)i;
	assert_int_equal(proto_put_bytes(&fx->req, PT_FILE_DATA, all,
	    sizeof(all)), 0);
	assert_int_equal(link_call(fx->l, PROTO_PUT_FILE, &fx->req, &fx->resp,
	    LONG_MS, NULL, 0), 0);
	assert_echo(fx, 1);
	pthread_mutex_lock(&fx->rs.mu);
	assert_int_equal(fx->rs.echoes, 0);
	assert_int_equal(fx->rs.bad_frames, 0);
	pthread_mutex_unlock(&fx->rs.mu);
}

static void
test_big_request(void **state)
{
	struct fixture *fx = *state;
	uint8_t *data;
	size_t i;

	/* Larger than the pty's buffer: the transport must wait for room
	 * rather than fail or drop bytes. */
	responder_start(fx, SC_ANSWER);
	assert_non_null(data = malloc(PROTO_MAX_FILE));
	for (i = 0; i < PROTO_MAX_FILE; i++)
		data[i] = (uint8_t)(i ^ (i >> 7));
	assert_int_equal(proto_put_str(&fx->req, PT_FILE_NAME, "client.pem"),
	    0);
	assert_int_equal(proto_put_bytes(&fx->req, PT_FILE_DATA, data,
	    PROTO_MAX_FILE), 0);
	assert_int_equal(link_call(fx->l, PROTO_PUT_FILE, &fx->req, &fx->resp,
	    LONG_MS, NULL, 0), 0);
	assert_echo(fx, 1);
	assert_int_equal(link_stats(fx->l)->retries, 0);
	free(data);
}

static void
test_drop_first(void **state)
{
	struct fixture *fx = *state;
	const struct link_stats *st;
	int64_t t0;

	responder_start(fx, SC_DROP_FIRST);
	assert_int_equal(proto_put_str(&fx->req, PT_KEY_TYPE, "ec-p256"), 0);
	t0 = now_ms();
	assert_int_equal(link_call(fx->l, PROTO_KEYGEN, &fx->req, &fx->resp,
	    SHORT_MS * 3, NULL, 0), 0);
	assert_true(now_ms() - t0 >= SHORT_MS * 3 - 10);	/* waited */
	assert_echo(fx, 1);
	st = link_stats(fx->l);
	assert_int_equal(st->retries, 1);
	assert_int_equal(st->frames_tx, 2);
	pthread_mutex_lock(&fx->rs.mu);
	assert_int_equal(fx->rs.requests, 2);
	assert_int_equal(fx->rs.seqs[0], fx->rs.seqs[1]);
	pthread_mutex_unlock(&fx->rs.mu);
}

static void
test_corrupt_first(void **state)
{
	struct fixture *fx = *state;
	const struct link_stats *st;

	responder_start(fx, SC_CORRUPT_FIRST);
	assert_int_equal(proto_put_str(&fx->req, PT_KEY_TYPE, "ec-p256"), 0);
	assert_int_equal(link_call(fx->l, PROTO_KEYGEN, &fx->req, &fx->resp,
	    LONG_MS, NULL, 0), 0);
	/* The replayed answer of the one run, not a second keygen. */
	assert_echo(fx, 1);
	st = link_stats(fx->l);
	assert_int_equal(st->retries, 1);
	assert_int_equal(st->crc_errors, 1);
	pthread_mutex_lock(&fx->rs.mu);
	assert_int_equal(fx->rs.requests, 2);
	assert_int_equal(fx->rs.seqs[0], fx->rs.seqs[1]);
	assert_int_equal(fx->rs.runs, 1);
	pthread_mutex_unlock(&fx->rs.mu);
}

static void
test_corrupt_first_kl(void **state)
{
	struct fixture *fx = *state;
	const struct link_stats *st;

	/* One corrupt answer is one corrupt frame: byte pairs inside it that
	 * look like a frame start must not each cost an attempt. */
	responder_start(fx, SC_CORRUPT_FIRST_KL);
	link_set_attempts(fx->l, 3);
	assert_int_equal(proto_put_str(&fx->req, PT_KEY_TYPE, "ec-p256"), 0);
	assert_int_equal(link_call(fx->l, PROTO_KEYGEN, &fx->req, &fx->resp,
	    LONG_MS, NULL, 0), 0);
	assert_echo(fx, 1);
	st = link_stats(fx->l);
	assert_int_equal(st->retries, 1);
	assert_int_equal(st->crc_errors, 1);
	pthread_mutex_lock(&fx->rs.mu);
	assert_int_equal(fx->rs.runs, 1);
	pthread_mutex_unlock(&fx->rs.mu);
}

static void
test_nak_first(void **state)
{
	struct fixture *fx = *state;
	const struct link_stats *st;
	int64_t t0;

	responder_start(fx, SC_NAK_FIRST);
	assert_int_equal(proto_put_str(&fx->req, PT_FILE_NAME, "root.crt"),
	    0);
	t0 = now_ms();
	assert_int_equal(link_call(fx->l, PROTO_FILE_HASH, &fx->req,
	    &fx->resp, LONG_MS, NULL, 0), 0);
	assert_true(now_ms() - t0 < LONG_MS);	/* resent at once */
	assert_echo(fx, 1);
	st = link_stats(fx->l);
	assert_int_equal(st->naks, 1);
	assert_int_equal(st->retries, 1);
	pthread_mutex_lock(&fx->rs.mu);
	assert_int_equal(fx->rs.requests, 2);
	assert_int_equal(fx->rs.seqs[0], fx->rs.seqs[1]);
	pthread_mutex_unlock(&fx->rs.mu);
}

/* A noisy line: more NAKs than `attempts`, fewer than `resends`.  The
 * board is there, so the exchange goes on, at once each time, and the
 * command runs once. */
static void
test_nak_many_within_resends(void **state)
{
	struct fixture *fx = *state;
	const struct link_stats *st;
	int64_t t0;

	fx->rs.nak_count = 10;
	responder_start(fx, SC_NAK_MANY);
	link_set_attempts(fx->l, 2);
	link_set_resends(fx->l, 12);
	assert_int_equal(proto_put_str(&fx->req, PT_KEY_TYPE, "ec-p256"), 0);
	t0 = now_ms();
	assert_int_equal(link_call(fx->l, PROTO_KEYGEN, &fx->req, &fx->resp,
	    LONG_MS, NULL, 0), 0);
	assert_true(now_ms() - t0 < LONG_MS);	/* no timeout waited out */
	assert_echo(fx, 1);
	st = link_stats(fx->l);
	assert_int_equal(st->naks, 10);
	assert_int_equal(st->retries, 10);
	pthread_mutex_lock(&fx->rs.mu);
	assert_int_equal(fx->rs.requests, 11);
	assert_int_equal(fx->rs.seqs[10], fx->rs.seqs[0]);
	assert_int_equal(fx->rs.runs, 1);
	pthread_mutex_unlock(&fx->rs.mu);
}

/* A line that corrupts everything ends with KL_ERR_CRC after exactly
 * `resends` resends, not with a timeout after `attempts`. */
static void
test_nak_beyond_resends(void **state)
{
	struct fixture *fx = *state;
	const struct link_stats *st;

	fx->rs.nak_count = 1000;
	responder_start(fx, SC_NAK_MANY);
	link_set_attempts(fx->l, 2);
	link_set_resends(fx->l, 5);
	assert_int_equal(link_call(fx->l, PROTO_HELLO, NULL, &fx->resp,
	    LONG_MS, NULL, 0), KL_ERR_CRC);
	st = link_stats(fx->l);
	assert_int_equal(st->frames_tx, 6);
	assert_int_equal(st->naks, 6);
	usleep(50 * 1000);
	pthread_mutex_lock(&fx->rs.mu);
	assert_int_equal(fx->rs.requests, 6);
	assert_int_equal(fx->rs.runs, 0);
	pthread_mutex_unlock(&fx->rs.mu);

	/* resends 0: the first NAK ends the exchange. */
	link_set_resends(fx->l, 0);
	assert_int_equal(link_call(fx->l, PROTO_HELLO, NULL, &fx->resp,
	    LONG_MS, NULL, 0), KL_ERR_CRC);
	assert_int_equal(link_stats(fx->l)->frames_tx, 7);
}

static void
test_error_answer(void **state)
{
	struct fixture *fx = *state;
	char err[128] = "";

	responder_start(fx, SC_ERROR);
	assert_int_equal(buf_put(&fx->resp, "old", 3), 0);
	assert_int_equal(link_call(fx->l, PROTO_PUT_CERT, NULL, &fx->resp,
	    LONG_MS, err, sizeof(err)), KL_ERR_REMOTE);
	assert_non_null(strstr(err, "token full"));
	assert_non_null(strstr(err, "hsm"));	/* kl_errname of the code */
	assert_int_equal(link_stats(fx->l)->retries, 0);	/* not retried */
	/* A small err buffer is truncated, not overrun. */
	assert_int_equal(link_call(fx->l, PROTO_PUT_CERT, NULL, &fx->resp,
	    LONG_MS, err, 6), KL_ERR_REMOTE);
	assert_string_equal(err, "token");
	/* And NULL is allowed. */
	assert_int_equal(link_call(fx->l, PROTO_PUT_CERT, NULL, &fx->resp,
	    LONG_MS, NULL, 0), KL_ERR_REMOTE);
}

static void
test_silent(void **state)
{
	struct fixture *fx = *state;
	const struct link_stats *st;
	int64_t t0, dt;
	int i;

	responder_start(fx, SC_SILENT);
	link_set_attempts(fx->l, 3);
	t0 = now_ms();
	assert_int_equal(link_call(fx->l, PROTO_HELLO, NULL, &fx->resp,
	    SHORT_MS, NULL, 0), KL_ERR_TIMEOUT);
	dt = now_ms() - t0;
	assert_true(dt >= 3 * SHORT_MS - 10);
	assert_true(dt < 3 * SHORT_MS + 1000);
	st = link_stats(fx->l);
	assert_int_equal(st->frames_tx, 3);
	assert_int_equal(st->retries, 2);
	usleep(50 * 1000);	/* let the last request reach the responder */
	pthread_mutex_lock(&fx->rs.mu);
	assert_int_equal(fx->rs.requests, 3);
	for (i = 1; i < 3; i++)
		assert_int_equal(fx->rs.seqs[i], fx->rs.seqs[0]);
	pthread_mutex_unlock(&fx->rs.mu);

	/* attempts below 1 still means one try. */
	link_set_attempts(fx->l, 0);
	assert_int_equal(link_call(fx->l, PROTO_HELLO, NULL, &fx->resp,
	    SHORT_MS, NULL, 0), KL_ERR_TIMEOUT);
	assert_int_equal(link_stats(fx->l)->frames_tx, 4);
}

static void
test_wrong_type(void **state)
{
	struct fixture *fx = *state;

	responder_start(fx, SC_WRONG_TYPE);
	assert_int_equal(link_call(fx->l, PROTO_CSR, NULL, &fx->resp,
	    LONG_MS, NULL, 0), KL_ERR_PROTO);
}

static void
test_stale_answer(void **state)
{
	struct fixture *fx = *state;

	/* An answer with an older seq (even of another type) belongs to an
	 * earlier exchange and is skipped. */
	responder_start(fx, SC_STALE_FIRST);
	assert_int_equal(proto_put_str(&fx->req, PT_KEY_LABEL, "tls"), 0);
	assert_int_equal(link_call(fx->l, PROTO_KEYGEN, &fx->req, &fx->resp,
	    LONG_MS, NULL, 0), 0);
	assert_echo(fx, 1);
	assert_int_equal(link_stats(fx->l)->retries, 0);
	assert_int_equal(link_stats(fx->l)->frames_rx, 2);
}

static void
test_hangup(void **state)
{
	struct fixture *fx = *state;

	/* The board end goes away: reported as closed, promptly. */
	responder_start(fx, SC_HANGUP);
	close(fx->slave);	/* only the link holds the slave now */
	fx->slave = -1;
	assert_int_equal(link_call(fx->l, PROTO_HELLO, NULL, &fx->resp,
	    LONG_MS, NULL, 0), KL_ERR_CLOSED);
}

static void
test_open_errors(void **state)
{
	struct fixture *fx = *state;
	struct link_params bad = { .baud = 12345 };
	struct link_params none = { .baud = 0 };
	char tmp[] = "/tmp/test_link.XXXXXX";
	struct link *l = NULL;
	int fd;

	assert_int_equal(link_open(&l, &serial_link_ops, fx->path, &bad),
	    KL_ERR_INVALID);
	assert_null(l);
	assert_int_equal(link_open(&l, &serial_link_ops, "/dev/null", &none),
	    KL_ERR_IO);
	assert_null(l);
	assert_true((fd = mkstemp(tmp)) >= 0);
	close(fd);
	assert_int_equal(link_open(&l, &serial_link_ops, tmp, NULL),
	    KL_ERR_IO);
	unlink(tmp);
	assert_int_equal(link_open(&l, &serial_link_ops,
	    "/nonexistent/ttyACM9", NULL), KL_ERR_NOT_FOUND);
	assert_null(l);
	/* baud 0 leaves the speed alone and opens fine. */
	assert_int_equal(link_open(&l, &serial_link_ops, fx->path, &none), 0);
	link_close(l);
	link_close(NULL);
}

/* Protocol v2 pipelining: three requests out before the first answer;
 * each answer lands in its own request's buffer, matched by seq. */
static void
test_pipeline(void **state)
{
	struct fixture *fx = *state;
	struct link_req rq[3];
	struct buf req[3], resp[3];
	const uint8_t *p;
	size_t i, n;

	responder_start(fx, SC_ANSWER);
	memset(rq, 0, sizeof(rq));
	for (i = 0; i < 3; i++) {
		buf_init(&req[i], 64);
		buf_init(&resp[i], FRAME_MAX_PAYLOAD);
		assert_int_equal(proto_put_u32(&req[i], PT_FILE_MODE,
		    (uint32_t)i), 0);
		rq[i].type = i == 0 ? PROTO_KEYGEN : PROTO_PUT_FILE;
		rq[i].req = &req[i];
		rq[i].resp = &resp[i];
		rq[i].timeout_ms = LONG_MS;
	}
	assert_int_equal(link_call_many(fx->l, rq, 3, NULL), 0);
	for (i = 0; i < 3; i++) {
		assert_int_equal(rq[i].rc, 0);
		/* the responder echoes the request's fields in PT_CSR */
		assert_int_equal(proto_get_bytes(resp[i].data, resp[i].len,
		    PT_CSR, 64, &p, &n), 0);
		assert_int_equal(n, req[i].len);
		assert_memory_equal(p, req[i].data, n);
	}
	pthread_mutex_lock(&fx->rs.mu);
	assert_int_equal(fx->rs.requests, 3);
	assert_int_equal(fx->rs.runs, 3);
	assert_int_equal(fx->rs.types[0], PROTO_KEYGEN);
	assert_int_not_equal(fx->rs.seqs[0], fx->rs.seqs[1]);
	pthread_mutex_unlock(&fx->rs.mu);
	/* More than LINK_PIPE_MAX at once is the caller's mistake. */
	assert_int_equal(link_call_many(fx->l, rq, LINK_PIPE_MAX + 1, NULL),
	    KL_ERR_INVALID);
	for (i = 0; i < 3; i++) {
		buf_free(&req[i]);
		buf_free(&resp[i]);
	}
}

/* The first of three is lost: the answers to the other two are kept, and
 * only the unanswered one goes again once its timeout runs out. */
static void
test_pipeline_drop_first(void **state)
{
	struct fixture *fx = *state;
	struct link_req rq[3];
	struct buf req[3], resp[3];
	size_t i;

	responder_start(fx, SC_DROP_FIRST);
	memset(rq, 0, sizeof(rq));
	for (i = 0; i < 3; i++) {
		buf_init(&req[i], 64);
		buf_init(&resp[i], FRAME_MAX_PAYLOAD);
		assert_int_equal(proto_put_u32(&req[i], PT_FILE_MODE,
		    (uint32_t)i), 0);
		rq[i].type = PROTO_PUT_FILE;
		rq[i].req = &req[i];
		rq[i].resp = &resp[i];
		rq[i].timeout_ms = SHORT_MS * 3;
	}
	assert_int_equal(link_call_many(fx->l, rq, 3, NULL), 0);
	for (i = 0; i < 3; i++)
		assert_int_equal(rq[i].rc, 0);
	assert_int_equal(link_stats(fx->l)->retries, 1);
	pthread_mutex_lock(&fx->rs.mu);
	assert_int_equal(fx->rs.requests, 4);
	assert_int_equal(fx->rs.runs, 3);
	assert_int_equal(fx->rs.seqs[3], fx->rs.seqs[0]);
	pthread_mutex_unlock(&fx->rs.mu);
	for (i = 0; i < 3; i++) {
		buf_free(&req[i]);
		buf_free(&resp[i]);
	}
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_answer),
		T(test_raw_mode),
		T(test_big_request),
		T(test_drop_first),
		T(test_corrupt_first),
		T(test_corrupt_first_kl),
		T(test_nak_first),
		T(test_nak_many_within_resends),
		T(test_nak_beyond_resends),
		T(test_error_answer),
		T(test_silent),
		T(test_wrong_type),
		T(test_stale_answer),
		T(test_hangup),
		T(test_open_errors),
		T(test_pipeline),
		T(test_pipeline_drop_first),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
