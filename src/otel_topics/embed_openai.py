"""An embedder for any OpenAI-compatible ``POST {base_url}/embeddings`` endpoint (OpenAI, vLLM,
llama.cpp server, Ollama, TEI...). Re-exported by :mod:`otel_topics.embed`."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import numpy as np

from otel_topics import metrics
from otel_topics.errors import EmbedderError
from otel_topics.stages import Vectors

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
"""HTTP statuses retried with backoff; any other non-2xx status fails at once."""


class OpenAIEmbedder:
    """Embeds through ``POST {base_url}/embeddings`` with ``{"model", "input": [...]}``.

    Texts go in batches of ``batch_size``. Retries 408/409/429/5xx and transport errors up to
    ``max_retries`` times with jittered exponential backoff starting at ``backoff`` seconds
    (a ``Retry-After`` header wins, capped at ``max_retry_after``). The dimension is taken from the
    first answer unless given; every later answer must match it. Vectors are L2-normalized.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 30,
        batch_size: int = 64,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        dimension: int | None = None,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_retry_after: float = 30.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ValueError("model must not be empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {max_retries}")
        if dimension is not None and dimension < 1:
            raise ValueError(f"dimension must be positive, got {dimension}")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/embeddings"
        self.model = model
        self.name: str = f"openai:{model}"
        self.dimension: int = dimension or 0  # 0 until the first answer when not given
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if api_key:
            hdrs["Authorization"] = f"Bearer {api_key}"
        self._client_args: dict[str, Any] = {
            "headers": hdrs,
            "timeout": httpx.Timeout(timeout),
            "transport": transport,
        }
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(**self._client_args)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        started = time.perf_counter()
        parts = [
            await self._embed_batch(list(texts[i : i + self.batch_size]))
            for i in range(0, len(texts), self.batch_size)
        ]
        metrics.EMBED_LATENCY.labels(self.name).observe(time.perf_counter() - started)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    async def _embed_batch(self, texts: list[str]) -> Vectors:
        body = {"model": self.model, "input": texts, "encoding_format": "float"}
        attempt = 0
        while True:
            delay: float | None
            try:
                resp = await self._http().post(self.url, json=body)
            except httpx.TimeoutException as exc:
                problem = f"timed out ({type(exc).__name__})"
                delay = None
            except httpx.TransportError as exc:
                problem = f"transport error: {type(exc).__name__}: {exc}"
                delay = None
            except httpx.HTTPError as exc:  # pragma: no cover - e.g. invalid URL
                raise EmbedderError(f"embeddings request to {self.url} failed: {exc}") from exc
            else:
                if resp.is_success:
                    return self._parse(resp, len(texts))
                problem = f"HTTP {resp.status_code}: {_server_message(resp)}"
                if resp.status_code not in RETRYABLE_STATUS:
                    raise EmbedderError(f"embeddings request to {self.url} failed: {problem}")
                delay = _retry_after(resp)
            if attempt >= self.max_retries:
                raise EmbedderError(
                    f"embeddings request to {self.url} failed after {attempt + 1} attempts: {problem}"
                )
            if delay is None:
                delay = self.backoff * (2**attempt) * random.uniform(0.5, 1.5)
            delay = min(max(delay, 0.0), self.max_retry_after)
            attempt += 1
            log.info("embeddings %s: %s; retry %d in %.2fs", self.url, problem, attempt, delay)
            await asyncio.sleep(delay)

    def _parse(self, resp: httpx.Response, expected: int) -> Vectors:
        where = f"embeddings response from {self.url}"
        try:
            payload = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EmbedderError(f"{where} is not JSON: {resp.text[:200]!r}") from exc
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list) or len(data) != expected:
            got = f"{len(data)} items" if isinstance(data, list) else "no 'data' list"
            raise EmbedderError(f"{where}: expected 'data' with {expected} embeddings, got {got}")
        rows: list[Any] = [None] * expected
        for pos, item in enumerate(data):
            if not isinstance(item, dict) or not isinstance(item.get("embedding"), list):
                raise EmbedderError(f"{where}: data[{pos}] has no 'embedding' list")
            index = item.get("index", pos)
            if not isinstance(index, int) or not 0 <= index < expected or rows[index] is not None:
                raise EmbedderError(f"{where}: data[{pos}] has a bad or repeated index {index!r}")
            rows[index] = item["embedding"]
        try:
            arr = np.asarray(rows, dtype=np.float32)
        except (ValueError, TypeError) as exc:
            raise EmbedderError(f"{where}: embeddings are not equal-length lists of numbers") from exc
        if arr.ndim != 2 or arr.shape[1] == 0:
            raise EmbedderError(f"{where}: embeddings are not equal-length lists of numbers")
        if not np.isfinite(arr).all():
            raise EmbedderError(f"{where}: embeddings contain NaN or infinity")
        if self.dimension == 0:
            self.dimension = int(arr.shape[1])
        elif arr.shape[1] != self.dimension:
            raise EmbedderError(f"{where}: dimension {arr.shape[1]}, expected {self.dimension}")
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        if (norms == 0).any():
            raise EmbedderError(f"{where}: a zero vector cannot be normalized")
        return np.ascontiguousarray(arr / norms, dtype=np.float32)


def _server_message(resp: httpx.Response) -> str:
    """The error message the server gave (OpenAI's ``{"error": {"message"}}`` or the body's start)."""
    try:
        payload = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = None
    if isinstance(payload, dict):
        err = payload.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(payload.get("message"), str):
            return str(payload["message"])
        if isinstance(payload.get("detail"), str):
            return str(payload["detail"])
    text = resp.text.strip()
    return text[:300] if text else resp.reason_phrase


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
