"""Settings of the ``topics`` processor (``processors.topics`` in the YAML) and the built-in facets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BeforeValidator, ConfigDict, Field, SecretStr, field_validator, model_validator

from otel_topics.config_values import (
    Duration,
    FunctionRef,
    HttpUrl,
    Identifier,
    PositiveByteSize,
    PositiveDuration,
    Regex,
    Section,
    StrMap,
    lowercase,
)
from otel_topics.facets.spec import BUILTIN_FACETS as _BUILTIN_SPECS
from otel_topics.facets.spec import FacetSpec

# --- built-in facets ---------------------------------------------------------------------------


BUILTIN_FACETS: Final[dict[str, FacetSpec]] = {f.name: f for f in _BUILTIN_SPECS}
"""The built-ins (from :mod:`otel_topics.facets.spec`, the one source of their prompts) by name.

The heuristic extractor serves only these; ``prompt: null`` / ``values: null`` take theirs.
"""


class FacetConfig(Section):
    """One facet: a short text (or one of ``values``) derived from every trace."""

    name: Identifier = Field(description="Facet name, used in the `facets.<name>` attribute; unique.")
    prompt: str | None = Field(
        default=None,
        description="Question asked about the conversation; null for a built-in name (Task, Sentiment, "
        "Issues) takes the built-in prompt, required for any other facet.",
    )
    values: list[str] | None = Field(
        default=None,
        description="Optional closed set of answers (at least 2, unique); a facet with values is a "
        "category and gets no topic map. Null for Sentiment takes positive, neutral, negative, mixed.",
    )
    max_chars: int = Field(default=200, ge=8, description="Longest facet text kept; longer answers are cut.")
    no_match_pattern: Regex | None = Field(
        default=None,
        description="Regular expression (case-insensitive); an answer that matches it becomes `no_match` "
        "(not embedded). Null takes the built-in facet's pattern, `^NONE$` for a custom facet.",
    )

    @field_validator("values")
    @classmethod
    def _check_values(cls, values: list[str] | None) -> list[str] | None:
        if values is None:
            return None
        if len(values) < 2:
            raise ValueError("needs at least 2 values (leave values out for a free-text facet)")
        if any(not v.strip() for v in values):
            raise ValueError("values must not be empty strings")
        lowered = [v.strip().lower() for v in values]
        duplicates = sorted({v for v in values if lowered.count(v.strip().lower()) > 1})
        if duplicates:
            raise ValueError(f"duplicate values (case-insensitive): {', '.join(duplicates)}")
        return values

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, prompt: str | None) -> str | None:
        if prompt is not None and not prompt.strip():
            raise ValueError("must not be empty (leave it out for a built-in facet's prompt)")
        return prompt

    @model_validator(mode="after")
    def _builtin_defaults(self) -> FacetConfig:
        builtin = BUILTIN_FACETS.get(self.name)
        if builtin is not None:
            if self.prompt is None:
                self.prompt = builtin.prompt
            if self.values is None and builtin.values is not None:
                self.values = list(builtin.values)
            if self.no_match_pattern is None:
                self.no_match_pattern = builtin.no_match_pattern
        elif self.prompt is None:
            raise ValueError(
                f"facet '{self.name}' needs a prompt (only Task, Sentiment and Issues have built-in prompts)"
            )
        if self.no_match_pattern is None:
            self.no_match_pattern = "^NONE$"
        return self

    @property
    def is_builtin(self) -> bool:
        """A built-in facet with its built-in prompt and values (what the heuristic extractor serves)."""
        builtin = BUILTIN_FACETS.get(self.name)
        return (
            builtin is not None
            and self.prompt == builtin.prompt
            and (
                self.values is None if builtin.values is None else tuple(self.values or ()) == builtin.values
            )
        )


def _default_facets() -> list[FacetConfig]:
    return [FacetConfig(name=name) for name in BUILTIN_FACETS]


# --- topic maps --------------------------------------------------------------------------------


class ClusteringSettings(Section):
    """Extra clustering parameters of one topic map, passed through to the clustering code."""

    model_config = ConfigDict(extra="allow")


def _threshold(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be 'auto' or a number in (0, 2], got {value!r}") from None
    if isinstance(value, bool) or not 0 < number <= 2:
        raise ValueError(f"must be 'auto' or a number in (0, 2], got {value!r}")
    return number


class IdentitySettings(Section):
    """How a new map version keeps the ids of the previous one (reconcile.py)."""

    enabled: bool = Field(
        default=True,
        description="Reconcile ids with the previous version; false: new ids for every cluster, no lineage.",
    )
    min_similarity: float = Field(
        default=0.8, gt=0, le=1, description="Least centroid cosine similarity for a cluster to keep an id."
    )
    min_overlap: float = Field(
        default=0.5, gt=0, le=1, description="Least share of members in common for a cluster to keep an id."
    )


class TopicMapConfig(Section):
    """A topic map: clusters of one facet's texts, and the classifier drawn from them."""

    name: Identifier | None = Field(
        default=None, description="Map name, used in `classifications.<name>.*`; null = the facet's name."
    )
    facet: Identifier = Field(description="The free-text facet (one without `values`) the map is built from.")
    distance_threshold: Annotated[float | Literal["auto"], BeforeValidator(_threshold)] = Field(
        default="auto",
        description="Cosine distance beyond which a trace is `no_match`: `auto` (derived from the "
        "clusters when the map is built) or a number in (0, 2].",
    )
    clustering: ClusteringSettings = Field(
        default_factory=ClusteringSettings,
        description="Extra clustering parameters (free-form map, passed to the clustering code).",
    )
    identity: IdentitySettings = Field(
        default_factory=IdentitySettings,
        description="Id reconciliation with the previous version: keep ids of unchanged topics.",
    )

    @model_validator(mode="after")
    def _default_name(self) -> TopicMapConfig:
        if self.name is None:
            self.name = self.facet
        return self

    @property
    def map_name(self) -> str:
        """The map's name (the facet's when not set)."""
        return self.name or self.facet


