"""Clips cut from parent videos (Panda-70M windows): each parent fetched once, every window frame-exact, each
window one manifest row whatever happens to it."""

import io
import shutil
import tarfile

import numpy as np
import pyarrow.parquet as pq

from curate.demo import server
from curate.download.http import FetchPolicy
from curate.download.plan import build_plan
from curate.download.shard import DownloadOptions, download_shard, retry_shard
from curate.media.video_frames import decode_frames
from curate.shards.folder import DatasetFolder, shard_id

OPTIONS = DownloadOptions(fetch=FetchPolicy(allow_private_addresses=True, retries=0), probe_workers=1).to_dict()


def every_frame(video):
    return decode_frames(video, lambda n: list(range(n))).astype(np.int16)


def nearest(frame, frames):
    return int(np.argmin([np.abs(frame - f).mean() for f in frames]))


def test_panda_windows_cut_from_one_fetch(media_server, demo_media, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(f"{demo_media[0]}/video_001.mp4", site / "watch")  # a video page: goes through yt-dlp
    page = server.start(str(site))
    base = media_server.base_url
    csv = tmp_path / "panda70m_testing.csv"
    csv.write_text(
        "videoID,url,timestamp,caption,matching_score\n"
        f"""v0,{base}/video_000.mp4,"[['0:00:00.500', '0:00:01.500'], ['0:00:01.5', '0:00:02.625'], """
        f"""['0:00:02.900', '0:00:09']]","['first, part', 'second', 'past the end']","[0.5, 0.4, 0.3]"\n"""
        f"""v1,{page.base_url}/watch?v=v1,"[[0, 1]]","['page video']","[0.6]"\n"""
        f"""v2,{base}/missing.mp4,"[[0, 1], [1, 2]]","['a', 'b']","[0.6, 0.7]"\n"""
        f"""v3,{base}/video_002.mp4,"[[0, 1]]","['a', 'b']","[0.6]"\n""")
    folder = DatasetFolder(str(tmp_path / "ds"))
    before = media_server.hits.get("/video_000.mp4", 0)  # the session's media server: other tests fetched it too
    try:
        build_plan(folder, "panda70m", str(csv), {}, shard_size=2)  # v0's three windows still share one shard
        shards = pq.read_table(folder.plan_path).column("shard_no").to_pylist()
        assert shards == [0, 0, 0, 1, 2, 2, 3]
        for n in range(4):
            download_shard(folder.root, n, shard_id(n), OPTIONS)
    finally:
        page.shutdown()
    assert media_server.hits["/video_000.mp4"] == before + 1 and page.hits["/watch"] >= 1
    rows = {r["key"]: r for n in range(4) for r in pq.read_table(folder.manifest(shard_id(n))).to_pylist()}
    assert len(rows) == 7
    a, b = rows["panda_v0_500_1500"], rows["panda_v0_1500_2625"]
    assert a["shard"] == b["shard"] == rows["panda_v0_2900_9000"]["shard"]
    assert (a["status"], a["caption"], a["matching_score"], a["parent_key"]) == ("success", "first, part", 0.5,
                                                                                 "panda_v0")
    assert (a["window_start_frame"], a["window_end_frame"], a["num_frames"]) == (4, 12, 8)  # 8 fps parent
    assert (b["window_start_frame"], b["window_end_frame"], b["num_frames"]) == (12, 21, 9)
    assert rows["panda_v0_2900_9000"]["window_end_frame"] == 24  # capped at the parent's last frame
    assert rows["panda_v1_0_1000"]["status"] == "success" and rows["panda_v1_0_1000"]["num_frames"] == 8
    assert {rows[k]["error_reason"] for k in ("panda_v2_0_1000", "panda_v2_1000_2000")} == {"http_404"}
    assert rows["panda_v3"]["status"] == "invalid_input"
    # frame-exact: a clip's first and last frames are the parent's frames at its window, not their neighbours
    parent = every_frame(f"{demo_media[0]}/video_000.mp4")
    with tarfile.open(folder.tar(a["shard"])) as tar:
        for row in (a, b):
            clip = every_frame(tar.extractfile(f"{row['key']}.mp4").read())
            assert len(clip) == row["window_end_frame"] - row["window_start_frame"]
            assert nearest(clip[0], parent) == row["window_start_frame"]
            assert nearest(clip[-1], parent) == row["window_end_frame"] - 1
        assert io.BytesIO(tar.extractfile("panda_v0_500_1500.txt").read()).read() == b"first, part"
    # retry-failed re-fetches a failed parent once for all its windows; the typed columns survive
    before = media_server.hits.get("/missing.mp4", 0)
    retry_shard(folder.root, rows["panda_v2_0_1000"]["shard"], OPTIONS)
    assert media_server.hits["/missing.mp4"] == before + 1
    again = {r["key"]: r for r in pq.read_table(folder.manifest(rows["panda_v2_0_1000"]["shard"])).to_pylist()}
    assert again["panda_v2_1000_2000"]["window_start"] == 1.0 and again["panda_v2_1000_2000"]["matching_score"] == 0.7


def test_panda_whole_videos_stored_once_with_their_windows(media_server, tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("videoID,url,timestamp,caption,matching_score\n"
                   f"""v0,{media_server.base_url}/video_003.mp4,"[[0, 1], [1, 2]]","['a', 'b']","[0.5, 0.6]"\n""")
    folder = DatasetFolder(str(tmp_path / "ds"))
    build_plan(folder, "panda70m", str(csv), {"whole_videos": True}, shard_size=10)
    download_shard(folder.root, 0, shard_id(0), OPTIONS)
    (row,) = pq.read_table(folder.manifest(shard_id(0))).to_pylist()
    assert (row["key"], row["status"], row["num_frames"], row["window_start_frame"]) == ("panda_v0", "success", 24,
                                                                                        None)
