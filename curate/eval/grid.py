"""Sample grids (the paper's Fig. 1): checkpoints or generated folders as columns, prompts as rows, one seed
per row, labels drawn above the cells, written as .mp4 or .gif.

A checkpoint column is sampled by the generate stage (the one sampling loop: a GPU actor when the cluster has GPUs,
resumable, refused when its settings change unless forced) into a generated folder beside the grid; every
column then takes the video of the row's prompt text and seed from its folder. Row i's seed is `seed + i` (what
`generate` gives prompt i with per_prompt=1), unless a folder column holds the prompt: then its lowest seed for
that prompt, so every cell of a row shares one seed. Cells are scaled up by a whole factor (nearest neighbour) to
at least `min_cell` pixels, so each cell is its video's pixels repeated and labels stay legible on tiny models.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from curate.media.video_frames import decode_frames
from curate.shards import reader
from curate.shards.folder import DatasetFolder
from curate.train.sampler_options import SamplerOptions

LABEL_HEIGHT = 14  # px: one line of PIL's default font
GAP = 2  # px between cells
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


@dataclass(frozen=True)
class Layout:
    rows: int
    columns: int
    cell_height: int  # of the source videos
    cell_width: int
    scale: int

    @property
    def width(self) -> int:
        return self.columns * self.cell_width * self.scale + (self.columns + 1) * GAP

    @property
    def height(self) -> int:
        return LABEL_HEIGHT + self.rows * (LABEL_HEIGHT + self.cell_height * self.scale + GAP) + GAP

    def cell_origin(self, row: int, column: int) -> tuple[int, int]:
        """(top, left) pixel of cell (row, column) in a grid frame."""
        top = LABEL_HEIGHT + row * (LABEL_HEIGHT + self.cell_height * self.scale + GAP) + LABEL_HEIGHT
        return top, GAP + column * (self.cell_width * self.scale + GAP)

    def column_label_box(self, column: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of a column's label band."""
        left = GAP + column * (self.cell_width * self.scale + GAP)
        return 0, left, LABEL_HEIGHT, left + self.cell_width * self.scale

    def row_label_box(self, row: int) -> tuple[int, int, int, int]:
        top = self.cell_origin(row, 0)[0] - LABEL_HEIGHT
        return top, 0, top + LABEL_HEIGHT, self.width


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
    """The text, cut with an ellipsis until it fits in `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..." if text else ""


def compose(cells: list[list[np.ndarray]], column_labels: list[str], row_labels: list[str],
            min_cell: int = 128) -> tuple[np.ndarray, Layout]:
    """Grid frames uint8 [T, H, W, 3] from cells[row][column] (uint8 [T_i, h, w, 3], all the same h x w; a
    shorter video holds its last frame) and the layout that places them."""
    heights = {c.shape[1:3] for row in cells for c in row}
    if len(heights) != 1:
        raise ValueError(f"grid cells differ in size: {sorted(heights)}; sample every column at one size")
    (h, w), = heights
    layout = Layout(len(cells), len(cells[0]), h, w, max(1, math.ceil(min_cell / max(h, w))))
    frames = max(c.shape[0] for row in cells for c in row)
    base = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw, font = ImageDraw.Draw(base), ImageFont.load_default()
    for c, label in enumerate(column_labels):
        top, left, _, right = layout.column_label_box(c)
        draw.text((left + 1, top + 1), _fit(draw, label, right - left - 2, font), fill=INK, font=font)
    for r, label in enumerate(row_labels):
        top, left, _, right = layout.row_label_box(r)
        draw.text((left + GAP, top + 1), _fit(draw, label, right - left - 2 * GAP, font), fill=INK, font=font)
    out = np.repeat(np.asarray(base)[None], frames, axis=0)
    k = layout.scale
    for r, row in enumerate(cells):
        for c, video in enumerate(row):
            held = np.concatenate([video, np.repeat(video[-1:], frames - len(video), axis=0)])
            top, left = layout.cell_origin(r, c)
            out[:, top : top + h * k, left : left + w * k] = held.repeat(k, axis=1).repeat(k, axis=2)
    return out, layout


def is_generated_folder(path: str) -> bool:
    return bool(DatasetFolder(str(path)).complete_shards())


def folder_videos(root: str) -> dict[str, list[tuple[int, str, str]]]:
    """{prompt text: [(seed, shard, key), ...] sorted by seed} of a generated folder's success rows."""
    found = {}
    for sid in DatasetFolder(root).complete_shards():
        if "seed" not in reader.manifest_columns(root, sid):
            raise ValueError(f"{root}: not a generated folder (its manifest has no seed column)")
        for row in reader.manifest_rows(root, sid, ["caption", "seed"]):
            found.setdefault(row["caption"] or "", []).append((int(row["seed"]), sid, row["key"]))
    return {text: sorted(videos) for text, videos in found.items()}


def read_video(root: str, shard: str, key: str) -> np.ndarray:
    """Every decoded RGB frame uint8 [T, H, W, 3] of a sample's video in a shard."""
    found = reader.read_media(root, shard, key)
    if found is None:
        raise FileNotFoundError(f"{root}: shard {shard} has no media for {key}")
    return decode_frames(found[1], lambda count: list(range(count)))


