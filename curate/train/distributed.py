"""Multi-worker training through Ray Train: one Trainer per worker, DDP over NCCL (GPU) or gloo (CPU).

The only module that knows Ray Train. Without an address, Ray starts embedded on this machine
(bound to 127.0.0.1, no dashboard, usage stats off); with `address` (or RAY_ADDRESS) the same
call runs on a cluster. Every worker reads its own rank's slice of the data (see data.py), rank 0
writes checkpoints and logs to the run folder, which must therefore be on storage all workers see.
"""

from __future__ import annotations

import os
from pathlib import Path

from curate.train.recipe import Recipe, recipe_from_dict


def _worker_loop(config: dict) -> None:
    import ray.train
    import torch
    from ray.train.torch import get_device, prepare_model

    from curate.train.loop import Trainer

    context = ray.train.get_context()
    recipe = recipe_from_dict(config["recipe"])
    # image batches that skip the temporal modules leave trainable temporal weights unused in that step
    skips = recipe.data.image_ratio > 0 and (recipe.stage == "image" or recipe.data.image_mode == "skip_temporal")
    device = get_device() if recipe.train.use_gpu else torch.device("cpu")

    def wrap(model):
        return prepare_model(model, move_to_device=device, parallel_strategy_kwargs={"find_unused_parameters": skips})

    trainer = Trainer(recipe, config["run_dir"], rank=context.get_world_rank(), world_size=context.get_world_size(),
                      device=device, wrap_model=wrap)
    logs = trainer.run(config["steps"])
    ray.train.report({"step": trainer.step, "loss": logs[-1].loss if logs else float("nan")})  # seen by Ray's result


def _absolute(recipe: Recipe) -> Recipe:
    """Workers do not share the driver's working directory: make the recipe's paths absolute."""
    d, t = recipe.data, recipe.text_encoder
    changes = {"data": {"dirs": [str(Path(p).resolve()) for p in d.dirs]}}
    if t.path:
        changes["text_encoder"] = {"path": str(Path(t.path).resolve())}
    if recipe.autoencoder.path:
        changes["autoencoder"] = {"path": str(Path(recipe.autoencoder.path).resolve())}
    if recipe.init_from and ":" not in recipe.init_from:
        changes["init_from"] = str(Path(recipe.init_from).resolve())
    return recipe.replace(**changes)


def train_distributed(
    recipe: Recipe, run_dir: str | Path, steps: int | None = None, address: str | None = None, num_cpus: int | None = None
) -> None:
    """Run `recipe.train.num_workers` workers until `steps` (default: the recipe's); rank 0 logs to RUN/log.jsonl."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        # an embedded cluster listens on 127.0.0.1 only (Ray binds every interface otherwise); checked with ss -ltnp
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    recipe = _absolute(recipe)
    run_dir = Path(run_dir).resolve()
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address)
        else:
            ray.init(address="local", num_cpus=num_cpus or recipe.train.num_workers, include_dashboard=False,
                     object_store_memory=100_000_000, _node_ip_address="127.0.0.1")
    try:
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"recipe": recipe.to_dict(), "run_dir": str(run_dir), "steps": steps},
            torch_config=TorchConfig(backend="nccl" if recipe.train.use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=recipe.train.num_workers, use_gpu=recipe.train.use_gpu),
            run_config=RunConfig(name=recipe.name, storage_path=str(run_dir / "ray")),
        )
        trainer.fit()
    finally:
        if started_here:
            ray.shutdown()
