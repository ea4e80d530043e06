/* paths.c - file paths written in .bocb programs. */
#include "paths.h"

#include <string.h>

const char *source_relative_path(Arena *arena, const char *path, SrcLoc loc)
{
    if (!path[0] || path[0] == '/' || loc.file == 0)
        return path;
    const char *source = src_path(loc.file);
    if (strcmp(source, COMMAND_LINE_SOURCE) == 0)
        return path;
    const char *slash = strrchr(source, '/');
    if (!slash)
        return path; /* the file is in the current directory */
    if (slash == source)
        return arena_printf(arena, "/%s", path);
    return arena_printf(arena, "%.*s/%s", (int)(slash - source), source, path);
}
