"""LLMNamer against a chat-completions server running in the test (aiohttp, 127.0.0.1, real sockets)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from otel_topics.naming import ClusterName, ClusterSample, KeywordNamer, LLMNamer
from otel_topics.testing import Behavior, ChatServer, completion, status

_BLOCK = re.compile(r'<cluster index="(\d+)">\n(?:Keywords: ([^\n]*)\n)?', re.MULTILINE)


def clusters_in(body: dict[str, Any]) -> list[tuple[int, str]]:
    """(index, first keyword) of every cluster the request shows."""
    user = body["messages"][1]["content"]
    return [(int(m.group(1)), (m.group(2) or "").split(", ")[0]) for m in _BLOCK.finditer(user)]


def names_for(body: dict[str, Any], skip: Callable[[str], bool] = lambda _kw: False) -> dict[str, Any]:
    return {
        "clusters": [
            {"index": i, "name": f"Ask about {kw}", "description": f"Questions about {kw}."}
            for i, kw in clusters_in(body)
            if not skip(kw)
        ]
    }


async def good(body: dict[str, Any]) -> web.StreamResponse:
    return completion(json.dumps(names_for(body)))


def text(content: str) -> Behavior:
    async def behave(body: dict[str, Any]) -> web.StreamResponse:
        return completion(content)

    return behave


@pytest.fixture
async def server() -> AsyncIterator[ChatServer]:
    s = await ChatServer(default=good).start()
    try:
        yield s
    finally:
        await s.stop()


def make(server: ChatServer, **kw: Any) -> LLMNamer:
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_max", 0.05)
    kw.setdefault("timeout", 5.0)
    return LLMNamer(server.base_url, "local", **kw)


def samples(n: int) -> list[ClusterSample]:
    return [
        ClusterSample(
            key=str(k),
            exemplars=[f"How do I do thing{k}?", f"Help with thing{k} please", f"thing{k} is broken"],
            contrast=[f"Question about thing{k + 1}", f"Problem with thing{k - 1}"],
            keywords=[f"thing{k}", "help"],
        )
        for k in range(n)
    ]


def keyword_names(items: list[ClusterSample]) -> list[ClusterName]:
    return KeywordNamer().name_sync(items)


async def test_one_call_names_ten_clusters(server: ChatServer) -> None:
    async with make(server, api_key="sk-test") as namer:
        out = await namer.name(samples(10))
    assert len(server.requests) == 1
    assert [n.name for n in out] == [f"Ask about thing{k}" for k in range(10)]
    assert out[3].description == "Questions about thing3."
    body = server.requests[0]
    assert body["model"] == "local" and body["temperature"] == 0.0
    rf = body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["name"] == "cluster_names"
    schema = rf["json_schema"]["schema"]
    array = schema["properties"]["clusters"]
    assert array["minItems"] == array["maxItems"] == 10
    assert array["items"]["properties"]["name"] == {"type": "string", "maxLength": 60}
    assert array["items"]["properties"]["description"]["maxLength"] == 200
    system, user = body["messages"]
    assert "personal details" in system["content"] and "at most 60 characters" in system["content"]
    # every cluster shows its exemplars, the nearby texts outside it and its keywords
    assert "How do I do thing7?" in user["content"]
    assert "Nearby texts NOT in this cluster:\n- Question about thing8" in user["content"]
    assert "Keywords: thing7, help" in user["content"]
    assert server.headers[0]["Authorization"] == "Bearer sk-test"


async def test_twenty_five_clusters_take_three_calls(server: ChatServer) -> None:
    async with make(server) as namer:
        out = await namer.name(samples(25))
    assert len(server.requests) == 3
    assert sorted(len(clusters_in(b)) for b in server.requests) == [8, 8, 9]
    assert [n.name for n in out] == [f"Ask about thing{k}" for k in range(25)]


async def test_batches_run_concurrently_when_allowed(server: ChatServer) -> None:
    async def slow(body: dict[str, Any]) -> web.StreamResponse:
        await asyncio.sleep(0.3)
        return await good(body)

    server.default = slow
    async with make(server, clusters_per_call=2, concurrency=3) as namer:
        start = time.monotonic()
        out = await namer.name(samples(6))
        elapsed = time.monotonic() - start
    assert len(server.requests) == 3 and len(out) == 6
    assert elapsed < 0.8, f"three calls of 0.3s took {elapsed:.2f}s with concurrency 3"


async def test_json_object_variant(server: ChatServer) -> None:
    async with make(server, response_format="json_object") as namer:
        out = await namer.name(samples(3))
    rf = server.requests[0]["response_format"]
    assert rf["type"] == "json_object"
    assert rf["schema"]["properties"]["clusters"]["maxItems"] == 3
    assert out[0].name == "Ask about thing0"


async def test_no_response_format_and_code_fenced_bare_array(server: ChatServer) -> None:
    fenced = (
        "Here are the names:\n```json\n"
        '[{"index": 2, "name": "\\"Renew a passport.\\"", "description": "  Passport   renewals. "},'
        ' {"index": "1", "name": "book a table", "description": "Restaurant bookings."}]\n```'
    )
    server.default = text(fenced)
    async with make(server, response_format="none") as namer:
        out = await namer.name(samples(2))
    assert "response_format" not in server.requests[0]
    assert out == [
        ClusterName("Book a table", "Restaurant bookings."),
        ClusterName("Renew a passport", "Passport renewals."),
    ]


async def test_malformed_answer_falls_back_to_keyword_names(server: ChatServer) -> None:
    server.default = text("Sure! The first cluster is about things.")
    items = samples(4)
    async with make(server) as namer:
        out = await namer.name(items)
    assert len(server.requests) == 2  # asked again once
    assert out == keyword_names(items)


async def test_malformed_then_valid(server: ChatServer) -> None:
    server.script = [text('{"clusters": [{"index": 1, "name": "Ask ab')]
    async with make(server) as namer:
        out = await namer.name(samples(2))
    assert len(server.requests) == 2
    assert out[1].name == "Ask about thing1"


async def test_429_then_success_honours_retry_after(server: ChatServer) -> None:
    server.script = [status(429, "slow down", {"Retry-After": "1"})]
    async with make(server) as namer:
        start = time.monotonic()
        out = await namer.name(samples(3))
        elapsed = time.monotonic() - start
    assert len(server.requests) == 2
    assert elapsed >= 0.9, f"Retry-After: 1 not honoured (waited {elapsed:.2f}s)"
    assert out[2].name == "Ask about thing2"


async def test_5xx_until_retries_run_out_falls_back(server: ChatServer) -> None:
    server.default = status(503, "loading model")
    items = samples(12)
    async with make(server, max_retries=2, clusters_per_call=6) as namer:
        out = await namer.name(items)
    assert len(server.requests) == 6  # two batches, three attempts each
    assert out == keyword_names(items)


async def test_client_error_is_not_retried_and_falls_back(server: ChatServer) -> None:
    server.default = status(400, "response_format json_schema is not supported")
    items = samples(2)
    async with make(server) as namer:
        out = await namer.name(items)
    assert len(server.requests) == 1
    assert out == keyword_names(items)


async def test_timeout_falls_back(server: ChatServer) -> None:
    async def slow(body: dict[str, Any]) -> web.StreamResponse:
        await asyncio.sleep(1.0)
        return await good(body)

    server.default = slow
    items = samples(2)
    async with make(server, timeout=0.2, max_retries=1) as namer:
        out = await namer.name(items)
    assert len(server.requests) == 2
    assert out == keyword_names(items)


async def test_missing_indexes_are_asked_again_then_fall_back(server: ChatServer) -> None:
    async def forgetful(body: dict[str, Any]) -> web.StreamResponse:
        return completion(json.dumps(names_for(body, skip=lambda kw: kw in {"thing2", "thing5"})))

    server.default = forgetful
    items = samples(8)
    async with make(server) as namer:
        out = await namer.name(items)
    # the batch, then only the missing two; that answer names none, so it counts as malformed: once more
    assert len(server.requests) == 3
    assert [kw for _, kw in clusters_in(server.requests[1])] == ["thing2", "thing5"]
    fallback = keyword_names([items[2], items[5]])
    assert out[2] == fallback[0] and out[5] == fallback[1]
    assert out[0].name == "Ask about thing0" and out[7].name == "Ask about thing7"


async def test_missing_index_named_on_the_second_ask(server: ChatServer) -> None:
    async def once_forgetful(body: dict[str, Any]) -> web.StreamResponse:
        skip = len(server.requests) == 1
        return completion(json.dumps(names_for(body, skip=lambda kw: skip and kw == "thing1")))

    server.default = once_forgetful
    async with make(server) as namer:
        out = await namer.name(samples(3))
    assert len(server.requests) == 2
    assert [n.name for n in out] == ["Ask about thing0", "Ask about thing1", "Ask about thing2"]


async def test_duplicate_and_overlong_names_are_cleaned(server: ChatServer) -> None:
    answer = {
        "clusters": [
            {"index": 1, "name": "Card problems", "description": "x " * 150},
            {"index": 2, "name": "card problems", "description": "Other card problems."},
            {"index": 3, "name": "Questions about " + "very " * 20 + "long things", "description": ""},
        ]
    }
    server.default = text(json.dumps(answer))
    async with make(server) as namer:
        out = await namer.name(samples(3))
    assert out[0].name == "Card problems" and out[1].name == "Card problems (2)"
    assert len(out[0].description) <= 200
    assert len(out[2].name) <= 60 and out[2].name.endswith("\u2026")


async def test_connection_refused_falls_back() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    items = samples(2)
    namer = LLMNamer(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff_base=0.01)
    try:
        assert await namer.name(items) == keyword_names(items)
    finally:
        await namer.aclose()
