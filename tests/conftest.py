"""Shared fixtures: one loopback media server, one S3 server (moto) and one local Ray per session, small media.

The S3 endpoint and fake credentials are pinned in the environment when this file is imported, before any client
(boto3, s3fs, pyarrow, Ray's workers and cluster nodes) exists, so that nothing can fall back to a public host."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("CURATE_RAY_OBJECT_STORE", str(256 << 20))  # small: every Ray the suite starts (and its CLI runs)



# `make test` runs two workers, each test file whole on one (--dist loadfile), handed out in collection order: the
# files that take minutes go first, so the short ones fill the other worker instead of a long file running last
# alone (measured: the cluster and toy-reproduction files, started last, ran alone for the final ~9 minutes).
SLOW_FILES_FIRST = (  # by their share of a whole run (junit times of `make test`), longest first
    "tests/cluster/test_cluster.py", "tests/test_scripts.py", "tests/storage/test_score_select_s3.py",
    "tests/eval/test_eval_run.py", "tests/download/test_job.py", "tests/storage/test_download_s3.py",
    "tests/scoring/test_stage.py", "tests/test_reproduce_toy.py", "tests/train/test_describe.py",
    "tests/train/test_distributed.py", "tests/split/test_split_stage.py", "tests/caption/test_caption_stage.py",
    "tests/test_packaging.py", "tests/train/test_loop.py", "tests/scripts/test_gpu_check.py",
)


def pytest_collection_modifyitems(items):
    rank = {path: n for n, path in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PORT = _free_port()
ENDPOINT = f"http://127.0.0.1:{PORT}"
os.environ.update(AWS_ENDPOINT_URL=ENDPOINT, AWS_ENDPOINT_URL_S3=ENDPOINT, AWS_ACCESS_KEY_ID="testing",
                  AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def tiny_clip_folder(tmp_path_factory):
    """A randomly initialised tiny CLIP (seed 0) saved as an open_clip model folder; read-only for every test."""
    from tiny_clip import random_folder

    return random_folder(tmp_path_factory.mktemp("tiny_clip"))


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


@pytest.fixture(scope="session")
def ray_address(ray_local) -> str:
    """The session's Ray, for a `curate` subprocess to join (--ray-address): a CLI run killed mid-way and its rerun
    then start no Ray of their own (a cold start is most of such a test's time)."""
    return ray_local.get_runtime_context().gcs_address


class _S3Server:
    """moto's S3 server on PORT, started on first use. The port was free when picked; in one session with Ray
    (whose workers bind ephemeral ports) it may not stay so, and moto's start would then wait forever on a
    server thread that died: a refused bind moves the endpoint to a fresh port instead."""

    server = None

    @classmethod
    def start(cls) -> str:
        from moto.server import ThreadedMotoServer

        global PORT, ENDPOINT
        while cls.server is None:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", PORT))
                except OSError:
                    PORT = _free_port()
                    continue
            ENDPOINT = f"http://127.0.0.1:{PORT}"
            os.environ.update(AWS_ENDPOINT_URL=ENDPOINT, AWS_ENDPOINT_URL_S3=ENDPOINT)
            cls.server = ThreadedMotoServer(ip_address="127.0.0.1", port=PORT, verbose=False)
            cls.server.start()
        return ENDPOINT


@pytest.fixture(scope="session")
def s3_server():
    yield _S3Server.start()
    _S3Server.server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh bucket per test; yields its s3:// URL."""
    import boto3

    name = f"t-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser(monkeypatch):
    """Debian's headless Chromium through Selenium, offline (pages under test are file:// or on 127.0.0.1)."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make setup installs them)")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never try to download a browser or driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--autoplay-policy=no-user-gesture-required", "--no-first-run", "--disable-extensions",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--proxy-server=direct://", "--proxy-bypass-list=*"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()
