#!/bin/sh
# fuzz/run.sh - run libFuzzer harnesses one after another (called by
# `make fuzz`).
#
#   FUZZ_BUILD=build-fuzz FUZZ_SECONDS=60 fuzz/run.sh TARGET...
#
# Each TARGET runs for FUZZ_SECONDS on its corpus in
# $FUZZ_BUILD/corpus/TARGET, which keeps growing from run to run, and on
# the seeds that fuzz/seeds.py writes. The lexer, parser and checker also
# get the dictionary fuzz/bocb.dict. A crashing or hanging input is saved
# as $FUZZ_BUILD/crashes/TARGET-crash-HASH (or -timeout-, -leak-, -oom-).
# After each target the script prints its executions and coverage, and it
# exits with status 1 when any target failed.
set -u

FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
PYTHON=${PYTHON:-python3}
status=0

for target in "$@"; do
    corpus=$FUZZ_BUILD/corpus/$target
    seeds=$FUZZ_BUILD/seeds/$target
    log=$FUZZ_BUILD/logs/$target.log
    rm -rf "$seeds"
    mkdir -p "$corpus" "$seeds" "$FUZZ_BUILD/crashes" "$FUZZ_BUILD/logs"
    "$PYTHON" fuzz/seeds.py "$target" "$seeds" || exit 1
    dict=
    case $target in
        lexer|parser|checker) dict=-dict=fuzz/bocb.dict ;;
    esac
    echo "== fuzz $target for ${FUZZ_SECONDS}s (log: $log)"
    # -timeout: an input that takes 20 s is reported as a hang.
    "$FUZZ_BUILD/fuzz/$target" -max_total_time="$FUZZ_SECONDS" -timeout=20 \
        -print_final_stats=1 -artifact_prefix="$FUZZ_BUILD/crashes/$target-" \
        $dict "$corpus" "$seeds" >"$log" 2>&1
    rc=$?
    grep -a -E '^#[0-9]+[[:space:]]+(DONE|INITED)' "$log" | tail -n 1
    grep -a -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log"
    if [ $rc -ne 0 ]; then
        grep -a -E 'ERROR|SUMMARY|Test unit written' "$log" | head -n 20
        echo "   $target: libFuzzer exit status $rc; see $log"
        status=1
    fi
done
exit $status
