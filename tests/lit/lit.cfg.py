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

config.substitutions.append(("%bocbc", os.path.join(build, "bocbc")))
config.substitutions.append(("%build", build))
config.substitutions.append(("%srcroot", os.path.abspath(
    os.path.join(config.test_source_root, "..", ".."))))
config.substitutions.append(("%examples", os.path.abspath(
    os.path.join(config.test_source_root, "..", "..", "examples"))))
config.substitutions.append(("%python", sys.executable))
config.substitutions.append(("%inputs", os.path.join(config.test_source_root, "Inputs")))
