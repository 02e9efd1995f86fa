"""`curate train` refuses a run that cannot start: every problem on its own line, exit 2, run folder untouched."""

from __future__ import annotations

import pytest
import torch
import typer
import yaml

from curate.train import commands, preflight
from curate.train.autoencoder import KLAutoencoder
from curate.train.presets import build_unet
from curate.train.recipe import recipe_from_dict

TINY = {
    "name": "pf", "stage": "base", "trainable": "all",
    "model": {"preset": "tiny", "overrides": {"in_channels": 3, "out_channels": 3}},
    "data": {"frames": 2, "height": 8, "width": 8, "num_workers": 0},
    "train": {"steps": 1, "batch_size": 2, "micro_batch_size": 2},
}


def recipe_file(tmp_path, **changes):
    data = {key: dict(value) if isinstance(value, dict) else value for key, value in TINY.items()}
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def refused(recipe, data, out, capsys, **options) -> list[str]:
    """Run the CLI command; it must exit 2 without creating the run folder. Returns the error lines."""
    with pytest.raises(typer.Exit) as exit_info:
        commands.train(recipe=recipe, data=data, steps=None, out=out, workers=options.get("workers"),
                       init_from=options.get("init_from"), describe=False)
    assert exit_info.value.exit_code == 2
    assert not out.exists()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and all(line.startswith(f"error: {recipe}: ") for line in lines)
    return [line[len(f"error: {recipe}: "):] for line in lines]


