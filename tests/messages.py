#!/usr/bin/env python3
"""messages.py - list the compiler's error and warning messages and the
lit tests that reach each one.

A message is a format string passed to diag_error, diag_warning,
diag_fatal or main.c's fail_usage, or printed as "bocbc: error: ..." with
fprintf or fputs, in lang/ and compiler/. A lit test reaches it when one of its CHECK lines
contains every fixed part of the format, in order: the text between the
printf conversions (%s, %d, %lld, ...), ignoring parts without a letter
or digit. A format with no fixed text ("%s") forwards a message built
elsewhere and is listed as forwarded, not checked.

A message that no test can reach, because it reports a failure of the
machine or of LLVM rather than of the program, is exempt when a comment
"messages.py: not reached: REASON" ends within the three lines above its
call. Anything else that no program can reach is an assertion instead.

    tests/messages.py              fail, naming each message no test reaches
    tests/messages.py -v           also list every message with its tests
    tests/messages.py --since REF  mark messages whose format is not in
                                   the sources at git commit REF as new

Exit status 0 when every message is reached, 1 otherwise.
"""
import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_DIRS = ["lang", "compiler"]
SOURCE_SUFFIXES = (".c", ".h", ".y", ".l")
TEST_DIR = os.path.join("tests", "lit")

# Functions that print a message: the severity and the index of the
# argument that is the format.
REPORTERS = {
    "diag_error": ("error", 1),
    "diag_warning": ("warning", 1),
    "diag_fatal": ("fatal", 1),
    "fail_usage": ("error", 0),  # main.c: "bocbc: error: " and the format
}
DIAG_CALL = re.compile(r"\b(%s)\s*\(" % "|".join(REPORTERS))
# Direct prints: fprintf(stderr, "bocbc: error: ...") and fputs.
DIRECT_PRINT = re.compile(r"\b(fprintf\s*\(\s*stderr\s*,|fputs\s*\()\s*(?=\"bocbc: (error|warning): )")
CONVERSION = re.compile(r"%[-+ #0]*(\*|\d+)?(\.(\*|\d+))?(hh|h|ll|l|z|j|t|L)?[diouxXeEfFgGcsp%]")
# A FileCheck directive in a comment: "# CHECK-NEXT: text", any prefix.
CHECK_LINE = re.compile(r"^\s*(?:#|//|;)\s*([A-Z][A-Z0-9_]*(?:-[A-Z0-9_]+)*?)"
                        r"(-NEXT|-SAME|-DAG|-NOT|-LABEL|-EMPTY|-COUNT-\d+)?:(.*)$")
NOT_CHECKS = {"RUN", "REQUIRES", "UNSUPPORTED", "XFAIL", "END"}


class Message:
    def __init__(self, path, line, severity, fmt, exempt=None):
        self.exempt = exempt
        self.path = path
        self.line = line
        self.severity = severity
        self.fmt = fmt
        self.parts = fixed_parts(fmt) if fmt is not None else []
        self.tests = []
        self.new = False

    def where(self):
        return "%s:%d" % (self.path, self.line)


def fixed_parts(fmt):
    parts = CONVERSION.split(fmt)
    # re.split with groups interleaves the groups; keep the text pieces.
    step = 1 + CONVERSION.groups
    texts = parts[::step]
    return [t for t in texts if re.search(r"[A-Za-z0-9]", t)]


def split_args(text, start):
    """Returns the top-level arguments of the call whose '(' is at start - 1,
    and the offset after its ')'."""
    args, depth, i, begin = [], 0, start, start
    while i < len(text):
        c = text[i]
        if c == '"' or c == "'":
            j = i + 1
            while j < len(text) and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if text.startswith("/*", i):
            i = text.index("*/", i) + 2
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                args.append(text[begin:i])
                return args, i + 1
            depth -= 1
        elif c == "," and depth == 0:
            args.append(text[begin:i])
            begin = i + 1
        i += 1
    return args, len(text)


STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def literal(arg):
    """Returns the value of an argument made only of adjacent string
    literals, or None."""
    rest = STRING.sub("", arg)
    if rest.strip():
        return None
    pieces = STRING.findall(arg)
    if not pieces:
        return None
    return bytes("".join(pieces), "utf-8").decode("unicode_escape")


EXEMPT = re.compile(r"messages\.py: not reached: (.*?)(\*/|$)", re.S)


def exemption(text, offset):
    """Returns the reason of a "messages.py: not reached:" comment in the
    three lines before offset, or None."""
    start = offset
    for _ in range(4):
        start = text.rfind("\n", 0, start)
        if start < 0:
            start = 0
            break
    m = EXEMPT.search(text, start, offset)
    return " ".join(m.group(1).replace("*", " ").split()) if m else None


