/* metadata.h - REPORT/metadata.json: what produced a grid's results.
 *
 * The file is written when a grid starts. It records the bocbc version
 * and the git commit it was built from, the command line, the experiment
 * and its seeds, the OpenBLAS thread count and core type, the CPU model
 * and the start time. A results table can so be traced to the build and
 * the machine that made it.
 */
#ifndef BOCB_METADATA_H
#define BOCB_METADATA_H

#include <stdbool.h>
#include <stdint.h>

typedef struct RunMetadata {
    const char *version;
    int argc;
    char **argv;
    const char *experiment;
    const uint64_t *seeds;
    int nseeds;
    const char *backend; /* "JIT" or "interpreter" */
} RunMetadata;

/* Writes REPORT/metadata.json atomically. Returns false and sets *error
 * (malloc'd) on failure. */
bool run_metadata_write(const char *report_dir, const RunMetadata *meta, char **error);

#endif
