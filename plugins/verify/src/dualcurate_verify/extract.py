"""Final-answer extraction. The reasoning inside ``<think>`` never counts as the answer.

The think block is found by :func:`dualcurate.formats.split_think`, the one split rule of the
trace format: ``<think>``/``</think>`` quoted inside the reasoning are reasoning, and the block
closes at its last ``</think>`` before a second block opens, so everything a response writes
after its think block is read (a second block's answer is not hidden: the response is two
blocks). Order (first that applies wins), applied to the text after the think block:

1. the ``<answer>…</answer>`` content (a ``\\boxed{}`` inside it is unwrapped);
2. the last ``\\boxed{…}`` (or ``\\fbox{…}``);
3. a trailing "final answer is …" / "answer: …" phrase;
4. a bare short response, taken whole (``42``, ``(B) 45°``);
5. the last expression math-verify extracts (done by :func:`dualcurate_verify.check`, under the
   symbolic time budget; :func:`extract_answer` does it too).

A final answer is one answer. Several different boxes or tags are a candidate enumeration,
unless the text before the last one retracts the earlier one ("on reflection", "actually",
"wait", "the correct answer is …") without offering both ("or", "maybe", "alternatively"):
then the response corrected itself and its last answer counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dualcurate import formats
from dualcurate.formats import THINK_CLOSE, THINK_OPEN
from dualcurate_verify.normalise import box_positions, box_text, boxed_contents, strip_math

# lenient on purpose (any case, an unclosed tag runs to the end): the verifier reads what a
# model meant, the format's own reader (dualcurate.formats.last_answer) what it wrote
_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL | re.IGNORECASE)
_FINAL_PHRASE = re.compile(
    r"\banswer\s*(?:is\b|[:：=])\s*(?:[:：]\s*)?(?:is\b\s*)?(?:the\s+)?", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\n")
_HOPE = re.compile(r"\s*I hope it is correct\.?\s*$", re.IGNORECASE)
#: between two different final answers, these say the response corrects itself: the last wins
_CORRECTION = re.compile(
    r"\b(?:on\s+(?:second\s+thought|reflection|closer\s+inspection)|actually|correction|"
    r"corrected|wait|oops|I\s+made\s+(?:a|an)\s+(?:mistake|error|arithmetic\s+error)|"
    r"(?:that|this)\s+(?:was|is)\s+(?:wrong|incorrect|a\s+mistake)|mistake|re-?check(?:ing|ed)?|"
    r"re-?calculat\w*|re-?comput\w*|re-?examin\w*|re-?evaluat\w*|revis\w+|instead|"
    r"(?:the\s+)?(?:correct|final|true|right)\s+answer)\b", re.IGNORECASE)
#: … and these that it offers alternatives (then it is a candidate enumeration)
_ALTERNATIVE = re.compile(
    r"\b(?:or|either|alternatively|otherwise|another\s+(?:possible|possibility|candidate|answer|"
    r"option)|could\s+(?:also\s+)?be|might\s+(?:also\s+)?be|may\s+(?:also\s+)?be|maybe|perhaps|"
    r"possibly|depending|unsure|not\s+sure)\b|\\(?:text)?or\b", re.IGNORECASE)
BARE_MAX_WORDS = 12
BARE_MAX_CHARS = 100
TRAILING_SLACK = 150
MAX_CANDIDATES = 16


@dataclass(frozen=True)
class ThinkSplit:
    """A response split at its think block. ``answer_part`` is what may hold the answer;
    ``blocks`` counts think blocks (0: no think tag; more than 1: a block reopened after the
    first one closed); ``unterminated``: the first block, or one reopened after it, never
    closes (the response was cut off)."""

    reasoning: str | None
    answer_part: str
    blocks: int
    unterminated: bool


def split_think(text: str) -> ThinkSplit:
    """Split by :func:`dualcurate.formats.split_think` (quoted tags in the reasoning are
    reasoning; a missing opening tag, a chat template that opened the block in the prompt, is
    accepted). The rest after the block holds any further block, so a ``<think>`` in it is one
    more block. No answer part when a block never closes."""
    reasoning, rest = formats.split_think(text)
    if rest is None:
        return ThinkSplit(reasoning, "", 1, True)
    blocks = int(reasoning is not None) + rest.count(THINK_OPEN)
    if rest.rfind(THINK_OPEN) > rest.rfind(THINK_CLOSE):  # reopened, then cut off
        return ThinkSplit(reasoning, "", blocks, True)
    return ThinkSplit(reasoning, rest, blocks, False)


@dataclass(frozen=True)
class Extraction:
    """What the rules found: ``answer`` (None: nothing found here, try math-verify), where it
    came from and the distinct candidates when a response offers several."""

    answer: str | None
    source: str
    candidates: tuple[str, ...] = field(default_factory=tuple)

    @property
    def several(self) -> bool:
        return len(self.candidates) > 1


def _distinct(values: list[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for v in values:
        key = re.sub(r"\s+", "", strip_math(v))
        seen.setdefault(key, v.strip())
    return tuple(seen.values())


def _math_span(tail: str) -> tuple[str, int] | None:
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if tail.startswith(left):
            end = tail.find(right, len(left))
            if end != -1:
                return tail[len(left):end], end + len(right)
            return None
    return None


def _final_phrase(text: str, trailing: bool = True) -> str | None:
    """The value after the last "answer is" / "answer:" phrase; with ``trailing`` only if it
    ends the text (at most a short sentence may follow it)."""
    matches = list(_FINAL_PHRASE.finditer(text))
    if not matches:
        return None
    tail = text[matches[-1].end():]
    span = _math_span(tail)
    if span is not None:
        value, stop = span
    else:
        m = _SENTENCE_END.search(tail)
        value, stop = (tail[:m.start()], m.end()) if m else (tail, len(tail))
    rest = _HOPE.sub("", tail[stop:]).strip()
    if trailing and len(rest) > TRAILING_SLACK:
        return None
    return value.strip()


def final_phrase(text: str) -> str | None:
    """The value after the last "answer is" phrase anywhere in ``text`` (for gold solutions)."""
    value = _final_phrase(text, trailing=False)
    return strip_math(value) if value else None


def _phrase_after_boxes(text: str) -> bool:
    """A trailing "final answer is" written after the last box wins over the boxes (which were
    then intermediate results)."""
    last_box = text.rfind("\\boxed")
    matches = list(_FINAL_PHRASE.finditer(text))
    return bool(matches) and matches[-1].start() > last_box >= 0 and \
        "\\boxed" not in text[matches[-1].start():]


def corrects_itself(between: str) -> bool:
    """Whether the text between two different final answers retracts the first ("on
    reflection", "actually", "wait", "the correct answer is") without offering both ("or",
    "maybe", "alternatively"): then the last answer is the response's answer."""
    return bool(_CORRECTION.search(between)) and not _ALTERNATIVE.search(between)


