"""Token counting for the preprocessor's ``max_tokens`` cap.

Tokens are counted with the WordPiece tokenizer of all-MiniLM-L6-v2 (shipped as package data), the
same tokenizer the local embedder uses. Truncation and padding are switched off and special tokens are
not added, so a count is the number of word pieces of the text itself.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

from tokenizers import Tokenizer

__all__ = [
    "MIN_MAX_TOKENS",
    "TextCache",
    "TokenCap",
    "TokenCounter",
    "WordCounter",
    "WordPieceCounter",
    "default_tokenizer_path",
]

MIN_MAX_TOKENS: Final = 32
_CACHE_ENTRIES: Final = 2048
_CACHE_MAX_CHARS: Final = 64_000
_CLIPPED: Final = " [...]"

T = TypeVar("T")


@runtime_checkable
class TokenCounter(Protocol):
    """Counts tokens of texts. ``count_batch`` returns one count per text, in order."""

    def count(self, text: str) -> int: ...

    def count_batch(self, texts: Sequence[str]) -> list[int]: ...


def default_tokenizer_path() -> Path:
    """``tokenizer.json`` of all-MiniLM-L6-v2, shipped inside the package (``otel_topics/data``)."""
    return Path(__file__).resolve().parent / "data" / "all-MiniLM-L6-v2" / "tokenizer.json"


class WordPieceCounter:
    """A :class:`TokenCounter` backed by a ``tokenizers`` ``tokenizer.json`` (default: all-MiniLM-L6-v2)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_tokenizer_path()
        if not self.path.is_file():
            raise FileNotFoundError(
                f"tokenizer file not found: {self.path} (the package data otel_topics/data/"
                "all-MiniLM-L6-v2/tokenizer.json is missing; reinstall otel-topics)"
            )
        try:
            tokenizer = Tokenizer.from_file(str(self.path))
        except Exception as exc:  # tokenizers raises a bare Exception on a malformed file
            raise ValueError(f"cannot load tokenizer {self.path}: {exc}") from exc
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        # encode_batch_fast (tokenizers >= 0.20) skips offset tracking: about twice as fast.
        self._batch = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
        self._lock = threading.Lock()  # a Tokenizer is not documented as safe to share across threads

    @staticmethod
    def upper_bound(text: str) -> int:
        """At least the token count of ``text``, without tokenizing: every word piece covers at least
        one character, an ``[UNK]`` a whole word; lowercasing can turn a character into two."""
        return 2 * len(text)

    def count(self, text: str) -> int:
        if not text:
            return 0
        with self._lock:
            return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        with self._lock:
            encodings = self._batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encodings]


@lru_cache(maxsize=4)
def shared_wordpiece_counter(path: str | None = None) -> WordPieceCounter:
    """One loaded tokenizer per path, shared by every preprocessor of the process."""
    return WordPieceCounter(path)


class WordCounter:
    """A trivial :class:`TokenCounter` for tests: one token per whitespace-separated word."""

    def count(self, text: str) -> int:
        return len(text.split())

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]


class TextCache:
    """A small thread-safe LRU map ``text -> value``."""

    def __init__(self, size: int = _CACHE_ENTRIES) -> None:
        self._data: OrderedDict[str, Any] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, value: Any) -> None:
        if len(key) > _CACHE_MAX_CHARS:
            return
        with self._lock:
            self._data[key] = value
            if len(self._data) > self._size:
                self._data.popitem(last=False)


