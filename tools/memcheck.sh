#!/bin/sh
# memcheck.sh - run the examples at reduced size under Valgrind memcheck
# (`make memcheck`). Each run trains a few steps on slices of
# Fashion-MNIST; an invalid read or write, a use of an uninitialised
# value or a definitely lost block fails it. Prints one line per run and
# exits with status 1 when any failed. Logs go to $BUILD/memcheck/.
set -u

BUILD=${BUILD:-build}
BOCBC=$BUILD/bocbc
LOGS=$BUILD/memcheck
mkdir -p "$LOGS"
SMALL="-q -D epochs=1 -D steps=3 -D batch=16 -D eval_batch=32 -D train_size=48 -D test_size=32"
status=0

# --smc-check: the JIT writes machine code into memory that it then runs.
memcheck() {
    name=$1
    shift
    log=$LOGS/$name.log
    valgrind --tool=memcheck --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite --smc-check=all-non-file \
        --log-file="$log" "$@" >/dev/null 2>"$LOGS/$name.stderr"
    rc=$?
    summary=$(grep -a 'ERROR SUMMARY' "$log" | tail -n 1 | sed 's/^==[0-9]*== //')
    if [ $rc -eq 0 ]; then
        echo "ok   $name: $summary"
    else
        echo "FAIL $name (exit status $rc): $summary; see $log"
        status=1
    fi
}

report=$(mktemp -d)
trap 'rm -rf "$report"' EXIT
memcheck quickstart-jit $BOCBC examples/quickstart.bocb $SMALL -D model=mlp \
    -D 'optimizer=sgd(lr=0.05, momentum=0.9)' --report "$report/jit"
memcheck quickstart-interp $BOCBC --interp examples/quickstart.bocb $SMALL -D model=cnn \
    -D 'optimizer=adamw(lr=1e-3)' --report "$report/interp"
memcheck backbones-lenet $BOCBC --interp examples/backbones.bocb $SMALL -D model=lenet \
    --report "$report/lenet"
memcheck check-numerics $BOCBC --check-numerics examples/quickstart.bocb $SMALL -D model=mlp \
    -D 'optimizer=sgd(lr=0.05)' --report "$report/numerics"
exit $status
