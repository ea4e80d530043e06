/* Tests of the fortune-file loader (runtime/text.c) on files written to a
 * temporary directory, and on the Debian fortunes when they are installed. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "text.h"

#define DEBIAN_FORTUNES "/usr/share/games/fortunes"

static char temp_dir[64];

static void make_temp_dir(void)
{
    strcpy(temp_dir, "/tmp/bocb-test-text-XXXXXX");
    cr_assert_not_null(mkdtemp(temp_dir));
}

static void remove_temp_dir(void)
{
    DIR *dir = opendir(temp_dir);
    if (!dir)
        return;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", temp_dir, entry->d_name);
        if (rmdir(path) != 0)
            unlink(path);
    }
    closedir(dir);
    rmdir(temp_dir);
}

TestSuite(text, .init = make_temp_dir, .fini = remove_temp_dir);

static void write_file(const char *name, const char *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", temp_dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void write_text(const char *name, const char *text)
{
    write_file(name, text, strlen(text));
}

/* Writes a category file of `n` entries "<tag> entry <i>". */
static void write_category(const char *name, const char *tag, int n)
{
    char *buf = calloc((size_t)n * 64 + 1, 1);
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += (size_t)sprintf(buf + len, "%s entry %d\n%%\n", tag, i);
    write_file(name, buf, len);
    free(buf);
}

static FortuneOptions options(const char *const *categories, int n, int64_t seq_len,
                              TextView view)
{
    return (FortuneOptions){.dir = temp_dir, .categories = categories, .ncategories = n,
                            .seq_len = seq_len, .view = view, .test_fraction = 0.25,
                            .balance = true};
}

static void free_entries(char **entries, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        free(entries[i]);
    free(entries);
}

Test(text, split_drops_separators_and_empty_entries)
{
    const char *src = "one\nline two\n%\n%\nsecond\n%\r\nthird, no newline";
    char **entries = NULL, *error = NULL;
    int64_t n = 0;
    cr_assert(text_split_fortunes("f", src, strlen(src), &entries, &n, &error));
    cr_assert_eq(n, 3);
    cr_expect_str_eq(entries[0], "one\nline two");
    cr_expect_str_eq(entries[1], "second");
    cr_expect_str_eq(entries[2], "third, no newline");
    free_entries(entries, n);
}

Test(text, split_keeps_percent_inside_lines)
{
    const char *src = "50% off\n %\n%%\n";
    char **entries = NULL, *error = NULL;
    int64_t n = 0;
    cr_assert(text_split_fortunes("f", src, strlen(src), &entries, &n, &error));
    cr_assert_eq(n, 1);
    cr_expect_str_eq(entries[0], "50% off\n %\n%%");
    free_entries(entries, n);
}

Test(text, nul_byte_rejected_with_offset)
{
    write_file("bin", "ab\0cd\n", 6);
    const char *cats[] = {"bin"};
    FortuneOptions o = options(cats, 1, 8, TEXT_VIEW_CLASSIFY);
    DataSplits s;
    char *error = NULL;
    cr_assert_not(text_load_fortunes(&s, &o, &error));
    cr_expect(strstr(error, "/bin contains a NUL byte at offset 2") != NULL, "%s", error);
    free(error);
}

Test(text, missing_file_named)
{
    write_category("a", "a", 4);
    const char *cats[] = {"a", "nope"};
    FortuneOptions o = options(cats, 2, 8, TEXT_VIEW_CLASSIFY);
    DataSplits s;
    char *error = NULL;
    cr_assert_not(text_load_fortunes(&s, &o, &error));
    cr_expect(strstr(error, "/nope") != NULL, "%s", error);
    cr_expect(strstr(error, "No such file") != NULL, "%s", error);
    free(error);
}

Test(text, empty_file_has_no_entries)
{
    write_text("empty", "%\n\n%\n");
    const char *cats[] = {"empty"};
    FortuneOptions o = options(cats, 1, 8, TEXT_VIEW_CLASSIFY);
    DataSplits s;
    char *error = NULL;
    cr_assert_not(text_load_fortunes(&s, &o, &error));
    cr_expect(strstr(error, "/empty has no entries") != NULL, "%s", error);
    free(error);
}

