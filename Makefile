# Makefile - the one entry point of bocb.
#
#   make            build build/bocbc
#   make deps       install the Debian packages (apt, idempotent)
#   make demo       deps + build + train the quickstart on Fashion-MNIST
#   make check      deps + build + every test suite; last line "N passed, N failed"
#   make bench      bench-deps + build + timed runs of the quickstart models,
#                   the optimizer step, and the matrix of five models against
#                   PyTorch (bench/run.sh), whose table it writes to
#                   docs/results/bench_matrix.md
#   make bench-deps deps + python3-torch and python3-numpy for `make bench`
#   make results-backbones  build + train every std/nets backbone in its compact
#                   configuration 5 epochs on the full split (about 2 hours
#                   on 2 cores), writing docs/results/backbones.md;
#                   RESULTS_ARGS="" trains the default sizes instead
#                   (about 10 hours)
#   make results-stability  build + run the synthetic SGD stability experiment
#                   (about a minute), writing docs/results/stability_synthetic.*
#   make zo-bench   build + fine-tune the character transformer of
#                   examples/fortunes.bocb with each gradient method and
#                   optimizer, writing docs/results/zo_bench.md;
#                   ZO_BENCH_ARGS="--steps 50" for a shorter run
#   make check-asan build-asan/ + every test suite under ASan and UBSan
#   make fuzz       build-fuzz/ + each libFuzzer harness in fuzz/ for
#                   FUZZ_SECONDS (60) seconds; needs clang-14 and libFuzzer
#   make memcheck   Valgrind memcheck on the examples at reduced size
#   make install    install bocbc, libbocb.a, the stdlib and the man page under
#                   PREFIX (/usr/local), staged under DESTDIR if set
#   make uninstall  remove what `make install` installed
#
# Our own files build with -Wall -Wextra and no warnings; the flex output
# gets three warnings switched off, for code we do not write.

ifeq ($(origin CC),default)
CC          := gcc
endif
LLVM_CONFIG ?= llvm-config-19
PREFIX      ?= /usr/local
BUILD       ?= build
OPT         ?= -O2

# The sanitizer build of `make check-asan` has a directory of its own, and
# every make run on that directory builds with the sanitizers, the one
# that tests/lit/cli/install.test starts included, so instrumented and
# plain objects never mix there.
SAN_FLAGS  := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
              -fno-omit-frame-pointer
ASAN_BUILD ?= build-asan
ifeq ($(BUILD),$(ASAN_BUILD))
OPT     := -O1
LDFLAGS += $(SAN_FLAGS)
endif

# `make check` drives lit through the Debian llvm-19-tools copy.
LIT         ?= /usr/lib/llvm-19/build/utils/lit/lit.py
LLVM_BINDIR ?= /usr/lib/llvm-19/bin

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wno-unused-parameter
CPPFLAGS := -D_POSIX_C_SOURCE=200809L -Ilang -Icompiler -Iruntime -I$(BUILD)/gen \
            -I/usr/include/x86_64-linux-gnu/openblas-pthread
CFLAGS   ?= $(OPT) -g
CFLAGS   += -std=c17 $(WARN) -fno-strict-aliasing -MMD -MP
ifeq ($(BUILD),$(ASAN_BUILD))
CFLAGS   += $(SAN_FLAGS)
endif
LLVM_CFLAGS := $(shell $(LLVM_CONFIG) --cflags 2>/dev/null)
LLVM_LIBS   := $(shell $(LLVM_CONFIG) --ldflags --libs core orcjit native passes 2>/dev/null)
# Open MPI, for sharded training (runtime/comm.c): bocbc links it always
# and starts it only under mpirun.
MPI_CFLAGS  := $(shell mpicc -showme:compile 2>/dev/null)
MPI_LIBS    := $(shell mpicc -showme:link 2>/dev/null)
LDLIBS   := $(LLVM_LIBS) $(MPI_LIBS) -Wl,--no-as-needed -lopenblas -Wl,--as-needed -ledit -lz -lm -lpthread

