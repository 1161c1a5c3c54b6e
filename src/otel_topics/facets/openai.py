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
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from otel_topics import llm_http, metrics
from otel_topics.facets import prompt
from otel_topics.facets.cache import CachedLLMExtractor, FacetCache
from otel_topics.facets.spec import FacetSpec, check_unique
from otel_topics.llm_http import ResponseFormat

log = logging.getLogger("otel_topics.facets")

__all__ = ["OpenAIFacetExtractor", "ResponseFormat"]


def _count(outcome: str) -> None:
    metrics.LLM_REQUESTS.labels(outcome).inc()


class OpenAIFacetExtractor(CachedLLMExtractor, llm_http.ChatClient):
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
        api_key = llm_http.plain_secret(api_key)  # a pydantic SecretStr works too
        self.url = llm_http.chat_url(base_url)  # and a pydantic HttpUrl
        if not model:
            raise ValueError("model must not be empty")
        self.response_format: ResponseFormat = llm_http.check_response_format(response_format)
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
        self.model = model
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
        self._semaphore: asyncio.Semaphore | None = None
        self._semaphore_loop: asyncio.AbstractEventLoop | None = None
        super().__init__()

    # ------------------------------------------------------------------ public

    async def _call(self, rendered: str) -> dict[str, str]:
        client, semaphore = self._ensure()
        async with semaphore:
            return await self._ask(client, rendered)

    def request_body(self, rendered: str) -> dict[str, Any]:
        """The chat-completions request for one rendered conversation."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": prompt.messages(rendered, self.facets),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        rf = llm_http.response_format_field(self.response_format, "facets", self._schema, strict=self.strict)
        if rf is not None:
            body["response_format"] = rf
        return body

    # ------------------------------------------------------------------ internals

    def _ensure(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        """A client and semaphore bound to the running loop (recreated if the loop changed)."""
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._semaphore_loop is not loop:
            self._semaphore, self._semaphore_loop = asyncio.Semaphore(self.concurrency), loop
        return self._http(self.concurrency), self._semaphore

    async def _ask(self, client: httpx.AsyncClient, rendered: str) -> dict[str, str]:
        return await llm_http.complete(
            client,
            self.url,
            self.request_body(rendered),
            lambda content: prompt.parse_answer(content, self.facets),
            what=f"facet LLM {self.url} (model {self.model})",
            timeout=self.timeout,
            max_retries=self.max_retries,
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
            log=log,
            on_outcome=_count,
        )
