/* metadata.c - writes REPORT/metadata.json. */
#include "metadata.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../runtime/base.h"
#include "../runtime/report.h"

/* BOCB_COMMIT: the commit the binary was built from, written by the Makefile. */
#include "commit.h"

/* Returns the "model name" of the first processor in /proc/cpuinfo
 * (malloc'd), or "unknown". */
static char *cpu_model(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    char *model = NULL;
    while (f && !model && fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0)
            continue;
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        char *start = colon + 1;
        while (*start == ' ' || *start == '\t')
            start++;
        start[strcspn(start, "\n")] = '\0';
        model = xstrdup(start);
    }
    if (f)
        fclose(f);
    return model ? model : xstrdup("unknown");
}

bool run_metadata_write(const char *report_dir, const RunMetadata *meta, char **error)
{
    StrBuf js = {0};
    sb_append(&js, "{\n  \"bocbc_version\": ");
    rt_append_json_string(&js, meta->version);
    sb_append(&js, ",\n  \"commit\": ");
    rt_append_json_string(&js, BOCB_COMMIT);
    sb_append(&js, ",\n  \"command_line\": [");
    for (int i = 0; i < meta->argc; i++) {
        sb_append(&js, i ? ", " : "");
        rt_append_json_string(&js, meta->argv[i]);
    }
    sb_append(&js, "],\n  \"experiment\": ");
    rt_append_json_string(&js, meta->experiment);
    sb_append(&js, ",\n  \"seeds\": [");
    for (int i = 0; i < meta->nseeds; i++)
        sb_printf(&js, "%s%llu", i ? ", " : "", (unsigned long long)meta->seeds[i]);
    sb_append(&js, "],\n  \"backend\": ");
    rt_append_json_string(&js, meta->backend);
    sb_printf(&js, ",\n  \"blas_threads\": %d,\n  \"blas_core\": ", openblas_get_num_threads());
    rt_append_json_string(&js, openblas_get_corename());
    char *cpu = cpu_model();
    sb_append(&js, ",\n  \"cpu\": ");
    rt_append_json_string(&js, cpu);
    free(cpu);
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    sb_append(&js, ",\n  \"started\": ");
    rt_append_json_string(&js, when);
    sb_append(&js, "\n}\n");

    char *path = xasprintf("%s/metadata.json", report_dir);
    bool ok = rt_write_file_atomic(path, js.data, js.len, error);
    free(path);
    sb_free(&js);
    return ok;
}
