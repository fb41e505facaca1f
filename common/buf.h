/*
 * buf.h: bounds-checked reading and capped growing buffers.
 *
 * Everything that comes off a wire, out of a file from a board or out of a
 * config line is read through a struct buf_reader: every get checks the
 * length against what remains, and fails without moving on error.
 * struct buf grows up to a maximum fixed at init; it is wiped before free
 * because it may hold key material or a PIN.
 */
#ifndef KL_BUF_H
#define KL_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf_reader {
	const uint8_t *data;	/* borrowed */
	size_t len;
	size_t off;
};

void buf_reader_init(struct buf_reader *r, const void *data, size_t len);
size_t buf_reader_remaining(const struct buf_reader *r);
/* All return 0, or KL_ERR_TRUNCATED leaving the reader where it was.
 * Integers are big-endian on the wire. */
int buf_get_u8(struct buf_reader *r, uint8_t *v);
int buf_get_u16(struct buf_reader *r, uint16_t *v);
int buf_get_u32(struct buf_reader *r, uint32_t *v);
/* *p points into the reader's data: borrowed for as long as that data. */
int buf_get_bytes(struct buf_reader *r, size_t n, const uint8_t **p);
int buf_skip(struct buf_reader *r, size_t n);

struct buf {
	uint8_t *data;		/* owned; NULL until the first put */
	size_t len;
	size_t cap;
	size_t max;		/* hard limit on len */
};

/* An empty buffer that refuses to grow past max bytes. */
void buf_init(struct buf *b, size_t max);
/* Wipe and free the contents; b can be reused after buf_init. */
void buf_free(struct buf *b);
/* Wipe contents, keep capacity. */
void buf_reset(struct buf *b);
/* 0, KL_ERR_TOO_BIG past max, KL_ERR_NOMEM. */
int buf_put(struct buf *b, const void *p, size_t n);
int buf_put_u8(struct buf *b, uint8_t v);
int buf_put_u16(struct buf *b, uint16_t v);
int buf_put_u32(struct buf *b, uint32_t v);
/* Drop the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);

/* Constant-time-ish wipe that the compiler may not elide. */
void buf_wipe(void *p, size_t n);

#endif
