"""Stable topic ids across topic map versions: each new version is reconciled with the previous one.

Evidence, per previous cluster ``i`` and new cluster ``j``:

- ``cos[i, j]``: cosine similarity of the centroids (always; both must live in one embedding space);
- member flows, when keys are known on both sides (trace ids or texts; a key absent from either
  version is ignored, so overlapping samples compare fairly): ``flow[i, j]`` is the share of i's
  shared keys that sit in j, ``back[i, j]`` the share of j's shared keys that came from i. With
  complete member sets on both sides the overlap is the Jaccard index of the two shared sets
  (1 only when they are equal; it drops both when a piece splits off and when another cluster is
  merged in, which the overlap coefficient ``|A∩B| / min(|A|, |B|)`` cannot see: it is 1 whenever
  one set contains the other). When the previous side only has exemplars (a sample, e.g. an
  earlier ``cluster --json``), Jaccard is meaningless and the overlap is ``flow``: the share of its
  exemplars found in j; ``back`` is then estimated from the previous sizes.
  A previous cluster none of whose keys occur in the new version, or a new cluster holding none of
  the previous version's keys (new content, e.g. traces of a later time window), is matched on
  centroids alone (so is everything when the key spaces do not meet at all).

Rules, in order (defaults in :func:`reconcile`):

1. Pairs with ``cos >= min_similarity`` and (without evidence, or) ``flow`` or ``back``
   ``>= min_overlap`` may be the same topic; the Hungarian algorithm picks the 1:1 matching of
   highest total score ``(cos + overlap) / 2`` (overlap 0.5 for a pair without evidence).
2. A previous cluster is *split* when at least two new clusters each take ``>= split_share`` of its
   shared keys (and at least ``min_hits`` of them). A new cluster is a *merge* when at least two
   previous clusters each send it ``>= min_overlap`` of their shared keys (``min_hits`` or more).
3. A new cluster matched in (1) keeps the id ("unchanged", parents ``[id]``) unless it is part of a
   split or a merge; then it keeps the id only if it is the *heir* of its match: it is made of it
   (``back >= continue_share``) and holds a good part of it (``flow >= split_share``), or the old
   cluster went into it (nearly) whole (``flow >= continue_share``) and makes up at least two
   thirds of it (``back >= 2/3``). So the largest piece of a split that is made of the old topic
   keeps its id (the matching prefers it), and a topic that absorbed smaller ones keeps its id,
   the absorbed ones listed as parents too. Otherwise (or with ``heirs=False``) it gets a new id: "merge"
   (parents: the merged clusters, largest contribution first) or "split" (parents: the split
   cluster).
4. Any other new cluster that takes a substantial share of a split cluster is "split" (new id,
   parents the split cluster); the rest is "new": parents the previous cluster that gave it most of
   its shared keys (``>= min_overlap``), or without evidence the nearest previous centroid if
   ``cos >= min_similarity``, else none.

Why the heir of a split keeps the id: between two runs over much the same data most "splits" are
clustering jitter (an old topic comes back as two pure pieces), and what users need is that the
bulk of a topic keeps its id. On BANKING77 (two overlapping 70% samples) "every split gets new ids"
kept the ids of 6-9 points fewer texts of topics that did not change; with this rule, member
evidence comes within a point of the ceiling of any 1:1 id keeping (docs/readme/reconcile.md).

Decisions are deterministic (ties go to the lower index); new ids come from ``new_id``.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped]

from otel_topics.model import Cluster

Kind = Literal["unchanged", "split", "merge", "new"]
Matrix = npt.NDArray[np.float64]


def new_cluster_id() -> str:
    """A fresh cluster id: ``t_`` and 10 base32 characters (50 random bits) of a uuid4."""
    return "t_" + base64.b32encode(uuid.uuid4().bytes).decode("ascii").lower()[:10]


@dataclass(slots=True)
class Candidate:
    """A cluster of the new version. ``centroid``: unit vector in the original embedding space;
    ``members``: every member's key (trace ids or texts) when known; ``exemplars``: a few texts."""

    centroid: npt.NDArray[Any]
    size: int
    members: frozenset[str] | None = None
    exemplars: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Previous:
    """A cluster of the previous version. ``members`` is the complete member set (same key space as
    the candidates' members); ``exemplars`` a sample of it (texts), used when members are unknown."""

    id: str
    centroid: npt.NDArray[Any]
    size: int
    members: frozenset[str] | None = None
    exemplars: list[str] = field(default_factory=list)

    @classmethod
    def from_cluster(cls, cluster: Cluster, members: frozenset[str] | None = None) -> Previous:
        """From a stored :class:`otel_topics.model.Cluster` (members: e.g. its trace ids, if known)."""
        return cls(
            id=cluster.id,
            centroid=np.asarray(cluster.centroid, dtype=np.float64),
            size=cluster.size,
            members=members,
            exemplars=list(cluster.exemplars),
        )


