"""Shared fixtures: one loopback media server and one local Ray per session, small generated media."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def demo_media(tmp_path_factory):
    """The demo corpus (videos of moving shapes, images, broken files), generated once."""
    from curate.demo import corpus

    root = tmp_path_factory.mktemp("corpus")
    entries = corpus.generate(str(root), videos=6, images=4, seed=1)
    return str(root / "media"), entries


@pytest.fixture(scope="session")
def media_server(demo_media):
    from curate.demo import server

    srv = server.start(demo_media[0])
    yield srv
    srv.shutdown()


@pytest.fixture(scope="session")
def ray_local():
    """Embedded Ray on 127.0.0.1, small object store; shared by every engine test. Four logical CPUs on
    two cores, so an actor pool left idle by one test cannot starve the next test's workers of slots."""
    from curate import engine

    engine.init(num_cpus=4)
    import ray

    yield ray
    ray.shutdown()
