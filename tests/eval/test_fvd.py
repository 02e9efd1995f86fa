"""FVD over dataset folders: preprocessing against torchvision, protocol record, reference rows, bad clips, and the
`curate fvd` command under the stage contract (resume, refusal, --force)."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from eval_media import flat_video
from synthetic_media import moving_square
from test_i3d import save_tiny_detector

from curate.eval import fvd, metric_stage
from curate.eval.frechet import fit_gaussian, frechet_distance
from curate.eval.fvd_options import FVDOptions
from curate.provenance import ProvenanceMismatch

CPU = torch.device("cpu")


@pytest.mark.parametrize("height, width", [(112, 168), (240, 320), (300, 200)])
def test_crop_preprocess_matches_torchvision_resize_and_centre_crop(height, width):
    frames = np.random.default_rng(0).integers(0, 256, (4, height, width, 3), dtype=np.uint8)
    got = fvd.preprocess(frames, CPU, "crop")
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    scale = 224 / min(height, width)
    size = [224, int(np.ceil(width * scale))] if height < width else [int(np.ceil(height * scale)), 224]
    resized = TF.resize(pixels, size, antialias=False)
    # VideoGPT's centre crop floors an odd margin (torchvision's center_crop rounds it): crop at the floor
    top, left = (resized.shape[-2] - 224) // 2, (resized.shape[-1] - 224) // 2
    reference = TF.crop(resized, top, left, 224, 224) * 2 - 1
    assert got.shape == (3, 4, 224, 224)
    assert torch.allclose(got, reference.permute(1, 0, 2, 3), atol=1e-5)
    assert got.min() >= -1 and got.max() <= 1


def test_squash_preprocess_matches_torchvision_resize():
    frames = np.random.default_rng(1).integers(0, 256, (2, 120, 160, 3), dtype=np.uint8)
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    reference = TF.resize(pixels, [224, 224], antialias=False) * 2 - 1
    assert torch.allclose(fvd.preprocess(frames, CPU, "squash"), reference.permute(1, 0, 2, 3), atol=1e-5)


def coloured_squares(count: int, base: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(count):
        frames = moving_square(16, 64, 80, step=2).astype(np.int16)
        frames = np.clip(frames + base + rng.integers(-20, 20, 3), 0, 255).astype(np.uint8)
        samples.append({"key": f"v{index:03d}", "frames": frames, "caption": "a square"})
    return samples


@pytest.fixture
def detector(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    save_tiny_detector(path)
    return str(path)


def test_fvd_between_folders_with_protocol_reference_rows_and_skipped_clips(ray_local, tmp_path, folder_factory,
                                                                          detector):
    real_samples = coloured_squares(6, 0, seed=1) + [
        {"key": "short", "frames": flat_video(60, frames=8)},  # fewer than 16 frames: skipped, counted
        {"key": "broken", "media": b"\x00\x00\x00\x18ftypmp42 not really a video"},
        {"key": "failed", "status": "download_error"},
        {"key": "an_image", "media": b"not read", "ext": "jpg"},  # images are not clips
    ]
    real = folder_factory("real", real_samples)
    same = folder_factory("same", coloured_squares(6, 0, seed=1))
    other = folder_factory("other", coloured_squares(6, 60, seed=2))

    first = fvd.fvd(real, other, FVDOptions(max_clips=2048), i3d_weights=detector, i3d_trust=True, workers=1)
    assert first["value"] > 1.0 and first["measured_shards"] == 2  # one shard of each folder
    assert first["real"]["clips"] == 6 and first["real"]["skipped"] == 2
    assert {e["key"] for e in first["real"]["skipped_examples"]} == {"short", "broken"}
    proto = first["protocol"]
    assert proto["frames"] == 16 and proto["stride"] == 1 and proto["max_clips"] == 2048
    assert proto["extractor_sha256"] and proto["extractor_file"] == "i3d_torchscript.pt"
    assert "N-1" in proto["covariance"] and proto["value_range"] == [-1.0, 1.0]
    written = json.loads(open(os.path.join(other, "eval", "fvd.json")).read())
    assert written["value"] == pytest.approx(first["value"]) and written["protocol"] == proto
    assert written["provenance"]["config"]["extractor_sha256"] == proto["extractor_sha256"]
    assert set(written["provenance"]["input_fingerprint"]) == {"generated", "real"}
    (reference,) = os.listdir(os.path.join(real, "eval", "fvd_reference"))  # named by content + protocol
    rows = pq.read_table(os.path.join(real, "eval", "fvd_reference", reference, "00000.parquet")).to_pylist()
    assert [r["key"] for r in rows] == [f"v{i:03d}" for i in range(6)] + ["short", "broken"]
    assert all(len(r["i3d_logits"]) == 400 for r in rows[:6]) and rows[6]["error"] and rows[7]["error"]

    # identical clips: FVD ~0; the real clips' features come from the reference rows: only `same` is measured
    again = fvd.fvd(real, same, i3d_weights=detector, i3d_trust=True, out=str(tmp_path / "same.json"), workers=1)
    assert again["measured_shards"] == 1 and again["real"]["clips"] == 6
    assert abs(again["value"]) < 1e-3
    assert json.loads((tmp_path / "same.json").read_text())["value"] == again["value"]

    # another protocol (stride 1 -> 2) over the same folder is refused, naming it; forced, it starts over (and
    # at stride 2 the 16-frame clips need 31 frames: nothing decodes)
    with pytest.raises(ProvenanceMismatch, match=r"stride: 1 -> 2"):
        fvd.fvd(real, same, FVDOptions(stride=2), i3d_weights=detector, i3d_trust=True, workers=1)
    with pytest.raises(ValueError, match="only 0 clips"):
        fvd.fvd(real, same, FVDOptions(stride=2), i3d_weights=detector, i3d_trust=True, workers=1, force=True)


def test_cli_fvd_resumes_refuses_changed_settings_and_forces(ray_local, folder_factory, detector):
    from typer.testing import CliRunner

    from curate.cli import app

    real = folder_factory("real", coloured_squares(3, 0, seed=1))
    gen = folder_factory("gen", coloured_squares(3, 50, seed=2))
    runner = CliRunner()
    command = ["fvd", real, gen, "--i3d-weights", detector, "--i3d-trust", "--device", "cpu"]
    done = runner.invoke(app, command)
    assert done.exit_code == 0, done.output
    table = os.path.join(gen, "eval", "fvd", "00000.parquet")
    written = os.stat(table).st_mtime_ns
    again = runner.invoke(app, command)
    assert again.exit_code == 0, again.output
    first, second = (printed(r.output) for r in (done, again))
    assert second["resumed"] and second["measured_shards"] == 0 and second["value"] == first["value"]
    assert os.stat(table).st_mtime_ns == written  # nothing measured again
    refused = runner.invoke(app, command + ["--resize", "squash"])
    assert refused.exit_code == 2 and "resize_mode" in refused.output and "--force" in refused.output
    forced = runner.invoke(app, command + ["--resize", "squash", "--force"])
    assert forced.exit_code == 0, forced.output
    assert printed(forced.output)["protocol"]["resize_mode"] == "squash"


def printed(output: str) -> dict:
    """The result JSON the command prints last (after the progress bar, which may share its line)."""
    last = output.strip().splitlines()[-1]
    return json.loads(last[last.index('{"metric"'):])


def test_fvd_value_matches_features_computed_by_hand(ray_local, folder_factory, detector):
    from curate.eval.clips import iter_clips
    from curate.eval.i3d import load_i3d

    real = folder_factory("real", coloured_squares(5, 0, seed=3))
    gen = folder_factory("gen", coloured_squares(5, 40, seed=4))
    result = fvd.fvd(real, gen, FVDOptions(max_clips=4), i3d_weights=detector, i3d_trust=True, workers=1)
    assert result["real"]["clips"] == 4 and result["generated"]["clips"] == 4
    model = load_i3d(detector, trust_checkpoint=True).model
    stats = []
    for root in (real, gen):
        clips = [c.frames for c in iter_clips(root, frames=16, limit=4)]
        with torch.inference_mode():
            batch = torch.stack([fvd.preprocess(f, CPU, "crop") for f in clips])
            stats.append(fit_gaussian(model(batch).double().numpy()))
    assert result["value"] == pytest.approx(frechet_distance(*stats), rel=1e-6)


def test_a_folder_without_shards_is_refused(ray_local, tmp_path, detector):
    with pytest.raises(FileNotFoundError, match="no shards"):
        fvd.fvd(str(tmp_path / "nothing"), str(tmp_path / "nothing"), i3d_weights=detector)


def test_batched_features_equal_clip_by_clip_features_also_for_mixed_sizes():
    from test_i3d import TinyDetector

    torch.manual_seed(0)
    model = TinyDetector().eval()
    rng = np.random.default_rng(5)
    clips = [rng.integers(0, 256, (16, h, w, 3), dtype=np.uint8) for h, w in ((64, 80), (64, 80), (48, 96), (80, 60))]
    one_by_one = fvd.i3d_features(model, clips, device=CPU, batch_size=1)
    batched = fvd.i3d_features(model, clips, device=CPU, batch_size=3)  # a same-size batch, then a mixed one
    assert one_by_one.shape == (4, 400)
    assert np.allclose(batched, one_by_one, atol=1e-6)


def test_i3d_runs_without_tf32_and_the_cache_is_keyed_on_the_device(monkeypatch):
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, pixels):
            seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
            return pixels.flatten(1)[:, :4]

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True  # cuDNN's default is on
    try:
        fvd.i3d_features(Spy(), [np.zeros((2, 8, 8, 3), np.uint8)] * 3, device=torch.device("cpu"), batch_size=2)
        assert seen == [(False, False)] * 2 and torch.backends.cudnn.allow_tf32  # restored afterwards
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved

    extractor = {"file": "i3d.pt", "sha256": "0" * 64, "kind": "state_dict"}
    cpu, gpu = (fvd.FVD(device=d, extractor=extractor) for d in ("cpu", "cuda"))
    assert cpu.settings()["device"] == "cpu" and gpu.settings()["device"] == "cuda"
    assert "TF32 off" in cpu.settings()["precision"]
    monkeypatch.setattr(metric_stage, "manifests_fingerprint", lambda root: "same manifests")
    assert metric_stage.reference_dir("x", cpu) != metric_stage.reference_dir("x", gpu)
