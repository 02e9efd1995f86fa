import json
import zipfile
from functools import partial

import pytest
import source_csv

from curate.sources.openvid import video_index

HEADER = ["video", "caption", "aesthetic score", "motion score", "temporal consistency score", "camera motion",
          "frame", "fps", "seconds"]
write_csv = partial(source_csv.write_csv, header=HEADER)
rows_of = partial(source_csv.rows_of, "openvid")


def test_scores_are_typed_and_videos_found_in_zips_and_folders(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    with zipfile.ZipFile(parts / "OpenVid_part0.zip", "w") as zf:
        zf.writestr("video/a-b_c.mp4", b"mp4")
        zf.writestr("video/readme.txt", b"not a video")
    (parts / "extracted").mkdir()
    (parts / "extracted" / "d.mp4").write_bytes(b"mp4")
    path = tmp_path / "OpenVid-1M.csv"
    write_csv(path, [
        ["a-b_c.mp4", 'A dog, "running"', "5.25", "3.1", "0.98", "static", "120", "29.97", "4.004"],
        ["d.mp4", "second", "4.5", "", "nan", "pan", "12.5", "x", "1"],
        ["absent.mp4", "gone", "6", "1", "1", "zoom", "10", "24", "0.4"],
        ["", "no name", "6", "1", "1", "zoom", "10", "24", "0.4"],
    ])
    rows = rows_of(path, videos=str(parts))
    assert [r["key"] for r in rows] == ["openvid_a-b_c", "openvid_d", "openvid_absent", "openvid_row3"]
    first = rows[0]
    assert first["path"] == f"{parts}/OpenVid_part0.zip::video/a-b_c.mp4" and first["input_error"] is None
    assert first["caption"] == 'A dog, "running"' and first["source"] == "openvid"
    assert (first["openvid_aesthetic"], first["openvid_motion"], first["openvid_temporal_consistency"],
            first["camera_motion"], first["source_frames"], first["source_fps"], first["source_duration"]) == \
        (5.25, 3.1, 0.98, "static", 120, 29.97, 4.004)
    assert json.loads(first["extra"])["aesthetic score"] == "5.25"
    # unusable numbers are nulls, never a lost row
    assert (rows[1]["openvid_motion"], rows[1]["openvid_temporal_consistency"], rows[1]["source_frames"],
            rows[1]["source_fps"]) == (None, None, None, None)
    assert rows[1]["path"] == f"{parts}/extracted/d.mp4"
    assert rows[2]["path"] is None and "absent.mp4 not found" in rows[2]["input_error"]
    assert rows[3]["input_error"] == "missing video name"


def test_zip_given_directly_and_a_csv_that_is_not_openvid(tmp_path):
    archive = tmp_path / "OpenVid_part7.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("x.mp4", b"mp4")
    assert video_index(str(archive)) == {"x.mp4": f"{archive}::x.mp4"}
    with pytest.raises(FileNotFoundError, match="not a zip archive nor a folder"):
        video_index(str(tmp_path / "nothing"))
    bad = tmp_path / "other.csv"
    bad.write_text("url,text\nhttp://x/y.mp4,z\n")
    with pytest.raises(ValueError, match="not an OpenVid CSV"):
        rows_of(bad, videos=str(archive))
