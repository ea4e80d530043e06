"""Checks that the language reference documents every builtin (make check, via lit).

Usage: check_builtins.py BOCBC LANGUAGE.md

Lists the builtins with `bocbc --list-builtins` and looks for each one in
the reference, written as code: `name(...` or `name`. Prints each missing
name, and exits with status 1 when a name is missing or bocbc lists none.
"""
import re
import subprocess
import sys


def main():
    bocbc, reference_path = sys.argv[1:3]
    result = subprocess.run([bocbc, "--list-builtins"], capture_output=True, text=True)
    names = result.stdout.split()
    if result.returncode != 0 or not names:
        print(f"error: '{bocbc} --list-builtins' failed (exit status {result.returncode}) "
              f"or listed no builtin: {result.stderr.strip()}")
        sys.exit(1)
    with open(reference_path, encoding="utf-8") as f:
        reference = f.read()

    missing = [name for name in names
               if not re.search(r"`" + re.escape(name) + r"[(`]", reference)]
    for name in missing:
        print(f"error: builtin '{name}' is not documented in {reference_path}")
    if not missing:
        print(f"ok: {len(names)} builtins documented")
    sys.exit(1 if missing else 0)


if __name__ == "__main__":
    main()
