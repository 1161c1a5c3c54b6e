"""Facets from a GGUF model run in-process by llama-cpp-python (optional extra ``llama``).

One completion per trace for all facets, constrained to the facets' JSON schema. Calls run in a
worker thread, one at a time (a llama.cpp context is not thread-safe). For anything beyond a
single small machine, run a server and use the ``openai`` extractor instead.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from otel_topics import metrics
from otel_topics.errors import LLMError
from otel_topics.facets import prompt
from otel_topics.facets.cache import CachedLLMExtractor, FacetCache
from otel_topics.facets.spec import FacetSpec, check_unique

log = logging.getLogger("otel_topics.facets")

INSTALL_HINT = "llama-cpp-python is not installed, run `pip install 'otel-topics[llama]'`"


def _import_llama_cpp() -> Any:
    try:
        return importlib.import_module("llama_cpp")
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} (needed by llm type llama_cpp)") from exc


class LlamaCppFacetExtractor(CachedLLMExtractor):
    """Implements :class:`otel_topics.stages.FacetExtractor` with an in-process GGUF model."""

    name = "llama_cpp"

    def __init__(
        self,
        facets: Sequence[FacetSpec],
        *,
        model_path: Path,
        max_tokens: int = 1024,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        temperature: float = 0.0,
        max_input_chars: int | None = None,
        cache: FacetCache | None = None,
    ) -> None:
        self.facets = check_unique(facets)
        self._llama_cpp = _import_llama_cpp()
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"llama_cpp model_path {model_path} does not exist or is not a file")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.model_path = model_path
        self.model = model_path.name
        self.max_tokens = max_tokens
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, (os.cpu_count() or 2))
        self.temperature = temperature
        self.max_input_chars = max_input_chars
        self.cache = cache
        super().__init__()
        self._schema = prompt.json_schema(self.facets)
        self._llm: Any = None
        self._lock = asyncio.Lock()

    def _load(self) -> Any:
        if self._llm is None:
            log.info("loading GGUF model %s (n_ctx=%d)", self.model_path, self.n_ctx)
            self._llm = self._llama_cpp.Llama(
                model_path=str(self.model_path), n_ctx=self.n_ctx, n_threads=self.n_threads, verbose=False
            )
        return self._llm

    def _complete(self, rendered: str) -> str:
        llm = self._load()
        out = llm.create_chat_completion(
            messages=prompt.messages(rendered, self.facets),
            response_format={"type": "json_object", "schema": self._schema},
            max_tokens=self.max_tokens,
            temperature=self.temperature,
        )
        content = out["choices"][0]["message"].get("content")
        return content if isinstance(content, str) else ""

    async def _call(self, rendered: str) -> dict[str, str]:
        async with self._lock:
            values: dict[str, str] | None = None
            for attempt in range(2):  # a malformed answer is asked again once
                try:
                    content = await asyncio.to_thread(self._complete, rendered)
                except Exception as exc:  # llama.cpp raises ValueError/RuntimeError (context overflow...)
                    metrics.LLM_REQUESTS.labels("error").inc()
                    raise LLMError(f"llama_cpp model {self.model_path}: {type(exc).__name__}: {exc}") from exc
                try:
                    values = prompt.parse_answer(content, self.facets)
                    break
                except prompt.MalformedAnswer as exc:
                    if attempt == 1:
                        metrics.LLM_REQUESTS.labels("error").inc()
                        raise LLMError(f"llama_cpp model {self.model_path}: malformed answer: {exc}") from exc
                    metrics.LLM_REQUESTS.labels("retry").inc()
        assert values is not None
        metrics.LLM_REQUESTS.labels("ok").inc()
        return values
