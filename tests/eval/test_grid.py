"""Sample grids: cell placement and labels on synthetic cells; on a tiny run, checkpoint cells are sampled through
the generate stage (the sampler's video of that prompt and seed; a rerun samples nothing, other seeds are refused
unless forced), folder cells equal the generated folder's video, and the written file's size."""

from __future__ import annotations

import io
import tarfile

import av
import numpy as np
import pytest
from PIL import Image
from tiny_run import tiny_run

from curate.eval.generate import GenerateOptions, generate
from curate.eval.grid import BACKGROUND, GAP, compose, grid, grid_frames
from curate.train.sample import SamplerOptions, VideoSampler, write_video

SAMPLER = SamplerOptions(frames=3, steps=2, guidance=4.0)
PROMPTS = ["a red square", "a blue square"]


def cell(video: np.ndarray, layout, r: int, c: int) -> np.ndarray:
    """The cell's pixels at the source resolution (every scale-th pixel of its block)."""
    top, left = layout.cell_origin(r, c)
    k = layout.scale
    block = video[:, top : top + layout.cell_height * k, left : left + layout.cell_width * k]
    return block[:, ::k, ::k]


def ink(video: np.ndarray, box) -> int:
    top, left, bottom, right = box
    return int((video[0, top:bottom, left:right] != BACKGROUND).any(axis=-1).sum())


def test_compose_places_every_cell_scaled_with_labels():
    rng = np.random.default_rng(0)
    cells = [[rng.integers(0, 256, (t, 12, 20, 3), dtype=np.uint8) for t in (4, 2, 4)] for _ in range(2)]
    video, layout = compose(cells, ["ckpt-a", "ckpt-b", "ckpt-c"], ["first prompt", "second prompt"], min_cell=64)
    assert layout.scale == 4 and (layout.rows, layout.columns) == (2, 3)
    assert video.shape == (4, layout.height, layout.width, 3)
    assert layout.width == 3 * 20 * 4 + 4 * GAP
    for r in range(2):
        for c in range(3):
            source = cells[r][c]
            held = np.concatenate([source, np.repeat(source[-1:], 4 - len(source), axis=0)])  # shorter: last frame held
            assert np.array_equal(cell(video, layout, r, c), held)
            top, left = layout.cell_origin(r, c)
            block = video[:, top : top + 48, left : left + 80]
            assert np.array_equal(block, held.repeat(4, axis=1).repeat(4, axis=2))  # nearest-neighbour upscale
            assert ink(video, layout.column_label_box(c)) > 10
        assert ink(video, layout.row_label_box(r)) > 10
    gap = layout.cell_origin(0, 1)[1] - 1
    assert (video[:, layout.cell_origin(0, 0)[0]:, gap] == BACKGROUND).all()  # columns stay apart
    with pytest.raises(ValueError, match="differ in size"):
        compose([[cells[0][0], np.zeros((4, 8, 8, 3), np.uint8)]], ["a", "b"], ["p"])


