import io
import json
import tarfile

from curate.sources import read


def add(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_annotations_from_tgz_with_local_archives(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    with tarfile.open(imgs / "000.tgz", "w:gz") as tar:
        add(tar, "000/abc.jpg", b"jpeg")
    lines = [
        {"img_path": "./000/abc.jpg", "prompt": "a castle, 8k --ar 16:9", "Task1": {"Style": ["x"]},
         "Task2": {"Caption": "A castle on a hill."}},
        {"img_path": "./001/def.jpg", "prompt": "no archive for me"},
        {"prompt": "no path"},
    ]
    jsonl = "\n".join(json.dumps(x) for x in lines).encode() + b"\n{broken json\n"
    with tarfile.open(tmp_path / "train_anno_realease_repath.jsonl.tgz", "w:gz") as tar:
        add(tar, "train_anno_realease_repath.jsonl", jsonl)
    rows = [r for c in read("journeydb", str(tmp_path / "train_anno_realease_repath.jsonl.tgz"),
                            images=str(imgs)) for r in c]
    assert len(rows) == 4
    assert rows[0]["path"] == f"{imgs}/000.tgz::000/abc.jpg" and rows[0]["caption"] == "a castle, 8k --ar 16:9"
    assert rows[0]["key"] == "jdb_000_abc" and rows[0]["input_error"] is None
    assert "A castle on a hill." in rows[0]["extra"]
    assert "not found and no url" in rows[1]["input_error"]
    assert rows[2]["input_error"] == "missing img_path"
    assert rows[3]["input_error"].startswith("invalid json")
    captions = [r for c in read("journeydb", str(tmp_path / "train_anno_realease_repath.jsonl.tgz"),
                                images=str(imgs), caption_field="caption") for r in c]
    assert captions[0]["caption"] == "A castle on a hill."
