# lit configuration for bocb's compiler tests. Each .bocb or .test file
# contains RUN: lines that invoke bocbc and CHECK: patterns for FileCheck.
import os
import sys

import lit.formats

config.name = "bocb"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".bocb", ".test"]
# Helper scripts next to a test (x.test.py) are not tests themselves.
config.excludes = ["Inputs"]
config.test_source_root = os.path.dirname(__file__)

build = lit_config.params.get("build", os.path.join(config.test_source_root, "..", "..", "build"))
build = os.path.abspath(build)
config.test_exec_root = os.path.join(build, "lit")

llvm_bindir = lit_config.params.get("llvm_bindir", "/usr/lib/llvm-19/bin")
config.environment["PATH"] = os.pathsep.join([llvm_bindir, os.environ.get("PATH", "")])
config.environment["BOCB_STDLIB"] = os.path.abspath(
    os.path.join(config.test_source_root, "..", "..", "stdlib"))
# Compiled kernels are cached in the build tree, not in the user's home.
config.environment["BOCB_CACHE_DIR"] = os.path.join(build, "kernel-cache")
# Diagnostics and tables must not depend on the terminal.
config.environment["TERM"] = "dumb"

# `make check-asan` sets ASAN_OPTIONS. Its tests also get the sanitizer
# options, and those that cap the address space with `ulimit -v` are
# UNSUPPORTED, because ASan's shadow memory reserves terabytes of it.
for name in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
    if name in os.environ:
        config.environment[name] = os.environ[name]
if "ASAN_OPTIONS" in os.environ:
    config.available_features.add("asan")

config.substitutions.append(("%bocbc", os.path.join(build, "bocbc")))
config.substitutions.append(("%build", build))
config.substitutions.append(("%srcroot", os.path.abspath(
    os.path.join(config.test_source_root, "..", ".."))))
config.substitutions.append(("%examples", os.path.abspath(
    os.path.join(config.test_source_root, "..", "..", "examples"))))
config.substitutions.append(("%python", sys.executable))
config.substitutions.append(("%inputs", os.path.join(config.test_source_root, "Inputs")))

# Sharded training tests run Open MPI on this machine only: shared memory
# between processes, mpirun's own traffic on loopback, more ranks than
# cores allowed, and root allowed (CI runs as root).
for key, value in {
    "OMPI_MCA_btl": "self,vader",
    "OMPI_MCA_pml": "ob1",
    "OMPI_MCA_oob_tcp_if_include": "lo",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
}.items():
    config.environment[key] = value
# Under ASan, the ranks unwind every allocation with the slow unwinder:
# Open MPI's leaks at exit (tests/lsan.supp) pass through its plugins,
# which the fast unwinder cannot step over, so their stacks would not
# reach the libraries that the suppressions name.
mpirun = "mpirun --oversubscribe"
if "ASAN_OPTIONS" in os.environ:
    mpirun = "env ASAN_OPTIONS=%s:fast_unwind_on_malloc=0 %s" % (os.environ["ASAN_OPTIONS"],
                                                                mpirun)
config.substitutions.append(("%mpirun", mpirun))

# bench/matrix.py's smoke test of the PyTorch side runs only where torch
# imports; CI has no torch.
import importlib.util
if importlib.util.find_spec("torch") is not None:
    config.available_features.add("torch")
