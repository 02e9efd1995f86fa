"""The generate stage: a checkpoint + prompts -> a dataset folder of generated videos (mp4 + manifest rows).

Prompts come from a text file (one per line, keys p00000..) or from a dataset folder's captions (keys = the
rows' keys). A row whose `extra` lists several captions (MSR-VTT: `all_captions`, 20 per video) gets one of
them, picked by a random generator seeded with (caption_seed, key) — the usual protocol, independent of row
order — and the pick is recorded in the row's `extra`. Prompt i's j-th video uses seed `seed + i*per_prompt + j`.

Units are output shards of `shard_size` videos; the sampler (model weights) loads once per actor, one actor per
GPU when the cluster has GPUs, else one on CPU. A sample that fails is a row (status failed_to_generate) and a
rerun redoes its shard; otherwise a rerun skips complete shards. Provenance records the checkpoint (path,
sha256), the prompts' fingerprint, seeds and sampler settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


from curate import engine, storage
from curate.config import FLATTEN, option_help
from curate.media.digest import sha256_file
from curate.shards import reader
from curate.shards.folder import DatasetFolder, shard_id
from curate.stage import Resources, Stage
from curate.train.sampler_options import SamplerOptions

SOURCE = "generate"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")



@dataclass
class GenerateOptions:
    """Prompt, seed and sampler settings: the `generate:` section of an eval recipe and the flags of `curate generate`
    (the sampler's keys sit at the section's level)."""

    per_prompt: int = field(default=1, metadata=option_help("Videos per prompt (seeds seed + i*per_prompt + j).", min=1))
    seed: int = field(default=0, metadata=option_help("Base seed."))
    caption_seed: int = field(default=0, metadata=option_help(
        "Seed that picks one caption per dataset row when it lists several (MSR-VTT: 20)."))
    max_prompts: int | None = field(default=None, metadata=option_help("Only the first N prompts.", min=1))
    shard_size: int = field(default=64, metadata=option_help("Videos per output shard (the unit of resume).", min=1))
    actors: int | None = field(default=None, metadata=option_help("Sampler actors (default: one per GPU, else 1).", min=1))
    sampler: SamplerOptions = field(default_factory=SamplerOptions, metadata=FLATTEN)


@dataclass(frozen=True)
class Prompt:
    key: str
    text: str
    extra: dict


def _safe(key: str) -> str:
    clean = _UNSAFE.sub("_", key)
    return clean if clean == key and len(key) <= 100 else f"{clean[:90]}_{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def pick_caption(key: str, captions: list[str], caption_seed: int) -> int:
    """Index of the caption used for row `key`: a generator seeded by (caption_seed, key), so the pick does not
    depend on row order or on which other rows exist."""
    return random.Random(f"{caption_seed}:{key}").randrange(len(captions))


def read_prompts(source: str, caption_seed: int = 0, limit: int | None = None) -> list[Prompt]:
    """Prompts of a text file (one per non-empty line) or of a dataset folder's success rows, in order."""
    prompts: list[Prompt] = []
    if storage.isdir(source):
        if not DatasetFolder(source).complete_shards():
            raise FileNotFoundError(f"{source} is neither a prompt file nor a dataset folder with complete shards")
        dataset = storage.absolute(source)
        for row in reader.success_rows(source, ["caption", "extra"]):
            extra = json.loads(row["extra"]) if row.get("extra") else {}
            captions = extra.get("all_captions") if isinstance(extra, dict) else None
            if isinstance(captions, list) and len(captions) > 1:
                index = pick_caption(row["key"], captions, caption_seed)
                text = str(captions[index])
                info = {"dataset": dataset, "caption_index": index, "captions": len(captions),
                        "caption_seed": caption_seed}
            else:
                text, info = row.get("caption") or "", {"dataset": dataset}
            prompts.append(Prompt(_safe(row["key"]), text, info))
    elif os.path.isfile(source):
        with open(source, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
        prompts = [Prompt(f"p{i:05d}", text, {"prompt_file": os.path.abspath(source), "line": n + 1})
                   for i, (n, text) in enumerate((n, t) for n, t in enumerate(lines) if t)]
    else:
        raise FileNotFoundError(f"prompts not found: {source} (a text file, one prompt per line, or a dataset folder)")
    if not prompts:
        raise ValueError(f"{source}: no prompts")
    return prompts[:limit] if limit else prompts


def plan(prompts: list[Prompt], options: GenerateOptions, seeds: list[int] | None = None) -> list[dict]:
    """One item per video to generate: row number, key, prompt and seed (`seeds`: prompt i's one video has seed
    seeds[i], for a grid whose rows hold other folders' seeds)."""
    if seeds is not None and (len(seeds) != len(prompts) or options.per_prompt != 1):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts (one each, with per_prompt 1)")
    items = []
    for i, prompt in enumerate(prompts):
        for j in range(options.per_prompt):
            seed = options.seed + i * options.per_prompt + j if seeds is None else int(seeds[i])
            items.append({"row": len(items), "key": f"{prompt.key}_s{seed}", "prompt_key": prompt.key,
                          "caption": prompt.text, "seed": seed, "extra": json.dumps(prompt.extra, sort_keys=True)})
    return items


def checkpoint_label(path: str | Path) -> str:
    """A short name for a checkpoint: RUN-step50 for RUN/checkpoints/step_00000050.pt, the model's name for a
    released one (videocrafter2:PATH), else the file's stem."""
    name, sep, _ = str(path).partition(":")
    if sep and not storage.is_remote(str(path)) and "/" not in name:
        return name
    path = Path(path)
    found = re.match(r"^step_(\d+)\.pt$", path.name)
    if found and path.parent.name == "checkpoints":
        return f"{path.parent.parent.name}-step{int(found.group(1))}"
    return path.stem


def video_facts(path: str) -> dict:
    """Geometry, rate and frame count of a video we encoded, from its stream header (the probe's index
    timing reads short B-frame clips as a lower rate)."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        return {"width": stream.width, "height": stream.height, "fps": fps, "num_frames": stream.frames,
                "duration": stream.frames / fps, "codec": stream.codec_context.name}


class GenerateModel:
    """The actor: loads the model once (on the GPU Ray granted it, if any: a granted GPU that torch cannot use
    stops the actor with the reason), then turns rows into mp4 bytes."""

    def __init__(self, checkpoint: str, sampler: SamplerOptions):
        from curate import device
        from curate.train.sample import VideoSampler

        self.sampler = VideoSampler(checkpoint, device.for_actor())
        self.step = self.sampler.step
        self.options = self.sampler.options(sampler)

    def __call__(self, rows: list[dict]) -> list[dict]:
        from curate.train.sample import write_video

        out = []
        for row in rows:
            try:
                video = self.sampler.sample(row["caption"], self.options, int(row["seed"]))
                with tempfile.TemporaryDirectory() as work:
                    path = write_video(video, os.path.join(work, "video.mp4"), self.options.save_fps)
                    media = path.read_bytes()
                error = None
            except Exception as exc:  # noqa: BLE001 - one prompt's failure is that row's status, not the shard's
                media, error = None, f"{type(exc).__name__}: {exc}"
            out.append({"unit": row["unit"], "row": row["row"], "media": media, "error": error,
                        "checkpoint_step": self.step, "sampler": json.dumps(self.options.record(), sort_keys=True)})
        return out


@dataclass
class GenerateStage(Stage):
    """Videos of every (prompt, seed) from one checkpoint -> dataset folder `out`, shard by shard."""

    checkpoint: str
    prompts: str
    out: str
    options: GenerateOptions = field(default_factory=GenerateOptions)
    seeds: list[int] | None = None  # one per prompt instead of the options' rule (grids)

    name = "generate"

    def __post_init__(self):
        from curate.train.sample import resolve_source

        self.checkpoint = resolve_source(self.checkpoint)
        self.out = os.path.abspath(self.out)
        self.folder = DatasetFolder(self.out)
        self.inputs = (self.checkpoint, self.prompts)
        self.outputs = (self.out,)
        self.scratch_dirs = (self.folder.work_dir,)
        self.resources = Resources(actors=self.options.actors or 0, gpus_per_actor=1.0, batch_size=1)
        self.items = plan(read_prompts(self.prompts, self.options.caption_seed, self.options.max_prompts), self.options,
                          self.seeds)
        size = self.options.shard_size
        self.units = {shard_id(n): self.items[start:start + size] for n, start in enumerate(range(0, len(self.items), size))}
        self._checkpoint_sha256: str | None = None

    @property
    def checkpoint_sha256(self) -> str:
        if self._checkpoint_sha256 is None:
            from curate.train.sample import source_file

            self._checkpoint_sha256 = sha256_file(source_file(self.checkpoint))
        return self._checkpoint_sha256

    @property
    def provenance_path(self) -> str:
        return self.folder.provenance_path

    def config(self) -> dict:
        o = self.options
        config = {"sampler": o.sampler.record(), "seed": o.seed, "per_prompt": o.per_prompt,
                  "caption_seed": o.caption_seed, "max_prompts": o.max_prompts, "shard_size": o.shard_size,
                  "checkpoint_sha256": self.checkpoint_sha256}
        return config if self.seeds is None else dict(config, seeds=[int(s) for s in self.seeds])

    def fingerprint(self) -> str:
        text = json.dumps([[i["key"], i["caption"], i["seed"]] for i in self.items])
        return hashlib.sha256(text.encode()).hexdigest()

    def check(self) -> None:
        from curate.train.sample import check_source

        check_source(self.checkpoint)  # a model that loads, before any work

    def reset(self) -> None:
        shutil.rmtree(self.out, ignore_errors=True)

    def record(self) -> dict:
        return {"checkpoint": self.checkpoint, "checkpoint_sha256": self.checkpoint_sha256,
                "prompts": os.path.abspath(self.prompts), "videos": len(self.items),
                "seeds": {"base": self.options.seed, "rule": "seed + prompt_index * per_prompt + j"} if self.seeds is None
                else {"rule": "one given seed per prompt", "seeds": [int(s) for s in self.seeds]}}

    def describe(self) -> list[str]:
        o, s = self.options, self.options.sampler
        frames = "the model's default number of" if s.frames is None else s.frames
        return super().describe() + [f"  {len(self.items)} videos ({o.per_prompt} per prompt) of {frames} frames, "
                                     f"DDIM {s.steps} steps, guidance {s.guidance:g}, eta {s.eta:g}"]

    def todo(self) -> list[str]:
        """Shards not written yet, and shards with failed rows (out of memory, a lost GPU...): sampling is
        deterministic, so a rerun that succeeds gives the videos a first run would have."""
        done = set(self.folder.complete_shards())
        return [sid for sid in self.units if sid not in done or
                reader.manifest_rows(self.out, sid, [], status="failed_to_generate")]

    def expand(self, unit: str) -> list[dict]:
        return [{"unit": unit, "row": item["row"], "caption": item["caption"], "seed": item["seed"]}
                for item in self.units[unit]]

    def expected_rows(self, unit: str) -> int:
        return len(self.units[unit])

    def model(self):
        return GenerateModel, {"checkpoint": self.checkpoint, "sampler": self.options.sampler}

    def write(self, unit: str, rows: list[dict]) -> None:
        from curate.shards.writer import build_shard

        results = {r["row"]: r for r in rows}
        o = self.options.sampler
        common = {"source": SOURCE, "modality": "video", "checkpoint": self.checkpoint,
                  "checkpoint_sha256": self.checkpoint_sha256, "sample_steps": o.steps, "guidance": o.guidance,
                  "eta": o.eta}

        def body(work: str, writer) -> None:
            for item in self.units[unit]:
                result = results[item["row"]]
                used = json.loads(result["sampler"])  # the options with the model's defaults filled in
                extra = dict(json.loads(item["extra"]), fps_condition=used["fps"], sampler=used)
                row = dict(common, row=item["row"], key=item["key"], caption=item["caption"], seed=item["seed"],
                           prompt_key=item["prompt_key"], checkpoint_step=result["checkpoint_step"],
                           extra=json.dumps(extra, sort_keys=True))
                if result["media"] is None:
                    writer.add(dict(row, status="failed_to_generate", error_reason="generation_error",
                                    error_message=result["error"]))
                    continue
                path = os.path.join(work, f"{item['key']}.mp4")
                with open(path, "wb") as f:
                    f.write(result["media"])
                writer.add(dict(row, status="success", **video_facts(path), size_bytes=os.path.getsize(path),
                                sha256=sha256_file(path)), path, "mp4")

        build_shard(self.out, unit, body)

    def finish(self, done: list, failures: list) -> dict:
        summary = super().finish(done, failures)
        summary.update(out=self.out, videos=len(self.items), shards=len(self.units),
                       skipped_shards=len(self.units) - len(done), checkpoint=self.checkpoint)
        return summary


def generate(checkpoint: str, prompts: str, out: str, options: GenerateOptions | None = None, *,
             seeds: list[int] | None = None, force: bool = False, address: str | None = None) -> dict:
    """Generate videos for every prompt into dataset folder `out` (checkpoint: ours, a run folder or
    videocrafter2:PATH); resumable per shard; a rerun with another checkpoint, prompts or settings is refused
    unless `force`. `seeds`: one per prompt, instead of the options' seed rule."""
    stage = GenerateStage(str(checkpoint), str(prompts), str(out), options or GenerateOptions(), seeds)
    return engine.run_stage(stage, force=force, address=address)

