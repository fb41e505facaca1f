/*
 * fuzz_boardconf.c: board.conf through the agent's conf_load()
 * (fixtures/agent/agent.c, included whole through agent_env.h to reach
 * the static function), the input written to a file first.
 *
 * Checks: an accepted file has every required key, terminated strings,
 * absolute paths and pad times in range; its allow lists hold at most
 * AGENT_MAX_ALLOW ids of 1..16 bytes, plain file names and labels without
 * blanks.
 */
#include "tests/fuzz/agent_env.h"

static char fz_path[PATH_MAX];

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_logs("fuzz_boardconf");
	snprintf(fz_path, sizeof(fz_path), "%s/board.conf", fuzz_tmpdir());
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct agent_conf c;
	size_t i;

	fuzz_write_file(fz_path, data, size);
	memset(&c, 0, sizeof(c));
	if (conf_load(&c, fz_path) != 0)
		return 0;
	for (i = 0; i < CONF_NKEYS; i++)
		FUZZ_CHECK(!conf_keys[i].required || (c.seen & (1u << i)),
		    "accepted without '%s'", conf_keys[i].key);
	FUZZ_CHECK(c.serial[0] != '\0' || strlen(c.serial) == 0, "serial");
	FUZZ_CHECK(memchr(c.module, '\0', sizeof(c.module)) != NULL &&
	    memchr(c.import_dir, '\0', sizeof(c.import_dir)) != NULL &&
	    memchr(c.token_label, '\0', sizeof(c.token_label)) != NULL,
	    "unterminated string");
	FUZZ_CHECK(c.module[0] == '/' && c.import_dir[0] == '/',
	    "relative path left: '%s' '%s'", c.module, c.import_dir);
	FUZZ_CHECK(c.keygen_ms >= 0 && c.keygen_ms <= AGENT_MAX_PAD_MS &&
	    c.sign_ms >= 0 && c.sign_ms <= AGENT_MAX_PAD_MS, "pad times");
	FUZZ_CHECK(c.allow_ids.n <= AGENT_MAX_ALLOW &&
	    c.allow_labels.n <= AGENT_MAX_ALLOW &&
	    c.allow_files.n <= AGENT_MAX_ALLOW, "allow list counts");
	for (i = 0; i < c.allow_ids.n; i++)
		FUZZ_CHECK(c.allow_ids.len[i] >= 1 &&
		    c.allow_ids.len[i] <= PROTO_MAX_KEY_ID, "allowed id length");
	for (i = 0; i < c.allow_files.n; i++)
		FUZZ_CHECK(agent_plain_name(c.allow_files.name[i]),
		    "allowed file '%s'", c.allow_files.name[i]);
	for (i = 0; i < c.allow_labels.n; i++)
		FUZZ_CHECK(c.allow_labels.name[i][0] != '\0' &&
		    strpbrk(c.allow_labels.name[i], " \t") == NULL,
		    "allowed label '%s'", c.allow_labels.name[i]);
	FUZZ_CHECK(c.allow_reprovision == 0 || c.allow_reprovision == 1,
	    "allow_reprovision");
	return 0;
}
