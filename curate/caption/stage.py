"""The caption stage: every success sample of a dataset folder -> its frames -> the model's answer -> one row of
captions/<run>/<shard>.parquet (a failure is a row with `error`, never a crash).

One table per shard, written whole and stamped with the shard content it covers (curate.shards.derived), so a
killed run redoes only shards without a table, and a shard whose content changed is captioned again. Two
backends answer, both as an Answer or a CaptionFailure per sample, into the same rows:
- openai: shard tasks each keep many chat requests in flight on one event loop while isolated children decode
  the next frames. The API key is read from the environment where the requests are made and goes nowhere else.
- hf: CPU tasks decode each shard's frames; actors (one GPU each when the cluster has GPUs) load the model once
  and caption batches (curate.caption.hf); the driver writes each shard's table once all its rows are back.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import re
import time
from dataclasses import dataclass


from curate import engine, schema, storage
from curate.caption.client import Answer, CaptionFailure, ChatClient, RetryPolicy, chat_request, chat_url
from curate.caption.frames import FrameDecodeFailed, shared_pool
from curate.caption.hf import HFCaptioner, model_folder, weights_sha256
from curate.config import CaptionSection, ConfigError
from curate.shards.derived import shard_content, stale_shards, write_table
from curate.shards.folder import DatasetFolder
from curate.shards.reader import ShardSample, samples
from curate.stage import Resources, Stage

RUN_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
SHARDS_IN_FLIGHT = 2  # one shard's last requests overlap the next shard's first ones
DECODERS_PER_SHARD = 2  # isolated decoder children per shard task: decoding stays ahead of the requests


def run_name(section: CaptionSection) -> str:
    """The caption run's name: --name, else the model's last path part made an identifier."""
    if section.name is not None:
        if not RUN_NAME.match(section.name):
            raise ConfigError(f"--name {section.name!r}: use lowercase letters, digits and _ (starting with a letter)")
        return section.name
    base = re.sub(r"[^a-z0-9]+", "_", section.model.rstrip("/").rsplit("/", 1)[-1].lower()).strip("_")
    return (base if base[:1].isalpha() else f"m_{base}")[:63]


def captions_dir(root: str, run: str) -> str:
    return storage.join(root, "captions", run)


def prompt_sha256(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def caption_row(key: str, common: dict, *, caption: str | None = None, error: str | None = None, frames: int = 0,
                prompt_tokens: int | None = None, completion_tokens: int | None = None,
                finish_reason: str | None = None, attempts: int = 0) -> dict:
    return dict(common, key=key, caption=caption, error=error, frames=frames, prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens, finish_reason=finish_reason, attempts=attempts)


def answer_row(key: str, common: dict, frames: int, result: Answer | CaptionFailure) -> dict:
    """The row of a sample whose frames reached the model (either backend)."""
    if isinstance(result, CaptionFailure):
        return caption_row(key, common, error=f"{result.reason}: {result}", frames=frames, attempts=result.attempts)
    return caption_row(key, common, caption=result.text, frames=frames, prompt_tokens=result.prompt_tokens,
                       completion_tokens=result.completion_tokens, finish_reason=result.finish_reason,
                       attempts=result.attempts)


def shard_summary(unit: str, rows: list[dict]) -> dict:
    return {"shard": unit, "captioned": sum(r["error"] is None for r in rows),
            "failed": sum(r["error"] is not None for r in rows),
            "prompt_tokens": sum(r["prompt_tokens"] or 0 for r in rows),
            "completion_tokens": sum(r["completion_tokens"] or 0 for r in rows)}


async def for_each_sample(stream, work, concurrency: int) -> list[dict]:
    """`work(sample)` for every sample of the (blocking) iterator `stream`, `concurrency` at a time, as rows;
    at most `concurrency` samples are held at once. A RunDeadline stops the shard."""
    rows: list[dict] = []
    lock = asyncio.Lock()

    async def worker():
        while True:
            async with lock:  # the tar is read in order, one member at a time, off the event loop
                sample = await asyncio.to_thread(next, stream, None)
            if sample is None:
                return
            rows.append(await work(sample))

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())
    except* Exception as errors:  # the first cause, not a group: a RunDeadline, or what broke the shard read
        raise errors.exceptions[0] from None
    return rows


async def frames_or_error(pool, sample: ShardSample) -> list[bytes] | str:
    """A sample's JPEG frames, or the error row text of a sample that has none (no media, undecodable)."""
    if sample.media is None:
        return "missing_media: the shard's tar has no media"
    try:
        return await pool.frames(sample.media, sample.row["modality"])
    except FrameDecodeFailed as error:
        return f"decode_error: {error}"


