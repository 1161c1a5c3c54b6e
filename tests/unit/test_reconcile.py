"""Topic identity across versions: unchanged, split, merge, new, disappeared, disabled, BANKING77."""

from __future__ import annotations

import csv
import itertools
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pytest

from otel_topics.embed import HashEmbedder
from otel_topics.model import Cluster
from otel_topics.reconcile import (
    Assignment,
    Candidate,
    Previous,
    load_previous_json,
    new_cluster_id,
    reconcile,
    with_nearest_members,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BANKING = DATA / "intent" / "banking77" / "train.csv"
DIM = 32
Vec = npt.NDArray[np.float64]


def unit(v: Vec) -> Vec:
    return np.asarray(v / np.linalg.norm(v), dtype=np.float64)


def directions(n: int, seed: int = 0) -> list[Vec]:
    rng = np.random.default_rng(seed)
    return [unit(rng.normal(size=DIM)) for _ in range(n)]


def moved(v: Vec, amount: float = 0.15, seed: int = 1) -> Vec:
    """``v`` nudged in a random direction (cosine stays about 1 - amount**2 / 2)."""
    return unit(v + amount * unit(np.random.default_rng(seed).normal(size=DIM)))


def keys(prefix: str, n: int, start: int = 0) -> frozenset[str]:
    return frozenset(f"{prefix}{k}" for k in range(start, start + n))


def counter_ids() -> Callable[[], str]:
    count = itertools.count(1)
    return lambda: f"new{next(count)}"


def prev(
    cid: str, centroid: Vec, members: frozenset[str] | None, exemplars: list[str] | None = None
) -> Previous:
    size = len(members) if members is not None else 100
    return Previous(cid, centroid, size, members=members, exemplars=exemplars or [])


def cand(centroid: Vec, members: frozenset[str] | None = None) -> Candidate:
    return Candidate(centroid, len(members) if members is not None else 100, members=members)


# ---------------------------------------------------------------------------------- basics


def test_new_cluster_id_is_short_and_unique() -> None:
    ids = {new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r"t_[a-z2-7]{10}", i) for i in ids)


def test_unchanged_with_members_shuffled_and_moved() -> None:
    dirs = directions(5)
    old = [prev(f"old{k}", dirs[k], keys(f"c{k}-", 100)) for k in range(5)]
    # the new run sees an overlapping sample: 30 of each old cluster's members are gone, 20 new ones came
    order = [3, 0, 4, 1, 2]
    new = [cand(moved(dirs[k], seed=k), keys(f"c{k}-", 70, start=30) | keys(f"n{k}-", 20)) for k in order]
    out = reconcile(old, new, new_id=counter_ids())
    assert [a.id for a in out] == [f"old{k}" for k in order]
    assert all(a.kind == "unchanged" and a.parents == [a.id] for a in out)


def test_unchanged_on_centroids_alone() -> None:
    dirs = directions(6)
    old = [prev(f"old{k}", dirs[k], None) for k in range(6)]
    order = [5, 2, 0, 1, 4, 3]
    out = reconcile(old, [cand(moved(dirs[k], seed=10 + k)) for k in order])
    assert [a.id for a in out] == [f"old{k}" for k in order]
    assert {a.kind for a in out} == {"unchanged"}


def test_unchanged_from_previous_json_exemplars(tmp_path: Path) -> None:
    dirs = directions(4)
    path = tmp_path / "prev.json"
    clusters = [
        {
            "id": f"t_{k}",
            "name": f"topic {k}",
            "size": 100,
            "keywords": ["a", "b"],
            "examples": [f"c{k}-{e}" for e in range(5)],
            "centroid": dirs[k].tolist(),
        }
        for k in range(4)
    ]
    path.write_text(json.dumps({"clusters": clusters}))
    old = load_previous_json(path)
    assert [p.id for p in old] == ["t_0", "t_1", "t_2", "t_3"]
    assert old[0].members is None and old[0].exemplars[0] == "c0-0" and old[0].size == 100
    new = [cand(moved(dirs[k], seed=k), keys(f"c{k}-", 80, start=2)) for k in (2, 3, 0, 1)]
    out = reconcile(old, new)
    assert [a.id for a in out] == ["t_2", "t_3", "t_0", "t_1"]


