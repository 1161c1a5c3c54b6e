"""Typed values passed between pipeline stages.

On the hot path (receive, spool, assemble, forward) spans stay protobuf. The values here start
where a trace becomes a conversation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Literal

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

NO_MATCH: Final = "no_match"
"""Value of a facet or classification label that does not apply."""

IDENTIFIER_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
"""Facet and topic map names."""

Role = Literal["system", "user", "assistant", "tool", "error"]


class Status:
    """Values of the ``otel_topics.status`` attribute (documented in the README)."""

    OK: Final = "ok"
    SAMPLED_OUT: Final = "sampled_out"
    NO_CONVERSATION: Final = "no_conversation"
    SKIPPED: Final = "skipped"  # a custom preprocessor returned None
    LLM_ERROR: Final = "llm_error"
    EMBED_ERROR: Final = "embed_error"
    STORE_ERROR: Final = "store_error"
    TIMEOUT: Final = "timeout"
    PREPROCESS_ERROR: Final = "preprocess_error"
    INTERNAL_ERROR: Final = "internal_error"  # an unexpected failure inside otel-topics (logged)


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation. ``role="error"`` carries span errors and exceptions."""

    role: Role
    content: str
    name: str | None = None  # tool name for tool results / tool spans
    tool_calls: tuple[ToolCall, ...] = ()
    is_error: bool = False

    def render(self) -> str:
        head = self.role if self.name is None else f"{self.role} ({self.name})"
        parts = [self.content] if self.content else []
        parts.extend(f"[call {c.name}({c.arguments})]" for c in self.tool_calls)
        return f"{head}: {' '.join(parts)}"


@dataclass(slots=True)
class Conversation:
    """A trace rendered as a conversation, redacted and capped."""

    trace_id: bytes
    messages: list[Message]
    token_count: int | None = 0  # None: not counted, its characters alone show it is within max_tokens
    truncated: bool = False
    texts: list[str] | None = None  # set when a custom preprocessor returned text(s) instead

    def render(self) -> str:
        if self.texts is not None:
            return "\n\n".join(self.texts)
        return "\n".join(m.render() for m in self.messages)

    @property
    def empty(self) -> bool:
        return not (self.texts if self.texts is not None else self.messages)


@dataclass(slots=True)
class TraceData:
    """All spans (and GenAI log records) of one trace, as OTLP protobuf with resource and scope intact."""

    trace_id: bytes
    spans: ExportTraceServiceRequest
    logs: ExportLogsServiceRequest | None = None
    reopened: bool = False  # spans arrived after the trace was already released once


@dataclass(frozen=True, slots=True)
class Classification:
    map_name: str
    label: str  # cluster name or NO_MATCH
    cluster_id: str  # stable id, "" for no_match
    distance: float  # cosine distance to the nearest centroid
    map_version: int
    source: Literal["online", "backfill", "late"] = "online"


AttrValue = str | int | float | bool


@dataclass(slots=True)
class Enrichment:
    """What the intelligence layer adds to a trace."""

    trace_id: bytes
    status: str = Status.OK
    facets: dict[str, str] = field(default_factory=dict)
    classifications: list[Classification] = field(default_factory=list)

    def attributes(self) -> dict[str, AttrValue]:
        """The DESIGN.md attribute contract, in a stable order."""
        attrs: dict[str, AttrValue] = {}
        for name, value in self.facets.items():
            attrs[f"facets.{name}"] = value
        for c in self.classifications:
            p = f"classifications.{c.map_name}"
            attrs[f"{p}.label"] = c.label
            attrs[f"{p}.id"] = c.cluster_id
            attrs[f"{p}.distance"] = float(c.distance)
            attrs[f"{p}.map_version"] = int(c.map_version)
            attrs[f"{p}.source"] = c.source
        attrs["otel_topics.status"] = self.status
        return attrs


Signal = Literal["traces", "logs", "metrics"]


@dataclass(slots=True)
class Cluster:
    """One topic of a topic map version. ``id`` is the stable identity; ``name`` may change."""

    id: str
    name: str
    centroid: list[float]  # unit vector in the embedding space
    size: int = 0
    description: str = ""
    keywords: list[str] = field(default_factory=list)
    radius: float = 0.0  # cosine distance from the centroid that covers most members
    threshold: float | None = None  # per-cluster distance threshold; None = the map's
    exemplars: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)  # lineage: ids in the previous version


@dataclass(slots=True)
class TopicMap:
    """One saved version of a topic map."""

    name: str
    facet: str
    version: int
    clusters: list[Cluster]
    distance_threshold: float  # resolved (``auto`` already turned into a number)
    embedder: str = ""  # id of the embedding model the centroids live in
    created_at: float = 0.0  # unix seconds
