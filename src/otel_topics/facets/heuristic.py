"""The embedded default facet extractor: rules and VADER, no model, no LLM call.

It serves the three built-in facets only:

- ``Task``: the user's first substantive request (greetings, fillers and identity statements
  skipped, common request wrappers such as "I'd like to" removed), one sentence.
- ``Sentiment``: VADER over the user's turns (words that are functional in an agent dialogue,
  like "please", "help" or "gift", neutralized), aggregated into positive/neutral/negative/mixed.
- ``Issues``: failed tool results, error lines (span errors, exceptions) and user complaints,
  summarized in one sentence.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any, Final

from vader import SentimentIntensityAnalyzer
from vader.text import EmojiTranslator

from otel_topics import metrics
from otel_topics.facets.spec import BUILTIN_FACETS, ISSUES, SENTIMENT, TASK, FacetSpec, check_unique, truncate
from otel_topics.model import NO_MATCH, Conversation, Message

_SERVED: Final = {f.name for f in BUILTIN_FACETS}
_SENTIMENTS: Final = ("positive", "neutral", "negative", "mixed")

# ---------------------------------------------------------------------------- text cleaning

_MARKERS = re.compile(r"#{2,}\s*[A-Z][A-Z_ ]*\s*#{2,}|<\|[a-z_]+\|>")
_GREETING = re.compile(
    r"^(?:(?:hi+|hello|hey+|hiya|howdy|greetings|good\s+(?:morning|afternoon|evening|day)|bonjour|"
    r"bonsoir|hola|hallo|ciao|salut|yo|dear\s+(?:agent|assistant|support|team|sir|madam))"
    r"(?:\s+(?:there|all|team|everyone|agent|assistant|again|folks))?\b[\s!,.:;~\-]*)+",
    re.IGNORECASE,
)
_PLEASANTRY = re.compile(
    r"^(?:how\s+are\s+you(?:\s+doing)?(?:\s+today)?|(?:i\s+)?hope\s+you(?:'re|\s+are)\s+(?:well|"
    r"doing\s+well|having\s+a\s+good\s+day)|nice\s+to\s+meet\s+you)\s*[?!.,]*\s*",
    re.IGNORECASE,
)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")
_FILLER = re.compile(
    r"^(?:(?:sure|yes|yeah|yep|no|nope|ok(?:ay)?|alright|right|great|perfect|cool|got\s+it|"
    r"of\s+course|understood|i\s+see|merci|much\s+appreciated)"
    r"|(?:thanks?|thank\s+you)(?:\s+(?:so|very)\s+much)?(?:\s+for\s+[\w\s']{1,40})?)[\s!.,]*$",
    re.IGNORECASE,
)
_IDENTITY = re.compile(
    r"^(?:(?:sure|yes|ok(?:ay)?|well|certainly)[,!.]?\s+)?(?:(?:my|our|the)\s+(?:user\s*(?:id|name)|username|"
    r"(?:reservation|booking|order|account|confirmation|customer|member(?:ship)?)\s*(?:id|number|code|#)|"
    r"id|e-?mail(?:\s+address)?|name|full\s+name|phone(?:\s+number)?|zip(?:\s+code)?|address|"
    r"date\s+of\s+birth)\s+(?:is|are)\b|(?:i'm|i\s+am|this\s+is|my\s+name\s+is)\s+(?-i:[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*)\b)",
    re.IGNORECASE,
)
_ID_WORDS = re.compile(
    r"\b(?:user\s*id|reservation\s*(?:id|number|code)s?|booking\s*(?:id|reference|number)|order\s*(?:id|number)|"
    r"account\s*(?:id|number)|confirmation\s*(?:code|number))\b",
    re.IGNORECASE,
)
_LEAD_FILLER = re.compile(
    r"^(?:(?:(?:sure|yes|yeah|yep|ok(?:ay)?|alright|well|certainly|great|perfect|thanks|thank\s+you|"
    r"i\s+see|i\s+understand|got\s+it|oh|hmm+|um+)\s*[,!.]+|(?:so|also|actually|but|and)\b)\s*)+",
    re.IGNORECASE,
)
_TRAILING_PLEASE = re.compile(
    r"[,\s]*(?:please|s'il\s+vous\s+pla[iî]t|thanks?|thank\s+you)\s*([.!?]*)$", re.IGNORECASE
)
_HELP_WITH = re.compile(
    r"^(?:i|we)(?:'m|\s+am|\s+was|'d|\s+would)?\s+(?:really\s+)?(?:need|want|like|hoping\s+(?:you\s+can\s+"
    r"(?:help|assist)\s+me|to\s+get))\s+(?:some\s+|a\s+bit\s+of\s+)?(?:help|assistance)?\s*(?:with\s+)",
    re.IGNORECASE,
)
# "I'd like to X", "Can you please help me X?" -> "X"
_WRAPPER = re.compile(
    r"^(?:(?:i|we)(?:\s+would|'d|\s+really|\s+just|\s+also)*\s+(?:like|love|want|need|wish|have)\s+to"
    r"|(?:i|we)(?:'m|\s+am|\s+are|'re|\s+was|\s+were)\s+(?:looking|hoping|trying|wanting|planning)\s+to"
    r"|(?:can|could|would|will)\s+you(?:\s+please)?(?:\s+(?:help|assist)\s+me)?(?:\s+(?:to|with))?"
    r"|(?:please\s+)?(?:help|assist)\s+me(?:\s+(?:to|with))?"
    r"|please)\s+",
    re.IGNORECASE,
)
_VAGUE = re.compile(
    r"\b(?:help|assist\w*|some\s+changes|a\s+few\s+changes|a\s+change|changes|a\s+question|"
    r"questions|something|an\s+issue|a\s+problem|some\s+issues|what'?s\s+going\s+on|what\s+happened|"
    r"why\s+this\s+happened|with\s+(?:that|this|it|them))\b",
    re.IGNORECASE,
)
_REQUEST_CUE = re.compile(
    r"\b(?:need|want|would\s+like|'d\s+like|looking\s+to|hoping\s+to|trying\s+to|can\s+you|could\s+you|"
    r"would\s+you|please|help|how\s+(?:do|can|to)|tell\s+me|show\s+me|give\s+me|write|create|make|"
    r"book|cancel|change|fix|explain|find)\b|\?$",
    re.IGNORECASE,
)
_ANNOUNCE = re.compile(r"\b(?:the\s+following|below)\b|:$", re.IGNORECASE)
_MAX_TURN_CHARS: Final = 2000  # longer turns (pasted documents, code) are read from their start
_SCORED_CHARS: Final = 300  # VADER reads at most this much of a turn (its cost grows with the text)
_SCORED_BUDGET: Final = 4000  # ... and this much of all user turns of a trace
_COMPLAINT_CHARS: Final = 600  # complaints are looked for in the start of each user turn
_MAX_COMPLAINT_CHECKS: Final = 12  # sentences scored with VADER for complaints, per trace


_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"'})


def _clean(text: str) -> str:
    text = _MARKERS.sub(" ", text[: _MAX_TURN_CHARS * 2]).translate(_APOSTROPHES)
    return re.sub(r"[ \t\r\f\v]+", " ", text).strip()


def _strip_greeting(text: str) -> str:
    previous = None
    while previous != text:
        previous = text
        text = _GREETING.sub("", text, count=1)
        text = _PLEASANTRY.sub("", text, count=1)
    return text.strip()


_MAX_SENTENCES: Final = 12  # per turn: the request is at the start
_MAX_SENTENCE_CHARS: Final = 400


def _sentences(text: str) -> list[str]:
    parts = _SENTENCE_SPLIT.split(text, maxsplit=_MAX_SENTENCES)[:_MAX_SENTENCES]
    return [s.strip()[:_MAX_SENTENCE_CHARS] for s in parts if s and s.strip(" .!?,;:-")]


def _useful(sentence: str) -> bool:
    """False for fillers, identity statements and ID talk without a request ("I don't have my ID")."""
    if _FILLER.match(sentence) or _IDENTITY.match(sentence):
        return False
    return not (_ID_WORDS.search(sentence) and not _REQUEST_CUE.search(sentence))


def _rewrite(sentence: str) -> str:
    """Drop fillers and a request wrapper ("I'd like to ...") and make the rest a capitalized sentence."""
    body = _LEAD_FILLER.sub("", sentence, count=1) or sentence
    body = _TRAILING_PLEASE.sub(r"\1", body)
    stripped = _HELP_WITH.sub("Help with ", body, count=1)
    if stripped == body:
        stripped = _WRAPPER.sub("", body, count=1)
    if stripped != body and len(stripped.split()) >= 2:
        body = stripped
        if re.match(r"know\b", body, re.IGNORECASE):
            body = "Find out" + body[4:]
        if body.endswith("?"):
            body = body[:-1].rstrip() + "."
    body = body.strip(" ,;:-")
    if not body:
        return ""
    if body[-1] not in ".!?…":
        body += "."
    return body[0].upper() + body[1:]


def _is_reference(sentence: str) -> bool:
    """ "Can you help me with that?" says nothing without the sentence before it."""
    body = _WRAPPER.sub("", _LEAD_FILLER.sub("", sentence, count=1), count=1)
    return len(body.split()) <= 2 or bool(
        re.match(r"(?:(?:help|assist)(?:\s+me)?\s+)?(?:with\s+)?(?:that|this|it|them)\b", body, re.I)
    )


def _join(first: str, second: str) -> str:
    """Two rewritten sentences as one: "Make some changes to my flight; upgrade to business."."""
    if not first or not second:
        return first or second
    word = second.split(" ", 1)[0]
    if not (word == "I" or word.startswith("I'") or (len(word) > 1 and word[1].isupper())):
        second = second[0].lower() + second[1:]
    return first.rstrip(".!?…") + "; " + second


def task_of(user_turns: Sequence[str], max_chars: int) -> str:
    """One sentence: what the user asked for. NO_MATCH when the user said nothing."""
    candidates: list[str] = []  # useful sentences of the first turns, in order
    first_turn_count = 0
    for turn in user_turns:
        text = _strip_greeting(_clean(turn))
        sentences = [s for s in (_strip_greeting(s) for s in _sentences(text)) if s and _useful(s)]
        if not sentences:
            continue
        if not candidates:
            first_turn_count = len(sentences)
        candidates.extend(sentences)
        if len(candidates) >= 6:
            break
    if not candidates:
        # only greetings, fillers or identity statements: keep the first thing the user said
        for turn in user_turns:
            text = " ".join(_clean(turn).split())
            if text:
                return truncate(text[0].upper() + text[1:], max_chars)
        return NO_MATCH
    first_turn = candidates[:first_turn_count]
    at = next((i for i, s in enumerate(first_turn[:3]) if _REQUEST_CUE.search(s)), 0)
    main = first_turn[at]
    task = _rewrite(main)
    if _ANNOUNCE.search(main) and at + 1 < len(candidates):
        # "We're solving the following challenge." / "Here is my code:" -> say what follows
        task = _join(task, _rewrite(candidates[at + 1]))
    elif _VAGUE.search(main) and len(task) < max_chars // 2:
        if at > 0:  # "My flight was delayed. Can you help me with that?" -> the context is the task
            context = _rewrite(first_turn[at - 1])
            task = context if _is_reference(main) else _join(context, task)
        else:
            rest = [s for s in candidates[at + 1 :] if len(s.split()) >= 4]
            detail = next(
                (s for s in rest if _REQUEST_CUE.search(s) and not _VAGUE.search(s)),
                next((s for s in rest if not _VAGUE.search(s)), rest[0] if rest else None),
            )
            if detail is not None:
                detail_text = _rewrite(detail)
                task = detail_text if len(task.split()) <= 4 else _join(task, detail_text)
    if not task:  # the rewrite left nothing ("Please.")
        task = main[0].upper() + main[1:]
    return truncate(task, max_chars)


# ---------------------------------------------------------------------------- sentiment

# Words VADER scores that are functional in an agent dialogue ("Sure, please help me cancel my
# gift card payment") rather than the user's feeling.
_NEUTRAL_WORDS: Final = frozenset(
    {"sure", "yes", "yeah", "yep", "ok", "okay", "please", "help", "like", "want", "hope", "hoping"}
    | {"certainly", "fine", "well", "free", "save", "cancel", "cancelled", "cancellation", "pay", "true"}
    | {"share", "interest", "gift", "grant", "join", "important", "care", "no", "kind"}
)
_SENTIMENT_TURNS: Final = (6, 18)  # long conversations: score the first 6 and the last 18 user turns
_STRONG: Final = 0.5
_MILD: Final = 0.05


class _AsciiSkipping(EmojiTranslator):
    """VADER's emoji translator, except that ASCII texts pass through untouched."""

    def __init__(self, inner: EmojiTranslator) -> None:  # shares the inner translator's index
        self._index = inner._index

    def translate(self, text: str) -> str:
        return text if text.isascii() else super().translate(text)


