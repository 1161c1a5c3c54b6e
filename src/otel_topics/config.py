"""The collector-style YAML config: typed models, loading, validation, defaults.

Public API::

    load_config(path: str | Path | None) -> Config          # None = the embedded defaults
    parse_config(text: str, source: str = "<config>") -> Config
    dump_defaults() -> str                                  # the embedded defaults as YAML
    dump_config(config: Config, *, comments: bool = True, show_secrets: bool = False) -> str
    iter_config_keys() -> Iterator[str]                     # every documented dotted key path
    check_config(config: Config) -> list[tuple[str, str]]   # cross-field problems

Every problem raises one :class:`otel_topics.errors.ConfigError` whose ``problems`` are
``(dotted.path, message)`` pairs in the user's spelling, e.g.
``("processors.topics.facets[3].name", "invalid name 'my facet': ...")``.

Model modules: :mod:`otel_topics.config_values` (durations, sizes, endpoints), :mod:`.config_topics`
(the ``topics`` processor), :mod:`.config_components` (receivers, exporters, service),
:mod:`.config_load` (YAML, ``${env:VAR}``, error mapping), :mod:`.config_checks` (cross-field
rules), :mod:`.config_dump` (YAML output, key listing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from pydantic import Field, ValidationError

from otel_topics import config_load
from otel_topics.config_checks import check
from otel_topics.config_components import (
    EXPORTER_TYPES,
    SIGNALS,
    DeadLetter,
    DebugExporter,
    Exporter,
    ExporterSettings,
    FileExporter,
    FileRotation,
    GrpcProtocol,
    HttpProtocol,
    LogsTelemetry,
    MetricsTelemetry,
    OtlpGrpcExporter,
    OtlpHttpExporter,
    OtlpReceiver,
    Pipeline,
    Protocols,
    RetryOnFailure,
    SendingQueue,
    Service,
    Telemetry,
    TLSSettings,
)
from otel_topics.config_dump import dump, iter_keys
from otel_topics.config_topics import (
    BUILTIN_FACETS,
    AssemblerSettings,
    AutomationSettings,
    ClusteringSettings,
    EmbedderSettings,
    ExcludeRule,
    FacetConfig,
    LLMSettings,
    PreprocessSettings,
    RetrySettings,
    SpoolSettings,
    StoreSettings,
    TopicMapConfig,
    TopicsProcessor,
)
from otel_topics.config_values import (
    Section,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
    split_host_port,
)
from otel_topics.errors import ConfigError
from otel_topics.model import Signal

__all__ = [
    "BUILTIN_FACETS",
    "EXPORTER_TYPES",
    "SIGNALS",
    "AssemblerSettings",
    "AutomationSettings",
    "ClusteringSettings",
    "Config",
    "ConfigError",
    "DeadLetter",
    "DebugExporter",
    "EmbedderSettings",
    "ExcludeRule",
    "ExporterSettings",
    "FacetConfig",
    "FileExporter",
    "FileRotation",
    "GrpcProtocol",
    "HttpProtocol",
    "LLMSettings",
    "LogsTelemetry",
    "MetricsTelemetry",
    "OtlpGrpcExporter",
    "OtlpHttpExporter",
    "OtlpReceiver",
    "Pipeline",
    "PreprocessSettings",
    "Protocols",
    "RetryOnFailure",
    "RetrySettings",
    "SendingQueue",
    "Service",
    "SpoolSettings",
    "StoreSettings",
    "TLSSettings",
    "Telemetry",
    "TopicMapConfig",
    "TopicsProcessor",
    "check_config",
    "default_data_dir",
    "dump_config",
    "dump_defaults",
    "format_duration",
    "format_size",
    "iter_config_keys",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
    "split_host_port",
]


def _default_receivers() -> dict[str, OtlpReceiver]:
    return {"otlp": OtlpReceiver()}


def _default_processors() -> dict[str, TopicsProcessor]:
    return {"topics": TopicsProcessor()}


def _default_exporters() -> dict[str, ExporterSettings]:
    return {"debug": DebugExporter()}


class Config(Section):
    """The whole config file. Every key left out takes its documented default."""

    receivers: dict[str, OtlpReceiver] = Field(
        default_factory=_default_receivers,
        description="Receivers by key `otlp` or `otlp/<name>`; only the OTLP receiver exists.",
    )
    processors: dict[str, TopicsProcessor] = Field(
        default_factory=_default_processors,
        description="Processors by key; only `topics` exists.",
    )
    exporters: dict[str, Exporter] = Field(
        default_factory=_default_exporters,
        description="Exporters by key `type[/name]`: otlp, otlp_grpc, otlphttp, otlp_http, debug, file.",
    )
    service: Service = Field(default_factory=Service, description="Pipelines, data directory, telemetry.")

    def model_post_init(self, context: object, /) -> None:
        for key, exporter in self.exporters.items():
            exporter._key = key

    # --- convenience ---------------------------------------------------------------------------

    @property
    def topics(self) -> TopicsProcessor:
        """The ``topics`` processor's settings (its defaults when the processor is not configured)."""
        return self.processors.get("topics") or TopicsProcessor()

    @property
    def data_dir(self) -> Path:
        """``service.data_dir`` (or its default), ``~`` expanded, absolute."""
        if self.service.data_dir:
            return Path(self.service.data_dir).expanduser().absolute()
        return default_data_dir()

    def spool_dir(self) -> Path:
        """``processors.topics.spool.directory`` or ``<data_dir>/spool``."""
        return self.topics.spool_dir(self.data_dir)

    def store_url(self) -> str:
        """``processors.topics.store.url`` or ``sqlite:////<data_dir>/topics.db``."""
        return self.topics.store_url(self.data_dir)

    def topic_maps(self) -> list[TopicMapConfig]:
        """The effective topic maps (configured, or one per free-text facet)."""
        return self.topics.effective_topic_maps()

    def exporter_items(self) -> list[tuple[str, str, ExporterSettings]]:
        """``(key, type, settings)`` for each exporter; ``type`` is the key's part before ``/``."""
        return [(key, key.partition("/")[0], settings) for key, settings in self.exporters.items()]

    def pipelines_for(self, signal: Signal) -> dict[str, Pipeline]:
        """The pipelines of one signal (``traces`` and ``traces/<name>`` for ``"traces"``), by key."""
        return {k: p for k, p in self.service.pipelines.items() if k.partition("/")[0] == signal}

    def signals(self) -> list[Signal]:
        """Signals with at least one pipeline: the receiver accepts only these."""
        return [s for s in SIGNALS if self.pipelines_for(s)]

    def enriches(self, signal: Signal) -> bool:
        """True when a pipeline of ``signal`` runs the ``topics`` processor."""
        return any("topics" in p.processors for p in self.pipelines_for(signal).values())


