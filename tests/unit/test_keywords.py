from __future__ import annotations

import pytest

from otel_topics.keywords import STOPWORDS, ctfidf, fallback_name, keywords, terms, tokenize

CARD = [
    "I lost my card and want to cancel it",
    "I have a lost card, please cancel it",
    "how do I report a lost card",
    "lost card, what should I do",
]
REFUND = [
    "I want a refund for my order",
    "how long does a refund take",
    "the refund for my order never arrived",
    "can I get a refund",
]
BOTH_COMMON = ["help with my account"] * 2


def test_tokenize_and_terms() -> None:
    assert tokenize("Don\u2019t PANIC: card-42 lost!") == ["don't", "panic", "card", "42", "lost"]
    assert terms("I lost my card") == ["lost", "card", "lost card"]
    assert terms("the 2 of us") == []  # stop words, digits and single characters are not terms
    assert {"the", "my", "and", "i", "don't"} <= STOPWORDS


def test_ctfidf_formula() -> None:
    from collections import Counter

    w = ctfidf({0: Counter({"card": 4, "help": 1}), 1: Counter({"refund": 3, "help": 1})})
    # average term occurrences per cluster A = (5 + 4) / 2 = 4.5
    import math

    assert w[0]["card"] == pytest.approx(4 * math.log(1 + 4.5 / 4))
    assert w[0]["help"] == pytest.approx(1 * math.log(1 + 4.5 / 2))
    assert w[1]["refund"] > w[1]["help"]
    assert ctfidf({}) == {}


def test_keywords_pick_the_distinguishing_words() -> None:
    texts = [*CARD, *REFUND, "help with my card account", "help with my refund account"]
    labels = [0] * 4 + [1] * 4 + [0, 1]
    kw = keywords(texts, labels, top_n=3)
    assert kw[0][:2] == ["card", "lost card"]  # "card" is in all five texts of cluster 0
    assert kw[1][0] == "refund"
    assert "refund" not in kw[0] and "card" not in kw[1]
    assert "account" not in kw[0][:2]  # in both clusters: discounted
    assert all(len(v) <= 3 for v in kw.values())


def test_keywords_skip_noise_and_redundant_terms() -> None:
    texts = [*CARD, "random noise text about weather", "weather report"]
    kw = keywords(texts, [3, 3, 3, 3, -1, -1])
    assert list(kw) == [3]
    assert "weather" not in kw[3]
    # "lost card" comes first; "lost" and "card" alone add nothing after it
    assert kw[3][0] == "lost card"
    assert "lost" not in kw[3] and "card" not in kw[3]


def test_keywords_need_two_texts_unless_the_cluster_has_one() -> None:
    kw = keywords(["zebra crossing", "giraffe neck", "okapi forest"], [0, 0, 1])
    assert kw[0] == []  # nothing occurs twice in cluster 0
    assert kw[1] == ["okapi forest"]  # a one-text cluster keeps its terms (the bigram covers both words)


def test_keywords_deterministic_and_validated() -> None:
    texts = CARD + REFUND
    labels = [0] * 4 + [1] * 4
    assert keywords(texts, labels) == keywords(list(texts), tuple(labels))
    with pytest.raises(ValueError, match="got 8 texts but 2 labels"):
        keywords(texts, [0, 1])
    with pytest.raises(ValueError, match="top_n"):
        keywords(texts, labels, top_n=0)
    assert keywords([], []) == {}


def test_fallback_name_shapes() -> None:
    name = fallback_name(["lost card", "cancel", "report"], "I lost my card and want to cancel it")
    assert name == 'Lost card / cancel: "I lost my card and want to cancel it"'
    assert len(name) <= 60
    # a word already inside a phrase among the top keywords is dropped
    assert fallback_name(["rate", "exchange rate", "wrong"], "").startswith("Exchange rate / wrong")
    assert fallback_name([], "  how do I   reset my password  ") == "How do I reset my password"
    assert fallback_name([], "") == "Unnamed topic"
    assert fallback_name(["refund"], "") == "Refund"


def test_fallback_name_is_cut_at_a_word_boundary() -> None:
    long_text = "When I try to transfer money to my friend abroad the app always shows an error"
    name = fallback_name(["international transfer", "error"], long_text)
    assert len(name) <= 60
    assert name.startswith('International transfer / error: "When I try')
    assert name.endswith('\u2026"')
    assert " abroad the app always" not in name
    short = fallback_name(["x" * 80], "")
    assert len(short) <= 60 and short.endswith("\u2026")
    assert len(fallback_name([], long_text, max_len=30)) <= 30
    with pytest.raises(ValueError, match="max_len"):
        fallback_name([], "", max_len=5)
