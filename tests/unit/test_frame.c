/*
 * test_frame.c: the frame codec and the stream decoder.
 *
 * The decoder sits on a serial line, so the tests feed it what a line
 * delivers: frames split at every byte, frames glued together, garbage,
 * truncation and every single-bit error in a frame.  The rule checked
 * throughout: a corrupt frame is never handed out as valid, and the decoder
 * always finds the next good frame.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/err.h"
#include "station/link/frame.h"

/* Enough next() calls to get through any garbage the tests push. */
#define MAX_STEPS 100000

static void
encode(struct buf *b, uint8_t type, uint8_t flags, uint16_t seq,
    const void *p, size_t n)
{
	buf_init(b, FRAME_MAX_LEN * 2);
	assert_int_equal(frame_encode(b, type, flags, seq, p, n), 0);
	assert_int_equal(b->len, FRAME_HDR_LEN + n + FRAME_TRAILER_LEN);
}

static void
assert_frame(const struct frame *f, uint8_t type, uint8_t flags,
    uint16_t seq, const void *p, size_t n)
{
	assert_int_equal(f->type, type);
	assert_int_equal(f->flags, flags);
	assert_int_equal(f->seq, seq);
	assert_int_equal(f->len, n);
	if (n > 0)
		assert_memory_equal(f->payload, p, n);
}

/*
 * Call next() until it returns a frame or needs bytes; count errors.
 * Returns 1 or 0 like next().
 */
static int
next_skipping_errors(struct frame_decoder *d, struct frame *f, int *errors)
{
	int i, r;

	for (i = 0; i < MAX_STEPS; i++) {
		r = frame_decoder_next(d, f);
		if (r >= 0)
			return r;
		assert_true(r == KL_ERR_CRC || r == KL_ERR_TOO_BIG);
		(*errors)++;
	}
	fail_msg("decoder did not settle in %d steps", MAX_STEPS);
	return -1;
}

static void
test_crc32_vector(void **state)
{
	(void)state;
	assert_int_equal(frame_crc32("123456789", 9), 0xCBF43926u);
	assert_int_equal(frame_crc32("", 0), 0);
}

static void
test_layout(void **state)
{
	struct buf b;
	uint32_t crc;
	uint16_t hcrc;

	(void)state;
	encode(&b, 0x07, 0x03, 0xa1b2, "xyz", 3);
	assert_int_equal(b.data[0], 'K');
	assert_int_equal(b.data[1], 'L');
	assert_int_equal(b.data[2], 0x07);
	assert_int_equal(b.data[3], 0x03);
	assert_int_equal(b.data[4], 0xa1);	/* seq big-endian */
	assert_int_equal(b.data[5], 0xb2);
	assert_int_equal(b.data[6], 0);		/* length big-endian */
	assert_int_equal(b.data[7], 0);
	assert_int_equal(b.data[8], 0);
	assert_int_equal(b.data[9], 3);
	hcrc = (uint16_t)frame_crc32(b.data, 10);
	assert_int_equal(b.data[10], hcrc >> 8);
	assert_int_equal(b.data[11], hcrc & 0xff);
	assert_memory_equal(b.data + 12, "xyz", 3);
	crc = frame_crc32(b.data, 15);
	assert_int_equal(b.data[15], crc >> 24);
	assert_int_equal(b.data[16], (crc >> 16) & 0xff);
	assert_int_equal(b.data[17], (crc >> 8) & 0xff);
	assert_int_equal(b.data[18], crc & 0xff);
	buf_free(&b);
}

static void
test_roundtrip_empty(void **state)
{
	struct frame_decoder d;
	struct frame f;
	struct buf b;

	(void)state;
	encode(&b, 0x05, 0, 1, NULL, 0);
	frame_decoder_init(&d);
	assert_int_equal(frame_decoder_next(&d, &f), 0);	/* nothing yet */
	assert_int_equal(frame_decoder_push(&d, b.data, b.len), 0);
	assert_int_equal(frame_decoder_next(&d, &f), 1);
	assert_frame(&f, 0x05, 0, 1, NULL, 0);
	assert_int_equal(frame_decoder_next(&d, &f), 0);
	assert_int_equal(d.crc_errors, 0);
	assert_int_equal(d.bytes_dropped, 0);
	frame_decoder_free(&d);
	buf_free(&b);
}