def scan_source(path, text):
    found = []
    for m in DIAG_CALL.finditer(text):
        args, _ = split_args(text, m.end())
        severity, index = REPORTERS[m.group(1)]
        # Skip the declarations and definitions of the functions themselves.
        if len(args) <= index or re.match(r"\s*(const\s+)?(SrcLoc|char)\b", args[0]):
            continue
        line = text.count("\n", 0, m.start()) + 1
        found.append(Message(path, line, severity, literal(args[index]),
                             exemption(text, m.start())))
    for m in DIRECT_PRINT.finditer(text):
        # The match ends at the format, the first argument scanned here.
        args, _ = split_args(text, m.end())
        line = text.count("\n", 0, m.start()) + 1
        fmt = literal(args[0])
        if fmt is not None:
            fmt = fmt[len("bocbc: %s: " % m.group(2)):].rstrip("\n")
        found.append(Message(path, line, m.group(2), fmt, exemption(text, m.start())))
    return found


def source_files(root):
    for d in SOURCE_DIRS:
        for dirpath, _, names in os.walk(os.path.join(root, d)):
            for name in sorted(names):
                if name.endswith(SOURCE_SUFFIXES):
                    yield os.path.join(dirpath, name)


def collect_messages(root):
    messages = []
    for path in sorted(source_files(root)):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        messages.extend(scan_source(os.path.relpath(path, root), text))
    return messages


def check_lines(root):
    """Yields (test path, text) for each CHECK-style line under tests/lit,
    with FileCheck's {{regex}} and [[VAR]] blocks cut out."""
    top = os.path.join(root, TEST_DIR)
    for dirpath, _, names in os.walk(top):
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    lines = f.read().splitlines()
            except OSError:
                continue
            for line in lines:
                m = CHECK_LINE.match(line)
                if not m or m.group(1) in NOT_CHECKS or m.group(2) == "-NOT":
                    continue
                body = re.sub(r"\{\{.*?\}\}|\[\[.*?\]\]", "\0", m.group(3))
                yield os.path.relpath(path, root), body


def reaches(parts, body):
    at = 0
    for p in parts:
        i = body.find(p, at)
        if i < 0:
            return False
        at = i + len(p)
    return True


def formats_at(root, ref):
    """Returns the set of formats in the sources at git commit ref."""
    try:
        files = subprocess.run(["git", "-C", root, "ls-tree", "-r", "--name-only", ref],
                               check=True, capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit("messages.py: cannot list the files of %s: %s" % (ref, e))
    formats = set()
    for path in files:
        if path.split("/")[0] not in SOURCE_DIRS or not path.endswith(SOURCE_SUFFIXES):
            continue
        text = subprocess.run(["git", "-C", root, "show", "%s:%s" % (ref, path)],
                              capture_output=True, text=True).stdout
        formats.update(m.fmt for m in scan_source(path, text))
    return formats


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--since", metavar="REF")
    ap.add_argument("--root", default=ROOT)
    opts = ap.parse_args()

    messages = collect_messages(opts.root)
    checks = list(check_lines(opts.root))
    old = formats_at(opts.root, opts.since) if opts.since else None
    for msg in messages:
        if msg.parts:
            msg.tests = sorted({t for t, body in checks if reaches(msg.parts, body)})
        if old is not None and msg.fmt not in old:
            msg.new = True

    checked = [m for m in messages if m.parts and not m.exempt]
    exempt = [m for m in messages if m.exempt]
    forwarded = [m for m in messages if not m.parts and not m.exempt]
    unreached = [m for m in checked if not m.tests]
    if opts.verbose:
        for m in messages:
            fmt = m.fmt if m.fmt is not None else "(format built at run time)"
            print("%s: %s: %s%s" % (m.where(), m.severity, fmt, " [new]" if m.new else ""))
            if m.exempt:
                print("    exempt: " + m.exempt)
            elif not m.parts:
                print("    forwarded; not checked")
            for t in m.tests:
                print("    " + t)
    for m in unreached:
        print("%s: unreached %s%s: %s" % (m.where(), m.severity, " [new]" if m.new else "",
                                          m.fmt))
    print("messages: %d checked, %d reached, %d unreached, %d forwarded, %d exempt" %
          (len(checked), len(checked) - len(unreached), len(unreached), len(forwarded),
           len(exempt)))
    if unreached:
        print("messages: add a lit test whose CHECK lines contain each unreached message; "
              "--since REF marks the messages added since commit REF")
    return 1 if unreached else 0


if __name__ == "__main__":
    sys.exit(main())
