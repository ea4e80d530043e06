#!/bin/sh
# run.sh - `make bench`: front-end speed, training-step speed of the
# quickstart models, depthwise convolution against im2col, and the AdamW
# update against memory bandwidth (bench/optim_bench.c).
#
# Front end: bench/gen_large.py writes a 5,000-line program (hundreds of
# models and optimizers, 166 experiments, 1,660 cells) with a tiny
# uncompressed dataset, and `bocbc --check` parses, resolves and
# compiles every cell of it without training. The target is 0.5 s; the
# best of REPEATS wall-clock times is printed.
#
# The MLP and the CNN of examples/quickstart.bocb train at batch 128 on
# Fashion-MNIST, each with SGD with momentum and with AdamW. For each
# pair, this times a fixed number of JIT-compiled training steps, then a
# smaller number of steps in the reference interpreter. It prints ms/step,
# images/s, GFLOP/s of the matrix products and convolutions, and the JIT's
# speed-up over the interpreter. Times are
# the training loop's own clock (evaluation and compilation excluded),
# each the best of REPEATS runs.
#
# After the front end, bench/compile_times.py times the JIT compilation
# of the quickstart with an empty and with a full kernel cache.
#
# Then it times the direct depthwise convolution kernels beside the
# im2col + GEMM path on the same shapes (bench/depthwise.c), as a ratio.
# Next it times the fused AdamW update against a triad
# (bench/optim_bench.c). Then it runs the matrix of training steps
# against PyTorch (bench/matrix.py): MLP, CNN, ResNet, ViT and ConvNeXt x
# SGD with momentum and AdamW x batch 32 and 128 x 1 and 2 threads. Each
# cell has its peak RSS and the OpenBLAS limit of the step's matrix
# products, and the table goes to MATRIX_MD. Then it measures the memory and speed
# of zeroth-order training (bench/zo_bench.py). Last it measures ViT and
# ConvNeXt with and without `recompute = elementwise`
# (bench/recompute_bench.py).
#
# Environment: BUILD (default build), REPEATS (default 3), THREADS
# (OpenBLAS threads, default: OpenBLAS's choice, but the matrix sets its own),
# STEPS_SCALE (multiplies the step counts, default 1), FRONTEND_ONLY
# (when 1, stop after the front-end benchmark), MATRIX_MD (default
# docs/results/bench_matrix.md).
set -eu

BUILD=${BUILD:-build}
REPEATS=${REPEATS:-3}
STEPS_SCALE=${STEPS_SCALE:-1}
BOCBC="$BUILD/bocbc"
PROGRAM=examples/quickstart.bocb
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

threads_flag=""
if [ -n "${THREADS:-}" ]; then
    threads_flag="--threads $THREADS"
fi

# time_steps MODEL OPTIMIZER BACKEND STEPS -> prints "ms_per_step gflop_per_step"
time_steps() {
    best=""
    for r in $(seq "$REPEATS"); do
        dir="$OUT/$1-$3-$r"
        # shellcheck disable=SC2086  # threads_flag is empty or two words
        "$BOCBC" "--$3" $PROGRAM -q --stats $threads_flag -D "model=$1" \
            -D "optimizer=$2" -D "steps=$4" -D test_size=128 --report "$dir" \
            >"$dir.log" 2>&1 || { cat "$dir.log" >&2; exit 1; }
        ms=$(python3 - "$dir/epochs.csv" <<'PY'
import csv, sys
row = list(csv.DictReader(open(sys.argv[1])))[-1]
print(1000 * float(row["seconds"]) / int(row["steps"]))
PY
)
        if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $ms < $best else 1)"; then
            best=$ms
        fi
    done
    gflop=$(sed -n 's/.* \([0-9.]*\) GFLOP per training step.*/\1/p' "$OUT/$1-$3-1.log" | head -n 1)
    echo "$best ${gflop:-0}"
}

# Front end: the best of REPEATS wall-clock times of `bocbc --check`.
shape=$(python3 bench/gen_large.py "$OUT/large" 5000)
python3 - "$BOCBC" "$OUT/large/large.bocb" "$REPEATS" "$shape" <<'PY'
import subprocess, sys, time
bocbc, program, repeats, shape = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
best = None
for _ in range(repeats):
    start = time.perf_counter()
    subprocess.run([bocbc, "--check", program], check=True)
    elapsed = time.perf_counter() - start
    best = elapsed if best is None else min(best, elapsed)
verdict = "within" if best < 0.5 else "OVER"
print(f"front end: bocbc --check on {shape}: {best:.3f} s "
      f"(best of {repeats}; {verdict} the 0.5 s target)")
PY
if [ "${FRONTEND_ONLY:-0}" = 1 ]; then
    exit 0
fi

# JIT compile time of the quickstart with an empty and a full kernel
# cache, and the time of `bocbc -c` (bench/compile_times.py).
python3 bench/compile_times.py "$BOCBC" --repeats "$REPEATS"

echo "bocb bench: batch 128, best of $REPEATS runs, $(nproc) cores, OpenBLAS threads: ${THREADS:-default}"
printf '%-5s %-9s %10s %10s %9s %14s %9s\n' model optimizer "JIT ms" "images/s" "GFLOP/s" "interp ms" speed-up

for model in mlp cnn; do
    if [ "$model" = mlp ]; then jit_steps=400; interp_steps=40; else jit_steps=60; interp_steps=6; fi
    jit_steps=$((jit_steps * STEPS_SCALE))
    interp_steps=$((interp_steps * STEPS_SCALE))
    for optimizer in "sgd(lr=0.05, momentum=0.9)" "adamw(lr=1e-3, weight_decay=0.01)"; do
        set -- $(time_steps "$model" "$optimizer" jit "$jit_steps")
        jit_ms=$1 gflop=$2
        set -- $(time_steps "$model" "$optimizer" interp "$interp_steps")
        interp_ms=$1
        python3 - "$model" "$optimizer" "$jit_ms" "$interp_ms" "$gflop" <<'PY'
import sys
model, optimizer, jit, interp, gflop = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
name = optimizer.split("(")[0]
print(f"{model:<5} {name:<9} {jit:10.2f} {128e3 / jit:10.0f} {gflop / jit * 1e3:9.1f}"
      f" {interp:14.2f} {interp / jit:8.1f}x")
PY
    done
done

echo
"$BUILD/bench/depthwise"
"$BUILD/bench/optim_bench" 10000000 "$REPEATS"

echo
# Five models x 2 optimizers x 2 batches x 2 thread counts beside PyTorch
# (bench/matrix.py; bocb figures alone when torch is not installed). It
# reads STEPS_SCALE itself.
STEPS_SCALE=$STEPS_SCALE python3 bench/matrix.py "$BOCBC" \
    --markdown "${MATRIX_MD:-docs/results/bench_matrix.md}"

echo
# FO-Adam, ZO-SGD and ZO-Adam on a wide MLP: planned peak memory against
# inference, measured RSS and ms/step (bench/zo_bench.py).
python3 bench/zo_bench.py "$BOCBC" --steps "$((10 * STEPS_SCALE))" --repeats "$REPEATS"

echo
# ViT and ConvNeXt with and without recompute = elementwise: planned peak,
# measured RSS and ms/step (bench/recompute_bench.py).
python3 bench/recompute_bench.py "$BOCBC" --steps "$((10 * STEPS_SCALE))" --repeats "$REPEATS"
