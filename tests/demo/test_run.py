"""`curate demo`'s model: trained on the toy world by its own recipes (image -> F-base), sampled by world.demo_gif."""

import pyarrow.parquet as pq
from PIL import Image

from curate.demo import run, world
from curate.shards.folder import DatasetFolder
from curate.train.checkpoints import latest_checkpoint, load_checkpoint, recipe_of_checkpoint


def test_the_demo_model_learns_the_toy_world(tmp_path, ray_local):
    run_dir, gif = run.train_world(str(tmp_path), steps=2, ray_address=None, echo=lambda *_: None,
                                   image_steps=2, sample_steps=2, videos_per_combo=1, images_per_pair=2)
    folder = DatasetFolder(str(tmp_path / "world_dataset"))
    rows = [r for sid in folder.complete_shards() for r in pq.read_table(folder.manifest(sid)).to_pylist()]
    assert len(rows) == len(world.read_truth(str(tmp_path / "world"))) and {r["status"] for r in rows} == {"success"}
    assert {r["modality"] for r in rows} == {"video", "image"}
    assert all(world.parse_caption(r["caption"]) for r in rows)  # the world's captions, not the demo corpus's

    ckpt = load_checkpoint(latest_checkpoint(run_dir))
    recipe = recipe_of_checkpoint(ckpt)
    assert ckpt["step"] == 2 and recipe.name == "toy_f_base"
    assert recipe.init_from == str(tmp_path / "image_run")  # F-base starts from the world's image model
    image = recipe_of_checkpoint(load_checkpoint(latest_checkpoint(recipe.init_from)))
    assert image.name == "toy_image" and not image.init_from
    with Image.open(gif) as picture:  # the world's clip, scaled up 8x
        assert picture.n_frames == recipe.data.frames
        assert picture.size == (recipe.data.width * 8, recipe.data.height * 8)
