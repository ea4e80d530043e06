#!/bin/sh
# install-deps.sh - install the Debian packages that bocb needs to build,
# test and run its demo. Idempotent: packages already installed are
# skipped, and when nothing is missing apt is not touched at all.
#
# Usage: tools/install-deps.sh          (run by `make deps`)
#        tools/install-deps.sh --bench  (run by `make bench-deps`): also the
#                                       reference framework of `make bench`
set -eu

PACKAGES="
  make gcc
  flex bison
  llvm-19-dev llvm-19-tools
  libopenblas-dev zlib1g-dev
  libcriterion-dev
  libedit-dev
  libopenmpi-dev openmpi-bin
  python3
  gnuplot-nox
  dataset-fashion-mnist
  fortunes
  clang clang-14 libclang-rt-14-dev valgrind
"
# PyTorch, which bench/matrix.py runs beside bocb. Only `make bench` needs
# it, so the tests and CI do without it.
if [ "${1:-}" = --bench ]; then
    PACKAGES="$PACKAGES python3-numpy python3-torch"
fi

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $pkg" ;;
    esac
done

if [ -z "$missing" ]; then
    echo "deps: all packages are installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "deps: missing packages:$missing" >&2
    echo "deps: run this script as root, or install sudo" >&2
    exit 1
fi

echo "deps: installing$missing"
# Wait for a concurrent apt or dpkg run instead of failing on its lock.
APT_OPTS="-o DPkg::Lock::Timeout=600"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get $APT_OPTS update -q
# shellcheck disable=SC2086  # word splitting of the package list is intended
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get $APT_OPTS install -y -q \
    --no-install-recommends $missing
