/* test_memory_size.c - parsing of --max-memory sizes. */
#include <criterion/criterion.h>
#include <stdint.h>

#include "memory_size.h"

static size_t parsed(const char *text)
{
    size_t bytes = 7;
    cr_assert(parse_memory_size(text, &bytes), "'%s' was rejected", text);
    return bytes;
}

static void rejected(const char *text)
{
    size_t bytes = 7;
    cr_assert_not(parse_memory_size(text, &bytes), "'%s' was accepted", text);
    cr_assert_eq(bytes, 7, "'%s' changed the result when rejected", text);
}

Test(memory_size, plain_bytes)
{
    cr_assert_eq(parsed("1"), 1);
    cr_assert_eq(parsed("4096"), 4096);
    cr_assert_eq(parsed("10B"), 10);
}

Test(memory_size, binary_suffixes)
{
    cr_assert_eq(parsed("1K"), 1024);
    cr_assert_eq(parsed("3k"), 3072);
    cr_assert_eq(parsed("512M"), (size_t)512 << 20);
    cr_assert_eq(parsed("512MiB"), (size_t)512 << 20);
    cr_assert_eq(parsed("2GB"), (size_t)2 << 30);
    cr_assert_eq(parsed("4g"), (size_t)4 << 30);
    cr_assert_eq(parsed("1T"), (size_t)1 << 40);
}

Test(memory_size, malformed)
{
    rejected("");
    rejected("0");
    rejected("0G");
    rejected("-1");
    rejected("G");
    rejected("1.5G");
    rejected("12Q");
    rejected("1 G");
    rejected("1Gi");
    rejected("1GiBx");
}

Test(memory_size, overflow)
{
    rejected("99999999999999999999");
    rejected("18446744073709551616");
    rejected("16777216T");
    cr_assert_eq(parsed("16777215T"), (size_t)16777215 << 40);
}
