"""The ``otel-topics`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from otel_topics import LOG_FORMAT, __version__
from otel_topics.config import Config
from otel_topics.errors import ConfigError, OtelTopicsError


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=LOG_FORMAT,
        stream=sys.stderr,
    )
    for noisy in ("httpx", "faiss", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_serve(args: argparse.Namespace) -> int:
    from otel_topics.config import load_config
    from otel_topics.service import serve

    config = load_config(args.config)
    problems = start_checks(config)
    if problems:
        raise ConfigError(problems, source=args.config or "embedded defaults")
    _setup_logging(config.service.telemetry.logs.level)
    logging.getLogger("otel_topics").info(
        "otel-topics %s starting (%s)", __version__, args.config or "embedded default config"
    )
    return asyncio.run(serve(config))


def cmd_validate(args: argparse.Namespace) -> int:
    from otel_topics.config import load_config

    config = load_config(args.config)
    problems = start_checks(config)
    if problems:
        raise ConfigError(problems, source=args.config)
    print(f"{args.config}: valid")
    return 0


def start_checks(config: Config) -> list[tuple[str, str]]:
    """What only start-up would find: the custom preprocessor imports, the GGUF file exists and
    llama-cpp-python is installed."""
    import importlib.util

    problems: list[tuple[str, str]] = []
    t = config.topics
    if t.preprocess.custom:
        from otel_topics.preprocess import load_custom_preprocessor

        try:
            load_custom_preprocessor(str(t.preprocess.custom))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if t.llm.type == "llama_cpp":
        path = Path(str(t.llm.model_path))
        if not path.is_file():
            problems.append(("processors.topics.llm.model_path", f"no such file: {path}"))
        if importlib.util.find_spec("llama_cpp") is None:
            problems.append(
                (
                    "processors.topics.llm.type",
                    "llama-cpp-python is not installed: run `pip install 'otel-topics[llama]'`",
                )
            )
    return problems


def cmd_print_config(args: argparse.Namespace) -> int:
    from otel_topics.config import dump_defaults

    print(dump_defaults(), end="")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from otel_topics.replay import read_conversations, send

    conversations = list(read_conversations(Path(args.file)))
    if args.limit is not None:
        conversations = conversations[: args.limit]
    ids = send(
        conversations,
        endpoint=args.endpoint,
        protocol=args.protocol,
        batch=args.batch,
        service=args.service,
    )
    print(f"sent {len(ids)} traces to {args.endpoint} ({args.protocol})")
    if args.trace_ids:
        Path(args.trace_ids).write_text("".join(t.hex() + "\n" for t in ids))
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    import csv

    from otel_topics.config import load_config
    from otel_topics.store import open_store

    config = load_config(args.config)
    store = open_store(config.store_url())
    columns, rows = store.query(args.sql)
    writer = csv.writer(sys.stdout, delimiter="\t" if args.format == "tsv" else ",")
    writer.writerow(columns)
    writer.writerows(rows)
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from otel_topics import topics_cli as tc
    from otel_topics.config import load_config

    config = load_config(args.config)
    if args.action == "build":
        for tm in tc.build(config, args.map):
            print(tc.format_map(tm, min_examples_traces=config.topics.automation.min_examples_traces))
        return 0
    store = tc.with_store(config)
    try:
        if args.action == "list":
            print(tc.format_list(store))
        elif args.action == "status":
            print(tc.format_status(store, [m.map_name for m in config.topic_maps()]))
        else:
            latest = store.latest_topic_map(args.name)
            if latest is None:
                print(f"otel-topics: no topic map {args.name!r} in the store", file=sys.stderr)
                return 1
            print(tc.format_map(latest, min_examples_traces=config.topics.automation.min_examples_traces))
    finally:
        store.close()
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    from otel_topics import cluster_cli

    return cluster_cli.cmd_cluster(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="otel-topics",
        description="OpenTelemetry sidecar: facets and topics for LLM agent traces.",
    )
    p.add_argument("--version", action="version", version=f"otel-topics {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the sidecar (embedded defaults when no --config)")
    s.add_argument("--config", metavar="F", help="collector-style YAML config file")
    s.set_defaults(func=cmd_serve)

    v = sub.add_parser("validate", help="check a config file and print errors with key paths")
    v.add_argument("--config", metavar="F", required=True)
    v.set_defaults(func=cmd_validate)

    d = sub.add_parser("print-config", help="print the embedded default config as YAML")
    d.set_defaults(func=cmd_print_config)

    r = sub.add_parser("replay", help="send OpenAI-format conversations (JSONL) as GenAI-convention traces")
    r.add_argument("file", metavar="F.jsonl")
    r.add_argument("--endpoint", default="localhost:4317", help="OTLP endpoint (default localhost:4317)")
    r.add_argument(
        "--protocol", choices=["grpc", "http"], default="grpc", help="OTLP transport (default grpc)"
    )
    r.add_argument("--batch", type=int, default=8, help="traces per export request (default 8)")
    r.add_argument("--limit", type=int, help="send only the first N conversations")
    r.add_argument("--service", default="otel-topics-replay", help="service.name of the traces")
    r.add_argument("--trace-ids", metavar="OUT", help="write the sent trace ids (hex), one a line")
    r.set_defaults(func=cmd_replay)

    q = sub.add_parser("query", help="read-only SQL over the store (traces, facets, classifications)")
    q.add_argument("sql")
    q.add_argument("--config", metavar="F")
    q.add_argument("--format", choices=["tsv", "csv"], default="tsv")
    q.set_defaults(func=cmd_query)

    t = sub.add_parser("topics", help="build, list and show topic maps; automation status")
    tsub = t.add_subparsers(dest="action", required=True, metavar="ACTION")
    tb = tsub.add_parser("build", help="build and save a new version now (all maps without --map)")
    tb.add_argument("--map", metavar="NAME")
    tsub.add_parser("list", help="saved topic map versions")
    ts = tsub.add_parser("show", help="the latest version's topics")
    ts.add_argument("name", metavar="NAME")
    tsub.add_parser("status", help="automation state, reason and since, per map")
    for action in tsub.choices.values():
        action.add_argument("--config", metavar="F")
    t.set_defaults(func=cmd_topics)

    c = sub.add_parser("cluster", help="cluster facet texts (JSONL or the store) into named topics")
    c.add_argument("--input", metavar="F.jsonl", help="JSON lines, one text per line")
    c.add_argument("--text-field", metavar="NAME", help="field holding the facet text")
    c.add_argument("--label-field", metavar="NAME", help="gold label field: report ARI and NMI")
    c.add_argument("--facet", metavar="NAME", help="cluster this facet's stored texts instead")
    c.add_argument("--since", default="24h", help="with --facet: how far back (default 24h)")
    c.add_argument("--limit", type=int, default=50_000, help="with --facet: at most N texts")
    c.add_argument("--config", metavar="F", help="with --facet: the config (store, embedder)")
    c.add_argument("--previous", metavar="PREV.json", help="an earlier --json output: keep its ids")
    c.add_argument("--json", metavar="OUT.json", help="write metrics, clusters and assignments")
    c.add_argument("--embeddings-out", metavar="V.npy", help="save the float32 vectors (input order)")
    c.add_argument(
        "--embeddings-in", metavar="V.npy", help="cluster these vectors (one row per text, input order)"
    )
    c.add_argument("--html", metavar="REPORT.html", help="write a self-contained HTML report")
    c.add_argument("--min-examples", type=int, default=5, help="members needed to show examples (default 5)")
    c.set_defaults(func=cmd_cluster)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"otel-topics: {exc}", file=sys.stderr)
        return 2
    except (OtelTopicsError, OSError, ValueError, ImportError) as exc:
        print(f"otel-topics: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
