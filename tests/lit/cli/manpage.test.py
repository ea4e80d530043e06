"""Compares the options of `bocbc --help` with those of the man page.

Usage: manpage.test.py HELP_TEXT MAN_PAGE. Prints each difference and
exits with status 1 when there is one.
"""
import re
import sys


def help_items(text):
    options, emits, env, statuses = set(), set(), set(), set()
    section = None
    for line in text.splitlines():
        if re.match(r"^[a-z ]+:$", line):
            section = line[:-1]
            continue
        if section in ("modes", "options"):
            m = re.match(r"^  (-\S.*?)(?:  |$)", line)
            if m:
                options.update(re.findall(r"(--?[a-zA-Z][a-z-]*)", m.group(1)))
            m = re.match(r"^ {24}([a-z-]+) ", line)
            if m:
                emits.add(m.group(1))
        elif section == "environment":
            m = re.match(r"^  ([A-Z_]+) ", line)
            if m:
                env.add(m.group(1))
        elif section == "exit status":
            m = re.match(r"^  ([0-9]+) ", line)
            if m:
                statuses.add(m.group(1))
    return options, emits, env, statuses


def man_items(text):
    """Returns the items of the man page: the tags of its .TP paragraphs,
    where the tags inside the .RS block of MODES are the --emit values."""
    options, emits, env, statuses = set(), set(), set(), set()
    section = None
    indented = False
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(".SH "):
            section = line[4:].strip()
            continue
        if line in (".RS", ".RE"):
            indented = line == ".RS"
            continue
        if i == 0 or not lines[i - 1].startswith(".TP"):
            continue
        tag = line.replace("\\-", "-")
        if section == "MODES" and indented:
            emits.update(re.findall(r"^\.B ([a-z-]+)$", tag))
        elif section in ("MODES", "OPTIONS"):
            options.update(re.findall(r"(?<![A-Za-z])(--?[a-zA-Z][a-z-]*)", tag))
        elif section == "ENVIRONMENT":
            env.update(re.findall(r"^\.B ([A-Z_]+)$", tag))
        elif section == "EXIT STATUS":
            statuses.update(re.findall(r"^\.B ([0-9]+)$", tag))
    return options, emits, env, statuses


def main():
    help_text = open(sys.argv[1]).read()
    man_text = open(sys.argv[2]).read()
    names = ["options", "--emit values", "environment variables", "exit statuses"]
    failed = False
    for name, in_help, in_man in zip(names, help_items(help_text), man_items(man_text)):
        if not in_help:
            print(f"no {name} found in the --help text")
            failed = True
        for item in sorted(in_help - in_man):
            print(f"{name}: '{item}' is in --help but not in the man page")
            failed = True
        for item in sorted(in_man - in_help):
            print(f"{name}: '{item}' is in the man page but not in --help")
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
