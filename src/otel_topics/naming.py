"""Names and one-line descriptions for the clusters of a topic map.

- :class:`KeywordNamer` (no model): a readable name from the c-TF-IDF keywords and the most
  central text, a description from the same.
- :class:`LLMNamer`: any OpenAI-compatible chat-completions server names several clusters in ONE
  call, each shown with its exemplars, the nearest texts outside it and its keywords (Clio's
  method). A cluster left unnamed after retries (server down, malformed answer, index missing)
  falls back to the keyword namer: naming never fails the whole map.

Both return one :class:`ClusterName` per sample, in order; names are made unique within the call.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import httpx

from otel_topics import llm_http
from otel_topics import naming_prompt as prompt
from otel_topics.errors import LLMError
from otel_topics.llm_http import ResponseFormat

log = logging.getLogger("otel_topics.naming")

NAME_MAX = prompt.NAME_MAX
_NAME_PREFIX = re.compile(r"^(?:cluster\s*\d*\s*)?name\s*:\s*", re.IGNORECASE)
DESCRIPTION_MAX = prompt.DESCRIPTION_MAX


@dataclass(slots=True)
class ClusterSample:
    """What a namer sees of one cluster. ``exemplars``: in-cluster texts nearest the centroid (the
    first is the medoid); ``contrast``: the nearest texts OUTSIDE the cluster."""

    key: str
    exemplars: list[str]
    contrast: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ClusterName:
    name: str  # <= 60 characters
    description: str = ""  # one sentence, <= 200 characters


@runtime_checkable
class Namer(Protocol):
    async def name(self, samples: Sequence[ClusterSample]) -> list[ClusterName]:
        """One name per sample, in order. Never raises for a model failure."""
        ...


# ---------------------------------------------------------------------------------- text helpers


def clip(text: str, limit: int) -> str:
    """Whitespace collapsed; past ``limit`` characters cut at a word boundary with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:/-") + "\u2026"


def clean_name(text: str) -> str:
    """A model's name, tidied: no surrounding quotes or trailing period, at most 60 characters."""
    text = " ".join(text.split()).strip("\"'`*\u201c\u201d ")
    text = _NAME_PREFIX.sub("", text)
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    return clip(text[:1].upper() + text[1:], NAME_MAX)


def clean_description(text: str) -> str:
    text = " ".join(text.split()).strip("\"' ")
    return clip(text, DESCRIPTION_MAX)


def unique_names(names: Sequence[ClusterName]) -> list[ClusterName]:
    """Repeated names (case-insensitive) get " (2)", " (3)"... so every label stays distinct."""
    seen: dict[str, int] = {}
    taken = {n.name.casefold() for n in names}
    out: list[ClusterName] = []
    for n in names:
        key = n.name.casefold()
        count = seen.get(key, 0) + 1
        seen[key] = count
        if count == 1:
            out.append(n)
            continue
        number = count
        while True:
            suffix = f" ({number})"
            candidate = clip(n.name, NAME_MAX - len(suffix)) + suffix
            if candidate.casefold() not in taken:
                break
            number += 1
        taken.add(candidate.casefold())
        out.append(ClusterName(candidate, n.description))
    return out


# ---------------------------------------------------------------------------------- keywords


class KeywordNamer:
    """Implements :class:`Namer` without a model: ``keywords.fallback_name(keywords, medoid)``
    for the name, and "Mostly about k1, k2 and k3, e.g. "medoid"." for the description."""

    kind = "keywords"

    async def name(self, samples: Sequence[ClusterSample]) -> list[ClusterName]:
        return self.name_sync(samples)

    def name_sync(self, samples: Sequence[ClusterSample]) -> list[ClusterName]:
        from otel_topics.keywords import fallback_name  # written alongside; imported when used

        out = []
        for s in samples:
            medoid = s.exemplars[0] if s.exemplars else ""
            out.append(ClusterName(clip(fallback_name(s.keywords, medoid), NAME_MAX), describe(s)))
        return unique_names(out)


def describe(sample: ClusterSample) -> str:
    """A one-sentence description from keywords and the medoid text (no model)."""
    words = [" ".join(k.split()) for k in sample.keywords[:3] if k.strip()]
    medoid = " ".join(sample.exemplars[0].split()) if sample.exemplars else ""
    if len(words) > 1:
        about = f"Mostly about {', '.join(words[:-1])} and {words[-1]}"
    elif words:
        about = f"Mostly about {words[0]}"
    else:
        about = ""
    if not medoid:
        return clip(about + "." if about else "", DESCRIPTION_MAX)
    lead = f"{about}, e.g. " if about else "Typical text: "
    room = DESCRIPTION_MAX - len(lead) - len('"".')
    if room < 20:
        return clip(about + ".", DESCRIPTION_MAX)
    return f'{lead}"{clip(medoid.rstrip("."), room)}".'


# ---------------------------------------------------------------------------------- LLM


def batches(count: int, per_call: int) -> list[range]:
    """``count`` positions in ceil(count / per_call) consecutive batches of nearly equal size."""
    if count == 0:
        return []
    n = math.ceil(count / per_call)
    size, extra = divmod(count, n)
    out, start = [], 0
    for b in range(n):
        end = start + size + (1 if b < extra else 0)
        out.append(range(start, end))
        start = end
    return out


