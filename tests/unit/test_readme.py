"""README.md documents every config key, metric, subcommand and status value, and its Quick start
test command is the one CI runs."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from otel_topics import metrics
from otel_topics.cli import build_parser
from otel_topics.config import iter_config_keys
from otel_topics.model import Status

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
CI_RUN = REPO / ".ci" / "run"


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The body of one ``## heading`` section (up to the next level-2 heading)."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"README.md has no '## {heading}' section"
    return match.group(1)


def code_blocks(text: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)]


def exposed_metric_names() -> list[str]:
    """Names as Prometheus scrapes them: counters get ``_total`` from prometheus_client."""
    names = []
    for metric in metrics.REGISTRY.collect():
        names.append(metric.name + "_total" if metric.type == "counter" else metric.name)
    return names


def subcommands() -> list[str]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    raise AssertionError("otel-topics has no subcommands")


def test_every_config_key_is_documented(readme: str) -> None:
    keys = list(iter_config_keys())
    assert len(keys) > 50
    missing = [key for key in keys if f"`{key}`" not in readme]
    assert not missing, f"config keys missing from README.md: {missing}"


def test_every_metric_is_documented_with_its_exposed_name(readme: str) -> None:
    names = exposed_metric_names()
    assert "otel_topics_received_items_total" in names
    assert "otel_topics_spool_bytes" in names
    missing = [name for name in names if f"`{name}`" not in readme]
    assert not missing, f"metrics missing from README.md: {missing}"


def test_every_subcommand_is_documented(readme: str) -> None:
    commands = subcommands()
    assert {"serve", "validate", "replay", "query"} <= set(commands)
    missing = [c for c in commands if not re.search(rf"`otel-topics {re.escape(c)}[` ]", readme)]
    assert not missing, f"subcommands missing from README.md: {missing}"


def test_every_status_value_is_documented(readme: str) -> None:
    values = [v for k, v in vars(Status).items() if k.isupper()]
    assert "ok" in values
    missing = [v for v in values if f"`{v}`" not in readme]
    assert not missing, f"otel_topics.status values missing from README.md: {missing}"


def test_quick_start_test_command_is_the_ci_command(readme: str) -> None:
    blocks = code_blocks(section(readme, "Quick start"))
    assert blocks == [
        "python3 -m pip install . && otel-topics serve",
        "python3 -m pip install -e '.[test]' && python3 tests/e2e/setup_phoenix.py && python3 -m pytest",
    ]
    lines = [ln.strip() for ln in CI_RUN.read_text(encoding="utf-8").splitlines()]
    last = [ln for ln in lines if ln and not ln.startswith("#")][-1]
    assert blocks[1] == last, f"README Quick start test command {blocks[1]!r} != .ci/run {last!r}"


def test_performance_section_points_at_bench(readme: str) -> None:
    body = section(readme, "Performance")
    assert "| date | machine | command | figure |" in body
