"""A facet extractor with canned answers, for tests (yours and ours)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

from otel_topics.errors import LLMError
from otel_topics.facets.spec import BUILTIN_FACETS, ISSUES, FacetSpec, check_unique, truncate
from otel_topics.model import NO_MATCH, Conversation

Answers = Mapping[str, str] | Callable[[Conversation], Mapping[str, str]]


class FakeFacetExtractor:
    """Implements :class:`otel_topics.stages.FacetExtractor` without any model.

    ``answers`` is a mapping (the same answer for every conversation) or a function of the
    conversation; answers are normalized like an LLM's (``NONE`` -> ``no_match``, enum values
    matched case-insensitively) and missing facets are ``no_match``. Without ``answers``: enum
    facets get their first value, ``Issues`` is ``no_match`` and other text facets get the
    first user message (or ``no_match``).
    ``fail_times`` makes the first N calls raise LLMError (to test retry paths); ``delay``
    sleeps before answering. Every conversation seen is appended to ``calls``.
    """

    name = "fake"

    def __init__(
        self,
        facets: Sequence[FacetSpec] = BUILTIN_FACETS,
        *,
        answers: Answers | None = None,
        fail_times: int = 0,
        delay: float = 0.0,
    ) -> None:
        self.facets = check_unique(facets)
        self.answers = answers
        self.fail_times = fail_times
        self.delay = delay
        self.calls: list[Conversation] = []

    async def extract(self, conversation: Conversation) -> dict[str, str]:
        self.calls.append(conversation)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_times > 0:
            self.fail_times -= 1
            raise LLMError("fake facet extractor: failing as configured (fail_times)")
        if self.answers is None:
            raw: Mapping[str, str] = self._default(conversation)
        elif callable(self.answers):
            raw = self.answers(conversation)
        else:
            raw = self.answers
        return {f.name: f.normalize(raw[f.name]) if f.name in raw else NO_MATCH for f in self.facets}

    def _default(self, conversation: Conversation) -> dict[str, str]:
        if conversation.texts is not None:
            users = [t for t in conversation.texts if t.strip()]
        else:
            users = [m.content for m in conversation.messages if m.role == "user" and m.content.strip()]
        out: dict[str, str] = {}
        for f in self.facets:
            if f.values is not None:
                out[f.name] = f.values[0]
            elif f.name == ISSUES.name:
                out[f.name] = NO_MATCH  # nothing went wrong
            else:
                out[f.name] = truncate(users[0], f.max_chars) if users else NO_MATCH
        return out
