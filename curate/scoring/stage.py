"""The score stage: shards -> decoded samples + CPU scorers (tasks) -> model scorers (actor pool) -> scores/<scorer>/.
A run that needs no model scorer has no actor pool: each task decodes, scores and writes its shard.

Each scorer writes its own folder (scores/clip/, scores/motion/, ...) with one table per shard and its own
_provenance.json, so a column has exactly one home. A shard's score table records the digest of what it
scored (the shard's success keys and media hashes): when that changes — e.g. retry-failed turned failures
into successes — the next run scores the shard again. Scorers asked for together share one decode (and
one CLIP pass for clip + aesthetic). Which scorers exist, and where each runs: curate.scoring.registry; what
the workers run: curate.scoring.workers. The dataset folder may be a local path or an object-store URL (curate.storage):
tars are read by ranged reads, tables are published whole.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curate import schema, storage
from curate.scoring import clip_score
from curate.scoring.clip_score import CLIP_EMBEDDING
from curate.scoring.embeddings import write_embeddings
from curate.scoring.options import DEFAULT_CLIP, ScoreSection
from curate.scoring.registry import CPU, MODEL, ScorerSpec, specs
from curate.scoring.scorer_set import ScorerSet
from curate.scoring.workers import ScoreModel, expand_shard, leave_behind, score_on_cpu
from curate.shards.derived import shard_content, stale_shards, write_table
from curate.shards.folder import DatasetFolder
from curate.stage import Resources, Stage


@dataclass
class ScoreStage(Stage):
    """The per-sample scorers asked for (registry order) over every success sample of a dataset folder."""

    root: str
    section: ScoreSection

    name = "score"

    def __post_init__(self):
        self.root = storage.absolute(self.root)
        self.folder = DatasetFolder(self.root)
        # the specs travel with the stage to its workers, so the workers build exactly the scorers the driver chose
        self.specs: list[ScorerSpec] = [s for s in specs(self.section.scorers) if s.per_sample]
        if not self.specs:
            raise ValueError(f"no per-sample scorer among {self.section.scorers}")
        self.scorers = [s.name for s in self.specs]
        self.inputs = (self.folder.shards_dir,)
        self.outputs = tuple(self.scorer_dir(s) for s in self.scorers)
        if clip_score.NAME in self.scorers:
            self.outputs += (storage.join(self.root, "embeddings"),)
        models = any(s.runs == MODEL for s in self.specs)
        self.resources = Resources(actors=self.section.actors or 0, gpus_per_actor=1.0 if models else 0.0,
                                   batch_size=self.section.batch_size)
        self.needs: dict[str, set[str]] = {}
        self.content: dict[str, tuple[str, int]] = {}
        self.clip_resize: tuple[int, str] | None = None
        self.documented: pa.Schema | None = None
        self.with_media = False

    def describe(self) -> list[str]:
        s = self.section
        lines = [f"  {', '.join(self.scorers)} on {s.frames} frames ({s.positions}); decoding in CPU tasks, each "
                 "scorer writes scores/<scorer>/"]
        for spec in self.specs:
            where = "beside the decode, in the CPU tasks" if spec.runs == CPU else "in the model actors"
            weights = f"; weights: {', '.join(spec.weights)}" if spec.weights else ""
            lines.append(f"    {spec.name}: {where}{weights}")
        return super().describe() + lines

    def scorer_dir(self, scorer: str) -> str:
        return storage.join(self.root, "scores", scorer)

    @property
    def provenance_path(self) -> str:
        return storage.join(self.root, "scores", "_provenance.json")  # the last score run, as a whole

    def scorer_config(self, spec: ScorerSpec) -> dict:
        """The settings one scorer's folder is built with: frame sampling, and each option it reads (its default
        when unset), so a change to another scorer's options does not make this one stale."""
        s = self.section
        config = {"frames": s.frames, "positions": s.positions}
        for option, default in spec.options.items():
            value = getattr(s, option)
            config[option] = default if value is None else value
        return config

    def config(self) -> dict:
        return {"scorers": {spec.name: self.scorer_config(spec) for spec in self.specs}}

    def read_provenance(self) -> dict | None:
        """The settings each requested scorer's folder was built with (a scorer without a folder yet takes
        this run's), so the runner refuses a scorer whose settings changed, whatever else is asked."""
        stored = {}
        for scorer in self.scorers:
            path = storage.join(self.scorer_dir(scorer), "_provenance.json")
            if storage.exists(path):
                stored[scorer] = storage.read_json(path)["config"]
        if not stored:
            return None
        config = json.loads(json.dumps(self.config(), sort_keys=True, default=str))
        config["scorers"].update(stored)
        return {"config": config, "input_fingerprint": ""}

    def check(self) -> None:
        if not self.folder.complete_shards():
            raise FileNotFoundError(f"{self.root} has no complete shards to score")
        self.documented = schema.load("scores")  # read once here: write() may run in a task on another node
        for spec in self.specs:
            missing = [column for column in spec.columns if column not in self.documented.names]
            if missing:
                raise ValueError(f"scorer {spec.name} writes {', '.join(missing)}, not documented in "
                                 "schemas/scores.yaml: document each column (type, meaning, range) there")
        scorers = ScorerSet(self.specs, self.section)
        scorers.check_weights()
        self.clip_resize = scorers.clip_first_resize()
        self.with_media = scorers.needs_media

    def reset(self) -> None:
        for scorer in self.scorers:
            storage.remove(self.scorer_dir(scorer), recursive=True)
        if clip_score.NAME in self.scorers:
            storage.remove(storage.join(self.root, "embeddings"), recursive=True)

    def record(self) -> dict:
        return {"dataset": self.root, "scorers": self.scorers}

    def todo(self) -> list[str]:
        self.content = {sid: shard_content(self.folder.manifest(sid)) for sid in self.folder.complete_shards()}
        self.needs = {}
        for scorer in self.scorers:
            for sid in stale_shards(self.scorer_dir(scorer), self.content):
                self.needs.setdefault(sid, set()).add(scorer)
        return sorted(self.needs)

    def expand(self, unit: str) -> list[dict]:
        s = self.section
        rows = expand_shard(self.root, unit, s.frames, s.positions, s.decode_timeout, self.clip_resize,
                            self.with_media)
        needed = self.needs.get(unit, set(self.scorers))
        cpu = [spec for spec in self.specs if spec.runs == CPU and spec.name in needed]
        if cpu:
            rows = score_on_cpu(rows, cpu, s, s.batch_size)
        return leave_behind(rows, any(spec.runs == MODEL for spec in self.specs))

    def expected_rows(self, unit: str) -> int:
        return self.content[unit][1]

    def _model_specs(self) -> list[ScorerSpec]:
        """The model scorers this run needs (every requested one before todo() has judged the shards)."""
        needed = set().union(*self.needs.values()) if self.needs else set(self.scorers)
        return [spec for spec in self.specs if spec.runs == MODEL and spec.name in needed]

    @property
    def uses_actors(self) -> bool:
        return bool(self._model_specs())

    def model(self):
        return ScoreModel, {"specs": self._model_specs(), "options": self.section}

    def process(self, unit: str) -> str:
        """No model scorer this run: decode, score and write the shard in its task (no actor pool to start)."""
        rows = self.expand(unit)
        merged = ScoreModel([], self.section)(rows) if rows else []
        self.write(unit, merged)
        return unit

    def write(self, unit: str, rows: list[dict]) -> None:
        rows.sort(key=lambda r: r["key"])
        digest = self.content[unit][0]
        documented = self.documented or schema.load("scores")  # check() reads it once; a bare write() reads it here
        for spec in self.specs:
            if spec.name not in self.needs.get(unit, ()):
                continue
            columns = ("key",) + spec.columns
            table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows],
                                         schema=pa.schema([documented.field(c) for c in columns]))
            if spec.name == clip_score.NAME:  # the stored embedding serves dedup and retrieval
                kept = [(r["key"], np.frombuffer(r[CLIP_EMBEDDING], np.float32)) for r in rows if r.get(CLIP_EMBEDDING)]
                if kept:
                    write_embeddings(storage.join(self.root, "embeddings", f"{unit}.parquet"), [k for k, _ in kept],
                                     np.stack([e for _, e in kept]), self.section.clip_model or DEFAULT_CLIP)
            write_table(storage.join(self.scorer_dir(spec.name), f"{unit}.parquet"), table, digest)

    def finish(self, done: list, failures: list) -> dict:
        run = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        models = ScorerSet(self.specs, self.section).provenance()
        for spec in self.specs:
            storage.write_json(storage.join(self.scorer_dir(spec.name), "_provenance.json"), {
                "stage": "score", "scorer": spec.name, "config": self.scorer_config(spec), "run": run,
                "columns": list(spec.columns), "model": models.get(spec.name),
                "shards_scored_this_run": sorted(s for s, names in self.needs.items() if spec.name in names)})
        return {"scored_shards": len(self.needs) - len(failures), "skipped_shards": len(self.content) - len(self.needs),
                "scorers": self.scorers, "failed_shards": [{"shard": unit, "error": error} for unit, error in failures]}
