"""Plumbing shared by the clients of OpenAI-compatible chat-completions servers.

Used by the facet extractor (:mod:`otel_topics.facets.openai`) and the topic namer
(:mod:`otel_topics.naming`): the request's ``response_format`` field, one POST with its errors
sorted into retryable and final ones, the retry loop (jittered exponential backoff honouring
``Retry-After``; a malformed answer is asked again), and finding the JSON in a model's answer
(code fences, prose around it).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal, Self, TypeVar

import httpx

from otel_topics.errors import LLMError

ResponseFormat = Literal["json_schema", "json_object", "none"]
RESPONSE_FORMATS: Final[tuple[str, ...]] = ("json_schema", "json_object", "none")
MAX_RETRY_AFTER: Final = 120.0
"""A server's ``Retry-After`` is honoured up to this many seconds."""

T = TypeVar("T")
Outcome = Callable[[str], None]
"""Told ``"ok"``, ``"retry"`` or ``"error"`` once per call outcome (for metrics)."""


class MalformedAnswer(ValueError):
    """The model's answer holds no usable JSON."""


class Retryable(Exception):
    """A failure worth another attempt (429, 5xx, timeout, connection error)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ChatClient:
    """The HTTP side of a chat-completions client: an httpx client bound to the running event loop
    (made again when the loop changes), closed by :meth:`aclose` or by leaving ``async with``.
    Subclasses set ``timeout``, ``_headers`` and ``_transport`` in their ``__init__``."""

    timeout: float
    _headers: dict[str, str]
    _transport: httpx.AsyncBaseTransport | None
    _client: httpx.AsyncClient | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def _http(self, max_connections: int | None = None) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._loop = loop
            self._client = httpx.AsyncClient(
                timeout=self.timeout,
                headers=self._headers,
                transport=self._transport,
                limits=httpx.Limits(max_connections=max_connections) if max_connections else httpx.Limits(),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def plain_secret(value: object) -> str | None:
    """An API key given as ``str`` or as a pydantic ``SecretStr``."""
    if value is None:
        return None
    secret = getattr(value, "get_secret_value", None)
    return str(secret()) if callable(secret) else str(value)


def chat_url(base_url: object) -> str:
    """``.../v1`` -> ``.../v1/chat/completions`` (a full endpoint URL is kept as it is)."""
    base = str(base_url).rstrip("/")  # a pydantic HttpUrl works too
    if not base:
        raise ValueError("base_url must not be empty (e.g. https://api.openai.com/v1)")
    return base if base.endswith("/chat/completions") else f"{base}/chat/completions"


def check_response_format(value: str) -> ResponseFormat:
    if value not in RESPONSE_FORMATS:
        raise ValueError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, got {value!r}")
    return value  # type: ignore[return-value]


def response_format_field(
    kind: ResponseFormat, name: str, schema: dict[str, Any], *, strict: bool = True
) -> dict[str, Any] | None:
    """The request's ``response_format``: ``json_schema`` (OpenAI structured outputs, vLLM,
    llama-server), ``json_object`` with the schema beside it (llama-cpp-python's server), or None."""
    if kind == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "strict": strict, "schema": schema}}
    if kind == "json_object":
        return {"type": "json_object", "schema": schema}
    return None


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def server_message(response: httpx.Response) -> str:
    """The error message a server put in its body (OpenAI, FastAPI and plain-text styles)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500].strip() or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            return str(err)[:500]
    return str(body)[:500]


def chat_content(body: Any) -> tuple[str, str | None]:
    """(message content, finish_reason) of a chat-completions response body."""
    try:
        choice = body["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError) as exc:
        raise MalformedAnswer(f"not a chat-completions response: {str(body)[:200]!r}") from exc
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str) or not content.strip():
        refusal = message.get("refusal")
        why = f"the model refused: {refusal}" if refusal else "the answer has no content"
        raise MalformedAnswer(why)
    finish = choice.get("finish_reason")
    return content, finish if isinstance(finish, str) else None


_FENCE = re.compile(r"```[A-Za-z0-9_-]*\s*\n?(.*?)```", re.DOTALL)


def _first_json(text: str, opener: str, kind: type) -> tuple[Any, int]:
    """The first JSON value of type ``kind`` in ``text`` and where it starts (``None, -1`` if none)."""
    decoder = json.JSONDecoder()
    start = text.find(opener)
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find(opener, start + 1)
            continue
        if isinstance(value, kind):
            return value, start
        start = text.find(opener, start + 1)
    return None, -1


def find_json(text: str, *, arrays: bool = False) -> dict[str, Any] | list[Any] | None:
    """The first JSON object in a model's answer (inside a code fence first, else anywhere in the
    text); with ``arrays``, a JSON array is accepted too, whichever of the two starts first."""
    fenced = _FENCE.search(text)
    places = [fenced.group(1), text] if fenced else [text]
    for place in places:
        obj, obj_at = _first_json(place, "{", dict)
        if arrays:
            arr, arr_at = _first_json(place, "[", list)
            if arr is not None and (obj is None or arr_at < obj_at):
                return list(arr)
        if obj is not None:
            return dict(obj)
    return None


def backoff_delay(attempt: int, hint: float | None, base: float, maximum: float) -> float:
    """Seconds to wait before retry ``attempt + 1``: the server's hint (capped), else jittered
    exponential backoff."""
    if hint is not None:
        return min(hint, MAX_RETRY_AFTER)
    ceiling = min(maximum, base * (2**attempt))
    return float(ceiling * random.uniform(0.5, 1.0))


async def post_chat(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    *,
    timeout: float,
    what: str,
) -> tuple[str, str | None]:
    """One POST. Raises :class:`Retryable`, :class:`MalformedAnswer` or (other 4xx) LLMError."""
    try:
        response = await client.post(url, json=body)
    except httpx.TimeoutException as exc:
        raise Retryable(f"timed out after {timeout}s ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise Retryable(f"connection failed: {type(exc).__name__}: {exc}") from exc
    status = response.status_code
    if status == 429 or status >= 500:
        raise Retryable(
            f"HTTP {status}: {server_message(response)}", retry_after(response.headers.get("retry-after"))
        )
    if status >= 400:
        raise LLMError(f"{what} refused the request: HTTP {status}: {server_message(response)}")
    try:
        data = response.json()
    except ValueError as exc:
        raise MalformedAnswer(f"response body is not JSON: {response.text[:200]!r}") from exc
    return chat_content(data)


async def complete(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    parse: Callable[[str], T],
    *,
    what: str,
    timeout: float,
    max_retries: int,
    backoff_base: float,
    backoff_max: float,
    malformed_retries: int = 1,
    log: logging.Logger | None = None,
    on_outcome: Outcome | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """POST ``body`` and ``parse`` the answer's content, retrying as the module docstring says.

    ``what`` names the endpoint in messages (e.g. ``"facet LLM http://h/v1/chat/completions (model
    m)"``). Every failure is an :class:`LLMError`.
    """
    logger = log or logging.getLogger("otel_topics.llm")
    tell = on_outcome or (lambda _outcome: None)
    attempt = 0  # transport-level retries used
    malformed_left = malformed_retries
    while True:
        try:
            content, finish = await post_chat(client, url, body, timeout=timeout, what=what)
            try:
                value = parse(content)
            except MalformedAnswer as exc:
                hint = (
                    f" (finish_reason=length: the answer hit max_tokens={body.get('max_tokens')})"
                    if finish == "length"
                    else ""
                )
                raise MalformedAnswer(f"{exc}{hint}") from exc
        except MalformedAnswer as exc:
            if malformed_left > 0:
                malformed_left -= 1
                tell("retry")
                logger.info("%s gave a malformed answer, asking again: %s", what, exc)
                continue
            tell("error")
            raise LLMError(f"{what}: malformed answer: {exc}") from exc
        except Retryable as exc:
            if attempt >= max_retries:
                tell("error")
                raise LLMError(f"{what} failed after {attempt + 1} attempt(s): {exc}") from exc
            delay = backoff_delay(attempt, exc.retry_after, backoff_base, backoff_max)
            attempt += 1
            tell("retry")
            logger.info("%s: %s; retry %d/%d in %.2fs", what, exc, attempt, max_retries, delay)
            await sleep(delay)
            continue
        except LLMError:
            tell("error")
            raise
        tell("ok")
        return value
