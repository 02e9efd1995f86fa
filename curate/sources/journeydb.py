"""JourneyDB reader: annotation jsonl (plain or the distributed .jsonl.tgz) + image tgz archives, on local disk or
in object storage (read front to back)."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator

from curate import storage
from curate.sources.sample import make_key, sample

CAPTION_FIELDS = ("prompt", "caption")


def _lines(path: str) -> Iterator[str]:
    if path.endswith((".tgz", ".tar.gz")):
        with storage.open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:gz") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".jsonl"):
                    with tar.extractfile(member) as f:
                        yield from io.TextIOWrapper(f, encoding="utf-8")
    else:
        with storage.open(path, "r", encoding="utf-8") as f:
            yield from f


def archive_member(images_dir: str, img_path: str) -> tuple[str, str]:
    """'./000/abc.jpg' -> ('IMAGES/000.tgz', '000/abc.jpg'): the annotation path inside its archive."""
    member = img_path[2:] if img_path.startswith("./") else img_path.lstrip("/")
    folder = member.split("/", 1)[0]
    return storage.join(images_dir, f"{folder}.tgz"), member


def read(path: str, images: str | None = None, caption_field: str = "prompt",
         batch_rows: int = 65536) -> Iterator[list[dict]]:
    """Caption is the Midjourney prompt by default (`caption_field: caption` takes Task2.Caption); both are kept
    in extra. Images come from `images`/NNN.tgz when present (no network); else from a `url` key if any."""
    if caption_field not in CAPTION_FIELDS:
        raise ValueError(f"caption_field must be one of {CAPTION_FIELDS}")
    images = images or storage.join(storage.parent(path), "imgs")
    present: dict[str, bool] = {}  # archive -> exists: one look-up per archive, not per image
    chunk: list[dict] = []
    for row, line in enumerate(_lines(path)):
        line = line.strip()
        try:
            ann = json.loads(line) if line else None
        except json.JSONDecodeError as exc:
            ann, bad = None, f"invalid json: {exc.msg}"
        else:
            bad = None if isinstance(ann, dict) else "not a json object"
        if bad or not ann.get("img_path"):
            chunk.append(sample(key=make_key("jdb_row", str(row)), row=row, source="journeydb", modality="image",
                                caption="", input_error=bad or "missing img_path"))
        else:
            task2 = ann.get("Task2") if isinstance(ann.get("Task2"), dict) else {}
            caption = ann.get("prompt") if caption_field == "prompt" else (task2.get("Caption") or ann.get("prompt"))
            archive, member = archive_member(images, ann["img_path"])
            if archive not in present:
                present[archive] = storage.exists(archive)
            local = present[archive]
            url = None if local else ann.get("url")
            extra = {"img_path": ann["img_path"], "prompt": ann.get("prompt"), "caption": task2.get("Caption"),
                     "task1": ann.get("Task1")}
            chunk.append(sample(
                key=make_key("jdb_", member.rsplit(".", 1)[0].replace("/", "_")), row=row, source="journeydb", modality="image",
                caption=caption, url=url, path=f"{archive}::{member}" if local else None, extra=extra,
                input_error=None if (local or url) else f"image archive {archive} not found and no url"))
        if len(chunk) >= batch_rows:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