static void
test_roundtrip_max(void **state)
{
	struct frame_decoder d;
	struct frame f;
	struct buf b;
	uint8_t *p;
	size_t i;

	(void)state;
	assert_non_null(p = malloc(FRAME_MAX_PAYLOAD));
	for (i = 0; i < FRAME_MAX_PAYLOAD; i++)
		p[i] = (uint8_t)(i * 31 + (i >> 8));
	encode(&b, 0x04, FRAME_F_RESPONSE, 0xffff, p, FRAME_MAX_PAYLOAD);
	assert_int_equal(b.len, FRAME_MAX_LEN);
	frame_decoder_init(&d);
	/* Two maximal frames fit in the decoder at once. */
	assert_int_equal(frame_decoder_push(&d, b.data, b.len), 0);
	assert_int_equal(frame_decoder_push(&d, b.data, b.len), 0);
	assert_int_equal(frame_decoder_next(&d, &f), 1);
	assert_frame(&f, 0x04, FRAME_F_RESPONSE, 0xffff, p, FRAME_MAX_PAYLOAD);
	assert_int_equal(frame_decoder_next(&d, &f), 1);
	assert_frame(&f, 0x04, FRAME_F_RESPONSE, 0xffff, p, FRAME_MAX_PAYLOAD);
	assert_int_equal(frame_decoder_next(&d, &f), 0);
	frame_decoder_free(&d);
	buf_free(&b);
	free(p);
}

static void
test_encode_too_big(void **state)
{
	struct buf b;
	uint8_t *p;

	(void)state;
	assert_non_null(p = calloc(1, FRAME_MAX_PAYLOAD + 1));
	buf_init(&b, FRAME_MAX_LEN * 2);
	assert_int_equal(buf_put(&b, "pre", 3), 0);
	assert_int_equal(frame_encode(&b, 1, 0, 1, p, FRAME_MAX_PAYLOAD + 1),
	    KL_ERR_TOO_BIG);
	assert_int_equal(b.len, 3);	/* nothing appended */
	buf_free(&b);

	/* An out buffer too small for the frame: rolled back, not half
	 * written. */
	buf_init(&b, 20);
	assert_int_equal(buf_put(&b, "pre", 3), 0);
	assert_int_equal(frame_encode(&b, 1, 0, 1, p, 10), KL_ERR_TOO_BIG);
	assert_int_equal(b.len, 3);
	buf_free(&b);
	free(p);
}

static void
test_byte_at_a_time(void **state)
{
	struct frame_decoder d;
	struct frame f;
	struct buf b;
	size_t i;

	(void)state;
	encode(&b, 0x02, FRAME_F_RESPONSE, 0x1234, "hello, board", 12);
	assert_int_equal(frame_encode(&b, 0x03, 0, 0x1235, "second", 6), 0);
	frame_decoder_init(&d);
	for (i = 0; i < b.len; i++) {
		assert_int_equal(frame_decoder_push(&d, b.data + i, 1), 0);
		if (i == FRAME_HDR_LEN + 12 + FRAME_TRAILER_LEN - 1) {
			assert_int_equal(frame_decoder_next(&d, &f), 1);
			assert_frame(&f, 0x02, FRAME_F_RESPONSE, 0x1234,
			    "hello, board", 12);
		} else if (i == b.len - 1) {
			assert_int_equal(frame_decoder_next(&d, &f), 1);
			assert_frame(&f, 0x03, 0, 0x1235, "second", 6);
		} else {
			assert_int_equal(frame_decoder_next(&d, &f), 0);
		}
	}
	assert_int_equal(frame_decoder_next(&d, &f), 0);
	assert_int_equal(d.crc_errors, 0);
	assert_int_equal(d.bytes_dropped, 0);
	frame_decoder_free(&d);
	buf_free(&b);
}

