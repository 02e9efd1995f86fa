"""The predicate grammar of `curate select --where`: check a user's WHERE expression against known columns before it reaches DuckDB.

Only these tokens pass: known column names (bare or double-quoted), numbers, single-quoted strings,
comparison and arithmetic operators, parentheses, commas, the keywords AND OR NOT IN BETWEEN IS NULL
LIKE TRUE FALSE, and calls to a few scalar functions. Everything else (semicolons, comments, SELECT
and other keywords, unknown names, other functions) is refused, so a predicate cannot become a second
statement or a subquery. The checked predicate is returned rebuilt from its tokens: what runs is what
was checked; comparisons() reads its thresholds back from the same tokens (for the report).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

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
    return " ".join(text for _, text in _checked(predicate, columns))


def comparisons(predicate: str, columns: Iterable[str]) -> Iterator[tuple[str, str, float]]:
    """(column, operator, number) for each comparison of a lone column with a number in the checked predicate,
    read from the same tokens that select runs: `c > 5`, `5 <= c` (given as `c >= 5`), `-1 < "c"`,
    `c BETWEEN 1 AND 2` (`c >= 1`, `c <= 2`) and `c NOT BETWEEN 1 AND 2` (`c < 1`, `c > 2`). Comparisons
    under OR or NOT come out as written; those with arithmetic or a function on either side are not a
    threshold on a column and are left out."""
    tokens = _checked(predicate, columns)
    for i in range(len(tokens)):
        if not _starts_operand(tokens, i):
            continue
        column = _column(tokens, i)
        if column and i + 1 < len(tokens) and tokens[i + 1][1] in _SWAPPED:  # c OP n
            number = _number(tokens, i + 2)
            if number and _ends_operand(tokens, number[1]):
                yield column, tokens[i + 1][1], number[0]
        elif column:  # c [NOT] BETWEEN a AND b
            negated = _text(tokens, i + 1) == "NOT"
            at = i + 2 if negated else i + 1
            low = _number(tokens, at + 1) if _text(tokens, at) == "BETWEEN" else None
            high = _number(tokens, low[1] + 1) if low and _text(tokens, low[1]) == "AND" else None
            if high and _ends_operand(tokens, high[1]):
                yield from ((column, "<", low[0]), (column, ">", high[0])) if negated else \
                    ((column, ">=", low[0]), (column, "<=", high[0]))
        else:  # n OP c
            number = _number(tokens, i)
            if number and _text(tokens, number[1]) in _SWAPPED:
                column = _column(tokens, number[1] + 1)
                if column and _ends_operand(tokens, number[1] + 2):
                    yield column, _SWAPPED[tokens[number[1]][1]], number[0]


_SWAPPED = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "<>": "<>", "!=": "!="}  # the same test, sides swapped


def _text(tokens: list[tuple[str, str]], i: int) -> str | None:
    return tokens[i][1] if i < len(tokens) else None


def _starts_operand(tokens: list[tuple[str, str]], i: int) -> bool:
    """Nothing before position i binds tighter than a comparison (no arithmetic, no other comparison)."""
    return i == 0 or tokens[i - 1][0] in ("open", "comma") or tokens[i - 1][1] in ("AND", "OR", "NOT")


def _ends_operand(tokens: list[tuple[str, str]], i: int) -> bool:
    return i == len(tokens) or tokens[i][0] in ("close", "comma") or tokens[i][1] in ("AND", "OR")


def _column(tokens: list[tuple[str, str]], i: int) -> str | None:
    if i < len(tokens) and tokens[i][0] == "column":
        text = tokens[i][1]
        return text[1:-1].replace('""', '"') if text.startswith('"') else text
    return None


def _number(tokens: list[tuple[str, str]], i: int) -> tuple[float, int] | None:
    """A number literal at i, with an optional sign, and the position after it."""
    sign = 1.0
    if _text(tokens, i) in ("-", "+"):
        sign = -1.0 if tokens[i][1] == "-" else 1.0
        i += 1
    if i < len(tokens) and tokens[i][0] == "number":
        return sign * float(tokens[i][1]), i + 1
    return None


def _checked(predicate: str, columns: Iterable[str]) -> list[tuple[str, str]]:
    """The predicate's tokens, each checked, as (kind, SQL text); kinds name columns, keywords and functions apart."""
    known = set(columns)
    tokens = _tokenize(predicate)
    if not tokens:
        raise PredicateError("empty predicate")
    depth = 0
    out: list[tuple[str, str]] = []
    for index, (kind, text) in enumerate(tokens):
        following = tokens[index + 1][0] if index + 1 < len(tokens) else None
        if kind == "name":
            if text.upper() in KEYWORDS:
                kind, text = "keyword", text.upper()
            elif following == "open":
                if text.lower() not in FUNCTIONS:
                    raise PredicateError(f"function {text!r} is not allowed; allowed: {sorted(FUNCTIONS)}")
                kind, text = "function", text.lower()
            elif text not in known:
                raise PredicateError(f"unknown column or keyword {text!r}; known columns: {sorted(known)}")
            else:
                kind = "column"
        elif kind == "quoted":
            if text[1:-1].replace('""', '"') not in known:
                raise PredicateError(f"unknown column {text}")
            kind = "column"
        elif kind == "open":
            depth += 1
        elif kind == "close":
            depth -= 1
            if depth < 0:
                raise PredicateError("unbalanced ')'")
        out.append((kind, text))
    if depth:
        raise PredicateError("unbalanced '('")
    return out


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
