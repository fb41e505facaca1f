/*
 * fuzz_proto.c: TLV fields (station/link/proto.c) on arbitrary payloads: what
 * every message reader on both ends of the link starts with.
 *
 * Input: byte 0 picks the tag looked up, byte 1 the maximum handed to
 * proto_get_bytes and the size of the string buffer; the rest is the
 * payload.  Checks: validate and every reader agree on whether the
 * payload is well-formed, values lie inside the payload, strings are
 * NUL-terminated with no NUL inside and fit, u32s are 4 bytes, and a
 * payload rebuilt from the fields read back validates and reads the same.
 */
#include "tests/fuzz/fuzz.h"

#include "common/buf.h"
#include "common/err.h"
#include "common/log.h"
#include "station/link/frame.h"
#include "station/link/proto.h"

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_logs("fuzz_proto");
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char str[PROTO_MAX_STR + 1], str2[PROTO_MAX_STR + 1];
	const uint8_t *payload, *v = NULL, *v2 = NULL;
	size_t len, n = 0, n2 = 0, max, outsz;
	uint32_t u = 0, u2 = 0;
	struct buf b;
	uint8_t tag;
	int valid, rb, rs, ru, r;

	if (size < 2)
		return 0;
	tag = data[0];
	max = data[1] & 0x80 ? SIZE_MAX : (size_t)data[1] * 4;
	outsz = 1 + (size_t)data[1] % sizeof(str);
	payload = data + 2;
	len = size - 2;

	valid = proto_validate(payload, len);
	FUZZ_CHECK(valid == 0 || valid == KL_ERR_TRUNCATED, "validate %d",
	    valid);

	rb = proto_get_bytes(payload, len, tag, max, &v, &n);
	rs = proto_get_str(payload, len, tag, str, outsz);
	ru = proto_get_u32(payload, len, tag, &u);
	if (valid != 0) {
		FUZZ_CHECK(rb == valid && rs == valid && ru == valid,
		    "readers disagree with validate: %d %d %d", rb, rs, ru);
		return 0;
	}
	FUZZ_CHECK(rb == 0 || rb == KL_ERR_NOT_FOUND || rb == KL_ERR_TOO_BIG,
	    "get_bytes %d", rb);
	if (rb == 0) {
		FUZZ_CHECK(n <= max && v >= payload && v + n <= payload + len,
		    "value outside the payload");
	}
	if (rs == 0) {
		FUZZ_CHECK(strlen(str) < outsz && strlen(str) <= PROTO_MAX_STR,
		    "string does not fit");
		/* What came back is the whole value: no NUL was cut. */
		r = proto_get_bytes(payload, len, tag, SIZE_MAX, &v2, &n2);
		FUZZ_CHECK(r == 0 && n2 == strlen(str) &&
		    memcmp(v2, str, n2) == 0, "string is not the value");
	}
	if (ru == 0) {
		r = proto_get_bytes(payload, len, tag, SIZE_MAX, &v2, &n2);
		FUZZ_CHECK(r == 0 && n2 == 4, "u32 of %zu bytes", n2);
	}

	/* Write back what was read; it must read back the same. */
	buf_init(&b, 2 * PROTO_MAX_STR + 64);
	if (rs == 0)
		FUZZ_CHECK(proto_put_str(&b, tag, str) == 0, "put_str");
	if (ru == 0)
		FUZZ_CHECK(proto_put_u32(&b, (uint8_t)(tag + 1), u) == 0,
		    "put_u32");
	FUZZ_CHECK(proto_validate(b.data, b.len) == 0, "own fields invalid");
	if (rs == 0) {
		FUZZ_CHECK(proto_get_str(b.data, b.len, tag, str2,
		    sizeof(str2)) == 0 && strcmp(str, str2) == 0,
		    "string round trip");
	}
	if (ru == 0) {
		FUZZ_CHECK(proto_get_u32(b.data, b.len, (uint8_t)(tag + 1),
		    &u2) == 0 && u == u2, "u32 round trip");
	}
	(void)proto_type_name(tag);
	buf_free(&b);

	/* Version 2's compact fields: what expands is well-formed, and
	 * compacting it again gives the input back (shortest forms only). */
	{
		struct buf wide, small;

		buf_init(&wide, FRAME_MAX_PAYLOAD);
		buf_init(&small, FRAME_MAX_PAYLOAD);
		if (proto_tlv_expand(payload, len, &wide) == 0) {
			FUZZ_CHECK(proto_validate(wide.data, wide.len) == 0,
			    "expanded fields invalid");
			FUZZ_CHECK(proto_tlv_compact(wide.data, wide.len,
			    &small) == 0 && small.len == len &&
			    (len == 0 || memcmp(small.data, payload, len) == 0),
			    "compact(expand(x)) != x");
		}
		if (valid == 0)
			FUZZ_CHECK(proto_tlv_compact(payload, len, &small) == 0,
			    "a valid payload does not compact");
		buf_free(&wide);
		buf_free(&small);
	}
	return 0;
}
