"""Recipes: every shipped recipe loads; unknown keys and inconsistent stages are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from curate.train.recipe import RecipeError, load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "pipelines" / "train"
PAPER = ["f_base", "p_base", "f_spa_dir", "f_spa_lora", "p_spa_lora", "f_temp_dir", "f_temp_lora", "p_temp_lora",
         "f_spatemp_dir", "f_spatemp_lora", "f_spa_dir_laion"]


@pytest.mark.parametrize("name", PAPER)
def test_paper_recipe_and_its_tiny_twin_agree_on_what_trains(name):
    paper, tiny = load_recipe(RECIPES / f"{name}.yaml"), load_recipe(RECIPES / f"tiny_{name}.yaml")
    assert (paper.stage, paper.trainable, paper.method) == (tiny.stage, tiny.trainable, tiny.method)
    assert paper.model.preset == "videocrafter2_512" and tiny.model.preset == "tiny"
    if paper.stage == "base":
        assert (paper.data.width, paper.data.height, paper.optim.lr, paper.train.batch_size, paper.train.steps) == (512, 320, 5e-5, 128, 270_000)
    else:
        assert (paper.data.width, paper.data.height, paper.train.batch_size, paper.train.steps) == (512, 512, 256, 30_000)
        assert paper.data.image_ratio == 1.0


def write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(RecipeError, match=r"unknown key\(s\) optim\.learning_rate"):
        load_recipe(write(tmp_path, "name: x\nstage: base\noptim: {learning_rate: 1.0e-4}\n"))
    with pytest.raises(RecipeError, match=r"unknown key\(s\) colour"):
        load_recipe(write(tmp_path, "name: x\nstage: base\ncolour: red\n"))


def test_bad_values_are_refused(tmp_path):
    with pytest.raises(RecipeError, match="needs init_from"):
        load_recipe(write(tmp_path, "name: x\nstage: finetune\ntrainable: spatial\n"))
    with pytest.raises(RecipeError, match="image_mode"):
        load_recipe(write(tmp_path, "name: x\nstage: base\ndata: {image_mode: sometimes}\n"))
    with pytest.raises(RecipeError, match="optim.lr: expected a number"):
        load_recipe(write(tmp_path, "name: x\nstage: base\noptim: {lr: fast}\n"))
    # the batch split is a preflight problem (listed with the others), and the loop cannot start with it
    uneven = load_recipe(write(tmp_path, "name: x\nstage: base\ntrain: {batch_size: 6, micro_batch_size: 4}\n"))
    assert uneven.batch_problem().startswith("train.batch_size: 6 is not a multiple")
    with pytest.raises(RecipeError, match="not a multiple"):
        uneven.accumulation


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    assert load_recipe(write(tmp_path, "name: x\nstage: base\noptim: {lr: 5e-5}\n")).optim.lr == 5e-5
