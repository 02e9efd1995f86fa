"""Where and in what precision a model runs: one device resolver (a usage error when the device cannot be used)
and one inference precision context, for every command that takes --device / --precision.

`resolve(None)` is cuda when torch can use a GPU, else the CPU. Asking for cuda where torch cannot use one is a
`DeviceError` (a ValueError, so commands exit 2 with the reason) rather than torch's driver traceback. An actor
that Ray granted a GPU (`granted_gpus`) must get one: falling back to the CPU there would run a GPU job hours
slower without a word, so it stops with the reason instead.
"""

from __future__ import annotations

import contextlib
import typing

if typing.TYPE_CHECKING:
    import torch

PRECISIONS = ("fp32", "tf32", "bf16")


class DeviceError(ValueError):
    """A device or precision that cannot be used on this machine; the message says why."""


def _cuda_problem() -> str | None:
    """Why torch cannot use a GPU here, or None when it can."""
    import torch

    if not torch.cuda.is_available():
        build = torch.version.cuda
        return ("torch was built without CUDA" if build is None else
                f"torch (CUDA {build}) sees no usable GPU: no NVIDIA driver, a driver older than CUDA {build} "
                f"needs, or CUDA_VISIBLE_DEVICES hides them")
    return None


def resolve(name: str | None = None) -> torch.device:
    """The device `name` names (cpu, cuda, cuda:N), checked usable; None = cuda when usable, else cpu."""
    import torch

    if not name:
        return torch.device("cpu" if _cuda_problem() else "cuda")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceError(f"unsupported device {name!r}; use cpu, cuda or cuda:N")
    problem = _cuda_problem()
    if problem:
        raise DeviceError(f"--device {name}: {problem}")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
    return device


def granted_gpus() -> list:
    """The GPU ids Ray granted this worker ([] outside Ray or without GPUs)."""
    try:
        import ray
    except ImportError:
        return []
    return list(ray.get_gpu_ids()) if ray.is_initialized() else []


def for_actor(granted: list | None = None) -> torch.device:
    """The device of a Ray actor: its GPU when Ray granted one (an error naming the reason when torch cannot use
    it), else the CPU."""
    import torch

    granted = granted_gpus() if granted is None else granted
    if not granted:
        return torch.device("cpu")
    problem = _cuda_problem()
    if problem:
        raise DeviceError(f"Ray granted GPU(s) {granted} but {problem}; not falling back to the CPU")
    return torch.device("cuda")


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "tf32" and device.type != "cuda":
        raise DeviceError("--precision tf32 needs a CUDA device (TF32 is a tensor-core format)")


@contextlib.contextmanager
def inference_precision(precision: str, device: torch.device):
    """Run the enclosed inference in `precision`: fp32 exactly; tf32 with TF32 matmuls/convolutions; bf16 under
    autocast (TF32 for what autocast keeps in fp32). Global TF32 switches are restored on exit."""
    import torch

    check_precision(precision, device)
    cuda = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = cuda[0].allow_tf32, cuda[1].allow_tf32
    tf32 = precision in ("tf32", "bf16") and device.type == "cuda"
    cuda[0].allow_tf32 = cuda[1].allow_tf32 = tf32
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            yield
    finally:
        cuda[0].allow_tf32, cuda[1].allow_tf32 = saved
