"""Rule-based cleaning of questions and answers (the default pass of the hf-dataset source).

Every function here is pure (str -> str or a verdict), so the rules are easy to test and reuse:

* :func:`strip_noise`: point values ("(5 points)", "【3分】"), leading question numbers ("12.",
  "Question 3:", "第3题"), URLs, runs of whitespace.
* :func:`unanswerable_reason`: items a model cannot answer from the image and text ("see the
  video", an empty question, a missing or "N/A" answer).
* :func:`rewrite_short_answer_instructions`: "Answer with a single word." and the like become
  instructions that ask for reasoning first, then the short final answer.
* :func:`normalise_answer`: ``\\boxed{}`` content, ``$…$``, trailing units on numbers,
  whitespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

# -- noise -----------------------------------------------------------------------------------
_POINTS = re.compile(
    r"""[(（\[【]\s*(?:共\s*)?\d+(?:\.\d+)?\s*
        (?:points?|pts?\.?|marks?|分)\s*[)）\]】]      # (5 points) （5分） [2 marks] 【3分】
      | \b\d+(?:\.\d+)?\s*(?:points|marks)\s*[:：.]   # "5 points:" at the start of a part
    """, re.IGNORECASE | re.VERBOSE)
_LEADING_NUMBER = re.compile(
    r"""^\s*(?:
        (?:question|problem|exercise|q)\s*\#?\s*\d+\s*[:：.)\-]?\s+  # Question 3:, Q12.
      | 第\s*\d+\s*[题題]\s*[:：.、]?\s*                           # 第3题
      | [(（]\s*\d{1,3}\s*[)）]\s*                                 # (12)
      | \d{1,3}\s*[.)、．]\s+(?=\D)                                # 12. What…   (not 1.5)
      | \d{1,3}\s*、\s*
    )""", re.IGNORECASE | re.VERBOSE)
_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"'）)\]]+", re.IGNORECASE)
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*\n+")


def strip_noise(question: str) -> str:
    """The question without point values, a leading question number or URLs, with runs of
    spaces collapsed and blank-line runs reduced to one (line structure is kept: options are
    often one per line)."""
    text = _POINTS.sub(" ", question)
    text = _URL.sub(" ", text)
    text = _LEADING_NUMBER.sub("", text, count=1)
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n")]
    text = "\n".join(lines)
    text = _BLANK_LINES.sub("\n\n", text)
    # A point value removed before punctuation leaves "Solve ( ) :" style gaps: tidy them.
    text = re.sub(r" +([,.;:?!，。；：？！])", r"\1", text)
    return text.strip()


# -- answerability ---------------------------------------------------------------------------
DEFAULT_UNANSWERABLE_PATTERNS: tuple[str, ...] = (
    r"\b(?:see|watch|refer to|in|from|play)\s+(?:the\s+|this\s+)?(?:attached\s+)?"
    r"(?:video|audio|recording|clip|animation)\b",
    r"\blisten to\b",
    r"\b(?:see|refer to)\s+(?:the\s+)?(?:attachment|attached file|link|website|url)\b",
    r"视频|音频",
)
NOT_AVAILABLE_ANSWERS = frozenset({"", "n/a", "na", "n.a.", "null", "nan", "-", "--", "?",
                                   "no answer", "not available", "none given", "略", "无"})


def unanswerable_reason(question: str, answer: str | None,
                        patterns: tuple[str, ...] | list[str] = DEFAULT_UNANSWERABLE_PATTERNS,
                        ) -> str | None:
    """Why this item cannot be answered (a short reason code), or None if it can."""
    if not question.strip():
        return "empty_question"
    if answer is None:
        return "missing_answer"
    if answer.strip().lower() in NOT_AVAILABLE_ANSWERS:
        return "answer_not_available"
    for pattern in patterns:
        if re.search(pattern, question, re.IGNORECASE):
            return "needs_other_media"
    return None


# -- short-answer instructions ---------------------------------------------------------------
_REASON = "Think through the problem step by step, then give"
_INSTRUCTIONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), r) for p, r in (
        (r"answer with the option'?s? letter from the given choices directly\.?",
         f"{_REASON} the letter of the correct option as the final answer."),
        (r"(?:please\s+)?(?:answer|respond|reply)\s+(?:only\s+)?with\s+(?:only\s+)?"
         r"(?:a\s+single|one|the)\s+(?:option\s+)?letter(?:\s+of the correct option)?"
         r"(?:\s+only|\s+directly)?\.?",
         f"{_REASON} the letter of the correct option as the final answer."),
        (r"answer the question using a single word or phrase\.?",
         f"{_REASON} the final answer as a single word or phrase."),
        (r"(?:please\s+)?(?:answer|respond|reply)\s+(?:only\s+)?(?:with|in|using)\s+"
         r"(?:only\s+)?(?:a\s+single|one)\s+word(?:\s+or\s+(?:a\s+)?phrase)?"
         r"(?:\s+only|\s+directly)?\.?",
         f"{_REASON} the final answer as a single word or phrase."),
        (r"(?:please\s+)?(?:answer|respond|reply)\s+(?:only\s+)?with\s+(?:only\s+)?"
         r"(?:a\s+single|one)\s+(?:number|integer|numerical value|value)"
         r"(?:\s+only|\s+directly)?\.?",
         f"{_REASON} the final answer as a single number."),
        (r"(?:please\s+)?(?:answer|respond)\s+(?:only\s+)?(?:with\s+)?(?:\"?yes\"?\s+or\s+"
         r"\"?no\"?)(?:\s+only|\s+directly)?\.?",
         f"{_REASON} yes or no as the final answer."),
        (r"(?:just\s+|please\s+)?(?:directly\s+)?(?:give|state|output)\s+(?:only\s+)?the\s+"
         r"(?:final\s+)?answer(?:\s+only|\s+directly)(?:,?\s+without\s+(?:any\s+)?"
         r"(?:explanation|reasoning))?\.?",
         f"{_REASON} the final answer."),
        (r"(?:do not|don't)\s+(?:explain|show (?:your )?(?:work|reasoning))\.?",
         "Show your reasoning."),
        (r"(?:请)?直接(?:给出|写出|回答)(?:答案|选项)?[。.]?",
         "请逐步推理，然后给出最终答案。"),
    ))


def rewrite_short_answer_instructions(question: str) -> str:
    """Replace instructions that forbid reasoning with ones that ask for it (the final answer
    keeps its requested form: a letter, a word, a number, yes/no)."""
    for pattern, replacement in _INSTRUCTIONS:
        question = pattern.sub(replacement, question)
    return question


# -- answers ---------------------------------------------------------------------------------
_UNITS = (
    r"mm|cm|dm|km|m|in|inch(?:es)?|ft|feet|foot|yd|yards?|mi|miles?|meters?|metres?|"
    r"centimeters?|centimetres?|kilometers?|kilometres?|millimeters?|"
    r"mg|g|kg|grams?|kilograms?|lbs?|pounds?|oz|ounces?|tons?|tonnes?|"
    r"ms|s|sec|secs|seconds?|min|mins|minutes?|h|hr|hrs|hours?|days?|weeks?|months?|years?|"
    r"ml|mL|l|L|liters?|litres?|gallons?|"
    r"m/s|km/h|kmh|mph|cm/s|"
    r"°C|°F|℃|℉|°|degrees?|deg|"
    r"dollars?|cents?|yuan|euros?|元|"
    r"(?:square|sq\.?|cubic)\s+(?:units|cm|m|meters?|inches|feet|ft)|units?|"
    r"米|厘米|千米|毫米|克|千克|秒|分钟|小时|天|个|度|人|岁"
)
_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?"
_TRAILING_UNIT = re.compile(
    rf"^({_NUMBER})\s*(?:\\,|~)?\s*(?:\\(?:text|mathrm|mbox|rm)\s*\{{\s*(?:{_UNITS})\s*\}}|"
    rf"(?:{_UNITS})(?:\^?[23²³])?|\^\s*\{{?\\circ\}}?)\s*\.?$")
_DOLLAR_PREFIX = re.compile(rf"^\\?\$\s*({_NUMBER})$")


def _boxed_content(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` (or ``\\fbox{…}``), braces balanced; None if none."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def normalise_answer(answer: str, strip_units: bool = True) -> str:
    """The gold answer in a plain form: boxed content, no surrounding ``$``, no trailing unit
    on a number (when ``strip_units``), whitespace collapsed. Anything else is kept as is."""
    text = answer.strip()
    boxed = _boxed_content(text)
    if boxed is not None:
        text = boxed.strip()
    for opener, closer in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(opener) and text.endswith(closer) and len(text) > len(opener) * 2:
            text = text[len(opener):-len(closer)].strip()
            break
    text = _SPACES.sub(" ", text).strip()
    if strip_units:
        m = _TRAILING_UNIT.match(text) or _DOLLAR_PREFIX.match(text)
        if m:
            text = m.group(1)
    if re.fullmatch(rf"{_NUMBER}\.", text):  # "42." -> "42"
        text = text[:-1]
    return text


# -- the configured pass ---------------------------------------------------------------------
class CleaningOptions(BaseModel):
    """``[source.cleaning]``: which rule-based cleaning steps run."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    strip_noise: bool = True
    drop_unanswerable: bool = True
    unanswerable_patterns: list[str] = list(DEFAULT_UNANSWERABLE_PATTERNS)
    rewrite_instructions: bool = True
    normalise_answers: bool = True
    strip_units: bool = True


