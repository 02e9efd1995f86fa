"""Released models: the full-size layout is the reference checkpoint's, a tiny file in that layout loads and samples
through `curate sample`, and a file with a tensor missing or cut short is refused naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from curate.train import released
from curate.train.checkpoints import TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX
from curate.train.commands import sample
from curate.train.sample import VideoSampler, resolve_source
from curate.train.sampler_options import SamplerOptions
from curate.weightfile import WeightsLayoutError

pytestmark = pytest.mark.usefixtures("one_thread")

LAYOUT = Path("/work/shared/reference/videocrafter2_checkpoint_layout.tsv")
app = typer.Typer()
app.command()(sample)  # the only command: invoked without its name
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    return released.random_checkpoint("videocrafter2_tiny", tmp_path_factory.mktemp("vc2") / "model.ckpt", seed=3)


def test_full_size_parts_need_exactly_the_reference_checkpoint_keys():
    if not LAYOUT.exists():
        pytest.skip(f"reference layout {LAYOUT} not present")
    reference = {}
    for line in LAYOUT.read_text().splitlines():
        if line.startswith("#") or line.startswith("key\t"):
            continue
        key, shape, _ = line.split("\t")
        reference[key] = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
    # every key and shape of the released file passes the check; the two text extras are allowed, not needed
    state = {key: torch.empty(shape, device="meta") for key, shape in reference.items()}
    released.check(released.RELEASED["videocrafter2"], state, "model.ckpt")
    needed = {k for k in reference if k.startswith((UNET_PREFIX, VAE_PREFIX, TEXT_PREFIX))}
    del state[sorted(needed)[100]]
    with pytest.raises(WeightsLayoutError, match="missing " + sorted(needed)[100].replace(".", r"\.")):
        released.check(released.RELEASED["videocrafter2"], state, "model.ckpt")


def test_loaded_parts_hold_the_file_tensors(tiny_file):
    parts = released.load(released.RELEASED["videocrafter2_tiny"], tiny_file)
    state = torch.load(tiny_file, weights_only=True)["state_dict"]
    for prefix, module in ((UNET_PREFIX, parts.unet), (VAE_PREFIX, parts.first_stage),
                           (TEXT_PREFIX + "model.", parts.text_encoder.tower)):
        for key, value in module.state_dict().items():
            assert torch.equal(value, state[prefix + key]), key
    assert not any(b.is_meta for b in parts.text_encoder.buffers())  # the causal mask is rebuilt, not left on meta
    mask = parts.text_encoder.tower.attn_mask
    assert torch.isinf(mask[0, 1]) and mask[1, 0] == 0


def test_sample_command_uses_the_released_defaults(tiny_file, tmp_path):
    out = tmp_path / "v.gif"
    result = runner.invoke(app, [f"videocrafter2_tiny:{tiny_file}", "--prompt", "a red fox", "--out",
                                 str(out), "--steps", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    with Image.open(out) as gif:  # the model's 4 frames of 32x32, written at its save rate (10 fps = 100 ms)
        assert gif.n_frames == 4 and gif.size == (32, 32) and gif.info["duration"] == 100
    sampler = VideoSampler(f"videocrafter2_tiny:{tiny_file}", "cpu")
    assert sampler.options(SamplerOptions()).fps == 28.0 and sampler.step is None
    a = sampler.sample("a red fox", SamplerOptions(steps=2), seed=1)
    assert torch.equal(a, sampler.sample("a red fox", SamplerOptions(steps=2), seed=1))
    assert not torch.equal(a, sampler.sample("a blue fox", SamplerOptions(steps=2), seed=1))


def test_a_file_missing_one_tensor_or_cut_short_is_refused_naming_it(tiny_file, tmp_path):
    state = torch.load(tiny_file, weights_only=True)["state_dict"]
    gone = sorted(k for k in state if "temopral_conv" in k)[0]
    del state[gone]
    broken = tmp_path / "missing.ckpt"
    torch.save({"state_dict": state}, broken)
    with pytest.raises(WeightsLayoutError, match=gone.replace(".", r"\.")):
        released.load(released.RELEASED["videocrafter2_tiny"], broken)
    result = runner.invoke(app, [f"videocrafter2_tiny:{broken}", "--prompt", "x", "--out",
                                 str(tmp_path / "v.gif"), "--device", "cpu"])
    assert result.exit_code == 2 and gone in result.output and "Traceback" not in result.output
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(tiny_file.read_bytes()[: tiny_file.stat().st_size // 2])
    with pytest.raises(WeightsLayoutError, match="truncated"):
        released.load(released.RELEASED["videocrafter2_tiny"], cut)


def test_sources_resolve_to_absolute_files(tiny_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_file.parent)
    assert resolve_source(f"videocrafter2_tiny:{tiny_file.name}") == f"videocrafter2_tiny:{tiny_file}"
    with pytest.raises(FileNotFoundError, match="nothing.ckpt"):
        resolve_source(f"videocrafter2:{tmp_path / 'nothing.ckpt'}")
    with pytest.raises(ValueError, match="give the file"):
        resolve_source("videocrafter2:")


def test_device_cuda_without_a_usable_gpu_exits_2_with_the_reason(tiny_file, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = runner.invoke(app, [f"videocrafter2_tiny:{tiny_file}", "--prompt", "x", "--out", str(tmp_path / "v.gif"),
                                 "--device", "cuda"])
    assert result.exit_code == 2 and "no usable GPU" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, [f"videocrafter2_tiny:{tiny_file}", "--prompt", "x", "--out", str(tmp_path / "v.gif"),
                                 "--device", "cpu", "--precision", "tf32"])
    assert result.exit_code == 2 and "tf32 needs a CUDA device" in result.output
