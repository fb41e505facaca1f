/*
 * test_proto.c: TLV fields of link messages.
 *
 * Payloads come from a board that may be broken or hostile, so besides
 * round trips the tests cut a payload at every length, point lengths past
 * the end and feed values of the wrong shape.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/err.h"
#include "station/link/frame.h"
#include "station/link/proto.h"

#define TLV_HDR 5	/* tag + 4-byte length */

static void
test_roundtrip(void **state)
{
	static const uint8_t id[] = { 0x02, 0x00, 0xff };
	char s[PROTO_MAX_STR + 1];
	const uint8_t *p;
	struct buf b;
	uint32_t v;
	size_t n;

	(void)state;
	buf_init(&b, FRAME_MAX_PAYLOAD);
	assert_int_equal(proto_put_str(&b, PT_SERIAL, "SN-0001"), 0);
	assert_int_equal(proto_put_bytes(&b, PT_KEY_ID, id, sizeof(id)), 0);
	assert_int_equal(proto_put_u32(&b, PT_VERSION, 0x80000001u), 0);
	assert_int_equal(proto_put_str(&b, PT_MODEL, ""), 0);
	assert_int_equal(proto_put_bytes(&b, PT_SPKI, NULL, 0), 0);
	assert_int_equal(b.len, 5 * TLV_HDR + 7 + 3 + 4);
	/* Wire form of the first field. */
	assert_int_equal(b.data[0], PT_SERIAL);
	assert_memory_equal(b.data + 1, "\x00\x00\x00\x07SN-0001", 11);

	assert_int_equal(proto_validate(b.data, b.len), 0);
	assert_int_equal(proto_get_str(b.data, b.len, PT_SERIAL, s, sizeof(s)),
	    0);
	assert_string_equal(s, "SN-0001");
	assert_int_equal(proto_get_bytes(b.data, b.len, PT_KEY_ID,
	    PROTO_MAX_KEY_ID, &p, &n), 0);
	assert_int_equal(n, sizeof(id));
	assert_memory_equal(p, id, sizeof(id));
	assert_true(p > b.data && p < b.data + b.len);	/* borrowed */
	assert_int_equal(proto_get_u32(b.data, b.len, PT_VERSION, &v), 0);
	assert_int_equal(v, 0x80000001u);
	s[0] = 'x';
	assert_int_equal(proto_get_str(b.data, b.len, PT_MODEL, s, sizeof(s)),
	    0);
	assert_string_equal(s, "");
	assert_int_equal(proto_get_bytes(b.data, b.len, PT_SPKI, 10, &p, &n),
	    0);
	assert_int_equal(n, 0);
	buf_free(&b);
}

static void
test_err_code_negative(void **state)
{
	struct buf b;
	uint32_t v;

	(void)state;
	/* PT_ERR_CODE carries a negative code as two's complement. */
	buf_init(&b, 64);
	assert_int_equal(proto_put_u32(&b, PT_ERR_CODE,
	    (uint32_t)KL_ERR_HSM), 0);
	assert_int_equal(proto_get_u32(b.data, b.len, PT_ERR_CODE, &v), 0);
	assert_int_equal((int32_t)v, KL_ERR_HSM);
	buf_free(&b);
}

static void
test_unknown_and_duplicate(void **state)
{
	char s[32];
	struct buf b;
	uint32_t v;

	(void)state;
	buf_init(&b, 1024);
	assert_int_equal(proto_put_bytes(&b, 0xfe, "future", 6), 0);
	assert_int_equal(proto_put_bytes(&b, 0x00, NULL, 0), 0);
	assert_int_equal(proto_put_str(&b, PT_ERR_MSG, "first"), 0);
	assert_int_equal(proto_put_bytes(&b, 0xff, "\x00\x01\x02", 3), 0);
	assert_int_equal(proto_put_u32(&b, PT_FILE_SIZE, 42), 0);
	assert_int_equal(proto_put_str(&b, PT_ERR_MSG, "second"), 0);
	assert_int_equal(proto_validate(b.data, b.len), 0);
	assert_int_equal(proto_get_u32(b.data, b.len, PT_FILE_SIZE, &v), 0);
	assert_int_equal(v, 42);
	/* The first of two fields with one tag wins. */
	assert_int_equal(proto_get_str(b.data, b.len, PT_ERR_MSG, s,
	    sizeof(s)), 0);
	assert_string_equal(s, "first");
	buf_free(&b);
}

