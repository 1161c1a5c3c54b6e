"""Embedders: the real local model, the OpenAI-compatible client against a real loopback HTTP
server, the hash fake and the cache."""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from otel_topics import metrics
from otel_topics.embed import (
    MODEL_DIMENSION,
    MODEL_ID,
    CachedEmbedder,
    HashEmbedder,
    LocalEmbedder,
    OpenAIEmbedder,
    plan_batches,
)
from otel_topics.errors import EmbedderError

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BANKING77_TEST = DATA / "intent" / "banking77" / "test.csv"


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- LocalEmbedder (real model) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def local() -> Iterator[LocalEmbedder]:
    embedder = LocalEmbedder(batch_size=4)
    embedder.load()
    yield embedder
    embedder.close()


def test_local_shape_norm_and_identity(local: LocalEmbedder) -> None:
    texts = ["How do I locate my card?", "The weather is sunny today.", "How do I locate my card?"]
    v = local.embed_sync(texts)
    assert local.name == MODEL_ID
    assert local.dimension == MODEL_DIMENSION == 384
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(v[0], v[2])


def test_local_paraphrase_closer_than_unrelated(local: LocalEmbedder) -> None:
    pairs = [
        ("How do I reset my password?", "I forgot my password, how can I change it?", "Best pizza in Naples"),
        ("My card payment was declined", "Why was my card refused at the shop?", "How tall is Everest?"),
        ("Cancel my flight to Paris", "I want to cancel the Paris flight booking", "Write a poem about cats"),
    ]
    for a, para, other in pairs:
        va, vp, vo = local.embed_sync([a, para, other])
        assert cos(va, vp) > cos(va, vo) + 0.3, (a, cos(va, vp), cos(va, vo))


def test_local_batch_matches_single_and_order_is_restored(local: LocalEmbedder) -> None:
    # lengths deliberately unsorted, more texts than one batch (batch_size=4)
    texts = [
        "A much longer sentence about transferring money between two accounts in different countries.",
        "Hi",
        "Where is my new card?",
        "Exchange rate",
        "I was charged twice for the same purchase at a grocery store yesterday evening, please help.",
        "Top up failed",
        "Can I change my PIN at an ATM or only in the app?",
        "ok",
        "Refund not showing up on my statement",
    ]
    batch = local.embed_sync(texts)
    singles = np.vstack([local.embed_sync([t]) for t in texts])
    sims = batch @ singles.T
    assert (np.diag(sims) > 0.999).all(), np.diag(sims)
    assert (sims.argmax(axis=1) == np.arange(len(texts))).all()


