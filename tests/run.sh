#!/bin/sh
# run.sh - run every test suite and print one summary line,
# "N passed, N failed", summing the suites. Called by `make check`.
#
# Suites: the Criterion unit and gradient-check programs in build/tests,
# the lit + FileCheck tests in tests/lit, and tests/messages.py, which
# checks that the lit tests reach every compiler message. The exit status is 0 only
# when nothing failed.
set -u

BUILD=${BUILD:-build}
LIT=${LIT:-/usr/lib/llvm-19/build/utils/lit/lit.py}
LLVM_BINDIR=${LLVM_BINDIR:-/usr/lib/llvm-19/bin}
PYTHON=${PYTHON:-python3}

passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Criterion prints "Synthesis: Tested: T | Passing: P | Failing: F | Crashing: C".
for bin in $(find "$BUILD/tests" -type f -perm -u+x | sort); do
    name=${bin#"$BUILD/tests/"}
    echo "== $name"
    "$bin" --jobs 2 >"$log" 2>&1
    status=$?
    synthesis=$(grep -a 'Synthesis:' "$log" | tail -n 1)
    if [ -z "$synthesis" ]; then
        cat "$log"
        echo "   $name: no test summary (exit status $status); counted as 1 failure"
        failed=$((failed + 1))
        continue
    fi
    p=$(echo "$synthesis" | sed -n 's/.*Passing: *\([0-9]*\).*/\1/p')
    f=$(echo "$synthesis" | sed -n 's/.*Failing: *\([0-9]*\).*/\1/p')
    c=$(echo "$synthesis" | sed -n 's/.*Crashing: *\([0-9]*\).*/\1/p')
    if [ "$f" != 0 ] || [ "$c" != 0 ]; then
        grep -a -v '^\[----\]' "$log" | tail -n 60
    fi
    echo "   $synthesis"
    passed=$((passed + p))
    failed=$((failed + f + c))
done

echo "== lit"
"$PYTHON" "$LIT" -sv --param build="$(cd "$BUILD" && pwd)" \
    --param llvm_bindir="$LLVM_BINDIR" tests/lit >"$log" 2>&1
grep -a -E '^(FAIL|XPASS|UNRESOLVED|TIMEOUT):|^\*\*\*\*' "$log" | head -n 200
lp=$(grep -a -E '^ *Passed *:' "$log" | sed 's/[^0-9]*\([0-9]*\).*/\1/')
lf=$(grep -a -E '^ *(Failed|Unresolved|Timed Out|Unexpectedly Passed) *:' "$log" |
     sed 's/[^0-9]*\([0-9]*\).*/\1/' | awk '{s += $1} END {print s + 0}')
lp=${lp:-0}
if [ "$lp" = 0 ] && [ "$lf" = 0 ]; then
    tail -n 20 "$log"
    echo "   lit: no test summary; counted as 1 failure"
    lf=1
fi
echo "   lit: $lp passed, $lf failed"
passed=$((passed + lp))
failed=$((failed + lf))

# Every error and warning message of the compiler must be reached by a
# lit test; tests/messages.py names those that are not.
echo "== messages"
if "$PYTHON" tests/messages.py; then
    passed=$((passed + 1))
else
    echo "   messages: unreached messages above; counted as 1 failure"
    failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