Test(text, directory_is_not_a_regular_file)
{
    char path[512];
    snprintf(path, sizeof path, "%s/sub", temp_dir);
    cr_assert_eq(mkdir(path, 0700), 0);
    const char *cats[] = {"sub"};
    FortuneOptions o = options(cats, 1, 8, TEXT_VIEW_CLASSIFY);
    DataSplits s;
    char *error = NULL;
    cr_assert_not(text_load_fortunes(&s, &o, &error));
    cr_expect(strstr(error, "/sub is not a regular file") != NULL, "%s", error);
    free(error);
}

Test(text, classify_balances_and_splits)
{
    write_category("a", "a", 12);
    write_category("b", "bb", 8);
    const char *cats[] = {"a", "b"};
    FortuneOptions o = options(cats, 2, 16, TEXT_VIEW_CLASSIFY);
    DataSplits s;
    char *error = NULL;
    cr_assert(text_load_fortunes(&s, &o, &error), "%s", error);
    /* Balanced to 8 per category; round(8 * 0.25) = 2 test entries each. */
    cr_assert_eq(s.train.count, 12);
    cr_assert_eq(s.test.count, 4);
    cr_expect_eq(s.train.num_classes, 2);
    cr_expect_eq(s.train.rank, 1);
    cr_expect_eq(s.train.sample_dims[0], 16);
    cr_expect_eq(s.normalize, NORMALIZE_NONE);
    int per_class[2] = {0, 0};
    for (int64_t i = 0; i < s.train.count; i++)
        per_class[s.train.labels[i]]++;
    cr_expect_eq(per_class[0], 6);
    cr_expect_eq(per_class[1], 6);
    /* Every sample starts with its category's tag and is zero-padded. */
    for (int64_t i = 0; i < s.train.count; i++) {
        const char *sample = (const char *)s.train.images + i * 16;
        const char *tag = s.train.labels[i] == 0 ? "a entry " : "bb entry ";
        cr_expect(strncmp(sample, tag, strlen(tag)) == 0);
        cr_expect_eq(sample[15], 0);
    }
    /* Train and test never share an entry. */
    for (int64_t i = 0; i < s.test.count; i++)
        for (int64_t j = 0; j < s.train.count; j++)
            cr_expect(memcmp(s.test.images + i * 16, s.train.images + j * 16, 16) != 0);
    data_splits_free(&s);
}

Test(text, split_is_deterministic)
{
    write_category("a", "a", 20);
    write_category("b", "b", 20);
    const char *cats[] = {"a", "b"};
    FortuneOptions o = options(cats, 2, 12, TEXT_VIEW_CLASSIFY);
    DataSplits s1, s2;
    char *error = NULL;
    cr_assert(text_load_fortunes(&s1, &o, &error), "%s", error);
    cr_assert(text_load_fortunes(&s2, &o, &error), "%s", error);
    cr_assert_eq(s1.test.count, s2.test.count);
    cr_expect(memcmp(s1.test.images, s2.test.images, (size_t)(s1.test.count * 12)) == 0);
    cr_expect(memcmp(s1.train.images, s2.train.images, (size_t)(s1.train.count * 12)) == 0);
    data_splits_free(&s1);
    data_splits_free(&s2);
}

Test(text, unbalanced_keeps_every_entry)
{
    write_category("a", "a", 12);
    write_category("b", "b", 8);
    const char *cats[] = {"a", "b"};
    FortuneOptions o = options(cats, 2, 16, TEXT_VIEW_CLASSIFY);
    o.balance = false;
    DataSplits s;
    char *error = NULL;
    cr_assert(text_load_fortunes(&s, &o, &error), "%s", error);
    cr_expect_eq(s.train.count + s.test.count, 20);
    cr_expect_eq(s.test.count, 3 + 2);
    data_splits_free(&s);
}

Test(text, long_entries_truncated)
{
    write_text("long", "abcdefghijklmnop\n%\nxyz\n%\nqrstuvwxyz0123\n%\n12\n");
    const char *cats[] = {"long"};
    FortuneOptions o = options(cats, 1, 4, TEXT_VIEW_CLASSIFY);
    DataSplits s;
    char *error = NULL;
    cr_assert(text_load_fortunes(&s, &o, &error), "%s", error);
    cr_assert_eq(s.train.count + s.test.count, 4);
    bool saw_truncated = false;
    for (int64_t i = 0; i < s.train.count; i++)
        saw_truncated |= memcmp(s.train.images + i * 4, "abcd", 4) == 0 ||
                         memcmp(s.train.images + i * 4, "qrst", 4) == 0;
    for (int64_t i = 0; i < s.test.count; i++)
        saw_truncated |= memcmp(s.test.images + i * 4, "abcd", 4) == 0 ||
                         memcmp(s.test.images + i * 4, "qrst", 4) == 0;
    cr_expect(saw_truncated);
    data_splits_free(&s);
}

