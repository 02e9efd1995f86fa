"""Benchmark: forward+backward time of curate's UNet3D vs the official VideoCrafter2 computation, same weights.

Peers, all loaded with one state dict (the parameter names are the checkpoint's):

- `reimplementation` (always): `OfficialUNet` (tests/train/official_unet.py) re-implements the
  official lvdm/modules/networks/openaimodel3d.py and lvdm/modules/attention.py math the way that
  code computes it, without gradient checkpointing. Against the real code at the tiny config its
  outputs and gradients are bitwise equal. tests/train/test_unet3d.py checks curate's UNet3D
  against it.
- `official` and `official_no_checkpoint` (with `--official-src DIR`, a local VideoCrafter
  checkout whose `lvdm` package imports; it needs einops): the real `UNetModel`, first as the
  released configs/inference_t2v_512_v2.0.yaml sets it (`use_checkpoint: true`: every ResBlock
  and transformer block recomputes its forward in backward), then with checkpointing off. `ours`
  runs the preset's flags (the tiny preset: checkpointing off); `ours_checkpoint` runs with it on,
  the like-for-like peer of `official`.

    .venv/bin/python scripts/bench_unet_vs_official.py [--preset tiny] [--batch 2] [--frames 8] [--size 16]
        [--threads 1] [--override num_head_channels=8] [--official-src ~/src/VideoCrafter] [--smoke]

Before timing, every peer runs forward and backward in eval mode on the same inputs; the largest
output and gradient differences from ours are reported. Models are timed interleaved (median of
`--repeats` steps, MSE loss, train mode), so load from other processes affects all alike.

It also reports a floor that no implementation of this fp32 function reaches on this CPU: the
step's dense work (matmuls, plus convolutions counted forward + two backward passes) divided by
the machine's large-GEMM throughput; attention, norms, activations and dropout come on top.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

# The re-implementation is the U-Net test's oracle; it lives beside that test, in the checkout this script runs from.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "train"))
from official_unet import OfficialUNet  # noqa: E402


def _step_times(model, inputs) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one forward + MSE backward."""
    x, timesteps, context, fps = inputs
    model.zero_grad(set_to_none=True)
    wall, cpu = time.perf_counter(), time.process_time()
    model(x, timesteps, context, fps=fps).square().mean().backward()
    return time.perf_counter() - wall, time.process_time() - cpu


def _dense_gflop(model, inputs) -> float:
    """GFLOP of one forward + backward spent in matmuls and convolutions (the profiler's counts)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        _step_times(model, inputs)
    flops = {event.key: event.flops for event in prof.key_averages()}
    matmul = sum(flops.get(key, 0) for key in ("aten::mm", "aten::addmm", "aten::bmm"))
    # The profiler counts conv forwards only; their backward computes input and weight gradients.
    conv = 3 * sum(flops.get(key, 0) for key in ("aten::conv2d", "aten::conv3d"))
    return (matmul + conv) / 1e9


def _gemm_gflop_per_s(size: int = 1024, repeats: int = 5) -> float:
    """Best fp32 throughput of a square matmul with the current thread count (CPU time)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        a @ b
        best = min(best, time.process_time() - started)
    return 2 * size**3 / best / 1e9


# configs/inference_t2v_512_v2.0.yaml of the release trains and samples with gradient checkpointing.
RELEASED_USE_CHECKPOINT = True


def _official_unet_class(source: Path) -> type[nn.Module]:
    """The real `UNetModel` from a VideoCrafter checkout (its `lvdm` package on the path)."""
    if not (source / "lvdm" / "modules" / "networks" / "openaimodel3d.py").is_file():
        raise SystemExit(f"{source} has no lvdm/modules/networks/openaimodel3d.py (a VideoCrafter checkout?)")
    sys.path.insert(0, str(source))
    # Its checkpoint() calls torch's without use_reentrant (reentrant, the old default), which warns.
    warnings.filterwarnings("ignore", message="torch.utils.checkpoint: the use_reentrant parameter")
    warnings.filterwarnings("ignore", message="None of the inputs have requires_grad")
    try:
        from lvdm.modules.networks.openaimodel3d import UNetModel
    except ModuleNotFoundError as error:
        raise SystemExit(f"importing the official code from {source} failed: {error} (pip install it)") from error
    return UNetModel