LANG_SRC     := $(wildcard lang/*.c)
# aot_runtime.c and aot_main.c replace jit.c and main() in the AOT
# runtime library only.
AOT_ONLY_SRC := compiler/aot_runtime.c compiler/aot_main.c
COMPILER_SRC := $(filter-out compiler/main.c $(AOT_ONLY_SRC),$(wildcard compiler/*.c))
RUNTIME_SRC  := $(wildcard runtime/*.c)
GEN_SRC      := $(BUILD)/gen/parser.c $(BUILD)/gen/lexer.c

LIB_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(LANG_SRC) $(COMPILER_SRC) $(RUNTIME_SRC)) \
           $(BUILD)/obj/gen/parser.o $(BUILD)/obj/gen/lexer.o
LIB     := $(BUILD)/libbocb.a

# The runtime library of executables written by `bocbc -c`: libbocb.a
# without LLVM (jit.c, codegen.c, aot.c), with a table of precompiled
# kernels in place of the JIT and bocbc's main() renamed bocbc_main.
LLVM_OBJ    := $(patsubst %.c,$(BUILD)/obj/%.o,compiler/jit.c compiler/codegen.c compiler/aot.c)
AOT_LIB_OBJ := $(filter-out $(LLVM_OBJ),$(LIB_OBJ)) \
               $(patsubst %.c,$(BUILD)/obj/%.o,$(AOT_ONLY_SRC)) $(BUILD)/obj/aot/main.o
AOT_LIB     := $(BUILD)/libbocb-aot.a
BOCBC   := $(BUILD)/bocbc

UNIT_SRC  := $(wildcard tests/unit/*.c) $(wildcard tests/gradcheck/*.c)
UNIT_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
# bench/matrix.py records a step's matrix products with gemm_log.so
# (loaded with LD_PRELOAD) and times them alone with gemm_peak.
BENCH_MATRIX_BINS := $(BUILD)/bench/gemm_log.so $(BUILD)/bench/gemm_peak

.PHONY: all deps bench-deps demo check check-unit check-lit bench results-backbones results-stability \
        zo-bench install uninstall clean check-asan fuzz fuzz-build memcheck
.DEFAULT_GOAL := all

all: $(BOCBC) $(AOT_LIB)

deps:
	@tools/install-deps.sh

demo: deps
	@$(MAKE) --no-print-directory all
	$(BOCBC) --jit examples/quickstart.bocb

check: deps
	@$(MAKE) --no-print-directory all tests
	@BUILD=$(BUILD) LIT=$(LIT) LLVM_BINDIR=$(LLVM_BINDIR) tests/run.sh

tests: $(BOCBC) $(UNIT_BINS) $(BUILD)/bench/optim_bench $(BUILD)/tools/stability_synthetic \
       $(BENCH_MATRIX_BINS)

bench-deps:
	@tools/install-deps.sh --bench

bench: bench-deps
	@$(MAKE) --no-print-directory all $(BUILD)/bench/depthwise $(BUILD)/bench/optim_bench \
	    $(BENCH_MATRIX_BINS)
	@BUILD=$(BUILD) bench/run.sh

RESULTS_ARGS ?= --compact
results-backbones: $(BOCBC)
	tools/results_backbones.py --bocbc $(BOCBC) $(RESULTS_ARGS)

results-stability: $(BUILD)/tools/stability_synthetic
	$(BUILD)/tools/stability_synthetic --out docs/results
	gnuplot docs/results/stability_synthetic.gp
zo-bench: $(BOCBC)
	tools/zo_bench.py --bocbc $(BOCBC) $(ZO_BENCH_ARGS)

# The installed bocbc finds its standard library as ../share/bocb/stdlib
# next to itself, so DESTDIR staging and moved prefixes both work; so
# does `bocbc -c` find libbocb-aot.a in ../lib. No headers are installed,
# because the only programs linked with these libraries are the ones
# that `bocbc -c` writes.
STDLIB_FILES := $(shell find stdlib -type f -name '*.bocb' | sort)
MANDIR       ?= $(PREFIX)/share/man

install: $(BOCBC) $(LIB) $(AOT_LIB)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(MANDIR)/man1
	install -m 755 $(BOCBC) $(DESTDIR)$(PREFIX)/bin/bocbc
	install -m 644 $(LIB) $(DESTDIR)$(PREFIX)/lib/libbocb.a
	install -m 644 $(AOT_LIB) $(DESTDIR)$(PREFIX)/lib/libbocb-aot.a
	install -m 644 docs/bocbc.1 $(DESTDIR)$(MANDIR)/man1/bocbc.1
	for f in $(STDLIB_FILES); do \
	    install -d $(DESTDIR)$(PREFIX)/share/bocb/$$(dirname $$f) && \
	    install -m 644 $$f $(DESTDIR)$(PREFIX)/share/bocb/$$f || exit 1; \
	done

# Removes exactly the files that `make install` writes, then the
# directories of the standard library once they are empty.
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/bocbc $(DESTDIR)$(PREFIX)/lib/libbocb.a \
	    $(DESTDIR)$(PREFIX)/lib/libbocb-aot.a $(DESTDIR)$(MANDIR)/man1/bocbc.1
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/share/bocb/,$(STDLIB_FILES))
	for d in $$(find stdlib -depth -type d) ; do \
	    rmdir $(DESTDIR)$(PREFIX)/share/bocb/$$d 2>/dev/null || true; \
	done
	rmdir $(DESTDIR)$(PREFIX)/share/bocb 2>/dev/null || true

clean:
	rm -rf $(BUILD)

# ---- the compiler --------------------------------------------------------

$(BOCBC): $(BUILD)/obj/compiler/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(AOT_LIB): $(AOT_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/obj/aot/main.o: compiler/main.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -Dmain=bocbc_main -Wno-missing-prototypes -c -o $@ $<

$(BUILD)/gen/parser.c $(BUILD)/gen/parser.h: lang/parser.y
	@mkdir -p $(BUILD)/gen
	bison -Wall -Werror --header=$(BUILD)/gen/parser.h -o $(BUILD)/gen/parser.c $<

$(BUILD)/gen/lexer.c $(BUILD)/gen/lexer.h: lang/lexer.l
	@mkdir -p $(BUILD)/gen
	flex --header-file=$(BUILD)/gen/lexer.h -o $(BUILD)/gen/lexer.c $<

# Every object that may include the generated headers waits for them.
$(patsubst %.c,$(BUILD)/obj/%.o,$(LANG_SRC)): $(BUILD)/gen/parser.h $(BUILD)/gen/lexer.h

$(BUILD)/obj/gen/parser.o: $(BUILD)/gen/parser.c $(BUILD)/gen/lexer.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj/gen/lexer.o: $(BUILD)/gen/lexer.c $(BUILD)/gen/parser.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -Wno-unused-function -Wno-sign-compare \
	    -Wno-missing-prototypes -c -o $@ $<

# The runtime's kernels are hot loops that GCC vectorises only at -O3.
$(patsubst %.c,$(BUILD)/obj/%.o,$(RUNTIME_SRC)): CFLAGS += -O3

# Only the collectives see the MPI headers.
$(BUILD)/obj/runtime/comm.o: CPPFLAGS += $(MPI_CFLAGS)
# An executable written by `bocbc -c` links what libbocb-aot.a needs
# beyond OpenBLAS, zlib and libm: Open MPI and libedit, after the LDFLAGS
# that bocbc was linked with (the sanitizers in the sanitizer build).
$(BUILD)/obj/compiler/aot.o: CPPFLAGS += -DBOCB_AOT_EXTRA_LIBS='"$(LDFLAGS) $(MPI_LIBS) -ledit"'
# REPORT/metadata.json names the commit that bocbc was built from. The
# header is rewritten only when the commit changes, so metadata.o is
# rebuilt exactly then.
BOCB_COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
.PHONY: commit-header
$(BUILD)/gen/commit.h: commit-header
	@mkdir -p $(dir $@)
	@echo '#define BOCB_COMMIT "$(BOCB_COMMIT)"' > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi
$(BUILD)/obj/compiler/metadata.o: $(BUILD)/gen/commit.h

# Only the code generator sees the LLVM headers.
$(LLVM_OBJ): CPPFLAGS += $(LLVM_CFLAGS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# ---- tests ----------------------------------------------------------------

$(BUILD)/tests/%: tests/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(LIB) -lcriterion $(LDLIBS)

$(BUILD)/tools/%: tools/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(LIB) $(LDLIBS)
# ---- sanitizers and fuzzing ----------------------------------------------

# SAN_FLAGS and ASAN_BUILD are set at the top, with the compiler flags.
# LeakSanitizer stays on: a leak in a test program fails that test,
# except the leaks of other libraries that tests/lsan.supp lists.
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
           LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp

check-asan: deps
	@$(MAKE) --no-print-directory BUILD=$(ASAN_BUILD) all tests
	@$(SAN_ENV) BUILD=$(ASAN_BUILD) LIT=$(LIT) LLVM_BINDIR=$(LLVM_BINDIR) tests/run.sh

# One harness is fuzz/NAME.c plus its NAME here; fuzz/seeds.py writes
# its seed corpus.
FUZZ_TARGETS := lexer parser checker idx gzip safetensors cifar kcache
FUZZ_CC      ?= clang-14
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60

fuzz: deps
	@CC=$(FUZZ_CC) CFLAGS="-O1 -g $(SAN_FLAGS) -fsanitize=fuzzer-no-link" \
	    $(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) fuzz-build
	@FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh $(FUZZ_TARGETS)

fuzz-build: $(patsubst %,$(BUILD)/fuzz/%,$(FUZZ_TARGETS))

$(BUILD)/fuzz/%: fuzz/%.c fuzz/fuzz.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -fsanitize=fuzzer -DFUZZ_STDLIB_DIR='"$(abspath stdlib)"' \
	    -o $@ $< $(LIB) $(LDLIBS)

memcheck: $(BOCBC)
	@BUILD=$(BUILD) tools/memcheck.sh

# ---- benchmarks -----------------------------------------------------------

# Built like the runtime (-O3), so the C loops it compares against are
# vectorised as well as the JIT's kernels.
$(BUILD)/bench/%: bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -O3 -fno-math-errno -o $@ $< $(LIB) $(LDLIBS)

$(BUILD)/bench/gemm_log.so: bench/gemm_log.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -fPIC -shared -o $@ $< -ldl -lpthread

$(BUILD)/bench/gemm_peak: bench/gemm_peak.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< -lopenblas -lm

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
