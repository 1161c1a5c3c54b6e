"""Topic id stability of ``otel-topics cluster --previous`` (a script, not a test).

    python bench/cluster_identity.py [--data PATH/train.csv] [--share 0.7] [--seed 7]

Draws two seeded samples of ``--share`` of the rows of a labelled CSV (columns ``text``,
``category``), clusters the first, then the second with ``--previous first.json``, and scores:
a second-run cluster "did not change" when >= 80% of its shared texts (rows in both samples) sat in
one first-run cluster; the figure is the share of the shared texts of such clusters whose cluster
kept that first-run cluster's id (target >= 90%).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from otel_topics.cli import main as cli_main  # noqa: E402

DEFAULT = REPO.parent / "shared" / "data" / "intent" / "banking77" / "train.csv"


def identity_score(
    first: list[str | None], second: list[str | None], threshold: float = 0.8
) -> tuple[float, int, int, int]:
    """``first``/``second``: cluster id (None = noise) of the shared rows, aligned. Returns
    (share of shared rows of unchanged clusters that keep the id, unchanged clusters, kept, total)."""
    by_second: dict[str, list[str | None]] = {}
    for a, b in zip(first, second, strict=True):
        if b is not None:
            by_second.setdefault(b, []).append(a)
    rows = kept_rows = unchanged = kept = 0
    for cid, olds in by_second.items():
        top, count = Counter(olds).most_common(1)[0]
        if top is None or count < threshold * len(olds):
            continue
        unchanged += 1
        rows += len(olds)
        if cid == top:
            kept += 1
            kept_rows += len(olds)
    return (kept_rows / rows if rows else float("nan")), unchanged, kept, len(by_second)


def _run(rows: list[tuple[str, str]], idx: np.ndarray, out: Path, previous: Path | None) -> list[str | None]:
    jsonl = out.with_suffix(".jsonl")
    jsonl.write_text("".join(json.dumps({"text": rows[i][0], "label": rows[i][1]}) + "\n" for i in idx))
    args = ["cluster", "--input", str(jsonl), "--text-field", "text", "--label-field", "label"]
    args += ["--json", str(out)] + (["--previous", str(previous)] if previous else [])
    if cli_main(args) != 0:
        raise SystemExit(f"cluster failed on {jsonl}")
    return [a["cluster_id"] for a in json.loads(out.read_text())["assignments"]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT)
    p.add_argument("--share", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=Path("/tmp/cluster_identity"))
    a = p.parse_args()
    with a.data.open(encoding="utf-8") as f:
        rows = [(r["text"], r["category"]) for r in csv.DictReader(f)]
    rng = np.random.default_rng(a.seed)
    k = round(a.share * len(rows))
    s1 = np.sort(rng.choice(len(rows), k, replace=False))
    s2 = np.sort(rng.choice(len(rows), k, replace=False))
    a.out.mkdir(parents=True, exist_ok=True)
    first = _run(rows, s1, a.out / "first.json", None)
    second = _run(rows, s2, a.out / "second.json", a.out / "first.json")
    pos1 = {int(r): i for i, r in enumerate(s1)}
    shared = [(pos1[int(r)], j) for j, r in enumerate(s2) if int(r) in pos1]
    score, unchanged, kept, total = identity_score(
        [first[i] for i, _ in shared], [second[j] for _, j in shared]
    )
    print(
        f"shared rows {len(shared)}; second-run clusters {total}, unchanged {unchanged}, "
        f"kept id {kept}; shared texts of unchanged topics keeping their id: {100 * score:.1f}%"
    )


if __name__ == "__main__":
    main()
