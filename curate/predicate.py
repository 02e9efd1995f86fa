"""The predicate grammar of `curate select --where`: check a user's WHERE expression against known columns before it reaches DuckDB.

Only these tokens pass: known column names (bare or double-quoted), numbers, single-quoted strings,
comparison and arithmetic operators, parentheses, commas, the keywords AND OR NOT IN BETWEEN IS NULL
LIKE TRUE FALSE, and calls to a few scalar functions. Everything else (semicolons, comments, SELECT
and other keywords, unknown names, other functions) is refused, so a predicate cannot become a second
statement or a subquery. The checked predicate is returned rebuilt from its tokens: what runs is what
was checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "BETWEEN", "IS", "NULL", "LIKE", "TRUE", "FALSE"})
FUNCTIONS = frozenset({"abs", "round", "coalesce", "lower", "upper", "length", "least", "greatest"})
OPERATORS = ("<=", ">=", "<>", "!=", "=", "<", ">", "+", "-", "*", "/")

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
    | (?P<string>'(?:[^']|'')*')
    | (?P<quoted>"(?:[^"]|"")+")
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<operator><=|>=|<>|!=|=|<|>|\+|-|\*|/)
    | (?P<open>\()
    | (?P<close>\))
    | (?P<comma>,)
    )""",
    re.VERBOSE,
)


class PredicateError(ValueError):
    """A selection predicate uses something outside the allowed grammar."""


def check_column(name: str, columns: Iterable[str]) -> str:
    """A column name given on its own (e.g. --by), checked against the known columns."""
    known = set(columns)
    if name not in known:
        raise PredicateError(f"unknown column {name!r}; known columns: {sorted(known)}")
    return name


def check_predicate(predicate: str, columns: Iterable[str]) -> str:
    """The predicate rebuilt from its tokens, or PredicateError naming the first offending token."""
    known = set(columns)
    tokens = _tokenize(predicate)
    if not tokens:
        raise PredicateError("empty predicate")
    depth = 0
    out: list[str] = []
    for index, (kind, text) in enumerate(tokens):
        following = tokens[index + 1][0] if index + 1 < len(tokens) else None
        if kind == "name":
            if text.upper() in KEYWORDS:
                text = text.upper()
            elif following == "open":
                if text.lower() not in FUNCTIONS:
                    raise PredicateError(f"function {text!r} is not allowed; allowed: {sorted(FUNCTIONS)}")
                text = text.lower()
            elif text not in known:
                raise PredicateError(f"unknown column or keyword {text!r}; known columns: {sorted(known)}")
        elif kind == "quoted":
            if text[1:-1].replace('""', '"') not in known:
                raise PredicateError(f"unknown column {text}")
        elif kind == "open":
            depth += 1
        elif kind == "close":
            depth -= 1
            if depth < 0:
                raise PredicateError("unbalanced ')'")
        out.append(text)
    if depth:
        raise PredicateError("unbalanced '('")
    return " ".join(out)


def _tokenize(predicate: str) -> list[tuple[str, str]]:
    tokens = []
    position = 0
    end = len(predicate.rstrip())
    while position < end:
        match = _TOKEN.match(predicate, position)
        if not match:
            raise PredicateError(f"unexpected {predicate[position:].strip()[:20]!r} at character {position}")
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        position = match.end()
    return tokens
