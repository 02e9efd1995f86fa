"""Multi-worker training through Ray Train: one Trainer per worker, DDP over NCCL (GPU) or gloo (CPU).

The only module that knows Ray Train. Ray starts through curate.engine.init: embedded on this machine
(bound to 127.0.0.1) without an address, on a cluster with `address` (or RAY_ADDRESS). Every worker
reads its own rank's slice of the data (see data.py); rank 0 writes checkpoints and logs to the run
folder, which must therefore be on storage all workers see (a shared file system, or a URL such as s3://).
"""

from __future__ import annotations

import os
from pathlib import Path

from curate import storage
from curate.train import checkpoints
from curate.train.recipe import Recipe, recipe_from_dict

START_TIMEOUT_S = 120.0  # per attempt to get every worker's resources (a placement group)
START_ATTEMPTS = 3
MAX_FAILURES = 2  # worker-group restarts (each resumes from the last checkpoint) before the run stops


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
        return prepare_model(model, move_to_device=device, parallel_strategy_kwargs={
            "find_unused_parameters": skips, "gradient_as_bucket_view": True})  # buckets = the gradients: no copy

    trainer = Trainer(recipe, config["run_dir"], rank=context.get_world_rank(), world_size=context.get_world_size(),
                      device=device, wrap_model=wrap)
    logs = trainer.run(config["steps"])
    ray.train.report({"step": trainer.step, "loss": logs[-1].loss if logs else float("nan")})  # seen by Ray's result


def _absolute(recipe: Recipe) -> Recipe:
    """Workers do not share the driver's working directory: make the recipe's paths absolute."""
    d, t = recipe.data, recipe.text_encoder
    changes = {"data": {"dirs": [p if storage.is_remote(p) else str(Path(p).resolve()) for p in d.dirs]}}
    if t.path:
        changes["text_encoder"] = {"path": str(Path(t.path).resolve())}
    if recipe.autoencoder.path:
        changes["autoencoder"] = {"path": str(Path(recipe.autoencoder.path).resolve())}
    if recipe.init_from and ":" not in recipe.init_from:
        changes["init_from"] = str(Path(recipe.init_from).resolve())
    return recipe.replace(**changes)


class RunStopped(RuntimeError):
    """The run stopped before its last step (its message says why and how it resumes)."""


class ResourcesUnavailable(RunStopped):
    """The cluster could not give the workers their resources within the start timeout, or lost them."""


def train_distributed(
    recipe: Recipe, run_dir: str | Path, steps: int | None = None, address: str | None = None,
    num_cpus: int | None = None, start_timeout_s: float = START_TIMEOUT_S, start_attempts: int = START_ATTEMPTS,
) -> None:
    """Run `recipe.train.num_workers` workers until `steps` (default: the recipe's); rank 0 logs to RUN/log.jsonl.

    Bounded waits instead of hangs: the workers' resources must be granted within `start_timeout_s`
    (tried `start_attempts` times; a lost node that is not replaced ends the same way), and a failed
    worker group is restarted at most MAX_FAILURES times, each time from the last checkpoint.
    Then ResourcesUnavailable / the training error is raised; rerunning resumes from the last checkpoint.
    """
    from curate import engine

    # Ray Train reads its start timeout from the environment of its controller (RAY_TRAIN_* is propagated)
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(start_timeout_s)
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    recipe = _absolute(recipe)
    run_dir = str(run_dir) if storage.is_remote(str(run_dir)) else Path(run_dir).resolve()
    started_here = not ray.is_initialized()
    engine.init(address, num_cpus=num_cpus or recipe.train.num_workers)
    t = recipe.train
    try:
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"recipe": recipe.to_dict(), "run_dir": str(run_dir), "steps": steps},
            torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu),
            run_config=RunConfig(name=recipe.name, storage_path=storage.join(str(run_dir), "ray"), failure_config=FailureConfig(
                max_failures=MAX_FAILURES, controller_failure_limit=start_attempts - 1)),
        )
        try:
            trainer.fit()
        except Exception as err:  # Ray Train wraps the cause; a start timeout is the one we can explain
            if "WorkerGroupStartupTimeoutError" in f"{type(err).__name__} {err!r} {err}" or _caused_by_start_timeout(err):
                raise ResourcesUnavailable(
                    f"Ray could not start {t.num_workers} worker(s) x ({'1 GPU' if t.use_gpu else '1 CPU'}) within "
                    f"{start_attempts} x {start_timeout_s:g} s (cluster: {_resources_line(ray)}); add resources or "
                    f"lower --workers, then rerun: the run resumes from the last checkpoint in {run_dir}/checkpoints"
                ) from None
            latest = checkpoints.latest_checkpoint(run_dir)
            resume = f"resumes from {latest}" if latest else "starts again from step 0 (no checkpoint yet)"
            raise RunStopped(f"training stopped after {MAX_FAILURES} restart(s): {type(err).__name__}: "
                             f"{' '.join(str(err).split())[:500]}; rerunning the same command {resume}") from err
    finally:
        if started_here:
            ray.shutdown()


def _caused_by_start_timeout(err: BaseException) -> bool:
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, WorkerGroupStartupTimeoutError) or isinstance(getattr(err, "controller_failure", None),
                                                                          WorkerGroupStartupTimeoutError):
            return True
        err = err.__cause__ or err.__context__
    return False


def _resources_line(ray) -> str:
    total = ray.cluster_resources()
    return ", ".join(f"{int(total.get(k, 0))} {k}" for k in ("CPU", "GPU"))
