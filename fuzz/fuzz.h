/* fuzz.h - helpers shared by the libFuzzer harnesses in this directory.
 *
 * A harness is one file that defines LLVMFuzzerTestOneInput and is listed
 * in FUZZ_TARGETS in the Makefile; `make fuzz` builds it with clang,
 * libFuzzer, ASan and UBSan, and runs it on a seed corpus (tools/fuzz.sh).
 */
#ifndef BOCB_FUZZ_H
#define BOCB_FUZZ_H

#define _GNU_SOURCE /* memfd_create */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Returns a stream that discards what is written to it, opened once. */
static inline FILE *fuzz_null_stream(void)
{
    static FILE *null_stream;
    if (!null_stream)
        null_stream = fopen("/dev/null", "w");
    if (!null_stream)
        abort();
    return null_stream;
}

/* An in-memory regular file that loaders can open by path. */
typedef struct FuzzFile {
    int fd;
    char path[64];
} FuzzFile;

/* Creates an in-memory file that contains data[0 .. size), reachable
 * through fuzz_file.path ("/proc/self/fd/N") until fuzz_file_close. */
static inline FuzzFile fuzz_file_create(const uint8_t *data, size_t size)
{
    FuzzFile f;
    f.fd = memfd_create("bocb-fuzz", 0);
    if (f.fd < 0)
        abort();
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(f.fd, data + done, size - done);
        if (n <= 0)
            abort();
        done += (size_t)n;
    }
    snprintf(f.path, sizeof f.path, "/proc/self/fd/%d", f.fd);
    return f;
}

static inline void fuzz_file_close(FuzzFile *f)
{
    close(f->fd);
    f->fd = -1;
}

#endif
