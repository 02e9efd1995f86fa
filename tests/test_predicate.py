"""Selection predicates: known columns and a small grammar pass; anything that could escape the WHERE is refused."""

import operator

import duckdb
import pytest

from curate.predicate import PredicateError, check_column, check_predicate, comparisons

COLUMNS = {"aesthetic_score", "clip_score", "motion_score", "source", "modality", "duration", "near_duplicate_of"}


# Rows with missing scores (NULL) among them: a sample without a score must never pass a threshold on it.
ROWS = """SELECT * FROM (VALUES
    ('r1', 6.0, 0.30, 1.0, 'webvid', 'video', 5.0, NULL),
    ('r2', 4.0, 0.20, NULL, 'laion', 'image', NULL, 'r1'),
    ('r3', NULL, NULL, NULL, 'webvid', 'video', 3.0, NULL),
    ('r4', 5.5, 0.28, 0.6, 'other', 'video', 20.0, NULL))
    t(key, aesthetic_score, clip_score, motion_score, source, modality, duration, near_duplicate_of)"""


@pytest.mark.parametrize("predicate, kept", [
    ("aesthetic_score >= 5.5 AND clip_score >= 0.28", {"r1", "r4"}),
    ("(motion_score > 0.5 or modality = 'image') and not source in ('webvid', 'laion''s')", {"r2", "r4"}),
    ("duration between 2 and 1e1 and near_duplicate_of is null", {"r1", "r3"}),
    ("abs(clip_score - 0.3) < .05 AND lower(source) LIKE 'web%'", {"r1"}),
    ('"aesthetic_score" <> 4', {"r1", "r4"}),
    ("NOT aesthetic_score < 5", {"r1", "r4"}),  # NOT NULL is NULL: the unscored row stays out
])
def test_allowed_predicates_run_in_duckdb_and_never_keep_unscored_rows(predicate, kept):
    checked = check_predicate(predicate, COLUMNS)
    rows = duckdb.sql(f"SELECT key FROM ({ROWS}) WHERE {checked}").fetchall()
    assert {key for (key,) in rows} == kept


@pytest.mark.parametrize("predicate, complaint", [
    ("clip_score > 0; DROP TABLE samples", "unexpected ';"),
    ("clip_score > (SELECT max(clip_score) FROM samples)", "SELECT"),
    ("password = 'x'", "password"),
    ("read_csv('/etc/passwd') IS NOT NULL", "function 'read_csv'"),
    ("clip_score > 0 /* x */", "'x'"),
    ("(clip_score > 0", "unbalanced"),
    ("clip_score > 0)", "unbalanced"),
    ('"secret" = 1', "unknown column"),
    ("", "empty"),
])
def test_refused_predicates(predicate, complaint):
    with pytest.raises(PredicateError, match=complaint):
        check_predicate(predicate, COLUMNS)


def test_comment_markers_are_rebuilt_apart():
    rebuilt = check_predicate("clip_score --1 > 0 /* clip_score */", COLUMNS)
    assert "--" not in rebuilt and "/*" not in rebuilt and "*/" not in rebuilt


def test_check_column():
    assert check_column("clip_score", COLUMNS) == "clip_score"
    with pytest.raises(PredicateError, match="unknown column"):
        check_column("clip_score desc", COLUMNS)


@pytest.mark.parametrize("predicate, expected", [
    ("aesthetic_score >= 5 OR clip_score > 0.3", [("aesthetic_score", ">=", 5.0), ("clip_score", ">", 0.3)]),
    ('5 <= "aesthetic_score" AND -1e-1 > clip_score', [("aesthetic_score", ">=", 5.0), ("clip_score", "<", -0.1)]),
    ("clip_score BETWEEN .2 AND 0.3 or duration not between 2 and 10",
     [("clip_score", ">=", 0.2), ("clip_score", "<=", 0.3), ("duration", "<", 2.0), ("duration", ">", 10.0)]),
    ("(modality = 'image' OR motion_score > 1.0) AND NOT aesthetic_score < 4", [("motion_score", ">", 1.0),
                                                                                 ("aesthetic_score", "<", 4.0)]),
    ("abs(clip_score - 0.3) < .05 AND clip_score > 0.5 * 2 AND 2 * clip_score > 1 AND clip_score + 1 > 2", []),
    ("duration - 1 < motion_score AND motion_score IS NOT NULL AND source IN ('a', 'b')", []),
])
def test_comparisons_read_from_the_checked_tokens(predicate, expected):
    assert list(comparisons(predicate, COLUMNS)) == expected


@pytest.mark.parametrize("predicate, combine", [
    ("5 <= aesthetic_score AND clip_score < 0.3", all),
    ('"aesthetic_score" BETWEEN -1 AND 5.5', all),
    ("aesthetic_score <> 1 AND (clip_score = 0.3) AND 2.5 >= clip_score", all),
    ("aesthetic_score NOT BETWEEN 0.2 AND 2", any),
    ("-0.5 > clip_score OR 5.5 < aesthetic_score", any),
])
def test_comparisons_select_what_duckdb_selects(predicate, combine):
    """Conjunctions (and one disjunction) whose every part is a comparison: the yielded comparisons, combined,
    keep exactly the rows DuckDB keeps, so the sides, signs and inclusive ends are read right."""
    values = [-2.0, -1.0, -0.5, 0.0, 0.2, 0.3, 1.0, 2.0, 2.5, 5.0, 5.5, 6.0]
    rows = [(a, c) for a in values for c in values]
    con = duckdb.connect()
    con.execute("CREATE TABLE t (aesthetic_score DOUBLE, clip_score DOUBLE)")
    con.executemany("INSERT INTO t VALUES (?, ?)", rows)
    kept = set(con.execute(f"SELECT aesthetic_score, clip_score FROM t WHERE {check_predicate(predicate, COLUMNS)}")
               .fetchall())
    tests = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "=": operator.eq,
             "<>": operator.ne, "!=": operator.ne}
    found = list(comparisons(predicate, COLUMNS))
    assert found
    mine = {row for row in rows
            if combine(tests[op](row[0 if column == "aesthetic_score" else 1], value) for column, op, value in found)}
    assert kept == mine and 0 < len(kept) < len(rows)