@dataclass(frozen=True, slots=True)
class Assignment:
    """Identity of one new cluster: its id, the previous ids it derives from, and why."""

    id: str
    parents: list[str]
    kind: Kind


@dataclass(slots=True)
class _Evidence:
    has: npt.NDArray[np.bool_]  # (P,) row has overlap evidence
    flow: Matrix  # (P, N) share of i's shared keys in j
    back: Matrix  # (P, N) share of j's shared keys from i (estimated for exemplar rows)
    overlap: Matrix  # (P, N) Jaccard (member rows) or flow (exemplar rows)
    hits: npt.NDArray[np.int64]  # (P, N) shared keys of i found in j
    seen: npt.NDArray[np.bool_]  # (N,) j holds any key of a row with evidence


def _unit_rows(vectors: Sequence[npt.NDArray[Any]], what: str) -> Matrix:
    rows = []
    for k, v in enumerate(vectors):
        a = np.asarray(v, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{what}[{k}].centroid has a NaN or infinite value")
        rows.append(a)
    dims = {len(r) for r in rows}
    if len(dims) > 1:
        raise ValueError(f"{what} centroids have different dimensions: {sorted(dims)}")
    m = np.vstack(rows)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return np.asarray(m / np.where(norms > 0, norms, 1.0), dtype=np.float64)


def _evidence(previous: Sequence[Previous], new: Sequence[Candidate]) -> _Evidence:
    n_p, n_n = len(previous), len(new)
    complete_new = all(c.members is not None for c in new)
    new_keys = [c.members if c.members is not None else frozenset(c.exemplars) for c in new]
    owner: dict[str, int] = {}
    for j, keys in enumerate(new_keys):
        for key in keys:
            owner.setdefault(key, j)  # a key in two new clusters counts for the first
    member_rows = [complete_new and p.members is not None for p in previous]
    universe_prev: set[str] = set()
    for p, is_members in zip(previous, member_rows, strict=True):
        if is_members and p.members is not None:
            universe_prev |= p.members

    hits = np.zeros((n_p, n_n), dtype=np.int64)
    shared = np.zeros(n_p, dtype=np.float64)  # |A_i|: i's keys present in the new version
    sampled = np.zeros(n_p, dtype=np.float64)  # |keys of i|
    for i, p in enumerate(previous):
        keys = p.members if member_rows[i] and p.members is not None else frozenset(p.exemplars)
        sampled[i] = len(keys)
        for key in keys:
            slot = owner.get(key)
            if slot is not None:
                hits[i, slot] += 1
        shared[i] = hits[i].sum()
    has = shared > 0
    flow = np.divide(hits, shared[:, None], out=np.zeros((n_p, n_n)), where=has[:, None])

    # back: complete members -> exact; exemplar samples -> contributions scaled to the previous size
    weight = np.where(
        np.asarray(member_rows),
        1.0,
        np.divide(
            np.maximum(np.array([p.size for p in previous], dtype=np.float64), 1.0),
            sampled,
            out=np.zeros(n_p),
            where=sampled > 0,
        ),
    )
    contrib = hits * weight[:, None]
    new_shared = np.array(
        [len(keys & universe_prev) if complete_new else 0 for keys in new_keys], dtype=np.float64
    )
    column = np.maximum(contrib.sum(axis=0), new_shared)
    seen = contrib.sum(axis=0) > 0
    back = np.divide(contrib, column[None, :], out=np.zeros((n_p, n_n)), where=column[None, :] > 0)

    overlap = flow.copy()
    for i in range(n_p):
        if member_rows[i] and has[i]:
            # Jaccard of i's and j's keys, both restricted to keys the two versions share
            union = shared[i] + new_shared - hits[i]
            overlap[i] = np.divide(hits[i], union, out=np.zeros(n_n), where=union > 0)
    return _Evidence(has=has, flow=flow, back=back, overlap=overlap, hits=hits, seen=seen)


def reconcile(
    previous: Sequence[Previous],
    new: Sequence[Candidate],
    *,
    min_similarity: float = 0.8,
    min_overlap: float = 0.5,
    split_share: float = 0.2,
    continue_share: float = 0.8,
    min_hits: int = 2,
    heirs: bool = True,
    enabled: bool = True,
    new_id: Callable[[], str] = new_cluster_id,
) -> list[Assignment]:
    """One :class:`Assignment` per new cluster, in order (rules in the module docstring).

    ``enabled=False`` gives every cluster a new id and no parents.
    """
    if not -1.0 <= min_similarity <= 1.0:
        raise ValueError(f"min_similarity must be between -1 and 1, got {min_similarity}")
    if not 0.0 < min_overlap <= 1.0:
        raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap}")
    if not 0.0 < split_share <= 0.5:
        raise ValueError(f"split_share must be in (0, 0.5], got {split_share}")
    if not 0.5 <= continue_share <= 1.0:
        raise ValueError(f"continue_share must be in [0.5, 1], got {continue_share}")
    if min_hits < 1:
        raise ValueError(f"min_hits must be at least 1, got {min_hits}")
    ids = [p.id for p in previous]
    if len(set(ids)) != len(ids):
        dup = sorted({x for x in ids if ids.count(x) > 1})
        raise ValueError(f"previous cluster ids must be unique; repeated: {dup}")
    taken = set(ids)

    def fresh() -> str:
        while True:
            cid = new_id()
            if cid not in taken:
                taken.add(cid)
                return cid

    if not enabled or not previous or not new:
        return [Assignment(fresh(), [], "new") for _ in new]

    p_c = _unit_rows([p.centroid for p in previous], "previous")
    n_c = _unit_rows([c.centroid for c in new], "new")
    if p_c.shape[1] != n_c.shape[1]:
        raise ValueError(
            f"centroid dimensions differ: previous {p_c.shape[1]}, new {n_c.shape[1]} "
            "(the versions must share one embedding model)"
        )
    cos: Matrix = p_c @ n_c.T
    ev = _evidence(previous, new)
    with_ev = ev.has[:, None]
    # member evidence about a pair exists only when both sides hold shared keys; else centroids decide
    pair_ev = with_ev & ev.seen[None, :]
    related = (ev.flow >= min_overlap) | (ev.back >= min_overlap)
    admissible = (cos >= min_similarity) & (~pair_ev | related)
    score = (cos + np.where(pair_ev, ev.overlap, 0.5)) / 2.0
    rows, cols = linear_sum_assignment(np.where(admissible, -(score + 1.0), 0.0))
    partner = {int(j): int(i) for i, j in zip(rows, cols, strict=True) if admissible[i, j]}

    substantial = with_ev & (ev.flow >= split_share) & (ev.hits >= min_hits)
    split_rows = {i for i in range(len(previous)) if int(substantial[i].sum()) >= 2}
    mostly = with_ev & (ev.flow >= min_overlap) & (ev.hits >= min_hits)

    def heir(i: int, j: int) -> bool:
        """j continues i through a split or a merge: j is made of i and holds a good part of it, or
        i went (nearly) whole into j and makes up at least two thirds of it."""
        f, b = ev.flow[i, j], ev.back[i, j]
        return heirs and bool(
            (b >= continue_share and f >= split_share) or (f >= continue_share and b >= 2 / 3)
        )

    out: list[Assignment] = []
    for j in range(len(new)):
        i = partner.get(j)
        sources = sorted(np.flatnonzero(mostly[:, j]).tolist(), key=lambda k: (-ev.back[k, j], k))
        if len(sources) >= 2:  # merge
            if i is not None and i in sources and heir(i, j):
                rest = [ids[k] for k in sources if k != i]
                out.append(Assignment(ids[i], [ids[i], *rest], "unchanged"))
            else:
                out.append(Assignment(fresh(), [ids[k] for k in sources], "merge"))
            continue
        if i is not None and (i not in split_rows or heir(i, j)):
            out.append(Assignment(ids[i], [ids[i]], "unchanged"))
            continue
        split_of = [k for k in split_rows if substantial[k, j]]
        if split_of:
            split_of.sort(key=lambda k: (-ev.flow[k, j], k))
            out.append(Assignment(fresh(), [ids[k] for k in split_of], "split"))
            continue
        out.append(Assignment(fresh(), _parents_of_new(j, cos, ev, min_similarity, min_overlap, ids), "new"))
    return out


