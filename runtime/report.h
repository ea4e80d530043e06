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

#include "base.h"

/* Creates `path` and its missing parents (like mkdir -p). Returns false
 * and sets *error (malloc'd) on failure. */
bool rt_make_dirs(const char *path, char **error);

/* Replaces `path` with `len` bytes of `data` atomically. Returns false and
 * sets *error (malloc'd) on failure; the old file is then untouched. */
bool rt_write_file_atomic(const char *path, const void *data, size_t len, char **error);

/* Appends `s` to `sb` as a JSON string: quoted, with '"', '\\' and
 * control characters escaped. */
void rt_append_json_string(StrBuf *sb, const char *s);

/* Appends `s` to `sb` as a gnuplot single-quoted string, which doubles
 * its quotes. */
void rt_append_gnuplot_string(StrBuf *sb, const char *s);

/* Appends labels[i] as a gnuplot string for an axis or a legend. When no
 * other of the n labels has the same name, only the name before its first
 * '(' is written ("resnet" for "resnet(widths=[8, 16])"), so that long
 * configurations do not crowd the plot. Otherwise the whole label is. */
void rt_append_gnuplot_label(StrBuf *sb, char *const *labels, int n, int i);

/* Runs `gnuplot SCRIPT` in directory `dir`, without a shell, with its
 * output in DIR/SCRIPT.log. Returns its exit status: 0 on success, 127
 * when gnuplot cannot be started, and -1 when the process could not be
 * created. */
int rt_run_gnuplot(const char *dir, const char *script);

#endif
