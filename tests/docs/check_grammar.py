"""Checks the grammar of the language reference against the parser (make check, via lit).

Usage: check_grammar.py PARSER.y LEXER.l LANGUAGE.md

Compares four lists and prints each difference:

- the keywords of the `%token` declarations of parser.y with the keyword
  rules of lexer.l (each spelling must return its own token);
- those keywords with the **Keywords** line of the reference;
- the token spellings of parser.y (keywords, punctuation and operators)
  with the quoted terminals of the reference's ```ebnf block;
- the nonterminals of parser.y with the rule names of that block. Every
  EBNF rule must be a parser.y rule, every identifier it uses must be an
  EBNF rule or a token class, and every parser.y rule must appear unless
  FOLDED lists it.

Exits with status 1 when a list differs, 0 otherwise.
"""
import re
import sys

# Tokens of parser.y that have no spelling of their own in source text.
TOKEN_CLASSES = {"NEWLINE", "IDENT", "NUMBER", "STRING"}
INTERNAL_TOKENS = {"START_EXPRESSION", "INVALID"}

# parser.y rules that the EBNF folds into another rule, with where.
FOLDED = {
    "decl_list": "program",
    "decl_seq": "program",
    "stmt_list": "block",
    "stmt_seq": "block",
    "param_seq": "param_list",
    "arg_seq": "arg_list",
    "recovery": "error recovery, no syntax of its own",
    "skipped": "error recovery, no syntax of its own",
    "skipped_token": "error recovery, no syntax of its own",
}


def parser_tokens(text):
    """Returns {token name: spelling} of the %token declarations."""
    tokens = {}
    for line in text.splitlines():
        if not line.startswith("%token"):
            continue
        for name, spelling in re.findall(r'\b([A-Z_]+)\s+"((?:[^"\\]|\\.)*)"', line):
            tokens[name] = spelling
    return tokens


def parser_rules(text):
    """Returns the nonterminals defined between the two %% lines."""
    parts = text.split("\n%%\n")
    if len(parts) < 2:
        return set()
    return set(re.findall(r"^([a-z_]+)\n\s+:", parts[1], re.M))


def lexer_keywords(text):
    """Returns {spelling: token name} of the keyword rules of lexer.l."""
    return dict(re.findall(r'^"([a-z]+)"\s+\{[^}]*?return emit\(yyextra, TOK_([A-Z_]+)\)',
                           text, re.M))


def reference_keywords(text):
    m = re.search(r"\*\*Keywords\*\*: `([^`]*)`", text)
    return set(m.group(1).split()) if m else None


def ebnf_block(text):
    m = re.search(r"^```ebnf\n(.*?)^```", text, re.M | re.S)
    return m.group(1) if m else None


def ebnf_rules(block):
    """Returns (rule names defined, identifiers used, quoted terminals)."""
    defined = set(re.findall(r"^([a-z_]+)\s*=", block, re.M))
    terminals = set(re.findall(r'"([^"]+)"', block))
    unquoted = re.sub(r'"[^"]*"', " ", block)
    used = set(re.findall(r"\b([A-Za-z_]+)\b", unquoted)) - defined
    return defined, used, terminals


def compare(list_name, expected, actual, failures):
    """Prints the names of one list missing from the other."""
    for name in sorted(expected - actual):
        print(f"error: {list_name}: '{name}' is missing")
        failures.append(name)
    for name in sorted(actual - expected):
        print(f"error: {list_name}: '{name}' is extra")
        failures.append(name)


def main():
    parser_path, lexer_path, reference_path = sys.argv[1:4]
    with open(parser_path, encoding="utf-8") as f:
        parser = f.read()
    with open(lexer_path, encoding="utf-8") as f:
        lexer = f.read()
    with open(reference_path, encoding="utf-8") as f:
        reference = f.read()

    failures = []
    tokens = parser_tokens(parser)
    spelled = {name: s for name, s in tokens.items()
               if name not in TOKEN_CLASSES | INTERNAL_TOKENS}
    keywords = {s for s in spelled.values() if s.isalpha()}
    if not keywords:
        print(f"error: {parser_path}: no %token keywords found")
        failures.append(parser_path)

    lexed = lexer_keywords(lexer)
    compare("keywords of lexer.l against parser.y", keywords, set(lexed), failures)
    for spelling, name in sorted(lexed.items()):
        if spelled.get(name) != spelling:
            print(f"error: lexer.l returns TOK_{name} for '{spelling}', which parser.y "
                  f"spells '{spelled.get(name)}'")
            failures.append(spelling)

    listed = reference_keywords(reference)
    if listed is None:
        print(f"error: {reference_path}: no **Keywords**: `...` line")
        failures.append("keywords")
    else:
        compare("the Keywords line of the reference", keywords, listed, failures)

    block = ebnf_block(reference)
    if block is None:
        print(f"error: {reference_path}: no ```ebnf block")
        sys.exit(1)
    defined, used, terminals = ebnf_rules(block)
    compare("terminals of the EBNF", set(spelled.values()), terminals, failures)

    rules = parser_rules(parser)
    for name in sorted(defined - rules):
        print(f"error: EBNF rule '{name}' is not a rule of parser.y")
        failures.append(name)
    for name in sorted(used - TOKEN_CLASSES):
        print(f"error: EBNF uses '{name}', which it does not define")
        failures.append(name)
    for name in sorted(rules - defined - set(FOLDED)):
        print(f"error: parser.y rule '{name}' is missing from the EBNF")
        failures.append(name)

    if not failures:
        print(f"ok: {len(keywords)} keywords, {len(spelled)} tokens, {len(defined)} rules")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