async def test_local_async_empty_and_event_loop_free(local: LocalEmbedder) -> None:
    empty = await local.embed([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    v = await local.embed(["Where is my card?"] * 16 + ["I lost my card"] * 16)
    task.cancel()
    assert v.shape == (32, 384)
    assert ticks > 0  # the loop kept running while the model worked
    np.testing.assert_allclose(v[0], local.embed_sync(["Where is my card?"])[0], atol=1e-3)


async def test_local_coalesces_concurrent_calls_and_isolates_a_bad_one(local: LocalEmbedder) -> None:
    runs: list[int] = []
    original = local.embed_sync

    def counted(texts: Any) -> Any:
        runs.append(len(texts))
        return original(texts)

    texts = [f"please cancel my booking number {i}" for i in range(12)]
    local.embed_sync = counted  # type: ignore[method-assign]
    try:
        results = await asyncio.gather(*(local.embed([t]) for t in texts))
        assert len(runs) < len(texts) and sum(runs) == len(texts)  # the busy thread took them in groups
        for text, vec in zip(texts, results, strict=True):
            np.testing.assert_allclose(vec[0], original([text])[0], atol=1e-3)

        runs.clear()
        good = local.embed(["refund please"])
        bad = local.embed([b"not text"])  # type: ignore[list-item]
        outcome = await asyncio.gather(local.embed(["warm"]), good, bad, return_exceptions=True)
        assert isinstance(outcome[2], TypeError)
        assert isinstance(outcome[1], np.ndarray) and outcome[1].shape == (1, 384)
    finally:
        del local.embed_sync


def test_local_truncates_long_text(local: LocalEmbedder) -> None:
    long = "money transfer " * 600  # ~1,200 tokens, cut at max_length
    v = local.embed_sync([long, "short"])
    assert v.shape == (2, 384)
    assert np.isfinite(v).all()


@pytest.mark.skipif(not BANKING77_TEST.exists(), reason=f"test data not found at {BANKING77_TEST}")
def test_local_banking77_same_intent_is_closer(local: LocalEmbedder) -> None:
    with BANKING77_TEST.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_cat: dict[str, list[str]] = {}
    for r in rows:
        by_cat.setdefault(r["category"], []).append(r["text"])
    cats = sorted(by_cat)[:8]
    texts = [t for c in cats for t in by_cat[c][:4]]
    labels = np.repeat(np.arange(len(cats)), 4)
    v = local.embed_sync(texts)
    sims = v @ v.T
    same = labels[:, None] == labels[None, :]
    off_diag = ~np.eye(len(texts), dtype=bool)
    assert sims[same & off_diag].mean() > sims[~same].mean() + 0.15


def test_local_missing_files_raise_embedder_error(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="tokenizer file not found"):
        LocalEmbedder(tokenizer_path=tmp_path / "nope.json").load()
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(EmbedderError, match="cannot load ONNX model"):
        LocalEmbedder(model_path=bad).load()


def test_local_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        LocalEmbedder(batch_size=0)
    with pytest.raises(ValueError, match="max_length"):
        LocalEmbedder(max_length=4096)


def test_plan_batches_covers_in_order_and_beats_fixed_batches() -> None:
    lengths = sorted([7, 8, 8, 9, 9, 10, 11, 12, 14, 15, 17, 19, 20, 22, 24, 40, 76] * 3)
    plan = plan_batches(lengths, 8)
    assert plan[0][0] == 0 and plan[-1][1] == len(lengths)
    assert all(a < b and b - a <= 8 for a, b in plan)
    assert all(p[1] == q[0] for p, q in itertools.pairwise(plan))

    def cost(p: list[tuple[int, int]]) -> int:
        return sum(16 + (b - a) * lengths[b - 1] for a, b in p)

    fixed = [(i, min(i + 8, len(lengths))) for i in range(0, len(lengths), 8)]
    assert cost(plan) <= cost(fixed)
    assert plan_batches([], 8) == []
    assert plan_batches([5], 8) == [(0, 1)]


# -- HashEmbedder and CachedEmbedder --------------------------------------------------------------


async def test_hash_embedder_deterministic_and_normalized() -> None:
    h = HashEmbedder(dimension=32)
    v = await h.embed(["refund my order", "refund my order please", "weather in Paris", ""])
    assert v.shape == (4, 32) and h.dimension == 32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(
        v,
        HashEmbedder(dimension=32).embed_sync(
            ["refund my order", "refund my order please", "weather in Paris", ""]
        ),
    )
    assert cos(v[0], v[1]) > cos(v[0], v[2])
    assert (await h.embed([])).shape == (0, 32)


def _cache_counts() -> tuple[float, float]:
    get = metrics.REGISTRY.get_sample_value
    return (
        get("otel_topics_embed_cache_total", {"result": "hit"}) or 0.0,
        get("otel_topics_embed_cache_total", {"result": "miss"}) or 0.0,
    )


async def test_cached_embedder_hits_misses_and_one_inner_batch() -> None:
    inner = HashEmbedder(dimension=16)
    cached = CachedEmbedder(inner, max_entries=3)
    assert cached.name == inner.name and cached.dimension == 16
    hit0, miss0 = _cache_counts()

    first = await cached.embed(["a", "b", "a"])
    assert inner.calls == [["a", "b"]]  # deduplicated, one batch
    second = await cached.embed(["b", "c", "a"])
    assert inner.calls[-1] == ["c"]  # only the missing text
    np.testing.assert_array_equal(first[0], second[2])
    np.testing.assert_array_equal(second, inner.embed_sync(["b", "c", "a"]))

    hit1, miss1 = _cache_counts()
    assert (hit1 - hit0, miss1 - miss0) == (2, 4)  # per requested text

    await cached.embed(["d"])  # evicts the least recently used ("b")
    assert len(cached) == 3
    inner.calls.clear()
    await cached.embed(["a", "b", "c", "d"])
    assert inner.calls == [["b"]]
    assert (await cached.embed([])).shape == (0, 16)


class SlowHash(HashEmbedder):
    """A HashEmbedder that takes a while, so that calls overlap; ``fail`` makes it raise."""

    fail = False

    async def embed(self, texts: Any) -> Any:
        await asyncio.sleep(0.05)
        if self.fail:
            raise EmbedderError("inner embedder down")
        return await super().embed(texts)


async def test_cached_embedder_waits_for_a_text_being_embedded() -> None:
    inner = SlowHash(dimension=16)
    cached = CachedEmbedder(inner)
    hit0, miss0 = _cache_counts()
    a, b, c = await asyncio.gather(cached.embed(["x", "y"]), cached.embed(["y"]), cached.embed(["x", "z"]))
    assert inner.calls == [["x", "y"], ["z"]]  # "y" and "x" were embedded once, for the first caller
    np.testing.assert_array_equal(b[0], a[1])
    np.testing.assert_array_equal(c[0], a[0])
    hit1, miss1 = _cache_counts()
    assert (hit1 - hit0, miss1 - miss0) == (2, 3)

    inner.fail = True
    outcome = await asyncio.gather(cached.embed(["p"]), cached.embed(["p"]), return_exceptions=True)
    assert all(isinstance(o, EmbedderError) for o in outcome)  # the waiter gets the same error
    assert inner.calls[-1] == ["z"] and not cached._running  # nothing left behind


# -- OpenAIEmbedder against a real loopback HTTP server -------------------------------------------

Handler = Callable[[dict[str, Any]], web.Response]


@dataclass
class FakeEmbeddingsServer:
    url: str = ""
    script: list[Handler] = field(default_factory=list)  # one handler per request; last one repeats
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


def ok_answer(body: dict[str, Any], reverse: bool = True) -> web.Response:
    inputs = body["input"]
    data = [
        {"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, float(i)]}
        for i, t in enumerate(inputs)
    ]
    if reverse:
        data.reverse()  # the index, not the position, decides the order
    return web.json_response({"object": "list", "data": data, "model": body["model"]})


@pytest.fixture
async def server() -> AsyncIterator[FakeEmbeddingsServer]:
    state = FakeEmbeddingsServer()

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        state.requests.append(body)
        state.headers.append(dict(request.headers))
        idx = min(len(state.requests) - 1, len(state.script) - 1)
        return state.script[idx](body)

    app = web.Application()
    app.router.add_post("/v1/embeddings", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.url = f"http://{host}:{port}/v1"
    yield state
    await runner.cleanup()


async def test_openai_success_batches_order_and_normalization(server: FakeEmbeddingsServer) -> None:
    server.script = [ok_answer]
    e = OpenAIEmbedder(server.url, "text-embed", api_key="sk-test", batch_size=2, headers={"X-Team": "t1"})
    assert e.dimension == 0 and e.name == "openai:text-embed"
    v = await e.embed(["a", "bbb", "cc"])
    await e.aclose()
    assert [r["input"] for r in server.requests] == [["a", "bbb"], ["cc"]]
    assert server.requests[0]["model"] == "text-embed"
    assert server.headers[0]["Authorization"] == "Bearer sk-test"
    assert server.headers[0]["X-Team"] == "t1"
    assert v.shape == (3, 3) and e.dimension == 3
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    expected = np.array([[1, 1, 0], [3, 1, 1], [2, 1, 0]], dtype=np.float32)
    np.testing.assert_allclose(v, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)


async def test_openai_retries_429_then_succeeds(server: FakeEmbeddingsServer) -> None:
    def limited(_: dict[str, Any]) -> web.Response:
        return web.json_response(
            {"error": {"message": "rate limited"}}, status=429, headers={"Retry-After": "0.05"}
        )

    server.script = [limited, ok_answer]
    e = OpenAIEmbedder(server.url, "m", backoff=5.0)  # Retry-After wins over the long backoff
    v = await asyncio.wait_for(e.embed(["hello"]), timeout=3)
    await e.aclose()
    assert v.shape == (1, 3)
    assert len(server.requests) == 2


async def test_openai_500_every_time_raises_with_server_message(server: FakeEmbeddingsServer) -> None:
    server.script = [lambda _: web.json_response({"error": {"message": "model overloaded"}}, status=500)]
    e = OpenAIEmbedder(server.url, "m", max_retries=2, backoff=0.01)
    with pytest.raises(EmbedderError, match=r"after 3 attempts: HTTP 500: model overloaded"):
        await e.embed(["hello"])
    await e.aclose()
    assert len(server.requests) == 3


async def test_openai_400_fails_at_once(server: FakeEmbeddingsServer) -> None:
    server.script = [lambda _: web.json_response({"error": {"message": "unknown model 'm'"}}, status=400)]
    e = OpenAIEmbedder(server.url, "m", backoff=0.01)
    with pytest.raises(EmbedderError, match=r"HTTP 400: unknown model 'm'"):
        await e.embed(["hello"])
    await e.aclose()
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("this is not json", "not JSON"),
        (json.dumps({"data": []}), "expected 'data' with 1 embeddings, got 0 items"),
        (json.dumps({"data": [{"index": 0, "embedding": "x"}]}), r"data\[0\] has no 'embedding' list"),
        (json.dumps({"data": [{"index": 0, "embedding": [0.0, 0.0]}]}), "zero vector"),
    ],
)
async def test_openai_malformed_body_raises(server: FakeEmbeddingsServer, body: str, match: str) -> None:
    server.script = [lambda _: web.Response(text=body, content_type="application/json")]
    e = OpenAIEmbedder(server.url, "m", backoff=0.01)
    with pytest.raises(EmbedderError, match=match):
        await e.embed(["hello"])
    await e.aclose()


async def test_openai_dimension_mismatch_and_connection_refused(server: FakeEmbeddingsServer) -> None:
    server.script = [ok_answer]
    e = OpenAIEmbedder(server.url, "m", dimension=8)
    with pytest.raises(EmbedderError, match="dimension 3, expected 8"):
        await e.embed(["x"])
    await e.aclose()

    closed = OpenAIEmbedder("http://127.0.0.1:9/v1", "m", max_retries=1, backoff=0.01, timeout=2)
    with pytest.raises(EmbedderError, match="transport error"):
        await closed.embed(["x"])
    await closed.aclose()
