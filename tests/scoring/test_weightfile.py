"""The one weight-file reader: formats, wrappers, weights_only unless trusted, and layout errors that name the file."""

import pytest
import torch
from safetensors.torch import save_file

from curate.weightfile import (
    WeightsLayoutError,
    check_layout,
    load_strict,
    read_weights,
    unwrap_state_dict,
)


class NotPlainData:
    """A pickled class instance: what weights_only loading refuses."""


def test_formats_and_wrappers_read_to_the_same_tensors(tmp_path):
    state = {"layer.weight": torch.arange(6.0).reshape(2, 3), "layer.bias": torch.ones(2)}
    save_file(state, tmp_path / "a.safetensors")
    torch.save(state, tmp_path / "b.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "c.ckpt")
    torch.save(state, tmp_path / "d.pt", _use_new_zipfile_serialization=False)  # legacy format: no mmap
    for name, mmap in (("a.safetensors", False), ("b.pt", True), ("c.ckpt", False), ("d.pt", True)):
        read = unwrap_state_dict(read_weights(tmp_path / name, mmap=mmap))
        assert read.keys() == state.keys(), name
        assert all(torch.equal(read[key], state[key]) for key in state), name


def test_pickles_and_torchscript_need_trust(tmp_path):
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"w": torch.zeros(1), "extra": NotPlainData()}, unsafe)
    with pytest.raises(ValueError, match="trust_checkpoint=True"):
        read_weights(unsafe)
    assert isinstance(read_weights(unsafe, trust_checkpoint=True)["extra"], NotPlainData)
    scripted = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Linear(3, 2)).save(scripted)
    with pytest.raises(ValueError, match="TorchScript"):
        read_weights(scripted)
    assert set(read_weights(scripted, trust_checkpoint=True)) == {"weight", "bias"}
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        read_weights(tmp_path / "nowhere.pt")


def test_layout_errors_name_the_file_and_the_expected_keys(tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    wrong = {"0.weight": torch.zeros(3, 5), "0.bias": torch.zeros(3), "2.weight": torch.zeros(1, 3)}
    with pytest.raises(WeightsLayoutError) as error:
        load_strict(module, wrong, tmp_path / "head.pth", "test head")
    message = str(error.value)
    assert str(tmp_path / "head.pth") in message and "test head" in message
    assert "missing 1.bias, 1.weight" in message and "unexpected 2.weight" in message
    assert "0.weight (3, 5) (expected (3, 4))" in message
    assert "Expected keys: 0.weight (3, 4), 0.bias (3,), 1.weight (1, 3), 1.bias (1,)" in message
    check_layout({k: tuple(v.shape) for k, v in module.state_dict().items()}, module.state_dict(), "x", "same")
