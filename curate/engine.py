"""The Ray engine: the one module that knows Ray. Local embedded Ray by default, a cluster by address."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

from tqdm import tqdm


def init(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start (or join) Ray once per process. Locally everything binds to 127.0.0.1 and stays quiet;
    with `address` (or RAY_ADDRESS) the same pipeline runs on a cluster."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="WARNING", log_to_driver=True)
        return
    num_cpus = num_cpus or (int(os.environ["CURATE_RAY_NUM_CPUS"]) if os.environ.get("CURATE_RAY_NUM_CPUS") else None)
    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             object_store_memory=int(os.environ.get("CURATE_RAY_OBJECT_STORE", 256 << 20)),
             logging_level="WARNING", log_to_driver=True, configure_logging=True)


def run_tasks(fn: Callable, jobs: Sequence[tuple], desc: str, address: str | None = None,
              num_cpus_per_task: float = 1, max_in_flight: int | None = None) -> tuple[list, list]:
    """Run fn(*job) as Ray tasks with a bounded window, showing progress with total and ETA.
    Returns (results, failures) where failures are (job, error message). A crashed worker is retried by
    Ray; an exception in fn is a failure of that job only (its shard stays incomplete for the next run)."""
    import ray

    init(address)
    remote = ray.remote(num_cpus=num_cpus_per_task, max_retries=2, retry_exceptions=False)(fn)
    window = max_in_flight or max(2, int(ray.cluster_resources().get("CPU", 1) / num_cpus_per_task) * 2)
    pending: dict = {}
    results, failures = [], []
    queue = list(jobs)
    with tqdm(total=len(queue), desc=desc, unit="shard", dynamic_ncols=True) as bar:
        try:
            while queue or pending:
                while queue and len(pending) < window:
                    job = queue.pop(0)
                    pending[remote.remote(*job)] = job
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    job = pending.pop(ref)
                    try:
                        results.append(ray.get(ref))
                    except Exception as exc:  # noqa: BLE001 - reported per job, the run goes on
                        failures.append((job, f"{type(exc).__name__}: {exc}"))
                    bar.update(1)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    return results, failures


def map_shards(shards: Sequence[str], expand: Callable, expand_kwargs: dict, model_cls: type, model_kwargs: dict,
               expected: dict[str, int], on_shard: Callable[[str, list[dict]], None], *, batch_size: int = 32,
               actors: int = 1, gpus_per_actor: float = 0, desc: str = "score", address: str | None = None) -> None:
    """Ray Data: `expand(shard)` (CPU tasks, e.g. read + decode) yields one row per sample; `model_cls` runs
    in an actor pool (one GPU each when asked; setup once per actor) on batches; rows come back to the
    driver, which calls on_shard(shard, rows) once all `expected[shard]` rows of a shard are in — so each
    shard's output is written whole, and a rerun redoes only shards that were not written."""
    import ray
    from ray.data import ActorPoolStrategy

    init(address)
    if not shards:
        return
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # one tqdm bar over samples below instead of Ray's per-operator bars
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ds = ray.data.from_items([{"shard": s} for s in shards], override_num_blocks=len(shards))
    ds = ds.flat_map(expand, fn_kwargs=expand_kwargs)
    ds = ds.map_batches(model_cls, fn_constructor_kwargs=model_kwargs, batch_size=batch_size, batch_format="pyarrow",
                        compute=ActorPoolStrategy(min_size=1, max_size=max(1, actors)), num_gpus=gpus_per_actor)
    pending: dict[str, list[dict]] = {s: [] for s in shards}
    with tqdm(total=sum(expected[s] for s in shards), desc=desc, unit="sample", dynamic_ncols=True) as bar:
        for row in ds.iter_rows():
            shard = row["shard"]
            pending[shard].append(row)
            bar.update(1)
            if len(pending[shard]) == expected[shard]:
                on_shard(shard, pending.pop(shard))
    for shard, rows in pending.items():  # shards with nothing to score still get their (empty) output
        if expected[shard] == 0 or len(rows) == expected[shard]:
            on_shard(shard, rows)
        else:
            raise RuntimeError(f"shard {shard}: {len(rows)} of {expected[shard]} rows came back")


def cluster_gpus(address: str | None = None) -> float:
    """GPUs Ray sees (0 on a CPU machine): model scorers get one GPU per actor when there are any."""
    import ray

    init(address)
    return float(ray.cluster_resources().get("GPU", 0))
