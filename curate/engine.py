"""The Ray engine: the one module that knows Ray. Local embedded Ray by default, a cluster by address."""

from __future__ import annotations

import json
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
    # Local Ray binds loopback only. Ray reads this switch when it is first imported, so a caller that imported
    # ray before curate would otherwise get listeners on every interface: set the read value too.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    # An embedded cluster listens on loopback only: say so, rather than have Ray warn on every command that token
    # authentication is off (a user who wants tokens locally sets RAY_AUTH_MODE=token).
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    num_cpus = num_cpus or (int(os.environ["CURATE_RAY_NUM_CPUS"]) if os.environ.get("CURATE_RAY_NUM_CPUS") else None)
    # the object store: Ray's own sizing (30% of RAM) unless CURATE_RAY_OBJECT_STORE says (the tests keep it small)
    store = int(os.environ["CURATE_RAY_OBJECT_STORE"]) if os.environ.get("CURATE_RAY_OBJECT_STORE") else None
    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", object_store_memory=store,
             logging_level="WARNING", log_to_driver=True, configure_logging=True)


def shutdown() -> None:
    """Stop this process's Ray (the embedded cluster's processes end; a joined cluster stays up)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def run_tasks(fn: Callable, jobs: Sequence[tuple], desc: str, address: str | None = None,
              num_cpus_per_task: float = 1, max_in_flight: int | None = None,
              label: Callable = lambda job: job, num_gpus_per_task: float = 0) -> tuple[list, list]:
    """Run fn(*job) as Ray tasks with a bounded window, showing progress with total and ETA.
    Returns (results, failures) where failures are (label(job), error message). A crashed worker is retried by
    Ray; an exception in fn is a failure of that job only (its shard stays incomplete for the next run)."""
    import ray

    init(address)
    if num_gpus_per_task or held_cpus() > ray.cluster_resources().get("CPU", 1) / 4:
        release_hosts()  # idle pool actors would hold CPUs (or GPUs) these tasks need
    remote = ray.remote(num_cpus=num_cpus_per_task, num_gpus=num_gpus_per_task, max_retries=2,
                        retry_exceptions=False)(fn)
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
                        cause = getattr(exc, "cause", None) or exc  # a task's own exception, not Ray's wrapper
                        failures.append((label(job), f"{type(cause).__name__}: {cause}"))
                    bar.update(1)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    return results, failures


class ModelHost:
    """A pool actor: builds the stage's model from the spec it is handed (once per spec, again after a restart)
    and applies it to batches of rows. Hosts outlive a run, so the next actor stage of this process starts no new
    worker processes; a task stage releases them first when they hold GPUs it needs or more than a quarter of
    the CPUs (held_cpus)."""

    def __init__(self):
        self.token, self.model = None, None

    def apply(self, spec: tuple, rows: list[dict]) -> list[dict]:
        token, model_cls, model_kwargs = spec
        if token != self.token:
            self.release()
            self.model, self.token = model_cls(**model_kwargs), token
        return self.model(rows)

    def release(self) -> None:
        if self.model is not None:
            self.model = self.token = None
            import gc
            import sys

            gc.collect()
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()


_hosts: dict[tuple[float, float], list] = {}  # (GPUs, CPUs) per host -> this process's hosts


def model_hosts(size: int, gpus: float, cpus: float) -> list:
    import ray

    hosts = _hosts.setdefault((gpus, cpus), [])
    while len(hosts) < size:  # a pool starts whole (a GPU pool growing one actor at a time idles GPUs)
        hosts.append(ray.remote(ModelHost).options(num_cpus=cpus, num_gpus=gpus, max_restarts=2,
                                                   max_task_retries=2).remote())
    return hosts[:size]


def held_cpus() -> float:
    """CPUs this process's pool actors hold. A task stage keeps them when they are a quarter of the cluster's or
    less: the next actor stage (score after dedup, generate after a metric) then starts no processes, where a
    fresh host pays the model framework's import again (torch with open_clip: 5-15 CPU s on the dev machine)."""
    return sum(cpus * len(hosts) for (_, cpus), hosts in _hosts.items())


