/*
 * ini.h: the line reader behind station.conf and board.conf.
 *
 *   # comment            ; comment
 *   [section]
 *   key = value          (spaces around key and value are trimmed)
 *
 * Lines are at most INI_MAX_LINE bytes, files at most INI_MAX_FILE.  A line
 * that is neither blank, comment, section nor key = value is an error that
 * names the file and the line.  Values may not contain NUL or control
 * characters.
 */
#ifndef KL_INI_H
#define KL_INI_H

#include <stddef.h>

#define INI_MAX_LINE 1024
#define INI_MAX_FILE (256 * 1024)
#define INI_MAX_NAME 64		/* section and key names */

/*
 * Called for every key = value.  section is "" before the first [section].
 * Return 0, or a negative code after writing the reason into why (the
 * parser prefixes "file:line: [section] key: ").
 */
typedef int (*ini_cb)(void *arg, const char *section, const char *key,
    const char *value, char *why, size_t whysz);

/*
 * Parse path; stops at the first error.  0, KL_ERR_IO (cannot read),
 * KL_ERR_CONFIG with "path:line: ..." in err, or the callback's code.
 */
int ini_parse_file(const char *path, ini_cb cb, void *arg, char *err,
    size_t errsz);
/* Same over a string; name is used in messages. */
int ini_parse_string(const char *name, const char *text, size_t len,
    ini_cb cb, void *arg, char *err, size_t errsz);

/* Value helpers for callbacks: 0 or KL_ERR_CONFIG with why. */
int ini_to_bool(const char *v, int *out, char *why, size_t whysz);
int ini_to_long(const char *v, long min, long max, long *out, char *why,
    size_t whysz);
/* Copy v into out; KL_ERR_CONFIG if it does not fit. */
int ini_to_str(const char *v, char *out, size_t outsz, char *why,
    size_t whysz);
/* Like ini_to_str, but a relative path is taken relative to base_dir. */
int ini_to_path(const char *v, const char *base_dir, char *out, size_t outsz,
    char *why, size_t whysz);

#endif