class TokenCap:
    """Token counting (cached by text) and the ``max_tokens`` cap."""

    def __init__(self, counter: TokenCounter, max_tokens: int) -> None:
        if max_tokens < MIN_MAX_TOKENS:
            raise ValueError(f"max_tokens must be at least {MIN_MAX_TOKENS}, got {max_tokens}")
        self.counter = counter
        self.max_tokens = max_tokens
        self._counts = TextCache()

    def counts(self, texts: Sequence[str]) -> list[int]:
        result: list[int | None] = [self._counts.get(t) for t in texts]
        missing = [i for i, c in enumerate(result) if c is None]
        if missing:
            fresh = self.counter.count_batch([texts[i] for i in missing])
            for i, c in zip(missing, fresh, strict=True):
                result[i] = c
                self._counts.put(texts[i], c)
        return [c or 0 for c in result]

    def clip(self, text: str, budget: int) -> str:
        """The longest prefix of ``text`` (plus a clip mark) that has at most ``budget`` tokens."""
        count = self.counter.count
        if budget <= count(_CLIPPED):
            return ""
        lo, hi = 0, len(text)
        # largest k with count(text[:k] + mark) <= budget: bisection, first probe at the proportional guess
        probe = min(hi, max(1, len(text) * budget // max(count(text), 1)))
        while lo < hi:
            if count(text[:probe] + _CLIPPED) <= budget:
                lo = probe
            else:
                hi = probe - 1
            probe = (lo + hi + 1) // 2
        return text[:lo].rstrip() + _CLIPPED if lo else ""

    def cap(
        self,
        items: list[T],
        render: Callable[[T], str],
        shrink: Callable[[T, int], T | None],
        head_len: int,
        marker: Callable[[int], T],
    ) -> tuple[list[T], int | None, bool]:
        """Keep ``items[:head_len]`` (the task) and the most recent items within ``max_tokens``.

        ``shrink(item, budget)`` returns a clipped item or None; ``marker(n)`` the "n omitted" item.
        The token count is None when the counter's ``upper_bound`` (if it has one) already shows that
        everything fits: most conversations are far below the cap and are then not tokenized at all.
        """
        rendered = [render(i) for i in items]
        bound = getattr(self.counter, "upper_bound", None)
        if bound is not None and sum(bound(t) for t in rendered) <= self.max_tokens:
            return items, None, False
        counts = self.counts(rendered)
        total = sum(counts)
        limit = self.max_tokens
        if total <= limit:
            return items, total, False
        head, head_counts = items[:head_len], counts[:head_len]
        marker_tokens = self.counter.count(render(marker(len(items))))
        head_budget = limit // 2 if head_len < len(items) else limit
        if sum(head_counts) > head_budget:
            head, head_counts = self._fill(head, head_counts, head_budget, render, shrink)
        budget = limit - sum(head_counts) - marker_tokens
        tail: list[T] = []
        tail_tokens = 0
        rest = list(zip(items[head_len:], counts[head_len:], strict=True))
        for item, c in reversed(rest):
            if tail_tokens + c > budget:
                if not tail and (clipped := shrink(item, budget)) is not None:
                    tail.append(clipped)
                    tail_tokens += self.counter.count(render(clipped))
                break
            tail.append(item)
            tail_tokens += c
        tail.reverse()
        omitted = len(rest) - len(tail)
        kept = head + ([marker(omitted)] if omitted else []) + tail
        tokens = sum(head_counts) + tail_tokens + (marker_tokens if omitted else 0)
        return kept, tokens, True

    def _fill(
        self,
        items: list[T],
        counts: list[int],
        budget: int,
        render: Callable[[T], str],
        shrink: Callable[[T, int], T | None],
    ) -> tuple[list[T], list[int]]:
        """Share ``budget`` among ``items``: short ones whole, the longest clipped (water-filling)."""
        order = sorted(range(len(items)), key=counts.__getitem__)
        out: dict[int, tuple[T, int]] = {}
        left = budget
        for n, i in enumerate(order):
            share = left // (len(order) - n)
            if counts[i] <= share:
                out[i] = (items[i], counts[i])
            elif (clipped := shrink(items[i], share)) is not None:
                out[i] = (clipped, self.counter.count(render(clipped)))
            else:
                continue
            left -= out[i][1]
        kept = [out[i] for i in range(len(items)) if i in out]
        return [k[0] for k in kept], [k[1] for k in kept]
