/* loader.c - loading a program: the main file and, depth-first, its imports.
 *
 * A file is identified by its realpath, so one reached through two import
 * paths is parsed once. Modules are appended to the program after all of
 * their imports, which gives dependency order. A file whose imports are
 * still being loaded when it is imported again closes an import cycle.
 */

/* realpath() is an X/Open extension to POSIX. */
#define _XOPEN_SOURCE 700

#include "parse.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Import chains longer than this are reported instead of followed. */
enum { MAX_IMPORT_DEPTH = 64 };

typedef struct LoadedFile {
    char *realpath; /* malloc'd */
    Module *module;
    bool loading; /* its imports are being loaded */
} LoadedFile;

typedef struct Loader {
    const SearchPath *search;
    Arena *arena;
    VEC(LoadedFile) files;
    VEC(Module *) order;
    VEC(Module *) stack; /* modules whose imports are being loaded, outermost first */
} Loader;

static void load_imports(Loader *loader, Module *m);

/* Returns the directory part of a display path: "." when it has none. */
static char *directory_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return xstrdup(".");
    if (slash == path)
        return xstrdup("/");
    return xstrndup(path, (size_t)(slash - path));
}

/* Joins a directory and a relative path, leaving out a "." directory so
 * that display paths stay as short as the user wrote them. */