def test_members_beat_a_misleading_centroid() -> None:
    """Two old topics with close centroids: the members decide which is which."""
    a, b = directions(2, seed=3)
    b = unit(a + 0.25 * b)  # cos(a, b) ~ 0.97
    old = [prev("A", a, keys("a", 50)), prev("B", b, keys("b", 50))]
    # the new cluster holding A's members has a centroid nearer to B's, and vice versa
    new = [cand(b, keys("a", 50)), cand(a, keys("b", 50))]
    assert [x.id for x in reconcile(old, new)] == ["A", "B"]


# ---------------------------------------------------------------------------------- splits, merges


def test_split_largest_piece_made_of_the_old_topic_keeps_its_id() -> None:
    a, b = directions(2, seed=4)
    old = [prev("A", a, keys("a", 100)), prev("B", b, keys("b", 100))]
    new = [
        cand(moved(a, 0.3, seed=1), keys("a", 40, start=60)),  # 40% of A
        cand(moved(b, seed=2), keys("b", 100)),
        cand(moved(a, 0.3, seed=3), keys("a", 60)),  # 60% of A: the heir
    ]
    out = reconcile(old, new, new_id=counter_ids())
    assert out[0] == Assignment("new1", ["A"], "split")
    assert out[1] == Assignment("B", ["B"], "unchanged")
    assert out[2] == Assignment("A", ["A"], "unchanged")


def test_split_without_heirs_gives_new_ids_with_lineage() -> None:
    (a,) = directions(1, seed=5)
    old = [prev("A", a, keys("a", 100))]
    new = [cand(moved(a, 0.3, seed=1), keys("a", 50)), cand(moved(a, 0.3, seed=2), keys("a", 50, start=50))]
    out = reconcile(old, new, heirs=False, new_id=counter_ids())
    assert out == [Assignment("new1", ["A"], "split"), Assignment("new2", ["A"], "split")]


def test_split_of_a_topic_known_by_centroid_and_exemplars() -> None:
    (a,) = directions(1, seed=6)
    old = [Previous("A", a, 100, exemplars=[f"a{k}" for k in range(10)])]
    new = [cand(moved(a, 0.3, seed=1), keys("a", 5)), cand(moved(a, 0.3, seed=2), keys("a", 95, start=5))]
    out = reconcile(old, new, heirs=False, new_id=counter_ids())
    assert [(x.parents, x.kind) for x in out] == [(["A"], "split"), (["A"], "split")]


def test_merge_gets_a_new_id_and_both_parents() -> None:
    a, b, c = directions(3, seed=7)
    old = [prev("A", a, keys("a", 50)), prev("B", b, keys("b", 60)), prev("C", c, keys("c", 50))]
    merged = unit(a + b)
    new = [cand(moved(c, seed=1), keys("c", 50)), cand(merged, keys("a", 50) | keys("b", 60))]
    out = reconcile(old, new, min_similarity=0.6, new_id=counter_ids())
    assert out[0] == Assignment("C", ["C"], "unchanged")
    assert out[1] == Assignment("new1", ["B", "A"], "merge")  # largest contribution first


def test_topic_absorbing_a_small_one_keeps_its_id() -> None:
    a, b = directions(2, seed=8)
    old = [prev("A", a, keys("a", 90)), prev("B", b, keys("b", 10))]
    new = [cand(moved(a, seed=1), keys("a", 90) | keys("b", 10))]
    assert reconcile(old, new) == [Assignment("A", ["A", "B"], "unchanged")]
    assert reconcile(old, new, heirs=False, new_id=counter_ids()) == [Assignment("new1", ["A", "B"], "merge")]


# ---------------------------------------------------------------------------------- new, gone, off