Test(text, lm_windows_predict_next_character)
{
    /* Eight entries of 9 bytes each with the newline; two go to test. */
    write_text("c", "entry 00\n%\nentry 01\n%\nentry 02\n%\nentry 03\n%\n"
                    "entry 04\n%\nentry 05\n%\nentry 06\n%\nentry 07\n");
    const char *cats[] = {"c"};
    FortuneOptions o = options(cats, 1, 5, TEXT_VIEW_LM);
    DataSplits s;
    char *error = NULL;
    cr_assert(text_load_fortunes(&s, &o, &error), "%s", error);
    cr_expect_eq(s.train.num_classes, TEXT_VOCAB);
    /* 6 training entries = 54 bytes: windows of 6 at 0, 5, ..., 45 (10 of
     * them, the last covering bytes 45..50) and one more ending at byte 54. */
    cr_assert_eq(s.train.count, 11);
    for (int64_t k = 0; k < s.train.count; k++) {
        const uint8_t *w = s.train.images + k * 5;
        for (int j = 0; j < 5; j++)
            cr_expect_neq(w[j], 0, "window %lld has padding", (long long)k);
    }
    /* Window k's label is the first byte of window k + 1. */
    for (int64_t k = 0; k + 2 < s.train.count; k++)
        cr_expect_eq(s.train.labels[k], s.train.images[(k + 1) * 5]);
    /* The last window ends at the text's final newline. */
    cr_expect_eq(s.train.labels[s.train.count - 1], '\n');
    /* 2 test entries = 18 bytes: windows at 0, 5, 10 and one ending at 18. */
    cr_expect_eq(s.test.count, 4);
    data_splits_free(&s);
}

Test(text, lm_text_shorter_than_window)
{
    write_text("tiny", "ab\n%\ncd\n%\nef\n%\ngh\n");
    const char *cats[] = {"tiny"};
    FortuneOptions o = options(cats, 1, 32, TEXT_VIEW_LM);
    DataSplits s;
    char *error = NULL;
    cr_assert_not(text_load_fortunes(&s, &o, &error));
    cr_expect(strstr(error, "fewer than one window of seq_len + 1 = 33") != NULL, "%s", error);
    free(error);
}

Test(text, test_fraction_zero_rejected)
{
    write_category("a", "a", 4);
    const char *cats[] = {"a"};
    FortuneOptions o = options(cats, 1, 8, TEXT_VIEW_CLASSIFY);
    o.test_fraction = 0;
    DataSplits s;
    char *error = NULL;
    cr_assert_not(text_load_fortunes(&s, &o, &error));
    cr_expect(strstr(error, "leaves no test entries") != NULL, "%s", error);
    free(error);
}

Test(text, duplicate_category_rejected)
{
    write_category("a", "a", 4);
    const char *cats[] = {"a", "a"};
    FortuneOptions o = options(cats, 2, 8, TEXT_VIEW_CLASSIFY);
    DataSplits s;
    char *error = NULL;
    cr_assert_not(text_load_fortunes(&s, &o, &error));
    cr_expect(strstr(error, "'a' is listed twice") != NULL, "%s", error);
    free(error);
}

Test(text, debian_fortunes_four_categories)
{
    if (access(DEBIAN_FORTUNES "/computers", R_OK) != 0)
        cr_skip_test("the fortunes package is not installed");
    const char *cats[] = {"computers", "science", "politics", "work"};
    FortuneOptions o = {.dir = DEBIAN_FORTUNES, .categories = cats, .ncategories = 4,
                        .seq_len = 128, .view = TEXT_VIEW_CLASSIFY, .test_fraction = 0.2,
                        .balance = true};
    DataSplits s;
    char *error = NULL;
    cr_assert(text_load_fortunes(&s, &o, &error), "%s", error);
    /* science is the smallest of the four, with 625 or more entries. */
    cr_expect_eq(s.train.count % 4, 0);
    cr_expect_eq(s.test.count % 4, 0);
    cr_expect_geq(s.train.count + s.test.count, 4 * 600);
    cr_expect_eq(s.train.num_classes, 4);
    data_splits_free(&s);
}
