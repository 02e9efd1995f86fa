"""An OpenAI-compatible chat-completions client for many requests in flight (aiohttp): retries with
exponential backoff and jitter, Retry-After on 429/503, per-request timeouts, a deadline for the whole run.
The API key goes into the Authorization header only and is scrubbed from every error message."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from curate.caption.frames import data_url
from curate.download.http import RETRYABLE_STATUS, parse_retry_after

RETRY_AFTER_STATUS = (429, 503)


class CaptionFailure(Exception):
    """This sample gets no caption: `reason` is short (http_400, timeout, empty_answer, refused...)."""

    def __init__(self, reason: str, message: str, retryable: bool = False, retry_after: float | None = None,
                 attempts: int = 1):
        super().__init__(message)
        self.reason, self.retryable, self.retry_after, self.attempts = reason, retryable, retry_after, attempts


class RunDeadline(Exception):
    """The bound on the whole run was reached before this request could finish: not the sample's failure."""


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 6
    backoff: float = 0.5  # first wait; doubles each retry, with jitter
    max_backoff: float = 30.0
    timeout: float = 120.0  # one request


@dataclass
class Answer:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    attempts: int


def chat_url(endpoint: str) -> str:
    """The chat-completions URL of an OpenAI-compatible base URL (".../v1"; a bare host gets /v1; a URL that
    already ends in /chat/completions is kept). Raises ValueError for anything but an http(s) URL with a host."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--endpoint {endpoint!r} is not an http(s) URL with a host (e.g. http://127.0.0.1:8000/v1)")
    if parts.username or parts.password:
        raise ValueError("--endpoint must not hold credentials: put the key in the variable named by --api-key-env")
    path = parts.path.rstrip("/") or "/v1"
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def chat_request(model: str, prompt: str, images: list[bytes], max_tokens: int) -> bytes:
    """The JSON body of one request: the prompt, then the frames as JPEG data URLs, in one user message."""
    content = [{"type": "text", "text": prompt}]
    content += [{"type": "image_url", "image_url": {"url": data_url(jpeg)}} for jpeg in images]
    return json.dumps({"model": model, "messages": [{"role": "user", "content": content}],
                       "max_tokens": max_tokens, "temperature": 0.0}).encode()


def parse_answer(body: dict, attempts: int) -> Answer:
    """The caption of a chat-completions response; an empty, refused or filtered answer is a CaptionFailure."""
    try:
        choice = body["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise CaptionFailure("bad_response", f"no choices[0].message in the response: {str(body)[:200]}") from None
    if message.get("refusal"):
        raise CaptionFailure("refused", f"the model refused: {str(message['refusal'])[:200]}")
    if choice.get("finish_reason") == "content_filter":
        raise CaptionFailure("refused", "the answer was withheld by the endpoint's content filter")
    text = message.get("content")
    if isinstance(text, list):  # some servers answer with content parts
        text = "".join(part.get("text", "") for part in text if isinstance(part, dict))
    text = (text or "").strip()
    if not text:
        raise CaptionFailure("empty_answer", "the model answered with no text")
    usage = body.get("usage") or {}
    return Answer(text, usage.get("prompt_tokens"), usage.get("completion_tokens"), choice.get("finish_reason"),
                  attempts)


class ChatClient:
    """One aiohttp session for a shard's requests (`async with`); `complete(body)` sends one request with
    retries. `deadline` (epoch seconds, as it crosses processes) bounds every wait: past it, RunDeadline instead
    of a failure."""

    def __init__(self, endpoint: str, api_key: str | None, policy: RetryPolicy = RetryPolicy(),
                 concurrency: int = 32, deadline: float | None = None):
        self.url = chat_url(endpoint)
        self.policy, self.concurrency, self.deadline = policy, concurrency, deadline
        self._key = api_key or None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ChatClient:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency, force_close=False), headers=headers)
        return self

    async def __aexit__(self, *exc) -> None:
        await self._session.close()

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "<key>") if self._key else text

    def _remaining(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.time()

    async def _attempt(self, body: bytes, attempt: int) -> Answer:
        timeout = min(self.policy.timeout, self._remaining())
        if timeout <= 0:
            raise RunDeadline("the run's time bound was reached")
        try:
            async with self._session.post(self.url, data=body, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                raw = await resp.read()
                if resp.status == 200:
                    try:
                        return parse_answer(json.loads(raw), attempt)
                    except ValueError:
                        raise CaptionFailure("bad_response", f"response is not JSON: {raw[:200]!r}") from None
                retry_after = parse_retry_after(resp.headers.get("Retry-After")) \
                    if resp.status in RETRY_AFTER_STATUS else None
                text = raw[:300].decode("utf-8", "replace")
                raise CaptionFailure(f"http_{resp.status}", f"HTTP {resp.status}: {text}",
                                     retryable=resp.status in RETRYABLE_STATUS or resp.status >= 500,
                                     retry_after=retry_after)
        except TimeoutError:
            if self._remaining() <= 0:
                raise RunDeadline("the run's time bound was reached") from None
            raise CaptionFailure("timeout", f"no answer within {timeout:.0f}s", retryable=True) from None
        except aiohttp.ClientError as error:  # refused, reset or dropped connections, broken responses
            raise CaptionFailure("connection_error", f"{type(error).__name__}: {error}", retryable=True) from None

    async def complete(self, body: bytes) -> Answer:
        """The answer to one request body (chat_request); CaptionFailure after the retries, with the key scrubbed."""
        policy = self.policy
        for attempt in range(1, policy.retries + 2):
            try:
                return await self._attempt(body, attempt)
            except CaptionFailure as error:
                if not error.retryable or attempt > policy.retries:
                    suffix = f" (after {attempt} attempts)" if attempt > 1 else ""
                    raise CaptionFailure(error.reason, self._scrub(str(error)) + suffix, attempts=attempt) from None
                wait = min(policy.max_backoff, policy.backoff * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
                if error.retry_after is not None:
                    if error.retry_after > policy.max_backoff:
                        raise CaptionFailure(error.reason, self._scrub(str(error)) + f" (Retry-After "
                                             f"{error.retry_after:.0f}s exceeds {policy.max_backoff:.0f}s)",
                                             attempts=attempt) from None
                    wait = max(wait, error.retry_after)
                if wait >= self._remaining():
                    raise RunDeadline("the run's time bound was reached") from None
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")