class _PhraseIndexedVader(SentimentIntensityAnalyzer):
    """VADER with the same scores, found faster: a multiword entry or an idiom can only start at a
    word that starts one, so only those positions are looked up (instead of every position for every
    phrase length). tests/unit/test_facets_heuristic.py checks the scores against the base class."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._multiword_starts = frozenset(p.split(" ", 1)[0] for p in self.multiword)
        self._idiom_starts = frozenset(p.split(" ", 1)[0] for p in self.idioms)
        emoji = self._emoji
        index: dict[str, list[tuple[str, str]]] = getattr(emoji, "_index", {})
        if index and not any(key.isascii() for keys in index.values() for key, _ in keys):
            # no emoji key is plain ASCII, so an ASCII text has nothing to translate (the base class
            # would walk it character by character: digits start keycap emoji)
            self._emoji = _AsciiSkipping(emoji)

    def _match_multiword(self, lowered: list[str]) -> tuple[dict[int, float], frozenset[int]]:
        forced: dict[int, float] = {}
        consumed: set[int] = set()
        starts = [i for i, w in enumerate(lowered) if w in self._multiword_starts]
        for n in self._multiword_lengths:
            for i in starts:
                if i + n > len(lowered):
                    break
                if i in forced or any(j in consumed or j in forced for j in range(i, i + n)):
                    continue
                phrase = " ".join(lowered[i : i + n])
                if phrase in self.multiword:
                    forced[i] = self.multiword[phrase]
                    consumed.update(range(i + 1, i + n))
        return forced, frozenset(consumed)

    def _laden_idioms(self, lowered: list[str]) -> list[float]:
        found: list[float] = []
        starts = [i for i, w in enumerate(lowered) if w in self._idiom_starts]
        for length in (2, 3, 4):
            for i in starts:
                if i + length > len(lowered):
                    break
                phrase = " ".join(lowered[i : i + length])
                if phrase in self.idioms:
                    found.append(self.idioms[phrase])
        return found


_analyzer: SentimentIntensityAnalyzer | None = None


def _vader() -> SentimentIntensityAnalyzer:
    global _analyzer
    if _analyzer is None:
        _analyzer = _PhraseIndexedVader(extra_lexicon={w: 0.0 for w in _NEUTRAL_WORDS})
    return _analyzer


def _compound(text: str) -> float:
    return float(_vader().polarity_scores(text)["compound"])


def _turn_score(text: str) -> float:
    score = _compound(text)
    if score > -_STRONG and _STRONG_COMPLAINT.search(text.lower()):  # "that's not what I asked" scores ~0
        score = -_STRONG
    return score


def sentiment_of(user_turns: Sequence[str]) -> str:
    """positive / neutral / negative / mixed from the user's turns; NO_MATCH without user text."""
    head, tail = _SENTIMENT_TURNS
    if len(user_turns) > head + tail:
        user_turns = [*user_turns[:head], *user_turns[-tail:]]
    # VADER's cost grows with the text: share a fixed budget of characters among the turns
    per_turn = max(80, min(_SCORED_CHARS, _SCORED_BUDGET // max(1, len(user_turns))))
    scores = [_turn_score(t[:per_turn]) for t in (_clean(u[: per_turn * 2]) for u in user_turns) if t]
    if not scores:
        return NO_MATCH
    strong_pos = any(c >= _STRONG for c in scores)
    strong_neg = any(c <= -_STRONG for c in scores)
    pos = sum(c for c in scores if c >= _MILD)
    neg = -sum(c for c in scores if c <= -_MILD)
    if strong_pos and strong_neg:
        return "mixed"
    if pos >= _STRONG and neg >= _STRONG and min(pos, neg) >= 0.35 * max(pos, neg):
        return "mixed"
    net = pos - neg
    if net >= _STRONG or (strong_pos and net > 0):
        return "positive"
    if net <= -_STRONG or (strong_neg and net < 0):
        return "negative"
    return "neutral"


# ---------------------------------------------------------------------------- issues

_ERROR_START = re.compile(
    r"^\s*(?:error\b|err:|failed\b|failure\b|exception\b|traceback \(most recent call last\)|"
    r"[A-Z]\w*(?:Error|Exception):)",
    re.IGNORECASE,
)
_ERROR_PREFIX = re.compile(r"^\s*error\s*[:\-]\s*", re.IGNORECASE)
# the complaint patterns are matched against lowered text (IGNORECASE is several times slower)
_STRONG_COMPLAINT = re.compile(
    r"not\s+what\s+i\s+(?:asked|wanted|meant|said|need)|(?:does|did|is)(?:n't|\s+not)\s+work|"
    r"not\s+working|you\s+misunderst|misunderstood|that(?:'s|\s+is)\s+(?:not\s+(?:right|correct|it)|wrong)|"
    r"i\s+(?:already|just)\s+(?:told|said|gave)|you\s+(?:keep|kept)\s+\w+ing|listen\s+to\s+me|useless|"
    r"ridiculous|unacceptable|terrible|awful|waste\s+of|not\s+helpful|unhelpful|"
    r"(?:still|again)\s+(?:not|wrong|broken|fail)|you\s+(?:broke|failed|made\s+an?\s+(?:mistake|error))"
)
_WEAK_COMPLAINT = re.compile(
    r"wrong|mistake|incorrect|frustrat|upset|annoy|disappoint|unhappy|angry|confus|mix-?up|mixed\s+up|"
    r"complain"
)
# the user blaming themselves ("I booked it by mistake", "sorry for the confusion") is no complaint
_SELF_BLAME = re.compile(
    r"\b(?:i|i've|i\s+have|i\s+had|we)\s+(?:\w+\s+)?(?:made|provided|gave|booked|entered|typed|mistakenly)\b|"
    r"\bmy\s+(?:mistake|bad|fault)\b|\bby\s+mistake\b|\bapologi[sz]e\b|\bsorry\s+(?:for|about)\b"
)
_PART_CHARS: Final = 100


def _is_tool_error(m: Message) -> bool:
    return m.role == "tool" and (m.is_error or bool(_ERROR_START.match(m.content[:200])))


def _complaints(user_turns: Sequence[str]) -> list[str]:
    found: list[str] = []
    checks = 0
    for turn in user_turns:
        text = _clean(turn[:_COMPLAINT_CHARS])
        lowered = text.lower()
        if not (_STRONG_COMPLAINT.search(lowered) or _WEAK_COMPLAINT.search(lowered)):
            continue  # cheap test first: most turns carry no cue
        for s in _sentences(_strip_greeting(text)):
            low = s.lower()
            if _STRONG_COMPLAINT.search(low):
                found.append(s)
            elif (
                _WEAK_COMPLAINT.search(low) and not _SELF_BLAME.search(low) and checks < _MAX_COMPLAINT_CHECKS
            ):
                checks += 1
                if _compound(s[:_SCORED_CHARS]) <= -_MILD:
                    found.append(s)
    return found


def issues_of(messages: Sequence[Message], user_turns: Sequence[str], max_chars: int) -> str:
    """One sentence naming failed tools, errors and user complaints; NO_MATCH when none."""
    tool_errors: dict[str, tuple[str, int]] = {}  # tool -> (first error, count), in order seen
    errors: list[str] = []
    for m in messages:
        if _is_tool_error(m):
            tool = m.name or "(unnamed)"
            detail = _ERROR_PREFIX.sub("", " ".join(m.content[:400].split())) or "error"
            first, count = tool_errors.get(tool, (detail, 0))
            tool_errors[tool] = (first, count + 1)
        elif m.role == "error":
            text = " ".join(m.content[:400].split()) or "error"
            errors.append(f"error in {m.name}: {text}" if m.name else f"error: {text}")
    parts: list[str] = []
    for tool, (detail, count) in tool_errors.items():
        times = f" {count} times" if count > 1 else ""
        parts.append(f"tool {tool} failed{times}: {truncate(detail, _PART_CHARS)}")
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        parts.append(f"{truncate(errors[0], _PART_CHARS)}{more}")
    complaints = _complaints(user_turns)
    if complaints:
        more = f" (+{len(complaints) - 1} more)" if len(complaints) > 1 else ""
        parts.append(f'user complained: "{truncate(complaints[0], _PART_CHARS)}"{more}')
    if not parts:
        return NO_MATCH
    summary = "; ".join(parts)
    return truncate(summary[0].upper() + summary[1:], max_chars)


# ---------------------------------------------------------------------------- extractor


def _user_turns(conversation: Conversation) -> list[str]:
    if conversation.texts is not None:
        return [t for t in conversation.texts if t and t.strip()]
    return [m.content for m in conversation.messages if m.role == "user" and m.content.strip()]


class HeuristicFacetExtractor:
    """Implements :class:`otel_topics.stages.FacetExtractor` for the built-in facets without a model.

    ``facets`` defaults to the built-ins; a built-in may be given with another prompt or
    ``max_chars``. Any other facet is refused with ValueError (use an LLM extractor for those).
    """

    name = "heuristic"

    def __init__(self, facets: Sequence[FacetSpec] | None = None) -> None:
        specs = check_unique(BUILTIN_FACETS if facets is None else facets)
        unknown = [f.name for f in specs if f.name not in _SERVED]
        if unknown:
            raise ValueError(
                f"the heuristic extractor serves only the built-in facets {', '.join(sorted(_SERVED))}; "
                f"it cannot derive {', '.join(unknown)} "
                f"(configure llm: {{type: openai, ...}} for custom facets)"
            )
        for f in specs:
            if f.name == SENTIMENT.name and (
                f.values is None or not set(_SENTIMENTS) <= {v.lower() for v in f.values}
            ):
                raise ValueError(
                    f"the heuristic extractor's Sentiment facet needs values including "
                    f"{', '.join(_SENTIMENTS)}; got {f.values!r}"
                )
        self.facets: tuple[FacetSpec, ...] = specs
        _vader()  # load the lexicon now, not on the first trace

    async def extract(self, conversation: Conversation) -> dict[str, str]:
        return self.extract_sync(conversation)

    def extract_sync(self, conversation: Conversation) -> dict[str, str]:
        """The same as :meth:`extract`, for callers outside an event loop."""
        start = time.perf_counter()
        users = _user_turns(conversation)
        messages = conversation.messages if conversation.texts is None else []
        out: dict[str, str] = {}
        for f in self.facets:
            if f.name == TASK.name:
                out[f.name] = task_of(users, f.max_chars)
            elif f.name == SENTIMENT.name:
                value = sentiment_of(users)
                out[f.name] = f.normalize(value) if value != NO_MATCH else NO_MATCH
            elif f.name == ISSUES.name:
                out[f.name] = issues_of(messages, users, f.max_chars)
        metrics.FACET_LATENCY.labels(self.name).observe(time.perf_counter() - start)
        return out