def test_cpu_only_machine_refuses_a_gpu_recipe_with_the_fixes(tmp_path, mixed_dataset, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    recipe = recipe_file(tmp_path, train={"use_gpu": True, "num_workers": 2, "micro_batch_size": 1})
    [line] = refused(recipe, [mixed_dataset], tmp_path / "run", capsys)
    assert line.startswith("train.use_gpu: the recipe asks for 2 GPU worker(s)") and "0 GPU(s)" in line
    assert "--workers" in line and "train.use_gpu: false" in line and "cluster" in line


def test_missing_init_from_is_named(tmp_path, mixed_dataset, capsys):
    recipe = recipe_file(tmp_path, stage="finetune", trainable="spatial", init_from=str(tmp_path / "runs" / "f_base"))
    [line] = refused(recipe, [mixed_dataset], tmp_path / "run", capsys)
    assert line.startswith(f"init_from: {tmp_path / 'runs' / 'f_base'}: not found")


def test_wrong_layout_autoencoder_is_named_with_the_file(tmp_path, mixed_dataset, capsys):
    small = KLAutoencoder(ch=32, ch_mult=(1, 2), num_res_blocks=1)  # an AutoencoderKL, but not SD's
    path = tmp_path / "vae.ckpt"
    torch.save({"state_dict": {f"first_stage_model.{k}": v for k, v in small.state_dict().items()}}, path)
    recipe = recipe_file(tmp_path, model={"preset": "tiny", "overrides": {"in_channels": 4, "out_channels": 4}},
                         autoencoder={"kind": "sd_kl", "path": str(path)})
    [line] = refused(recipe, [mixed_dataset], tmp_path / "run", capsys)
    assert line.startswith(f"autoencoder.path: {path} is not a SD AutoencoderKL")
    assert "missing" in line and "wrong shapes" in line


def test_batch_not_divisible_by_micro_batch_x_workers(tmp_path, mixed_dataset, capsys):
    recipe = recipe_file(tmp_path, train={"batch_size": 6, "micro_batch_size": 2})
    [line] = refused(recipe, [mixed_dataset], tmp_path / "run", capsys, workers=2)
    assert line.startswith("train.batch_size: 6 is not a multiple of train.micro_batch_size x train.num_workers (2 x 2 = 4)")


def test_every_problem_is_listed_at_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    recipe = recipe_file(tmp_path, stage="finetune", trainable="spatial", init_from=str(tmp_path / "nothing.pt"),
                         autoencoder={"kind": "sd_kl", "path": str(tmp_path / "vae.ckpt")},
                         train={"batch_size": 3, "use_gpu": True})
    lines = refused(recipe, [tmp_path / "no_data"], tmp_path / "run", capsys)
    keys = [line.split(":")[0] for line in lines]
    assert keys == ["train.batch_size", "train.use_gpu", "data.dirs", "init_from", "model.overrides.in_channels",
                    "autoencoder.path"], lines


def test_sound_files_pass_and_a_wrong_unet_checkpoint_is_refused(tmp_path, mixed_dataset):
    """No false alarm for a matching VideoCrafter2-layout / SD 2.1-layout checkpoint; a different preset is caught."""
    unet = build_unet("tiny", in_channels=3, out_channels=3)
    good = tmp_path / "model.ckpt"
    torch.save({"state_dict": {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}}, good)
    image = build_unet("tiny", in_channels=3, out_channels=3, temporal_conv=False, temporal_attention=False,
                       addition_attention=False, fps_cond=False)
    sd21 = tmp_path / "sd21.ckpt"
    torch.save({"state_dict": {f"model.diffusion_model.{k}": v for k, v in image.state_dict().items()}}, sd21)
    base = {**TINY, "data": {**TINY["data"], "dirs": [str(mixed_dataset)]}}
    for init in (f"videocrafter2:{good}", f"sd21:{sd21}"):
        assert preflight.check(recipe_from_dict({**base, "init_from": init}), tmp_path / "run", gpus=0) == []
    wide = build_unet("tiny", in_channels=3, out_channels=3, model_channels=64, num_head_channels=32)
    torch.save({"state_dict": {f"model.diffusion_model.{k}": v for k, v in wide.state_dict().items()}}, good)
    [line] = preflight.check(recipe_from_dict({**base, "init_from": f"videocrafter2:{good}"}), tmp_path / "run", gpus=0)
    assert line.startswith(f"init_from: {good} is not a U-Net (preset 'tiny')") and "wrong shapes" in line
    assert not (tmp_path / "run").exists()


def test_the_real_preset_is_checked_on_the_meta_device(tmp_path):
    """f_spa_dir as shipped, given a tiny VideoCrafter2-layout checkpoint: the 1.4B-parameter layout is built
    without memory and the file is refused by name; the machine is told to have the 8 GPUs it asks for."""
    from pathlib import Path

    from curate.train.recipe import load_recipe

    tiny = build_unet("tiny", in_channels=4, out_channels=4, context_dim=1024)
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {f"model.diffusion_model.{k}": v for k, v in tiny.state_dict().items()}}, path)
    recipe = load_recipe(Path(__file__).resolve().parents[2] / "pipelines" / "train" / "f_spa_dir.yaml")
    lines = preflight.check(recipe.replace(init_from=f"videocrafter2:{path}"), tmp_path / "run", gpus=8)
    [line] = [line for line in lines if line.startswith("init_from")]
    assert line.startswith(f"init_from: {path} is not a U-Net (preset 'videocrafter2_512')") and "missing" in line
    assert not any(line.startswith("train.use_gpu") for line in lines)


def test_a_run_folder_of_another_recipe_is_refused_before_anything_runs(tmp_path, mixed_dataset, capsys):
    from curate.train import checkpoints

    run = tmp_path / "run"
    trained = recipe_from_dict({**TINY, "data": {**TINY["data"], "dirs": [str(mixed_dataset)]}, "optim": {"lr": 1e-4}})
    checkpoints.save_checkpoint(checkpoints.checkpoint_path(run, 1), {
        "model": {}, "ema": None, "opt": {}, "step": 1, "config": {"recipe": trained.to_dict()}})
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    with pytest.raises(typer.Exit) as exit_info:
        commands.train(recipe=recipe_file(tmp_path, optim={"lr": 2e-4}), data=[mixed_dataset], steps=None, out=run,
                       workers=None, init_from=None, describe=False)
    assert exit_info.value.exit_code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "train.resume: " in line and "step_00000001.pt was trained with a different recipe (optim.lr)" in line
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
