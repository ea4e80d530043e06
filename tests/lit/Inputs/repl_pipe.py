#!/usr/bin/env python3
"""repl_pipe.py - pipe a script into `bocbc --repl`, changing files
between inputs.

    repl_pipe.py COMMAND... < SCRIPT

Each line of SCRIPT is sent to the REPL, except "!copy SRC DST", which
first waits until the REPL has answered every earlier input and then
copies file SRC to DST. The REPL's output (stdout and stderr together)
is printed unchanged, without the lines used to wait for it.
"""
import shutil
import subprocess
import sys

TIMEOUT = 120  # seconds for the REPL to answer, on a loaded machine


def main():
    repl = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    marks = 0
    for line in sys.stdin:
        if not line.startswith("!copy "):
            repl.stdin.write(line)
            continue
        # A string expression prints itself: once it is back, every
        # earlier input has been run.
        marks += 1
        mark = '"sync %d"' % marks
        repl.stdin.write(mark + "\n")
        repl.stdin.flush()
        for out in repl.stdout:
            if out.strip() == mark:
                break
            sys.stdout.write(out)
        else:
            sys.exit("repl_pipe.py: the REPL ended before answering %s" % mark)
        src, dst = line.split()[1:3]
        shutil.copyfile(src, dst)
    repl.stdin.close()
    sys.stdout.write(repl.stdout.read())
    sys.exit(repl.wait(TIMEOUT))


if __name__ == "__main__":
    main()
