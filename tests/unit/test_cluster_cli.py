"""``otel-topics cluster``: the JSON contract on BANKING77 texts (5 intents, 200 lines)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from otel_topics.cli import main
from otel_topics.cluster_cli import Progress, singleton_labels

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
B77 = DATA / "intent" / "banking77" / "test.csv"
CATEGORIES = (
    "card_arrival",
    "exchange_rate",
    "lost_or_stolen_card",
    "top_up_failed",
    "cash_withdrawal_charge",
)


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not B77.is_file():
        pytest.skip(f"BANKING77 test set absent: {B77}")
    with B77.open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in CATEGORIES]
    picked: list[dict[str, str]] = []
    for cat in CATEGORIES:
        picked += [{"text": r["text"], "label": cat} for r in rows if r["category"] == cat][:40]
    path = tmp_path_factory.mktemp("cluster") / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in picked), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def first(jsonl: Path) -> dict[str, object]:
    out = jsonl.with_name("first.json")
    npy = jsonl.with_name("v.npy")
    html = jsonl.with_name("r.html")
    args = ["cluster", "--input", str(jsonl), "--text-field", "text", "--label-field", "label"]
    assert main([*args, "--json", str(out), "--embeddings-out", str(npy), "--html", str(html)]) == 0
    data: dict[str, object] = json.loads(out.read_text())
    return data


def test_json_contract(jsonl: Path, first: dict[str, object]) -> None:
    assert set(first) == {"metrics", "clusters", "assignments"}
    metrics = first["metrics"]
    assert isinstance(metrics, dict)
    assert set(metrics) == {"ari", "nmi", "noise_fraction", "n_clusters", "cluster_seconds", "embed_seconds"}
    assert isinstance(metrics["ari"], float) and isinstance(metrics["nmi"], float)
    assert metrics["ari"] > 0.3
    clusters = first["clusters"]
    assert isinstance(clusters, list) and clusters and metrics["n_clusters"] == len(clusters)
    ids = {c["id"] for c in clusters}
    for c in clusters:
        assert set(c) == {"id", "name", "size", "keywords", "examples", "centroid"}
        assert len(c["centroid"]) == 384
        assert abs(float(np.linalg.norm(c["centroid"])) - 1.0) < 1e-4
        assert len(c["examples"]) <= 5 and (c["size"] < 5 or c["examples"])
        assert c["name"]
    assignments = first["assignments"]
    assert isinstance(assignments, list)
    n_lines = len(jsonl.read_text().splitlines())
    assert len(assignments) == n_lines
    assert all(a["cluster_id"] is None or a["cluster_id"] in ids for a in assignments)
    vectors = np.load(jsonl.with_name("v.npy"))
    assert vectors.shape == (n_lines, 384) and vectors.dtype == np.float32
    page = jsonl.with_name("r.html").read_text()
    assert "<svg" in page and "<script" not in page and clusters[0]["name"][:10] in page


def test_previous_keeps_ids(jsonl: Path, first: dict[str, object]) -> None:
    out = jsonl.with_name("second.json")
    args = ["cluster", "--input", str(jsonl), "--text-field", "text", "--json", str(out)]
    assert main([*args, "--previous", str(jsonl.with_name("first.json"))]) == 0
    second = json.loads(out.read_text())
    assert second["metrics"]["ari"] is None and second["metrics"]["nmi"] is None
    clusters = first["clusters"]
    assert isinstance(clusters, list)
    assert {c["id"] for c in second["clusters"]} == {c["id"] for c in clusters}


def test_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hello"}\nnot json\n', encoding="utf-8")
    assert main(["cluster", "--input", str(bad), "--text-field", "text"]) == 1
    assert f"{bad}:2" in capsys.readouterr().err
    bad.write_text('{"text": "hello"}\n{"other": 1}\n', encoding="utf-8")
    assert main(["cluster", "--input", str(bad), "--text-field", "text"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2" in err and "'text'" in err
    assert main(["cluster", "--input", str(tmp_path / "none.jsonl"), "--text-field", "text"]) == 1
    assert "not found" in capsys.readouterr().err


def test_singletons_and_progress() -> None:
    assert singleton_labels(np.array([0, -1, 1, -1])).tolist() == [0, 2, 1, 3]
    p = Progress("x", 3)  # stderr under pytest is not a terminal: nothing drawn
    p.advance(3)
    p.close()
    assert p.done == 3
