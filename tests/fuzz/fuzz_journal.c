/*
 * fuzz_journal.c: the agent's commit journal reader (agent_journal_read in
 * fixtures/agent/agent.c, reached by including agent_env.h).  The journal
 * sits on the board's disk; a power cut, a bad flash block or a hand edit
 * can leave anything there, and the agent reads it before anything else.
 *
 * Checks: what is accepted names only plain file names and key ids of
 * 1..16 bytes, within the counts the agent stages; written back by
 * agent_journal_write and read again, it is the same journal.
 */
#include "tests/fuzz/agent_env.h"

static char fz_dir[PATH_MAX], fz_path[PATH_MAX + 32];
static struct agent fz_a;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_logs("fuzz_journal");
	snprintf(fz_dir, sizeof(fz_dir), "%s", fuzz_tmpdir());
	snprintf(fz_path, sizeof(fz_path), "%s/%s", fz_dir, AGENT_JOURNAL);
	fz_a.import_fd = open(fz_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	snprintf(fz_a.conf.import_dir, sizeof(fz_a.conf.import_dir), "%s",
	    fz_dir);
	return fz_a.import_fd < 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct agent_journal j, k;
	char why[256];
	size_t i;
	int found = 0, again = 0;

	fuzz_write_file(fz_path, data, size);
	if (agent_journal_read(&fz_a, &j, &found) != 0 || !found)
		return 0;
	FUZZ_CHECK(j.nids <= AGENT_MAX_PEND && j.nfiles <= AGENT_MAX_STAGED,
	    "counts %zu %zu", j.nids, j.nfiles);
	for (i = 0; i < j.nids; i++)
		FUZZ_CHECK(j.ids[i].len >= 1 && j.ids[i].len <= PROTO_MAX_KEY_ID,
		    "id length %zu", j.ids[i].len);
	for (i = 0; i < j.nfiles; i++)
		FUZZ_CHECK(agent_plain_name(j.files[i]), "file name '%s'",
		    j.files[i]);
	/* What the agent would write for it reads back the same. */
	why[0] = '\0';
	if (agent_journal_write(&fz_a, &j, why, sizeof(why)) != 0)
		return 0;
	FUZZ_CHECK(agent_journal_read(&fz_a, &k, &again) == 0 && again,
	    "its own journal does not read back");
	FUZZ_CHECK(k.nids == j.nids && k.nfiles == j.nfiles,
	    "round trip changed the counts");
	for (i = 0; i < j.nids; i++)
		FUZZ_CHECK(k.ids[i].len == j.ids[i].len &&
		    memcmp(k.ids[i].id, j.ids[i].id, j.ids[i].len) == 0,
		    "round trip changed id %zu", i);
	for (i = 0; i < j.nfiles; i++)
		FUZZ_CHECK(strcmp(k.files[i], j.files[i]) == 0,
		    "round trip changed file %zu", i);
	return 0;
}
