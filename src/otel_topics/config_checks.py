"""Cross-field rules of the config, each problem reported as ``(dotted.path, message)``."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from otel_topics.config_components import EXPORTER_TYPES, SIGNALS
from otel_topics.config_topics import BUILTIN_FACETS, TopicsProcessor

if TYPE_CHECKING:
    from otel_topics.config import Config

Problems = list[tuple[str, str]]
_TOPICS = "processors.topics"


def check(config: Config) -> Problems:
    """Every cross-field problem of an otherwise valid config."""
    problems: Problems = []
    _check_components(config, problems)
    _check_pipelines(config, problems)
    topics = config.processors.get("topics")
    if topics is not None:
        _check_topics(topics, problems)
    return problems


def _check_components(config: Config, problems: Problems) -> None:
    # Keys are checked while loading; this repeats it for configs built in code.
    for key in config.receivers:
        if key.partition("/")[0] != "otlp":
            problems.append(
                (f"receivers.{key}", f"unknown receiver type '{key.partition('/')[0]}' (known: otlp)")
            )
    for key in config.processors:
        if key != "topics":
            problems.append((f"processors.{key}", f"unknown processor '{key}' (known: topics)"))
    for key, exporter in config.exporters.items():
        kind = key.partition("/")[0]
        expected = EXPORTER_TYPES.get(kind)
        if expected is None:
            known = ", ".join(EXPORTER_TYPES)
            problems.append((f"exporters.{key}", f"unknown exporter type '{kind}' (known: {known})"))
        elif not isinstance(exporter, expected):
            problems.append((f"exporters.{key}", f"settings of type '{exporter.type}' under a '{kind}' key"))
    for key, receiver in config.receivers.items():
        protocols = receiver.protocols
        if protocols.grpc is None and protocols.http is None:
            problems.append(
                (f"receivers.{key}.protocols", "at least one protocol (grpc, http) must be listed")
            )


def _check_pipelines(config: Config, problems: Problems) -> None:
    pipelines = config.service.pipelines
    if not pipelines:
        problems.append(("service.pipelines", "at least one pipeline is required (traces, logs or metrics)"))
    defined: dict[str, Collection[str]] = {
        "receiver": config.receivers.keys(),
        "processor": config.processors.keys(),
        "exporter": config.exporters.keys(),
    }
    for key, pipeline in pipelines.items():
        path = f"service.pipelines.{key}"
        signal, slash, name = key.partition("/")
        if signal not in SIGNALS:
            problems.append((path, f"unknown signal '{signal}' (known: {', '.join(SIGNALS)})"))
        elif slash and not name:
            problems.append((path, "empty pipeline name after '/'"))
        for what, refs in (
            ("receiver", pipeline.receivers),
            ("processor", pipeline.processors),
            ("exporter", pipeline.exporters),
        ):
            for i, ref in enumerate(refs):
                where = f"{path}.{what}s[{i}]"
                if ref not in defined[what]:
                    problems.append((where, f"{what} '{ref}' is not defined"))
                elif ref in refs[:i]:
                    problems.append((where, f"{what} '{ref}' is listed twice"))
        if not pipeline.receivers:
            problems.append((f"{path}.receivers", "a pipeline needs at least one receiver"))
        if not pipeline.exporters:
            problems.append((f"{path}.exporters", "a pipeline needs at least one exporter"))
        if signal == "metrics" and "topics" in pipeline.processors:
            i = pipeline.processors.index("topics")
            problems.append(
                (f"{path}.processors[{i}]", "the topics processor works on traces and logs, not metrics")
            )


def _check_topics(topics: TopicsProcessor, problems: Problems) -> None:
    llm, embedder = topics.llm, topics.embedder
    if topics.assembler.idle >= topics.assembler.max_wait:
        problems.append(
            (
                f"{_TOPICS}.assembler.idle",
                f"must be less than assembler.max_wait ({topics.assembler.max_wait:g}s), "
                f"got {topics.assembler.idle:g}s",
            )
        )
    if topics.spool.segment_bytes > topics.spool.max_bytes:
        problems.append((f"{_TOPICS}.spool.segment_bytes", "must not exceed spool.max_bytes"))
    for section, settings in (("llm", llm), ("embedder", embedder)):
        if settings.type == "openai":
            if settings.base_url is None:
                problems.append(
                    (
                        f"{_TOPICS}.{section}.base_url",
                        f"required when {section}.type is openai (e.g. http://localhost:8080/v1)",
                    )
                )
            if settings.model is None:
                problems.append((f"{_TOPICS}.{section}.model", f"required when {section}.type is openai"))
    if llm.type == "llama_cpp" and llm.model_path is None:
        problems.append((f"{_TOPICS}.llm.model_path", "required when llm.type is llama_cpp (a GGUF file)"))

    first_index: dict[str, int] = {}
    for i, facet in enumerate(topics.facets):
        path = f"{_TOPICS}.facets[{i}]"
        if facet.name in first_index:
            problems.append(
                (
                    f"{path}.name",
                    f"duplicate facet name '{facet.name}' (also facets[{first_index[facet.name]}])",
                )
            )
            continue
        first_index[facet.name] = i
        if llm.type == "heuristic" and not facet.is_builtin:
            what = (
                f"custom facet '{facet.name}'"
                if facet.name not in BUILTIN_FACETS
                else f"facet '{facet.name}' with a changed prompt or values"
            )
            problems.append(
                (
                    path,
                    f"{what} needs an LLM: the heuristic extractor serves only Task, Sentiment and Issues; "
                    "set processors.topics.llm.type to openai",
                )
            )

    map_index: dict[str, int] = {}
    for i, topic_map in enumerate(topics.topic_maps or ()):
        path = f"{_TOPICS}.topic_maps[{i}]"
        source = topics.facet(topic_map.facet)
        if source is None:
            defined = ", ".join(f.name for f in topics.facets)
            problems.append(
                (f"{path}.facet", f"facet '{topic_map.facet}' is not defined (defined: {defined})")
            )
        elif source.values is not None:
            problems.append(
                (
                    f"{path}.facet",
                    f"facet '{source.name}' has fixed values: it is a category already and needs no map",
                )
            )
        name = topic_map.map_name
        if name in map_index:
            problems.append(
                (f"{path}.name", f"duplicate topic map name '{name}' (also topic_maps[{map_index[name]}])")
            )
        else:
            map_index[name] = i
