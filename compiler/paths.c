/* paths.c - file paths written in .bocb programs. */
#include "paths.h"

#include <stdlib.h>
#include <string.h>

/* Returns source without the directory that an executable of bocbc -c
 * unpacks its sources into (BOCB_AOT_SOURCE_ROOT), so a path relative to
 * a source file means what it meant where the file was compiled. */
static const char *compiled_source_path(const char *source)
{
    const char *root = getenv(AOT_SOURCE_ROOT_ENV);
    size_t n = root ? strlen(root) : 0;
    if (n > 0 && strncmp(source, root, n) == 0 && source[n] == '/')
        return source + n;
    return source;
}

const char *source_relative_path(Arena *arena, const char *path, SrcLoc loc)
{
    if (!path[0] || path[0] == '/' || loc.file == 0)
        return path;
    const char *source = src_path(loc.file);
    if (strcmp(source, COMMAND_LINE_SOURCE) == 0)
        return path;
    source = compiled_source_path(source);
    const char *slash = strrchr(source, '/');
    if (!slash)
        return path; /* the file is in the current directory */
    if (slash == source)
        return arena_printf(arena, "/%s", path);
    return arena_printf(arena, "%.*s/%s", (int)(slash - source), source, path);
}