static void
test_missing(void **state)
{
	const uint8_t *p = NULL;
	char s[8] = "keep";
	struct buf b;
	uint32_t v = 7;
	size_t n = 9;

	(void)state;
	buf_init(&b, 64);
	assert_int_equal(proto_put_u32(&b, PT_VERSION, 1), 0);
	assert_int_equal(proto_get_u32(b.data, b.len, PT_VERSION_MIN, &v),
	    KL_ERR_NOT_FOUND);
	assert_int_equal(v, 7);
	assert_int_equal(proto_get_str(b.data, b.len, PT_SERIAL, s, sizeof(s)),
	    KL_ERR_NOT_FOUND);
	assert_string_equal(s, "keep");
	assert_int_equal(proto_get_bytes(b.data, b.len, PT_CSR, 100, &p, &n),
	    KL_ERR_NOT_FOUND);
	assert_null(p);
	assert_int_equal(n, 9);
	/* Empty payload: valid, holds nothing. */
	assert_int_equal(proto_validate(NULL, 0), 0);
	assert_int_equal(proto_get_u32(NULL, 0, PT_VERSION, &v),
	    KL_ERR_NOT_FOUND);
	buf_free(&b);
}

static void
test_truncated_every_prefix(void **state)
{
	const uint8_t *p;
	char s[64];
	struct buf b;
	size_t cut, n, bounds[4];
	uint32_t v;
	int at_boundary, i;

	(void)state;
	buf_init(&b, 1024);
	bounds[0] = 0;
	assert_int_equal(proto_put_str(&b, PT_SERIAL, "board-7"), 0);
	bounds[1] = b.len;
	assert_int_equal(proto_put_bytes(&b, PT_CHALLENGE, "0123456789", 10),
	    0);
	bounds[2] = b.len;
	assert_int_equal(proto_put_u32(&b, PT_VERSION, 1), 0);
	bounds[3] = b.len;

	for (cut = 0; cut <= b.len; cut++) {
		at_boundary = 0;
		for (i = 0; i < 4; i++)
			if (cut == bounds[i])
				at_boundary = 1;
		if (at_boundary) {
			assert_int_equal(proto_validate(b.data, cut), 0);
			/* Fields inside the cut are there, others not. */
			assert_int_equal(proto_get_str(b.data, cut, PT_SERIAL,
			    s, sizeof(s)), cut >= bounds[1] ? 0 :
			    KL_ERR_NOT_FOUND);
			assert_int_equal(proto_get_bytes(b.data, cut,
			    PT_CHALLENGE, PROTO_MAX_CHALLENGE, &p, &n),
			    cut >= bounds[2] ? 0 : KL_ERR_NOT_FOUND);
			assert_int_equal(proto_get_u32(b.data, cut,
			    PT_VERSION, &v), cut >= bounds[3] ? 0 :
			    KL_ERR_NOT_FOUND);
			continue;
		}
		if (proto_validate(b.data, cut) != KL_ERR_TRUNCATED)
			fail_msg("cut at %zu: validate accepted", cut);
		/* A getter validates first: even a field that lies whole
		 * before the cut is not handed out. */
		if (proto_get_str(b.data, cut, PT_SERIAL, s, sizeof(s)) !=
		    KL_ERR_TRUNCATED)
			fail_msg("cut at %zu: str read", cut);
		if (proto_get_bytes(b.data, cut, PT_CHALLENGE,
		    PROTO_MAX_CHALLENGE, &p, &n) != KL_ERR_TRUNCATED)
			fail_msg("cut at %zu: bytes read", cut);
		if (proto_get_u32(b.data, cut, PT_VERSION, &v) !=
		    KL_ERR_TRUNCATED)
			fail_msg("cut at %zu: u32 read", cut);
	}
	buf_free(&b);
}

