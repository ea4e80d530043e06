#!/usr/bin/env python3
"""nets.test.py NETS_MD FILE.bocb... - checks that every backbone model
of the given stdlib/nets files (a model whose name has no underscore, so
not a block such as resnet_basic) appears in the table of docs/nets.md
as `| `name` |`."""
import re
import sys


def main(doc_path, sources):
    with open(doc_path, encoding="utf-8") as f:
        doc = f.read()
    missing = []
    for path in sources:
        with open(path, encoding="utf-8") as f:
            for model in re.findall(r"^model (\w+)\(", f.read(), re.M):
                if "_" not in model and f"| `{model}` |" not in doc:
                    missing.append(f"{path}: {model}")
    for m in missing:
        print(f"nets.test: model {m} is not in the table of {doc_path}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