static char *join_path(const char *dir, const char *path)
{
    if (strcmp(dir, ".") == 0)
        return xstrdup(path);
    size_t len = strlen(dir);
    if (len > 0 && dir[len - 1] == '/')
        return xasprintf("%s%s", dir, path);
    return xasprintf("%s/%s", dir, path);
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int find_loaded(const Loader *loader, const char *realpath)
{
    for (int i = 0; i < loader->files.len; i++)
        if (strcmp(loader->files.data[i].realpath, realpath) == 0)
            return i;
    return -1;
}

/* Reports "import cycle: a.bocb -> b.bocb -> a.bocb", starting the chain at
 * the module that is imported again. */
static void report_cycle(const Loader *loader, const Module *again, SrcLoc loc)
{
    int start = 0;
    for (int i = 0; i < loader->stack.len; i++)
        if (loader->stack.data[i] == again)
            start = i;

    StrBuf chain = {0};
    for (int i = start; i < loader->stack.len; i++)
        sb_printf(&chain, "%s -> ", loader->stack.data[i]->path);
    sb_append(&chain, again->path);
    diag_error(loc, "import cycle: %s", chain.data);
    sb_free(&chain);
}

/* Parses a module and loads its imports, then appends it to the program. */
static void add_module(Loader *loader, Module *m, char *realpath)
{
    LoadedFile entry = {realpath, m, true};
    VEC_PUSH(&loader->files, entry);
    int index = loader->files.len - 1;

    VEC_PUSH(&loader->stack, m);
    load_imports(loader, m);
    loader->stack.len--;

    loader->files.data[index].loading = false;
    VEC_PUSH(&loader->order, m);
}

/* Loads the file at `path`, once, for the import declaration `from`. */
static void load_file(Loader *loader, const char *path, const Decl *from)
{
    char *real = realpath(path, NULL);
    if (!real) {
        diag_error(from->path_loc, "cannot open '%s': %s", path, strerror(errno));
        return;
    }

    int known = find_loaded(loader, real);
    if (known >= 0) {
        if (loader->files.data[known].loading)
            report_cycle(loader, loader->files.data[known].module, from->path_loc);
        free(real);
        return;
    }

    if (loader->stack.len >= MAX_IMPORT_DEPTH) {
        diag_error(from->path_loc, "imports nested too deeply (the limit is %d levels)",
                   MAX_IMPORT_DEPTH);
        free(real);
        return;
    }

    char *error;
    int file = src_load(path, &error);
    if (file == 0) {
        diag_error(from->path_loc, "cannot read '%s': %s", path, error);
        free(error);
        free(real);
        return;
    }
    add_module(loader, parse_module(file, loader->arena), real);
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Loads every *.bocb entry of a directory in name order, except hidden
 * ones (".name.bocb") and subdirectories. Any other entry that is not a
 * regular file, such as a FIFO or a symbolic link loop, is reported by
 * load_file() rather than skipped, because the import asked for it. */
static void load_directory(Loader *loader, const char *dir, const Decl *from)
{
    DIR *d = opendir(dir);
    if (!d) {
        /* messages.py: not reached: the tests run as root, which may open
         * any directory that stat() accepts. */
        diag_error(from->path_loc, "cannot open directory '%s': %s", dir, strerror(errno));
        return;
    }
    VEC(char *) paths = {0};
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        if (entry->d_name[0] == '.' || !has_suffix(entry->d_name, ".bocb"))
            continue;
        char *path = join_path(dir, entry->d_name);
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            free(path);
        else
            VEC_PUSH(&paths, path);
    }
    closedir(d);

    if (paths.len == 0)
        diag_error(from->path_loc, "import \"%s\": directory '%s' contains no .bocb files",
                   from->path, dir);
    if (paths.len > 1)
        qsort(paths.data, (size_t)paths.len, sizeof(char *), compare_names);
    for (int i = 0; i < paths.len; i++) {
        load_file(loader, paths.data[i], from);
        free(paths.data[i]);
    }
    VEC_FREE(&paths);
}

/* Returns whether stat() failed because nothing exists at the path, as
 * opposed to a symbolic link loop or a permission error. */
static bool is_missing(int error)
{
    return error == ENOENT || error == ENOTDIR;
}

/* Tries `base` as a file or directory, then `base`.bocb as a file. Returns
 * false, after adding the paths tried to `tried`, when neither exists. A
 * path that exists but cannot be examined, such as a symbolic link loop,
 * is reported and counts as found. */
static bool try_import_at(Loader *loader, const char *base, const Decl *from, StrBuf *tried)
{
    struct stat st;
    if (stat(base, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            load_directory(loader, base, from);
            return true;
        }
        load_file(loader, base, from);
        return true;
    }
    if (!is_missing(errno)) {
        diag_error(from->path_loc, "cannot open '%s': %s", base, strerror(errno));
        return true;
    }
    sb_printf(tried, "%s%s", tried->len ? ", " : "", base);

    if (has_suffix(base, ".bocb"))
        return false;
    char *with_suffix = xasprintf("%s.bocb", base);
    bool found = true;
    int status = stat(with_suffix, &st);
    if (status == 0 && !S_ISDIR(st.st_mode)) {
        load_file(loader, with_suffix, from);
    } else if (status != 0 && !is_missing(errno)) {
        diag_error(from->path_loc, "cannot open '%s': %s", with_suffix, strerror(errno));
    } else {
        sb_printf(tried, ", %s", with_suffix);
        found = false;
    }
    free(with_suffix);
    return found;
}

static void resolve_import(Loader *loader, const Module *importer, const Decl *d)
{
    const char *path = d->path;
    if (path[0] == '\0') {
        diag_error(d->path_loc, "empty import path");
        return;
    }

    StrBuf tried = {0};
    bool found = false;
    bool is_std = strcmp(path, "std") == 0 || strncmp(path, "std/", 4) == 0;
    if (path[0] == '/') {
        found = try_import_at(loader, path, d, &tried);
    } else {
        if (!is_std) {
            char *dir = directory_of(importer->path);
            char *base = join_path(dir, path);
            found = try_import_at(loader, base, d, &tried);
            free(base);
            free(dir);
        }
        for (int i = 0; !found && loader->search && i < loader->search->ndirs; i++) {
            char *base = join_path(loader->search->dirs[i], path);
            found = try_import_at(loader, base, d, &tried);
            free(base);
        }
    }
    if (!found && is_std) {
        const char *stdlib = loader->search ? loader->search->stdlib_dir : NULL;
        if (!stdlib) {
            diag_error(d->path_loc, "cannot import \"%s\": the standard library was not "
                                    "found; set BOCB_STDLIB to its directory (stdlib/ in the "
                                    "bocb source tree), or install bocbc with 'make install'",
                       path);
            sb_free(&tried);
            return;
        }
        char *base = path[3] ? join_path(stdlib, path + 4) : xstrdup(stdlib);
        found = try_import_at(loader, base, d, &tried);
        free(base);
    }

    if (!found)
        diag_error(d->path_loc, "import \"%s\" not found; tried %s", path, tried.data);
    sb_free(&tried);
}

static void load_imports(Loader *loader, Module *m)
{
    for (int i = 0; i < m->ndecls; i++)
        if (m->decls[i]->kind == DECL_IMPORT)
            resolve_import(loader, m, m->decls[i]);
}

static Program *finish(Loader *loader, Module *main_module)
{
    Program *p = arena_alloc(loader->arena, sizeof *p);
    p->nmodules = loader->order.len;
    p->modules = arena_calloc(loader->arena, (size_t)loader->order.len, sizeof(Module *));
    memcpy(p->modules, loader->order.data, (size_t)loader->order.len * sizeof(Module *));
    p->main = main_module;

    for (int i = 0; i < loader->files.len; i++)
        free(loader->files.data[i].realpath);
    VEC_FREE(&loader->files);
    VEC_FREE(&loader->order);
    VEC_FREE(&loader->stack);
    return p;
}

Program *load_program(const char *path, const SearchPath *search, Arena *arena)
{
    char *error;
    int file = src_load(path, &error);
    if (file == 0) {
        diag_error(NO_LOC, "cannot read '%s': %s", path, error);
        free(error);
        return NULL;
    }
    char *real = realpath(path, NULL);
    if (!real)
        real = xstrdup(path);

    Loader loader = {search, arena, {0}, {0}, {0}};
    Module *main_module = parse_module(file, arena);
    add_module(&loader, main_module, real);
    return finish(&loader, main_module);
}

Program *load_program_string(const char *name, const char *text, const SearchPath *search,
                             Arena *arena)
{
    int file = src_register(name, text, strlen(text));
    Loader loader = {search, arena, {0}, {0}, {0}};
    Module *main_module = parse_module(file, arena);

    /* The text has no file of its own, so nothing can import it: its key
     * is a name that no realpath can equal. */
    add_module(&loader, main_module, xasprintf("<string %d>", file));
    return finish(&loader, main_module);
}
