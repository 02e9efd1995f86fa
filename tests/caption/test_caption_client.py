"""The chat client against the loopback pixel server: answers, retries (429/503 Retry-After, 500, dropped
connections, timeouts), failures that are not retried, the run's deadline, and the API key kept out of errors."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from caption_data import API_KEY

from curate.caption.client import (CaptionFailure, ChatClient, RetryPolicy, RunDeadline, chat_request, chat_url,
                                   parse_answer)
from curate.demo.chat_server import start

FAST = RetryPolicy(retries=4, backoff=0.01, max_backoff=5, timeout=5)


def red_blue() -> list[bytes]:
    import cv2

    frames = []
    for colour in ((220, 40, 40), (40, 70, 220)):
        ok, jpeg = cv2.imencode(".jpg", np.full((16, 16, 3), colour[::-1], np.uint8))
        frames.append(jpeg.tobytes())
    return frames


def ask(server, policy=FAST, key=API_KEY, deadline=None, images=None):
    async def go():
        async with ChatClient(server.base_url, key, policy, 4, deadline) as client:
            return await client.complete(chat_request("tiny-vlm", "Describe.", images or red_blue(), 50))

    return asyncio.run(go())


def test_chat_url_forms_and_refusals():
    assert chat_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1/chat/completions"
    assert chat_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1/chat/completions"
    assert chat_url("http://h:1/v1/chat/completions/") == "http://h:1/v1/chat/completions"
    for bad in ("127.0.0.1:8000", "ftp://h/v1", "http:///v1", "http://user:secret@h/v1"):
        with pytest.raises(ValueError):
            chat_url(bad)


def test_answer_from_the_pixels_sent_with_usage_and_key():
    server = start()
    try:
        answer = ask(server)
        assert answer.text == "2 frames: red, blue" and answer.attempts == 1
        assert answer.prompt_tokens == 20 + 2 * 64 and answer.completion_tokens == 4
        assert server.authorizations == {f"Bearer {API_KEY}"}
    finally:
        server.shutdown()


def test_retries_429_503_500_and_dropped_connections_then_answers():
    server = start(faults=["429", "500", "drop", "503"], retry_after=1)
    try:
        began = time.monotonic()
        answer = ask(server)
        assert answer.text == "2 frames: red, blue" and answer.attempts == 5
        assert time.monotonic() - began >= 2  # both Retry-After: 1 waits were honoured (backoff alone: ~0.1 s)
    finally:
        server.shutdown()


def test_failures_after_retries_and_without_retry():
    server = start(faults=["500"] * 3)
    try:
        with pytest.raises(CaptionFailure) as failed:
            ask(server, RetryPolicy(retries=2, backoff=0.01, timeout=5))
        assert failed.value.reason == "http_500" and "after 3 attempts" in str(failed.value)
        server.faults = ["429"]
        server.retry_after = 60  # longer than max_backoff: a failure, not a stall
        with pytest.raises(CaptionFailure, match="Retry-After 60s exceeds"):
            ask(server, RetryPolicy(retries=2, backoff=0.01, max_backoff=5, timeout=5))
        server.faults = ["slow"] * 2
        server.slow_s = 1.0
        with pytest.raises(CaptionFailure) as failed:
            ask(server, RetryPolicy(retries=1, backoff=0.01, timeout=0.3))
        assert failed.value.reason == "timeout"
        server.faults = ["slow"]
        assert ask(server, RetryPolicy(retries=1, backoff=0.01, timeout=0.5)).attempts == 2  # a timeout is retried
    finally:
        server.shutdown()


def test_key_scrubbed_from_errors_a_server_echoes():
    server = start(faults=["echo401"])
    try:
        with pytest.raises(CaptionFailure) as failed:
            ask(server)
        assert failed.value.reason == "http_401" and failed.value.retryable is False
        assert API_KEY not in str(failed.value) and "Bearer <key>" in str(failed.value)
    finally:
        server.shutdown()


def test_deadline_stops_instead_of_failing_the_sample():
    server = start(faults=["429"], retry_after=2)
    try:
        with pytest.raises(RunDeadline):
            ask(server, deadline=time.time() + 1)
    finally:
        server.shutdown()


def test_empty_refused_and_filtered_answers_are_failures():
    def body(message, finish="stop"):
        return {"choices": [{"message": message, "finish_reason": finish}]}

    with pytest.raises(CaptionFailure, match="no text"):
        parse_answer(body({"content": "  "}), 1)
    with pytest.raises(CaptionFailure) as refused:
        parse_answer(body({"content": None, "refusal": "no"}), 1)
    assert refused.value.reason == "refused"
    with pytest.raises(CaptionFailure) as filtered:
        parse_answer(body({"content": "x"}, "content_filter"), 1)
    assert filtered.value.reason == "refused"
    with pytest.raises(CaptionFailure) as bad:
        parse_answer({"error": "oops"}, 1)
    assert bad.value.reason == "bad_response"
    parts = parse_answer(body({"content": [{"type": "text", "text": "a cat"}]}), 2)
    assert parts.text == "a cat" and parts.attempts == 2 and parts.prompt_tokens is None
