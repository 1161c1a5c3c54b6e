"""What :class:`otel_topics.naming.LLMNamer` sends (prompt, JSON schema) and how it reads the answer.

Several clusters are named in one call. Each is shown with texts from inside it (nearest its
centroid), nearby texts that are NOT in it (the nearest points outside, as in Clio), and its
c-TF-IDF keywords, so that the model picks a name telling it apart from its neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from otel_topics.llm_http import MalformedAnswer, find_json

if TYPE_CHECKING:
    from otel_topics.naming import ClusterSample

NAME_MAX: Final = 60
DESCRIPTION_MAX: Final = 200

SYSTEM_PROMPT: Final = f"""\
You give names to clusters of short texts for a topic map. Every cluster below is shown with
texts that belong to it, nearby texts that do NOT belong to it (they sit in neighbouring
clusters), and the keywords most typical of it.

For each cluster write:
- "name": at most {NAME_MAX} characters. A verb phrase in the imperative or a noun phrase saying
  what the cluster's texts have in common, e.g. "Track a card that has not arrived" or "Refunds
  for cancelled orders". Make it specific enough to tell the cluster apart from the nearby texts
  outside it and from the other clusters in this request. No quotes, no trailing period.
- "description": one sentence of at most {DESCRIPTION_MAX} characters on what the texts share
  and what sets them apart from the nearby texts outside the cluster.

Describe, do not quote. Leave out names of people and companies' customers, account or order
numbers, IDs, emails, phone numbers, addresses and any other personal details.

Answer with one JSON object and nothing else:
{{"clusters": [{{"index": 1, "name": "...", "description": "..."}}, ...]}}
with exactly one entry per cluster, "index" being the cluster's number."""


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def user_prompt(
    batch: Sequence[ClusterSample], *, max_exemplars: int, max_contrast: int, max_text_chars: int
) -> str:
    parts: list[str] = []
    for number, sample in enumerate(batch, start=1):
        lines = [f'<cluster index="{number}">']
        if sample.keywords:
            lines.append("Keywords: " + ", ".join(" ".join(k.split()) for k in sample.keywords[:10]))
        lines.append("Texts in this cluster:")
        lines.extend(f"- {_clip(t, max_text_chars)}" for t in sample.exemplars[:max_exemplars])
        contrast = sample.contrast[:max_contrast]
        if contrast:
            lines.append("Nearby texts NOT in this cluster:")
            lines.extend(f"- {_clip(t, max_text_chars)}" for t in contrast)
        lines.append("</cluster>")
        parts.append("\n".join(lines))
    n = len(batch)
    tail = f"Name the {n} clusters above (index 1 to {n})." if n > 1 else "Name the cluster above (index 1)."
    return "\n\n".join([*parts, tail + " Reply with the JSON object only."])


def messages(
    batch: Sequence[ClusterSample], *, max_exemplars: int, max_contrast: int, max_text_chars: int
) -> list[dict[str, str]]:
    user = user_prompt(
        batch, max_exemplars=max_exemplars, max_contrast=max_contrast, max_text_chars=max_text_chars
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def json_schema(count: int) -> dict[str, Any]:
    """``{"clusters": [{index, name, description}]}`` with exactly ``count`` entries."""
    item = {
        "type": "object",
        "properties": {
            "index": {"type": "integer"},
            "name": {"type": "string", "maxLength": NAME_MAX},
            "description": {"type": "string", "maxLength": DESCRIPTION_MAX},
        },
        "required": ["index", "name", "description"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"clusters": {"type": "array", "items": item, "minItems": count, "maxItems": count}},
        "required": ["clusters"],
        "additionalProperties": False,
    }


def _entries(found: dict[str, Any] | list[Any]) -> list[Any]:
    if isinstance(found, list):
        return found
    for key in ("clusters", "names", "topics", "results"):
        if isinstance(found.get(key), list):
            return list(found[key])
    lists = [v for v in found.values() if isinstance(v, list)]
    if len(lists) == 1:
        return lists[0]
    if "index" in found or "name" in found:  # a single entry
        return [found]
    # {"1": {"name": ...}, "2": {...}}
    return [dict(v, index=k) for k, v in found.items() if isinstance(v, dict)]


def _index(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        digits = value.strip().lstrip("#").removeprefix("cluster").strip()
        return int(digits) if digits.isdigit() else None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def parse_answer(text: str, count: int) -> dict[int, tuple[str, str]]:
    """The model's answer -> ``{position in the batch (0-based): (name, description)}``.

    Entries with an index outside 1..count, without a usable name, or repeating an index already
    seen are left out (those clusters are named again or fall back). Raises MalformedAnswer when
    the answer holds no JSON at all or no usable entry.
    """
    found = find_json(text, arrays=True)
    if found is None:
        raise MalformedAnswer(f"no JSON in the answer: {text[:200]!r}")
    out: dict[int, tuple[str, str]] = {}
    for entry in _entries(found):
        if not isinstance(entry, dict):
            continue
        index = _index(entry.get("index", entry.get("id")))
        if index is None and count == 1 and "index" not in entry:
            index = 1
        name = entry.get("name", entry.get("title"))
        description = entry.get("description", "")
        if index is None or not 1 <= index <= count or index - 1 in out:
            continue
        if not isinstance(name, str) or not name.strip():
            continue
        out[index - 1] = (name, description if isinstance(description, str) else "")
    if not out:
        raise MalformedAnswer(f"no usable cluster entry in the answer: {text[:200]!r}")
    return out
