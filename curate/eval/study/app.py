"""The study web app (Starlette, served by uvicorn on 127.0.0.1): pages, the next-pair and vote API, video bytes.

Starlette because the app is a handful of routes that need cookies, JSON and streamed range responses, and it
is a small, well-kept ASGI toolkit; uvicorn serves it with HTTP/1.1 keep-alive, which <video> range requests
lean on, where the stdlib http.server would have us write the protocol handling too.
"""

from __future__ import annotations

import json
import re
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from curate.eval.study import page
from curate.eval.study.media import video_response
from curate.eval.study.pairs import find_pairs
from curate.eval.study.session import StaleVote, Study
from curate.eval.study.votes import VoteLog

COOKIE = "study_rater"
_RATER = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _rater(request: Request) -> str | None:
    rater = request.cookies.get(COOKIE)
    return rater if rater and _RATER.match(rater) else None


def make_app(study: Study) -> Starlette:
    async def index(request: Request) -> Response:
        given = request.query_params.get("rater")
        if given is not None:
            if not _RATER.match(given):
                return HTMLResponse(page.sign_in("A rater id is 1-64 letters, digits or _ . @ -"), status_code=400)
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, given, max_age=365 * 86400, httponly=True, samesite="strict")
            return response
        rater = _rater(request)
        return HTMLResponse(page.study(rater) if rater else page.sign_in())

    async def sign_out(request: Request) -> Response:
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    def next_pair(request: Request) -> Response:
        rater = _rater(request)
        if rater is None:
            return JSONResponse({"error": "no rater id"}, status_code=401)
        shown = study.next(rater)
        pair = None if shown is None else {
            "token": shown.token, "prompt": shown.pair.caption,
            "left": f"/media/{shown.media['left']}", "right": f"/media/{shown.media['right']}"}
        return JSONResponse({"pair": pair, "progress": study.progress(rater)}, headers={"cache-control": "no-store"})

    async def vote(request: Request) -> Response:
        rater = _rater(request)
        if rater is None:
            return JSONResponse({"error": "no rater id"}, status_code=401)
        try:
            body = json.loads(await request.body())
            token, choice = str(body["token"]), str(body["choice"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "expected JSON {token, choice}"}, status_code=400)
        try:  # the fsync runs in a worker thread, not on the event loop
            await run_in_threadpool(study.vote, rater, token, choice)
        except StaleVote:
            return JSONResponse({"error": "this pair is no longer on offer; load the next one"}, status_code=409)
        except ValueError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        return JSONResponse({"ok": True, "progress": study.progress(rater)})

    def media(request: Request) -> Response:
        video = study.media.get(request.path_params["token"])
        if video is None:
            return Response("unknown video", status_code=404)
        return video_response(video, request.headers.get("range"), head=request.method == "HEAD")

    return Starlette(routes=[
        Route("/", index),
        Route("/sign-out", sign_out),
        Route("/api/next", next_pair),
        Route("/api/vote", vote, methods=["POST"]),
        Route("/media/{token}", media, methods=["GET", "HEAD"]),
    ])


def open_study(gen_dirs: list[str], votes: str, seed: int | None = None) -> Study:
    """The study over these generated folders, resuming from the votes already in `votes`."""
    pairs = find_pairs(list(gen_dirs))
    if not pairs:
        raise ValueError(f"no pairs: no prompt+seed appears in two of {list(gen_dirs)}")
    return Study(pairs, VoteLog(votes), seed=seed)


def make_server(gen_dirs: list[str], port: int = 8000, host: str = "127.0.0.1", votes: str = "study_votes.jsonl",
                seed: int | None = None) -> tuple[uvicorn.Server, Study]:
    """The uvicorn server of the study (not started) and its state; `seed` fixes pair order and sides."""
    study = open_study(gen_dirs, votes, seed)
    return uvicorn.Server(uvicorn.Config(make_app(study), host=host, port=port, log_level="warning")), study


def serve(gen_dirs: list[str], port: int = 8000, host: str = "127.0.0.1", votes: str = "study_votes.jsonl",
          seed: int | None = None) -> None:
    """Serve the study until interrupted. Loopback only unless `host` says otherwise, explicitly."""
    server, study = make_server(gen_dirs, port, host, votes, seed)
    if host not in LOOPBACK:
        print(f"warning: serving the study on {host}, reachable beyond this machine", file=sys.stderr)
    print(f"{len(study.pairs)} pairs from {len(gen_dirs)} folders; votes -> {votes}", file=sys.stderr)
    print(f"open http://{host}:{port}/", file=sys.stderr)
    try:
        server.run()
    finally:
        study.votes.close()
