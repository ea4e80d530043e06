#!/usr/bin/env python3
"""repl_pty.py - drive `bocbc --repl` on a pseudo-terminal, as a person
would: the prompt, tab completion, history recall (within a session and
from the history file of an earlier one), Ctrl-C at the prompt and
during a long :step, Ctrl-D, and `bocbc` without a file starting a
session.

    repl_pty.py BOCBC EXPERIMENT.bocb

Prints one line per check, "ok: WHAT" or "FAILED: WHAT" followed by the
terminal output seen, and exits with status 1 after a failure.
"""
import os
import pty
import re
import select
import shutil
import signal
import sys
import tempfile
import termios
import time

TIMEOUT = 120  # seconds to wait for one expected output, on a loaded machine

UP = "\x1b[A"
CTRL_C = "\x03"
CTRL_D = "\x04"
CTRL_U = "\x15"


class Session:
    def __init__(self, argv, home):
        env = dict(os.environ, HOME=home, TERM="xterm", NO_COLOR="1")
        env.pop("XDG_DATA_HOME", None)
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(argv[0], argv, env)
        self.seen = ""      # output not matched yet
        self.matched = ""   # output up to the last match

    def send(self, text):
        os.write(self.fd, text.encode())

    def prompt(self, what):
        """Waits for the prompt and for libedit to switch the terminal out
        of canonical mode. Keys sent earlier reach the kernel's line
        discipline instead, which handles Ctrl-C and Ctrl-D itself."""
        self.expect(r"bocb> ", what)
        deadline = time.time() + TIMEOUT
        while termios.tcgetattr(self.fd)[3] & termios.ICANON:
            if time.time() > deadline:
                print("FAILED: %s; the terminal stayed in canonical mode" % what)
                sys.exit(1)
            time.sleep(0.01)

    def expect(self, pattern, what):
        """Waits for `pattern` (a regex in which '.' matches any character,
        line ends and the terminal's cursor moves too) in the output after
        the last match."""
        deadline = time.time() + TIMEOUT
        regex = re.compile(pattern, re.S)
        while True:
            match = regex.search(self.seen)
            if match:
                print("ok: " + what)
                self.matched += self.seen[:match.end()]
                self.seen = self.seen[match.end():]
                return match
            left = deadline - time.time()
            if left <= 0 or not self.read(left):
                print("FAILED: %s; expected /%s/, the terminal showed:\n%s"
                      % (what, pattern, self.seen))
                sys.exit(1)

    def read(self, timeout):
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # the child closed the terminal
            return False
        self.seen += data.decode(errors="replace")
        return bool(data)

    def wait(self, what):
        """Waits for the REPL to exit, reading its output meanwhile."""
        deadline = time.time() + TIMEOUT
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                print("FAILED: %s; still running, the terminal showed:\n%s" % (what, self.seen))
                sys.exit(1)
            self.read(0.1)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            print("FAILED: %s; exit status %d" % (what, code))
            sys.exit(1)
        print("ok: " + what)


def main():
    bocbc, program = sys.argv[1], sys.argv[2]
    home = tempfile.mkdtemp()
    try:
        s = Session([bocbc, "--interp", "--repl", program], home)
        s.prompt("prompt")
        s.send("1 + 2\r")
        s.expect(r"\r\n3\r\n", "expression value")

        s.prompt("prompt after an expression")
        s.send("hidden_width = 7\r")
        s.prompt("prompt after a declaration")
        s.send("hidden_w\t")
        # libedit completes by moving the cursor back over the typed word
        # and writing the whole name.
        s.expect(r"hidden_w.*?idth ", "completion of a name")
        s.send("\r")
        s.expect(r"\r\n7\r\n", "value of the completed name")
        s.prompt("prompt after the completed name")
        s.send(":par\t")
        s.expect(r":par.*?ams ", "completion of a command")
        s.send(CTRL_U + "model wide(x: [B, 4]) {\r")
        s.expect(r"  \.\.\. ", "continuation prompt")
        s.send("  return x\r")
        s.expect(r"  \.\.\. ", "second continuation prompt")
        s.send("}\r")
        s.prompt("prompt after a multi-line input")

        s.send(UP + UP + "\r")
        s.expect(r"hidden_width.*?\r\n7\r\n", "history recall")
        s.prompt("prompt after history recall")

        mark = len(s.matched)
        s.send("abc")
        s.expect(r"abc", "input echoed")
        # A person's Ctrl-C comes while libedit waits for a key; one sent at
        # once may arrive while it still redraws the line (see repl.c).
        time.sleep(0.3)
        s.send(CTRL_C)
        s.prompt("Ctrl-C at the prompt gives a new prompt")
        s.send("2 * 3\r")
        s.expect(r"\r\n6\r\n", "input after Ctrl-C at the prompt")
        if "error" in s.matched[mark:]:
            print("FAILED: the input dropped with Ctrl-C was run:\n" + s.matched[mark:])
            sys.exit(1)
        s.prompt("prompt after Ctrl-C")

        s.send(":step 100000\r")
        s.expect(r"experiment quick: ", "long :step starts")
        time.sleep(0.5)
        s.send(CTRL_C)
        m = s.expect(r"interrupted after (\d+) of 100000 steps", "Ctrl-C stops :step")
        s.prompt("prompt after an interrupted :step")
        s.send(":step\r")
        s.expect(r"step %d  epoch" % (int(m.group(1)) + 1), "training goes on after Ctrl-C")
        s.prompt("prompt after :step")
        s.send(CTRL_D)
        s.wait("Ctrl-D ends the session")

        # Without a file, bocbc on a terminal starts a session too.
        s = Session([bocbc], home)
        s.prompt("prompt of bocbc without a file")
        s.send(UP + UP + UP + "\r")
        s.expect(r"\r\n6\r\n", "history from the earlier session")
        s.prompt("prompt after recalling the earlier session")
        s.send(":quit\r")
        s.wait(":quit ends the session")
    finally:
        shutil.rmtree(home)


if __name__ == "__main__":
    main()
