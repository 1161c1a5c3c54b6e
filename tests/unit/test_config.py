"""Config: testdata/*.yaml compared as whole models, env expansion, every error path, docs coverage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from otel_topics.config import (
    BUILTIN_FACETS,
    AssemblerSettings,
    AutomationSettings,
    ClusteringSettings,
    Config,
    ConfigError,
    DeadLetter,
    DebugExporter,
    EmbedderSettings,
    ExcludeRule,
    FacetConfig,
    FileExporter,
    FileRotation,
    GrpcProtocol,
    HttpProtocol,
    LLMSettings,
    LogsTelemetry,
    MetricsTelemetry,
    OtlpGrpcExporter,
    OtlpHttpExporter,
    OtlpReceiver,
    Pipeline,
    PreprocessSettings,
    Protocols,
    RetryOnFailure,
    RetrySettings,
    SendingQueue,
    Service,
    SpoolSettings,
    StoreSettings,
    Telemetry,
    TLSSettings,
    TopicMapConfig,
    TopicsProcessor,
    dump_config,
    dump_defaults,
    iter_config_keys,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)
from otel_topics.config_load import expand_env

TESTDATA = Path(__file__).resolve().parent / "testdata"
DOCS = Path(__file__).resolve().parents[2] / "README.md"
MiB, GiB = 1024**2, 1024**3


def problems_of(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.yaml")
    assert info.value.source == "test.yaml"
    return info.value.problems


# --- whole models ------------------------------------------------------------------------------


def test_embedded_defaults() -> None:
    config = load_config(None)
    assert config == Config() == parse_config("", "empty.yaml")
    assert config.receivers == {
        "otlp": OtlpReceiver(protocols=Protocols(grpc=GrpcProtocol(), http=HttpProtocol()))
    }
    grpc = config.receivers["otlp"].protocols.grpc
    assert grpc is not None and grpc.host_port == ("localhost", 4317)
    assert grpc.max_recv_msg_size == 16 * MiB
    assert config.exporters == {"debug": DebugExporter(verbosity="basic")}
    assert config.service.pipelines == {
        "traces": Pipeline(receivers=["otlp"], processors=["topics"], exporters=["debug"]),
        "logs": Pipeline(receivers=["otlp"], processors=["topics"], exporters=["debug"]),
        "metrics": Pipeline(receivers=["otlp"], processors=[], exporters=["debug"]),
    }
    topics = config.topics
    assert topics == config.processors["topics"]
    assert (topics.sampling_rate, topics.forward, topics.attach_to) == (1.0, "enriched", "root")
    assert (topics.enrich_timeout, topics.max_concurrent_traces) == (60.0, 64)
    assert topics.assembler == AssemblerSettings(idle=10.0, max_wait=300.0, max_bytes=512 * MiB)
    assert topics.spool == SpoolSettings(
        directory=None, max_bytes=4 * GiB, fsync=True, commit_interval=0.002, segment_bytes=64 * MiB
    )
    assert topics.llm.type == "heuristic" and topics.llm.retry == RetrySettings(
        max_attempts=3, interval=300.0
    )
    assert topics.embedder.type == "local" and topics.embedder.cache_size == 10_000
    assert [f.name for f in topics.facets] == ["Task", "Sentiment", "Issues"]
    assert topics.facets[1].values == ["positive", "neutral", "negative", "mixed"]
    assert all(f.prompt == BUILTIN_FACETS[f.name].prompt and f.is_builtin for f in topics.facets)
    assert topics.topic_maps is None
    assert [(m.name, m.facet, m.distance_threshold) for m in config.topic_maps()] == [
        ("Task", "Task", "auto"),
        ("Issues", "Issues", "auto"),
    ]
    assert topics.automation == AutomationSettings()
    assert topics.automation.min_traces == 400 and topics.automation.rerun == 86_400.0
    assert topics.store == StoreSettings(url=None, retention=30 * 86_400.0)
    assert config.service.telemetry.metrics.address == "localhost:8888"
    assert config.service.telemetry.logs.level == "info"
    assert config.signals() == ["traces", "logs", "metrics"]
    assert config.enriches("traces") and config.enriches("logs") and not config.enriches("metrics")


def test_full_yaml_every_key_set() -> None:
    headers = {"X-Team": "agents", "X-Version": "2"}
    expected = Config(
        receivers={
            "otlp": OtlpReceiver(
                protocols=Protocols(
                    grpc=GrpcProtocol(endpoint="0.0.0.0:14317", max_recv_msg_size=32 * MiB),
                    http=HttpProtocol(endpoint="[::1]:14318", max_request_body_size=8_000_000),
                )
            ),
            "otlp/internal": OtlpReceiver(protocols=Protocols(grpc=GrpcProtocol())),
        },
        processors={
            "topics": TopicsProcessor(
                sampling_rate=0.25,
                forward="immediate",
                attach_to="all",
                enrich_timeout=90.0,
                max_concurrent_traces=8,
                assembler=AssemblerSettings(idle=1.5, max_wait=5400.0, max_bytes=GiB),
                spool=SpoolSettings(
                    directory="/var/spool/otel-topics",
                    max_bytes=10 * GiB,
                    fsync=False,
                    commit_interval=0.005,
                    segment_bytes=128 * MiB,
                ),
                preprocess=PreprocessSettings(
                    max_tokens=32000,
                    redact=False,
                    exclude_spans=[
                        ExcludeRule(name=r"^judge\."),
                        ExcludeRule(attribute="app.scorer"),
                        ExcludeRule(attribute="langfuse.observation.type", value="evaluator"),
                    ],
                    custom="mypkg.preprocess:to_conversation",
                ),
                llm=LLMSettings(
                    type="openai",
                    base_url="http://localhost:8080/v1",
                    model="qwen2.5-7b-instruct",
                    api_key=SecretStr("sk-test"),
                    response_format="json_object",
                    timeout=120.0,
                    max_retries=2,
                    concurrency=16,
                    max_tokens=512,
                    temperature=0.2,
                    model_path="/models/qwen.gguf",
                    retry=RetrySettings(max_attempts=5, interval=600.0),
                    headers=headers,
                ),
                embedder=EmbedderSettings(
                    type="openai",
                    base_url="https://embeddings.example.com/v1",
                    model="text-embedding-3-small",
                    api_key=SecretStr("ek-test"),
                    timeout=5.0,
                    batch_size=64,
                    cache_size=0,
                    headers={"X-Team": "agents"},
                ),
                facets=[
                    FacetConfig(name="Task", prompt=BUILTIN_FACETS["Task"].prompt),
                    FacetConfig(name="Sentiment", values=["happy", "unhappy"]),
                    FacetConfig(
                        name="Issues", prompt="What broke?", max_chars=120, no_match_pattern="^(NONE|N/A)$"
                    ),
                    FacetConfig(
                        name="Language", prompt="Which programming language is the conversation about?"
                    ),
                ],
                topic_maps=[
                    TopicMapConfig(name="Task", facet="Task"),
                    TopicMapConfig(
                        name="Problems",
                        facet="Issues",
                        distance_threshold=0.35,
                        clustering=ClusteringSettings.model_validate(
                            {"min_cluster_size": 10, "algorithm": "kmeans"}
                        ),
                    ),
                    TopicMapConfig(name="Languages", facet="Language", distance_threshold="auto"),
                ],
                automation=AutomationSettings(
                    enabled=False,
                    min_traces=50,
                    min_unique_facets=20,
                    rerun=6 * 3600.0,
                    backfill_window=2 * 86_400.0,
                    min_examples_traces=3,
                ),
                store=StoreSettings(url="postgresql://topics:secret@db:5432/topics", retention=7 * 86_400.0),
            )
        },
        exporters={
            "otlp/jaeger": OtlpGrpcExporter(
                type="otlp", endpoint="jaeger:4317", tls=TLSSettings(insecure=True), compression="none"
            ),
            "otlp_grpc/secure": OtlpGrpcExporter(
                type="otlp_grpc",
                endpoint="https://collector.example.com:443",
                tls=TLSSettings(
                    ca_file="/etc/ssl/ca.pem",
                    cert_file="/etc/ssl/client.pem",
                    key_file="/etc/ssl/client.key",
                    insecure_skip_verify=True,
                ),
                headers={"authorization": "Bearer abc"},
                timeout=30.0,
                retry_on_failure=RetryOnFailure(
                    enabled=False, initial_interval=0.5, max_interval=60.0, max_elapsed_time=600.0
                ),
                sending_queue=SendingQueue(enabled=False, directory="/var/queue/secure", max_bytes=256 * MiB),
                dead_letter=DeadLetter(path="/var/dead/secure.jsonl"),
            ),
            "otlphttp/tempo": OtlpHttpExporter(
                type="otlphttp",
                endpoint="http://tempo:4318/",
                encoding="json",
                logs_endpoint="http://loki:3100/otlp/v1/logs",
            ),
            "otlp_http": OtlpHttpExporter(
                type="otlp_http",
                traces_endpoint="https://a.example.com/traces",
                logs_endpoint="https://a.example.com/logs",
                metrics_endpoint="https://a.example.com/metrics",
            ),
            "debug": DebugExporter(verbosity="detailed"),
            "file/archive": FileExporter(
                path="/var/log/otel-topics/archive.jsonl",
                rotation=FileRotation(max_megabytes=50, max_backups=0),
            ),
        },
        service=Service(
            data_dir="/var/lib/otel-topics",
            pipelines={
                "traces": Pipeline(
                    receivers=["otlp", "otlp/internal"],
                    processors=["topics"],
                    exporters=["otlp/jaeger", "otlphttp/tempo", "file/archive"],
                ),
                "traces/raw": Pipeline(receivers=["otlp"], exporters=["otlp_grpc/secure"]),
                "logs": Pipeline(receivers=["otlp"], processors=["topics"], exporters=["otlphttp/tempo"]),
            },
            telemetry=Telemetry(metrics=MetricsTelemetry(address=None), logs=LogsTelemetry(level="debug")),
        ),
    )
    config = load_config(TESTDATA / "config_full.yaml")
    assert config == expected
    assert config.receivers["otlp/internal"].protocols.http is None
    assert config.signals() == ["traces", "logs"]
    assert list(config.pipelines_for("traces")) == ["traces", "traces/raw"]
    assert config.topics.llm.api_key is not None and config.topics.llm.api_key.get_secret_value() == "sk-test"


def test_minimal_yaml() -> None:
    expected = Config(
        exporters={"otlp": OtlpGrpcExporter(endpoint="jaeger:4317", tls=TLSSettings(insecure=True))},
        service=Service(
            pipelines={
                "traces": Pipeline(receivers=["otlp"], processors=["topics"], exporters=["otlp"]),
                "logs": Pipeline(receivers=["otlp"], processors=["topics"], exporters=["otlp"]),
                "metrics": Pipeline(receivers=["otlp"], exporters=["otlp"]),
            }
        ),
    )
    assert load_config(str(TESTDATA / "config_minimal.yaml")) == expected


def test_protocol_listed_with_null_value_listens_with_defaults() -> None:
    config = load_config(TESTDATA / "config_protocols.yaml")
    assert config.receivers == {"otlp": OtlpReceiver(protocols=Protocols(grpc=GrpcProtocol(), http=None))}


def test_env_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "OTT_HOST": "0.0.0.0",
        "OTT_GRPC_PORT": "5317",
        "OTT_SAMPLING": "0.5",
        "OTT_MODEL": "llama-3",
        "OTT_API_KEY": "12345",
        "OTT_REDACT": "false",
        "OTT_EMPTY": "",
        "OTT_DATA": "/srv",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OTT_LLM_URL", raising=False)
    config = load_config(TESTDATA / "config_env.yaml")
    grpc = config.receivers["otlp"].protocols.grpc
    assert grpc is not None and grpc.endpoint == "0.0.0.0:5317"
    topics = config.topics
    assert topics.sampling_rate == 0.5
    assert topics.llm.base_url == "http://localhost:8080/v1"
    assert topics.llm.model == "llama-3"
    assert topics.llm.api_key == SecretStr("12345")
    assert topics.preprocess.redact is False
    assert topics.preprocess.exclude_spans == [ExcludeRule(name="^price$")]
    assert config.exporters["debug"] == DebugExporter(verbosity="normal")
    assert config.service.data_dir == "/srv/otel"
    assert config.data_dir == Path("/srv/otel")


def test_env_missing_variable_names_variable_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTT_MODEL", raising=False)
    for name in ("OTT_HOST", "OTT_GRPC_PORT", "OTT_SAMPLING", "OTT_API_KEY", "OTT_REDACT", "OTT_DATA"):
        monkeypatch.setenv(name, "1")
    with pytest.raises(ConfigError) as info:
        load_config(TESTDATA / "config_env.yaml")
    assert info.value.problems == [
        ("processors.topics.llm.model", "environment variable 'OTT_MODEL' is not set")
    ]
    assert str(TESTDATA / "config_env.yaml") in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${env:A}", "alpha"),
        ("${A}", "alpha"),
        ("x-${A}-${env:B}", "x-alpha-"),
        ("${env:B:-fallback}", "fallback"),  # set but empty -> default, as in the shell
        ("${env:NOPE:-fall:back}", "fall:back"),
        ("${NOPE:-}", ""),
        ("$${env:A}", "${env:A}"),
        ("cost: $$5 and $", "cost: $5 and $"),
        ("${env:C}", "${env:A}"),  # values are not expanded twice
    ],
)
def test_expand_env(text: str, expected: str) -> None:
    assert expand_env(text, {"A": "alpha", "B": "", "C": "${env:A}"}) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${env:NOPE}", "environment variable 'NOPE' is not set"),
        ("${file:/etc/x}", "unsupported reference '${file:/etc/x}': only ${env:VAR} is supported"),
        ("${not a var}", "invalid reference '${not a var}'"),
        ("abc ${env:A", "unclosed reference '${env:A'"),
    ],
)
def test_expand_env_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        expand_env(text, {"A": "alpha"})
    assert str(info.value).startswith(message)


# --- value types -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("100ms", 0.1),
        ("10s", 10.0),
        ("5m", 300.0),
        ("24h", 86_400.0),
        ("1h30m", 5400.0),
        ("30d", 2_592_000.0),
        ("1.5s", 1.5),
        ("250us", 0.00025),
        (" 2ms ", 0.002),
        (10, 10.0),
        (0.5, 0.5),
        ("42", 42.0),
        (0, 0.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["10x", "s", "", "1h 30m", "-5s", -1, True, [1], "ten seconds"])
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("512MiB", 512 * MiB),
        ("2GiB", 2 * GiB),
        ("10MB", 10_000_000),
        ("100KiB", 102_400),
        ("1.5KiB", 1536),
        ("64 mib", 64 * MiB),
        (4096, 4096),
        ("4096", 4096),
        ("7B", 7),
    ],
)
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["10XB", "MiB", "", "-1KiB", -5, False, {"a": 1}])
def test_parse_size_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(value)


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        (
            "processors:\n  topics:\n    assembler: {idle: 10x}\n",
            "processors.topics.assembler.idle",
            "invalid duration '10x' (use e.g. 500ms, 10s, 5m, 24h)",
        ),
        (
            "processors: {topics: {assembler: {idle: 0s}}}\n",
            "processors.topics.assembler.idle",
            "invalid duration '0s': must be greater than 0",
        ),
        (
            "processors: {topics: {spool: {max_bytes: 10XB}}}\n",
            "processors.topics.spool.max_bytes",
            "invalid size '10XB' (use e.g. 100KiB, 512MiB, 2GiB, 10MB, or a number of bytes)",
        ),
        (
            "exporters:\n  otlp/jaeger: {endpoint: 'jaeger:4317', tls: {insecure: maybe}}\n",
            "exporters.otlp/jaeger.tls.insecure",
            "expected a boolean (true or false), got str 'maybe'",
        ),
        (
            "processors:\n  topics:\n    llm: {type: openai, base_url: 'http://x/v1', model: m}\n"
            "    facets: [{name: Task}, {name: Sentiment}, {name: Issues}, {name: 'my facet', prompt: p}]\n",
            "processors.topics.facets[3].name",
            "invalid name 'my facet': must be an identifier (a letter, then letters, digits or '_'; "
            "no dots or spaces)",
        ),
        (
            "processors: {topics: {facets: [{name: Task.x}]}}\n",
            "processors.topics.facets[0].name",
            "invalid name 'Task.x': must be an identifier (a letter, then letters, digits or '_'; "
            "no dots or spaces)",
        ),
        (
            "processors: {topics: {assembler: {idel: 1s}}}\n",
            "processors.topics.assembler.idel",
            "unknown key 'idel' (did you mean 'idle'?)",
        ),
        (
            "extensions: {health_check: {}}\n",
            "extensions",
            "unknown key 'extensions' (known: receivers, processors, exporters, service)",
        ),
        ("exporter: {debug: {}}\n", "exporter", "unknown key 'exporter' (did you mean 'exporters'?)"),
        (
            "exporters: {otlp: {endpoint: 'a:1', tls: {insecure: true, verify: false}}}\n",
            "exporters.otlp.tls.verify",
            "unknown key 'verify' (known: insecure, ca_file, cert_file, key_file, insecure_skip_verify)",
        ),
        (
            "exporters: {foo: {}}\n",
            "exporters.foo",
            "unknown exporter type 'foo' (known: otlp, otlp_grpc, otlphttp, otlp_http, debug, file)",
        ),
        (
            "exporters: {otlp: {type: file, endpoint: 'a:1'}}\n",
            "exporters.otlp.type",
            "unknown key (the exporter type comes from the key)",
        ),
        (
            "exporters: {otlp/../../x: {endpoint: 'a:1'}}\n",
            "exporters.otlp/../../x",
            "invalid name '../../x' after '/' (letters, digits, '_', '-', '.')",
        ),
        ("receivers: {zipkin: {}}\n", "receivers.zipkin", "unknown receiver type 'zipkin' (known: otlp)"),
        ("processors: {batch: {}}\n", "processors.batch", "unknown processor type 'batch' (known: topics)"),
        (
            "processors: {topics/b: {}}\n",
            "processors.topics/b",
            "only one topics processor is supported; name it 'topics'",
        ),
        ("exporters: {otlp: {}}\n", "exporters.otlp.endpoint", "required"),
        (
            "exporters: {otlp: {endpoint: 'ftp://x'}}\n",
            "exporters.otlp.endpoint",
            "invalid endpoint 'ftp://x' (use host:port or http(s)://host:port, e.g. jaeger:4317)",
        ),
        (
            "exporters: {otlphttp: {endpoint: 'tempo:4318'}}\n",
            "exporters.otlphttp.endpoint",
            "invalid URL 'tempo:4318' (must start with http:// or https:// and name a host)",
        ),
        (
            "exporters: {otlphttp: {traces_endpoint: 'http://a/t'}}\n",
            "exporters.otlphttp",
            "endpoint is required (or set all of traces_endpoint, logs_endpoint and metrics_endpoint)",
        ),
        (
            "exporters: {otlp: {endpoint: 'a:1', compression: zstd}}\n",
            "exporters.otlp.compression",
            "invalid value 'zstd' (expected one of: gzip, none)",
        ),
        (
            "exporters: {otlp: {endpoint: 'a:1', tls: {cert_file: c.pem}}}\n",
            "exporters.otlp.tls",
            "cert_file and key_file must be set together",
        ),
        (
            "exporters: {otlp: {endpoint: 'a:1', "
            "retry_on_failure: {initial_interval: 1m, max_interval: 5s}}}\n",
            "exporters.otlp.retry_on_failure",
            "initial_interval (60s) must not exceed max_interval (5s)",
        ),
        ("exporters: {file: {}}\n", "exporters.file.path", "required"),
        (
            "exporters: {debug: {verbosity: loud}}\n",
            "exporters.debug.verbosity",
            "invalid value 'loud' (expected one of: basic, normal, detailed)",
        ),
        (
            "receivers: {otlp: {protocols: {grpc: {endpoint: 'localhost'}}}}\n",
            "receivers.otlp.protocols.grpc.endpoint",
            "invalid endpoint 'localhost' (use host:port, e.g. localhost:4317)",
        ),
        (
            "receivers: {otlp: {protocols: {grpc: {endpoint: 'localhost:99999'}}}}\n",
            "receivers.otlp.protocols.grpc.endpoint",
            "invalid endpoint 'localhost:99999': port 99999 is out of range 0..65535",
        ),
        (
            "receivers: {otlp: {protocols: {udp: {}}}}\n",
            "receivers.otlp.protocols.udp",
            "unknown key 'udp' (known: grpc, http)",
        ),
        (
            "receivers: {otlp: {protocols: {}}}\n",
            "receivers.otlp.protocols",
            "at least one protocol (grpc, http) must be listed",
        ),
        (
            "processors: {topics: {llm: {type: gpt4}}}\n",
            "processors.topics.llm.type",
            "unknown llm type 'gpt4' (known: heuristic, openai, llama_cpp)",
        ),
        (
            "processors: {topics: {embedder: {type: bert}}}\n",
            "processors.topics.embedder.type",
            "unknown embedder type 'bert' (known: local, openai, fake)",
        ),
        (
            "processors: {topics: {forward: later}}\n",
            "processors.topics.forward",
            "invalid value 'later' (expected one of: enriched, immediate)",
        ),
        (
            "processors: {topics: {sampling_rate: 1.5}}\n",
            "processors.topics.sampling_rate",
            "must be between 0 and 1, got 1.5",
        ),
        (
            "processors: {topics: {sampling_rate: -0.1}}\n",
            "processors.topics.sampling_rate",
            "must be between 0 and 1, got -0.1",
        ),
        (
            "processors: {topics: {max_concurrent_traces: 0}}\n",
            "processors.topics.max_concurrent_traces",
            "must be >= 1, got 0",
        ),
        (
            "processors: {topics: {max_concurrent_traces: lots}}\n",
            "processors.topics.max_concurrent_traces",
            "expected an integer, got str 'lots'",
        ),
        (
            "processors: {topics: {facets: {name: Task}}}\n",
            "processors.topics.facets",
            "expected a list, got a mapping",
        ),
        (
            "processors: {topics: {facets: []}}\n",
            "processors.topics.facets",
            "at least one facet is required (leave facets out for the built-ins)",
        ),
        (
            "processors:\n  topics:\n    assembler: {idle: 10m}\n",
            "processors.topics.assembler.idle",
            "must be less than assembler.max_wait (300s), got 600s",
        ),
        (
            "processors: {topics: {spool: {max_bytes: 1MiB, segment_bytes: 2MiB}}}\n",
            "processors.topics.spool.segment_bytes",
            "must not exceed spool.max_bytes",
        ),
        (
            "processors: {topics: {preprocess: {exclude_spans: [{value: x}]}}}\n",
            "processors.topics.preprocess.exclude_spans[0]",
            "a rule needs name or attribute",
        ),
        (
            "processors: {topics: {preprocess: {exclude_spans: [{name: x}, {name: x, value: y}]}}}\n",
            "processors.topics.preprocess.exclude_spans[1]",
            "value needs attribute",
        ),
        (
            "processors: {topics: {preprocess: {exclude_spans: [{name: '(unclosed'}]}}}\n",
            "processors.topics.preprocess.exclude_spans[0].name",
            "invalid regular expression '(unclosed': missing ), unterminated subpattern at position 0",
        ),
        (
            "processors: {topics: {preprocess: {custom: 'my pkg.mod:fn'}}}\n",
            "processors.topics.preprocess.custom",
            "invalid function reference 'my pkg.mod:fn' (use package.module:function, "
            "e.g. mypkg.preprocess:to_conversation)",
        ),
        (
            "processors: {topics: {preprocess: {custom: 'mypkg.mod'}}}\n",
            "processors.topics.preprocess.custom",
            "invalid function reference 'mypkg.mod' (use package.module:function, "
            "e.g. mypkg.preprocess:to_conversation)",
        ),
        (
            "processors: {topics: {llm: {type: openai}}}\n",
            "processors.topics.llm.base_url",
            "required when llm.type is openai (e.g. http://localhost:8080/v1)",
        ),
        (
            "processors: {topics: {llm: {type: openai, base_url: 'http://h/v1'}}}\n",
            "processors.topics.llm.model",
            "required when llm.type is openai",
        ),
        (
            "processors: {topics: {llm: {type: openai, base_url: 'localhost:8080', model: m}}}\n",
            "processors.topics.llm.base_url",
            "invalid URL 'localhost:8080' (must start with http:// or https:// and name a host)",
        ),
        (
            "processors: {topics: {embedder: {type: openai, base_url: 'http://h/v1'}}}\n",
            "processors.topics.embedder.model",
            "required when embedder.type is openai",
        ),
        (
            "processors: {topics: {llm: {type: llama_cpp}}}\n",
            "processors.topics.llm.model_path",
            "required when llm.type is llama_cpp (a GGUF file)",
        ),
        (
            "processors: {topics: {llm: {temperature: 3}}}\n",
            "processors.topics.llm.temperature",
            "must be between 0 and 2, got 3",
        ),
        (
            "processors: {topics: {store: {url: 'mysql://db/x'}}}\n",
            "processors.topics.store.url",
            "unsupported store URL 'mysql://db/x' (use sqlite:////path/to/topics.db or postgresql://host/db)",
        ),
        (
            "processors:\n  topics:\n    facets:\n      - {name: Language}\n",
            "processors.topics.facets[0]",
            "facet 'Language' needs a prompt (only Task, Sentiment and Issues have built-in prompts)",
        ),
        (
            "processors: {topics: {facets: [{name: Tone, prompt: p, values: [calm]}]}}\n",
            "processors.topics.facets[0].values",
            "needs at least 2 values (leave values out for a free-text facet)",
        ),
        (
            "processors: {topics: {facets: [{name: Tone, prompt: p, values: [a, b, A]}]}}\n",
            "processors.topics.facets[0].values",
            "duplicate values (case-insensitive): A, a",
        ),
        (
            "processors: {topics: {facets: [{name: Task, prompt: '  '}]}}\n",
            "processors.topics.facets[0].prompt",
            "must not be empty (leave it out for a built-in facet's prompt)",
        ),
        (
            "processors: {topics: {facets: [{name: Task, max_chars: 5}]}}\n",
            "processors.topics.facets[0].max_chars",
            "must be >= 8, got 5",
        ),
        (
            "processors: {topics: {facets: [{name: Task, no_match_pattern: '['}]}}\n",
            "processors.topics.facets[0].no_match_pattern",
            "invalid regular expression '[': unterminated character set at position 0",
        ),
        (
            "processors: {topics: {topic_maps: [{facet: Task, distance_threshold: 3}]}}\n",
            "processors.topics.topic_maps[0].distance_threshold",
            "must be 'auto' or a number in (0, 2], got 3",
        ),
        (
            "processors: {topics: {topic_maps: [{facet: Task, name: 'a.b'}]}}\n",
            "processors.topics.topic_maps[0].name",
            "invalid name 'a.b': must be an identifier (a letter, then letters, digits or '_'; "
            "no dots or spaces)",
        ),
        (
            "processors: {topics: {topic_maps: [{name: T}]}}\n",
            "processors.topics.topic_maps[0].facet",
            "required",
        ),
        (
            "processors: {topics: {topic_maps: [{facet: Task}, {facet: Issues, name: Task}]}}\n",
            "processors.topics.topic_maps[1].name",
            "duplicate topic map name 'Task' (also topic_maps[0])",
        ),
        (
            "service: {telemetry: {logs: {level: verbose}}}\n",
            "service.telemetry.logs.level",
            "invalid value 'verbose' (expected one of: debug, info, warn, warning, error)",
        ),
        (
            "service: {pipelines: {}}\n",
            "service.pipelines",
            "at least one pipeline is required (traces, logs or metrics)",
        ),
        (
            "service: {pipelines: {traces: {receivers: [otlp], exporters: [debug], extra: [x]}}}\n",
            "service.pipelines.traces.extra",
            "unknown key 'extra' (known: receivers, processors, exporters)",
        ),
        (
            "service: {pipelines: {traces: {receivers: [otlp], exporters: [debug, debug]}}}\n",
            "service.pipelines.traces.exporters[1]",
            "exporter 'debug' is listed twice",
        ),
        (
            "service: {pipelines: {traces/: {receivers: [otlp], exporters: [debug]}}}\n",
            "service.pipelines.traces/",
            "empty pipeline name after '/'",
        ),
    ],
)
def test_error_paths(text: str, path: str, message: str) -> None:
    assert (path, message) in problems_of(text)


def test_pipeline_errors_from_testdata() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(TESTDATA / "config_invalid_pipelines.yaml")
    assert info.value.problems == [
        ("service.pipelines.traces.receivers[1]", "receiver 'zipkin' is not defined"),
        ("service.pipelines.traces.processors[1]", "processor 'batch' is not defined"),
        ("service.pipelines.traces.exporters[0]", "exporter 'otlp/x' is not defined"),
        ("service.pipelines.metrics.exporters", "a pipeline needs at least one exporter"),
        (
            "service.pipelines.metrics.processors[0]",
            "the topics processor works on traces and logs, not metrics",
        ),
        ("service.pipelines.profiles", "unknown signal 'profiles' (known: traces, logs, metrics)"),
    ]
    assert info.value.source == str(TESTDATA / "config_invalid_pipelines.yaml")


def test_pipeline_needs_a_receiver() -> None:
    problems = problems_of("service: {pipelines: {logs: {exporters: [debug]}}}\n")
    assert problems == [("service.pipelines.logs.receivers", "a pipeline needs at least one receiver")]


def test_default_pipelines_need_their_components() -> None:
    # exporters given, pipelines left out: the default pipelines still point at `debug`
    problems = problems_of("exporters: {otlp: {endpoint: 'jaeger:4317'}}\n")
    assert ("service.pipelines.traces.exporters[0]", "exporter 'debug' is not defined") in problems


def test_facet_errors_from_testdata() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(TESTDATA / "config_invalid_facets.yaml")
    need_llm = (
        "needs an LLM: the heuristic extractor serves only Task, Sentiment and Issues; "
        "set processors.topics.llm.type to openai"
    )
    assert info.value.problems == [
        ("processors.topics.facets[3]", f"custom facet 'Language' {need_llm}"),
        ("processors.topics.facets[4].name", "duplicate facet name 'Issues' (also facets[2])"),
        (
            "processors.topics.topic_maps[0].facet",
            "facet 'Sentiment' has fixed values: it is a category already and needs no map",
        ),
        (
            "processors.topics.topic_maps[1].facet",
            "facet 'Tone' is not defined (defined: Task, Sentiment, Issues, Language, Issues)",
        ),
    ]


@pytest.mark.parametrize(
    "facet",
    [
        "{name: Task, prompt: 'What is the goal?'}",
        "{name: Sentiment, values: [good, bad]}",
        "{name: Sentiment, prompt: 'How did they feel?'}",
    ],
)
def test_heuristic_refuses_changed_builtin_facet(facet: str) -> None:
    problems = problems_of(f"processors: {{topics: {{facets: [{facet}]}}}}\n")
    name = facet.split(",")[0].removeprefix("{name: ")
    assert problems == [
        (
            "processors.topics.facets[0]",
            f"facet '{name}' with a changed prompt or values needs an LLM: the heuristic extractor serves "
            "only Task, Sentiment and Issues; set processors.topics.llm.type to openai",
        )
    ]


def test_heuristic_accepts_builtins_spelled_out() -> None:
    task = BUILTIN_FACETS["Task"].prompt
    config = parse_config(
        "processors:\n  topics:\n    facets:\n"
        f"      - {{name: Task, prompt: {json.dumps(task)}, max_chars: 80}}\n"
        "      - {name: Sentiment, values: [positive, neutral, negative, mixed]}\n",
        "x.yaml",
    )
    assert [f.is_builtin for f in config.topics.facets] == [True, True]


def test_llm_facets_and_topic_maps() -> None:
    config = parse_config(
        "processors:\n  topics:\n"
        "    llm: {type: openai, base_url: 'http://localhost:8080/v1', model: m, api_key: k}\n"
        "    facets: [{name: Task}, {name: Language, prompt: 'Which language?'}, "
        "{name: Tone, prompt: 'Tone?', values: [calm, angry]}]\n",
        "x.yaml",
    )
    assert [(m.name, m.facet) for m in config.topic_maps()] == [("Task", "Task"), ("Language", "Language")]


def test_yaml_syntax_error_names_file_line_and_column() -> None:
    path = TESTDATA / "config_invalid_syntax.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    [(where, message)] = info.value.problems
    assert where == ""
    assert message.startswith("YAML syntax error at line 4, column 12: ")
    assert f"invalid configuration in {path}:" in str(info.value)


def test_duplicate_yaml_key_is_refused() -> None:
    text = "processors:\n  topics:\n    sampling_rate: 1\n    sampling_rate: 0.5\n"
    assert problems_of(text) == [
        ("", "YAML syntax error at line 4, column 5: found duplicate key 'sampling_rate'")
    ]


def test_yaml_merge_keys_may_override() -> None:
    text = (
        "x-base: &base {endpoint: 'jaeger:4317', compression: none}\n"
        "exporters:\n  otlp: {<<: *base, compression: gzip}\n"
    )
    # `x-base` itself is an unknown top-level key (the collector refuses it too)
    assert problems_of(text) == [
        ("x-base", "unknown key 'x-base' (known: receivers, processors, exporters, service)")
    ]


def test_top_level_must_be_a_mapping() -> None:
    assert problems_of("- a\n- b\n") == [("", "the top level must be a mapping of sections, got a list")]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.source == str(tmp_path / "nope.yaml")
    assert info.value.problems == [("", "cannot read the config file: No such file or directory")]


def test_null_sections_take_defaults() -> None:
    text = "receivers:\n  otlp:\nprocessors:\n  topics:\n    assembler:\n    facets:\nexporters:\n  debug:\n"
    assert parse_config(text, "x.yaml") == Config()


def test_several_problems_reported_at_once() -> None:
    problems = problems_of(
        "processors: {topics: {forward: later, assembler: {idle: 1x}}}\nexporters: {foo: {}, file: {}}\n"
    )
    assert [p for p, _ in problems] == [
        "exporters.foo",
        "processors.topics.forward",
        "processors.topics.assembler.idle",
        "exporters.file.path",
    ]


# --- convenience -------------------------------------------------------------------------------


def test_data_dir_and_derived_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OTEL_TOPICS_DATA_DIR", str(tmp_path / "data"))
    config = parse_config(
        "exporters:\n  otlp/jaeger: {endpoint: 'jaeger:4317'}\n  file: {path: out.jsonl}\n"
        "service: {pipelines: {traces: {receivers: [otlp], exporters: [otlp/jaeger]}}}\n",
        "x.yaml",
    )
    data = tmp_path / "data"
    assert config.data_dir == data
    assert config.spool_dir() == data / "spool"
    assert config.store_url() == f"sqlite:///{data}/topics.db"
    assert config.store_url().startswith("sqlite:////")
    [(key, kind, jaeger), (fkey, fkind, _)] = config.exporter_items()
    assert (key, kind, fkey, fkind) == ("otlp/jaeger", "otlp", "file", "file")
    assert isinstance(jaeger, OtlpGrpcExporter)
    assert jaeger.key == "otlp/jaeger"
    assert jaeger.queue_dir(config.data_dir) == data / "queue" / "otlp_jaeger"
    assert jaeger.dead_letter_path(config.data_dir) == data / "dead_letter" / "otlp_jaeger.jsonl"
    assert (jaeger.target, jaeger.use_tls) == (
        "jaeger:4317",
        True,
    )  # TLS unless tls.insecure, as in the collector


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OTEL_TOPICS_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Config().data_dir == tmp_path / ".local" / "share" / "otel-topics"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert Config().data_dir == tmp_path / "xdg" / "otel-topics"
    config = parse_config("service: {data_dir: ~/otel}\n", "x.yaml")
    assert config.data_dir == tmp_path / "otel"


def test_explicit_paths_win() -> None:
    config = load_config(TESTDATA / "config_full.yaml")
    assert config.spool_dir() == Path("/var/spool/otel-topics")
    assert config.store_url() == "postgresql://topics:secret@db:5432/topics"
    secure = config.exporters["otlp_grpc/secure"]
    assert isinstance(secure, OtlpGrpcExporter)
    assert secure.queue_dir(config.data_dir) == Path("/var/queue/secure")
    assert secure.dead_letter_path(config.data_dir) == Path("/var/dead/secure.jsonl")
    assert (secure.target, secure.use_tls) == ("collector.example.com:443", True)
    tempo = config.exporters["otlphttp/tempo"]
    assert isinstance(tempo, OtlpHttpExporter)
    assert tempo.url_for("traces") == "http://tempo:4318/v1/traces"
    assert tempo.url_for("logs") == "http://loki:3100/otlp/v1/logs"
    assert tempo.url_for("metrics") == "http://tempo:4318/v1/metrics"


@pytest.mark.parametrize(
    ("endpoint", "insecure", "target", "tls"),
    [
        ("jaeger:4317", True, "jaeger:4317", False),
        ("http://jaeger:4317", False, "jaeger:4317", False),
        ("https://api.example.com", True, "api.example.com:443", True),
        ("http://[::1]:4317", False, "[::1]:4317", False),
    ],
)
def test_grpc_exporter_target(endpoint: str, insecure: bool, target: str, tls: bool) -> None:
    exporter = OtlpGrpcExporter(endpoint=endpoint, tls=TLSSettings(insecure=insecure))
    assert (exporter.target, exporter.use_tls) == (target, tls)


# --- dump and docs -----------------------------------------------------------------------------


def test_dump_defaults_round_trips() -> None:
    text = dump_defaults()
    assert "assembler:" in text and "idle: 10s" in text and "max_bytes: 512MiB" in text
    assert "# A trace with a root span is complete" in text
    assert parse_config(text, "defaults.yaml") == Config()


def test_dump_round_trips_full_config_and_masks_secrets() -> None:
    config = load_config(TESTDATA / "config_full.yaml")
    assert parse_config(dump_config(config, show_secrets=True), "x.yaml") == config
    masked = dump_config(config, comments=False)
    assert "sk-test" not in masked and "api_key: '**********'" in masked
    assert "#" not in masked.split("\n")[0]


def test_iter_config_keys_covers_the_schema() -> None:
    keys = set(iter_config_keys())
    for key in (
        "receivers.otlp.protocols.grpc.endpoint",
        "receivers.otlp.protocols.http.max_request_body_size",
        "processors.topics.assembler.idle",
        "processors.topics.spool.commit_interval",
        "processors.topics.preprocess.exclude_spans[].attribute",
        "processors.topics.llm.retry.interval",
        "processors.topics.embedder.cache_size",
        "processors.topics.facets[].no_match_pattern",
        "processors.topics.topic_maps[].distance_threshold",
        "processors.topics.topic_maps[].clustering",
        "processors.topics.automation.min_examples_traces",
        "processors.topics.store.retention",
        "exporters.otlp.tls.insecure_skip_verify",
        "exporters.otlp.retry_on_failure.max_elapsed_time",
        "exporters.otlp.sending_queue.directory",
        "exporters.otlp.dead_letter.path",
        "exporters.otlphttp.encoding",
        "exporters.otlphttp.metrics_endpoint",
        "exporters.debug.verbosity",
        "exporters.file.rotation.max_backups",
        "service.data_dir",
        "service.pipelines.<signal>.exporters",
        "service.telemetry.metrics.address",
        "service.telemetry.logs.level",
    ):
        assert key in keys
    assert not any(k.endswith(".type") and k.startswith("exporters.") for k in keys)


def test_every_key_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    missing = [key for key in iter_config_keys() if f"`{key}`" not in text]
    assert not missing, f"keys missing from {DOCS.name}: {missing}"