# --- stages ------------------------------------------------------------------------------------


class AssemblerSettings(Section):
    idle: PositiveDuration = Field(
        default=10.0, description="A trace with a root span is complete this long after its latest span."
    )
    max_wait: PositiveDuration = Field(
        default=300.0,
        description="A trace without a root span is complete this long after its first span; also the "
        "longest any trace is held, so a trace that keeps receiving spans is still released.",
    )
    max_bytes: PositiveByteSize = Field(
        default=512 * 1024**2,
        description="Memory budget for traces being assembled; past it the oldest are released early "
        "(never dropped).",
    )


class SpoolSettings(Section):
    directory: str | None = Field(
        default=None, description="Where spans are spooled durably; null = `<service.data_dir>/spool`."
    )
    max_bytes: PositiveByteSize = Field(
        default=4 * 1024**3,
        description="Disk cap of the spool; past it the receiver answers with backpressure.",
    )
    fsync: bool = Field(
        default=True, description="fsync each group commit before acknowledging (durability)."
    )
    commit_interval: Duration = Field(
        default=0.002, description="Group commit window: requests arriving within it share one fsync."
    )
    segment_bytes: PositiveByteSize = Field(
        default=64 * 1024**2, description="Size of one spool segment file; freed segment by segment."
    )


class ExcludeRule(Section):
    """Spans whose content is left out of the conversation (they are still forwarded)."""

    name: Regex | None = Field(default=None, description="Regular expression searched in the span name.")
    attribute: str | None = Field(default=None, description="Attribute key the span must carry.")
    value: str | None = Field(
        default=None, description="With `attribute`: the attribute's value must equal this (string form)."
    )

    @model_validator(mode="after")
    def _needs_something(self) -> ExcludeRule:
        if self.name is None and self.attribute is None:
            raise ValueError("a rule needs name or attribute")
        if self.value is not None and self.attribute is None:
            raise ValueError("value needs attribute")
        return self


