/* parser.c - libFuzzer harness: parses arbitrary bytes as one .bocb
 * module and prints its AST, without following imports. */
#include "fuzz.h"

#include "ast.h"
#include "diag.h"
#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    diag_set_stream(fuzz_null_stream());
    Arena arena;
    arena_init(&arena);
    int file = src_register("fuzz.bocb", (const char *)data, size);
    Module *module = parse_module(file, &arena);
    ast_print(fuzz_null_stream(), module);
    arena_free(&arena);
    src_forget_all();
    diag_reset_count();
    return 0;
}
