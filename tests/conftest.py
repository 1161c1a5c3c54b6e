"""Shared test fixtures: where the shared real data lives, and starting ``otel-topics serve``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_topics.testing import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


class Sidecar:
    """``otel-topics serve`` as a real subprocess on free loopback ports."""

    def __init__(
        self, tmp: Path, exporters_yaml: str, topics_yaml: str = "{}", pipelines_yaml: str | None = None
    ):
        self.tmp = tmp
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.metrics_port = free_port()
        self.config = tmp / "sidecar.yaml"
        pipelines = pipelines_yaml or (
            "    traces: {receivers: [otlp], processors: [topics], exporters: [out]}\n"
            "    logs: {receivers: [otlp], processors: [topics], exporters: [out]}\n"
            "    metrics: {receivers: [otlp], exporters: [out]}\n"
        )
        self.config.write_text(
            "receivers:\n  otlp:\n    protocols:\n"
            f"      grpc: {{endpoint: '127.0.0.1:{self.grpc_port}'}}\n"
            f"      http: {{endpoint: '127.0.0.1:{self.http_port}'}}\n"
            f"processors:\n  topics: {topics_yaml}\n"
            f"exporters:\n{exporters_yaml}\n"
            f"service:\n  data_dir: '{tmp / 'data'}'\n  pipelines:\n{pipelines}"
            f"  telemetry:\n    metrics: {{address: '127.0.0.1:{self.metrics_port}'}}\n"
        )
        self.log = tmp / "sidecar.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> Sidecar:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otel_topics", "serve", "--config", str(self.config)],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            wait_for_port(self.grpc_port, timeout=timeout)
            wait_for_port(self.metrics_port, timeout=timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"sidecar did not start:\n{self.log.read_text()[-4000:]}") from None
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def metrics_text(self) -> str:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text

    def wait_exit(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.proc is not None and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)


@pytest.fixture
def make_sidecar(tmp_path: Path) -> Iterator[type[Sidecar]]:
    started: list[Sidecar] = []

    class _Sidecar(Sidecar):
        def start(self, timeout: float = 90.0) -> Sidecar:
            started.append(self)
            return super().start(timeout)

    yield _Sidecar
    for s in started:
        s.stop()
