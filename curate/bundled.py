"""Finds the files that ship with curate: table schemas and recipes, by name, from any working directory.

In the repository they are schemas/ and pipelines/; setup.py maps those folders to the packages
curate._schemas and curate._pipelines, so the editable install (`pip install -e .`) and the built wheel
both reach them through the import system, and this module is the one place that does.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _folder(package: str) -> Path:
    return Path(str(resources.files(package)))


def schema_path(name: str) -> Path:
    """schemas/NAME.yaml."""
    path = _folder("curate._schemas") / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"no schema {name!r} in {path.parent}; known: {', '.join(known)}")
    return path


def recipes() -> list[str]:
    """Names of the bundled recipes, relative to pipelines/ without .yaml: `demo`, `train/tiny_f_base`, ..."""
    root = _folder("curate._pipelines")
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file: a path that exists is used as is; otherwise a bundled recipe named like `tiny_f_base`,
    `train/tiny_f_base.yaml`, `demo` or `pipelines/demo.yaml` (pipeline recipes before training ones)."""
    given = Path(name_or_path)
    if given.is_file():
        return given
    root = _folder("curate._pipelines")
    name = given.as_posix().removesuffix(".yaml").removeprefix("pipelines/")
    for candidate in (root / f"{name}.yaml", root / "train" / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"recipe not found: {name_or_path} is not a file nor a bundled recipe "
                            f"({', '.join(recipes())})")