def read_prompt_list(prompts) -> list[str]:
    """A list of prompts as given, or a prompt file's non-empty lines."""
    if isinstance(prompts, (str, os.PathLike)):
        with open(prompts, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    return [str(p) for p in prompts]


def label_of(path: str) -> str:
    from curate.eval.generate import checkpoint_label
    from curate.train.sample import resolve_source

    if is_generated_folder(path):
        return os.path.basename(os.path.normpath(path))
    return checkpoint_label(resolve_source(path))


def sample_column(checkpoint: str, texts: list[str], seeds: list[int], options: SamplerOptions, videos: str,
                  force: bool = False, address: str | None = None) -> tuple[str, dict]:
    """A checkpoint's column sampled through the generate stage (row i: prompt i with seed i) into
    VIDEOS/<label>/; returns the folder and generate's summary. A rerun samples nothing again; other prompts,
    seeds or sampler settings are refused unless `force`."""
    from curate.atomic import publish
    from curate.eval.generate import GenerateOptions, generate

    os.makedirs(videos, exist_ok=True)
    prompts = os.path.join(videos, "prompts.txt")
    with open(prompts + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(f"{text}\n" for text in texts)
    publish(prompts + ".tmp", prompts)
    folder = os.path.join(videos, label_of(checkpoint))
    summary = generate(checkpoint, prompts, folder, GenerateOptions(sampler=options), seeds=seeds, force=force,
                       address=address)
    return folder, summary


def grid_frames(inputs: list[str], prompts, options: SamplerOptions = SamplerOptions(), *, seed: int = 0,
                labels: list[str] | None = None, min_cell: int = 128, videos: str | None = None, force: bool = False,
                address: str | None = None) -> tuple[np.ndarray, Layout, list[int], list[str], dict]:
    """(grid frames uint8 [T,H,W,3], layout, seed per row, column labels, generate's summary per sampled column) of
    `inputs` (checkpoint files, run folders, videocrafter2:PATH or generated folders) x `prompts` (a list or a
    prompt file). Checkpoint columns are sampled by the generate stage into VIDEOS/<label>/ first."""
    texts = read_prompt_list(prompts)
    if not inputs or not texts:
        raise ValueError("a grid needs at least one input and one prompt")
    inputs = [str(i) for i in inputs]
    labels = list(labels) if labels else [label_of(i) for i in inputs]
    if len(labels) != len(inputs):
        raise ValueError(f"{len(labels)} labels for {len(inputs)} inputs")
    folders = {i: folder_videos(i) for i in inputs if is_generated_folder(i)}
    checkpoints = [i for i in inputs if i not in folders]
    if checkpoints and videos is None:
        raise ValueError("checkpoint columns are sampled into a folder first: give `videos`")
    if len({label_of(c) for c in checkpoints}) != len(checkpoints):
        raise ValueError(f"checkpoint columns share a label: {[label_of(c) for c in checkpoints]}")
    seeds = []
    for r, text in enumerate(texts):
        held = [found[text][0][0] for found in folders.values() if found.get(text)]
        seeds.append(held[0] if held else seed + r)
    sampled, where = {}, {i: i for i in folders}
    for path in checkpoints:
        where[path], sampled[labels[inputs.index(path)]] = sample_column(path, texts, seeds, options, videos, force,
                                                                          address)
        folders[path] = folder_videos(where[path])
    columns = []
    for path in inputs:
        column = []
        for text, row_seed in zip(texts, seeds):
            match = [(s, sid, key) for s, sid, key in folders[path].get(text, []) if s == row_seed]
            if not match:
                raise ValueError(f"{path} has no video of prompt {text!r} with seed {row_seed}")
            column.append(read_video(where[path], match[0][1], match[0][2]))
        columns.append(column)
    cells = [[columns[c][r] for c in range(len(inputs))] for r in range(len(texts))]
    video, layout = compose(cells, labels, [f"{t}  (seed {s})" for t, s in zip(texts, seeds)], min_cell)
    return video, layout, seeds, labels, sampled


def grid(inputs: list[str], prompts, out: str = "grid.mp4", options: SamplerOptions = SamplerOptions(), *,
         videos: str | None = None, **placement) -> dict:
    """Write the grid of `inputs` x `prompts` (placement: grid_frames' seed, labels, min_cell, force, address) to
    `out` (.mp4 or .gif, at the options' save_fps, else fps, else 8); checkpoint columns are sampled through the
    generate stage into `videos` (default: OUT without its suffix + _videos/, one folder per checkpoint, kept so
    a rerun samples nothing again). Returns where, the seed of each row, the layout and what was sampled."""
    import torch

    from curate.train.sample import write_video

    stem, suffix = os.path.splitext(str(out))
    if suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"grid output must end in .mp4 or .gif, got {out}")
    video, layout, seeds, labels, sampled = grid_frames(inputs, prompts, options, videos=videos or f"{stem}_videos",
                                                        **placement)
    write_video(torch.from_numpy(video), out, options.save_fps or options.fps or 8.0)
    return {"out": str(out), "rows": layout.rows, "columns": labels, "seeds": seeds, "frames": int(video.shape[0]),
            "size": [layout.width, layout.height], "scale": layout.scale,
            "sampled": {label: {"out": s["out"], "ran": s["ran"], "skipped_shards": s["skipped_shards"]}
                        for label, s in sampled.items()}}