def _differences(ours, peer, inputs) -> dict[str, float]:
    """Largest output and gradient differences, eval mode (no dropout), same inputs."""
    results = []
    for model in (ours, peer):
        model.eval()
        model.zero_grad(set_to_none=True)
        x, timesteps, context, fps = inputs
        y = model(x, timesteps, context, fps=fps)
        y.square().mean().backward()
        results.append((y.detach(), dict(model.named_parameters())))
        model.train()
    (y_ours, params_ours), (y_peer, params_peer) = results
    grad_diff = max((p.grad - params_peer[name].grad).abs().max().item() for name, p in params_ours.items())
    return {"output": (y_ours - y_peer).abs().max().item(), "gradient": grad_diff}


def main() -> None:
    from curate.train.presets import build_unet, unet_params

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=16, help="latent height = width")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads; with 1, CPU time is a load-independent measure")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="U-Net parameter override, VALUE as JSON (e.g. num_head_channels=8)")
    parser.add_argument("--official-src", type=Path, default=None, metavar="DIR",
                        help="a VideoCrafter checkout: also benchmark its real UNetModel")
    parser.add_argument("--smoke", action="store_true", help="1 clip of 2 frames at 8x8, one repeat: checks it runs")
    args = parser.parse_args()
    if args.smoke:
        args.batch, args.frames, args.size, args.repeats, args.threads = 1, 2, 8, 1, args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.override)}

    torch.manual_seed(0)
    params = unet_params(args.preset, **overrides)
    ours = build_unet(args.preset, **overrides)
    # Non-zero weights everywhere (the zero-initialised output layers would make backward trivial).
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.05)
    models = {"ours": ours, "reimplementation": OfficialUNet(**params)}
    pairs = [("ours", "reimplementation")]
    if args.official_src:
        unet_model = _official_unet_class(args.official_src.expanduser())
        models["official"] = unet_model(**dict(params, use_checkpoint=RELEASED_USE_CHECKPOINT))
        models["official_no_checkpoint"] = unet_model(**dict(params, use_checkpoint=False))
        models["ours_checkpoint"] = build_unet(args.preset, **dict(overrides, use_checkpoint=RELEASED_USE_CHECKPOINT))
        pairs += [("ours", "official"), ("ours", "official_no_checkpoint"), ("ours_checkpoint", "official")]
    for model in models.values():
        model.load_state_dict(ours.state_dict())
        model.train()

    b = args.batch
    x = torch.randn(b, params["in_channels"], args.frames, args.size, args.size)
    timesteps = torch.randint(0, 1000, (b,))
    context = torch.randn(b, 77, params["context_dim"])
    fps = torch.full((b,), 8)
    inputs = (x, timesteps, context, fps)

    result = {
        "preset": args.preset, "overrides": overrides, "batch": b, "frames": args.frames,
        "latent": f"{args.size}x{args.size}", "threads": torch.get_num_threads(), "torch": torch.__version__,
    }
    for name, model in models.items():
        if name != "ours":
            for kind, value in _differences(ours, model, inputs).items():
                result[f"{name}_{kind}_max_abs_diff"] = value

    for model in models.values():  # one warm-up step each
        _step_times(model, inputs)
    runs = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            runs[name].append(_step_times(model, inputs))

    def median(name, column):
        values = sorted(run[column] for run in runs[name])
        return values[len(values) // 2]

    for column, label in ((0, "wall"), (1, "cpu")):
        for name in models:
            result[f"{name}_{label}_s_per_step"] = round(median(name, column), 4)
        for mine, peer in pairs:
            result[f"ratio_{label}_{mine}_over_{peer}"] = round(median(mine, column) / median(peer, column), 3)
    for name in models:
        result[f"{name}_train_samples_per_s_wall"] = round(b / median(name, 0), 2)
    gflop, gemm_rate = _dense_gflop(ours, inputs), _gemm_gflop_per_s(256 if args.smoke else 1024)
    result["ours_dense_gflop_per_step"] = round(gflop, 2)
    result["gemm_gflop_per_s"] = round(gemm_rate, 1)
    result["dense_floor_cpu_s_per_step"] = round(gflop / gemm_rate, 4)
    for peer in ("reimplementation", "official"):
        if peer in models:
            result[f"ratio_dense_floor_over_{peer}_cpu"] = round(gflop / gemm_rate / median(peer, 1), 3)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