def release_hosts() -> None:
    """End this process's pool actors: their CPUs and GPUs go back to the cluster."""
    import ray

    for hosts in _hosts.values():
        for host in hosts:
            ray.kill(host)
    _hosts.clear()


def _expand_batches(expand: Callable, expand_kwargs: dict, unit, batch_size: int):
    """Ray task body (a streaming generator): the unit's rows in batches, each its own object, which goes from this
    task to an actor through the object store without passing the driver."""
    rows = expand({"unit": unit}, **expand_kwargs)
    for start in range(0, len(rows), batch_size):
        yield rows[start:start + batch_size]


def map_units(units: Sequence, expand: Callable, expand_kwargs: dict, model_cls: type, model_kwargs: dict,
              expected: dict, on_unit: Callable[[object, list[dict]], None], *, batch_size: int = 32,
              actors: int = 1, gpus_per_actor: float = 0, cpus_per_actor: float = 1, expand_cpus: float = 1,
              desc: str = "score", address: str | None = None) -> None:
    """`expand({"unit": u}, **expand_kwargs)` runs as CPU tasks (e.g. read + decode) and yields rows carrying "unit";
    `model_cls(**model_kwargs)` runs in a pool of `actors` actors (one GPU each when asked), built once per actor,
    called on batches (lists of rows) and returning rows. Rows come back to the driver, which calls
    on_unit(unit, rows) once all `expected[unit]` rows of a unit are in — so each unit's output is written whole,
    and a rerun redoes only units that were not written. Bounded: a window of expand tasks, whose batches wait in
    the object store (at most a few per task), and two batches in flight per actor."""
    import uuid
    from collections import deque

    import ray

    init(address)
    if not units:
        return
    pending: dict = {u: [] for u in units}
    todo = deque(u for u in units if expected[u] > 0)
    with tqdm(total=sum(expected[u] for u in units), desc=desc, unit="sample", dynamic_ncols=True) as bar:
        if todo:
            hosts = model_hosts(max(1, actors), gpus_per_actor, cpus_per_actor)
            spec = ray.put((uuid.uuid4().hex, model_cls, model_kwargs))
            shared = ray.put(expand_kwargs)  # one copy in the object store, not one per task
            expand_task = ray.remote(_expand_batches).options(
                num_cpus=expand_cpus, max_retries=2, num_returns="streaming", _generator_backpressure_num_objects=4)
            free_cpus = max(1.0, ray.cluster_resources().get("CPU", 1) - len(hosts) * cpus_per_actor)
            window = max(2, int(free_cpus / expand_cpus) * 2)
            streams: dict = {}  # generator -> unit
            batches: deque = deque()  # refs of batches waiting for an actor
            busy: dict = {}  # result ref -> host
            load = {i: 0 for i in range(len(hosts))}
            while todo or streams or batches or busy:
                while todo and len(streams) < window and len(batches) < 4 * len(hosts):
                    unit = todo.popleft()
                    streams[expand_task.remote(expand, shared, unit, batch_size)] = unit
                while batches and min(load.values()) < 2:
                    i = min(load, key=load.get)
                    busy[hosts[i].apply.remote(spec, batches.popleft())] = i
                    load[i] += 1
                ready, _ = ray.wait([*streams, *busy], num_returns=1, fetch_local=False)
                for item in ready:
                    if item in busy:
                        load[busy.pop(item)] -= 1
                        for row in ray.get(item):
                            unit = row["unit"]
                            pending[unit].append(row)
                            bar.update(1)
                            if len(pending[unit]) == expected[unit]:
                                on_unit(unit, pending.pop(unit))
                        continue
                    try:
                        batches.append(next(item))
                    except StopIteration:
                        del streams[item]
    for unit, rows in pending.items():  # units with nothing to process still get their (empty) output
        if len(rows) != expected[unit]:
            raise RuntimeError(f"{unit}: {len(rows)} of {expected[unit]} rows came back")
        on_unit(unit, rows)


def cluster_gpus(address: str | None = None) -> float:
    """GPUs Ray sees (0 on a CPU machine): model scorers get one GPU per actor when there are any."""
    import ray

    init(address)
    return float(ray.cluster_resources().get("GPU", 0))