static void
test_back_to_back(void **state)
{
	struct frame_decoder d;
	struct frame f;
	struct buf b;

	(void)state;
	encode(&b, 0x01, 0, 10, "one", 3);
	assert_int_equal(frame_encode(&b, 0x09, FRAME_F_RESPONSE |
	    FRAME_F_ERROR, 11, "two!", 4), 0);
	frame_decoder_init(&d);
	assert_int_equal(frame_decoder_push(&d, b.data, b.len), 0);
	assert_int_equal(frame_decoder_next(&d, &f), 1);
	assert_frame(&f, 0x01, 0, 10, "one", 3);
	/* The first frame's payload stays valid until the next call. */
	assert_memory_equal(f.payload, "one", 3);
	assert_int_equal(frame_decoder_next(&d, &f), 1);
	assert_frame(&f, 0x09, FRAME_F_RESPONSE | FRAME_F_ERROR, 11,
	    "two!", 4);
	assert_int_equal(frame_decoder_next(&d, &f), 0);
	frame_decoder_free(&d);
	buf_free(&b);
}

static void
test_push_after_frame(void **state)
{
	struct frame_decoder d;
	struct frame f;
	struct buf b;

	(void)state;
	/* A push between two next() calls must not make the decoder hand out
	 * the first frame again or lose the second. */
	encode(&b, 0x01, 0, 1, "a", 1);
	frame_decoder_init(&d);
	assert_int_equal(frame_decoder_push(&d, b.data, b.len), 0);
	assert_int_equal(frame_decoder_next(&d, &f), 1);
	assert_frame(&f, 0x01, 0, 1, "a", 1);
	buf_reset(&b);
	assert_int_equal(frame_encode(&b, 0x02, 0, 2, "b", 1), 0);
	assert_int_equal(frame_decoder_push(&d, b.data, b.len), 0);
	assert_int_equal(frame_decoder_next(&d, &f), 1);
	assert_frame(&f, 0x02, 0, 2, "b", 1);
	assert_int_equal(frame_decoder_next(&d, &f), 0);
	assert_int_equal(d.in.len, 0);
	frame_decoder_free(&d);
	buf_free(&b);
}

static void
test_garbage_before(void **state)
{
	/* Garbage with a lone 'K' and a "KL" that is not a frame. */
	static const uint8_t junk[] = { 0x00, 0xff, 'K', 0x13, 'x', 'K', 'L',
		0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a };
	struct frame_decoder d;
	struct frame f;
	struct buf b;
	int errors = 0;

	(void)state;
	encode(&b, 0x06, FRAME_F_RESPONSE, 77, "payload", 7);
	frame_decoder_init(&d);
	assert_int_equal(frame_decoder_push(&d, "xyz", 3), 0);
	assert_int_equal(frame_decoder_push(&d, b.data, b.len), 0);
	assert_int_equal(frame_decoder_next(&d, &f), 1);
	assert_frame(&f, 0x06, FRAME_F_RESPONSE, 77, "payload", 7);
	assert_int_equal(d.bytes_dropped, 3);
	assert_int_equal(d.crc_errors, 0);
	assert_int_equal(frame_decoder_next(&d, &f), 0);

	/* Harder garbage: the fake "KL" header fails its check. */
	assert_int_equal(frame_decoder_push(&d, junk, sizeof(junk)), 0);
	assert_int_equal(frame_decoder_push(&d, b.data, b.len), 0);
	assert_int_equal(next_skipping_errors(&d, &f, &errors), 1);
	assert_frame(&f, 0x06, FRAME_F_RESPONSE, 77, "payload", 7);
	assert_int_equal(d.bytes_dropped, 3 + sizeof(junk));
	assert_int_equal(errors, 1);
	assert_int_equal(d.crc_errors, 1);
	assert_int_equal(frame_decoder_next(&d, &f), 0);
	frame_decoder_free(&d);
	buf_free(&b);
}

