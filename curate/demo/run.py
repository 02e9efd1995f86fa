"""`curate demo`: generate the corpus, serve it on 127.0.0.1, run pipelines/demo.yaml on it end to end."""

from __future__ import annotations

import os
import shutil

from curate.bundled import recipe_path
from curate.demo import corpus, server

DEMO_RECIPE = str(recipe_path("demo"))


def prepare(out: str, seed: int = 0) -> tuple[server.MediaServer, str]:
    """Corpus into out/corpus, a server on loopback, and the URL list (url TAB caption) that points at it."""
    root = os.path.join(out, "corpus")
    shutil.rmtree(root, ignore_errors=True)
    entries = corpus.generate(root, seed=seed)
    srv = server.start(os.path.join(root, "media"))
    urls = os.path.join(root, "urls.txt")
    with open(urls, "w", encoding="utf-8") as f:
        for e in entries:
            name = e["name"]
            url = f"{srv.base_url}/{name}"
            if name.startswith("html/"):
                url = f"{srv.base_url}/{name}"
            f.write(f"{url}\t{e['caption']}\n")
    return srv, urls
