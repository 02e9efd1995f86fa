"""Runs img2dataset on one shard's image URLs in its own process, behind our outbound-address policy and pace.

img2dataset fetches with urllib.request.urlopen, so installing a guarded global opener here puts every
connection it makes, redirects included, through the same address check as our video downloader, and every
body it reads through the same deadline and low-speed limit (its own timeout is per socket read: a server
trickling a byte a second would hold a thread for the whole body). The process keeps that global state, and a
crash in an image decoder, away from the shard task. Invoked as `python -m curate.download.img2dataset_runner
JSON`.

img2dataset's downloader runs in this process, on its own threads. Its multiprocessing distributor would spawn
a pool process and its logger another, each importing img2dataset again (torch, albumentations and wandb come
with it: 5-7 CPU s each on the 2-core dev machine), and the logger polls every 5 s before it lets a run end;
its stats are not what we read (the shard's Parquet file is).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # stops albumentations phoning home at import

from curate.download.img2dataset_columns import ROW_COLUMN  # noqa: E402 - after the environment it must see


class PacedResponse:
    """An http.client response whose read() enforces a FetchPolicy's deadline and low-speed limit (Pace).
    Slow aborts are counted per URL in `slow`: after 1 + SLOW_RETRIES of them the URL is not fetched again,
    whatever img2dataset's own retry count says."""

    def __init__(self, resp, url: str, policy, slow: dict):
        from curate.download.http import Pace

        self._resp, self._url, self._slow, self._pace = resp, url, slow, Pace(policy)

    def read(self, amt: int | None = None) -> bytes:
        from curate.download.http import FetchError

        parts, size = [], 0
        while amt is None or size < amt:
            chunk = self._resp.read1(1 << 16 if amt is None else min(1 << 16, amt - size))
            if not chunk:
                break
            try:
                self._pace.arrived(len(chunk))
            except FetchError as exc:
                self._slow[self._url] = (self._slow.get(self._url, (0, ""))[0] + 1, str(exc))
                raise
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)

    def __getattr__(self, name):  # status, headers, info(), close() ... as the response has them
        return getattr(self._resp, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._resp.close()


def install_guarded_opener(allow_private: bool, pace: dict | None = None) -> None:
    """`pace`: FetchPolicy fields (deadline, low_speed_limit, low_speed_time) for every body read."""
    from curate.download.address import connection_classes
    from curate.download.http import SLOW_RETRIES, FetchError, FetchPolicy

    http_cls, https_cls = connection_classes(allow_private)
    policy, slow = FetchPolicy(**(pace or {})), {}

    def paced(req, open_response):
        count, message = slow.get(req.full_url, (0, ""))
        if count > SLOW_RETRIES:
            raise FetchError("low_speed", f"{message} (not tried again after {count} slow attempts)")
        return PacedResponse(open_response(), req.full_url, policy, slow)

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return paced(req, lambda: self.do_open(http_cls, req))

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return paced(req, lambda: self.do_open(https_cls, req, context=self._context))

    urllib.request.install_opener(urllib.request.build_opener(HTTPHandler, HTTPSHandler))


def _configure_from_argv() -> dict:
    args = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    install_guarded_opener(bool(args.get("allow_private")), args.get("pace"))
    if args.get("max_pixels"):
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = int(args["max_pixels"])
        os.environ["CV_IO_MAX_IMAGE_PIXELS"] = str(int(args["max_pixels"]))
    return args


class _NoLogger:
    """Stands in for img2dataset's LoggerProcess (a spawned process aggregating stats for printing and wandb)."""

    def __init__(self, *args, **kwargs):
        self.done_shards = set()

    def start(self):
        pass

    def join(self):
        pass

    def terminate(self):
        pass


def _in_process(processes_count, downloader, reader, subjob_size, max_shard_retry):
    """img2dataset's distributor contract, run here: each shard of the reader, failed ones retried as it does."""
    from img2dataset.distributor import retrier

    def run(shards):
        return [row for status, row in map(downloader, shards) if status is False]

    retrier(run, run(reader), max_shard_retry)


if __name__ == "__main__":
    import importlib

    import img2dataset

    from curate.download.img2dataset_writer import CurateSampleWriter

    ARGS = _configure_from_argv()
    # Our member names and metadata (see that module), our in-process distributor, no logger process. The
    # package re-exports a function called `main`, hiding the module of that name: fetch the module itself.
    img2dataset_main = importlib.import_module("img2dataset.main")
    img2dataset_main.WebDatasetSampleWriter = CurateSampleWriter
    img2dataset_main.multiprocessing_distributor = _in_process
    img2dataset_main.LoggerProcess = _NoLogger

    max_side = ARGS.get("image_max_side")
    img2dataset.download(
        url_list=ARGS["input"], input_format="parquet", url_col="url", caption_col="caption",
        save_additional_columns=["ckey", ROW_COLUMN], output_folder=ARGS["output"], output_format="webdataset",
        processes_count=1, thread_count=int(ARGS.get("thread_count", 64)),
        number_sample_per_shard=int(ARGS["count"]) + 1,
        image_size=int(max_side or 256), resize_mode="keep_ratio_largest" if max_side else "no",
        resize_only_if_bigger=True, encode_format="jpg", encode_quality=95,
        timeout=int(ARGS.get("timeout", 10)), retries=int(ARGS.get("retries", 0)), compute_hash=None,
        max_image_area=float(ARGS.get("max_pixels") or "inf"), extract_exif=False,
        distributor="multiprocessing", incremental_mode="incremental", enable_wandb=False,
        user_agent_token="curate")
