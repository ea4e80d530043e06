/* lexer.c - libFuzzer harness: tokenises arbitrary bytes, NUL bytes
 * included, as a .bocb source file (what `bocbc --emit=tokens` does). */
#include "fuzz.h"

#include "diag.h"
#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    diag_set_stream(fuzz_null_stream());
    Arena arena;
    arena_init(&arena);
    int file = src_register("fuzz.bocb", (const char *)data, size);
    lex_print_tokens(fuzz_null_stream(), file, &arena);
    arena_free(&arena);
    src_forget_all();
    diag_reset_count();
    return 0;
}
