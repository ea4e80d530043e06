/* report.h - result files, written so that a crash never leaves half a file.
 *
 * A file is written to a temporary name in the same directory, flushed to
 * disk, and renamed over the target, so readers see either the old
 * content or the new, never a mixture.
 */
#ifndef BOCB_REPORT_H
#define BOCB_REPORT_H

#include <stdbool.h>
#include <stddef.h>

/* Creates `path` and its missing parents (like mkdir -p). Returns false
 * and sets *error (malloc'd) on failure. */
bool rt_make_dirs(const char *path, char **error);

/* Replaces `path` with `len` bytes of `data` atomically. Returns false and
 * sets *error (malloc'd) on failure; the old file is then untouched. */
bool rt_write_file_atomic(const char *path, const void *data, size_t len, char **error);

#endif
