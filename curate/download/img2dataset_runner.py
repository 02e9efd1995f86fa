"""Runs img2dataset on one shard's image URLs in its own process, behind our outbound-address policy and pace.

img2dataset must run under a __main__ guard (it hangs otherwise) and fetches with urllib.request.urlopen,
so installing a guarded global opener here puts every connection it makes, redirects included, through
the same address check as our video downloader, and every body it reads through the same deadline and
low-speed limit (its own timeout is per socket read: a server trickling a byte a second would hold a thread
for the whole body). Invoked as `python -m curate.download.img2dataset_runner JSON`.
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


# Module level on purpose: img2dataset's spawned workers re-import this file as __mp_main__ (with the
# parent's argv) and need the same policy; importing it from elsewhere configures nothing.
ARGS = _configure_from_argv() if sys.argv[0].endswith("img2dataset_runner.py") else {}

if __name__ == "__main__":
    import importlib

    import img2dataset

    from curate.download.img2dataset_writer import CurateSampleWriter

    # Our member names and metadata (see that module). The package re-exports a function called `main`,
    # hiding the module of that name: fetch the module itself.
    importlib.import_module("img2dataset.main").WebDatasetSampleWriter = CurateSampleWriter

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
