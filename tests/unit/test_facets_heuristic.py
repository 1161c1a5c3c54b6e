"""HeuristicFacetExtractor on real τ-bench trajectories and on handcrafted conversations."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from otel_topics.facets import BUILTIN_FACETS, TASK, FacetSpec
from otel_topics.facets.heuristic import HeuristicFacetExtractor
from otel_topics.model import NO_MATCH, Conversation, Message, ToolCall

SENTIMENTS = {"positive", "neutral", "negative", "mixed"}
# words with which a τ-bench user voices discontent; a trajectory with none of them and no tool
# error has nothing for Issues to report
COMPLAINT_WORDS = ("frustrat", "upset", "unhappy", "mistake", "wrong", "confus", "problem", "unacceptable")


def to_conversation(traj: list[dict[str, Any]]) -> Conversation:
    messages = []
    for m in traj:
        content = m.get("content") or ""
        calls = tuple(
            ToolCall(c["function"]["name"], c["function"].get("arguments", ""))
            for c in m.get("tool_calls") or ()
        )
        is_error = m["role"] == "tool" and content.startswith("Error:")
        messages.append(Message(m["role"], content, name=m.get("name"), tool_calls=calls, is_error=is_error))
    return Conversation(trace_id=b"\x02" * 16, messages=messages)


@pytest.fixture(scope="module")
def tau(shared_data: Path) -> list[dict[str, Any]]:
    path = shared_data / "agent_trajectories" / "tau_bench" / "gpt-4o-airline.json"
    if not path.is_file():
        pytest.skip(f"τ-bench trajectories not found at {path}")
    data: list[dict[str, Any]] = json.loads(path.read_text())
    return data


@pytest.fixture(scope="module")
def extractor() -> HeuristicFacetExtractor:
    return HeuristicFacetExtractor()


@pytest.fixture(scope="module")
def results(tau: list[dict[str, Any]], extractor: HeuristicFacetExtractor) -> list[dict[str, str]]:
    return [extractor.extract_sync(to_conversation(t["traj"])) for t in tau]


def user_texts(traj: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in traj if m["role"] == "user" and m.get("content")]


def failing_tools(traj: list[dict[str, Any]]) -> list[str]:
    return [m["name"] for m in traj if m["role"] == "tool" and (m.get("content") or "").startswith("Error:")]


# ---------------------------------------------------------------------------- real data


def test_every_facet_present(results: list[dict[str, str]]) -> None:
    assert all(list(r) == ["Task", "Sentiment", "Issues"] for r in results)


def test_task_never_empty_when_a_user_spoke(tau: list[dict[str, Any]], results: list[dict[str, str]]) -> None:
    for t, r in zip(tau, results, strict=True):
        assert user_texts(t["traj"])
        task = r["Task"]
        assert task and task != NO_MATCH, t["traj"][1]["content"]
        assert len(task) <= TASK.max_chars
        assert not task.lower().startswith(("hi", "hello", "hey", "bonjour")), task
        assert "###STOP###" not in task


def test_task_is_the_request_without_greeting(
    tau: list[dict[str, Any]], results: list[dict[str, str]]
) -> None:
    by_first = {user_texts(t["traj"])[0]: r["Task"] for t, r in zip(tau, results, strict=True)}
    first = "Hi! I'm looking to book a flight from New York to Seattle on May 20th."
    assert by_first[first] == "Book a flight from New York to Seattle on May 20th."
    assert by_first["Hi, I need to cancel my flight."] == "Cancel my flight."


def test_issues_name_the_failing_tool(tau: list[dict[str, Any]], results: list[dict[str, str]]) -> None:
    with_errors = [(t, r) for t, r in zip(tau, results, strict=True) if failing_tools(t["traj"])]
    assert len(with_errors) == 36
    for t, r in with_errors:
        issues = r["Issues"]
        assert issues != NO_MATCH
        assert failing_tools(t["traj"])[0] in issues, issues
        assert issues.startswith("Tool ")
        assert len(issues) <= 200


def test_issues_no_match_when_nothing_failed_and_no_complaint(
    tau: list[dict[str, Any]], results: list[dict[str, str]]
) -> None:
    calm = [
        r
        for t, r in zip(tau, results, strict=True)
        if not failing_tools(t["traj"])
        and not any(w in u.lower() for u in user_texts(t["traj"]) for w in COMPLAINT_WORDS)
    ]
    assert len(calm) > 100
    assert all(r["Issues"] == NO_MATCH for r in calm), [r["Issues"] for r in calm if r["Issues"] != NO_MATCH]


def test_complaints_reach_issues(tau: list[dict[str, Any]], results: list[dict[str, str]]) -> None:
    upset = [
        r
        for t, r in zip(tau, results, strict=True)
        if any("really upset" in u or "really frustrated" in u for u in user_texts(t["traj"]))
    ]
    assert upset
    for r in upset:
        assert "complained" in r["Issues"], r["Issues"]
        assert r["Sentiment"] in ("negative", "mixed")


def test_sentiment_in_allowed_set(results: list[dict[str, str]]) -> None:
    values = [r["Sentiment"] for r in results]
    assert set(values) <= SENTIMENTS
    assert len(set(values)) >= 3  # the 200 conversations are not all alike


def test_fast_enough(tau: list[dict[str, Any]], extractor: HeuristicFacetExtractor) -> None:
    long = [to_conversation(t["traj"]) for t in tau if len(t["traj"]) >= 30][:20]
    assert long
    timings = []
    for c in long:
        start = time.perf_counter()
        extractor.extract_sync(c)
        timings.append(time.perf_counter() - start)
    # target: < 5 ms per 30-message trace; the bound is loose for a loaded, shared CI machine
    assert statistics.median(timings) < 0.025


# ---------------------------------------------------------------------------- handcrafted


def conv(*turns: tuple[str, str]) -> Conversation:
    return Conversation(b"\x03" * 16, [Message(role, text) for role, text in turns])  # type: ignore[arg-type]


async def test_no_user_message_is_no_match(extractor: HeuristicFacetExtractor) -> None:
    out = await extractor.extract(conv(("system", "You are helpful."), ("assistant", "Hello!")))
    assert out == {"Task": NO_MATCH, "Sentiment": NO_MATCH, "Issues": NO_MATCH}
    empty = await extractor.extract(Conversation(b"\x03" * 16, []))
    assert empty == {"Task": NO_MATCH, "Sentiment": NO_MATCH, "Issues": NO_MATCH}


async def test_greeting_only_first_message_uses_the_next(extractor: HeuristicFacetExtractor) -> None:
    out = await extractor.extract(
        conv(
            ("user", "hello there"),
            ("assistant", "Hi! How can I help?"),
            ("user", "Could you write a Python function that parses ISO dates?"),
        )
    )
    assert out["Task"] == "Write a Python function that parses ISO dates."
    assert out["Issues"] == NO_MATCH


async def test_vague_request_takes_the_detail(extractor: HeuristicFacetExtractor) -> None:
    out = await extractor.extract(
        conv(
            (
                "user",
                "Hi! I need some help with my order. I want to return the blue jacket I bought last week.",
            )
        )
    )
    assert out["Task"] == "Return the blue jacket I bought last week."
    out = await extractor.extract(
        conv(
            ("user", "Hello! I need to make some changes to my upcoming trip."),
            ("assistant", "Sure, what would you like to change?"),
            ("user", "My user ID is ab_123. I want to upgrade both passengers to business class."),
        )
    )
    assert out["Task"] == "Make some changes to my upcoming trip; upgrade both passengers to business class."


async def test_long_request_cut_at_a_word_boundary(extractor: HeuristicFacetExtractor) -> None:
    text = "Please summarize " + " ".join(f"paragraph{i}" for i in range(100))
    out = await extractor.extract(conv(("user", text)))
    task = out["Task"]
    assert len(task) <= 200 and task.endswith("…")
    assert task[:-1].split()[-1].startswith("paragraph")
    short = HeuristicFacetExtractor([FacetSpec("Task", "what", max_chars=40)])
    assert len((await short.extract(conv(("user", text))))["Task"]) <= 40


async def test_tool_errors_and_exceptions(extractor: HeuristicFacetExtractor) -> None:
    c = Conversation(
        b"\x04" * 16,
        [
            Message("user", "Book me a table for two tonight."),
            Message("assistant", "", tool_calls=(ToolCall("book_table", '{"n": 2}'),)),
            Message("tool", "Error: restaurant is fully booked", name="book_table", is_error=True),
            Message("tool", "no availability", name="search_slots", is_error=True),
            Message("tool", "Error: restaurant is fully booked", name="book_table"),
            Message("error", "TimeoutError: upstream took too long", name="chat gpt-4o"),
        ],
    )
    issues = (await extractor.extract(c))["Issues"]
    assert issues.startswith("Tool book_table failed 2 times: restaurant is fully booked")
    assert "search_slots failed: no availability" in issues
    assert "error in chat gpt-4o: TimeoutError" in issues


async def test_user_complaint(extractor: HeuristicFacetExtractor) -> None:
    out = await extractor.extract(
        conv(
            ("user", "Write a haiku about autumn."),
            ("assistant", "Leaves fall."),
            ("user", "That's not what I asked, it doesn't even have three lines. This is useless!"),
        )
    )
    assert out["Issues"].startswith("User complained: \"That's not what I asked")
    assert out["Sentiment"] == "negative"


async def test_sentiment_classes(extractor: HeuristicFacetExtractor) -> None:
    happy = await extractor.extract(conv(("user", "This is wonderful, thank you so much! I love it.")))
    plain = await extractor.extract(conv(("user", "Convert 5 miles to kilometers.")))
    mixed = await extractor.extract(
        conv(
            ("user", "Great, I love the first draft!"), ("user", "But the second one is terrible and wrong.")
        )
    )
    assert (happy["Sentiment"], plain["Sentiment"], mixed["Sentiment"]) == ("positive", "neutral", "mixed")


async def test_texts_from_a_custom_preprocessor(extractor: HeuristicFacetExtractor) -> None:
    c = Conversation(b"\x05" * 16, [], texts=["Summarize this article about rail policy in Europe."])
    out = await extractor.extract(c)
    assert out["Task"] == "Summarize this article about rail policy in Europe."
    assert out["Issues"] == NO_MATCH


@pytest.mark.parametrize(
    "text",
    [
        "Please.",
        "?",
        "...!",
        "ok",
        "Hi!!!",
        "😀",
        "My user ID is x_1.",
        "can you help me with that?",
        "x" * 5000,
    ],
)
def test_task_never_empty_on_odd_input(extractor: HeuristicFacetExtractor, text: str) -> None:
    out = extractor.extract_sync(conv(("user", text), ("assistant", "OK."), ("user", "Please.")))
    assert out["Task"] and out["Task"] != NO_MATCH and len(out["Task"]) <= 200
    assert out["Sentiment"] in SENTIMENTS


def test_refuses_facets_it_cannot_serve() -> None:
    with pytest.raises(ValueError, match="Topic, Language"):
        HeuristicFacetExtractor([*BUILTIN_FACETS, FacetSpec("Topic", "t"), FacetSpec("Language", "l")])
    with pytest.raises(ValueError, match="Sentiment"):
        HeuristicFacetExtractor([FacetSpec("Sentiment", "s", values=("good", "bad"))])


async def test_serves_a_subset_in_the_given_order() -> None:
    ex = HeuristicFacetExtractor([BUILTIN_FACETS[2], BUILTIN_FACETS[0]])
    out = await ex.extract(conv(("user", "Translate 'cat' into German.")))
    assert list(out) == ["Issues", "Task"]


def test_phrase_indexed_vader_scores_like_the_base_class(tau: list[dict[str, Any]]) -> None:
    from vader import SentimentIntensityAnalyzer

    from otel_topics.facets.heuristic import _NEUTRAL_WORDS, _vader

    base = SentimentIntensityAnalyzer(extra_lexicon=dict.fromkeys(_NEUTRAL_WORDS, 0.0))
    texts = [m["content"] for t in tau for m in t["traj"] if m["role"] == "user" and m.get("content")]
    texts += [
        "I can't stand this, I'm fed up: you screwed up my booking",
        "that cut the mustard, you have the upper hand, break a leg",
        "we are in the red, I am fed up and can't stand it, not in the black",
        "fed up fed up can't stand",
        "( '}{' ) kiss of death",
    ]
    assert len(texts) > 1000
    for text in texts:
        assert _vader().polarity_scores(text) == base.polarity_scores(text), text
