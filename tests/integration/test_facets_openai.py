"""OpenAIFacetExtractor against a chat-completions server running in the test (aiohttp, 127.0.0.1)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from otel_topics.errors import LLMError
from otel_topics.facets import BUILTIN_FACETS, FacetSpec
from otel_topics.facets.cache import LRUFacetCache
from otel_topics.facets.openai import OpenAIFacetExtractor
from otel_topics.metrics import REGISTRY
from otel_topics.model import NO_MATCH, Conversation, Message
from otel_topics.testing import ChatServer, answer, status

GOOD = {"Task": "Book a one-way flight to Seattle.", "Sentiment": "positive", "Issues": "NONE"}


@pytest.fixture
async def server() -> AsyncIterator[ChatServer]:
    s = await ChatServer(default=answer(GOOD)).start()
    try:
        yield s
    finally:
        await s.stop()


def make(server: ChatServer, **kw: Any) -> OpenAIFacetExtractor:
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_max", 0.05)
    kw.setdefault("timeout", 5.0)
    return OpenAIFacetExtractor(BUILTIN_FACETS, base_url=server.base_url, model="local", **kw)


def conv(text: str = "Hi! I'd like to book a one-way flight from New York to Seattle.") -> Conversation:
    return Conversation(
        trace_id=b"\x01" * 16,
        messages=[
            Message("user", text),
            Message("assistant", "Sure, which date?"),
            Message("user", "May 20th, please. Thanks!"),
        ],
    )


def llm_requests(outcome: str) -> float:
    return REGISTRY.get_sample_value("otel_topics_llm_requests_total", {"outcome": outcome}) or 0.0


async def test_json_schema_request_and_answer(server: ChatServer) -> None:
    async with make(server, api_key="sk-test") as ex:
        out = await ex.extract(conv())
    assert out == {"Task": "Book a one-way flight to Seattle.", "Sentiment": "positive", "Issues": NO_MATCH}
    assert len(server.requests) == 1
    body = server.requests[0]
    assert body["model"] == "local"
    assert body["temperature"] == 0.0
    assert body["max_tokens"] == 1024
    rf = body["response_format"]
    assert rf["type"] == "json_schema"
    assert rf["json_schema"]["name"] == "facets"
    assert rf["json_schema"]["strict"] is True
    schema = rf["json_schema"]["schema"]
    assert schema["required"] == ["Task", "Sentiment", "Issues"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["Task"] == {"type": "string", "maxLength": 200}
    assert schema["properties"]["Issues"]["maxLength"] == 200
    assert schema["properties"]["Sentiment"]["enum"] == ["positive", "neutral", "negative", "mixed", "NONE"]
    system, user = body["messages"]
    assert system["role"] == "system" and "NONE" in system["content"]
    for name in ("Task", "Sentiment", "Issues"):
        assert name in system["content"]
    assert "book a one-way flight from New York to Seattle" in user["content"]
    assert server.headers[0]["Authorization"] == "Bearer sk-test"


async def test_json_object_request(server: ChatServer) -> None:
    spec = FacetSpec("Goal", "What the user wanted.", max_chars=80)
    async with OpenAIFacetExtractor(
        [spec], base_url=server.base_url + "/", model="local", response_format="json_object"
    ) as ex:
        server.default = answer({"Goal": "Fly to Seattle."})
        out = await ex.extract(conv())
    assert out == {"Goal": "Fly to Seattle."}
    rf = server.requests[0]["response_format"]
    assert rf["type"] == "json_object"
    assert rf["schema"]["properties"]["Goal"] == {"type": "string", "maxLength": 80}
    assert rf["schema"]["required"] == ["Goal"]


async def test_no_response_format(server: ChatServer) -> None:
    async with make(server, response_format="none") as ex:
        await ex.extract(conv())
    assert "response_format" not in server.requests[0]


async def test_429_then_success_honours_retry_after(server: ChatServer) -> None:
    server.script = [status(429, "slow down", {"Retry-After": "1"})]
    before = llm_requests("retry")
    async with make(server) as ex:
        start = time.monotonic()
        out = await ex.extract(conv())
        elapsed = time.monotonic() - start
    assert out["Task"] == GOOD["Task"]
    assert len(server.requests) == 2
    assert elapsed >= 0.9, f"Retry-After: 1 not honoured (waited {elapsed:.2f}s)"
    assert llm_requests("retry") == before + 1


async def test_500_then_success(server: ChatServer) -> None:
    server.script = [status(500, "model crashed"), status(503, "loading")]
    async with make(server) as ex:
        out = await ex.extract(conv())
    assert out["Sentiment"] == "positive"
    assert len(server.requests) == 3


async def test_timeout_retries_then_llm_error(server: ChatServer) -> None:
    server.default = answer(GOOD, delay=1.0)
    async with make(server, timeout=0.2, max_retries=2) as ex:
        with pytest.raises(LLMError, match="timed out") as info:
            await ex.extract(conv())
    assert "3 attempt" in str(info.value)
    assert len(server.requests) == 3


async def test_connection_refused_retries_then_llm_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ex = OpenAIFacetExtractor(
        BUILTIN_FACETS, base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=1, backoff_base=0.01
    )
    with pytest.raises(LLMError, match="connection failed"):
        await ex.extract(conv())
    await ex.aclose()


async def test_malformed_json_is_retried_once_then_llm_error(server: ChatServer) -> None:
    server.default = answer("Sure! The user wants to fly to Seattle.")
    async with make(server) as ex:
        with pytest.raises(LLMError, match="malformed"):
            await ex.extract(conv())
    assert len(server.requests) == 2


async def test_malformed_then_valid(server: ChatServer) -> None:
    server.script = [answer('{"Task": "Book a fli')]
    async with make(server) as ex:
        out = await ex.extract(conv())
    assert out["Task"] == GOOD["Task"]
    assert len(server.requests) == 2


async def test_client_error_fails_at_once_with_server_message(server: ChatServer) -> None:
    server.default = status(400, "response_format json_schema is not supported")
    async with make(server) as ex:
        with pytest.raises(LLMError, match="HTTP 400: response_format json_schema is not supported"):
            await ex.extract(conv())
    assert len(server.requests) == 1


async def test_code_fenced_json_accepted(server: ChatServer) -> None:
    fenced = (
        'Here you go:\n```json\n{"Task": "Book a flight.", "Sentiment": "neutral", "Issues": "none"}\n```'
    )
    server.default = answer(fenced)
    async with make(server) as ex:
        out = await ex.extract(conv())
    assert out == {"Task": "Book a flight.", "Sentiment": "neutral", "Issues": NO_MATCH}


async def test_none_and_empty_become_no_match(server: ChatServer) -> None:
    server.default = answer({"Task": "NONE", "Sentiment": "NONE", "Issues": "  "})
    async with make(server) as ex:
        out = await ex.extract(conv())
    assert out == {"Task": NO_MATCH, "Sentiment": NO_MATCH, "Issues": NO_MATCH}


@pytest.mark.parametrize(
    ("given", "expected"),
    [("Positive", "positive"), ("NEGATIVE.", "negative"), (" mixed ", "mixed"), ("happy", NO_MATCH)],
)
async def test_enum_normalization(server: ChatServer, given: str, expected: str) -> None:
    server.default = answer({"Task": "x y", "Sentiment": given, "Issues": "NONE"})
    async with make(server) as ex:
        out = await ex.extract(conv())
    assert out["Sentiment"] == expected


async def test_text_trimmed_to_max_chars_when_server_ignores_max_length(server: ChatServer) -> None:
    server.default = answer({"Task": "word " * 100, "Sentiment": "neutral", "Issues": "NONE"})
    async with make(server) as ex:
        out = await ex.extract(conv())
    assert len(out["Task"]) <= 200 and out["Task"].endswith("…")


async def test_one_call_per_conversation(server: ChatServer) -> None:
    convs = [conv(f"Please translate sentence number {i} into French.") for i in range(5)]
    async with make(server) as ex:
        outs = [await ex.extract(c) for c in convs]
    assert len(server.requests) == 5
    assert all(set(o) == {"Task", "Sentiment", "Issues"} for o in outs)
    for i, body in enumerate(server.requests):
        assert f"sentence number {i} " in body["messages"][1]["content"]


async def test_cache_hit_makes_no_call(server: ChatServer) -> None:
    cache = LRUFacetCache(max_entries=10)
    before = llm_requests("cache_hit")
    async with make(server, cache=cache) as ex:
        first = await ex.extract(conv())
        second = await ex.extract(conv())
        await ex.extract(conv("Something else entirely, about trains."))
    assert first == second
    assert len(server.requests) == 2
    assert len(cache) == 2
    assert llm_requests("cache_hit") == before + 1


async def test_concurrent_identical_conversations_share_one_call(server: ChatServer) -> None:
    server.default = answer(GOOD, delay=0.2)
    before = llm_requests("cache_hit")
    async with make(server, cache=LRUFacetCache(max_entries=10)) as ex:
        outs = await asyncio.gather(*(ex.extract(conv()) for _ in range(5)), ex.extract(conv("Trains?")))
    assert len(server.requests) == 2  # one per distinct conversation, though none was cached yet
    assert all(o == outs[0] for o in outs[:5])
    assert llm_requests("cache_hit") == before + 4


async def test_a_failed_shared_call_fails_every_waiter(server: ChatServer) -> None:
    server.default = status(400, "bad request")
    async with make(server) as ex:
        outs = await asyncio.gather(*(ex.extract(conv()) for _ in range(3)), return_exceptions=True)
    assert len(server.requests) == 1
    assert all(isinstance(o, LLMError) and "bad request" in str(o) for o in outs)


async def test_concurrency_limit_respected(server: ChatServer) -> None:
    server.default = answer(GOOD, delay=0.2)
    async with make(server, concurrency=2) as ex:
        outs = await asyncio.gather(*(ex.extract(conv(f"Request {i} about hotels.")) for i in range(6)))
    assert len(outs) == 6
    assert len(server.requests) == 6
    assert server.max_in_flight == 2
