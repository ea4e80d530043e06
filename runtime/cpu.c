/* cpu.c - the instruction-set check of AOT executables (see cpu.h). */
#include "cpu.h"

#include <stddef.h>
#include <string.h>

typedef struct Feature {
    const char *name; /* LLVM's name, as in the target's feature list */
    bool present;
} Feature;

/* Fills table[] with the features that __builtin_cpu_supports tests and
 * returns their number. Each test takes a string literal, so each
 * feature has its own line. */
static int detect_features(Feature *table)
{
    int n = 0;
    table[n++] = (Feature){"sse3", __builtin_cpu_supports("sse3")};
    table[n++] = (Feature){"ssse3", __builtin_cpu_supports("ssse3")};
    table[n++] = (Feature){"sse4.1", __builtin_cpu_supports("sse4.1")};
    table[n++] = (Feature){"sse4.2", __builtin_cpu_supports("sse4.2")};
    table[n++] = (Feature){"popcnt", __builtin_cpu_supports("popcnt")};
    table[n++] = (Feature){"avx", __builtin_cpu_supports("avx")};
    table[n++] = (Feature){"avx2", __builtin_cpu_supports("avx2")};
    table[n++] = (Feature){"fma", __builtin_cpu_supports("fma")};
    table[n++] = (Feature){"bmi", __builtin_cpu_supports("bmi")};
    table[n++] = (Feature){"bmi2", __builtin_cpu_supports("bmi2")};
    table[n++] = (Feature){"avx512f", __builtin_cpu_supports("avx512f")};
    table[n++] = (Feature){"avx512bw", __builtin_cpu_supports("avx512bw")};
    table[n++] = (Feature){"avx512dq", __builtin_cpu_supports("avx512dq")};
    table[n++] = (Feature){"avx512vl", __builtin_cpu_supports("avx512vl")};
    table[n++] = (Feature){"avx512cd", __builtin_cpu_supports("avx512cd")};
    table[n++] = (Feature){"avx512vnni", __builtin_cpu_supports("avx512vnni")};
    table[n++] = (Feature){"avx512bf16", __builtin_cpu_supports("avx512bf16")};
    /* clang before 15 (the fuzzing build) does not know this feature's name. */
#if !defined(__clang__) || __clang_major__ >= 15
    table[n++] = (Feature){"avx512fp16", __builtin_cpu_supports("avx512fp16")};
#endif
    return n;
}

/* Returns the table's name of the feature named by `len` bytes at `name`
 * when this CPU lacks it, else NULL; unknown features count as present. */
static const char *missing_feature(const Feature *table, int n, const char *name, size_t len)
{
    for (int i = 0; i < n; i++)
        if (strlen(table[i].name) == len && strncmp(table[i].name, name, len) == 0)
            return table[i].present ? NULL : table[i].name;
    return NULL;
}

/* Features of the x86-64 micro-architecture levels, each level adding to
 * the one before (the x86-64 psABI, "Micro-architecture levels"). */
static const char *const level_features[] = {
    "sse3,ssse3,sse4.1,sse4.2,popcnt",
    "avx,avx2,bmi,bmi2,fma",
    "avx512f,avx512bw,avx512cd,avx512dq,avx512vl",
};

/* Checks a comma-separated list of features, each with an optional
 * leading '+'; features with '-' are not required. */
static const char *check_list(const Feature *table, int n, const char *list)
{
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",; ");
        if (*p != '-') {
            const char *name = *p == '+' ? p + 1 : p;
            size_t name_len = *p == '+' ? len - 1 : len;
            const char *missing = missing_feature(table, n, name, name_len);
            if (missing)
                return missing;
        }
        p += len;
        if (*p != ',')
            break;
        p++;
    }
    return NULL;
}

bool rt_cpu_runs_target(const char *target, const char **missing)
{
    Feature table[32];
    int n = detect_features(table);
    *missing = NULL;

    const char *cpu = strstr(target, "; cpu ");
    if (cpu && strncmp(cpu + 6, "x86-64-v", 8) == 0) {
        int level = cpu[14] - '0';
        for (int l = 2; l <= level && l <= 4 && !*missing; l++)
            *missing = check_list(table, n, level_features[l - 2]);
    }
    const char *features = strstr(target, "; features ");
    if (features && !*missing)
        *missing = check_list(table, n, features + strlen("; features "));
    return *missing == NULL;
}
