"""Images go through img2dataset in a child process: the same low-speed limit and slow-retry cap apply there."""

import pyarrow.parquet as pq

from curate.download.http import FetchPolicy
from curate.download.plan import build_plan
from curate.download.shard import DownloadOptions, download_shard
from curate.shards.folder import DatasetFolder, shard_id


def test_trickling_image_is_aborted_and_tried_twice(media_server, tmp_path):
    """20 bytes/s against 1000 bytes/s over 0.5 s: a low_speed failure row after two attempts although
    `retries` allows four; the image served at full speed beside it downloads."""
    trickle = "/trickle/20/image_002.jpg"
    urls = tmp_path / "urls.txt"
    urls.write_text(f"{media_server.base_url}{trickle}\tslow\n{media_server.base_url}/image_000.jpg\tfast\n")
    folder = DatasetFolder(str(tmp_path / "ds"))
    build_plan(folder, "urls", str(urls), {"modality": "image"}, shard_size=10)
    policy = FetchPolicy(allow_private_addresses=True, retries=3, backoff=0.0, read_timeout=5.0,
                         low_speed_limit=1000, low_speed_time=0.5)
    before = media_server.hits.get(trickle, 0)
    download_shard(folder.root, 0, shard_id(0), DownloadOptions(fetch=policy).to_dict())
    rows = {r["caption"]: r for r in pq.read_table(folder.manifest(shard_id(0))).to_pylist()}
    assert rows["fast"]["status"] == "success"
    assert (rows["slow"]["status"], rows["slow"]["error_reason"]) == ("failed_to_download", "low_speed")
    assert "below the 1000 bytes/s limit" in rows["slow"]["error_message"]
    assert media_server.hits[trickle] - before == 2
