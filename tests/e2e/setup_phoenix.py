"""Install Arize Phoenix into its own virtualenv for the end-to-end tests (part of the README's test
command). Phoenix needs openai>=3 while some instrumentations need openai<3, so it never shares the
project's environment. Idempotent: an existing install of the pinned version is kept."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PHOENIX_VERSION = "20.26.1"
CACHE = Path(os.environ.get("OTEL_TOPICS_TEST_CACHE", Path.home() / ".cache" / "otel-topics-test"))
VENV = CACHE / f"phoenix-{PHOENIX_VERSION}"
PYTHON = VENV / "bin" / "python"
MARKER = VENV / ".installed"


def installed() -> bool:
    return MARKER.exists() and PYTHON.exists()


def install() -> Path:
    if installed():
        return PYTHON
    shutil.rmtree(VENV, ignore_errors=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "-q", f"arize-phoenix=={PHOENIX_VERSION}"],
        check=True,
        timeout=1800,
    )
    MARKER.write_text(PHOENIX_VERSION)
    return PYTHON


if __name__ == "__main__":
    print(f"Phoenix {PHOENIX_VERSION}: {install()}")