class CaptionModel:
    """The hf backend's actor: loads the model once (on the GPU Ray granted it, else the CPU), then captions
    batches of decoded samples; a sample whose frames failed passes through as its failure row."""

    def __init__(self, folder: str, prompt: str, max_tokens: int, common: dict):
        from curate.device import for_actor

        self.captioner = HFCaptioner(folder, prompt, max_tokens, for_actor())
        self.common = common

    def __call__(self, rows: list[dict]) -> list[dict]:
        ready = [i for i, r in enumerate(rows) if r["error"] is None]
        answers = dict(zip(ready, self.captioner.answer([rows[i]["jpegs"] for i in ready]) if ready else []))
        out = [dict(answer_row(r["key"], self.common, len(r["jpegs"]), answers[i]) if i in answers
                    else caption_row(r["key"], self.common, error=r["error"]), unit=r["unit"])
               for i, r in enumerate(rows)]
        return out


@dataclass
class CaptionStage(Stage):
    """Captions from a vision-language model for every success sample, one table per shard: an OpenAI-compatible
    chat endpoint (tasks), or a Hugging Face model in-process (actors)."""

    root: str
    section: CaptionSection

    name = "caption"

    def __post_init__(self):
        self.root = storage.absolute(self.root)
        self.folder = DatasetFolder(self.root)
        self.run = run_name(self.section)
        if self.section.endpoint:
            chat_url(self.section.endpoint)  # a malformed URL is refused before anything runs
        self.prompt = self.section.prompt()
        self.inputs = (self.folder.shards_dir,)
        self.outputs = (self.out_dir,)
        if self.uses_actors:
            self.resources = Resources(cpus=1, actors=self.section.actors or 0, gpus_per_actor=1.0,
                                       batch_size=self.section.batch_size)
        else:
            self.resources = Resources(cpus=1, units_in_flight=SHARDS_IN_FLIGHT)
        self.content: dict[str, tuple[str, int]] = {}
        self.summaries: dict[str, dict] = {}  # hf: per shard, as the driver writes it
        self.key_expected = False
        self.deadline: float | None = None  # epoch seconds: the bound on the whole run, set when it starts
        self.model_path: str | None = None  # hf: the model's folder, found by check()
        self.weights: dict[str, str] | None = None  # hf: SHA-256 per weight file

    @property
    def uses_actors(self) -> bool:
        return self.section.backend == "hf"

    @property
    def out_dir(self) -> str:
        return captions_dir(self.root, self.run)

    @property
    def provenance_path(self) -> str:
        return storage.join(self.out_dir, "_provenance.json")

    def describe(self) -> list[str]:
        s = self.section
        how = f"batches of {s.batch_size}" if self.uses_actors else f"{s.concurrency} requests in flight"
        return super().describe() + [f"  {s.model} ({s.backend}) on {s.frames} frame(s) per video, {how} "
                                     f"-> caption_{self.run}"]

    def config(self) -> dict:
        s = self.section
        config = {"backend": s.backend, "model": s.model, "prompt_sha256": prompt_sha256(self.prompt),
                  "frames": s.frames, "max_side": s.max_side, "max_tokens": s.max_tokens}
        if self.uses_actors:  # other weights under the same path are another model: a rerun is refused
            config["weights_sha256"] = self.model_weights()
        return config

    def model_weights(self) -> dict[str, str]:
        if self.weights is None:
            self.model_path = str(model_folder(self.section.model))
            self.weights = weights_sha256(self.model_path)
        return self.weights

    def record(self) -> dict:
        endpoint = chat_url(self.section.endpoint) if self.section.endpoint else None
        record = {"dataset": self.root, "run": self.run, "prompt": self.prompt, "endpoint": endpoint,
                  "column": f"caption_{self.run}"}
        if self.uses_actors:
            from importlib.metadata import version

            record.update(model_path=self.model_path, transformers=version("transformers"))
        return record

    def check(self) -> None:
        if not self.folder.complete_shards():
            raise FileNotFoundError(f"{self.root} has no complete shards to caption")
        if self.uses_actors:
            self.model_weights()  # the model's folder, family and weights, before anything is written
            return
        var = self.section.api_key_env
        if var != CaptionSection.api_key_env and not os.environ.get(var):
            raise ConfigError(f"--api-key-env {var}: that environment variable is not set")
        self.key_expected = bool(os.environ.get(var))  # the workers must see it too (only this flag travels)

    def reset(self) -> None:
        storage.remove(self.out_dir, recursive=True)

    def prepare(self) -> None:
        seconds = self.section.max_run_seconds
        self.deadline = time.time() + seconds if seconds else None

    def todo(self) -> list[str]:
        self.content = {sid: shard_content(self.folder.manifest(sid)) for sid in self.folder.complete_shards()}
        return sorted(stale_shards(self.out_dir, self.content))

    def common(self) -> dict:
        return {"model": self.section.model, "prompt_sha256": prompt_sha256(self.prompt)}

    def write(self, unit: str, rows: list[dict]) -> None:
        rows.sort(key=lambda r: r["key"])
        digest = self.content[unit][0] if unit in self.content else shard_content(self.folder.manifest(unit))[0]
        write_table(storage.join(self.out_dir, f"{unit}.parquet"), schema.table("captions", rows), digest)
        self.summaries[unit] = shard_summary(unit, rows)

    def process(self, unit: str) -> dict:  # openai: one task per shard
        if self.key_expected and not os.environ.get(self.section.api_key_env):
            raise RuntimeError(f"{self.section.api_key_env} is set where the run started but not on this Ray worker: "
                               "set it in the workers' environment")
        rows = asyncio.run(self._caption_shard(unit))
        self.write(unit, rows)
        return self.summaries[unit]

    async def _caption_shard(self, unit: str) -> list[dict]:
        s = self.section
        concurrency = max(1, math.ceil(s.concurrency / SHARDS_IN_FLIGHT))
        policy = RetryPolicy(retries=s.retries, timeout=s.timeout)
        common = self.common()
        pool = shared_pool(DECODERS_PER_SHARD, s.frames, s.max_side)
        async with ChatClient(s.endpoint, os.environ.get(s.api_key_env), policy, concurrency,
                              self.deadline) as client:

            async def one(sample: ShardSample) -> dict:
                frames = await frames_or_error(pool, sample)
                if isinstance(frames, str):
                    return caption_row(sample.key, common, error=frames)
                try:
                    result = await client.complete(chat_request(s.model, self.prompt, frames, s.max_tokens))
                except CaptionFailure as error:
                    result = error
                return answer_row(sample.key, common, len(frames), result)

            return await for_each_sample(samples(self.root, unit), one, concurrency)

    def expand(self, unit: str) -> list[dict]:  # hf: a CPU task decodes one shard's frames for the actors
        pool = shared_pool(DECODERS_PER_SHARD, self.section.frames, self.section.max_side)

        async def one(sample: ShardSample) -> dict:
            frames = await frames_or_error(pool, sample)
            failed = isinstance(frames, str)
            return {"unit": unit, "key": sample.key, "jpegs": [] if failed else frames,
                    "error": frames if failed else None}

        return asyncio.run(for_each_sample(samples(self.root, unit), one, DECODERS_PER_SHARD))

    def expected_rows(self, unit: str) -> int:
        return self.content[unit][1]

    def model(self) -> tuple[type, dict]:
        return CaptionModel, {"folder": self.model_path, "prompt": self.prompt, "max_tokens": self.section.max_tokens,
                              "common": self.common()}

    def finish(self, done: list, failures: list) -> dict:
        done = [self.summaries[unit] for unit in done] if self.uses_actors else done
        return {"run": self.run, "column": f"caption_{self.run}", "captioned_shards": len(done),
                "skipped_shards": len(self.content) - len(done) - len(failures),
                "captioned": sum(d["captioned"] for d in done), "failed_samples": sum(d["failed"] for d in done),
                "prompt_tokens": sum(d["prompt_tokens"] for d in done),
                "completion_tokens": sum(d["completion_tokens"] for d in done),
                "failed_shards": [{"shard": str(u), "error": e} for u, e in failures]}


def caption(root: str, section: CaptionSection, *, force: bool = False, address: str | None = None) -> dict:
    """Caption every success sample of the dataset folder into captions/<run>/; resumable per shard; refuses a
    run whose model, prompt or frame settings changed unless `force`."""
    return engine.run_stage(CaptionStage(root, section), force=force, address=address)
