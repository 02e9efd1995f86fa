"""The built wheel carries schemas and recipes: installed into a fresh venv, curate downloads and trains from any folder."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from curate import bundled
from curate.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_INPUTS = ("pyproject.toml", "setup.py", "README.md", "curate", "schemas", "pipelines")


def _run(args: list, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", RAY_USAGE_STATS_ENABLED="0", CURATE_RAY_NUM_CPUS="2")
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built (no network, no build isolation) from a copy of the checkout, so no build/ lands in the repo."""
    src = tmp_path_factory.mktemp("src")
    for name in PACKAGE_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", out, src],
         cwd=src)
    (found,) = out.glob("curate-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> SimpleNamespace:
    """A fresh venv holding only the curate wheel; a .pth lends it this interpreter's site-packages (torch, ray...)
    as a plain path entry, so the editable install's finder there is never run and the repo is not importable."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", root], check=True, timeout=120)
    python = root / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    lent = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    (site / "zz_lent_site_packages.pth").write_text("".join(f"{p}\n" for p in sorted(lent)))
    # --ignore-installed: the editable curate seen through the lent path is neither reused nor uninstalled
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", wheel], cwd=root)
    return SimpleNamespace(python=python, curate=root / "bin" / "curate", site=site)


def _repo_files(folder: str) -> set[str]:
    return {p.relative_to(ROOT / folder).as_posix() for p in (ROOT / folder).rglob("*.yaml")}


def test_wheel_carries_every_schema_and_recipe(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {n.removeprefix("curate/_schemas/") for n in names if n.startswith("curate/_schemas/") and n.endswith(".yaml")} \
        == _repo_files("schemas")
    assert {n.removeprefix("curate/_pipelines/") for n in names if n.startswith("curate/_pipelines/") and n.endswith(".yaml")} \
        == _repo_files("pipelines")
    assert "curate/_pipelines/train/tiny_f_base.yaml" in names


def test_installed_wheel_downloads_and_trains_from_another_folder(venv, media_server, demo_media, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    curate = venv.curate
    where = _run([venv.python, "-c", "import json, curate, curate.bundled as b; print(json.dumps([curate.__file__, "
                  "str(b.schema_path('manifest')), str(b.recipe_path('tiny_f_base'))]))"], cwd=work)
    for path in json.loads(where.stdout):
        assert Path(path).is_relative_to(venv.site) and not Path(path).is_relative_to(ROOT), path
    assert "download" in _run([curate, "--help"], cwd=work).stdout

    good = [e for e in demo_media[1] if "broken" not in e["name"]]  # 6 videos, 4 images: a batch of 4 from each
    (work / "urls.txt").write_text("".join(f"{media_server.base_url}/{e['name']}\t{e['caption']}\n" for e in good))
    _run([curate, "download", "urls", "urls.txt", "--out", "data", "--allow-private-addresses"], cwd=work)
    assert glob.glob(str(work / "data" / "shards" / "*.tar"))
    manifest = pq.read_table(sorted(glob.glob(str(work / "data" / "shards" / "*.parquet")))).to_pylist()
    assert sorted(r["status"] for r in manifest) == ["success"] * len(good)

    _run([curate, "train", "tiny_f_base", "--data", "data", "--steps", "1", "--out", "run"], cwd=work)
    assert [p.name for p in (work / "run" / "checkpoints").iterdir()] == ["step_00000001.pt"]


def test_bundled_files_by_name_in_the_editable_install(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # names resolve without the checkout as working folder
    train = ROOT / "pipelines" / "train" / "tiny_f_base.yaml"
    for name in ("tiny_f_base", "tiny_f_base.yaml", "train/tiny_f_base", "pipelines/train/tiny_f_base.yaml"):
        assert bundled.recipe_path(name).resolve() == train
    assert bundled.recipe_path("demo").resolve() == ROOT / "pipelines" / "demo.yaml"
    assert bundled.schema_path("manifest").resolve() == ROOT / "schemas" / "manifest.yaml"
    own = tmp_path / "tiny_f_base"  # an existing file is the user's recipe, never shadowed by a bundled name
    own.write_text("name: mine\n")
    assert bundled.recipe_path("tiny_f_base").resolve() == own
    with pytest.raises(FileNotFoundError, match="train/tiny_f_base"):
        bundled.recipe_path("no_such_recipe")
    with pytest.raises(FileNotFoundError, match="manifest"):
        bundled.schema_path("no_such_table")


def test_relative_paths_in_a_bundled_recipe_resolve_against_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_pipeline(str(bundled.recipe_path("demo")))
    assert recipe.download.input == str(ROOT / "demo_out" / "corpus" / "urls.txt")