static void
test_length_past_end(void **state)
{
	/* Tag, length 0x10 but 3 bytes of value. */
	static const uint8_t shortv[] = { PT_SERIAL, 0, 0, 0, 0x10, 'a', 'b',
		'c' };
	/* Length 0xffffffff: must not wrap any offset arithmetic. */
	static const uint8_t huge[] = { PT_SERIAL, 0xff, 0xff, 0xff, 0xff, 'a' };
	/* A good field, then one whose length runs one past the end. */
	static const uint8_t second[] = { PT_VERSION, 0, 0, 0, 4, 0, 0, 0, 1,
		PT_SERIAL, 0, 0, 0, 2, 'x' };
	const uint8_t *p;
	char s[32];
	uint32_t v;
	size_t n;

	(void)state;
	assert_int_equal(proto_validate(shortv, sizeof(shortv)),
	    KL_ERR_TRUNCATED);
	assert_int_equal(proto_get_str(shortv, sizeof(shortv), PT_SERIAL, s,
	    sizeof(s)), KL_ERR_TRUNCATED);
	assert_int_equal(proto_validate(huge, sizeof(huge)), KL_ERR_TRUNCATED);
	assert_int_equal(proto_get_bytes(huge, sizeof(huge), PT_SERIAL,
	    SIZE_MAX, &p, &n), KL_ERR_TRUNCATED);
	assert_int_equal(proto_validate(second, sizeof(second)),
	    KL_ERR_TRUNCATED);
	assert_int_equal(proto_get_u32(second, sizeof(second), PT_VERSION, &v),
	    KL_ERR_TRUNCATED);
}

static void
test_str_shape(void **state)
{
	static const uint8_t nul[] = { PT_SERIAL, 0, 0, 0, 3, 'a', 0, 'b' };
	static const uint8_t nul_end[] = { PT_SERIAL, 0, 0, 0, 2, 'a', 0 };
	char big[PROTO_MAX_STR + 2];
	char out[PROTO_MAX_STR + 8];
	char small[4];
	struct buf b;

	(void)state;
	snprintf(out, sizeof(out), "keep");
	assert_int_equal(proto_get_str(nul, sizeof(nul), PT_SERIAL, out,
	    sizeof(out)), KL_ERR_INVALID);
	assert_int_equal(proto_get_str(nul_end, sizeof(nul_end), PT_SERIAL,
	    out, sizeof(out)), KL_ERR_INVALID);
	assert_string_equal(out, "keep");

	buf_init(&b, 4096);
	/* Exactly fits out (3 chars + NUL), then one over. */
	assert_int_equal(proto_put_str(&b, PT_MODEL, "abc"), 0);
	assert_int_equal(proto_put_str(&b, PT_SERIAL, "abcd"), 0);
	assert_int_equal(proto_get_str(b.data, b.len, PT_MODEL, small,
	    sizeof(small)), 0);
	assert_string_equal(small, "abc");
	snprintf(small, sizeof(small), "kp");
	assert_int_equal(proto_get_str(b.data, b.len, PT_SERIAL, small,
	    sizeof(small)), KL_ERR_TOO_BIG);
	assert_string_equal(small, "kp");
	assert_int_equal(proto_get_str(b.data, b.len, PT_SERIAL, small, 0),
	    KL_ERR_TOO_BIG);

	/* PROTO_MAX_STR is accepted, one more is refused even when out is
	 * large enough. */
	buf_reset(&b);
	memset(big, 'x', sizeof(big));
	big[PROTO_MAX_STR] = '\0';
	assert_int_equal(proto_put_str(&b, PT_KEY_LABEL, big), 0);
	big[PROTO_MAX_STR] = 'x';
	big[PROTO_MAX_STR + 1] = '\0';
	assert_int_equal(proto_put_str(&b, PT_SUBJECT_CN, big), 0);
	assert_int_equal(proto_get_str(b.data, b.len, PT_KEY_LABEL, out,
	    sizeof(out)), 0);
	assert_int_equal(strlen(out), PROTO_MAX_STR);
	assert_int_equal(proto_get_str(b.data, b.len, PT_SUBJECT_CN, out,
	    sizeof(out)), KL_ERR_TOO_BIG);
	buf_free(&b);
}

