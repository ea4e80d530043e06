# Writes a program whose lines are longer than the 200 characters that a
# diagnostic quotes whole. Each line has one error, at the start, middle
# or end of the line or across the end of the quoted window.
import sys

digits = "0123456789"
lines = [
    # Error in the middle of a line of about 100,000 characters.
    's = "' + digits * 5000 + '" $ "' + digits * 5000 + '"',
    # Error near the start.
    't = $ "' + digits * 5000 + '"',
    # Error near the end.
    'u = "' + digits * 5000 + '" $',
    # Two-byte and three-byte UTF-8 characters are one column each.
    'v = "' + "\u00e9" * 5000 + '" $ "' + "\u20ac" * 300 + '"',
    # 200 characters are quoted whole, 201 are not.
    'w = "' + "x" * 192 + '" $',
    'y = "' + "x" * 193 + '" $',
    # A span that runs past the end of the quoted window.
    "optimizer o() {",
    '  "' + digits * 30 + '" = 2',
    "}",
    # Error at the line break of a long line.
    'model m(x = "' + digits * 30 + '")',
    "{",
    "}",
]
with open(sys.argv[1], "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
