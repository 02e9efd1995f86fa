"""Trainer: stages touch only their groups (bitwise), LoRA leaves the base alone, exact resume, overfitting."""

from __future__ import annotations

import json

import pytest
import torch

from curate.train import checkpoints
from curate.train.presets import build_unet
from curate.train.recipe import recipe_from_dict
from curate.train.checkpoints import export_weights
from curate.train.loop import Trainer
from curate.train.unet3d import parameter_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_recipe(data_dir, **changes):
    recipe = {
        "name": "t", "stage": "base", "trainable": "all",
        "model": {"preset": "tiny", "overrides": {"in_channels": 3, "out_channels": 3}},
        "data": {"dirs": [str(data_dir)], "frames": 2, "height": 8, "width": 8, "image_ratio": 0.25, "num_workers": 0},
        "optim": {"lr": 2e-3, "warmup_steps": 2},
        "train": {"steps": 2, "batch_size": 2, "micro_batch_size": 2, "log_every": 1, "checkpoint_every": 2, "ema_decay": 0.9},
    }
    for key, value in changes.items():
        recipe[key] = {**recipe[key], **value} if isinstance(value, dict) else value
    return recipe_from_dict(recipe)


@pytest.fixture(scope="module")
def base_run(one_thread, mixed_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("base")
    Trainer(tiny_recipe(mixed_dataset), run).run()
    return run


def changed_groups(model, before):
    after = model.state_dict()
    groups = parameter_groups(model)
    return {g: sorted(n for n in names if n in before and not torch.equal(before[n], after[n])) for g, names in groups.items()}


@pytest.mark.parametrize("trainable", ["spatial", "temporal"])
def test_finetune_step_changes_only_its_group(mixed_dataset, base_run, tmp_path, trainable):
    recipe = tiny_recipe(mixed_dataset, stage="finetune", trainable=trainable, fps_group="none", init_from=str(base_run),
                         train={"steps": 1})
    trainer = Trainer(recipe, tmp_path)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    changed = changed_groups(trainer.model, before)
    other = {"spatial": "temporal", "temporal": "spatial"}[trainable]
    assert changed[trainable] and not changed[other] and not changed["fps"]


@pytest.mark.parametrize("image_mode, temporal_trains", [("skip_temporal", False), ("t1", True)])
def test_image_mode_decides_whether_images_reach_the_temporal_modules(mixed_dataset, base_run, tmp_path, image_mode, temporal_trains):
    recipe = tiny_recipe(mixed_dataset, stage="finetune", trainable="all", init_from=str(base_run),
                         data={"image_ratio": 1.0, "image_mode": image_mode}, train={"steps": 1})
    trainer = Trainer(recipe, tmp_path)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    changed = changed_groups(trainer.model, before)
    assert changed["spatial"] and bool(changed["temporal"]) == temporal_trains


def test_lora_finetune_keeps_base_bitwise_and_exports_merged(mixed_dataset, base_run, tmp_path):
    recipe = tiny_recipe(mixed_dataset, stage="finetune", trainable="spatial", method="lora", lora_rank=2, lora_alpha=2,
                         init_from=str(base_run), train={"steps": 1})
    trainer = Trainer(recipe, tmp_path)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if "lora_" not in k}
    trainer.run()
    after = trainer.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    ckpt = checkpoints.load_checkpoint(checkpoints.latest_checkpoint(tmp_path))
    exported = export_weights(ckpt, use_ema=False)
    assert set(exported) == set(before)  # a plain U-Net state dict: adapters merged away
    assert any(not torch.equal(exported[k], before[k]) for k in before)


def test_two_n_steps_equal_n_then_resume_then_n(mixed_dataset, tmp_path):
    recipe = tiny_recipe(mixed_dataset, train={"steps": 4, "micro_batch_size": 1})  # 2 accumulated micro-batches
    straight = Trainer(recipe, tmp_path / "straight")
    straight.run()
    Trainer(recipe, tmp_path / "resumed").run(steps=2)
    resumed = Trainer(recipe, tmp_path / "resumed")  # picks up step_00000002.pt
    assert resumed.step == 2
    resumed.run()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(straight.ema[k], resumed.ema[k]) for k in straight.ema)
    log = [json.loads(line) for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4] and {"loss", "lr", "samples_per_s"} <= set(log[0])


