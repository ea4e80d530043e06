/* report.c - directory creation and atomic file replacement. */
#include "report.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

void rt_append_json_string(StrBuf *sb, const char *s)
{
    sb_append(sb, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            sb_printf(sb, "\\%c", *p);
        else if (*p < 0x20)
            sb_printf(sb, "\\u%04x", *p);
        else
            sb_appendn(sb, (const char *)p, 1);
    }
    sb_append(sb, "\"");
}

void rt_append_gnuplot_string(StrBuf *sb, const char *s)
{
    sb_append(sb, "'");
    for (; *s; s++) {
        if (*s == '\'')
            sb_append(sb, "''");
        else
            sb_appendn(sb, s, 1);
    }
    sb_append(sb, "'");
}

void rt_append_gnuplot_label(StrBuf *sb, char *const *labels, int n, int i)
{
    const char *s = labels[i];
    size_t len = strcspn(s, "(");
    bool unique = s[len] != '\0';
    for (int j = 0; unique && j < n; j++)
        if (j != i && strncmp(labels[j], s, len) == 0 &&
            (labels[j][len] == '\0' || labels[j][len] == '('))
            unique = false;
    if (!unique) {
        rt_append_gnuplot_string(sb, s);
        return;
    }
    char *name = xstrndup(s, len);
    rt_append_gnuplot_string(sb, name);
    free(name);
}

int rt_run_gnuplot(const char *dir, const char *script)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* gnuplot's messages, warnings included, go to SCRIPT.log. */
        if (chdir(dir) == 0) {
            char log[512];
            snprintf(log, sizeof log, "%s.log", script);
            int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0666);
            if (fd >= 0) {
                dup2(fd, STDOUT_FILENO);
                dup2(fd, STDERR_FILENO);
                close(fd);
            }
            execlp("gnuplot", "gnuplot", script, (char *)NULL);
        }
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
