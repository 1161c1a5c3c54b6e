"""Facet specifications: what each facet asks, and how an answer is normalized.

A facet is one dimension along which a conversation is summarized: a one-sentence text
(``Task``, ``Issues``) or a category from a closed list (``Sentiment``). Every extractor
returns a value for every facet it serves: the text, or :data:`otel_topics.model.NO_MATCH`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from otel_topics.model import IDENTIFIER_RE, NO_MATCH

ELLIPSIS: Final = "…"


@dataclass(frozen=True, slots=True)
class FacetSpec:
    """One facet.

    ``values`` turns the facet into a category: an answer is normalized (case-insensitively) to
    one of them, anything else becomes ``no_match``. ``max_chars`` caps a text answer (and
    bounds the JSON schema sent to an LLM, which small local models need to stop).
    An answer matching ``no_match_pattern`` (case-insensitive, surrounding whitespace ignored)
    or an empty answer is ``no_match``.
    """

    name: str
    prompt: str
    values: tuple[str, ...] | None = None
    max_chars: int = 200
    no_match_pattern: str | None = "^NONE$"
    _no_match_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not IDENTIFIER_RE.match(self.name):
            raise ValueError(
                f"facet name {self.name!r} is not an identifier ([A-Za-z][A-Za-z0-9_]*, no dots)"
            )
        if not self.prompt or not self.prompt.strip():
            raise ValueError(f"facet {self.name}: prompt must not be empty")
        if self.max_chars < 8:
            raise ValueError(f"facet {self.name}: max_chars must be at least 8, got {self.max_chars}")
        if self.values is not None:
            values = tuple(self.values)
            if not values:
                raise ValueError(f"facet {self.name}: values must not be empty (use None for free text)")
            lowered = [v.strip().lower() for v in values]
            if any(not v for v in lowered):
                raise ValueError(f"facet {self.name}: values must not contain empty strings")
            if len(set(lowered)) != len(lowered):
                raise ValueError(f"facet {self.name}: values must be unique (case-insensitively)")
            object.__setattr__(self, "values", values)
        compiled: re.Pattern[str] | None = None
        if self.no_match_pattern:
            try:
                compiled = re.compile(self.no_match_pattern, re.IGNORECASE)
            except re.error as exc:
                raise ValueError(
                    f"facet {self.name}: no_match_pattern {self.no_match_pattern!r} is not a valid "
                    f"regular expression: {exc}"
                ) from exc
        object.__setattr__(self, "_no_match_re", compiled)

    def is_no_match(self, value: str) -> bool:
        """True when ``value`` says the facet does not apply."""
        text = value.strip()
        if not text or text == NO_MATCH:
            return True
        return self._no_match_re is not None and self._no_match_re.search(text) is not None

    def normalize(self, value: Any) -> str:
        """An answer (any JSON value) -> the facet's value: text, a member of ``values``, or NO_MATCH."""
        if value is None or isinstance(value, dict):
            return NO_MATCH
        if isinstance(value, list):
            value = "; ".join(str(v) for v in value if v is not None)
        text = " ".join(str(value).split())
        if self.is_no_match(text):
            return NO_MATCH
        if self.values is not None:
            return self._match_value(text)
        return truncate(text, self.max_chars)

    def _match_value(self, text: str) -> str:
        assert self.values is not None
        key = text.strip(" \t\"'`.,;:!*_()[]").lower()
        for v in self.values:
            if key == v.lower():
                return v
        # "Positive - the user thanked the agent" -> positive (first word only, to stay strict)
        first = re.split(r"[\s,.;:!()\-]+", key, maxsplit=1)[0]
        for v in self.values:
            if first == v.lower():
                return v
        return NO_MATCH

    def as_key(self) -> tuple[str, str, tuple[str, ...] | None, int, str | None]:
        """The parts of the spec that change an answer (used in cache keys)."""
        return (self.name, self.prompt, self.values, self.max_chars, self.no_match_pattern)


