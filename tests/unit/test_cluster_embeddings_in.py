"""``otel-topics cluster --embeddings-in``: given vectors are clustered as they are, never re-embedded,
and a file that does not fit the input is refused with an error naming it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from otel_topics.cli import main
from otel_topics.embed import LocalEmbedder

N = 10  # small enough that cluster() skips UMAP (no numba JIT): the test stays fast
D = 16  # not the embedder's 384: the output shows which vectors were clustered


def _vectors(n: int = N, d: int = D) -> npt.NDArray[np.float64]:
    """Unit float64 rows around axis 0."""
    x = np.random.default_rng(7).normal(0.0, 0.1, (n, d))
    x[:, 0] += 1.0
    out: npt.NDArray[np.float64] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    rows = [{"text": f"request number {i}", "label": "a" if i < N // 2 else "b"} for i in range(N)]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def no_embedding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: LocalEmbedder, texts: list[str]) -> None:
        raise AssertionError("the embedder must not run with --embeddings-in")

    monkeypatch.setattr(LocalEmbedder, "embed_sync", refuse)


def _args(jsonl: Path, npy: Path, *extra: str) -> list[str]:
    return ["cluster", "--input", str(jsonl), "--text-field", "text", "--embeddings-in", str(npy), *extra]


@pytest.mark.usefixtures("no_embedding")
def test_given_vectors_are_clustered(jsonl: Path, tmp_path: Path) -> None:
    npy, out, back = tmp_path / "v.npy", tmp_path / "out.json", tmp_path / "back.npy"
    given = _vectors()
    np.save(npy, given)  # float64 is accepted and used as float32
    args = [*_args(jsonl, npy, "--label-field", "label"), "--json", str(out), "--embeddings-out", str(back)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    metrics = result["metrics"]
    assert metrics["embed_seconds"] == 0.0 and metrics["cluster_seconds"] >= 0.0
    assert metrics["ari"] is not None  # labels are still read and scored
    assert len(result["assignments"]) == N
    # 10 points are too few for two HDBSCAN clusters: one topic, whose centroid is the given rows' mean.
    (only,) = result["clusters"]
    mean = given.mean(axis=0)
    np.testing.assert_allclose(only["centroid"], mean / np.linalg.norm(mean), atol=1e-5)
    saved = np.load(back)
    assert saved.dtype == np.float32 and saved.shape == (N, D)
    np.testing.assert_allclose(saved, given, atol=1e-6)


def _bad_files(tmp_path: Path) -> list[tuple[Path, str]]:
    good = _vectors()
    cases: list[tuple[str, npt.NDArray[np.generic], str]] = [
        ("one_d.npy", good[:, 0], "2-D"),
        ("ints.npy", np.ones((N, 4), dtype=np.int64), "float"),
        ("rows.npy", good[:-1], f"{N - 1} rows but the input has {N} texts"),
        ("nan.npy", np.where(np.arange(N)[:, None] == 3, np.nan, good), "row 3"),
        ("inf.npy", np.where(np.arange(N)[:, None] == 0, np.inf, good), "infinite"),
        ("empty.npy", np.zeros((N, 0)), "0 dimensions"),
    ]
    files = []
    for name, array, expected in cases:
        path = tmp_path / name
        np.save(path, array)
        files.append((path, expected))
    text = tmp_path / "text.npy"
    text.write_text("not an array\n", encoding="utf-8")
    files.append((text, "not a .npy array"))
    archive = tmp_path / "v.npz"
    np.savez(archive, v=good)
    files.append((archive, "not a .npy array"))
    files.append((tmp_path / "missing.npy", "file not found"))
    return files


@pytest.mark.usefixtures("no_embedding")
def test_bad_embeddings_are_refused(jsonl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    for path, expected in _bad_files(tmp_path):
        assert main([*_args(jsonl, path), "--json", str(out)]) == 1, path.name
        err = capsys.readouterr().err
        assert f"--embeddings-in {path}" in err and expected in err, (path.name, err)
        assert not out.exists()
