"""Token counting with the packaged all-MiniLM-L6-v2 WordPiece tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_topics.tokens import (
    TokenCounter,
    WordCounter,
    WordPieceCounter,
    default_tokenizer_path,
    shared_wordpiece_counter,
)


def test_default_tokenizer_is_package_data_with_notice() -> None:
    path = default_tokenizer_path()
    assert path.is_file()
    assert path.parent.name == "all-MiniLM-L6-v2" and path.parent.parent.name == "data"
    assert "Apache" in (path.parent / "NOTICE").read_text()


def test_wordpiece_counts_without_special_tokens_or_truncation() -> None:
    counter = shared_wordpiece_counter()
    assert isinstance(counter, TokenCounter)
    assert counter.count("") == 0
    assert counter.count("You are terse.") == 5  # you are ter ##se .
    long = "word " * 1000
    assert counter.count(long) == 1000  # the file's own truncation (128) is off
    assert counter.count_batch(["You are terse.", long, ""]) == [5, 1000, 0]


def test_missing_tokenizer_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        WordPieceCounter(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="cannot load tokenizer"):
        WordPieceCounter(bad)


def test_word_counter() -> None:
    assert WordCounter().count("a b  c") == 3
    assert WordCounter().count_batch(["a", "", "b c"]) == [1, 0, 2]
