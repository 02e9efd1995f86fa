"""The stage runner: checks before any write, provenance and resume, --force, failures, task and actor stages."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest

from curate import engine, storage
from curate.provenance import ProvenanceMismatch
from curate.stage import Resources, Stage

# Ray workers cannot import this test module: its stages travel by value.
from ray import cloudpickle  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass
class CountStage(Stage):
    """Writes out/NNNNN.txt per unit; units in `bad` raise; a failing check raises before anything."""

    root: str
    n: int
    bad: tuple = ()
    check_error: str | None = None

    name = "count"

    def __post_init__(self):
        self.outputs = (os.path.join(self.root, "out"),)
        self.scratch_dirs = (os.path.join(self.root, "_work"),)

    @property
    def provenance_path(self):
        return os.path.join(self.root, "provenance.json")

    def config(self):
        return {"n": self.n}

    def fingerprint(self):
        return "input-v1"

    def check(self):
        if self.check_error:
            raise ValueError(self.check_error)

    def reset(self):
        shutil.rmtree(self.root, ignore_errors=True)

    def todo(self):
        return [f"{i:05d}" for i in range(self.n) if not os.path.exists(os.path.join(self.root, "out", f"{i:05d}.txt"))]

    def process(self, unit):
        if unit in self.bad:
            raise RuntimeError(f"unit {unit} broke")
        os.makedirs(os.path.join(self.root, "out"), exist_ok=True)
        with open(os.path.join(self.root, "out", f"{unit}.txt"), "w") as f:
            f.write(unit)
        return unit


class Doubler:
    def __init__(self, factor):
        self.factor = factor

    def __call__(self, rows: list[dict]) -> list[dict]:
        return [dict(r, value=r["value"] * self.factor) for r in rows]


@dataclass
class DoubleStage(Stage):
    """An actor stage: unit u expands to int(u) rows; the model doubles them; write() gets each unit whole."""

    root: str
    units: tuple = ("0", "3", "5")

    name = "double"
    resources = Resources(actors=1, batch_size=2)

    @property
    def provenance_path(self):
        return os.path.join(self.root, "provenance.json")

    def todo(self):
        return [u for u in self.units if not os.path.exists(os.path.join(self.root, f"{u}.json"))]

    def expand(self, unit):
        return [{"unit": unit, "value": i} for i in range(int(unit))]

    def expected_rows(self, unit):
        return int(unit)

    def model(self):
        return Doubler, {"factor": 2}

    def write(self, unit, rows):
        with open(os.path.join(self.root, f"{unit}.json"), "w") as f:
            json.dump(sorted(r["value"] for r in rows), f)


def provenance(root):
    with open(os.path.join(root, "provenance.json")) as f:
        return json.load(f)


def test_a_failing_check_writes_nothing(ray_local, tmp_path):
    root = str(tmp_path / "stage")
    with pytest.raises(ValueError, match="expected keys"):
        engine.run_stage(CountStage(root, 3, check_error="weights.pth: expected keys layers.0.weight"))
    assert not os.path.exists(root)


def test_resume_refusal_force_and_failures(ray_local, tmp_path):
    root = str(tmp_path / "stage")
    summary = engine.run_stage(CountStage(root, 4, bad=("00002",)))
    assert summary["ran"] == 3 and summary["failed_shards"] == [{"shard": "00002", "error": "RuntimeError: unit 00002 broke"}]
    assert provenance(root)["complete"] is False and provenance(root)["input_fingerprint"] == "input-v1"

    summary = engine.run_stage(CountStage(root, 4))  # the rerun does only the unit that failed
    assert summary["ran"] == 1 and not summary["failed_shards"] and provenance(root)["complete"] is True
    assert sorted(os.listdir(os.path.join(root, "out"))) == [f"{i:05d}.txt" for i in range(4)]

    with pytest.raises(ProvenanceMismatch, match=r"\['n'\]"):
        engine.run_stage(CountStage(root, 5))
    assert len(os.listdir(os.path.join(root, "out"))) == 4  # refused before touching anything
    summary = engine.run_stage(CountStage(root, 2), force=True)
    assert summary["ran"] == 2 and sorted(os.listdir(os.path.join(root, "out"))) == ["00000.txt", "00001.txt"]
    assert provenance(root)["config"] == {"n": 2}


KILLED_WRITER = """
import os, signal, sys
from curate import storage
with open(os.path.join(storage.scratch_dir("work"), "part.mp4"), "wb") as f:
    f.write(b"half a video")
os.makedirs(sys.argv[1], exist_ok=True)
with open(os.path.join(sys.argv[1], f".00001.txt.tmp{os.getpid()}"), "w") as f:
    f.write("half a table")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_runner_removes_what_killed_runs_left(ray_local, tmp_path, monkeypatch):
    """A writer SIGKILLed mid-publication leaves a staged file beside its target and its scratch folder; a killed
    task leaves its unit's folder in _work. The next run removes those, and keeps a live process's scratch, another
    host's (a shared temp folder) and a user's own file."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("CURATE_SCRATCH", str(scratch))
    root = tmp_path / "stage"
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(root / "out")])
    assert killed.returncode == -9
    (root / "_work" / "00001").mkdir(parents=True)
    (root / "_work" / "00001" / "clip.mp4").write_bytes(b"half a clip")
    (root / "out" / "notes.tmp").write_text("the user's")
    live = os.path.basename(storage.scratch_dir("work"))
    elsewhere = scratch / "curate-work-another-host-1-abc123"
    elsewhere.mkdir()
    assert len(os.listdir(scratch)) == 3 and len(os.listdir(root / "out")) == 2

    assert engine.run_stage(CountStage(str(root), 2))["ran"] == 2
    assert sorted(os.listdir(root / "out")) == ["00000.txt", "00001.txt", "notes.tmp"]
    assert sorted(os.listdir(root)) == ["out", "provenance.json"]
    assert sorted(os.listdir(scratch)) == sorted([live, elsewhere.name])


def test_actor_stage_writes_each_unit_whole(ray_local, tmp_path):
    root = tmp_path / "double"
    root.mkdir()
    engine.run_stage(DoubleStage(str(root)))
    assert json.loads((root / "5.json").read_text()) == [0, 2, 4, 6, 8]
    assert json.loads((root / "3.json").read_text()) == [0, 2, 4]
    assert json.loads((root / "0.json").read_text()) == []  # a unit with no rows still gets its output
    (root / "3.json").unlink()
    engine.run_stage(DoubleStage(str(root)))
    assert json.loads((root / "3.json").read_text()) == [0, 2, 4]


def test_gpu_actors_get_a_share_of_the_cpus():
    assert engine.actor_cpus(0, 64) == 1.0  # CPU-only pools: one CPU per actor
    assert engine.actor_cpus(8, 128) == 4.0  # 16 CPUs per GPU: a quarter to the actor, the rest decode/score
    assert engine.actor_cpus(8, 16) == 1.0 and engine.actor_cpus(1, 256) == 8.0


def test_local_object_store_is_rays_own_sizing_unless_set(monkeypatch):
    import ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("CURATE_RAY_OBJECT_STORE", raising=False)
    engine.init()
    monkeypatch.setenv("CURATE_RAY_OBJECT_STORE", str(300 << 20))
    engine.init()
    assert [c["object_store_memory"] for c in calls] == [None, 300 << 20]
    assert all(c["_node_ip_address"] == "127.0.0.1" for c in calls)
