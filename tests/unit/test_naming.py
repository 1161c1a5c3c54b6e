"""KeywordNamer, the name/description clean-up, batching, and reading the naming LLM's answer."""

from __future__ import annotations

import pytest

from otel_topics.llm_http import MalformedAnswer, find_json
from otel_topics.naming import (
    ClusterName,
    ClusterSample,
    KeywordNamer,
    LLMNamer,
    Namer,
    batches,
    clean_name,
    clip,
    describe,
    unique_names,
)
from otel_topics.naming_prompt import json_schema, parse_answer, user_prompt

CARD = ClusterSample(
    key="0",
    exemplars=["Where is my new card? It still hasn't arrived after two weeks.", "card not here yet"],
    contrast=["How do I activate my card?"],
    keywords=["card arrival", "arrived", "card", "weeks"],
)


async def test_keyword_namer_reads_keywords_and_medoid() -> None:
    (out,) = await KeywordNamer().name([CARD])
    assert out.name.startswith("Card arrival / arrived")
    assert "Where is my new card?" in out.name
    assert len(out.name) <= 60
    assert out.description.startswith("Mostly about card arrival, arrived and card, e.g. ")
    assert len(out.description) <= 200 and out.description.endswith('".')


def test_keyword_namer_edge_cases() -> None:
    namer = KeywordNamer()
    assert isinstance(namer, Namer)
    out = namer.name_sync(
        [
            ClusterSample("a", exemplars=[], keywords=[]),
            ClusterSample("b", exemplars=["Reset my password"], keywords=[]),
            ClusterSample("c", exemplars=[], keywords=["refund"]),
            ClusterSample("d", exemplars=["word " * 200], keywords=["long " * 30]),
        ]
    )
    assert out[0] == ClusterName("Unnamed topic", "")
    assert out[1].name == "Reset my password" and out[1].description == 'Typical text: "Reset my password".'
    assert out[2].name == "Refund" and out[2].description == "Mostly about refund."
    assert len(out[3].name) <= 60 and len(out[3].description) <= 200
    assert namer.name_sync([]) == []


def test_keyword_names_are_unique() -> None:
    twin = ClusterSample("1", exemplars=list(CARD.exemplars), keywords=list(CARD.keywords))
    first, second = KeywordNamer().name_sync([CARD, twin])
    assert second.name.endswith(" (2)") and len(second.name) <= 60
    assert second.name.removesuffix(" (2)").rstrip("\u2026") in first.name


def test_unique_names_skips_taken_suffixes() -> None:
    names = [ClusterName("Billing"), ClusterName("Billing (2)"), ClusterName("billing")]
    assert [n.name for n in unique_names(names)] == ["Billing", "Billing (2)", "billing (3)"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ('"Track a late card."', "Track a late card"),
        ("  name:   reset   password ", "Reset password"),
        ("**Refund requests**", "Refund requests"),
        ("Wait for it...", "Wait for it..."),
        ("x" * 80, "X" + "x" * 58 + "\u2026"),
    ],
)
def test_clean_name(given: str, expected: str) -> None:
    assert clean_name(given) == expected


def test_clip_cuts_at_a_word_boundary() -> None:
    assert clip("one two three four", 12) == "one two\u2026"
    assert clip("short", 10) == "short"


def test_describe_without_medoid() -> None:
    assert describe(ClusterSample("k", exemplars=[], keywords=["a", "b"])) == "Mostly about a and b."


def test_batches_are_even() -> None:
    assert [len(b) for b in batches(25, 10)] == [9, 8, 8]
    assert [len(b) for b in batches(20, 10)] == [10, 10]
    assert [len(b) for b in batches(1, 10)] == [1]
    assert batches(0, 10) == []
    assert [list(b) for b in batches(5, 2)] == [[0, 1], [2, 3], [4]]


def test_prompt_shows_exemplars_contrast_keywords_and_bounds() -> None:
    long = ClusterSample("x", exemplars=["e" * 500] * 20, contrast=["c"] * 10, keywords=["k"] * 30)
    text = user_prompt([CARD, long], max_exemplars=3, max_contrast=2, max_text_chars=50)
    assert '<cluster index="1">' in text and '<cluster index="2">' in text
    assert "- How do I activate my card?" in text
    assert text.count("- e") == 3 and text.count("- c\n") == 2
    assert max(len(line) for line in text.splitlines()) < 80
    assert text.endswith("Name the 2 clusters above (index 1 to 2). Reply with the JSON object only.")
    schema = json_schema(2)
    assert schema["properties"]["clusters"]["items"]["required"] == ["index", "name", "description"]


@pytest.mark.parametrize(
    "answer",
    [
        '{"clusters": [{"index": 1, "name": "A", "description": "a."}, {"index": 2, "name": "B"}]}',
        '[{"index": "2", "name": "B", "description": ""}, {"index": 1, "name": "A", "description": "a."}]',
        'Names:\n```json\n{"names": [{"index": 1, "name": "A", "description": "a."},'
        ' {"index": "#2", "name": "B"}]}\n```',
        '{"1": {"name": "A", "description": "a."}, "2": {"name": "B"}}',
    ],
)
def test_parse_answer_shapes(answer: str) -> None:
    assert parse_answer(answer, 2) == {0: ("A", "a."), 1: ("B", "")}


def test_parse_answer_drops_bad_entries_and_refuses_nothing_usable() -> None:
    answer = (
        '{"clusters": [{"index": 0, "name": "zero"}, {"index": 3, "name": "out"}, {"index": 1, "name": ""},'
        ' {"index": 2, "name": "B"}, {"index": 2, "name": "again"}, "junk", {"index": true, "name": "t"}]}'
    )
    assert parse_answer(answer, 2) == {1: ("B", "")}
    assert parse_answer('{"name": "Only one", "description": "d."}', 1) == {0: ("Only one", "d.")}
    with pytest.raises(MalformedAnswer, match="no JSON"):
        parse_answer("I cannot name these.", 2)
    with pytest.raises(MalformedAnswer, match="no usable"):
        parse_answer('{"clusters": []}', 2)


def test_find_json_prefers_what_starts_first() -> None:
    assert find_json('x [1, 2] {"a": 1}', arrays=True) == [1, 2]
    assert find_json('{"a": [1]} [2]', arrays=True) == {"a": [1]}
    assert find_json("[1, 2]") is None
    assert find_json('[broken {"a": 1}', arrays=True) == {"a": 1}


def test_llm_namer_constructor_checks() -> None:
    from pydantic import HttpUrl, SecretStr

    namer = LLMNamer(HttpUrl("http://127.0.0.1:9/v1/"), "m", api_key=SecretStr("sk-1"))  # type: ignore[arg-type]
    assert namer.url == "http://127.0.0.1:9/v1/chat/completions"
    assert namer._headers["Authorization"] == "Bearer sk-1"
    assert isinstance(namer, Namer) and isinstance(namer.fallback, KeywordNamer)
    body = namer.request_body([CARD])
    assert body["max_tokens"] == 320 and body["response_format"]["json_schema"]["strict"] is True
    for bad, match in [
        ({"response_format": "xml"}, "response_format"),
        ({"clusters_per_call": 0}, "clusters_per_call"),
        ({"timeout": 0}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"concurrency": 0}, "concurrency"),
        ({"max_tokens": 10}, "max_tokens"),
    ]:
        with pytest.raises(ValueError, match=match):
            LLMNamer("http://h/v1", "m", **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model"):
        LLMNamer("http://h/v1", "")
    with pytest.raises(ValueError, match="base_url"):
        LLMNamer("", "m")
