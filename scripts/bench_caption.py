"""Caption-stage throughput: `curate caption` (the stage on Ray: shard reads, isolated frame decoding, retries,
tables) vs a bare asyncio + aiohttp loop posting the same requests, side by side against one loopback chat server
(curate.demo.chat_server, in its own process) that answers after a fixed latency.

The bare loop gets its request bodies built before the clock starts (frames decoded and JPEG-encoded ahead), so
it is the ceiling a client can reach at that concurrency; a second bare loop decodes each clip in a thread first
(what a hand-written script would do). The stage's captions/s include everything it does per sample, Ray task
and decoder start-up included. Reported: captions/s of each and the ratios (goal >= 0.9 of the first).

usage: python scripts/bench_caption.py [--samples 2000] [--shards 4] [--latency 0.5] [--concurrency 32] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import tempfile
import time

import numpy as np

from curate import engine
from curate.caption.client import chat_request, chat_url
from curate.caption.frames import caption_frames
from curate.caption.stage import caption
from curate.config import CaptionSection
from curate.demo.corpus import COLORS
from curate.media.transcode import write_mp4
from curate.shards.folder import DatasetFolder, shard_id
from curate.shards.writer import ShardWriter

PROMPT = "Describe this clip in one factual paragraph."


def serve(port_out, latency: float) -> None:
    from curate.demo.chat_server import ChatServer

    server = ChatServer(latency_s=latency, from_pixels=False)
    port_out.put(server.server_address[1])
    server.serve_forever()


def build(root: str, samples: int, shards: int) -> list[bytes]:
    """A dataset folder of small coloured clips (four distinct files, stored `samples` times); returns the four
    clips' bytes (sample n holds clip n % 4)."""
    names = list(COLORS)
    work = os.path.join(root, "media")
    os.makedirs(work)
    clips = []
    for i in range(4):
        path = os.path.join(work, f"c{i}.mp4")
        frames = [np.full((64, 96, 3), COLORS[names[(i + j // 4) % len(names)]], np.uint8) for j in range(16)]
        write_mp4(path, frames)
        clips.append(path)
    per_shard = -(-samples // shards)
    media = []
    for s in range(shards):
        writer = ShardWriter(DatasetFolder(os.path.join(root, "ds")), shard_id(s))
        for n in range(s * per_shard, min(samples, (s + 1) * per_shard)):
            writer.add({"key": f"k{n:06d}", "row": n, "source": "urls", "modality": "video", "caption": "",
                        "status": "success", "sha256": f"d{n}", "extra": "{}"}, clips[n % len(clips)], "mp4")
        writer.close()
    return [open(path, "rb").read() for path in clips]


async def bare_loop(url: str, bodies: list, concurrency: int) -> int:
    """The hand-written baseline: `concurrency` coroutines posting bodies over one aiohttp session. A body is
    prebuilt bytes, or a clip's bytes to decode and encode first (in the default thread pool, as one would)."""
    import aiohttp

    queue = list(reversed(bodies))
    done = 0

    async def worker(session):
        nonlocal done
        while queue:
            body = queue.pop()
            if isinstance(body, tuple):
                frames = await asyncio.to_thread(caption_frames, body[0], "video", body[1], 768)
                body = chat_request("bench", PROMPT, frames, 300)
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                answer = await resp.json()
                done += bool(answer["choices"][0]["message"]["content"])

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.5, help="Seconds the server takes per answer.")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="Tiny sizes, for the test suite.")
    args = parser.parse_args()
    if args.smoke:
        args.samples, args.shards, args.latency, args.concurrency = 24, 2, 0.05, 8
    ports = multiprocessing.get_context("spawn").Queue()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(ports, args.latency), daemon=True)
    server.start()
    endpoint = f"http://127.0.0.1:{ports.get(timeout=60)}/v1"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            media = build(tmp, args.samples, args.shards)
            distinct = [chat_request("bench", PROMPT, caption_frames(m, "video", args.frames, 768), 300) for m in media]
            bodies = [distinct[n % len(distinct)] for n in range(args.samples)]
            engine.init()
            began = time.perf_counter()
            answered = asyncio.run(bare_loop(chat_url(endpoint), bodies, args.concurrency))
            bare = answered / (time.perf_counter() - began)
            clips = [(media[n % len(media)], args.frames) for n in range(args.samples)]
            began = time.perf_counter()
            decoding = asyncio.run(bare_loop(chat_url(endpoint), clips, args.concurrency))
            bare_decode = decoding / (time.perf_counter() - began)
            prompt = os.path.join(tmp, "prompt.txt")
            with open(prompt, "w") as f:
                f.write(PROMPT)
            section = CaptionSection(model="bench", endpoint=endpoint, name="bench", frames=args.frames,
                                     concurrency=args.concurrency, prompt_file=prompt)
            began = time.perf_counter()
            summary = caption(os.path.join(tmp, "ds"), section)
            stage = summary["captioned"] / (time.perf_counter() - began)
    finally:
        server.kill()
    if {answered, decoding, summary["captioned"]} != {args.samples}:
        raise SystemExit(f"expected {args.samples} captions, got bare {answered} / {decoding}, "
                         f"stage {summary['captioned']}")
    print(f"{args.samples} samples in {args.shards} shards, {args.frames} frames each, server latency "
          f"{args.latency:g} s, {args.concurrency} in flight (ideal {args.concurrency / args.latency:.0f}/s)")
    print(f"{'method':<44}{'captions/s':>12}")
    print(f"{'bare asyncio + aiohttp loop, prebuilt bodies':<44}{bare:>12.1f}")
    print(f"{'bare loop decoding in threads':<44}{bare_decode:>12.1f}")
    print(f"{'curate caption (stage)':<44}{stage:>12.1f}")
    print(f"ratio stage / bare: {stage / bare:.2f} (goal >= 0.9); stage / bare with decoding: {stage / bare_decode:.2f}")
    print(json.dumps({"bare_per_s": round(bare, 2), "bare_decode_per_s": round(bare_decode, 2),
                      "stage_per_s": round(stage, 2), "ratio": round(stage / bare, 3),
                      "ratio_vs_decoding": round(stage / bare_decode, 3)}))


if __name__ == "__main__":
    main()
