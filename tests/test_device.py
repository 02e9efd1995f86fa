"""Device resolution: cuda by default only when usable, a usage error (not torch's traceback) when asked for an
unusable GPU, no silent CPU fallback when Ray granted a GPU; the precision context's autocast and TF32 switches."""

from __future__ import annotations

import pytest
import torch

from curate import device
from curate.device import DeviceError


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_default_is_cuda_only_when_torch_can_use_it(no_gpu):
    assert device.resolve(None) == torch.device("cpu") and device.resolve("cpu") == torch.device("cpu")


def test_default_and_named_cuda_when_usable(one_gpu):
    assert device.resolve(None) == torch.device("cuda") and device.resolve("cuda:0") == torch.device("cuda:0")
    with pytest.raises(DeviceError, match="only 1 GPU"):
        device.resolve("cuda:1")


def test_unusable_or_unknown_devices_are_usage_errors_with_the_reason(no_gpu):
    with pytest.raises(DeviceError, match="CUDA 13.0.*no usable GPU"):
        device.resolve("cuda")
    with pytest.raises(DeviceError, match="use cpu, cuda"):
        device.resolve("gpu0")
    with pytest.raises(DeviceError, match="unsupported"):
        device.resolve("mps")


def test_an_actor_granted_a_gpu_torch_cannot_use_stops_instead_of_using_the_cpu(no_gpu):
    assert device.for_actor([]) == torch.device("cpu")
    with pytest.raises(DeviceError, match=r"Ray granted GPU\(s\) \['0'\].*not falling back"):
        device.for_actor(["0"])


def test_an_actor_granted_a_usable_gpu_gets_it(one_gpu):
    assert device.for_actor([0]) == torch.device("cuda")


def test_precision_context_sets_autocast_and_restores_tf32():
    cpu = torch.device("cpu")
    with device.inference_precision("bf16", cpu):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with device.inference_precision("fp32", cpu):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(DeviceError, match="tf32 needs a CUDA device"):
        with device.inference_precision("tf32", cpu):
            pass
    with pytest.raises(DeviceError, match="fp32, tf32, bf16"):
        device.check_precision("fp16", cpu)
    before = torch.backends.cuda.matmul.allow_tf32
    with device.inference_precision("tf32", torch.device("cuda")):  # switches only: nothing runs on a GPU here
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert torch.backends.cuda.matmul.allow_tf32 == before