def actor_cpus(gpus: float, cpus: float) -> float:
    """CPUs for each GPU actor: a quarter of the CPUs per GPU (at least 1, at most 8), for its host-side work (batch
    assembly, tokenising, copies) and its torch threads; the rest decode and run the CPU scorers. 1 without GPUs."""
    return 1.0 if gpus < 1 else float(min(8, max(1, int(cpus / gpus / 4))))


def _settings(stage) -> tuple[dict, object]:
    """The stage's config as its provenance stores it (JSON) and its input fingerprint."""
    return json.loads(json.dumps(stage.config(), sort_keys=True, default=str)), stage.fingerprint()


def refusal(stage) -> Exception | None:
    """The ProvenanceMismatch a run of `stage` without force would stop with (its recorded config or input differs
    from now), else None: lets a command that runs several stages refuse before the first one starts, and force
    only the stages whose settings changed."""
    from curate import provenance

    existing = stage.read_provenance()
    if existing is None:
        return None
    try:
        provenance.check_resume(existing, *_settings(stage))
    except provenance.ProvenanceMismatch as mismatch:
        return mismatch
    return None


def clear_unfinished(stage) -> None:
    """What killed runs of `stage` left (no writer of its outputs runs now): files staged for publication in its
    outputs, and the scratch folders of this host's processes that are gone. Workers clear their own hosts'."""
    from curate import storage

    for folder in stage.outputs:
        storage.remove_staged_files(folder)
    storage.remove_orphaned_scratch()


def run_stage(stage, *, force: bool = False, address: str | None = None) -> dict:
    """Run one stage under the contract of curate.stage: checks before anything is written, provenance
    and the resume check (refused on changed inputs or settings unless `force`, which resets the stage),
    only the units still to do, progress, and the summary. Provenance says complete only without failures."""
    from curate import provenance, storage
    from curate.stage import expand_unit, process_unit

    stage.check()
    config, fingerprint = _settings(stage)
    existing = stage.read_provenance()
    if existing is not None and force:
        stage.reset()
        existing = None
    provenance.check_resume(existing, config, fingerprint)
    storage.makedirs(storage.parent(stage.provenance_path))
    record = provenance.record(stage.name, config, fingerprint, **stage.record())
    storage.write_json(stage.provenance_path, dict(record, complete=False))
    clear_unfinished(stage)
    stage.prepare()
    units = stage.todo()
    if stage.uses_actors:
        r = stage.resources
        init(address)  # before any question to the cluster (CPU-only stages ask no GPU count first)
        gpus = cluster_gpus(address) if r.gpus_per_actor else 0
        actors = r.actors or (int(gpus) if gpus >= 1 else 1)
        import ray

        cpus = actor_cpus(gpus, ray.cluster_resources().get("CPU", 1))
        model_cls, model_kwargs = stage.model()
        done: list = []

        def on_unit(unit, rows):
            stage.write(unit, rows)
            done.append(unit)

        map_units(units, expand_unit, {"stage": stage}, model_cls, model_kwargs,
                  {u: stage.expected_rows(u) for u in units}, on_unit, batch_size=r.batch_size, actors=actors,
                  gpus_per_actor=r.gpus_per_actor if gpus >= 1 else 0, cpus_per_actor=cpus, expand_cpus=r.cpus,
                  desc=stage.name,
                  address=address)
        failures: list = []
    else:
        import ray

        init(address)
        gpus = stage.resources.gpus if stage.resources.gpus and cluster_gpus(address) >= 1 else 0
        shared = ray.put(stage) if units else None  # one copy in the object store, not one per task
        done, failures = run_tasks(process_unit, [(shared, u) for u in units], desc=stage.name, address=address,
                                   num_cpus_per_task=stage.resources.cpus, num_gpus_per_task=gpus,
                                   max_in_flight=stage.resources.units_in_flight or None, label=lambda job: job[1])
    for folder in stage.scratch_dirs:  # every unit came back: what is left there is a killed run's
        storage.remove(folder, recursive=True)
    summary = stage.finish(done, failures)
    storage.write_json(stage.provenance_path, dict(record, complete=not failures, summary=summary))
    return summary
