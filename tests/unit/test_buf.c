/*
 * test_buf.c: the bounds-checked reader and the capped buffer.
 *
 * Every getter is tried at exactly the length it needs and one byte short;
 * a short read must fail with KL_ERR_TRUNCATED and leave the reader where
 * it was, because callers rely on that to report a clean error.
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

static const uint8_t be[] = { 0x01, 0x02, 0x03, 0x04, 0xfe, 0xff };

static void
test_u8(void **state)
{
	struct buf_reader r;
	uint8_t v = 0x55;

	(void)state;
	buf_reader_init(&r, be, 1);
	assert_int_equal(buf_get_u8(&r, &v), 0);
	assert_int_equal(v, 0x01);
	assert_int_equal(buf_reader_remaining(&r), 0);
	/* Empty now: fails, does not move, does not touch v. */
	v = 0x55;
	assert_int_equal(buf_get_u8(&r, &v), KL_ERR_TRUNCATED);
	assert_int_equal(r.off, 1);
	assert_int_equal(v, 0x55);
}

static void
test_u16(void **state)
{
	struct buf_reader r;
	uint16_t v = 0x5555;

	(void)state;
	buf_reader_init(&r, be + 4, 2);
	assert_int_equal(buf_get_u16(&r, &v), 0);
	assert_int_equal(v, 0xfeff);	/* big-endian */
	assert_int_equal(buf_reader_remaining(&r), 0);

	buf_reader_init(&r, be, 1);	/* one short */
	v = 0x5555;
	assert_int_equal(buf_get_u16(&r, &v), KL_ERR_TRUNCATED);
	assert_int_equal(r.off, 0);
	assert_int_equal(buf_reader_remaining(&r), 1);
	assert_int_equal(v, 0x5555);
}

static void
test_u32(void **state)
{
	struct buf_reader r;
	uint32_t v = 0x55555555;

	(void)state;
	buf_reader_init(&r, be, 4);
	assert_int_equal(buf_get_u32(&r, &v), 0);
	assert_int_equal(v, 0x01020304);
	assert_int_equal(buf_reader_remaining(&r), 0);

	/* High bit set: no sign extension. */
	buf_reader_init(&r, be + 2, 4);
	assert_int_equal(buf_get_u32(&r, &v), 0);
	assert_int_equal(v, 0x0304feffu);

	buf_reader_init(&r, be, 3);
	v = 0x55555555;
	assert_int_equal(buf_get_u32(&r, &v), KL_ERR_TRUNCATED);
	assert_int_equal(r.off, 0);
	assert_int_equal(v, 0x55555555);
}

static void
test_bytes_and_skip(void **state)
{
	struct buf_reader r;
	const uint8_t *p = NULL;
	uint8_t v;

	(void)state;
	buf_reader_init(&r, be, sizeof(be));
	assert_int_equal(buf_get_u8(&r, &v), 0);
	assert_int_equal(buf_get_bytes(&r, 3, &p), 0);
	assert_ptr_equal(p, be + 1);	/* borrowed, not copied */
	assert_int_equal(buf_reader_remaining(&r), 2);

	/* One short: no move, p untouched. */
	p = NULL;
	assert_int_equal(buf_get_bytes(&r, 3, &p), KL_ERR_TRUNCATED);
	assert_null(p);
	assert_int_equal(r.off, 4);
	assert_int_equal(buf_skip(&r, 3), KL_ERR_TRUNCATED);
	assert_int_equal(r.off, 4);

	/* Exact. */
	assert_int_equal(buf_skip(&r, 2), 0);
	assert_int_equal(buf_reader_remaining(&r), 0);
	assert_int_equal(buf_get_bytes(&r, 0, &p), 0);

	/* A length off the wire near SIZE_MAX must not wrap. */
	buf_reader_init(&r, be, sizeof(be));
	assert_int_equal(buf_skip(&r, 1), 0);
	assert_int_equal(buf_get_bytes(&r, SIZE_MAX, &p), KL_ERR_TRUNCATED);
	assert_int_equal(buf_skip(&r, (size_t)UINT32_MAX), KL_ERR_TRUNCATED);
	assert_int_equal(r.off, 1);
}

static void
test_reader_null(void **state)
{
	struct buf_reader r;
	uint8_t v;

	(void)state;
	buf_reader_init(&r, NULL, 10);	/* NULL data counts as empty */
	assert_int_equal(buf_reader_remaining(&r), 0);
	assert_int_equal(buf_get_u8(&r, &v), KL_ERR_TRUNCATED);
}

static void
test_put_be(void **state)
{
	static const uint8_t want[] = { 0xab, 0x12, 0x34, 0xde, 0xad, 0xbe,
		0xef, 'x', 'y' };
	struct buf b;
	struct buf_reader r;
	uint32_t v32;
	uint16_t v16;
	uint8_t v8;

	(void)state;
	buf_init(&b, 64);
	assert_null(b.data);
	assert_int_equal(buf_put_u8(&b, 0xab), 0);
	assert_int_equal(buf_put_u16(&b, 0x1234), 0);
	assert_int_equal(buf_put_u32(&b, 0xdeadbeef), 0);
	assert_int_equal(buf_put(&b, "xy", 2), 0);
	assert_int_equal(buf_put(&b, NULL, 0), 0);
	assert_int_equal(b.len, sizeof(want));
	assert_memory_equal(b.data, want, sizeof(want));

	/* What was put reads back. */
	buf_reader_init(&r, b.data, b.len);
	assert_int_equal(buf_get_u8(&r, &v8), 0);
	assert_int_equal(buf_get_u16(&r, &v16), 0);
	assert_int_equal(buf_get_u32(&r, &v32), 0);
	assert_int_equal(v8, 0xab);
	assert_int_equal(v16, 0x1234);
	assert_int_equal(v32, 0xdeadbeef);
	buf_free(&b);
}

