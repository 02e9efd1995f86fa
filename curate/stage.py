"""The stage contract: what a stage declares (inputs, outputs, resources) and the hooks the runner calls.

A stage turns dataset folders into a dataset folder (or a table) shard by shard. The runner
(curate.engine.run_stage) owns everything around the work, once for all stages:

    check() -> provenance resume check (--force: reset()) -> provenance written -> what killed runs left is
    cleared -> prepare() -> todo() -> work on Ray (tasks, or an actor pool) -> finish() -> scratch removed
    -> provenance marked complete

Nothing is written before check() passes. A run can be killed at any moment: files are published whole (staged as
`.NAME.tmp[PID]` beside their target, or in a local scratch folder named with host and pid), and the runner
removes what a killed run left: staged files in `outputs`, the `scratch_dirs`, and scratch folders of this
host's processes that are gone. A stage runs its work one of two ways:
- tasks: `process(unit)` runs as one Ray task per unit (CPUs from `resources.cpus`);
- actors: `expand(unit)` (CPU tasks, e.g. read + decode) yields rows, `model()` builds the callable that
  `resources.actors` actors (one GPU each when there are GPUs) apply to batches (a list of rows in, rows out),
  and the driver calls `write(unit, rows)` once every row of a unit is back — so each unit's output is written
  whole.
Units are shard ids (strings) or tuples of plain values: they travel to Ray workers, as does the stage.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from curate import storage
from curate.config import to_mapping
from curate.shards.folder import DatasetFolder


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0  # per task (task stages) or per expand task (actor stages)
    gpus: float = 0.0  # per task (task stages), given only when the cluster has GPUs (else the task runs on CPU)
    actors: int = 0  # > 0: an actor pool of this size runs model() (actor stages)
    gpus_per_actor: float = 0.0
    batch_size: int = 32  # rows per model batch (actor stages)
    units_in_flight: int = 0  # task stages: at most this many units at once (0: twice the CPUs per task)


class Stage:
    """Base class: override what the stage needs; the defaults do nothing."""

    name = "stage"
    inputs: tuple[str, ...] = ()  # folders/files read, for describe()
    outputs: tuple[str, ...] = ()  # folders/files written (final after check()); staged leftovers there are removed
    scratch_dirs: tuple[str, ...] = ()  # folders of work in progress only: removed once the units ran
    resources = Resources()

    @property
    def provenance_path(self) -> str:
        raise NotImplementedError

    def config(self) -> dict:
        """Settings that decide the outputs: a rerun with other settings is refused unless forced."""
        return {}

    def fingerprint(self) -> str:
        """The inputs' content: a rerun over other inputs is refused unless forced."""
        return ""

    def check(self) -> None:
        """Everything that can fail before any work (weights, columns, paths); raises with the reason."""

    def reset(self) -> None:
        """--force: remove what this stage wrote before, so it starts over."""

    def prepare(self) -> None:
        """Once per run, after provenance is written (e.g. plan the download)."""

    def record(self) -> dict:
        """Extra provenance fields (model ids and hashes, predicate, source folder...)."""
        return {}

    def todo(self) -> list:
        """Units still to do, judged by content (a unit whose inputs changed is to do again)."""
        return []

    def process(self, unit) -> Any:  # tasks
        raise NotImplementedError

    def expand(self, unit) -> list[dict]:  # actors: rows of one unit, each with a "unit" column
        raise NotImplementedError

    def model(self) -> tuple[type, dict]:  # actors: (callable class, constructor kwargs)
        raise NotImplementedError

    def expected_rows(self, unit) -> int:  # actors: rows expand(unit) yields
        raise NotImplementedError

    def write(self, unit, rows: list[dict]) -> None:  # actors: on the driver, all rows of one unit
        raise NotImplementedError

    def finish(self, done: list, failures: list[tuple[Any, str]]) -> dict:
        """The run's summary (printed as JSON by the CLI); `failed_shards` lists failed units."""
        return {"ran": len(done), "failed_shards": [{"shard": str(u), "error": e} for u, e in failures]}

    def describe(self) -> list[str]:
        """Lines for `curate run --describe`: what runs, on what, with which resources."""
        r = self.resources
        how = (f"{r.actors or 'auto'} actor(s), {r.gpus_per_actor or 0} GPU each when the cluster has GPUs, "
               f"batch {r.batch_size}" if self.uses_actors else f"{r.cpus:g} CPU per shard task")
        return [f"{self.name}: {', '.join(self.inputs)} -> {', '.join(self.outputs)}", f"  {how}"]

    @property
    def uses_actors(self) -> bool:
        return type(self).model is not Stage.model

    def read_provenance(self) -> dict | None:
        from curate import storage

        return storage.read_json(self.provenance_path) if storage.exists(self.provenance_path) else None


class FolderToFolderStage(Stage):
    """A stage that reads dataset folder `root` and writes dataset folder `out` (subclasses are dataclasses with
    `root`, `out` and their options `section`); provenance lives in `out`, and `out` is no setting of the run."""

    config_excludes: tuple[str, ...] = ("out",)  # section fields that do not decide the outputs

    def __post_init__(self):
        self.root, self.out = storage.absolute(self.root), storage.absolute(self.out)
        self.folder = DatasetFolder(self.out)
        self.inputs = (self.root,)
        self.outputs = (self.out,)
        self.scratch_dirs = (self.folder.work_dir,)

    @property
    def provenance_path(self) -> str:
        return self.folder.provenance_path

    def config(self) -> dict:
        return {k: v for k, v in to_mapping(self.section).items() if k not in self.config_excludes}


@functools.cache
def _clear_orphans_once() -> None:
    """Once per worker process: scratch left on this host by processes that were killed (a driver on one node
    cannot see another node's temp folder)."""
    storage.remove_orphaned_scratch()


def process_unit(stage: Stage, unit) -> Any:
    """Ray task body: the stage object travels with the task (plain fields only)."""
    _clear_orphans_once()
    return stage.process(unit)


def expand_unit(item: dict, stage: Stage) -> list[dict]:
    """Expand-task body of actor stages (curate.engine.map_units)."""
    _clear_orphans_once()
    return stage.expand(item["unit"])

