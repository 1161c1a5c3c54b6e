"""Keywords per cluster by class-based TF-IDF, and a readable cluster name without an LLM.

c-TF-IDF treats all the texts of one cluster as one document. The weight of term ``t`` in cluster ``c``
is ``tf(t, c) * log(1 + A / f(t))`` where ``tf(t, c)`` is how many of the cluster's texts contain ``t``,
``f(t)`` the same count summed over all clusters, and ``A`` the average number of term occurrences per
cluster. A term frequent in one cluster and rare elsewhere ranks first; a term common to every cluster
sinks. Terms are lower-cased word unigrams and bigrams with English stop words removed (a bigram joins
two neighbouring words once the stop words between them are dropped: "lost my card" -> "lost card").
Noise (label -1) is not a cluster and gets no keywords.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

__all__ = ["STOPWORDS", "ctfidf", "fallback_name", "keywords", "terms", "tokenize"]

_STOPWORD_TEXT: Final = """
a about above across after afterwards again against all almost alone along already also although
always am among amongst an and another any anybody anyhow anyone anything anyway anywhere are aren't
around as at be became because become becomes been before beforehand being below beside besides
between beyond both but by can can't cannot could couldn't did didn't do does doesn't doing don't
done down during each either else elsewhere enough etc even ever every everyone everything
everywhere except few for former formerly from further had hadn't has hasn't have haven't having he
he'd he'll he's hence her here here's hers herself him himself his how how's however i i'd i'll i'm
i've ie if in indeed into is isn't it it's its itself just let's like ll me meanwhile might mine
more moreover most mostly much must mustn't my myself namely neither never nevertheless next no
nobody none noone nor not nothing now nowhere of off often on once one only onto or other others
otherwise ought our ours ourselves out over own per perhaps please rather re really same shall
shan't she she'd she'll she's should shouldn't since so some somehow someone something sometime
sometimes somewhere still such than that that's the their theirs them themselves then thence there
there's thereafter thereby therefore therein thereupon these they they'd they'll they're they've
this those though through throughout thru thus to together too toward towards under until up upon us
ve very via was wasn't we we'd we'll we're we've well were weren't what what's whatever when when's
whence whenever where where's whereafter whereas whereby wherein whereupon wherever whether which
while whither who who's whoever whole whom whose why why's will with within without won't would
wouldn't yet you you'd you'll you're you've your yours yourself yourselves
"""
STOPWORDS: Final = frozenset(_STOPWORD_TEXT.split())
"""English function words (pronouns, auxiliaries, determiners, prepositions, conjunctions); written
for this project. Content words such as "help", "need" or "want" are left to c-TF-IDF to discount."""

_WORD_RE: Final = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*", re.UNICODE)
_NAME_MAX: Final = 60


def tokenize(text: str) -> list[str]:
    """Lower-cased words of ``text`` (letters and digits, inner apostrophes kept: "don't")."""
    return [m.group(0).replace("\u2019", "'") for m in _WORD_RE.finditer(text.lower())]


def terms(text: str) -> list[str]:
    """The unigrams and bigrams of ``text`` that count as terms: stop words, single characters and
    pure numbers removed; bigrams over the remaining words in order."""
    words = [w for w in tokenize(text) if w not in STOPWORDS and len(w) > 1 and not w.isdigit()]
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words) if a != b]


def ctfidf(cluster_terms: Mapping[int, Counter[str]]) -> dict[int, dict[str, float]]:
    """c-TF-IDF weights of every term of every cluster from per-cluster term counts."""
    if not cluster_terms:
        return {}
    across: Counter[str] = Counter()
    for counts in cluster_terms.values():
        across.update(counts)
    average = sum(across.values()) / len(cluster_terms)
    return {
        label: {t: tf * math.log(1.0 + average / across[t]) for t, tf in counts.items()}
        for label, counts in cluster_terms.items()
    }


def keywords(texts: Sequence[str], labels: Iterable[int], top_n: int = 8) -> dict[int, list[str]]:
    """Up to ``top_n`` keywords per cluster label (>= 0), best first.

    A term must occur in at least two of the cluster's texts (one, for a one-text cluster). A term
    whose every word is already covered by better keywords is skipped ("card" after "lost card"), so
    the list says more in fewer words. Ties go to the bigram, then alphabetically: deterministic.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    labels = list(labels)
    if len(labels) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(labels)} labels")
    counts: dict[int, Counter[str]] = {}
    docs: Counter[int] = Counter()
    for text, label in zip(texts, labels, strict=True):
        label = int(label)
        if label < 0:
            continue
        counts.setdefault(label, Counter()).update(set(terms(text)))
        docs[label] += 1
    weights = ctfidf(counts)
    out: dict[int, list[str]] = {}
    for label in sorted(counts):
        floor = min(2, docs[label])
        ranked = sorted(
            (t for t in weights[label] if counts[label][t] >= floor),
            key=lambda t: (-weights[label][t], -t.count(" "), t),
        )
        out[label] = _non_redundant(ranked, top_n)
    return out


def _non_redundant(ranked: Iterable[str], top_n: int) -> list[str]:
    chosen: list[str] = []
    covered: set[str] = set()
    for term in ranked:
        words = term.split()
        if all(w in covered for w in words):
            continue
        chosen.append(term)
        covered.update(words)
        if len(chosen) == top_n:
            break
    return chosen


def fallback_name(keywords: Sequence[str], medoid_text: str, max_len: int = _NAME_MAX) -> str:
    """A short readable cluster name without an LLM, at most ``max_len`` (60) characters.

    The two best keywords joined by " / " (among the best four, a word is dropped for a phrase that
    contains it: "rate, exchange rate" -> "exchange rate"), then the most central text in quotes when
    at least 20 characters of it fit: ``Cancel transfer / transaction: "How do i cancel my
    transaction?"``. Without keywords the central text alone; without either, "Unnamed topic". Long
    parts are cut at a word boundary with an ellipsis.
    """
    if max_len < 10:
        raise ValueError(f"max_len must be at least 10, got {max_len}")
    medoid = " ".join(medoid_text.split())
    top = [k.strip() for k in keywords[:4] if k.strip()]
    phrases = [k for k in top if " " in k]
    top = [k for k in top if " " in k or not any(k in p.split() for p in phrases)]
    head = " / ".join(top[:2])
    if not head:
        return _cut(_capitalize(medoid), max_len) if medoid else "Unnamed topic"
    head = _capitalize(_cut(head, max_len))
    room = max_len - len(head) - len(': ""')
    if medoid and room >= 20:
        return f'{head}: "{_cut(medoid, room)}"'
    return head


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _cut(text: str, limit: int) -> str:
    """``text`` shortened to at most ``limit`` characters at a word boundary, "…" marking the cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:/-") + "\u2026"
