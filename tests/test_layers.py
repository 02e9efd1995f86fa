"""curate's imports form layers: no module imports one that (directly or through others) imports it back, and no
package (curate.shards, curate.download, curate.eval, ...) or top-level module does either. Read from the source
(ast), lazy imports inside functions included."""

import ast
import itertools
from pathlib import Path

import curate

ROOT = Path(curate.__file__).parent


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the curate modules it imports. `from a.b import c` points at a.b.c when that is a module, else at
    a.b (a package's own __init__ runs first either way: that structural edge is not counted)."""
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    counter, index, low, stack, on_stack, found = itertools.count(), {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = next(counter)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> str:
    """curate.shards.reader -> curate.shards; curate.storage -> curate.storage."""
    return ".".join(module.split(".")[:2])


def test_modules_import_without_cycles():
    assert cycles(import_graph()) == []


def test_packages_and_top_level_modules_import_without_cycles():
    layers: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        for target in targets:
            if layer_of(module) != layer_of(target) and target != "curate":
                layers.setdefault(layer_of(module), set()).add(layer_of(target))
    assert cycles(layers) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# What a CLI call, a pipeline driver and a worker of a weight-free stage import: no model framework. torch with
# open_clip costs 5-8 CPU s per process on the 2-core dev machine, paid by every `curate` call and every Ray
# worker that unpickles a stage (a score task of motion and quality, a select task, a download task).
LIGHT = ("curate.cli", "curate.pipeline", "curate.scoring.stage", "curate.scoring.motion_score",
         "curate.scoring.technical_quality", "curate.selection", "curate.download.stage", "curate.caption.stage",
         "curate.split.stage", "curate.report", "curate.stats.query", "curate.weightfile")
HEAVY = ("torch", "open_clip", "transformers", "torchvision", "img2dataset")


def test_cli_pipeline_and_weight_free_stages_import_no_model_framework():
    import subprocess
    import sys

    probe = f"import sys; import {', '.join(LIGHT)}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert found.strip() == "[]"
    # and the probe can fail: a module that does import torch is seen
    heavy = subprocess.run([sys.executable, "-c", probe.replace("import sys;", "import sys, torch;", 1)],
                           capture_output=True, text=True, check=True).stdout
    assert "torch" in heavy
