/* checker.c - libFuzzer harness: the whole front end without data or a
 * run. It parses arbitrary bytes as the main .bocb file (imports of the
 * standard library are followed), resolves every experiment, and compiles
 * each model and optimizer pair to its training and evaluation graphs, as
 * `bocbc --check` does, but on a fixed data shape of [1, 28, 28] images in
 * 10 classes instead of loading the experiment's data. */
#include "fuzz.h"

#include <string.h>

#include "diag.h"
#include "lower.h"
#include "parse.h"

#ifndef FUZZ_STDLIB_DIR
#error "FUZZ_STDLIB_DIR must name the stdlib directory"
#endif

static void compile_experiment(Lower *l, const Decl *decl)
{
    ExperimentSpec spec;
    memset(&spec, 0, sizeof spec);
    experiment_resolve(l, decl, NULL, 0, &spec);
    if (!spec.data)
        return;
    DataShape shape = {.rank = 3, .dims = {1, 28, 28}, .classes = 10};
    l->loss = spec.loss;
    for (int m = 0; m < spec.nmodels; m++) {
        for (int o = 0; o < spec.noptimizers; o++) {
            CompiledCell cell;
            CellOptions options = {.clip = spec.clip, .groups = spec.groups,
                                   .ngroups = spec.ngroups};
            if (compile_cell_with(l, spec.models[m], spec.optimizers[o], &shape, DT_F32,
                                  &options, &cell))
                compiled_cell_free(&cell);
        }
        if (spec.noptimizers == 0)
            check_model(l, spec.models[m], &shape, DT_F32);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    diag_set_stream(fuzz_null_stream());
    Arena arena;
    arena_init(&arena);
    /* The text stops at its first NUL byte, as load_program_string reads
     * a C string; the lexer harness covers NUL bytes in a file. */
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    SearchPath search = {.stdlib_dir = FUZZ_STDLIB_DIR};
    Program *program = load_program_string("fuzz.bocb", text, &search, &arena);
    free(text);
    if (diag_error_count() == 0) {
        Lower l;
        lower_init(&l, program, &arena);
        for (int i = 0; i < program->main->ndecls; i++)
            if (program->main->decls[i]->kind == DECL_EXPERIMENT)
                compile_experiment(&l, program->main->decls[i]);
        lower_free(&l);
    }
    arena_free(&arena);
    src_forget_all();
    diag_reset_count();
    return 0;
}