class PreprocessSettings(Section):
    max_tokens: int = Field(
        default=128_000,
        ge=32,
        description="Cap on the conversation's size in tokens; a longer one is cut to fit.",
    )
    redact: bool = Field(
        default=True, description="Mask secrets and personal data (keys, tokens, emails, ...)."
    )
    exclude_spans: list[ExcludeRule] = Field(
        default_factory=list,
        description="Rules `{name, attribute, value}` for spans (scorers, evaluators) whose content is "
        "excluded from the conversation; EVALUATOR spans and evaluation results are always excluded.",
    )
    custom: FunctionRef | None = Field(
        default=None,
        description="`package.module:function` used instead of the built-in preprocessor: it gets the "
        "trace (TraceData) and returns a text, a list of texts, or None to skip the trace.",
    )


class RetrySettings(Section):
    max_attempts: int = Field(
        default=3,
        ge=0,
        description="Later attempts for a trace whose facets failed, from the stored conversation.",
    )
    interval: PositiveDuration = Field(default=300.0, description="Time between those attempts.")


_LLM_TYPE = Annotated[Literal["heuristic", "openai", "llama_cpp"], BeforeValidator(lowercase)]
_EMBEDDER_TYPE = Annotated[Literal["local", "openai", "fake"], BeforeValidator(lowercase)]


class LLMSettings(Section):
    type: _LLM_TYPE = Field(
        default="heuristic",
        description="Facet extractor: `heuristic` (no model; the built-in facets only), `openai` (any "
        "OpenAI-compatible chat server) or `llama_cpp` (a local GGUF model).",
    )
    base_url: HttpUrl | None = Field(
        default=None,
        description="OpenAI-compatible API root, e.g. http://localhost:8080/v1 (required for openai).",
    )
    model: str | None = Field(
        default=None, description="Model name sent to the server (required for openai)."
    )
    api_key: SecretStr | None = Field(default=None, description="Bearer token, e.g. ${env:OPENAI_API_KEY}.")
    response_format: Literal["json_schema", "json_object", "none"] = Field(
        default="json_schema",
        description="How structured output is requested: `json_schema`, `json_object` or `none` "
        "(prompt only).",
    )
    timeout: PositiveDuration = Field(default=60.0, description="Timeout of one LLM request.")
    max_retries: int = Field(
        default=4, ge=0, description="Retries of a failed request (backoff with jitter)."
    )
    concurrency: int = Field(default=4, ge=1, description="LLM requests in flight at once.")
    max_tokens: int = Field(default=1024, ge=1, description="Cap on the answer's tokens.")
    temperature: float = Field(default=0.0, ge=0, le=2, description="Sampling temperature.")
    model_path: str | None = Field(default=None, description="GGUF model file (required for llama_cpp).")
    retry: RetrySettings = Field(default_factory=RetrySettings, description="Later retries of failed traces.")
    headers: StrMap = Field(default_factory=dict, description="Extra HTTP headers sent with each request.")


class EmbedderSettings(Section):
    type: _EMBEDDER_TYPE = Field(
        default="local",
        description="`local` (bundled MiniLM, ONNX, CPU), `openai` (an OpenAI-compatible /embeddings "
        "server) or `fake` (deterministic, for tests).",
    )
    base_url: HttpUrl | None = Field(
        default=None, description="OpenAI-compatible API root (required for openai)."
    )
    model: str | None = Field(
        default=None,
        description="Embedding model name (required for openai); for local, null = the bundled model.",
    )
    api_key: SecretStr | None = Field(default=None, description="Bearer token for openai.")
    timeout: PositiveDuration = Field(default=30.0, description="Timeout of one embedding request.")
    batch_size: int = Field(default=32, ge=1, description="Texts embedded per call.")
    threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="local: onnxruntime threads for one inference. More lowers the latency of one "
        "call while other cores are idle; 1 leaves the other cores to the receiver and the workers.",
    )
    cache_size: int = Field(
        default=10_000, ge=0, description="Embeddings cached by text hash (0 = no cache)."
    )
    headers: StrMap = Field(default_factory=dict, description="Extra HTTP headers sent with each request.")


