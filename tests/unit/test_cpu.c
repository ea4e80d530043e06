/* test_cpu.c - rt_cpu_runs_target, the check an AOT executable makes
 * before its kernels run. Expectations come from __builtin_cpu_supports,
 * so the tests hold on any x86-64 CPU. */
#include <criterion/criterion.h>

#include <string.h>

#include "cpu.h"

Test(cpu, host_features_run)
{
    const char *missing = NULL;
    cr_assert(rt_cpu_runs_target("llvm 19.1.7; x86_64-pc-linux-gnu; cpu x86-64; features ",
                                 &missing));
    cr_assert_null(missing);
}

Test(cpu, removed_features_ignored)
{
    const char *missing = NULL;
    cr_assert(rt_cpu_runs_target("llvm 19.1.7; x; cpu generic; features -avx512fp16,-avx2",
                                 &missing));
}

Test(cpu, unknown_features_ignored)
{
    const char *missing = NULL;
    cr_assert(rt_cpu_runs_target("llvm 19.1.7; x; cpu generic; features +cx8,+xsave",
                                 &missing));
}

Test(cpu, listed_feature_checked)
{
    const char *missing = NULL;
    bool has = __builtin_cpu_supports("avx512fp16");
    bool ok = rt_cpu_runs_target("llvm 19.1.7; x; cpu sapphirerapids; features +sse2,"
                                 "+avx512fp16,+avx2", &missing);
    cr_assert_eq(ok, has);
    if (!has)
        cr_assert_str_eq(missing, "avx512fp16");
}

Test(cpu, level_features_checked)
{
    const char *missing = NULL;
    bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma");
    bool ok = rt_cpu_runs_target("llvm 19.1.7; x; cpu x86-64-v4; features ", &missing);
    cr_assert_eq(ok, has);
    cr_assert_eq(missing == NULL, has);
}