def test_resume_refuses_a_changed_recipe(mixed_dataset, base_run):
    with pytest.raises(ValueError, match="optim.lr"):
        Trainer(tiny_recipe(mixed_dataset, optim={"lr": 1e-4}), base_run)


def test_tiny_model_overfits_a_few_clips(tmp_path, dataset_writer):
    data = dataset_writer(tmp_path / "two", videos=2, images=0, per_shard=2)
    recipe = tiny_recipe(data, data={"image_ratio": 0.0}, optim={"lr": 5e-3, "warmup_steps": 3},
                         train={"steps": 20, "caption_dropout": 0.0, "checkpoint_every": 1000})
    losses = [e.loss for e in Trainer(recipe, tmp_path / "run").run()]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)


def test_init_from_sd21_and_videocrafter2_checkpoints(mixed_dataset, tmp_path):
    """P-base from an SD-2.1-layout image U-Net, and any stage from a VideoCrafter2-layout checkpoint."""
    torch.manual_seed(1)
    image = build_unet("tiny", in_channels=3, out_channels=3, temporal_conv=False, temporal_attention=False,
                       addition_attention=False, fps_cond=False)
    sd21 = tmp_path / "sd21.ckpt"
    torch.save({"state_dict": {f"model.diffusion_model.{k}": v for k, v in image.state_dict().items()}}, sd21)
    trainer = Trainer(tiny_recipe(mixed_dataset, trainable="temporal", init_from=f"sd21:{sd21}"), tmp_path / "p")
    ours = trainer.model.state_dict()
    assert torch.equal(ours["input_blocks.1.0.in_layers.2.weight"], image.state_dict()["input_blocks.1.0.in_layers.2.weight"])
    assert trainable_names(trainer.model) == set(parameter_groups(trainer.model)["temporal"]) | set(parameter_groups(trainer.model)["fps"])

    video = build_unet("tiny", in_channels=3, out_channels=3)
    vc2 = tmp_path / "model.ckpt"
    torch.save({"state_dict": {f"model.diffusion_model.{k}": v for k, v in video.state_dict().items()}}, vc2)
    trainer = Trainer(tiny_recipe(mixed_dataset, init_from=f"videocrafter2:{vc2}"), tmp_path / "f")
    assert all(torch.equal(v, video.state_dict()[k]) for k, v in trainer.model.state_dict().items())


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_resume_loads_the_ema_into_the_trainers_own_tensors(mixed_dataset, base_run, monkeypatch):
    """The EMA is allocated where the parameters live; a resume must copy the checkpoint's CPU tensors into it,
    not replace it with them (on a GPU the first update then mixed devices and raised)."""
    loaded = {}
    real = checkpoints.load_checkpoint

    def capture(path, *args, **kwargs):
        loaded.update(real(path, *args, **kwargs))
        return loaded

    monkeypatch.setattr(checkpoints, "load_checkpoint", capture)
    trainer = Trainer(tiny_recipe(mixed_dataset), base_run)
    assert trainer.step == 2 and loaded
    for name, value in trainer.ema.items():
        assert value.data_ptr() != loaded["ema"][name].data_ptr()  # the trainer's tensor, filled from the file
        assert value.device == trainer.trainable[name].device and value.dtype == torch.float32
        assert torch.equal(value, loaded["ema"][name].float())


def test_ema_update_is_the_lerp_of_every_trainable_parameter(mixed_dataset, tmp_path):
    trainer = Trainer(tiny_recipe(mixed_dataset, train={"steps": 1}), tmp_path)
    with torch.no_grad():
        for param in trainer.trainable.values():
            param.add_(1.0)
    before = {n: t.clone() for n, t in trainer.ema.items()}
    trainer.step = 5
    decay = min(trainer.recipe.train.ema_decay, 6 / 15)
    trainer.update_ema()
    for name, param in trainer.trainable.items():
        assert torch.allclose(trainer.ema[name], before[name] + (1 - decay) * (param.float() - before[name]))


def test_old_checkpoints_are_pruned_to_the_newest_k(mixed_dataset, tmp_path):
    recipe = tiny_recipe(mixed_dataset, train={"steps": 4, "checkpoint_every": 1, "keep_checkpoints": 2})
    Trainer(recipe, tmp_path).run()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_00000003.pt", "step_00000004.pt"]
    resumed = Trainer(recipe.replace(train={"steps": 5}), tmp_path)
    assert resumed.step == 4
