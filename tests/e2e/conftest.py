"""End-to-end fixtures: Arize Phoenix (in its own virtualenv: it needs openai>=3 while some
instrumentations need openai<3) and rotel, each a real process on its own loopback ports."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from otel_topics.testing import free_port, wait_for_port


def phoenix_python() -> Path:
    """The Phoenix virtualenv's python, made by tests/e2e/setup_phoenix.py (the README's test command
    runs it before pytest; the tests themselves download nothing)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import setup_phoenix

    if not setup_phoenix.installed():
        pytest.fail(
            f"Arize Phoenix is not installed in {setup_phoenix.VENV}: "
            "run `python3 tests/e2e/setup_phoenix.py` (the README's test command does)"
        )
    return setup_phoenix.PYTHON


@dataclass
class Phoenix:
    http_port: int
    grpc_port: int
    proc: subprocess.Popen[bytes]

    def spans(self, project: str = "default", **params: str | list[str]) -> list[dict[str, object]]:
        """Every span of a project, through Phoenix's REST API (cursor pagination)."""
        out: list[dict[str, object]] = []
        cursor: str | None = None
        while True:
            q: dict[str, str | list[str] | int] = {"limit": 1000, **params}
            if cursor:
                q["cursor"] = cursor
            r = httpx.get(
                f"http://127.0.0.1:{self.http_port}/v1/projects/{project}/spans/otlpv1", params=q, timeout=30
            )
            if r.status_code == 404:
                return out
            r.raise_for_status()
            body = r.json()
            out.extend(body.get("data", []))
            cursor = body.get("next_cursor")
            if not cursor:
                return out


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    py = phoenix_python()
    work = tmp_path_factory.mktemp("phoenix")
    http_port, grpc_port = free_port(), free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(work),
        "PHOENIX_PORT": str(http_port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
    }
    log = (work / "phoenix.log").open("wb")
    proc = subprocess.Popen([str(py), "-m", "phoenix.server.main", "serve"], env=env, stdout=log, stderr=log)
    try:
        wait_for_port(http_port, timeout=180)
        wait_for_port(grpc_port, timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield Phoenix(http_port, grpc_port, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def rotel_agent() -> Path:
    import rotel

    return Path(rotel.__file__).parent / "rotel-agent"


@dataclass
class Rotel:
    grpc_port: int
    http_port: int
    proc: subprocess.Popen[bytes]


@pytest.fixture
def make_rotel(tmp_path: Path) -> Iterator[type]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(exporter_endpoint: str) -> Rotel:
        g, h = free_port(), free_port()
        log = (tmp_path / f"rotel-{g}.log").open("wb")
        proc = subprocess.Popen(
            [
                str(rotel_agent()),
                "start",
                "--otlp-grpc-endpoint",
                f"127.0.0.1:{g}",
                "--otlp-http-endpoint",
                f"127.0.0.1:{h}",
                "--exporter",
                "otlp",
                "--otlp-exporter-endpoint",
                exporter_endpoint,
                "--otlp-exporter-protocol",
                "grpc",
            ],
            stdout=log,
            stderr=log,
        )
        procs.append(proc)
        wait_for_port(g, timeout=30)
        return Rotel(g, h, proc)

    yield start  # type: ignore[misc]
    for p in procs:
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
