/* text.h - character-level text data from fortune files.
 *
 * A fortune file (Debian's `fortunes` package, /usr/share/games/fortunes)
 * is plain text whose entries are separated by lines that contain only
 * "%". Each byte of an entry is one token: ids 1..255 are the bytes, and
 * id 0 is padding, so a file that contains a NUL byte is rejected.
 *
 * The loader fills the same DataSplits as the IDX loader: a sample is
 * `seq_len` token ids stored as bytes (converted to floats with
 * NORMALIZE_NONE, so the model sees the ids themselves), and its label is
 * an int32. Two views exist:
 *
 *  - classification: one sample per entry, truncated to seq_len and padded
 *    with 0; the label is the index of the entry's category file.
 *  - language model: the entries of each split are joined (each followed by
 *    a newline) and cut into windows of seq_len + 1 bytes with stride
 *    seq_len. The sample is the first seq_len bytes and the label the last,
 *    the character that follows the window. The last window is aligned to
 *    the end of the text, so it overlaps the one before it and nothing is
 *    padded.
 *
 * The test split is deterministic: within each category, entries are
 * ordered by a 64-bit FNV-1a hash of their text (ties by position), and the
 * first round(count * test_fraction) of that order are test entries. With
 * `balance`, every category is first cut to the size of the smallest one,
 * keeping the entries that come first in the same order. The language
 * model view splits the same way, so its test text is held out too.
 */
#ifndef BOCB_TEXT_H
#define BOCB_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "data.h"

typedef enum TextView {
    TEXT_VIEW_CLASSIFY,
    TEXT_VIEW_LM,
} TextView;

enum {
    TEXT_VOCAB = 256,       /* token ids: 0 padding, 1..255 bytes */
    TEXT_MAX_SEQ_LEN = 4096,
    TEXT_MAX_CATEGORIES = 64,
};

typedef struct FortuneOptions {
    const char *dir;               /* directory of the category files */
    const char *const *categories; /* file names inside dir */
    int ncategories;
    int64_t seq_len;
    TextView view;
    double test_fraction;          /* in [0, 1); must leave a test entry */
    bool balance;                  /* cut every category to the smallest */
} FortuneOptions;

/* Loads the categories of `opts` into `splits` (NORMALIZE_NONE, rank-1
 * samples of seq_len ids). The classification view has one class per
 * category; the language-model view has TEXT_VOCAB classes. On failure
 * returns false and sets *error to a malloc'd message that names the file
 * and what is wrong with it. */
bool text_load_fortunes(DataSplits *splits, const FortuneOptions *opts, char **error);

/* Splits the contents of one fortune file into entries. Each entry is a
 * malloc'd, NUL-terminated string without the separator line and with its
 * final newline removed; empty entries are dropped. Stores the entries
 * and their count. Returns false with *error set (naming `path`) when the
 * text contains a NUL byte. */
bool text_split_fortunes(const char *path, const char *text, size_t len, char ***entries,
                         int64_t *count, char **error);

/* The 64-bit FNV-1a hash of s, which orders entries for the split. */
uint64_t text_fnv1a(const char *s);

#endif