def test_new_topic_and_disappeared_topic() -> None:
    a, b, c, d = directions(4, seed=9)
    old = [prev("A", a, keys("a", 50)), prev("B", b, keys("b", 50)), prev("C", c, keys("c", 50))]
    near_b = unit(b + 0.2 * d)
    new = [
        cand(moved(a, seed=1), keys("a", 50)),
        cand(d, keys("fresh", 40)),  # unrelated texts, far from everything: no parents
        cand(near_b, keys("b", 50)),
        # C disappeared; its id is not reused
    ]
    out = reconcile(old, new, new_id=counter_ids())
    assert out == [
        Assignment("A", ["A"], "unchanged"),
        Assignment("new1", [], "new"),
        Assignment("B", ["B"], "unchanged"),
    ]


def test_new_topic_near_an_old_one_without_evidence_names_it_as_parent() -> None:
    a, b = directions(2, seed=10)
    old = [prev("A", a, None)]
    new = [cand(moved(a, seed=1)), cand(unit(a + 0.5 * b)), cand(b)]
    out = reconcile(old, new, new_id=counter_ids())
    assert out[0] == Assignment("A", ["A"], "unchanged")
    assert out[1] == Assignment("new1", ["A"], "new")  # cos ~0.89 to A, but A is taken
    assert out[2] == Assignment("new2", [], "new")


def test_disabled_gives_fresh_ids_and_no_lineage() -> None:
    dirs = directions(3)
    old = [prev(f"old{k}", dirs[k], keys(f"c{k}", 30)) for k in range(3)]
    out = reconcile(old, [cand(dirs[k], keys(f"c{k}", 30)) for k in range(3)], enabled=False)
    assert all(a.kind == "new" and a.parents == [] for a in out)
    assert not {a.id for a in out} & {"old0", "old1", "old2"}
    assert len({a.id for a in out}) == 3


def test_no_previous_version() -> None:
    out = reconcile([], [cand(directions(1)[0])], new_id=counter_ids())
    assert out == [Assignment("new1", [], "new")]
    assert reconcile([prev("A", directions(1)[0], None)], []) == []


def test_deterministic_and_fresh_ids_never_collide_with_old_ones() -> None:
    dirs = directions(8, seed=11)
    old = [prev(f"o{k}", dirs[k], keys(f"c{k}", 40)) for k in range(4)]
    new = [cand(dirs[k], keys(f"c{k}", 40)) for k in (1, 0)] + [cand(dirs[k]) for k in range(4, 8)]
    first = reconcile(old, new, new_id=counter_ids())
    assert first == reconcile(old, new, new_id=counter_ids())
    clashing = iter(["o2", "o3", "x1", "x2", "x3", "x4", "x5"])
    out = reconcile(old, new, new_id=lambda: next(clashing))
    assert [a.id for a in out] == ["o1", "o0", "x1", "x2", "x3", "x4"]


def test_key_spaces_that_never_meet_fall_back_to_centroids() -> None:
    dirs = directions(3, seed=12)
    old = [prev(f"o{k}", dirs[k], frozenset({f"{k:032x}"})) for k in range(3)]  # trace ids
    new = [cand(moved(dirs[k], seed=k), keys(f"text {k} ", 20)) for k in (2, 1, 0)]  # texts
    assert [a.id for a in reconcile(old, new)] == ["o2", "o1", "o0"]


