/*
 * fuzz_frame.c: the link frame decoder (station/link/frame.c), fed the input in
 * splits the input itself chooses, as a serial read would hand them over.
 *
 * Input: byte 0 seeds the split sizes, the rest is the byte stream.
 * Checks, beyond the sanitizers: every frame handed out re-encodes to the
 * exact bytes it came from (so its CRCs held and its length is honest),
 * its payload lies inside the decoder's buffer, and the decoder never
 * holds more than its cap.
 */
#include "tests/fuzz/fuzz.h"

#include "common/buf.h"
#include "common/err.h"
#include "station/link/frame.h"
#include "common/log.h"

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_logs("fuzz_frame");
	return 0;
}

static void
check_frame(const struct frame_decoder *d, const struct frame *f)
{
	struct buf re;
	const uint8_t *start;

	FUZZ_CHECK(f->len <= FRAME_MAX_PAYLOAD, "payload %u", f->len);
	FUZZ_CHECK(f->payload >= d->in.data + FRAME_HDR_LEN &&
	    f->payload + f->len + FRAME_TRAILER_LEN <= d->in.data + d->in.len,
	    "payload outside the decoder's buffer");
	start = f->payload - FRAME_HDR_LEN;
	buf_init(&re, FRAME_MAX_LEN);
	FUZZ_CHECK(frame_encode(&re, f->type, f->flags, f->seq, f->payload,
	    f->len) == 0, "re-encoding a decoded frame failed");
	FUZZ_CHECK(re.len == FRAME_HDR_LEN + f->len + FRAME_TRAILER_LEN &&
	    memcmp(re.data, start, re.len) == 0,
	    "a decoded frame does not re-encode to its own bytes");
	buf_free(&re);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct frame_decoder d;
	struct frame f;
	uint32_t rnd;
	size_t off = 1, n;
	int r;

	if (size < 1)
		return 0;
	rnd = data[0] * 2654435761u + 1;
	frame_decoder_init(&d);
	while (off < size) {
		/* Split sizes 1..64, or the rest at once when rnd says so. */
		rnd = rnd * 1103515245u + 12345u;
		n = (rnd >> 16) % 8 == 0 ? size - off : 1 + (rnd >> 8) % 64;
		if (n > size - off)
			n = size - off;
		r = frame_decoder_push(&d, data + off, n);
		FUZZ_CHECK(r == 0, "push of %zu bytes: %s", n, kl_errname(r));
		off += n;
		while ((r = frame_decoder_next(&d, &f)) != 0) {
			FUZZ_CHECK(r == 1 || r == KL_ERR_CRC ||
			    r == KL_ERR_TOO_BIG, "next: %d", r);
			if (r == 1)
				check_frame(&d, &f);
		}
		FUZZ_CHECK(d.in.len <= 2 * FRAME_MAX_LEN, "decoder holds %zu",
		    d.in.len);
	}
	/* A reset drops everything; nothing comes out of an empty decoder. */
	frame_decoder_reset(&d);
	FUZZ_CHECK(frame_decoder_next(&d, &f) == 0, "frame after a reset");
	frame_decoder_free(&d);
	return 0;
}
