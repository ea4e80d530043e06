"""Compiles the bocb programs in Markdown files (make check, via lit).

Usage: check_examples.py BOCBC FILE.md...

Every fenced code block must name its language. A block labelled `bocb`
is a whole program: it is written to a temporary file and compiled with
`bocbc --check`, which resolves its names and, when it declares an
experiment, compiles every cell on the real data without training. A
block labelled `bocb-fragment` is part of a program (a grammar sketch,
or an experiment that names declarations shown elsewhere) and is
skipped, as are blocks in other languages (`sh`, `text`).

Prints one line per program and each failure with bocbc's diagnostics,
and exits with status 1 when a program does not compile, a block has
no language, or no `bocb` block was found at all.
"""
import os
import re
import subprocess
import sys
import tempfile

FENCE = re.compile(r"^```(.*)$")


def code_blocks(path):
    """Yields (line of the opening fence, info string, text) per block."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    start, info, body = None, None, []
    for number, line in enumerate(lines, 1):
        m = FENCE.match(line)
        if not m:
            if start is not None:
                body.append(line)
            continue
        if start is None:
            start, info, body = number, m.group(1).strip(), []
        else:
            yield start, info, "\n".join(body) + "\n"
            start = None
    if start is not None:
        yield start, info, None


def main():
    bocbc, paths = sys.argv[1], sys.argv[2:]
    failures, programs = 0, 0
    with tempfile.TemporaryDirectory() as work:
        for path in paths:
            for line, info, text in code_blocks(path):
                where = f"{path}:{line}"
                if text is None:
                    print(f"{where}: error: code block is not closed")
                    failures += 1
                    continue
                if not info:
                    print(f"{where}: error: code block has no language; label it "
                          "bocb (a whole program), bocb-fragment, sh or text")
                    failures += 1
                    continue
                if info != "bocb":
                    continue
                programs += 1
                name = f"{os.path.basename(path)}-{line}.bocb"
                program = os.path.join(work, name)
                with open(program, "w", encoding="utf-8") as f:
                    f.write(text)
                result = subprocess.run([bocbc, "--check", program], capture_output=True,
                                        text=True)
                if result.returncode == 0:
                    print(f"{where}: ok")
                    continue
                print(f"{where}: error: example does not compile (exit status "
                      f"{result.returncode}); bocbc printed:")
                print(result.stdout + result.stderr)
                failures += 1
    if programs == 0:
        print("error: no bocb code block found in " + ", ".join(paths))
        failures += 1
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