static void
test_u32_shape(void **state)
{
	struct buf b;
	uint32_t v = 5;

	(void)state;
	buf_init(&b, 64);
	assert_int_equal(proto_put_bytes(&b, PT_VERSION, "\x00\x00\x01", 3), 0);
	assert_int_equal(proto_put_bytes(&b, PT_FILE_SIZE, "\0\0\0\0\1", 5), 0);
	assert_int_equal(proto_put_bytes(&b, PT_FILE_MODE, NULL, 0), 0);
	assert_int_equal(proto_get_u32(b.data, b.len, PT_VERSION, &v),
	    KL_ERR_INVALID);
	assert_int_equal(proto_get_u32(b.data, b.len, PT_FILE_SIZE, &v),
	    KL_ERR_INVALID);
	assert_int_equal(proto_get_u32(b.data, b.len, PT_FILE_MODE, &v),
	    KL_ERR_INVALID);
	assert_int_equal(v, 5);
	buf_free(&b);
}

static void
test_bytes_max(void **state)
{
	uint8_t id[PROTO_MAX_KEY_ID + 1];
	const uint8_t *p = NULL;
	struct buf b;
	size_t n = 0;

	(void)state;
	memset(id, 0x11, sizeof(id));
	buf_init(&b, 64);
	assert_int_equal(proto_put_bytes(&b, PT_KEY_ID, id, sizeof(id)), 0);
	assert_int_equal(proto_get_bytes(b.data, b.len, PT_KEY_ID,
	    PROTO_MAX_KEY_ID, &p, &n), KL_ERR_TOO_BIG);
	assert_null(p);
	assert_int_equal(n, 0);
	assert_int_equal(proto_get_bytes(b.data, b.len, PT_KEY_ID,
	    PROTO_MAX_KEY_ID + 1, &p, &n), 0);
	assert_int_equal(n, PROTO_MAX_KEY_ID + 1);
	assert_int_equal(proto_get_bytes(b.data, b.len, PT_KEY_ID, 0, &p, &n),
	    KL_ERR_TOO_BIG);
	buf_free(&b);
}

static void
test_put_rollback(void **state)
{
	struct buf b;

	(void)state;
	/* A field that does not fit leaves no half-written tag behind. */
	buf_init(&b, 12);
	assert_int_equal(proto_put_u32(&b, PT_VERSION, 1), 0);	/* 9 bytes */
	assert_int_equal(proto_put_str(&b, PT_SERIAL, "x"), KL_ERR_TOO_BIG);
	assert_int_equal(b.len, 9);
	assert_int_equal(proto_put_u32(&b, PT_VERSION, 2), KL_ERR_TOO_BIG);
	assert_int_equal(b.len, 9);
	assert_int_equal(proto_validate(b.data, b.len), 0);
	buf_free(&b);
}