def _final_candidates(part: str, spans: list[tuple[int, int]], values: list[str]
                      ) -> tuple[str, ...]:
    """The distinct candidates, or only the last when the text before it (after the previous
    different value) corrects the earlier answer."""
    cands = _distinct(values)
    if len(cands) < 2:
        return cands
    last_key = re.sub(r"\s+", "", strip_math(values[-1]))
    for i in range(len(values) - 2, -1, -1):
        if re.sub(r"\s+", "", strip_math(values[i])) != last_key:
            between = part[spans[i][1]:spans[-1][0]]
            if corrects_itself(between):
                return (values[-1].strip(),)
            break
    return cands


def extract_rules(response: str) -> Extraction:
    """Steps 1–4 (fast, no sympy) on the text after the think block."""
    part = split_think(response).answer_part
    # the last few candidates decide; more than that is an enumeration either way
    tag_matches = list(_ANSWER_TAG.finditer(part))[-MAX_CANDIDATES:]
    if tag_matches:
        inner = []
        for m in tag_matches:
            boxes = boxed_contents(m.group(1), last=1)
            inner.append(boxes[-1] if boxes else m.group(1))
        spans = [(m.start(), m.end()) for m in tag_matches]
        return Extraction(strip_math(inner[-1]), "answer-tag",
                          _final_candidates(part, spans, inner))
    box_spans = box_positions(part)[-MAX_CANDIDATES:]
    phrase = _final_phrase(part)
    if box_spans and not (phrase is not None and _phrase_after_boxes(part)):
        boxes = [box_text(part, start, close) for start, close in box_spans]
        spans = [(start, close + 1) for start, close in box_spans]
        return Extraction(strip_math(boxes[-1]), "boxed", _final_candidates(part, spans, boxes))
    if phrase is not None:
        return Extraction(strip_math(phrase), "final-phrase")
    stripped = part.strip()
    if not stripped:
        return Extraction("", "empty")
    if len(stripped) <= BARE_MAX_CHARS and len(stripped.split()) <= BARE_MAX_WORDS:
        return Extraction(strip_math(stripped), "bare")
    return Extraction(None, "none")


def extract_answer(response: str) -> str | None:
    """The response's final answer (see the module docstring for the order), or None.

    The math-verify step runs in the symbolic worker under its time budget; a timeout gives
    None. The reasoning inside ``<think>`` is never searched.
    """
    found = extract_rules(response)
    if found.answer is not None:
        return found.answer or None
    if found.source == "empty":
        return None
    from dualcurate_verify.symbolic import default_pool

    reply = default_pool().call({"op": "extract", "response": split_think(response).answer_part})
    if reply is None or not reply.get("answer"):
        return None
    return str(reply["answer"])
