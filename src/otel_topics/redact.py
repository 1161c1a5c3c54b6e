"""Redaction of secrets and personal data before any model sees a conversation.

Each pattern is compiled once and applied in one ``re.sub`` pass; cheap substring checks skip patterns
that cannot match. Matches are replaced by placeholders:

=============== ==========================================================================
placeholder     what
=============== ==========================================================================
``[PRIVATE_KEY]`` PEM private key blocks
``[TOKEN]``     JSON Web Tokens; the credential after ``Bearer``
``[API_KEY]``   well-known key formats: ``sk-...``, ``AKIA...``/``ASIA...``, ``ghp_...``,
                ``github_pat_...``, ``xox?-...``, ``AIza...``, ``sk_live_...``, ``hf_...``
``[SECRET]``    the value after ``key``/``token``/``secret``/``password`` ``=`` or ``:`` (passwords:
                any value; other names: a long, high-entropy value with letters and digits)
``[EMAIL]``     e-mail addresses
``[IBAN]``      IBANs (ISO 13616 mod-97 checked)
``[CARD]``      payment card numbers (13-19 digits, known issuer prefix, Luhn checked)
``[SSN]``       US social security numbers written ``123-45-6789``
``[PHONE]``     ``+``-prefixed international numbers (8-15 digits) and North American
                ``(555) 123-4567`` / ``555-123-4567`` / ``555.123.4567``
=============== ==========================================================================

Ordinary numbers are left alone: dates (``2024-05-15``), times, prices, decimals, order ids such as
``#W2378156``, flight numbers, ids like ``credit_card_4421486`` and bare digit runs.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from typing import Final

__all__ = ["PLACEHOLDERS", "luhn_ok", "redact"]

PLACEHOLDERS: Final = (
    "[PRIVATE_KEY]",
    "[TOKEN]",
    "[API_KEY]",
    "[SECRET]",
    "[EMAIL]",
    "[IBAN]",
    "[CARD]",
    "[SSN]",
    "[PHONE]",
)

_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S
)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"\b([Bb]earer|BEARER)(\s+)(?!\[)[A-Za-z0-9._~+/-]{8,}=*")
_API_KEY = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"sk-(?:proj-|ant-|svcacct-)?[A-Za-z0-9_-]{16,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|github_pat_[A-Za-z0-9_]{22,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|hf_[A-Za-z0-9]{30,}"
    r")(?![A-Za-z0-9])"
)
# key/token/secret/password, optional quote, ":" or "=", optional quote, then the value.
_ASSIGNMENT = re.compile(
    r"(?i)(key|token|secret|passw(?:or)?d|pwd|credentials?)(s?[\"']?\s*[:=]\s*[\"']?)"
    r"([^\s\"',;&<>(){}\[\]]+)"
)
_EMAIL = re.compile(
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_CARD = re.compile(r"(?<![\w.+-])\d(?:[ -]?\d){12,18}(?![\w-]|[.,]\d)")
_SSN = re.compile(r"(?<![\w.-])\d{3}-\d{2}-\d{4}(?![\w-]|[.,]\d)")
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?![\w-]|[.,]\d)")
_PHONE_NANP = re.compile(
    r"(?<![\w.+-])(?:1[ .-]?)?(?:\(\d{3}\) ?\d{3}[ .-]\d{4}|\d{3}([ .-])\d{3}\1\d{4})(?![\w-]|[.,]\d)"
)

_PASSWORD_WORDS: Final = frozenset({"password", "passwd", "pwd", "passwod"})
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[068]|35|6011|64[4-9]|65|62)")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _entropy(text: str) -> float:
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def _secret_value(value: str) -> bool:
    """A long value mixing letters and digits with high per-character entropy (not a plain word)."""
    if len(value) < 16 or value.startswith("["):
        return False
    has_alpha = has_digit = False
    for ch in value:
        if ch.isdigit():
            has_digit = True
        elif ch.isalpha():
            has_alpha = True
    return has_alpha and has_digit and _entropy(value) >= 3.5


def _assignment(m: re.Match[str]) -> str:
    word, sep, value = m.group(1), m.group(2), m.group(3)
    if value.startswith("["):
        return m.group(0)
    if word.lower() in _PASSWORD_WORDS:
        if len(value) < 4:
            return m.group(0)
    elif not _secret_value(value):
        return m.group(0)
    return f"{word}{sep}[SECRET]"


def _iban(m: re.Match[str]) -> str:
    raw = m.group(0).replace(" ", "")
    if len(raw) < 15:
        return m.group(0)
    moved = raw[4:] + raw[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return "[IBAN]" if int(number) % 97 == 1 else m.group(0)


def _card(m: re.Match[str]) -> str:
    text = m.group(0)
    digits = text.replace(" ", "").replace("-", "")
    if _CARD_PREFIX.match(digits) and luhn_ok(digits):
        return "[CARD]"
    return text


def _phone_intl(m: re.Match[str]) -> str:
    text = m.group(0)
    n = sum(ch.isdigit() for ch in text)
    return "[PHONE]" if 8 <= n <= 15 else text


_DIGIT = re.compile(r"\d")
# A run of digits with separators: the only places a card, SSN or phone number can be. One scan finds
# them; the precise patterns then run on each (short) candidate with a little context.
_NUMBER_CANDIDATE = re.compile(r"\d[\d ().-]{6,}\d")
_NUMBER_RULES: Final[tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...]] = (
    (_CARD, _card),
    (_SSN, "[SSN]"),
    (_PHONE_INTL, _phone_intl),
    (_PHONE_NANP, "[PHONE]"),
)
_KEY_WORDS: Final = ("key", "token", "secret", "passw", "pwd", "credential")
_API_KEY_PREFIXES: Final = (
    "sk-", "AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xox", "AIza",
    "_live_", "_test_", "hf_",
)  # fmt: skip
_MAX_LOCAL_PART = 64
_MAX_DOMAIN = 255


def _splice(text: str, edits: list[tuple[int, int, str]]) -> str:
    """Apply non-overlapping, ordered ``(start, end, replacement)`` edits."""
    if not edits:
        return text
    pieces: list[str] = []
    last = 0
    for start, end, repl in edits:
        pieces.append(text[last:start])
        pieces.append(repl)
        last = end
    pieces.append(text[last:])
    return "".join(pieces)


def _numbers(text: str) -> str:
    edits: list[tuple[int, int, str]] = []
    n = len(text)
    for m in _NUMBER_CANDIDATE.finditer(text):
        start, end = m.span()
        if start and text[start - 1] in "+(":
            start -= 1
        lo, hi = max(start - 1, 0), min(end + 2, n)
        window = text[lo:hi]
        out = window
        for pattern, repl in _NUMBER_RULES:
            out = pattern.sub(repl, out)
        if out != window:
            # the context characters around the candidate are never part of a match
            edits.append((start, end, out[start - lo : len(out) - (hi - end)]))
    return _splice(text, edits)


def _emails(text: str) -> str:
    edits: list[tuple[int, int, str]] = []
    last = 0
    at = text.find("@")
    while at != -1:
        lo = max(last, at - _MAX_LOCAL_PART)
        for m in _EMAIL.finditer(text, lo, min(len(text), at + _MAX_DOMAIN)):
            if m.start() <= at < m.end():
                edits.append((m.start(), m.end(), "[EMAIL]"))
                last = m.end()
                break
            if m.start() > at:
                break
        at = text.find("@", max(at + 1, last))
    return _splice(text, edits)


def _assignments(text: str, lower: str) -> str:
    if len(lower) != len(text):  # case folding changed offsets (rare scripts): scan the whole text
        return _ASSIGNMENT.sub(_assignment, text)
    starts = sorted({i for w in _KEY_WORDS for i in _find_all(lower, w)})
    edits: list[tuple[int, int, str]] = []
    last = 0
    for i in starts:
        if i < last:
            continue
        m = _ASSIGNMENT.match(text, i)
        if m is not None:
            repl = _assignment(m)
            if repl != m.group(0):
                edits.append((m.start(), m.end(), repl))
            last = m.end()
    return _splice(text, edits)


def _find_all(text: str, word: str) -> list[int]:
    found = []
    i = text.find(word)
    while i != -1:
        found.append(i)
        i = text.find(word, i + 1)
    return found


def redact(text: str) -> str:
    """``text`` with secrets and personal data replaced by placeholders (see the module docstring)."""
    if not text:
        return text
    if "PRIVATE KEY" in text:
        text = _PRIVATE_KEY.sub("[PRIVATE_KEY]", text)
    if "eyJ" in text:
        text = _JWT.sub("[TOKEN]", text)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(r"\1\2[TOKEN]", text)
    if any(p in text for p in _API_KEY_PREFIXES):
        text = _API_KEY.sub("[API_KEY]", text)
    lower = text.lower()
    if any(w in lower for w in _KEY_WORDS):
        text = _assignments(text, lower)
    if "@" in text:
        text = _emails(text)
    if _DIGIT.search(text) is not None:
        text = _IBAN.sub(_iban, text)
        text = _numbers(text)
    return text
