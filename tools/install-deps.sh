#!/bin/sh
# install-deps.sh - install the Debian packages that bocb needs to build,
# test and run its demo. Idempotent: packages already installed are
# skipped, and when nothing is missing apt is not touched at all.
#
# Usage: tools/install-deps.sh        (run by `make deps`)
set -eu

PACKAGES="
  make gcc
  flex bison
  llvm-19-dev llvm-19-tools
  libopenblas-dev zlib1g-dev
  libcriterion-dev
  python3
  gnuplot-nox
  dataset-fashion-mnist
"

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