@dataclass
class Cleaned:
    """The result of cleaning one item: the texts, or ``dropped`` with a reason code."""

    question: str
    answer: str
    dropped: str | None = None
    changes: list[str] = field(default_factory=list)


def clean_item(question: str, answer: str | None, options: CleaningOptions) -> Cleaned:
    """Apply the enabled rules to one question/answer pair."""
    if not options.enabled:
        reason = None if answer is not None else "missing_answer"
        return Cleaned(question, answer or "", dropped=reason)
    changes: list[str] = []
    q = question
    if options.strip_noise:
        q = strip_noise(q)
        if q != question.strip():
            changes.append("noise")
    a = answer
    if a is not None and options.normalise_answers:
        normalised = normalise_answer(a, strip_units=options.strip_units)
        if normalised != a:
            changes.append("answer")
        a = normalised
    if a is None:
        return Cleaned(q, "", dropped="missing_answer", changes=changes)
    if options.drop_unanswerable:
        reason = unanswerable_reason(q, a, options.unanswerable_patterns)
        if reason is not None:
            return Cleaned(q, a, dropped=reason, changes=changes)
    elif not q.strip():
        return Cleaned(q, a, dropped="empty_question", changes=changes)
    if options.rewrite_instructions:
        rewritten = rewrite_short_answer_instructions(q)
        if rewritten != q:
            changes.append("instruction")
        q = rewritten
    return Cleaned(q, a, changes=changes)