class AutomationSettings(Section):
    enabled: bool = Field(default=True, description="Build and refresh topic maps in the background.")
    min_traces: int = Field(
        default=400, ge=1, description="Traces with facets needed before the first map is built."
    )
    min_unique_facets: int = Field(
        default=100, ge=1, description="Distinct facet texts needed before the first map is built."
    )
    rerun: PositiveDuration = Field(default=86_400.0, description="Rebuild every map this often.")
    backfill_window: Duration = Field(
        default=86_400.0,
        description="After a new map version, reclassify stored traces this far back (0 = none).",
    )
    min_examples_traces: int = Field(
        default=5, ge=1, description="Smallest number of traces a cluster needs to become a topic."
    )


class StoreSettings(Section):
    url: str | None = Field(
        default=None,
        description="`sqlite:////abs/path.db` (four slashes) or `postgresql://...`; "
        "null = `sqlite:////<service.data_dir>/topics.db`.",
    )
    retention: Duration = Field(
        default=30 * 86_400.0,
        description="Stored conversations, facets and results older than this are deleted.",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(
                f"unsupported store URL '{url}' (use sqlite:////path/to/topics.db or postgresql://host/db)"
            )
        return url


# --- the processor -----------------------------------------------------------------------------


class TopicsProcessor(Section):
    """``processors.topics``: enrichment of traces with facets and topic classifications."""

    sampling_rate: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of traces enriched (0..1), decided from the trace id alone.",
    )
    forward: Literal["enriched", "immediate"] = Field(
        default="enriched",
        description="`enriched`: hold a trace's spans until it is enriched; `immediate`: forward at once "
        "and send results as classification spans.",
    )
    attach_to: Literal["root", "all"] = Field(
        default="root", description="Put the attributes on the root span only, or on every span of the trace."
    )
    enrich_timeout: PositiveDuration = Field(
        default=60.0,
        description="Past this a trace goes downstream un-enriched with status `timeout` (its result "
        "follows later as a classification span).",
    )
    max_concurrent_traces: int = Field(default=64, ge=1, description="Traces enriched at once.")
    workers: int | None = Field(
        default=None,
        ge=0,
        description="Processes that preprocess traces (and extract heuristic facets) beside the serving "
        "process; null: one per CPU beyond the first, at most 4; 0: all in the serving process.",
    )
    assembler: AssemblerSettings = Field(
        default_factory=AssemblerSettings, description="When a trace is complete."
    )
    spool: SpoolSettings = Field(default_factory=SpoolSettings, description="Durable span spool.")
    preprocess: PreprocessSettings = Field(
        default_factory=PreprocessSettings, description="Trace -> conversation."
    )
    llm: LLMSettings = Field(default_factory=LLMSettings, description="Facet extraction.")
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings, description="Facet text -> vector.")
    facets: list[FacetConfig] = Field(
        default_factory=_default_facets, description="Facets derived from every trace."
    )
    topic_maps: list[TopicMapConfig] | None = Field(
        default=None, description="Topic maps; null = one map per free-text facet, named like the facet."
    )
    automation: AutomationSettings = Field(
        default_factory=AutomationSettings, description="Background topic map building and backfill."
    )
    store: StoreSettings = Field(default_factory=StoreSettings, description="Where results are kept.")

    @field_validator("facets")
    @classmethod
    def _not_empty(cls, facets: list[FacetConfig]) -> list[FacetConfig]:
        if not facets:
            raise ValueError("at least one facet is required (leave facets out for the built-ins)")
        return facets

    def facet(self, name: str) -> FacetConfig | None:
        """The facet called ``name``, or None."""
        return next((f for f in self.facets if f.name == name), None)

    def effective_topic_maps(self) -> list[TopicMapConfig]:
        """The configured maps, or one per free-text facet (a facet without ``values``)."""
        if self.topic_maps is not None:
            return list(self.topic_maps)
        return [TopicMapConfig(facet=f.name) for f in self.facets if f.values is None]

    def spool_dir(self, data_dir: Path) -> Path:
        """``spool.directory`` or ``<data_dir>/spool``."""
        return _path(self.spool.directory) if self.spool.directory else data_dir / "spool"

    def store_url(self, data_dir: Path) -> str:
        """``store.url`` or ``sqlite:////<data_dir>/topics.db``."""
        return self.store.url or f"sqlite:///{(data_dir / 'topics.db').absolute()}"


def _path(text: str) -> Path:
    return Path(text).expanduser()
