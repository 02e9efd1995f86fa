"""InceptionI3d: the published key layout, TF 'SAME' padding, output shapes, and the strict weights loader."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from curate.eval import fvd, i3d, metric_stage
from curate.weightfile import WeightsMissing


def random_i3d(seed: int = 0) -> i3d.InceptionI3d:
    """Random weights and non-trivial BatchNorm statistics, so a loading mix-up would show."""
    torch.manual_seed(seed)
    model = i3d.InceptionI3d()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def test_key_layout_and_parameter_count_are_the_published_files():
    layout = i3d.expected_layout()
    assert len(layout) == 344
    assert layout["Conv3d_1a_7x7.conv3d.weight"] == (64, 3, 7, 7, 7)
    assert layout["Mixed_5c.b3b.bn.bias"] == (128,)
    assert layout["logits.conv3d.weight"] == (400, 1024, 1, 1, 1)
    assert layout["logits.conv3d.bias"] == (400,)
    assert "Mixed_4f.b1b.bn.num_batches_tracked" in layout
    parameters = sum(p.numel() for p in i3d.InceptionI3d().parameters())
    assert parameters == 12_697_264  # "12.7M"


@pytest.mark.parametrize("kernel, stride", [(7, 2), (3, 1), (3, 2), (2, 2), (1, 1)])
def test_same_padding_matches_tensorflow(kernel, stride):
    for size in range(1, 40):
        # TF 'SAME': output ceil(size / stride), total padding (out - 1) * stride + kernel - size, extra at the end
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + kernel - size, 0)
        before, after = i3d.same_padding(size, kernel, stride)
        assert (before, after) == (total // 2, total - total // 2)
        assert (size + before + after - kernel) // stride + 1 == out


def test_output_shapes_and_the_logits_head():
    model = random_i3d()
    pooled = []
    model.logits.register_forward_hook(lambda module, args, out: pooled.append(args[0]))
    with torch.inference_mode():
        logits = model(torch.rand(1, 3, 16, 224, 224) * 2 - 1)
        # 16 frames at 224 px leave one 1024-d position after the 2x7x7 pool; the logits are a 1x1x1 conv of it
        head = F.linear(pooled[0].flatten(1), model.logits.conv3d.weight.view(400, 1024), model.logits.conv3d.bias)
        features = model.features(torch.rand(1, 3, 9, 193, 193))  # the smallest input the published head takes
    assert logits.shape == (1, 400) and pooled[0].shape == (1, 1024, 1, 1, 1)
    assert torch.allclose(logits, head, atol=1e-4)
    assert features.shape == (1, 1024)


def test_strict_load_of_a_saved_state_dict(tmp_path):
    model = random_i3d(1)
    path = tmp_path / "i3d_pretrained_400.pt"
    torch.save(model.state_dict(), path)
    loaded = i3d.load_i3d(path)
    assert loaded.kind == "state_dict" and loaded.path == path
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    assert not loaded.model.training


@pytest.mark.parametrize("damage", ["rename", "reshape", "drop"])
def test_wrong_layout_is_refused_naming_the_file(tmp_path, damage):
    state = i3d.InceptionI3d().state_dict()
    if damage == "rename":
        state["Mixed_5c.b3b.bn.bias_renamed"] = state.pop("Mixed_5c.b3b.bn.bias")
    elif damage == "reshape":
        state["logits.conv3d.weight"] = torch.zeros(600, 1024, 1, 1, 1)
    else:
        del state["Conv3d_1a_7x7.conv3d.weight"]
    path = tmp_path / "not_i3d.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match="not_i3d.pt"):
        i3d.load_i3d(path)


def test_wrong_layout_is_refused_before_any_decoding(ray_local, tmp_path, folder_factory, monkeypatch):
    from eval_media import flat_video

    real = folder_factory("real", [{"key": f"r{i}", "frames": flat_video(10 * i)} for i in range(2)])
    path = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(3)}, path)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoding started before the weights were checked")

    monkeypatch.setattr(metric_stage, "iter_clips", no_decoding)
    with pytest.raises(ValueError, match="wrong.pt"):
        fvd.fvd(real, real, i3d_weights=str(path))
    assert not (tmp_path / "real" / "eval").exists()


def test_a_file_that_is_not_a_state_dict_is_refused_naming_it(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.pt"):
        i3d.load_i3d(path)


def test_missing_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(WeightsMissing, match="--i3d-weights"):
        i3d.load_i3d(None)
    with pytest.raises(WeightsMissing, match="nothere.pt"):
        i3d.load_i3d(tmp_path / "nothere.pt")


def test_default_path_is_the_curate_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path))
    torch.save(random_i3d(2).state_dict(), tmp_path / "i3d_pretrained_400.pt")
    assert i3d.load_i3d(None).path == tmp_path / "i3d_pretrained_400.pt"


class TinyDetector(nn.Module):
    """Stands in for StyleGAN-V's TorchScript I3D: same call signature, [B,3,T,H,W] -> [B,400]."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 4, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        return self.proj(F.adaptive_avg_pool3d(x, (4, 1, 1)).flatten(1))


def save_tiny_detector(path) -> TinyDetector:
    torch.manual_seed(0)
    module = TinyDetector().eval()
    torch.jit.script(module).save(str(path))
    return module


def test_torchscript_detector_is_loaded_and_called_with_features(tmp_path):
    module = save_tiny_detector(tmp_path / "i3d_torchscript.pt")
    with pytest.raises(ValueError, match="i3d_torchscript.pt is a TorchScript archive"):
        i3d.load_i3d(tmp_path / "i3d_torchscript.pt")  # code in a file: only when trusted
    loaded = i3d.load_i3d(tmp_path / "i3d_torchscript.pt", trust_checkpoint=True)
    assert loaded.kind == "torchscript"
    x = torch.rand(2, 3, 16, 224, 224) * 2 - 1
    with torch.inference_mode():
        assert torch.allclose(loaded.model(x), module(x), atol=1e-6)