def default_data_dir() -> Path:
    """$OTEL_TOPICS_DATA_DIR, else $XDG_DATA_HOME/otel-topics, else ~/.local/share/otel-topics."""
    explicit = os.environ.get("OTEL_TOPICS_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser().absolute()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return (base / "otel-topics").absolute()


# --- loading -----------------------------------------------------------------------------------


def load_config(path: str | Path | None) -> Config:
    """Read, expand and validate a config file; ``None`` gives the embedded defaults."""
    if path is None:
        return Config()
    source = str(path)
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read the config file: {exc.strerror or exc}")], source) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([("", f"the config file is not UTF-8 text: {exc}")], source) from None
    return parse_config(text, source)


def parse_config(text: str, source: str = "<config>") -> Config:
    """Validate YAML text; ``source`` names it in errors. Raises :class:`ConfigError`."""
    raw = config_load.read_yaml(text, source)
    raw, problems = config_load.prepare(raw, dict(os.environ))
    config: Config | None = None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems.extend(config_load.map_errors(exc, Config, skip={path for path, _ in problems}))
    if config is not None and not problems:
        problems.extend(check_config(config))
    if problems:
        raise ConfigError(problems, source)
    assert config is not None
    return config


def check_config(config: Config) -> list[tuple[str, str]]:
    """Cross-field problems (references between sections, LLM needs, ...) as ``(path, message)``."""
    return check(config)


def dump_config(config: Config, *, comments: bool = True, show_secrets: bool = False) -> str:
    """The config as YAML that :func:`parse_config` reads back (API keys masked unless ``show_secrets``)."""
    return dump(config, comments=comments, show_secrets=show_secrets)


def dump_defaults() -> str:
    """The embedded default config as commented YAML (``otel-topics`` prints it)."""
    return dump_config(Config())


def iter_config_keys() -> Iterator[str]:
    """Every key of the schema as a dotted path, e.g. ``processors.topics.assembler.idle``.

    Lists show as ``[]`` (``processors.topics.facets[].name``); user-named maps as ``<signal>``;
    each exporter type once under its main name (``exporters.otlp``, ``exporters.otlphttp``, ...).
    """
    return iter_keys(Config)
