"""What an LLM backend sends (prompt, JSON schema, cache key) and how it reads the answer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Final

from otel_topics.facets.spec import FacetSpec
from otel_topics.llm_http import MalformedAnswer as MalformedAnswer  # re-exported
from otel_topics.llm_http import find_json
from otel_topics.model import NO_MATCH, Conversation

PROMPT_VERSION: Final = 1
"""Bumped whenever the prompt below changes, so persisted cache entries of an older prompt miss."""

NONE: Final = "NONE"


def _says_none(spec: FacetSpec) -> bool:
    return spec.no_match_pattern is not None and spec.is_no_match(NONE)


def system_prompt(facets: Sequence[FacetSpec]) -> str:
    keys = ", ".join(json.dumps(f.name) for f in facets)
    lines = [
        "You read a conversation between a user and an AI agent, including the agent's tool calls, "
        "tool results and errors, and describe it along the facets listed below.",
        f"Answer with one JSON object and nothing else. Its keys are exactly: {keys}.",
        "Write each text value as one short sentence in English that describes rather than quotes. "
        "Leave out names of people, IDs, emails, phone numbers, addresses and any other personal details.",
    ]
    if any(_says_none(f) for f in facets):
        lines.append(f'When a facet does not apply to this conversation, its value is "{NONE}".')
    lines.append("")
    lines.append("Facets:")
    for f in facets:
        if f.values is not None:
            choices = ", ".join(json.dumps(v) for v in f.values)
            rule = f"Answer exactly one of: {choices}" + (f', or "{NONE}".' if _says_none(f) else ".")
        else:
            rule = f"At most {f.max_chars} characters." + (
                f' "{NONE}" if it does not apply.' if _says_none(f) else ""
            )
        lines.append(f"- {f.name}: {f.prompt.strip()} {rule}")
    return "\n".join(lines)


def user_prompt(rendered: str, facets: Sequence[FacetSpec]) -> str:
    keys = ", ".join(f.name for f in facets)
    return f"<conversation>\n{rendered}\n</conversation>\n\nReply with the JSON object with the keys {keys}."


def render(conversation: Conversation, max_chars: int | None = None) -> str:
    """The conversation as text; past ``max_chars`` its middle is cut (start and end carry the most)."""
    text = conversation.render()
    if max_chars is None or len(text) <= max_chars:
        return text
    head = max_chars * 2 // 3
    tail = max_chars - head
    omitted = len(text) - head - tail
    return f"{text[:head]}\n[... {omitted} characters omitted ...]\n{text[-tail:]}"


def messages(rendered: str, facets: Sequence[FacetSpec]) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system_prompt(facets)},
        {"role": "user", "content": user_prompt(rendered, facets)},
    ]


def json_schema(facets: Sequence[FacetSpec], *, max_length: bool = True) -> dict[str, Any]:
    """One property per facet: a bounded string, or an enum of its values (plus NONE)."""
    props: dict[str, Any] = {}
    for f in facets:
        prop: dict[str, Any]
        if f.values is not None:
            enum = list(f.values) + ([NONE] if _says_none(f) and NONE not in f.values else [])
            prop = {"type": "string", "enum": enum}
        else:
            prop = {"type": "string"}
            if max_length:
                prop["maxLength"] = f.max_chars
        props[f.name] = prop
    return {
        "type": "object",
        "properties": props,
        "required": [f.name for f in facets],
        "additionalProperties": False,
    }


def cache_key(model: str, facets: Sequence[FacetSpec], rendered: str) -> str:
    payload = json.dumps(
        {
            "v": PROMPT_VERSION,
            "model": model,
            "facets": [list(f.as_key()) for f in facets],
            "conversation": rendered,
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def parse_answer(text: str, facets: Sequence[FacetSpec]) -> dict[str, str]:
    """The model's text -> one normalized value per facet. Raises MalformedAnswer when unusable."""
    obj = find_json(text)
    if not isinstance(obj, dict):
        raise MalformedAnswer(f"no JSON object in the answer: {text[:200]!r}")
    by_lower = {str(k).strip().lower(): v for k, v in obj.items()}
    names = [f.name.lower() for f in facets]
    if not any(n in by_lower for n in names):
        nested = [v for v in obj.values() if isinstance(v, dict)]
        if len(nested) == 1:  # {"facets": {...}}
            by_lower = {str(k).strip().lower(): v for k, v in nested[0].items()}
        if not any(n in by_lower for n in names):
            raise MalformedAnswer(
                f"the answer's JSON object has none of the keys {[f.name for f in facets]}: {text[:200]!r}"
            )
    return {f.name: f.normalize(by_lower.get(f.name.lower())) for f in facets}


def fill_missing(values: dict[str, str], facets: Sequence[FacetSpec]) -> dict[str, str]:
    """Every facet present, in spec order (missing ones are NO_MATCH)."""
    return {f.name: values.get(f.name, NO_MATCH) for f in facets}