static void
test_put_max(void **state)
{
	uint8_t blob[10];
	struct buf b;

	(void)state;
	memset(blob, 0x77, sizeof(blob));
	buf_init(&b, 10);
	assert_int_equal(buf_put(&b, blob, 7), 0);
	/* 7 + 4 > 10: refused whole, nothing appended. */
	assert_int_equal(buf_put_u32(&b, 1), KL_ERR_TOO_BIG);
	assert_int_equal(b.len, 7);
	assert_int_equal(buf_put(&b, blob, 4), KL_ERR_TOO_BIG);
	assert_int_equal(b.len, 7);
	assert_int_equal(buf_put_u16(&b, 0x0102), 0);
	assert_int_equal(buf_put_u8(&b, 3), 0);
	assert_int_equal(b.len, 10);	/* exactly max is allowed */
	assert_int_equal(buf_put_u8(&b, 4), KL_ERR_TOO_BIG);
	assert_int_equal(b.len, 10);
	assert_int_equal(b.data[9], 3);
	/* n near SIZE_MAX must not wrap the check. */
	assert_int_equal(buf_put(&b, blob, SIZE_MAX), KL_ERR_TOO_BIG);
	assert_int_equal(b.len, 10);
	buf_free(&b);

	buf_init(&b, 0);
	assert_int_equal(buf_put_u8(&b, 1), KL_ERR_TOO_BIG);
	assert_int_equal(b.len, 0);
	buf_free(&b);
}

static void
test_growth(void **state)
{
	const size_t max = 100000;
	struct buf b;
	size_t i;

	(void)state;
	buf_init(&b, max);
	/* Byte by byte across many reallocations; contents survive each. */
	for (i = 0; i < max; i++)
		assert_int_equal(buf_put_u8(&b, (uint8_t)(i * 7)), 0);
	assert_int_equal(b.len, max);
	assert_true(b.cap >= max);
	assert_true(b.cap <= max);	/* growth is capped at max */
	for (i = 0; i < max; i++)
		if (b.data[i] != (uint8_t)(i * 7))
			fail_msg("byte %zu lost in growth", i);
	assert_int_equal(buf_put_u8(&b, 0), KL_ERR_TOO_BIG);
	assert_int_equal(b.len, max);

	/* Reset keeps capacity; the buffer is reusable. */
	buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, max);
	assert_int_equal(buf_put(&b, "abc", 3), 0);
	assert_memory_equal(b.data, "abc", 3);
	buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	buf_free(&b);	/* twice is harmless */
	buf_free(NULL);
}

static void
test_growth_big_puts(void **state)
{
	uint8_t chunk[3000];
	struct buf b;
	size_t i, j;

	(void)state;
	buf_init(&b, 3000 * 20);
	for (i = 0; i < 20; i++) {
		memset(chunk, (int)i + 1, sizeof(chunk));
		assert_int_equal(buf_put(&b, chunk, sizeof(chunk)), 0);
	}
	assert_int_equal(b.len, 60000);
	for (i = 0; i < 20; i++)
		for (j = 0; j < sizeof(chunk); j++)
			if (b.data[i * sizeof(chunk) + j] != i + 1)
				fail_msg("chunk %zu byte %zu", i, j);
	buf_free(&b);
}

static void
test_consume(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 64);
	assert_int_equal(buf_put(&b, "abcdefgh", 8), 0);
	buf_consume(&b, 3);
	assert_int_equal(b.len, 5);
	assert_memory_equal(b.data, "defgh", 5);
	buf_consume(&b, 0);
	assert_int_equal(b.len, 5);
	assert_memory_equal(b.data, "defgh", 5);
	/* Appending after a partial consume continues at the end. */
	assert_int_equal(buf_put(&b, "ij", 2), 0);
	assert_memory_equal(b.data, "defghij", 7);
	buf_consume(&b, 7);	/* all */
	assert_int_equal(b.len, 0);
	assert_int_equal(buf_put(&b, "z", 1), 0);
	buf_consume(&b, 100);	/* more than len: all */
	assert_int_equal(b.len, 0);
	buf_consume(&b, 1);	/* empty: harmless */
	assert_int_equal(b.len, 0);
	buf_free(&b);

	/* Consume on a buffer that never allocated. */
	buf_init(&b, 64);
	buf_consume(&b, 0);
	buf_consume(&b, 5);
	assert_int_equal(b.len, 0);
	buf_free(&b);
}

static void
test_wipe(void **state)
{
	uint8_t secret[16];
	size_t i;

	(void)state;
	memset(secret, 0xa5, sizeof(secret));
	buf_wipe(secret, sizeof(secret));
	for (i = 0; i < sizeof(secret); i++)
		assert_int_equal(secret[i], 0);
	buf_wipe(NULL, 10);
	buf_wipe(secret, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_u8),
		cmocka_unit_test(test_u16),
		cmocka_unit_test(test_u32),
		cmocka_unit_test(test_bytes_and_skip),
		cmocka_unit_test(test_reader_null),
		cmocka_unit_test(test_put_be),
		cmocka_unit_test(test_put_max),
		cmocka_unit_test(test_growth),
		cmocka_unit_test(test_growth_big_puts),
		cmocka_unit_test(test_consume),
		cmocka_unit_test(test_wipe),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