@pytest.fixture(scope="module")
def generated(ray_local, tmp_path_factory):
    run = tiny_run(tmp_path_factory)
    base = tmp_path_factory.mktemp("grid")
    (base / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    out = base / "gen"
    generate(str(run), str(base / "prompts.txt"), str(out), GenerateOptions(seed=5, sampler=SAMPLER))  # seeds 5, 6
    return run, str(out)


def decoded(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_cells_are_the_videos_of_that_checkpoint_prompt_and_seed(generated, tmp_path):
    run, folder = generated
    early = str(run / "checkpoints" / "step_00000001.pt")
    videos = tmp_path / "videos"
    video, layout, seeds, labels, sampled = grid_frames([early, str(run), folder], PROMPTS, SAMPLER, videos=str(videos))
    assert seeds == [5, 6]  # the folder's seeds, so every cell of a row shares one
    assert labels == [f"{run.name}-step1", f"{run.name}-step2", "gen"]
    assert set(sampled) == set(labels[:2]) and all(s["ran"] == 1 for s in sampled.values())
    for column, ckpt in ((0, early), (1, str(run))):
        sampler = VideoSampler(ckpt, "cpu")
        with tarfile.open(videos / labels[column] / "shards" / "00000.tar") as tar:
            for row, (prompt, seed) in enumerate(zip(PROMPTS, seeds)):
                data = tar.extractfile(f"p{row:05d}_s{seed}.mp4").read()
                assert np.array_equal(cell(video, layout, row, column), decoded(data))
                # generate's video is the sampler's video of that prompt and seed, encoded (x264 output is a
                # function of its input)
                expected = sampler.sample(prompt, SAMPLER, seed)
                assert write_video(expected, tmp_path / f"{column}{row}.mp4", 8.0).read_bytes() == data
    with tarfile.open(f"{folder}/shards/00000.tar") as tar:
        for row, (prompt, seed) in enumerate(zip(["p00000", "p00001"], seeds)):
            data = tar.extractfile(f"{prompt}_s{seed}.mp4").read()
            assert np.array_equal(cell(video, layout, row, 2), decoded(data))
            # the folder came from the latest checkpoint with the same seeds: the same cells as that column
            assert np.array_equal(cell(video, layout, row, 2), cell(video, layout, row, 1))


def test_a_rerun_samples_nothing_and_other_settings_are_refused(generated, tmp_path):
    from curate.provenance import ProvenanceMismatch

    run, _ = generated
    videos = tmp_path / "videos"
    first = grid_frames([str(run)], PROMPTS[:1], SAMPLER, seed=3, videos=str(videos))
    tar = videos / f"{run.name}-step2" / "shards" / "00000.tar"
    written = tar.stat().st_mtime_ns
    again = grid_frames([str(run)], PROMPTS[:1], SAMPLER, seed=3, videos=str(videos))
    assert first[4][f"{run.name}-step2"]["ran"] == 1 and again[4][f"{run.name}-step2"]["ran"] == 0
    assert tar.stat().st_mtime_ns == written and np.array_equal(first[0], again[0])
    with pytest.raises(ProvenanceMismatch, match="input differs"):  # the videos to make: prompts and seeds
        grid_frames([str(run)], PROMPTS[:1], SAMPLER, seed=4, videos=str(videos))
    forced = grid_frames([str(run)], PROMPTS[:1], SAMPLER, seed=4, videos=str(videos), force=True)
    assert forced[2] == [4] and forced[4][f"{run.name}-step2"]["ran"] == 1


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_grid_file_has_the_layout_size_and_frames(generated, tmp_path, suffix):
    run, folder = generated
    out = tmp_path / f"grid{suffix}"
    result = grid([str(run), folder], PROMPTS, str(out), SAMPLER)
    assert result["sampled"][f"{run.name}-step2"]["out"] == str(tmp_path / "grid_videos" / f"{run.name}-step2")
    width, height = result["size"]
    assert result["rows"] == 2 and result["frames"] == 3 and result["seeds"] == [5, 6]
    if suffix == ".gif":
        with Image.open(out) as image:
            assert image.size == (width, height) and image.n_frames == 3
    else:
        with av.open(str(out)) as container:
            stream = container.streams.video[0]
            frames = list(container.decode(video=0))
            # H.264 4:2:0 needs even sides: an odd side gets one edge row/column
            assert (stream.width, stream.height) == (width + width % 2, height + height % 2) and len(frames) == 3
    with pytest.raises(ValueError, match=".mp4 or .gif"):
        grid([folder], PROMPTS, str(tmp_path / "grid.avi"))
    with pytest.raises(ValueError, match="no video of prompt"):
        grid_frames([folder], ["a prompt it never saw"], seed=0)


def test_prompts_from_a_file(generated, tmp_path):
    _, folder = generated
    prompts = tmp_path / "p.txt"
    prompts.write_text(f"\n{PROMPTS[1]}\n")
    video, layout, seeds, labels, sampled = grid_frames([folder], str(prompts))
    assert sampled == {}
    assert layout.rows == 1 and seeds == [6] and labels == ["gen"] and video.shape[0] == 3
