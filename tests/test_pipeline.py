"""`curate run` end to end through the CLI: download -> score -> dedup -> select, then a rerun that skips it all."""

import json

from typer.testing import CliRunner

from curate.cli import app
from curate.stats.query import connect, run

runner = CliRunner()


def summaries_of(output: str) -> list[dict]:
    """The JSON summary line of each stage (progress bars on stderr share the captured output)."""
    return [json.loads(line[line.index('{"'):]) for line in output.split("\n") if '{"' in line]


def test_curate_run_walks_the_recipe(ray_local, media_server, tmp_path):
    names = ["video_000.mp4", "video_001.mp4", "video_003.mp4", "image_000.jpg", "broken_missing.mp4"]
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"{media_server.base_url}/{n}\tcaption of {n}\n" for n in names))
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(f"""name: tiny
download: {{source: urls, input: {urls}, shard_size: 2, allow_private_addresses: true, retries: 0}}
score: {{scorers: [motion, quality, ocr, dedup], batch_size: 4}}
select: {{where: "modality = 'image' OR motion_score > 1.0", video_size: [32, 32], image_size: [32, 32], out: sel}}
""")
    out = tmp_path / "ds"
    result = runner.invoke(app, ["run", str(recipe), "--out", str(out)])
    assert result.exit_code == 0, result.output
    summaries = summaries_of(result.output)
    assert [next(iter(s)) for s in summaries] == ["download", "score", "dedup", "select"]
    assert summaries[0]["download"]["shards"] == 3 and summaries[1]["score"]["scored_shards"] == 3
    rows = run(connect(str(out)), "SELECT key, status, motion_score FROM samples ORDER BY row").to_pylist()
    assert len(rows) == len(names) and rows[-1]["status"] == "failed_to_download"
    (expected,) = connect(str(out)).execute(
        "SELECT count(*) FROM samples WHERE status = 'success' AND (modality = 'image' OR motion_score > 1.0)").fetchone()
    assert summaries[3]["select"]["kept"] == expected == 3  # video_003 is the demo's static clip
    assert len(run(connect(str(tmp_path / "sel")), "SELECT key FROM samples").to_pylist()) == expected
    # the ocr scorer through the stage: video_000 carries the demo's watermark, and --where reads its columns
    marked = run(connect(str(out)), "SELECT key, ocr_text FROM samples WHERE ocr_static_text_area > 0.05").to_pylist()
    assert [(r["key"], r["ocr_text"]) for r in marked] == [(rows[0]["key"], "STOCK")]

    again = runner.invoke(app, ["run", str(recipe), "--out", str(out)])
    assert again.exit_code == 0, again.output
    summaries = summaries_of(again.output)
    assert summaries[0]["download"]["ran"] == 0 and summaries[1]["score"]["scored_shards"] == 0