def truncate(text: str, max_chars: int) -> str:
    """Collapse whitespace; cut at a word boundary with an ellipsis so the result fits ``max_chars``."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - len(ELLIPSIS)]
    space = cut.rfind(" ")
    if space >= max_chars // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-(\"'\u2013\u2014") + ELLIPSIS


TASK: Final = FacetSpec(
    name="Task",
    prompt=(
        "In one sentence, what did the user ask the agent to do? Describe the request itself "
        "(for example 'Cancel a flight reservation and get a refund'), not how the agent answered. "
        "Do not include names, IDs, emails, addresses or other personal details."
    ),
)

SENTIMENT: Final = FacetSpec(
    name="Sentiment",
    prompt=(
        "The user's overall sentiment over the whole conversation: positive, neutral, negative, "
        "or mixed (clearly positive at some point and clearly negative at another)."
    ),
    values=("positive", "neutral", "negative", "mixed"),
)

ISSUES: Final = FacetSpec(
    name="Issues",
    prompt=(
        "In one sentence, the problems in this conversation: tool calls that failed or returned "
        "errors, exceptions, the agent misunderstanding or not doing what was asked, the user "
        "complaining. Name the failing tool and the error kind; no names, IDs or personal details. "
        "Answer NONE if nothing went wrong."
    ),
    # small models often answer "No issues." or "N/A" instead of NONE
    no_match_pattern=(
        r"^(NONE|N/?A|no(ne| issues?| problems?| errors?)( (found|reported|detected|occurred))?)\.?$"
    ),
)

BUILTIN_FACETS: Final[tuple[FacetSpec, ...]] = (TASK, SENTIMENT, ISSUES)
"""The default facets, in their default order."""

_BUILTINS_BY_NAME: Final = {f.name: f for f in BUILTIN_FACETS}


def builtin(name: str) -> FacetSpec:
    """The built-in facet called ``name``; KeyError naming the choices otherwise."""
    try:
        return _BUILTINS_BY_NAME[name]
    except KeyError:
        raise KeyError(f"no built-in facet {name!r} (built-ins: {', '.join(_BUILTINS_BY_NAME)})") from None


def spec_from_config(item: Any) -> FacetSpec:
    """A FacetSpec from a config entry (an object with attributes, or a mapping).

    Keys: ``name`` (required), ``prompt``, ``values``, ``max_chars``, ``no_match_pattern``.
    A built-in name takes the built-in's prompt, values, max_chars and no_match_pattern for
    each key not given; any other facet needs a prompt.
    """

    def get(key: str) -> Any:
        if isinstance(item, Mapping):
            return item.get(key)
        return getattr(item, key, None)

    name = get("name")
    if not isinstance(name, str):
        raise ValueError(f"facet entry has no name: {item!r}")
    base = _BUILTINS_BY_NAME.get(name)
    prompt = get("prompt")
    if not prompt:
        if base is None:
            raise ValueError(
                f"facet {name}: a prompt is required (only the built-ins "
                f"{', '.join(_BUILTINS_BY_NAME)} have a default prompt)"
            )
        prompt = base.prompt
    values = get("values")
    if values is None and base is not None:
        values = base.values
    max_chars = get("max_chars")
    if max_chars is None:
        max_chars = base.max_chars if base is not None else 200
    no_match_pattern = get("no_match_pattern")
    if no_match_pattern is None:
        no_match_pattern = base.no_match_pattern if base is not None else "^NONE$"
    return FacetSpec(
        name=name,
        prompt=str(prompt),
        values=tuple(str(v) for v in values) if values is not None else None,
        max_chars=int(max_chars),
        no_match_pattern=str(no_match_pattern) if no_match_pattern else None,
    )


def check_unique(facets: Iterable[FacetSpec]) -> tuple[FacetSpec, ...]:
    """The facets as a tuple; ValueError when empty or a name repeats."""
    specs = tuple(facets)
    if not specs:
        raise ValueError("facets must not be empty")
    seen: set[str] = set()
    for f in specs:
        if f.name in seen:
            raise ValueError(f"facet {f.name!r} is listed twice")
        seen.add(f.name)
    return specs
