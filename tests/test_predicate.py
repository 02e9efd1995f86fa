"""Selection predicates: known columns and a small grammar pass; anything that could escape the WHERE is refused."""

import duckdb
import pytest

from curate.predicate import PredicateError, check_column, check_predicate

COLUMNS = {"aesthetic_score", "clip_score", "motion_score", "source", "modality", "duration", "near_duplicate_of"}


@pytest.mark.parametrize("predicate", [
    "aesthetic_score >= 5.5 AND clip_score >= 0.28",
    "(motion_score > 0.5 or modality = 'image') and not source in ('webvid', 'laion''s')",
    "duration between 2 and 1e1 and near_duplicate_of is null",
    "abs(clip_score - 0.3) < .05 AND lower(source) LIKE 'web%'",
    '"aesthetic_score" <> 4',
])
def test_allowed_predicates_pass_and_run_in_duckdb(predicate):
    checked = check_predicate(predicate, COLUMNS)
    columns = ", ".join(f"NULL::{'VARCHAR' if name in ('source', 'modality', 'near_duplicate_of') else 'DOUBLE'} AS {name}"
                        for name in sorted(COLUMNS))
    duckdb.sql(f"SELECT count(*) FROM (SELECT {columns}) WHERE {checked}").fetchall()


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
