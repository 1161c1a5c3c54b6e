"""FacetSpec, answer parsing, prompt/schema building, caches, the fake and the llama guard."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

from otel_topics.errors import LLMError
from otel_topics.facets import (
    BUILTIN_FACETS,
    ISSUES,
    SENTIMENT,
    TASK,
    FacetSpec,
    prompt,
    spec_from_config,
    truncate,
)
from otel_topics.facets.cache import LRUFacetCache
from otel_topics.facets.fake import FakeFacetExtractor
from otel_topics.model import NO_MATCH, Conversation, Message


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="not an identifier"):
        FacetSpec("my.facet", "p")
    with pytest.raises(ValueError, match="prompt"):
        FacetSpec("Task2", " ")
    with pytest.raises(ValueError, match="unique"):
        FacetSpec("Mood", "p", values=("good", "Good"))
    with pytest.raises(ValueError, match="no_match_pattern"):
        FacetSpec("Mood", "p", no_match_pattern="(")
    assert FacetSpec("Mood", "p", values=["a", "b"]).values == ("a", "b")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [None, "", "  ", "NONE", "none", " None ", "no_match", {"a": 1}])
def test_normalize_no_match(value: object) -> None:
    assert TASK.normalize(value) == NO_MATCH
    assert SENTIMENT.normalize(value) == NO_MATCH


def test_normalize_text_and_enum() -> None:
    assert TASK.normalize("  Book   a\nflight. ") == "Book a flight."
    assert TASK.normalize(["a", "b"]) == "a; b"
    assert SENTIMENT.normalize("Negative - the user was angry") == "negative"
    assert SENTIMENT.normalize("somewhat positive") == NO_MATCH
    assert FacetSpec("T", "p", no_match_pattern=None).normalize("NONE") == "NONE"
    long = TASK.normalize("word " * 100)
    assert len(long) <= 200 and long.endswith("…") and not long.endswith(" …")


def test_truncate() -> None:
    assert truncate("short", 10) == "short"
    assert truncate("alpha beta gamma delta", 15) == "alpha beta…"
    assert len(truncate("x" * 50, 10)) == 10


def test_spec_from_config() -> None:
    assert spec_from_config({"name": "Task"}) == TASK
    assert spec_from_config(SimpleNamespace(name="Sentiment", prompt=None, values=None)) == SENTIMENT
    custom = spec_from_config({"name": "Issues", "max_chars": 120})
    assert custom.prompt == ISSUES.prompt and custom.max_chars == 120
    lang = spec_from_config({"name": "Language", "prompt": "The user's language.", "values": ["en", "fr"]})
    assert lang.values == ("en", "fr") and lang.no_match_pattern == "^NONE$"
    with pytest.raises(ValueError, match="Language: a prompt is required"):
        spec_from_config({"name": "Language"})


FACETS = list(BUILTIN_FACETS)


@pytest.mark.parametrize(
    "text",
    [
        '{"Task": "Book a flight.", "Sentiment": "neutral", "Issues": "NONE"}',
        '```json\n{"Task": "Book a flight.", "Sentiment": "Neutral", "Issues": "none"}\n```',
        'Sure! {"task": "Book a flight.", "sentiment": "neutral"} hope that helps {"x": 1}',
        '{"facets": {"Task": "Book a flight.", "Sentiment": "neutral", "Issues": ""}}',
        'text {not json} {"Task": "Book a flight.", "Sentiment": "neutral", "Issues": null}',
    ],
)
def test_parse_answer(text: str) -> None:
    assert prompt.parse_answer(text, FACETS) == {
        "Task": "Book a flight.",
        "Sentiment": "neutral",
        "Issues": NO_MATCH,
    }


@pytest.mark.parametrize("text", ["no json here", '{"unrelated": 1}', '["Task"]', '{"Task": "Book a fli'])
def test_parse_answer_malformed(text: str) -> None:
    with pytest.raises(prompt.MalformedAnswer):
        prompt.parse_answer(text, FACETS)


def test_prompt_and_schema() -> None:
    free = FacetSpec("Note", "Anything notable.", no_match_pattern=None, max_chars=60)
    system = prompt.system_prompt([TASK, free])
    assert '"Task", "Note"' in system
    assert "- Task: " in system and '"NONE" if it does not apply' in system
    note_line = next(line for line in system.splitlines() if line.startswith("- Note:"))
    assert "NONE" not in note_line and "60 characters" in note_line
    schema = prompt.json_schema([free, SENTIMENT])
    assert schema["properties"]["Note"] == {"type": "string", "maxLength": 60}
    assert schema["properties"]["Sentiment"]["enum"][-1] == "NONE"
    assert prompt.json_schema([free], max_length=False)["properties"]["Note"] == {"type": "string"}


def test_render_cuts_the_middle() -> None:
    c = Conversation(b"\x01" * 16, [Message("user", "a" * 3000), Message("assistant", "z" * 3000)])
    text = prompt.render(c, 1500)
    assert text.startswith("user: aaa") and text.endswith("zzz")
    assert "characters omitted" in text and len(text) < 1600
    assert prompt.render(c) == c.render()


def test_cache_key() -> None:
    k = prompt.cache_key("m", FACETS, "conv")
    assert k == prompt.cache_key("m", FACETS, "conv")
    assert k != prompt.cache_key("m2", FACETS, "conv")
    assert k != prompt.cache_key("m", FACETS, "conv2")
    assert k != prompt.cache_key("m", [TASK, FacetSpec("Sentiment", "other")], "conv")


def test_lru_cache() -> None:
    cache = LRUFacetCache(max_entries=2)
    cache.put("a", {"Task": "1"})
    cache.put("b", {"Task": "2"})
    assert cache.get("a") == {"Task": "1"}  # a is now the most recent
    cache.put("c", {"Task": "3"})
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 2
    got = cache.get("a")
    assert got is not None
    got["Task"] = "changed"
    assert cache.get("a") == {"Task": "1"}
    with pytest.raises(ValueError, match="max_entries"):
        LRUFacetCache(0)


def conv(text: str = "Plan a trip to Lisbon.") -> Conversation:
    return Conversation(b"\x01" * 16, [Message("user", text), Message("assistant", "Sure.")])


async def test_fake_extractor() -> None:
    fake = FakeFacetExtractor()
    assert await fake.extract(conv()) == {
        "Task": "Plan a trip to Lisbon.",
        "Sentiment": "positive",
        "Issues": NO_MATCH,
    }
    fixed = FakeFacetExtractor(answers={"Task": "Travel", "Sentiment": "NEGATIVE", "Issues": "NONE"})
    assert await fixed.extract(conv()) == {"Task": "Travel", "Sentiment": "negative", "Issues": NO_MATCH}
    fn = FakeFacetExtractor([TASK], answers=lambda c: {"Task": c.messages[0].content.upper()})
    assert await fn.extract(conv("abc")) == {"Task": "ABC"}
    flaky = FakeFacetExtractor(fail_times=1, answers={})
    with pytest.raises(LLMError):
        await flaky.extract(conv())
    assert await flaky.extract(conv()) == {"Task": NO_MATCH, "Sentiment": NO_MATCH, "Issues": NO_MATCH}
    assert len(flaky.calls) == 2


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is not None, reason="llama-cpp-python is installed")
def test_llama_backend_says_how_to_install(tmp_path: Path) -> None:
    from otel_topics.facets.llama import LlamaCppFacetExtractor

    with pytest.raises(ImportError, match=r"pip install 'otel-topics\[llama\]'"):
        LlamaCppFacetExtractor(FACETS, model_path=tmp_path / "m.gguf")


def test_openai_constructor() -> None:
    from pydantic import HttpUrl, SecretStr

    from otel_topics.facets.openai import OpenAIFacetExtractor

    ex = OpenAIFacetExtractor(
        FACETS,
        base_url=HttpUrl("http://127.0.0.1:9/v1/"),  # type: ignore[arg-type]
        model="m",
        api_key=SecretStr("sk-1"),  # type: ignore[arg-type]
    )
    assert ex.url == "http://127.0.0.1:9/v1/chat/completions"
    assert ex.request_body("x")["messages"][1]["content"].startswith("<conversation>\nx\n")
    full = OpenAIFacetExtractor(FACETS, base_url="http://h/v1/chat/completions", model="m")
    assert full.url == "http://h/v1/chat/completions"
    for bad, match in [
        ({"response_format": "xml"}, "response_format"),
        ({"concurrency": 0}, "concurrency"),
        ({"timeout": 0}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
    ]:
        with pytest.raises(ValueError, match=match):
            OpenAIFacetExtractor(FACETS, base_url="http://h/v1", model="m", **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="listed twice"):
        OpenAIFacetExtractor([TASK, TASK], base_url="http://h/v1", model="m")
