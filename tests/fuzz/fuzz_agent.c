/*
 * fuzz_agent.c: the board's side of the link, keyline-agent's request
 * readers and handlers (fixtures/agent/agent.c, included whole through
 * agent_env.h to reach its static functions), against a real SoftHSM
 * token and import directory in a temp directory.
 *
 * Input: records [sel][len: 2 bytes BE][payload].  sel & 0x3f is the
 * request type (PROTO_*) when the agent's own command table has it, else
 * it picks an entry of that table by index (KEYGEN and UPTANE_KEYGEN left
 * out: a key pair per run would cost milliseconds and fill the token; the
 * token has one EC key at CKA_ID 02 made at start for CSR and SIGN);
 * sel 0x80 keeps the previous seq (the answer must come from the cache),
 * 0x40 sets FRAME_F_RESPONSE (the agent must ignore the frame).  Every
 * record is handed to agent_handle() as a decoded frame, in order, so
 * PUT_FILE, COMMIT, FILE_HASH, REMOVE run against each other's files.
 * The first record's payload also goes through the field readers
 * agent_get_name, agent_get_key_id and agent_get_str directly.
 *
 * Checks: every request gets exactly one answer, a whole frame with the
 * request's type and seq and fields that validate; an error answer has a
 * negative code and words; a response frame gets no answer.  After each
 * input the staged files and objects are discarded and the import
 * directory emptied, so inputs do not meet.
 */
#include "tests/fuzz/agent_env.h"

static struct agent fz_a;
static const struct agent_cmd *fz_cmds[32];
static size_t fz_ncmds;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const uint8_t tls_id[] = { 0x02 };
	uint8_t *spki = NULL;
	size_t spki_len = 0, i;
	int r;

	(void)argc;
	(void)argv;
	fuzz_logs("fuzz_agent");
	fz_agent_env();
	fz_agent_start(&fz_a);
	r = hsm_generate_key(fz_a.hsm, HSM_KEY_EC_P256, tls_id,
	    sizeof(tls_id), "tls", &spki, &spki_len);
	FUZZ_CHECK(r == 0, "hsm_generate_key: %s", kl_strerror(r));
	OPENSSL_free(spki);
	for (i = 0; i < sizeof(agent_cmds) / sizeof(agent_cmds[0]) &&
	    fz_ncmds < sizeof(fz_cmds) / sizeof(fz_cmds[0]); i++)
		if (agent_cmds[i].pad != PAD_KEYGEN)
			fz_cmds[fz_ncmds++] = &agent_cmds[i];
	FUZZ_CHECK(fz_ncmds > 0, "no request types");
	return 0;
}

/* The readers on their own, with their buffer sizes. */
static void
fz_readers(const uint8_t *p, size_t n)
{
	char name[AGENT_MAX_NAME + 1], str[PROTO_MAX_STR + 1], why[256];
	const uint8_t *id;
	size_t id_len;

	why[0] = '\0';
	if (agent_get_name(p, n, PT_FILE_NAME, name, why, sizeof(why)) == 0)
		FUZZ_CHECK(agent_plain_name(name), "name '%s'", name);
	FUZZ_CHECK(strlen(why) < sizeof(why), "why");
	if (agent_get_key_id(p, n, &id, &id_len, why, sizeof(why)) == 0)
		FUZZ_CHECK(id_len >= 1 && id_len <= PROTO_MAX_KEY_ID &&
		    id >= p && id + id_len <= p + n, "key id");
	if (agent_get_str(p, n, PT_KEY_LABEL, "key label", str, 33, why,
	    sizeof(why)) == 0)
		FUZZ_CHECK(strlen(str) < 33, "label");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t cert_ids[8][PROTO_MAX_KEY_ID];
	int staged_objects = 0;
	size_t cert_id_len[8], ncert = 0, off = 0, len, i;
	const struct agent_cmd *cmd;
	const uint8_t *id;
	struct frame f;
	uint16_t seq = 1;
	uint8_t sel, *payload;
	int before, first = 1;

	for (i = 0; i < AGENT_CACHE_N; i++)
		fz_a.cache[i].valid = 0;
	/* Inputs whose first byte is odd speak version 2, the rest 1. */
	fz_a.version = size > 0 && (data[0] & 1) ? 2 : 1;
	while (size - off >= 3) {
		sel = data[off];
		len = (size_t)data[off + 1] << 8 | data[off + 2];
		off += 3;
		if (len > size - off)
			len = size - off;
		/* Its own allocation, so ASan sees a read past the end. */
		payload = malloc(len > 0 ? len : 1);
		FUZZ_CHECK(payload != NULL, "malloc");
		memcpy(payload, data + off, len);
		off += len;
		if (first) {
			fz_readers(payload, len);
			first = 0;
		}
		cmd = fz_cmds[(sel & 0x3f) % fz_ncmds];
		for (i = 0; i < fz_ncmds; i++)
			if (fz_cmds[i]->type == (sel & 0x3f))
				cmd = fz_cmds[i];
		if (!(sel & 0x80))
			seq++;
		f.type = cmd->type;
		f.flags = sel & 0x40 ? FRAME_F_RESPONSE : 0;
		f.seq = seq;
		f.len = (uint32_t)len;
		f.payload = payload;
		if (cmd->type == PROTO_PUT_CERT)
			staged_objects = 1;
		if (cmd->type == PROTO_PUT_CERT && ncert < 8 &&
		    proto_get_bytes(payload, len, PT_KEY_ID, PROTO_MAX_KEY_ID,
		    &id, &cert_id_len[ncert]) == 0 && cert_id_len[ncert] > 0) {
			memcpy(cert_ids[ncert], id, cert_id_len[ncert]);
			ncert++;
		}
		before = fz_answer.n;
		agent_handle(&fz_a, &f);
		if (f.flags & FRAME_F_RESPONSE) {
			FUZZ_CHECK(fz_answer.n == before,
			    "the agent answered a response frame");
		} else {
			FUZZ_CHECK(fz_answer.n == before + 1,
			    "%d answers to one %s request", fz_answer.n - before,
			    proto_type_name(cmd->type));
			FUZZ_CHECK(fz_answer.seq == seq &&
			    fz_answer.type == cmd->type,
			    "answer has type %u seq %u, request %u seq %u",
			    fz_answer.type, fz_answer.seq, cmd->type, seq);
		}
		free(payload);
	}
	/* What one input left must not reach the next. */
	agent_discard_staged(&fz_a);
	/* Enumerating the token's objects costs more than most requests:
	 * only after a request that may have staged one. */
#ifdef AGENT_MAX_PEND	/* an agent that stages objects for COMMIT */
	if (staged_objects || fz_a.npend > 0)
		(void)agent_discard_pending(&fz_a);
#else
	(void)staged_objects;
#endif
	for (i = 0; i < ncert; i++)
		(void)hsm_delete_cert(fz_a.hsm, cert_ids[i], cert_id_len[i]);
	fz_agent_clear_import();
	for (i = 0; i < AGENT_CACHE_N; i++)
		fz_a.cache[i].valid = 0;
	return 0;
}
