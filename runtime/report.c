/* report.c - directory creation and atomic file replacement. */
#include "report.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base.h"

bool rt_make_dirs(const char *path, char **error)
{
    char *copy = xstrdup(path);
    size_t len = strlen(copy);
    for (size_t i = 1; i <= len; i++) {
        if (copy[i] != '/' && copy[i] != '\0')
            continue;
        char saved = copy[i];
        copy[i] = '\0';
        if (mkdir(copy, 0777) != 0 && errno != EEXIST) {
            *error = xasprintf("%s: cannot create directory: %s", copy, strerror(errno));
            free(copy);
            return false;
        }
        copy[i] = saved;
    }
    struct stat st;
    bool ok = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    if (!ok)
        *error = xasprintf("%s: exists and is not a directory", path);
    free(copy);
    return ok;
}

bool rt_write_file_atomic(const char *path, const void *data, size_t len, char **error)
{
    char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) {
        *error = xasprintf("%s: cannot create file: %s", tmp, strerror(errno));
        free(tmp);
        return false;
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *error = xasprintf("%s: write failed: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            free(tmp);
            return false;
        }
        p += n;
        left -= (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        *error = xasprintf("%s: cannot flush to disk: %s", tmp, strerror(errno));
        unlink(tmp);
        free(tmp);
        return false;
    }
    if (rename(tmp, path) != 0) {
        *error = xasprintf("%s: cannot replace the file: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return false;
    }
    free(tmp);
    return true;
}
