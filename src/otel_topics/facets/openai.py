"""Facets from any OpenAI-compatible chat-completions server: ONE call per trace for all facets.

Works with OpenAI, vLLM, llama.cpp (``llama-server`` and llama-cpp-python's server), Ollama,
LM Studio... ``response_format`` picks how the JSON answer is requested:

- ``json_schema``: ``{"type": "json_schema", "json_schema": {"name": "facets", "strict": true,
  "schema": ...}}`` (OpenAI structured outputs, vLLM, llama-server);
- ``json_object``: ``{"type": "json_object", "schema": ...}`` (llama-cpp-python's server refuses
  ``json_schema`` with HTTP 500 and takes the schema this way);
- ``none``: no ``response_format``; the prompt alone asks for JSON.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import httpx

from otel_topics import metrics
from otel_topics.errors import LLMError
from otel_topics.facets import prompt
from otel_topics.facets.cache import FacetCache
from otel_topics.facets.spec import FacetSpec, check_unique
from otel_topics.model import Conversation

log = logging.getLogger("otel_topics.facets")

ResponseFormat = Literal["json_schema", "json_object", "none"]
_FORMATS: tuple[str, ...] = ("json_schema", "json_object", "none")
_MAX_RETRY_AFTER = 120.0


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
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


def _server_message(response: httpx.Response) -> str:
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


def _content(body: Any) -> tuple[str, str | None]:
    """(message content, finish_reason) of a chat-completions response body."""
    try:
        choice = body["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError) as exc:
        raise prompt.MalformedAnswer(f"not a chat-completions response: {str(body)[:200]!r}") from exc
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str) or not content.strip():
        refusal = message.get("refusal")
        why = f"the model refused: {refusal}" if refusal else "the answer has no content"
        raise prompt.MalformedAnswer(why)
    finish = choice.get("finish_reason")
    return content, finish if isinstance(finish, str) else None


class OpenAIFacetExtractor:
    """Implements :class:`otel_topics.stages.FacetExtractor` with one chat call per conversation.

    Retries 429, 5xx, connection errors and timeouts with jittered exponential backoff (honouring
    ``Retry-After``) up to ``max_retries`` times; a malformed answer is asked again once; other 4xx
    fail at once. Every failure is an :class:`otel_topics.errors.LLMError`.
    """

    name = "openai"

    def __init__(
        self,
        facets: Sequence[FacetSpec],
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        response_format: ResponseFormat = "json_schema",
        timeout: float = 60.0,
        max_retries: int = 4,
        concurrency: int = 4,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        headers: Mapping[str, str] | None = None,
        cache: FacetCache | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        strict: bool = True,
        max_input_chars: int | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.facets = check_unique(facets)
        base_url = str(base_url)  # a pydantic HttpUrl works too
        secret = getattr(api_key, "get_secret_value", None)  # and a pydantic SecretStr
        if callable(secret):
            api_key = str(secret())
        if not base_url:
            raise ValueError("base_url must not be empty (e.g. https://api.openai.com/v1)")
        if not model:
            raise ValueError("model must not be empty")
        if response_format not in _FORMATS:
            raise ValueError(f"response_format must be one of {', '.join(_FORMATS)}, got {response_format!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if max_input_chars is not None and max_input_chars < 1000:
            raise ValueError(f"max_input_chars must be at least 1000, got {max_input_chars}")
        base = base_url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else f"{base}/chat/completions"
        self.model = model
        self.response_format: ResponseFormat = response_format
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.cache = cache
        self.strict = strict
        self.max_input_chars = max_input_chars
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._headers = dict(headers or {})
        if api_key:
            self._headers.setdefault("Authorization", f"Bearer {api_key}")
        self._transport = transport
        self._schema = prompt.json_schema(self.facets)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._semaphore: asyncio.Semaphore | None = None

    # ------------------------------------------------------------------ public

    async def extract(self, conversation: Conversation) -> dict[str, str]:
        start = time.perf_counter()
        rendered = prompt.render(conversation, self.max_input_chars)
        key = prompt.cache_key(self.model, self.facets, rendered)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                metrics.LLM_REQUESTS.labels("cache_hit").inc()
                metrics.FACET_LATENCY.labels(self.name).observe(time.perf_counter() - start)
                return prompt.fill_missing(hit, self.facets)
        client, semaphore = self._ensure()
        async with semaphore:
            values = await self._ask(client, rendered)
        if self.cache is not None:
            self.cache.put(key, values)
        metrics.FACET_LATENCY.labels(self.name).observe(time.perf_counter() - start)
        return values

    def request_body(self, rendered: str) -> dict[str, Any]:
        """The chat-completions request for one rendered conversation."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": prompt.messages(rendered, self.facets),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.response_format == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "facets", "strict": self.strict, "schema": self._schema},
            }
        elif self.response_format == "json_object":
            body["response_format"] = {"type": "json_object", "schema": self._schema}
        return body

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> OpenAIFacetExtractor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ internals

    def _ensure(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        """A client and semaphore bound to the running loop (recreated if the loop changed)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._semaphore is None or self._loop is not loop:
            self._loop = loop
            self._client = httpx.AsyncClient(
                timeout=self.timeout,
                headers=self._headers,
                transport=self._transport,
                limits=httpx.Limits(max_connections=self.concurrency),
            )
            self._semaphore = asyncio.Semaphore(self.concurrency)
        return self._client, self._semaphore

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, _MAX_RETRY_AFTER)
        ceiling = min(self.backoff_max, self.backoff_base * (2**attempt))
        return float(ceiling * random.uniform(0.5, 1.0))

    async def _ask(self, client: httpx.AsyncClient, rendered: str) -> dict[str, str]:
        body = self.request_body(rendered)
        attempt = 0  # transport-level retries used
        malformed_left = 1
        while True:
            try:
                content, finish = await self._post(client, body)
                try:
                    values = prompt.parse_answer(content, self.facets)
                except prompt.MalformedAnswer as exc:
                    hint = (
                        f" (finish_reason=length: the answer hit max_tokens={self.max_tokens})"
                        if finish == "length"
                        else ""
                    )
                    raise prompt.MalformedAnswer(f"{exc}{hint}") from exc
            except prompt.MalformedAnswer as exc:
                if malformed_left > 0:
                    malformed_left -= 1
                    metrics.LLM_REQUESTS.labels("retry").inc()
                    log.info("facet LLM %s gave a malformed answer, asking again: %s", self.url, exc)
                    continue
                metrics.LLM_REQUESTS.labels("error").inc()
                raise LLMError(f"facet LLM {self.url} (model {self.model}): malformed answer: {exc}") from exc
            except _Retryable as exc:
                if attempt >= self.max_retries:
                    metrics.LLM_REQUESTS.labels("error").inc()
                    raise LLMError(
                        f"facet LLM {self.url} (model {self.model}) failed after {attempt + 1} "
                        f"attempt(s): {exc}"
                    ) from exc
                delay = self._delay(attempt, exc.retry_after)
                attempt += 1
                metrics.LLM_REQUESTS.labels("retry").inc()
                log.info(
                    "facet LLM %s: %s; retry %d/%d in %.2fs", self.url, exc, attempt, self.max_retries, delay
                )
                await asyncio.sleep(delay)
                continue
            metrics.LLM_REQUESTS.labels("ok").inc()
            return values

    async def _post(self, client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[str, str | None]:
        try:
            response = await client.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out after {self.timeout}s ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise _Retryable(f"connection failed: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Retryable(
                f"HTTP {status}: {_server_message(response)}",
                _retry_after(response.headers.get("retry-after")),
            )
        if status >= 400:
            metrics.LLM_REQUESTS.labels("error").inc()
            raise LLMError(
                f"facet LLM {self.url} (model {self.model}) refused the request: HTTP {status}: "
                f"{_server_message(response)}"
            )
        try:
            data = response.json()
        except ValueError as exc:
            raise prompt.MalformedAnswer(f"response body is not JSON: {response.text[:200]!r}") from exc
        return _content(data)
