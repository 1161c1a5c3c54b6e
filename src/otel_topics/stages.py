"""The pipeline's stage interfaces. Each stage is small and takes and returns typed values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from otel_topics.model import Classification, Conversation, Enrichment, Signal, TopicMap, TraceData

Vectors = npt.NDArray[np.float32]


class Preprocessor(Protocol):
    """Trace -> conversation. Returns None when the trace is to be skipped (custom preprocessor)."""

    def __call__(self, trace: TraceData) -> Conversation | None: ...


class FacetExtractor(Protocol):
    """Conversation -> facet values (every configured facet: text or ``no_match``)."""

    name: str

    async def extract(self, conversation: Conversation) -> dict[str, str]: ...


class Embedder(Protocol):
    """Texts -> float32 unit vectors, one row per text."""

    name: str
    dimension: int

    async def embed(self, texts: Sequence[str]) -> Vectors: ...


class Classifier(Protocol):
    """Vectors -> nearest-centroid assignments against the current version of a topic map."""

    def classify(self, map_name: str, vectors: Vectors) -> list[Classification]: ...

    def swap(self, topic_map: TopicMap) -> None: ...


class Enricher(Protocol):
    """Trace -> enrichment (preprocess, facets, embed, classify)."""

    async def enrich(self, trace: TraceData) -> Enrichment: ...


class Sender(Protocol):
    """Delivers one serialized OTLP export request downstream.

    Raises ExportError (retryable) or PermanentExportError (dead-letter).
    """

    name: str

    async def send(self, signal: Signal, payload: bytes) -> None: ...

    async def close(self) -> None: ...
