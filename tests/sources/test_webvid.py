import csv
import json
from functools import partial

import pytest
import source_csv

from curate.sources import read
from curate.sources.webvid import parse_duration

HEADER = ["videoid", "contentUrl", "duration", "page_dir", "name"]
write_csv = partial(source_csv.write_csv, header=HEADER)
rows_of = partial(source_csv.rows_of, "webvid")


def test_captions_with_commas_quotes_unicode_and_newlines(tmp_path):
    path = tmp_path / "results_2M_val.csv"
    write_csv(path, [
        ["1066676110", "https://x.test/a.mp4", "PT00H00M11S", "000001_000050", 'Aerial, "drone" shot of 海'],
        ["31353427", "https://x.test/b.mp4", "PT00H01M05S", "000051_000100", "line one\nline two"],
    ])
    rows = rows_of(path)
    assert [r["key"] for r in rows] == ["webvid_1066676110", "webvid_31353427"]
    assert rows[0]["caption"] == 'Aerial, "drone" shot of 海'
    assert rows[1]["caption"] == "line one\nline two"
    assert rows[0]["modality"] == "video" and rows[0]["source"] == "webvid"
    assert json.loads(rows[0]["extra"]) == {"videoid": "1066676110", "duration": "PT00H00M11S",
                                            "page_dir": "000001_000050"}
    assert rows[0]["source_duration"] == 11.0 and rows[1]["source_duration"] == 65.0
    assert rows[0]["page_dir"] == "000001_000050" and rows[0]["page_idx"] is None
    assert all(r["input_error"] is None for r in rows)


def test_2m_val_csv_keeps_page_idx_and_every_column(tmp_path):
    """results_2M_val.csv orders its columns videoid,name,page_idx,page_dir,duration,contentUrl; every column but
    the URL and the caption is kept verbatim in extra, and the ones users filter on are typed columns."""
    path = tmp_path / "results_2M_val.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["videoid", "name", "page_idx", "page_dir", "duration", "contentUrl"])
        w.writerow(["1053841541", "Travel blogger shooting a story, 4k", "1", "000001_000050", "PT00H00M13S",
                    "https://x.test/1053841541/preview.mp4"])
        w.writerow(["29245", "no page", "", "", "", "https://x.test/29245.mp4"])
    rows = rows_of(path)
    assert rows[0]["caption"] == "Travel blogger shooting a story, 4k" and rows[0]["url"].endswith("preview.mp4")
    assert json.loads(rows[0]["extra"]) == {"videoid": "1053841541", "page_idx": "1", "page_dir": "000001_000050",
                                            "duration": "PT00H00M13S"}
    typed = [(r["source_duration"], r["page_dir"], r["page_idx"]) for r in rows]
    assert typed == [(13.0, "000001_000050", 1), (None, None, None)]


def test_missing_fields_become_input_errors(tmp_path):
    path = tmp_path / "w.csv"
    write_csv(path, [["", "https://x.test/a.mp4", "", "", "no id"], ["7", "", "PT1S", "p", "no url"],
                     ["8", "ftp://x.test/a.mp4", "PT1S", "p", "bad scheme"]])
    rows = rows_of(path)
    assert rows[0]["input_error"] == "missing videoid" and rows[0]["key"].startswith("webvid_url_")
    assert rows[1]["input_error"] == "missing url"
    assert "unsupported url scheme" in rows[2]["input_error"]


def test_streams_in_chunks_with_stable_row_numbers(tmp_path):
    path = tmp_path / "big.csv"
    write_csv(path, [[str(i), f"https://x.test/{i}.mp4", "PT2S", "p", f"caption {i}"] for i in range(3000)])
    chunks = list(read("webvid", str(path), block_rows_hint=256))
    assert len(chunks) > 1
    rows = [r for c in chunks for r in c]
    assert [r["row"] for r in rows] == list(range(3000))


def test_not_a_webvid_csv(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a WebVid CSV"):
        rows_of(path)


@pytest.mark.parametrize("text,seconds", [("PT00H00M11S", 11.0), ("PT1H2M3S", 3723.0), ("PT0.5S", 0.5),
                                          ("12", 12.0), ("", None), ("soon", None)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds
