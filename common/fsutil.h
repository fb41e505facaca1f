/*
 * fsutil.h: the file-system chores shared by the station, the agent and
 * the jig: reading a whole file under a size cap, and mkdir -p.
 */
#ifndef KL_FSUTIL_H
#define KL_FSUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Read the regular file path whole, refusing one larger than max bytes.
 * 0 with *out (caller free()s; one spare byte after the data, set to NUL,
 * so text can be used as a string) and *len; KL_ERR_IO (cannot open, not a
 * regular file, read error) or KL_ERR_TOO_BIG, with "path: reason" in err.
 */
int fsutil_read_capped(const char *path, size_t max, uint8_t **out,
    size_t *len, char *err, size_t errsz);

/* mkdir -p with mode for each directory made. 0, KL_ERR_PATH, KL_ERR_IO
 * (logged with errno). */
int fsutil_mkdirs(const char *path, mode_t mode);

#endif
