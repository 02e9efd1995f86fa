"""The study's state: which pair a rater sees next, on which sides, and how a vote on it is recorded."""

from __future__ import annotations

import random
import secrets
import threading
import time
from dataclasses import dataclass, field

from curate.eval.study.pairs import Pair, Video
from curate.eval.study.votes import CHOICES, VoteLog, read_votes


@dataclass
class Presentation:
    """One pair shown to one rater; the opaque token and media tokens say nothing about the models."""

    token: str
    rater: str
    pair: Pair
    left: Video
    right: Video
    shown_at: float
    media: dict[str, str] = field(default_factory=dict)  # "left"/"right" -> media token


class StaleVote(LookupError):
    """The presentation is unknown (the server restarted) or the rater already voted on the pair."""


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class Study:
    """Pairs and votes for any number of raters. Each rater sees each pair at most once; the next pair is one
    of those with the fewest votes so far (so coverage grows evenly), picked at random, sides at random."""

    def __init__(self, pairs: list[Pair], votes: VoteLog, seed: int | None = None):
        self.pairs = {p.id: p for p in pairs}
        self.votes = votes
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._seen: dict[str, set[str]] = {}
        self._counts = {pid: 0 for pid in self.pairs}
        for vote in read_votes(votes.path):
            if vote.get("pair") in self.pairs:
                self._seen.setdefault(vote["rater"], set()).add(vote["pair"])
                self._counts[vote["pair"]] += 1
        self._shown: dict[str, Presentation] = {}
        self._pending: dict[str, str] = {}  # rater -> token of the pair on screen (same sides after a reload)
        self.media: dict[str, Video] = {}

    def progress(self, rater: str) -> dict:
        return {"done": len(self._seen.get(rater, ())), "total": len(self.pairs)}

    def next(self, rater: str) -> Presentation | None:
        """The rater's current presentation, or a new one; None once the rater has voted on every pair."""
        with self._lock:
            token = self._pending.get(rater)
            if token is not None:
                return self._shown[token]
            seen = self._seen.get(rater, set())
            unseen = [pid for pid in self.pairs if pid not in seen]
            if not unseen:
                return None
            fewest = min(self._counts[pid] for pid in unseen)
            pair = self.pairs[self._rng.choice([pid for pid in unseen if self._counts[pid] == fewest])]
            left, right = (pair.a, pair.b) if self._rng.random() < 0.5 else (pair.b, pair.a)
            shown = Presentation(secrets.token_urlsafe(12), rater, pair, left, right, time.time())
            for side, video in (("left", left), ("right", right)):
                shown.media[side] = secrets.token_urlsafe(12)
                self.media[shown.media[side]] = video
            self._pending[rater] = shown.token
            self._shown[shown.token] = shown
            return shown

    def vote(self, rater: str, token: str, choice: str) -> dict:
        """Record the rater's choice on a presentation (durably, before returning); the vote record."""
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}")
        with self._lock:
            shown = self._shown.get(token)
            if shown is None or shown.rater != rater or shown.pair.id in self._seen.get(rater, set()):
                raise StaleVote(token)
            now = time.time()
            winner = {"left": shown.left.model, "right": shown.right.model, "tie": None}[choice]
            record = {
                "rater": rater, "pair": shown.pair.id, "match": shown.pair.match, "choice": choice,
                "winner": winner, "time": _utc(now), "shown_at": _utc(shown.shown_at),
                "seconds": round(now - shown.shown_at, 3),
                **{side: {"model": v.model, "folder": v.folder, "key": v.key}
                   for side, v in (("left", shown.left), ("right", shown.right))},
            }
            self.votes.append(record)
            self._seen.setdefault(rater, set()).add(shown.pair.id)
            self._counts[shown.pair.id] += 1
            del self._pending[rater]
            return record
