/* jit_suite.h - a Criterion suite whose tests share one JIT.
 *
 * JIT_SUITE(name) defines the suite `name` and a static `Jit *jit` that
 * is created before each test and destroyed after it.
 */
#ifndef BOCB_TEST_JIT_SUITE_H
#define BOCB_TEST_JIT_SUITE_H

#include <criterion/criterion.h>

#include "codegen.h"

#define JIT_SUITE(name)                                                              \
    static Jit *jit;                                                                 \
                                                                                     \
    static void jit_setup(void)                                                      \
    {                                                                                \
        char *error = NULL;                                                          \
        jit = jit_create(&error);                                                    \
        cr_assert_not_null(jit, "jit_create failed: %s", error ? error : "(no message)"); \
    }                                                                                \
                                                                                     \
    static void jit_teardown(void)                                                   \
    {                                                                                \
        jit_destroy(jit);                                                            \
    }                                                                                \
                                                                                     \
    TestSuite(name, .init = jit_setup, .fini = jit_teardown)

#endif