static void
test_type_name(void **state)
{
	(void)state;
	assert_string_equal(proto_type_name(PROTO_HELLO), "HELLO");
	assert_string_equal(proto_type_name(PROTO_KEYGEN), "KEYGEN");
	assert_string_equal(proto_type_name(PROTO_CSR), "CSR");
	assert_string_equal(proto_type_name(PROTO_PUT_FILE), "PUT_FILE");
	assert_string_equal(proto_type_name(PROTO_COMMIT), "COMMIT");
	assert_string_equal(proto_type_name(PROTO_ABORT), "ABORT");
	assert_string_equal(proto_type_name(PROTO_FILE_HASH), "FILE_HASH");
	assert_string_equal(proto_type_name(PROTO_PUT_CERT), "PUT_CERT");
	assert_string_equal(proto_type_name(PROTO_SIGN), "SIGN");
	assert_string_equal(proto_type_name(PROTO_UPTANE_KEYGEN),
	    "UPTANE_KEYGEN");
	assert_string_equal(proto_type_name(0), "UNKNOWN");
	assert_string_equal(proto_type_name(PROTO_REMOVE), "REMOVE");
	assert_string_equal(proto_type_name(PROTO_DEL_CERT), "DEL_CERT");
	assert_string_equal(proto_type_name(PROTO_INQUIRE), "INQUIRE");
	assert_string_equal(proto_type_name(0x0e), "UNKNOWN");
	assert_string_equal(proto_type_name(0xff), "UNKNOWN");
}

/* Version 2's compact fields: round trip, shortest forms, and every
 * truncation and bit flip of a compact payload refused or read whole. */
static void
test_tlv_compact(void **state)
{
	static uint8_t big[20000];
	struct buf wide, small, back;
	size_t i, j;
	int r;

	(void)state;
	memset(big, 0xab, sizeof(big));
	buf_init(&wide, FRAME_MAX_PAYLOAD);
	buf_init(&small, FRAME_MAX_PAYLOAD);
	buf_init(&back, FRAME_MAX_PAYLOAD);
	assert_int_equal(proto_put_str(&wide, PT_SERIAL, "KL000001"), 0);
	assert_int_equal(proto_put_bytes(&wide, PT_CERT, big, 0x7f), 0);
	assert_int_equal(proto_put_bytes(&wide, PT_CSR, big, 0x80), 0);
	assert_int_equal(proto_put_bytes(&wide, PT_FILE_DATA, big, 0x3fff), 0);
	assert_int_equal(proto_put_bytes(&wide, PT_FILE_DER, big, 0x4000), 0);
	assert_int_equal(proto_put_bytes(&wide, PT_SPKI, "", 0), 0);
	assert_int_equal(proto_tlv_compact(wide.data, wide.len, &small), 0);
	/* 1 + 1 + 2 + 2 + 5 + 1 length bytes instead of 6 * 4 */
	assert_int_equal(small.len, wide.len - 6 * 4 + 12);
	assert_int_equal(proto_tlv_expand(small.data, small.len, &back), 0);
	assert_int_equal(back.len, wide.len);
	assert_memory_equal(back.data, wide.data, wide.len);
	/* A length not in its shortest form is refused. */
	{
		static const uint8_t two[] = { PT_SERIAL, 0x80, 0x01, 'x' };
		static const uint8_t five[] = { PT_SERIAL, 0xc0, 0, 0, 0, 1,
		    'x' };
		static const uint8_t bad[] = { PT_SERIAL, 0xc1, 0, 0, 0, 1 };

		assert_int_equal(proto_tlv_expand(two, sizeof(two), &back),
		    KL_ERR_INVALID);
		assert_int_equal(proto_tlv_expand(five, sizeof(five), &back),
		    KL_ERR_INVALID);
		assert_int_equal(proto_tlv_expand(bad, sizeof(bad), &back),
		    KL_ERR_INVALID);
	}
	/* Cut short anywhere but at a field's end: refused. */
	for (i = 0; i < small.len && i < 300; i++) {
		r = proto_tlv_expand(small.data, i, &back);
		assert_true(r == 0 || r == KL_ERR_TRUNCATED);
		if (r == 0)
			assert_int_equal(proto_validate(back.data, back.len), 0);
	}
	/* Bit flips: never more than the expanded maximum, always valid. */
	for (i = 0; i < 40 && i < small.len; i++)
		for (j = 0; j < 8; j++) {
			small.data[i] ^= (uint8_t)(1u << j);
			if (proto_tlv_expand(small.data, small.len, &back) == 0)
				assert_int_equal(proto_validate(back.data,
				    back.len), 0);
			small.data[i] ^= (uint8_t)(1u << j);
		}
	/* A malformed 4-byte payload is not compacted. */
	assert_int_equal(proto_tlv_compact(wide.data, wide.len - 1, &small),
	    KL_ERR_TRUNCATED);
	buf_free(&wide);
	buf_free(&small);
	buf_free(&back);
}

