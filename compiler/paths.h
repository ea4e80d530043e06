/* paths.h - file paths written in .bocb programs. */
#ifndef BOCB_PATHS_H
#define BOCB_PATHS_H

#include "../lang/diag.h"

/* The display name under which experiment.c registers `-D` values. */
#define COMMAND_LINE_SOURCE "command line"

/* The environment variable in which an executable of bocbc -c names the
 * directory that it unpacked its sources into (aot_main.c). */
#define AOT_SOURCE_ROOT_ENV "BOCB_AOT_SOURCE_ROOT"

/* Returns `path` as the program means it: a relative path written in a
 * .bocb file is relative to that file's directory, so the result joins
 * the two (allocated in `arena`); in an executable of bocbc -c, the file's
 * directory is where it was compiled. An absolute path, an empty one, and a
 * value from the command line (a `-D` override), which is relative to
 * the current directory, are returned unchanged. `loc` is where the
 * path's string literal is. */
const char *source_relative_path(Arena *arena, const char *path, SrcLoc loc);

#endif
