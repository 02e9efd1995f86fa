"""Benchmark the download paths on loopback, side by side with their ceilings, in one run.

video: our downloader (fetch + SHA-256 + probe (MP4 index, isolated PyAV otherwise) + shard writing, via
       `curate download` on local Ray) vs a bare HTTP fetch loop writing the same files with the same
       concurrency (the ceiling).
image: our img2dataset wrapper (via `curate download`) vs img2dataset alone on the same URL list.
Prints a markdown table of throughput and ratios. Usage: python scripts/bench_download.py [--videos N] [--images N] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from curate.demo import corpus, server
from curate.download.http import FetchPolicy
from curate.download.stage import download
from curate.download.shard import DownloadOptions
from curate.media.transcode import write_mp4

THREADS = 16


def make_media(root: str, smoke: bool = False) -> None:
    """One WebVid-preview-sized clip (596x336, 10 s at 25 fps) and one 512x512 image, served many times
    (smoke: a 64x48 clip of 10 frames and a 64x64 image)."""
    rng = np.random.default_rng(0)
    width, height, count, side = (64, 48, 10, 64) if smoke else (596, 336, 250, 512)
    frames = corpus.video_frames("circle", (200, 50, 50), (30, 30, 30), "noisy", rng, width=width, height=height,
                                 frames=count)
    write_mp4(os.path.join(root, "clip.mp4"), frames, fps=25, crf=30)
    import cv2

    img = (rng.random((side, side, 3)) * 255).astype(np.uint8)
    cv2.imwrite(os.path.join(root, "img.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])


def bare_fetch(urls: list[str], out: str) -> None:
    def one(i_url):
        i, url = i_url
        with urllib.request.urlopen(url, timeout=30) as r, open(os.path.join(out, f"{i}.mp4"), "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, enumerate(urls)))


def img2dataset_alone(url_file: str, out: str, n: int) -> None:
    code = ("import img2dataset\nif __name__ == '__main__':\n"
            f"    img2dataset.download(url_list={url_file!r}, input_format='txt', output_folder={out!r},"
            f" output_format='webdataset', processes_count=1, thread_count=64, number_sample_per_shard={n + 1},"
            " resize_mode='no', encode_format='jpg', encode_quality=95, compute_hash='sha256', extract_exif=False,"
            " timeout=10, retries=0, distributor='multiprocessing', enable_wandb=False)\n")
    script = os.path.join(out + "_run.py")
    with open(script, "w") as f:
        f.write(code)
    subprocess.run([sys.executable, script], check=True, capture_output=True,
                   env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1"))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny media, 2 videos, 4 images, one repeat (the suite)")
    args = parser.parse_args()
    if args.smoke:
        args.videos, args.images, args.repeats = 2, 4, 1
    work = tempfile.mkdtemp(prefix="bench_download_")
    media = os.path.join(work, "media")
    os.makedirs(media)
    make_media(media, args.smoke)
    srv = server.start(media)
    video_mb = os.path.getsize(os.path.join(media, "clip.mp4")) / 1e6
    opts = DownloadOptions(fetch=FetchPolicy(allow_private_addresses=True, retries=0), thread_count=THREADS)
    rows = []
    try:
        urls = [f"{srv.base_url}/clip.mp4?i={i}" for i in range(args.videos)]
        with open(os.path.join(work, "videos.txt"), "w") as f:
            f.write("".join(f"{u}\tclip {i}\n" for i, u in enumerate(urls)))
        from curate import engine

        engine.init()  # Ray start-up (~5 s) is a one-off per process, not per-item cost: keep it out
        img_urls = [f"{srv.base_url}/img.jpg?i={i}" for i in range(args.images)]
        with open(os.path.join(work, "images.txt"), "w") as f:
            f.write("\n".join(img_urls) + "\n")
        best = {"bare": [], "ours_v": [], "i2d": [], "ours_i": []}
        for rep in range(args.repeats):  # interleaved, best of N: both sides see the same machine state
            for name in ("bare", "ours_i", "i2d", "ours_v"):
                target = os.path.join(work, f"{name}{rep}")
                if name == "bare":
                    os.makedirs(target)
                    best[name].append(timed(lambda: bare_fetch(urls, target)))
                elif name == "ours_v":
                    best[name].append(timed(lambda: download("urls", os.path.join(work, "videos.txt"), target,
                                                             options=opts, shard_size=max(1, args.videos // 2))))
                elif name == "i2d":
                    best[name].append(timed(lambda: img2dataset_alone(os.path.join(work, "images.txt"), target,
                                                                      args.images)))
                else:
                    best[name].append(timed(lambda: download("urls", os.path.join(work, "images.txt"), target,
                                                             options=opts, shard_size=args.images)))
                if name != "bare":
                    shutil.rmtree(target, ignore_errors=True)
        t_bare, t_ours, t_i2d, t_wrap = (min(best[k]) for k in ("bare", "ours_v", "i2d", "ours_i"))
        n = args.videos
        rows.append(("video", f"bare urllib fetch loop, {THREADS} threads", n / t_bare, n * video_mb / t_bare, 1.0))
        rows.append(("video", "curate download (fetch+probe+shard)", n / t_ours, n * video_mb / t_ours, t_bare / t_ours))
        n = args.images
        rows.append(("image", "img2dataset alone (1 process, 64 threads)", n / t_i2d, None, 1.0))
        rows.append(("image", "curate download (img2dataset wrapped)", n / t_wrap, None, t_i2d / t_wrap))
    finally:
        srv.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nloopback, {os.cpu_count()} cores; video {video_mb:.2f} MB each ({args.videos}), images {args.images}, "
          f"best of {args.repeats} interleaved runs\n")
    print("| path | runner | items/s | MB/s | ratio to peer |\n|---|---|---|---|---|")
    for path, name, ips, mbps, ratio in rows:
        print(f"| {path} | {name} | {ips:.1f} | {'' if mbps is None else f'{mbps:.1f}'} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