class LLMNamer(llm_http.ChatClient):
    """Implements :class:`Namer` with an OpenAI-compatible chat-completions server.

    Clusters are named ``clusters_per_call`` at a time (batches in the given order: put neighbours
    next to each other so one call tells them apart). Each call is retried on 429, 5xx, timeouts
    and connection errors (jittered exponential backoff honouring ``Retry-After``, up to
    ``max_retries``) and asked again once for a malformed answer; clusters the answer leaves out
    are asked again ``missing_retries`` times in a smaller call. What is still unnamed falls back
    to ``fallback`` (default :class:`KeywordNamer`). ``response_format``: ``json_schema``,
    ``json_object`` (llama-cpp-python's server) or ``none``, as for the facet LLM.
    """

    kind = "llm"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        response_format: ResponseFormat = "json_schema",
        timeout: float = 120.0,
        max_retries: int = 4,
        clusters_per_call: int = 10,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        concurrency: int = 1,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        strict: bool = True,
        max_exemplars: int = 8,
        max_contrast: int = 4,
        max_text_chars: int = 200,
        missing_retries: int = 1,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        fallback: Namer | None = None,
    ) -> None:
        self.url = llm_http.chat_url(base_url)
        if not model:
            raise ValueError("model must not be empty")
        self.model = model
        self.response_format: ResponseFormat = llm_http.check_response_format(response_format)
        checks: list[tuple[str, float, float]] = [
            ("timeout", timeout, 1e-9),
            ("max_retries", max_retries, 0),
            ("clusters_per_call", clusters_per_call, 1),
            ("concurrency", concurrency, 1),
            ("max_exemplars", max_exemplars, 1),
            ("max_contrast", max_contrast, 0),
            ("max_text_chars", max_text_chars, 20),
            ("missing_retries", missing_retries, 0),
        ]
        for what, value, least in checks:
            if value < least:
                raise ValueError(f"{what} must be at least {least:g}, got {value}")
        if max_tokens is not None and max_tokens < 64:
            raise ValueError(f"max_tokens must be at least 64, got {max_tokens}")
        self.timeout = timeout
        self.max_retries = max_retries
        self.clusters_per_call = clusters_per_call
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.strict = strict
        self.max_exemplars = max_exemplars
        self.max_contrast = max_contrast
        self.max_text_chars = max_text_chars
        self.missing_retries = missing_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.fallback: Namer = fallback if fallback is not None else KeywordNamer()
        self._headers = dict(headers or {})
        key = llm_http.plain_secret(api_key)
        if key:
            self._headers.setdefault("Authorization", f"Bearer {key}")
        self._transport = transport

    async def name(self, samples: Sequence[ClusterSample]) -> list[ClusterName]:
        named: dict[int, ClusterName] = {}
        semaphore = asyncio.Semaphore(self.concurrency)

        async def run(positions: range) -> None:
            async with semaphore:
                named.update(await self._name_batch(samples, list(positions)))

        await asyncio.gather(*(run(r) for r in batches(len(samples), self.clusters_per_call)))
        missing = [k for k in range(len(samples)) if k not in named]
        if missing:
            log.warning(
                "naming LLM %s (model %s) left %d of %d cluster(s) unnamed; they get keyword names",
                self.url,
                self.model,
                len(missing),
                len(samples),
            )
            fallback = await self.fallback.name([samples[k] for k in missing])
            named.update(zip(missing, fallback, strict=True))
        return unique_names([named[k] for k in range(len(samples))])

    def request_body(self, batch: Sequence[ClusterSample]) -> dict[str, Any]:
        """The chat-completions request naming ``batch`` in one call."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": prompt.messages(
                batch,
                max_exemplars=self.max_exemplars,
                max_contrast=self.max_contrast,
                max_text_chars=self.max_text_chars,
            ),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens or 120 * len(batch) + 200,
        }
        rf = llm_http.response_format_field(
            self.response_format, "cluster_names", prompt.json_schema(len(batch)), strict=self.strict
        )
        if rf is not None:
            body["response_format"] = rf
        return body

    # ------------------------------------------------------------------ internals

    async def _name_batch(
        self, samples: Sequence[ClusterSample], positions: list[int]
    ) -> dict[int, ClusterName]:
        """Names for ``positions`` (indexes into ``samples``); those left unnamed are absent."""
        named: dict[int, ClusterName] = {}
        todo = positions
        for round_ in range(1 + self.missing_retries):
            batch = [samples[k] for k in todo]
            try:
                answer = await llm_http.complete(
                    self._http(),
                    self.url,
                    self.request_body(batch),
                    functools.partial(prompt.parse_answer, count=len(batch)),
                    what=f"naming LLM {self.url} (model {self.model})",
                    timeout=self.timeout,
                    max_retries=self.max_retries,
                    backoff_base=self.backoff_base,
                    backoff_max=self.backoff_max,
                    log=log,
                )
            except LLMError as exc:
                log.warning("%s; %d cluster(s) fall back to keyword names", exc, len(todo))
                break
            for pos, (name, description) in answer.items():
                cleaned = clean_name(name)
                if cleaned:
                    named[todo[pos]] = ClusterName(cleaned, clean_description(description))
            todo = [k for k in todo if k not in named]
            if not todo:
                break
            if round_ < self.missing_retries:
                log.info("naming LLM %s left %d cluster(s) out; asking again for them", self.url, len(todo))
        return named
