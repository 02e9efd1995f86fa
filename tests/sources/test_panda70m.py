import json
from functools import partial

import pytest
import source_csv

from curate.sources.panda70m import RowError, seconds

HEADER = ["videoID", "url", "timestamp", "caption", "matching_score"]
write_csv = partial(source_csv.write_csv, header=HEADER)
rows_of = partial(source_csv.rows_of, "panda70m")


def test_seconds_accepts_clock_text_and_plain_seconds_only():
    assert seconds("0:00:05.005") == pytest.approx(5.005)
    assert seconds("1:02:03") == 3723.0 and seconds(7) == 7.0 and seconds("2.5") == 2.5
    for bad in ("5 s", "0:61:00", "-1", True, None, float("nan"), [1]):
        with pytest.raises(RowError):
            seconds(bad)


def test_one_sample_per_window_with_its_caption_and_typed_score(tmp_path):
    path = tmp_path / "panda70m_validation.csv"
    write_csv(path, [
        ["abc-_1", "https://www.youtube.com/watch?v=abc-_1",
         "[['0:00:05.005', '0:00:10.010'], ['0:00:12.000', '0:00:14.500']]",
         '["A man, \\"talking\\".", \'a dog\']', "[0.51, 0.42]"],
        ["xyz", "https://cdn.test/xyz.mp4", "[[1, 2.5]]", "['one']", ""],
    ])
    rows = rows_of(path)
    assert [r["key"] for r in rows] == ["panda_abc-_1_5005_10010", "panda_abc-_1_12000_14500", "panda_xyz_1000_2500"]
    first = rows[0]
    assert first["caption"] == 'A man, "talking".' and first["matching_score"] == 0.51
    assert (first["parent_key"], first["window_start"], first["window_end"]) == ("panda_abc-_1", 5.005, 10.01)
    assert first["url"] == "https://www.youtube.com/watch?v=abc-_1" and first["input_error"] is None
    assert rows[1]["caption"] == "a dog" and rows[1]["parent_key"] == "panda_abc-_1"
    assert rows[2]["matching_score"] is None and rows[2]["window_end"] == 2.5
    assert [r["row"] for r in rows] == [0, 1, 2]


def test_bad_rows_are_failure_rows_and_nothing_is_evaluated(tmp_path):
    path = tmp_path / "bad.csv"
    write_csv(path, [
        ["v1", "https://x.test/v1", "__import__('os').system('touch PWNED')", "['a']", "[0.5]"],
        ["v2", "https://x.test/v2", "[['0:00:01', '0:00:02']]", "['a', 'b']", "[0.5]"],
        ["v3", "https://x.test/v3", "[['0:00:03', '0:00:02']]", "['a']", "[0.5]"],
        ["v4", "https://x.test/v4", "[['5 s', '6 s']]", "['a']", "[0.5]"],
        ["v5", "https://x.test/v5", "[['0:00:01', '0:00:02']]", "['a']", "['high']"],
        ["", "https://x.test/v6", "[[1, 2]]", "['a']", "[0.5]"],
        ["v7", "ftp://x.test/v7", "[[1, 2]]", "['a']", "[0.5]"],
    ])
    rows = rows_of(path)
    assert not (tmp_path / "PWNED").exists()
    errors = {r["key"]: r["input_error"] for r in rows}
    assert errors["panda_v1"].startswith("CSV row 0: timestamp: not a Python-literal list")
    assert "lists not aligned: 1 timestamps, 2 captions" in errors["panda_v2"]
    assert "is not after start" in errors["panda_v3"]
    assert "neither H:MM:SS(.mmm) nor seconds" in errors["panda_v4"]
    assert "matching_score 0: expected a number" in errors["panda_v5"]
    assert errors["panda_line5"].endswith("missing videoID")
    assert "unsupported url scheme" in errors["panda_v7_1000_2000"]
    assert len(rows) == 7


def test_whole_videos_keeps_windows_in_extra_and_missing_columns_refused(tmp_path):
    path = tmp_path / "p.csv"
    write_csv(path, [["v", "https://x.test/v.mp4", "[[1, 2], [3, 4]]", "['a', 'b']", "[0.5, 0.6]"]])
    (row,) = rows_of(path, whole_videos=True)
    assert row["key"] == "panda_v" and row["window_start"] is None and row["parent_key"] == "panda_v"
    assert json.loads(row["extra"])["windows"] == [[1.0, 2.0, "a", 0.5], [3.0, 4.0, "b", 0.6]]
    bad = tmp_path / "other.csv"
    write_csv(bad, [["x"]], header=["video"])
    with pytest.raises(ValueError, match="not a Panda-70M CSV"):
        rows_of(bad)


def test_an_option_the_source_does_not_take_is_refused_naming_those_it_takes():
    from curate.sources import check_options

    check_options("panda70m", {"whole_videos": True})
    with pytest.raises(ValueError, match="source webvid does not take whole_videos; it takes: block_rows_hint"):
        check_options("webvid", {"whole_videos": True})
