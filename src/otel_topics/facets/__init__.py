"""The facets stage: conversation -> one value per facet (text, a category, or ``no_match``).

Extractors (each implements :class:`otel_topics.stages.FacetExtractor`):

- :class:`~otel_topics.facets.heuristic.HeuristicFacetExtractor`: the default; rules and VADER, no model.
- :class:`~otel_topics.facets.openai.OpenAIFacetExtractor`: one chat call per trace to any
  OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama...).
- :class:`~otel_topics.facets.llama.LlamaCppFacetExtractor`: a GGUF model in-process
  (``pip install 'otel-topics[llama]'``).
- :class:`~otel_topics.facets.fake.FakeFacetExtractor`: canned answers, for tests.
"""

from __future__ import annotations

from otel_topics.facets.spec import (
    BUILTIN_FACETS,
    ISSUES,
    SENTIMENT,
    TASK,
    FacetSpec,
    builtin,
    spec_from_config,
    truncate,
)

__all__ = [
    "BUILTIN_FACETS",
    "ISSUES",
    "SENTIMENT",
    "TASK",
    "FacetSpec",
    "builtin",
    "spec_from_config",
    "truncate",
]
