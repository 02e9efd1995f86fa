"""The blind A/B study app: pairing of generated folders, Range serving from tars, the durable vote log, the
rater session, the HTTP API, and a whole session in a real headless Chromium."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import threading
import time

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from curate.eval.study.app import COOKIE, make_app, make_server, open_study
from curate.eval.study.media import RangeNotSatisfiable, parse_range
from curate.eval.study.pairs import find_pairs
from curate.eval.study.results import results
from curate.eval.study.session import StaleVote
from curate.eval.study.votes import VoteLog, read_votes

PROMPTS = {"p0": "a red fox running in snow", "p1": "waves at sunset", "p2": "a city street at night",
           "p3": "a cat playing piano"}


def _mp4(colour: tuple[int, int, int], frames: int = 6) -> bytes:
    """A tiny H.264 clip (what browsers play) of one flat colour with a moving bar."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            image = np.empty((48, 64, 3), np.uint8)
            image[:] = colour
            image[:, i * 8:i * 8 + 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def write_generated(root: str, colour: tuple[int, int, int], rows: list[dict]) -> str:
    """A generated dataset folder as the generate stage writes it: shards/00000.tar (KEY.mp4, KEY.txt) and the
    manifest shards/00000.parquet with key, caption, status, prompt_key, checkpoint, seed. Rows whose status is
    not success have no media."""
    shards = os.path.join(root, "shards")
    os.makedirs(shards)
    clip = _mp4(colour)
    with tarfile.open(os.path.join(shards, "00000.tar"), "w", format=tarfile.PAX_FORMAT) as tar:
        for row in rows:
            if row["status"] != "success":
                continue
            for name, data in ((f"{row['key']}.mp4", clip), (f"{row['key']}.txt", row["caption"].encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    table = pa.Table.from_pylist([dict(row, shard="00000", checkpoint=os.path.basename(root) + ".pt") for row in rows],
                                 schema=pa.schema([("key", pa.string()), ("caption", pa.string()),
                                                   ("status", pa.string()), ("prompt_key", pa.string()),
                                                   ("seed", pa.int64()), ("shard", pa.string()),
                                                   ("checkpoint", pa.string())]))
    pq.write_table(table, os.path.join(shards, "00000.parquet"))
    return root


def _rows(prompts: list[str], seed: int = 7, prefix: str = "v", with_key: bool = True) -> list[dict]:
    return [{"key": f"{prefix}{i:03d}", "caption": PROMPTS[p], "status": "success",
             "prompt_key": p if with_key else None, "seed": seed} for i, p in enumerate(prompts)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """gen_a and gen_b share p0..p3 at seed 7 (four pairs); gen_b also has p0 at seed 8 (unpaired) and a
    failed row for p1 at seed 9 (no media); gen_a lists its prompts in another order and with other keys."""
    root = tmp_path_factory.mktemp("generated")
    a = write_generated(str(root / "gen_a"), (200, 30, 30), _rows(["p3", "p1", "p0", "p2"], prefix="a"))
    b_rows = _rows(["p0", "p1", "p2", "p3"], prefix="b") + [
        {"key": "b100", "caption": PROMPTS["p0"], "status": "success", "prompt_key": "p0", "seed": 8},
        {"key": "b101", "caption": PROMPTS["p1"], "status": "failed_to_decode", "prompt_key": "p1", "seed": 9}]
    b = write_generated(str(root / "gen_b"), (30, 30, 200), b_rows)
    return a, b


# ---- pairing -------------------------------------------------------------------------------------------------


def test_pairs_join_same_prompt_and_seed_across_folders(folders):
    pairs = find_pairs(list(folders))
    assert sorted(p.match["prompt_key"] for p in pairs) == ["p0", "p1", "p2", "p3"]
    for pair in pairs:
        assert {pair.a.model, pair.b.model} == {"gen_a", "gen_b"}
        assert pair.match["seed"] == 7
        assert pair.a.caption == pair.b.caption == PROMPTS[pair.match["prompt_key"]]
        with open(pair.a.tar, "rb") as f:  # the offsets point at the mp4 bytes inside the tar
            f.seek(pair.a.offset)
            assert f.read(pair.a.size)[4:8] == b"ftyp"
    assert len({p.id for p in pairs}) == 4
    assert {p.id for p in find_pairs(list(folders))} == {p.id for p in pairs}  # stable ids across restarts


def test_pairs_fall_back_to_caption_when_prompt_key_missing(tmp_path):
    a = write_generated(str(tmp_path / "x" / "model"), (1, 2, 3), _rows(["p0", "p1"], with_key=False))
    b = write_generated(str(tmp_path / "y" / "model"), (4, 5, 6), _rows(["p1", "p2"], prefix="y", with_key=False))
    c = write_generated(str(tmp_path / "z"), (7, 8, 9), _rows(["p1", "p0"], seed=3, prefix="z", with_key=False))
    pairs = find_pairs([a, b, c])
    assert [p.match for p in pairs] == [{"caption": PROMPTS["p1"], "seed": 7}]  # c's seed differs
    # two folders with one basename are told apart by their path
    assert {pairs[0].a.model, pairs[0].b.model} == {os.path.normpath(a), os.path.normpath(b)}


def test_three_folders_give_every_pair_of_models(tmp_path, folders):
    c = write_generated(str(tmp_path / "gen_c"), (9, 200, 9), _rows(["p0", "p1"], prefix="c"))
    pairs = find_pairs([*folders, c])
    models = sorted((p.a.model, p.b.model) for p in pairs)
    assert models == [("gen_a", "gen_b")] * 4 + [("gen_a", "gen_c")] * 2 + [("gen_b", "gen_c")] * 2


def test_one_folder_or_no_shared_prompt_is_refused(tmp_path, folders):
    with pytest.raises(ValueError, match="at least two"):
        find_pairs([folders[0]])
    lonely = write_generated(str(tmp_path / "lonely"), (0, 0, 0), _rows(["p0"], seed=99))
    with pytest.raises(ValueError, match="no pairs"):
        open_study([folders[0], lonely], str(tmp_path / "votes.jsonl"))
    with pytest.raises(FileNotFoundError, match="not a dataset folder"):
        find_pairs([folders[0], str(tmp_path / "missing")])


# ---- ranges --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header,expected", [
    (None, None), ("", None), ("bytes=0-99", (0, 99)), ("bytes=10-", (10, 999)), ("bytes=-100", (900, 999)),
    ("bytes=-5000", (0, 999)), ("bytes=990-5000", (990, 999)), ("bytes=0-0", (0, 0)),
    ("items=0-5", None), ("bytes=0-1,5-9", None), ("bytes=-", None)])
def test_parse_range(header, expected):
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-1005", "bytes=-0", "bytes=9-3"])
def test_parse_range_unsatisfiable(header):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)


# ---- votes ---------------------------------------------------------------------------------------------------


def _vote(choice: str, rater: str = "r", pair: str = "p") -> dict:
    return {"rater": rater, "pair": pair, "choice": choice, "left": {"model": "a"}, "right": {"model": "b"}}


def test_vote_log_appends_and_survives_a_torn_last_line(tmp_path):
    path = str(tmp_path / "votes" / "log.jsonl")
    log = VoteLog(path)
    log.append(_vote("left"))
    with pytest.raises(ValueError, match="choice"):
        log.append(_vote("middle"))
    log.close()
    with open(path, "ab") as f:  # a crash in the middle of a write
        f.write(b'{"rater": "r", "pair": "q", "cho')
    assert [v["choice"] for v in read_votes(path)] == ["left"]
    log = VoteLog(path)  # reopening ends the torn line, so the next vote is whole
    log.append(_vote("tie", pair="q"))
    log.close()
    assert [v["choice"] for v in read_votes(path)] == ["left", "tie"]
    assert read_votes(str(tmp_path / "none.jsonl")) == []


# ---- session -------------------------------------------------------------------------------------------------


def test_session_never_repeats_a_pair_and_resumes_from_the_log(tmp_path, folders):
    votes = str(tmp_path / "votes.jsonl")
    study = open_study(list(folders), votes, seed=1)
    first = study.next("ann")
    assert study.next("ann") is first  # a reload shows the same pair on the same sides
    record = study.vote("ann", first.token, "left")
    assert record["winner"] == first.left.model and record["left"]["model"] != record["right"]["model"]
    with pytest.raises(StaleVote):
        study.vote("ann", first.token, "right")  # voting twice on one pair
    second = study.next("ann")
    with pytest.raises(StaleVote):
        study.vote("bob", second.token, "left")  # another rater's presentation
    assert second.pair.id != first.pair.id
    assert study.next("bob").pair.id != first.pair.id  # bob gets a pair with fewer votes first
    study.votes.close()

    study = open_study(list(folders), votes, seed=2)  # a restart
    assert study.progress("ann") == {"done": 1, "total": 4}
    with pytest.raises(StaleVote):
        study.vote("ann", second.token, "left")  # tokens of the old process are gone
    seen = {first.pair.id}
    while (shown := study.next("ann")) is not None:
        assert shown.pair.id not in seen
        seen.add(shown.pair.id)
        study.vote("ann", shown.token, "tie")
    assert len(seen) == 4 and study.progress("ann") == {"done": 4, "total": 4}
    study.votes.close()
    assert [v["choice"] for v in read_votes(votes)] == ["left", "tie", "tie", "tie"]


def test_sides_are_randomised_per_pair(tmp_path, folders):
    study = open_study(list(folders), str(tmp_path / "votes.jsonl"), seed=0)
    a_left = 0
    for i in range(200):  # 200 raters, one pair each
        shown = study.next(f"r{i}")
        a_left += shown.left.model == "gen_a"
        assert {shown.left.model, shown.right.model} == {"gen_a", "gen_b"}
    assert 70 < a_left < 130  # binomial(200, 0.5): 6.9 standard deviations
    study.votes.close()


# ---- HTTP ----------------------------------------------------------------------------------------------------


def test_http_api_pages_votes_and_ranged_video(tmp_path, folders):
    votes = str(tmp_path / "votes.jsonl")
    study = open_study(list(folders), votes, seed=3)
    client = TestClient(make_app(study), base_url="http://127.0.0.1")
    assert 'name="rater"' in client.get("/").text
    assert client.get("/api/next").status_code == 401
    assert client.get("/", params={"rater": "bad id!"}).status_code == 400
    response = client.get("/", params={"rater": "ann"}, follow_redirects=False)
    assert response.status_code == 303 and client.cookies.get(COOKIE) == "ann"
    page = client.get("/").text
    assert 'id="vote-left"' in page and "gen_a" not in page and "gen_b" not in page

    state = client.get("/api/next").json()
    assert state["progress"] == {"done": 0, "total": 4}
    pair = state["pair"]
    assert pair["prompt"] in PROMPTS.values()
    assert "gen_" not in json.dumps(pair)  # nothing in the page's data names a model

    shown = study.next("ann")
    whole = client.get(pair["left"])
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes" and len(whole.content) == shown.left.size
    part = client.get(pair["left"], headers={"range": "bytes=4-11"})
    assert part.status_code == 206 and part.content == whole.content[4:12] == whole.content[4:8] + whole.content[8:12]
    assert part.headers["content-range"] == f"bytes 4-11/{shown.left.size}" and part.headers["content-length"] == "8"
    tail = client.get(pair["left"], headers={"range": "bytes=-10"})
    assert tail.content == whole.content[-10:]
    bad = client.get(pair["left"], headers={"range": f"bytes={shown.left.size}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{shown.left.size}"
    head = client.head(pair["right"])
    assert head.status_code == 200 and head.headers["content-length"] == str(shown.right.size) and not head.content
    assert client.get("/media/not-a-token").status_code == 404

    assert client.post("/api/vote", json={"token": pair["token"], "choice": "sideways"}).status_code == 400
    assert client.post("/api/vote", content=b"not json").status_code == 400
    assert client.post("/api/vote", json={"token": pair["token"], "choice": "right"}).json()["progress"]["done"] == 1
    assert client.post("/api/vote", json={"token": pair["token"], "choice": "left"}).status_code == 409
    study.votes.close()
    [vote] = read_votes(votes)
    assert vote["rater"] == "ann" and vote["choice"] == "right" and vote["winner"] == shown.right.model
    assert vote["left"] == {"model": shown.left.model, "folder": shown.left.folder, "key": shown.left.key}


# ---- a real browser (the `browser` fixture: tests/conftest.py) ------------------------------------------------


class _Server:
    """`curate study serve`'s server (make_server, default host) run in a thread; port 0 lets the kernel choose."""

    def __init__(self, folders, votes: str, seed: int, port: int = 0):
        self.server, self.study = make_server(list(folders), port=port, votes=votes, seed=seed)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            assert self.thread.is_alive(), "the study server did not start"
            time.sleep(0.02)
        self.host, self.port = self.server.servers[0].sockets[0].getsockname()[:2]

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)
        self.study.votes.close()


def _wait(predicate, timeout: float = 10.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(None, timeout, poll_frequency=0.05).until(lambda _: predicate())


def test_a_rater_session_in_headless_chromium(tmp_path, folders, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    votes = str(tmp_path / "votes.jsonl")
    server = _Server(folders, votes, seed=5)
    assert server.host == "127.0.0.1"  # loopback unless told otherwise
    url = f"http://127.0.0.1:{server.port}/"
    try:
        browser.get(url)
        browser.find_element(By.ID, "rater").send_keys("alice")
        browser.find_element(By.ID, "start").click()
        progress = lambda: browser.find_element(By.ID, "progress").text  # noqa: E731

        def on_screen(done: int) -> str:
            """Wait until `done` votes are counted and both videos of a pair have decoded frames; its prompt."""
            _wait(lambda: progress().startswith(f"{done} of 4"))
            _wait(lambda: browser.execute_script(
                "const v = [document.getElementById('left'), document.getElementById('right')];"
                "return v.every(x => x.readyState >= 2 && x.videoWidth === 64);"))
            return browser.find_element(By.ID, "prompt").text

        assert on_screen(0) in PROMPTS.values()
        browser.find_element(By.ID, "vote-left").click()
        first_reload_prompt = on_screen(1)
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)
        prompt = on_screen(2)
        browser.refresh()  # a reload mid-study shows the same pair again, nothing lost
        assert on_screen(2) == prompt and first_reload_prompt != prompt
        browser.find_element(By.TAG_NAME, "body").send_keys("2")

        on_screen(3)
        server.stop()  # a restart of the server: votes come back from the log
        server = _Server(folders, votes, seed=6, port=server.port)
        browser.refresh()
        on_screen(3)
        browser.find_element(By.ID, "vote-right").click()
        _wait(lambda: "All pairs rated" in browser.find_element(By.ID, "status").text)
        assert progress().startswith("4 of 4")
    finally:
        server.stop()

    stored = read_votes(votes)
    assert [v["choice"] for v in stored] == ["left", "right", "tie", "right"]
    assert {v["rater"] for v in stored} == {"alice"} and len({v["pair"] for v in stored}) == 4
    for v in stored:
        assert {v["left"]["model"], v["right"]["model"]} == {"gen_a", "gen_b"}
        assert v["winner"] == (None if v["choice"] == "tie" else v[v["choice"]]["model"])
    table = results(votes).pairs
    [row] = table.to_dict("records")
    a_wins = sum(v["winner"] == "gen_a" for v in stored)
    assert (row["model_a"], row["model_b"], row["votes"], row["ties"]) == ("gen_a", "gen_b", 4, 1)
    assert (row["a_wins"], row["b_wins"]) == (a_wins, 3 - a_wins)


def test_copy_of_a_folder_is_a_separate_model(tmp_path, folders):
    """A folder copied under another name is another model with the same pairs (labels come from names)."""
    copy = shutil.copytree(folders[0], str(tmp_path / "gen_a_copy"))
    pairs = find_pairs([folders[0], copy])
    assert len(pairs) == 4 and {(p.a.model, p.b.model) for p in pairs} == {("gen_a", "gen_a_copy")}