/* The ordered walk of a version 2 PUT_FILE. */
static void
test_walk(void **state)
{
	struct buf b;
	const uint8_t *v;
	size_t off = 0, next = 0, n = 0, count = 0;
	uint8_t tag = 0;
	int r;

	(void)state;
	buf_init(&b, 1024);
	assert_int_equal(proto_put_str(&b, PT_FILE_NAME, "a"), 0);
	assert_int_equal(proto_put_str(&b, PT_FILE_DATA, "1"), 0);
	assert_int_equal(proto_put_str(&b, PT_FILE_NAME, "b"), 0);
	while ((r = proto_walk(b.data, b.len, off, &tag, &v, &n, &next)) == 1) {
		count++;
		assert_true(next > off && next <= b.len);
		off = next;
	}
	assert_int_equal(r, 0);
	assert_int_equal(count, 3);
	assert_int_equal(tag, PT_FILE_NAME);
	assert_int_equal(proto_walk(b.data, b.len - 1, 12, &tag, &v, &n,
	    &next), KL_ERR_TRUNCATED);
	assert_int_equal(proto_walk(b.data, b.len, b.len + 1, &tag, &v, &n,
	    &next), KL_ERR_TRUNCATED);
	buf_free(&b);
}

/* The read-back digest does not depend on the order of its records, and
 * does on every byte of them. */
static void
test_readback_digest(void **state)
{
	struct proto_readback rb[3], sw[3];
	uint8_t d1[32], d2[32];

	(void)state;
	memset(rb, 0, sizeof(rb));
	rb[0].kind = PROTO_RB_FILE;
	memcpy(rb[0].name, "root.crt", 8);
	rb[0].name_len = 8;
	rb[0].size = 725;
	rb[1].kind = PROTO_RB_FILE;
	memcpy(rb[1].name, "gateway.url", 11);
	rb[1].name_len = 11;
	rb[1].size = 37;
	rb[2].kind = PROTO_RB_CERT;
	rb[2].name[0] = 1;
	rb[2].name_len = 1;
	rb[2].size = 500;
	rb[2].sha256[5] = 7;
	sw[0] = rb[2];
	sw[1] = rb[0];
	sw[2] = rb[1];
	assert_int_equal(proto_readback_digest(rb, 3, d1), 0);
	assert_int_equal(proto_readback_digest(sw, 3, d2), 0);
	assert_memory_equal(d1, d2, 32);
	sw[0].sha256[31] ^= 1;
	assert_int_equal(proto_readback_digest(sw, 3, d2), 0);
	assert_memory_not_equal(d1, d2, 32);
	sw[0].sha256[31] ^= 1;
	sw[1].size++;
	assert_int_equal(proto_readback_digest(sw, 3, d2), 0);
	assert_memory_not_equal(d1, d2, 32);
	sw[1].name_len = 0;
	assert_int_equal(proto_readback_digest(sw, 3, d2), KL_ERR_INVALID);
	assert_int_equal(proto_readback_digest(rb, PROTO_RB_MAX + 1, d2),
	    KL_ERR_INVALID);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_err_code_negative),
		cmocka_unit_test(test_unknown_and_duplicate),
		cmocka_unit_test(test_missing),
		cmocka_unit_test(test_truncated_every_prefix),
		cmocka_unit_test(test_length_past_end),
		cmocka_unit_test(test_str_shape),
		cmocka_unit_test(test_u32_shape),
		cmocka_unit_test(test_bytes_max),
		cmocka_unit_test(test_put_rollback),
		cmocka_unit_test(test_type_name),
		cmocka_unit_test(test_tlv_compact),
		cmocka_unit_test(test_walk),
		cmocka_unit_test(test_readback_digest),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
