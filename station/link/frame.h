/*
 * frame.h: framing of the board link (docs/protocol.md).
 *
 *   off len field
 *   0   2   magic "KL"
 *   2   1   type      (enum proto_type)
 *   3   1   flags     (FRAME_F_*)
 *   4   2   seq       big-endian; a response carries its request's seq
 *   6   4   length    of the payload, big-endian, <= FRAME_MAX_PAYLOAD
 *   10  2   hcrc      low 16 bits of CRC-32 over bytes 0..9
 *   12  n   payload
 *   12+n 4  crc       CRC-32 (IEEE, as zlib) over bytes 0..12+n-1
 *
 * The header check lets a receiver reject a corrupt length at once instead
 * of waiting for bytes that never come.  The decoder is a stream parser:
 * push bytes in any split, pull whole frames out; on garbage it drops one
 * byte and searches for the next magic.  A frame whose header checks but
 * whose body does not is dropped whole.
 */
#ifndef KL_FRAME_H
#define KL_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define FRAME_MAGIC0 0x4b	/* 'K' */
#define FRAME_MAGIC1 0x4c	/* 'L' */
#define FRAME_HDR_LEN 12
#define FRAME_TRAILER_LEN 4
#define FRAME_MAX_PAYLOAD (64u * 1024u)
#define FRAME_MAX_LEN (FRAME_HDR_LEN + FRAME_MAX_PAYLOAD + FRAME_TRAILER_LEN)

#define FRAME_F_RESPONSE 0x01	/* sent by the board */
#define FRAME_F_ERROR 0x02	/* response payload is an error (proto.h) */
#define FRAME_F_NAK 0x04	/* "your last frame arrived corrupt, resend" */
#define FRAME_F_COMPACT 0x08	/* fields in version 2's compact form
				 * (proto_tlv_compact) */

struct frame {
	uint8_t type;
	uint8_t flags;
	uint16_t seq;
	uint32_t len;
	const uint8_t *payload;	/* borrowed from the decoder until the next
				 * frame_decoder_* call */
};

/* Append one encoded frame to out. 0, KL_ERR_TOO_BIG, KL_ERR_NOMEM. */
int frame_encode(struct buf *out, uint8_t type, uint8_t flags, uint16_t seq,
    const void *payload, size_t len);

struct frame_decoder {
	struct buf in;		/* bytes not yet parsed */
	uint32_t crc_errors;	/* frames dropped for a bad CRC */
	uint32_t bytes_dropped;	/* garbage skipped while resyncing */
	size_t pending;		/* size of the frame last handed out; dropped
				 * at the next push or next */
};

void frame_decoder_init(struct frame_decoder *d);
void frame_decoder_free(struct frame_decoder *d);
/* Drop every buffered byte (after an attempt timed out: a corrupt header
 * that passed its check may be waiting for bytes that never come). */
void frame_decoder_reset(struct frame_decoder *d);
/* Add received bytes. 0 or KL_ERR_TOO_BIG/NOMEM (buffer is capped at
 * 2 * FRAME_MAX_LEN; callers push at most what they read). */
int frame_decoder_push(struct frame_decoder *d, const void *p, size_t n);
/*
 * Take the next frame.  Returns 1 with *f filled, 0 when more bytes are
 * needed, or a negative code for a frame that was dropped: KL_ERR_CRC
 * (header or body checksum), KL_ERR_TOO_BIG (length over maximum).  After a
 * negative return the decoder has already resynced; call again.
 */
int frame_decoder_next(struct frame_decoder *d, struct frame *f);

/* CRC-32 (IEEE 802.3, zlib's crc32). */
uint32_t frame_crc32(const void *p, size_t n);

#endif