def _parents_of_new(
    j: int, cos: Matrix, ev: _Evidence, min_similarity: float, min_overlap: float, ids: list[str]
) -> list[str]:
    if ev.seen[j]:
        k = int(np.argmax(ev.back[:, j]))
        return [ids[k]] if ev.back[k, j] >= min_overlap else []
    k = int(np.argmax(cos[:, j]))
    return [ids[k]] if cos[k, j] >= min_similarity else []


def load_previous_json(path: str | Path) -> list[Previous]:
    """Previous clusters from the output of ``otel-topics cluster --json`` (an object with
    ``clusters: [{id, name, size, keywords, examples, centroid}]``, or that list alone).

    ``examples`` become exemplars (a sample of the members, matched against the new texts); an
    optional ``members`` list is taken as the complete member set.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read the previous clusters {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from exc
    clusters = data.get("clusters") if isinstance(data, dict) else data
    if not isinstance(clusters, list):
        raise ValueError(f"{path}: expected an object with a 'clusters' list (otel-topics cluster --json)")
    out: list[Previous] = []
    for k, c in enumerate(clusters):
        where = f"{path}: clusters[{k}]"
        if not isinstance(c, dict):
            raise ValueError(f"{where}: expected an object, got {type(c).__name__}")
        cid = c.get("id")
        if not isinstance(cid, str | int) or isinstance(cid, bool) or str(cid) == "":
            raise ValueError(f"{where}.id: expected a non-empty string, got {cid!r}")
        centroid = c.get("centroid")
        if (
            not isinstance(centroid, list)
            or not centroid
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in centroid)
        ):
            raise ValueError(f"{where}.centroid: expected a non-empty list of numbers")
        size = c.get("size", 0)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"{where}.size: expected a non-negative integer, got {size!r}")
        examples = c.get("examples", c.get("exemplars", []))
        if not isinstance(examples, list) or not all(isinstance(x, str) for x in examples):
            raise ValueError(f"{where}.examples: expected a list of strings")
        members = c.get("members")
        if members is not None and (
            not isinstance(members, list) or not all(isinstance(x, str) for x in members)
        ):
            raise ValueError(f"{where}.members: expected a list of strings")
        out.append(
            Previous(
                id=str(cid),
                centroid=np.asarray(centroid, dtype=np.float64),
                size=size,
                members=frozenset(members) if members is not None else None,
                exemplars=list(examples),
            )
        )
    seen: set[str] = set()
    for p in out:
        if p.id in seen:
            raise ValueError(f"{path}: cluster id {p.id!r} appears more than once")
        seen.add(p.id)
    return out


def with_nearest_members(
    previous: Sequence[Previous], keys: Sequence[str], vectors: npt.ArrayLike
) -> list[Previous]:
    """The previous clusters with ``members`` estimated from the new items: each key goes to the
    previous cluster of the nearest centroid (what classifying the new items against the previous
    map would do). For a previous version known only by centroids and exemplars."""
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] != len(keys):
        raise ValueError(
            f"vectors must be a (len(keys), dim) matrix, got shape {v.shape} for {len(keys)} keys"
        )
    if not previous:
        return []
    p_c = _unit_rows([p.centroid for p in previous], "previous")
    if p_c.shape[1] != v.shape[1]:
        raise ValueError(f"centroid dimension {p_c.shape[1]} differs from the vectors' {v.shape[1]}")
    nearest = np.argmax(v @ p_c.T, axis=1) if len(keys) else np.zeros(0, dtype=np.int64)
    groups: list[set[str]] = [set() for _ in previous]
    for key, i in zip(keys, nearest.tolist(), strict=True):
        groups[i].add(key)
    return [
        Previous(p.id, p.centroid, p.size, members=frozenset(g), exemplars=list(p.exemplars))
        for p, g in zip(previous, groups, strict=True)
    ]