static void
test_every_bit_flip(void **state)
{
	static const char payload[] = "KLhi";	/* a magic inside, on purpose */
	struct frame_decoder d;
	struct frame f;
	struct buf good, bad;
	size_t pos;
	int bit, r, errors;

	(void)state;
	encode(&good, 0x03, FRAME_F_RESPONSE, 0x4b4c, payload, 4);
	buf_init(&bad, FRAME_MAX_LEN);
	for (pos = 0; pos < good.len; pos++) {
		for (bit = 0; bit < 8; bit++) {
			buf_reset(&bad);
			assert_int_equal(buf_put(&bad, good.data, good.len), 0);
			bad.data[pos] ^= (uint8_t)(1u << bit);

			frame_decoder_init(&d);
			assert_int_equal(frame_decoder_push(&d, bad.data,
			    bad.len), 0);
			errors = 0;
			r = next_skipping_errors(&d, &f, &errors);
			if (r != 0)
				fail_msg("byte %zu bit %d: corrupt frame "
				    "accepted (type %u seq %u len %u)", pos,
				    bit, f.type, f.seq, f.len);

			assert_int_equal(frame_decoder_push(&d, good.data,
			    good.len), 0);
			r = next_skipping_errors(&d, &f, &errors);
			if (r != 1)
				fail_msg("byte %zu bit %d: good frame after "
				    "the corrupt one not found", pos, bit);
			assert_frame(&f, 0x03, FRAME_F_RESPONSE, 0x4b4c,
			    payload, 4);
			/* Nothing left over that looks like a frame. */
			r = next_skipping_errors(&d, &f, &errors);
			if (r != 0)
				fail_msg("byte %zu bit %d: extra frame", pos,
				    bit);
			/* A flipped magic is silent garbage; anything
			 * else is a checksum error. */
			if (pos >= 2 && errors == 0)
				fail_msg("byte %zu bit %d: no error counted",
				    pos, bit);
			frame_decoder_free(&d);
		}
	}
	buf_free(&bad);
	buf_free(&good);
}

static void
test_corrupt_body_skipped_whole(void **state)
{
	struct frame_decoder d;
	struct frame f;
	struct buf inner, outer, good;
	int errors = 0;

	(void)state;
	/* A payload may hold anything, a whole encoded frame included (a file
	 * staged on the board, a replayed capture).  When the outer frame's
	 * body is corrupt its header was still checked, so the decoder knows
	 * where it ends: the inner frame must not come out as if it had been
	 * sent, and the one corrupt frame is one error. */
	encode(&inner, 0x05, 0, 0x0102, "inner", 5);
	buf_init(&outer, FRAME_MAX_LEN);
	assert_int_equal(buf_put(&outer, "..", 2), 0);
	assert_int_equal(buf_put(&outer, inner.data, inner.len), 0);
	assert_int_equal(buf_put(&outer, "KL........KL........", 20), 0);
	encode(&good, 0x04, FRAME_F_RESPONSE, 0x0203, outer.data, outer.len);
	good.data[FRAME_HDR_LEN] ^= 0x01;	/* corrupt the first '.' */
	assert_int_equal(frame_encode(&good, 0x06, 0, 0x0304, "next", 4), 0);

	frame_decoder_init(&d);
	assert_int_equal(frame_decoder_push(&d, good.data, good.len), 0);
	assert_int_equal(next_skipping_errors(&d, &f, &errors), 1);
	if (f.type == 0x05)
		fail_msg("frame inside a corrupt frame handed out");
	assert_frame(&f, 0x06, 0, 0x0304, "next", 4);
	assert_int_equal(errors, 1);
	assert_int_equal(d.crc_errors, 1);
	assert_int_equal(frame_decoder_next(&d, &f), 0);
	frame_decoder_free(&d);
	buf_free(&good);
	buf_free(&outer);
	buf_free(&inner);
}

static void
test_truncated(void **state)
{
	struct frame_decoder d;
	struct frame f;
	struct buf b;
	size_t n;

	(void)state;
	encode(&b, 0x08, 0, 5, "truncate me", 11);
	for (n = 0; n < b.len; n++) {
		frame_decoder_init(&d);
		assert_int_equal(frame_decoder_push(&d, b.data, n), 0);
		if (frame_decoder_next(&d, &f) != 0)
			fail_msg("prefix of %zu bytes gave a frame", n);
		assert_int_equal(frame_decoder_next(&d, &f), 0);
		assert_int_equal(d.crc_errors, 0);
		/* The rest arrives later: the frame completes. */
		assert_int_equal(frame_decoder_push(&d, b.data + n,
		    b.len - n), 0);
		assert_int_equal(frame_decoder_next(&d, &f), 1);
		assert_frame(&f, 0x08, 0, 5, "truncate me", 11);
		frame_decoder_free(&d);
	}
	buf_free(&b);
}

