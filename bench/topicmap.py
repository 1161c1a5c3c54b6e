"""Topic map build benchmark (not a test): ``otel-topics cluster`` vs BERTopic's default pipeline.

    python bench/topicmap.py                          # corpora "real" and "50k", cold + 3 warm runs each
    python bench/topicmap.py --only 50k --runs 5 --in-process
    python bench/topicmap.py --size 3000 --limit 2000 --runs 1 --only 50k      # smoke run

Corpora (vectors from the local embedder, all-MiniLM-L6-v2 int8, cached by content hash in ``--cache``,
shared with bench/cluster_quality.py):

- ``real``: every text of BANKING77 (train + test) and SNIPS (train + valid + test) from the shared data,
  labels prefixed with the data set's name, plus the user turns of the shared agent trajectories
  (unlabelled): τ-bench airline trajectories and the flattened few-shot transcripts (every ``user``
  message), and the first user message (the task statement) of each SWE-agent demonstration (its later
  "user" messages are tool observations). ``--limit N`` keeps a random N of these rows (smoke runs).
- ``50k``: the same rows, made up to ``--size`` rows with lightly perturbed copies of random real rows,
  as bench/cluster_quality.py pads (``--up-to``): the vector plus gaussian noise of sigma 0.01 per
  dimension, renormalized (cosine ~0.98 to the original); a copy keeps its text and label.

Each corpus is written to a work directory as JSONL (``text``, ``label`` or null, ``source``, ``copy_of``)
with its vectors as ``vecs.npy``. Then, alternating, run by run:

- ours: ``otel-topics cluster --input corpus.jsonl --text-field text --embeddings-in vecs.npy --json
  run.json``, one subprocess a run; figures are ``cluster_seconds`` from the JSON (the ``cluster()``
  call, which includes importing umap-learn / hdbscan / faiss and numba's compilation) and the
  subprocess's wall time (also JSONL reading, keywords, names, ids and writing the JSON).
- reference: BERTopic's default pipeline (``bertopic_default`` of bench/cluster_quality.py: UMAP
  15 neighbours / 5 dims / min_dist 0 / cosine + HDBSCAN min_cluster_size 10, euclidean, eom) on the
  very same vectors, in a fresh subprocess of this script a run; figures are import + fit (like for
  like with ``cluster_seconds``), the fit alone, and the subprocess's wall time.

The first run of each system on each corpus is "cold": ``NUMBA_CACHE_DIR`` points to a fresh empty
directory (one per system and corpus), so numba compiles from scratch; the ``--runs`` warm runs that
follow use the same directory. Medians are over the warm runs. A warm run still pays the import of
umap-learn and the compilation of the numba functions umap-learn does not cache (~10 s on 2 cores);
``--in-process`` adds, after the warm runs, one process per system that clusters twice and reports the
second call (the steady state of a long-lived process, e.g. the sidecar rebuilding a map).

ARI is computed here, not taken from the JSON (whose ``ari`` would cover every row given labels,
copies included): over the LABELLED REAL rows only (intent texts; no trajectory turns, no padded
copies), from the run's assignments, every noise point its own singleton. Noise % and the number of
clusters are over all rows of the corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cluster_quality as cq
from _harness import REPO, json_line, load_note, median, print_table

DATA = REPO.parent / "shared" / "data"
TRAJ = DATA / "agent_trajectories"
TAU_JSON = TRAJ / "tau_bench" / "gpt-4o-airline.json"
PAD_SIGMA = 0.01  # as bench/cluster_quality.py --up-to
TARGET_SECONDS = 10.0
ARI_SLACK = 0.02
CORPORA = ("real", "50k")

Floats = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]


@dataclass
class Corpus:
    name: str
    texts: list[str]
    labels: list[str | None]
    sources: list[str]
    copy_of: list[int | None]
    vectors: Floats

    @property
    def labelled_real(self) -> npt.NDArray[np.intp]:
        """Rows that are real (not padded copies) and carry a label: where ARI is computed."""
        return np.flatnonzero(
            [lab is not None and c is None for lab, c in zip(self.labels, self.copy_of, strict=True)]
        )

    def describe(self) -> str:
        real = sum(c is None for c in self.copy_of)
        labelled = self.labelled_real.size
        return (
            f"{len(self.texts):,} rows: {real:,} real ({labelled:,} labelled, {real - labelled:,} trajectory "
            f"turns), {len(self.texts) - real:,} perturbed copies"
        )


# --- corpus ------------------------------------------------------------------------------------------


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict)).strip()
    return ""


def trajectory_user_turns(root: Path) -> list[tuple[str, str]]:
    """(text, source) of the user turns of the shared agent trajectories."""
    turns: list[tuple[str, str]] = []
    if TAU_JSON.is_file():
        for traj in json.loads(TAU_JSON.read_text(encoding="utf-8")):
            turns += [(_text(m["content"]), "tau_airline") for m in traj["traj"] if m.get("role") == "user"]
    for path in sorted((root / "tau_bench").glob("*few_shot.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            parts = re.split(r"(?:^|\n)(user|assistant|tool|system): ", json.loads(line)["messages_display"])
            roles, bodies = parts[1::2], parts[2::2]
            turns += [
                (b.strip(), f"tau_{path.stem}") for r, b in zip(roles, bodies, strict=False) if r == "user"
            ]
    for path in sorted((root / "swe_agent").glob("*.traj")):
        history = json.loads(path.read_text(encoding="utf-8")).get("history", [])
        first = next((m for m in history if m.get("role") == "user"), None)
        if first is not None:
            turns.append((_text(first.get("content")), "swe_agent"))
    return [(t, s) for t, s in turns if t]


def real_corpus(cache: Path, limit: int, seed: int) -> Corpus:
    """Every intent text (labelled) and every trajectory user turn (unlabelled), with cached vectors."""
    texts: list[str] = []
    labels: list[str | None] = []
    sources: list[str] = []
    parts: list[Floats] = []
    for src in cq.PRESETS["merged"]:
        if not src.exists():
            raise SystemExit(f"{src} does not exist (the shared data must be beside the repository)")
        t, lab = cq.read_source(src, "text", "label")
        slug = cq._SLUGS[src]
        prefix = "banking77" if slug.startswith("b77") else "snips"
        parts.append(cq.embed_cached(slug, t, cache))
        texts += t
        labels += [f"{prefix}:{x}" for x in lab]
        sources += [slug] * len(t)
    turns = trajectory_user_turns(TRAJ)
    if turns:
        parts.append(cq.embed_cached("traj_user", [t for t, _ in turns], cache))
        texts += [t for t, _ in turns]
        labels += [None] * len(turns)
        sources += [s for _, s in turns]
    vectors = np.vstack(parts).astype(np.float32)
    if limit and limit < len(texts):
        keep = np.sort(np.random.default_rng(seed).choice(len(texts), limit, replace=False))
        vectors = vectors[keep]
        texts = [texts[i] for i in keep]
        labels = [labels[i] for i in keep]
        sources = [sources[i] for i in keep]
    return Corpus("real", texts, labels, sources, [None] * len(texts), vectors)


def padded(real: Corpus, size: int, seed: int) -> Corpus:
    """``real`` made up to ``size`` rows with perturbed copies (cluster_quality.py's --up-to recipe)."""
    n = len(real.texts)
    if size < n:
        raise SystemExit(f"--size {size} is below the {n:,} real rows: raise --size or use --limit")
    rng = np.random.default_rng(seed)
    extra = rng.choice(n, size - n, replace=True)
    copies = real.vectors[extra] + rng.normal(0.0, PAD_SIGMA, (extra.size, real.vectors.shape[1]))
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    return Corpus(
        f"{size // 1000}k" if size % 1000 == 0 else str(size),
        real.texts + [real.texts[i] for i in extra],
        real.labels + [real.labels[i] for i in extra],
        real.sources + [real.sources[i] for i in extra],
        [*real.copy_of, *(int(i) for i in extra)],
        np.vstack([real.vectors, copies]).astype(np.float32),
    )


def write_corpus(corpus: Corpus, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    jsonl, vecs = folder / "corpus.jsonl", folder / "vecs.npy"
    with jsonl.open("w", encoding="utf-8") as f:
        for text, label, source, copy in zip(
            corpus.texts, corpus.labels, corpus.sources, corpus.copy_of, strict=True
        ):
            f.write(json.dumps({"text": text, "label": label, "source": source, "copy_of": copy}) + "\n")
    np.save(vecs, corpus.vectors)
    return jsonl, vecs


# --- runs --------------------------------------------------------------------------------------------


def otel_topics_command() -> list[str]:
    """The ``otel-topics`` console script beside this interpreter (no pyenv shim), else ``-m``."""
    script = Path(sys.executable).with_name("otel-topics")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "otel_topics"]


def _run(cmd: Sequence[str], numba_cache: Path, timeout: float) -> float:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(numba_cache)}
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-15:])
        raise SystemExit(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
    return wall


def labels_from_assignments(assignments: list[dict[str, str | None]]) -> Labels:
    ids: dict[str, int] = {}
    out = np.full(len(assignments), -1, dtype=np.int64)
    for i, a in enumerate(assignments):
        cid = a["cluster_id"]
        if cid is not None:
            out[i] = ids.setdefault(cid, len(ids))
    return out


def _quality(corpus: Corpus, labels: Labels) -> dict[str, float]:
    rows = corpus.labelled_real
    ari, nmi, _, _ = cq.scores([str(corpus.labels[i]) for i in rows], labels[rows])
    return {
        "ari": ari,
        "nmi": nmi,
        "noise": float(np.mean(labels < 0)),
        "clusters": float(len(set(labels[labels >= 0].tolist()))),
    }


def run_ours(
    corpus: Corpus, jsonl: Path, vecs: Path, out: Path, numba: Path, timeout: float
) -> dict[str, float]:
    cmd = [*otel_topics_command(), "cluster", "--input", str(jsonl), "--text-field", "text"]
    wall = _run([*cmd, "--embeddings-in", str(vecs), "--json", str(out)], numba, timeout)
    result = json.loads(out.read_text(encoding="utf-8"))
    metrics = result["metrics"]
    labels = labels_from_assignments(result["assignments"])
    if labels.size != len(corpus.texts):
        raise SystemExit(f"{out}: {labels.size} assignments for {len(corpus.texts)} rows")
    if metrics["embed_seconds"]:
        raise SystemExit(f"{out}: embed_seconds {metrics['embed_seconds']}: --embeddings-in was not used")
    return {"seconds": float(metrics["cluster_seconds"]), "wall": wall, **_quality(corpus, labels)}


def _child(
    system: str, vecs: Path, out: Path, numba: Path, args: argparse.Namespace, calls: int = 1
) -> tuple[dict[str, Any], float]:
    """Run :func:`child` in a fresh process of this script; its JSON result and the wall time."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", system, str(vecs), str(out)]
    cmd += ["--seed", str(args.seed), "--calls", str(calls)] + (
        ["--ref-unseeded"] if args.ref_unseeded else []
    )
    wall = _run(cmd, numba, args.timeout)
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result, wall


def run_reference(
    corpus: Corpus, vecs: Path, out: Path, numba: Path, args: argparse.Namespace
) -> dict[str, float]:
    result, wall = _child("reference", vecs, out, numba, args)
    labels = np.asarray(result["labels"], dtype=np.int64)
    fit = float(result["call_seconds"][0])
    return {"seconds": result["import_seconds"] + fit, "fit": fit, "wall": wall, **_quality(corpus, labels)}


def child(system: str, vecs: Path, out: Path, seed: int, unseeded: bool, calls: int) -> None:
    """In a fresh process: import the libraries, cluster ``calls`` times, write timings and labels.

    ``reference``: BERTopic's default pipeline; ``ours``: :func:`otel_topics.clustering.cluster` with
    the defaults ``otel-topics cluster`` uses (its time includes the lazy imports it does itself)."""
    x = np.load(vecs)
    started = time.perf_counter()
    if system == "reference":
        import hdbscan  # type: ignore[import-untyped]  # noqa: F401  (timed apart from the fit)
        import umap  # type: ignore[import-untyped]  # noqa: F401

        def fit() -> Labels:
            return _bertopic_unseeded(x) if unseeded else cq.bertopic_default(x, seed)
    else:
        from otel_topics.clustering import cluster

        def fit() -> Labels:
            return cluster(x).labels

    imported = time.perf_counter()
    seconds: list[float] = []
    labels = np.zeros(0, dtype=np.int64)
    for _ in range(calls):
        t0 = time.perf_counter()
        labels = fit()
        seconds.append(time.perf_counter() - t0)
    payload = {"import_seconds": imported - started, "call_seconds": seconds, "labels": labels.tolist()}
    out.write_text(json.dumps(payload) + "\n", encoding="utf-8")


def _bertopic_unseeded(x: Floats) -> Labels:
    """The same pipeline as ``cq.bertopic_default`` with UMAP unseeded and ``low_memory=False``, as
    BERTopic itself builds it: numba parallel over all cores, results vary from run to run."""
    import warnings

    import hdbscan
    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reduced = umap.UMAP(
            n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", low_memory=False
        ).fit_transform(x)
        model = hdbscan.HDBSCAN(min_cluster_size=10, metric="euclidean", cluster_selection_method="eom")
        return np.asarray(model.fit(reduced).labels_, dtype=np.int64)


# --- reporting ---------------------------------------------------------------------------------------


def _line(corpus: str, system: str, kind: str, r: dict[str, float]) -> None:
    fit = f" (fit {r['fit']:6.2f}s)" if "fit" in r else ""
    print(
        f"{corpus:>5s} {system:9s} {kind:7s} {r['seconds']:7.2f}s{fit}  wall {r['wall']:6.2f}s  "
        f"ARI {r['ari']:.3f}  NMI {r['nmi']:.3f}  noise {r['noise']:6.1%}  clusters {r['clusters']:.0f}",
        flush=True,
    )


def _summary(cold: dict[str, float], warm: list[dict[str, float]]) -> dict[str, Any]:
    s: dict[str, Any] = {
        "cold_seconds": round(cold["seconds"], 3),
        "cold_wall": round(cold["wall"], 3),
        "seconds_median": round(median([w["seconds"] for w in warm]), 3),
        "seconds_min": round(min(w["seconds"] for w in warm), 3),
        "seconds_max": round(max(w["seconds"] for w in warm), 3),
        "wall_median": round(median([w["wall"] for w in warm]), 3),
        "ari": round(median([w["ari"] for w in warm]), 4),
        "nmi": round(median([w["nmi"] for w in warm]), 4),
        "noise": round(median([w["noise"] for w in warm]), 4),
        "clusters": round(median([w["clusters"] for w in warm])),
    }
    if "fit" in cold:
        s["cold_fit"] = round(cold["fit"], 3)
        s["fit_median"] = round(median([w["fit"] for w in warm]), 3)
    return s


def bench_corpus(corpus: Corpus, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    folder = work / corpus.name
    jsonl, vecs = write_corpus(corpus, folder)
    print(f"\n{corpus.name}: {corpus.describe()}; {len(set(filter(None, corpus.labels)))} labels", flush=True)
    numba_ours, numba_ref = folder / "numba-ours", folder / "numba-reference"
    ours: list[dict[str, float]] = []
    ref: list[dict[str, float]] = []
    for run in range(args.runs + 1):
        kind = "cold" if run == 0 else f"warm {run}"
        if run == 0:
            for d in (numba_ours, numba_ref):
                shutil.rmtree(d, ignore_errors=True)
                d.mkdir()
        ours.append(run_ours(corpus, jsonl, vecs, folder / f"ours-{run}.json", numba_ours, args.timeout))
        _line(corpus.name, "ours", kind, ours[-1])
        ref.append(run_reference(corpus, vecs, folder / f"ref-{run}.json", numba_ref, args))
        _line(corpus.name, "reference", kind, ref[-1])
    steady: dict[str, Any] = {}
    if args.in_process:
        for system, numba in (("ours", numba_ours), ("reference", numba_ref)):
            result, _ = _child(system, vecs, folder / f"steady-{system}.json", numba, args, calls=2)
            first, second = result["call_seconds"]
            steady[system] = {"first_call": round(first, 3), "second_call": round(second, 3)}
            imports = result["import_seconds"]
            note = "imports inside the first call" if system == "ours" else f"import {imports:.2f}s before"
            print(
                f"{corpus.name:>5s} {system:9s} in one process: first call {first:.2f}s, "
                f"second call {second:.2f}s ({note})",
                flush=True,
            )
    o, r = _summary(ours[0], ours[1:]), _summary(ref[0], ref[1:])
    return {
        "rows": len(corpus.texts),
        "real_rows": sum(c is None for c in corpus.copy_of),
        "labelled_rows": int(corpus.labelled_real.size),
        "ours": o,
        "reference": r,
        "ratio_seconds": round(r["seconds_median"] / o["seconds_median"], 3),
        "ratio_fit_only": round(r["fit_median"] / o["seconds_median"], 3),
        "ratio_wall": round(r["wall_median"] / o["wall_median"], 3),
        "ari_delta": round(o["ari"] - r["ari"], 4),
        "meets_seconds": o["seconds_median"] <= TARGET_SECONDS,
        "meets_ari": o["ari"] >= r["ari"] - ARI_SLACK,
        **({"in_process": steady} if steady else {}),
    }


def report(results: dict[str, dict[str, Any]]) -> None:
    rows = []
    for name, res in results.items():
        for system in ("ours", "reference"):
            s = res[system]
            rows.append(
                [
                    name,
                    f"{res['rows']:,}",
                    "otel-topics cluster_seconds" if system == "ours" else "BERTopic default import+fit",
                    f"{s['cold_seconds']:.2f}",
                    f"{s['seconds_median']:.2f} ({s['seconds_min']:.2f}, {s['seconds_max']:.2f})",
                    f"{s['fit_median']:.2f}" if "fit_median" in s else "-",
                    f"{s['cold_wall']:.1f}",
                    f"{s['wall_median']:.1f}",
                    f"{s['ari']:.3f}",
                    f"{s['noise']:.1%}",
                    f"{s['clusters']}",
                ]
            )
    print()
    print_table(
        [
            "corpus",
            "rows",
            "system",
            "cold s",
            "warm median s (min, max)",
            "fit only",
            "wall cold",
            "wall median",
            "ARI labelled",
            "noise",
            "clusters",
        ],
        rows,
    )
    print()
    for name, res in results.items():
        verdict_s = "yes" if res["meets_seconds"] else "NO"
        verdict_a = "yes" if res["meets_ari"] else "NO"
        print(
            f"{name}: reference/ours {res['ratio_seconds']:.2f}x (import+fit vs cluster_seconds), "
            f"{res['ratio_fit_only']:.2f}x (fit only), {res['ratio_wall']:.2f}x (wall); "
            f"ARI ours - reference {res['ari_delta']:+.3f} over {res['labelled_rows']:,} labelled real rows; "
            f"cluster_seconds <= {TARGET_SECONDS:.0f} s: {verdict_s}; "
            f"ARI >= reference - {ARI_SLACK}: {verdict_a}"
        )
        if "in_process" in res:
            o, r = res["in_process"]["ours"], res["in_process"]["reference"]
            print(
                f"{name}: second call in one process: ours {o['second_call']:.2f}s, reference "
                f"{r['second_call']:.2f}s, reference/ours {r['second_call'] / o['second_call']:.2f}x"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=50_000, help="rows of the padded corpus (default 50000)")
    parser.add_argument("--runs", type=int, default=3, help="warm runs per system and corpus (default 3)")
    parser.add_argument("--only", choices=CORPORA, action="append", help="real or 50k (repeatable)")
    parser.add_argument("--seed", type=int, default=42, help="--limit sample, padding, reference UMAP seed")
    parser.add_argument("--limit", type=int, default=0, help="keep a random N of the real rows (smoke runs)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (corpora, JSON, caches)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/otel_vecs"), help="vector cache directory")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the work directory (default temp)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="longest wait (s) for one run")
    parser.add_argument(
        "--ref-unseeded", action="store_true", help="reference UMAP unseeded, low_memory=False (parallel)"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="also time a second clustering call in one process (after the warm runs)",
    )
    parser.add_argument("--child", nargs=3, metavar=("SYSTEM", "VECS", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        system, vecs, out = args.child
        child(system, Path(vecs), Path(out), args.seed, args.ref_unseeded, args.calls)
        return 0
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    corpora = args.only or list(CORPORA)

    print(
        f"topic map build: {', '.join(corpora)}; 1 cold + {args.runs} warm runs per system; "
        f"reference UMAP {'unseeded' if args.ref_unseeded else f'seed {args.seed}'}; {load_note()}",
        flush=True,
    )
    started = time.perf_counter()
    real = real_corpus(args.cache, args.limit, args.seed)
    print(
        f"corpus assembled in {time.perf_counter() - started:.1f}s ({len(real.texts):,} real rows)",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="otel-topics-topicmap-", dir=args.dir))
    results: dict[str, dict[str, Any]] = {}
    try:
        for name in corpora:
            corpus = real if name == "real" else padded(real, args.size, args.seed)
            results[corpus.name if name == "50k" else name] = bench_corpus(corpus, work, args)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(results)
    summary = {
        "runs": args.runs,
        "size": args.size,
        "limit": args.limit,
        "seed": args.seed,
        "corpora": results,
    }
    print(json_line(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