def test_parameter_and_input_errors() -> None:
    a = directions(1)[0]
    with pytest.raises(ValueError, match="unique; repeated: \\['A'\\]"):
        reconcile([prev("A", a, None), prev("A", a, None)], [cand(a)])
    with pytest.raises(ValueError, match="centroid dimensions differ: previous 32, new 3"):
        reconcile([prev("A", a, None)], [cand(np.ones(3))])
    with pytest.raises(ValueError, match="NaN"):
        reconcile([prev("A", a, None)], [cand(np.full(DIM, np.nan))])
    for bad, match in [
        ({"min_overlap": 0.0}, "min_overlap"),
        ({"min_similarity": 1.5}, "min_similarity"),
        ({"split_share": 0.7}, "split_share"),
        ({"continue_share": 0.3}, "continue_share"),
        ({"min_hits": 0}, "min_hits"),
    ]:
        with pytest.raises(ValueError, match=match):
            reconcile([], [], **bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- loaders


def test_load_previous_json_errors_name_the_place(tmp_path: Path) -> None:
    path = tmp_path / "prev.json"
    path.write_text(json.dumps({"clusters": [{"id": "a", "centroid": [1.0, 0.0]}, {"id": "b"}]}))
    with pytest.raises(ValueError, match=r"prev.json: clusters\[1\].centroid"):
        load_previous_json(path)
    path.write_text(json.dumps([{"id": "a", "centroid": [1, 0]}, {"id": "a", "centroid": [0, 1]}]))
    with pytest.raises(ValueError, match="'a' appears more than once"):
        load_previous_json(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        load_previous_json(path)
    with pytest.raises(ValueError, match="cannot read"):
        load_previous_json(tmp_path / "missing.json")
    path.write_text(json.dumps({"clusters": [{"id": "a", "centroid": [3, 4], "members": ["x", "y"]}]}))
    (p,) = load_previous_json(path)
    assert p.members == frozenset({"x", "y"}) and np.allclose(p.centroid, [3, 4])


def test_previous_from_stored_cluster_and_nearest_members() -> None:
    a, b = directions(2, seed=13)
    stored = [
        Cluster(id="A", name="a", centroid=a.tolist(), size=10, exemplars=["x"]),
        Cluster(id="B", name="b", centroid=b.tolist(), size=20),
    ]
    old = [Previous.from_cluster(c) for c in stored]
    assert old[0].exemplars == ["x"] and old[1].size == 20 and old[0].members is None
    texts = ["near a 1", "near b", "near a 2"]
    vectors = np.vstack([moved(a, seed=1), moved(b, seed=2), moved(a, seed=3)])
    est = with_nearest_members(old, texts, vectors)
    assert est[0].members == frozenset({"near a 1", "near a 2"}) and est[1].members == frozenset({"near b"})
    with pytest.raises(ValueError, match="matrix"):
        with_nearest_members(old, texts, vectors[:2])


# ---------------------------------------------------------------------------------- BANKING77

Clusters = dict[str, list[str]]  # label -> texts


@pytest.fixture(scope="module")
def banking() -> tuple[list[str], list[str], dict[str, Vec]]:
    if not BANKING.is_file():
        pytest.skip(f"BANKING77 data not found at {BANKING}")
    with BANKING.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    texts = [r["text"] for r in rows]
    labels = [r["category"] for r in rows]
    vectors = HashEmbedder(dimension=256).embed_sync(texts).astype(np.float64)
    return texts, labels, dict(zip(texts, vectors, strict=False))


def sample(texts: list[str], labels: list[str], seed: int) -> Clusters:
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(texts), size=int(0.7 * len(texts)), replace=False)
    out: Clusters = defaultdict(list)
    for k in sorted(chosen.tolist()):
        out[labels[k]].append(texts[k])
    return dict(out)


def centroid(members: list[str], vec: dict[str, Vec]) -> Vec:
    return unit(np.mean([vec[t] for t in members], axis=0))


def exemplars(members: list[str], vec: dict[str, Vec], n: int = 5) -> list[str]:
    c = centroid(members, vec)
    return sorted(members, key=lambda t: (-float(vec[t] @ c), t))[:n]


def kept_share(first: dict[str, str], second: Clusters, assigned: list[Assignment]) -> tuple[float, int]:
    """The benchmark: a second-run cluster "did not change" when >= 80% of its shared texts sat in one
    first-run cluster; the share of those topics' shared texts whose id stayed the same."""
    total = kept = 0
    for members, a in zip(second.values(), assigned, strict=True):
        shared = [t for t in members if t in first]
        if not shared:
            continue
        _, top = Counter(first[t] for t in shared).most_common(1)[0]
        if top >= 0.8 * len(shared):
            total += len(shared)
            kept += sum(first[t] == a.id for t in shared)
    return kept / total, total


def first_run(clusters: Clusters) -> tuple[dict[str, str], dict[str, str]]:
    ids = {label: new_cluster_id() for label in clusters}
    return ids, {t: ids[label] for label, members in clusters.items() for t in members}


def shuffled(clusters: Clusters, seed: int) -> Clusters:
    labels = list(clusters)
    np.random.default_rng(seed).shuffle(labels)
    return {label: clusters[label] for label in labels}


Mode = Literal["members", "exemplars", "centroids"]


def previous_version(
    clusters: Clusters, ids: dict[str, str], vec: dict[str, Vec], mode: Mode
) -> Iterator[Previous]:
    for label, members in clusters.items():
        yield Previous(
            ids[label],
            centroid(members, vec),
            len(members),
            members=frozenset(members) if mode == "members" else None,
            exemplars=exemplars(members, vec) if mode == "exemplars" else [],
        )


@pytest.mark.parametrize("mode", ["members", "exemplars", "centroids"])
def test_banking77_overlapping_samples_keep_ids(
    banking: tuple[list[str], list[str], dict[str, Vec]], mode: Mode
) -> None:
    texts, labels, vec = banking
    one, two = sample(texts, labels, seed=1), shuffled(sample(texts, labels, seed=2), seed=3)
    ids, first = first_run(one)
    old = list(previous_version(one, ids, vec, mode))
    new = [Candidate(centroid(m, vec), len(m), members=frozenset(m)) for m in two.values()]
    out = reconcile(old, new)
    share, total = kept_share(first, two, out)
    assert total > 4000
    assert share >= 0.9, f"{mode}: only {share:.1%} of the shared texts of unchanged topics kept their id"
    assert [a.id for a in out] == [ids[label] for label in two]  # in fact: every topic


def test_banking77_with_a_split_and_a_merge(banking: tuple[list[str], list[str], dict[str, Vec]]) -> None:
    texts, labels, vec = banking
    one, two = sample(texts, labels, seed=4), dict(sample(texts, labels, seed=5))
    ids, first = first_run(one)
    # second run: card_arrival split in two halves, and two intents merged into one cluster
    half = two.pop("card_arrival")
    two["card_arrival/a"], two["card_arrival/b"] = half[::2], half[1::2]
    two["merged"] = two.pop("lost_or_stolen_card") + two.pop("lost_or_stolen_phone")
    old = list(previous_version(one, ids, vec, "members"))
    new = [Candidate(centroid(m, vec), len(m), members=frozenset(m)) for m in two.values()]
    out = dict(zip(two, reconcile(old, new, min_similarity=0.5), strict=True))
    assert out["merged"].kind == "merge"
    assert set(out["merged"].parents) == {ids["lost_or_stolen_card"], ids["lost_or_stolen_phone"]}
    pieces = sorted([out["card_arrival/a"], out["card_arrival/b"]], key=lambda a: a.kind)
    assert [p.kind for p in pieces] == ["split", "unchanged"]  # one half is the heir
    assert pieces[1].id == ids["card_arrival"] and pieces[0].parents == [ids["card_arrival"]]
    share, _ = kept_share(first, two, list(out.values()))
    assert share >= 0.9
    assert sum(a.kind == "unchanged" for a in out.values()) == 75


def test_cluster_of_new_content_is_matched_on_its_centroid() -> None:
    """Later time window: one topic comes back with other members only (no key in common)."""
    a, b = directions(2, seed=14)
    old = [prev("A", a, keys("a", 50)), prev("B", b, keys("b", 50))]
    new = [cand(moved(b, seed=1), keys("b", 40, start=10)), cand(moved(a, seed=2), keys("later-a", 60))]
    assert [x.id for x in reconcile(old, new)] == ["B", "A"]