static void
test_length_over_max(void **state)
{
	uint8_t hdr[FRAME_HDR_LEN] = { 'K', 'L', 0x01, 0x01, 0x00, 0x10 };
	uint32_t len = FRAME_MAX_PAYLOAD + 1;
	struct frame_decoder d;
	struct frame f;
	struct buf b;
	uint16_t hcrc;

	(void)state;
	hdr[6] = (uint8_t)(len >> 24);
	hdr[7] = (uint8_t)(len >> 16);
	hdr[8] = (uint8_t)(len >> 8);
	hdr[9] = (uint8_t)len;
	hcrc = (uint16_t)frame_crc32(hdr, 10);
	hdr[10] = (uint8_t)(hcrc >> 8);
	hdr[11] = (uint8_t)hcrc;
	encode(&b, 0x01, FRAME_F_RESPONSE, 0x10, "ok", 2);

	frame_decoder_init(&d);
	/* The header alone is enough to refuse it: no waiting for 64 KiB. */
	assert_int_equal(frame_decoder_push(&d, hdr, sizeof(hdr)), 0);
	assert_int_equal(frame_decoder_next(&d, &f), KL_ERR_TOO_BIG);
	assert_int_equal(frame_decoder_next(&d, &f), 0);
	assert_int_equal(frame_decoder_push(&d, b.data, b.len), 0);
	assert_int_equal(frame_decoder_next(&d, &f), 1);
	assert_frame(&f, 0x01, FRAME_F_RESPONSE, 0x10, "ok", 2);
	assert_int_equal(frame_decoder_next(&d, &f), 0);
	frame_decoder_free(&d);

	/* Same, with both in one push; and a huge length. */
	hdr[6] = hdr[7] = hdr[8] = hdr[9] = 0xff;
	hcrc = (uint16_t)frame_crc32(hdr, 10);
	hdr[10] = (uint8_t)(hcrc >> 8);
	hdr[11] = (uint8_t)hcrc;
	frame_decoder_init(&d);
	assert_int_equal(frame_decoder_push(&d, hdr, sizeof(hdr)), 0);
	assert_int_equal(frame_decoder_push(&d, b.data, b.len), 0);
	assert_int_equal(frame_decoder_next(&d, &f), KL_ERR_TOO_BIG);
	assert_int_equal(frame_decoder_next(&d, &f), 1);
	assert_frame(&f, 0x01, FRAME_F_RESPONSE, 0x10, "ok", 2);
	frame_decoder_free(&d);
	buf_free(&b);
}

static void
test_push_cap(void **state)
{
	struct frame_decoder d;
	uint8_t *junk;

	(void)state;
	/* A line spewing bytes with no frame in them cannot grow the decoder
	 * without bound. */
	assert_non_null(junk = calloc(1, 2 * FRAME_MAX_LEN + 1));
	frame_decoder_init(&d);
	assert_int_equal(frame_decoder_push(&d, junk, 2 * FRAME_MAX_LEN + 1),
	    KL_ERR_TOO_BIG);
	assert_int_equal(d.in.len, 0);
	assert_int_equal(frame_decoder_push(&d, junk, 2 * FRAME_MAX_LEN), 0);
	assert_int_equal(frame_decoder_push(&d, junk, 1), KL_ERR_TOO_BIG);
	frame_decoder_free(&d);
	frame_decoder_free(NULL);
	free(junk);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32_vector),
		cmocka_unit_test(test_layout),
		cmocka_unit_test(test_roundtrip_empty),
		cmocka_unit_test(test_roundtrip_max),
		cmocka_unit_test(test_encode_too_big),
		cmocka_unit_test(test_byte_at_a_time),
		cmocka_unit_test(test_back_to_back),
		cmocka_unit_test(test_push_after_frame),
		cmocka_unit_test(test_garbage_before),
		cmocka_unit_test(test_every_bit_flip),
		cmocka_unit_test(test_corrupt_body_skipped_whole),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_length_over_max),
		cmocka_unit_test(test_push_cap),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
