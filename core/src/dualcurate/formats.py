"""The trace format, written and read here only.

A long (thinking) response is ``<think>{reasoning}</think>\\n<answer>{answer}</answer>``
(:func:`render_trace`); a short (direct) one is ``<answer>{answer}</answer>``
(:func:`render_answer`). The mode is chosen by a prefix on the user's text
(:func:`render_mode_prompt`, :data:`MODE_PREFIXES`). Training data, rewards, the teacher's
traces, the verifier and the demo's models all use these bytes: changing them changes what
trained models write and misses every request cache entry.

The split rule, one for every reader (the distiller, the verifier, rewards, rollouts,
captions):

1. The think block opens at the first ``<think>`` and closes at the first ``</think>`` after it,
   as vLLM's reasoning parsers do (``text.partition(end_token)``). Text before that ``<think>``
   is dropped; everything after the close is the *rest*, where the answer is.
2. Only a ``</think>`` (a chat template that opened the think block in the prompt): everything
   before the first ``</think>`` is reasoning.
3. A ``<think>`` that never closes (a response cut off at the token limit): everything after it
   is reasoning and there is no rest (no answer).
4. Neither tag: no reasoning; the whole text is the rest.

The first close, not the last, because whatever follows the think block is the response's
answer and a reader must see all of it: a second ``</think>`` written after the block (``…
</think><answer>3</answer></think><answer>5</answer>``) cannot hide the answer before it from a
verifier, so a candidate enumeration stays an enumeration. A later ``<think>`` or ``</think>``
is plain text of the rest; whether a response with more than one think block is acceptable is
the verifier's rule (``rule-verify`` rejects it), not the format's.

The answer is the inside of the last ``<answer>…</answer>`` in the rest (several: the last
wins), ``""`` when there is none. :func:`split_trace` and :func:`strip_reasoning` strip
surrounding whitespace; :func:`split_think` returns the parts as written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"
#: Every tag of the format, in the order a long response writes them.
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
#: The instruction that asks a model for a long response in this format.
FORMAT_INSTRUCTION = ("Think step by step inside <think></think>, then give the final answer "
                      "inside <answer></answer>.")
#: The default prefix on the user's text that selects each mode (Dual Tuning's, and what the
#: demo's base model is pre-trained with).
MODE_PREFIXES: Mapping[str, str] = MappingProxyType({"short": "Answer directly.",
                                                   "long": "Think step by step."})

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def render_trace(reasoning: str, answer: str) -> str:
    """The long-mode text: ``<think>{reasoning}</think>\\n<answer>{answer}</answer>``."""
    return render_think(reasoning, "\n" + render_answer(answer))


def render_answer(answer: str) -> str:
    """The short-mode (direct) text: ``<answer>{answer}</answer>``."""
    return f"{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"


def render_think(reasoning: str, rest: str = "") -> str:
    """``<think>{reasoning}</think>{rest}``: a think block followed by ``rest`` as written
    (puts back reasoning an engine returned apart from the text)."""
    return f"{THINK_OPEN}{reasoning}{THINK_CLOSE}{rest}"


def render_mode_prompt(question: str, prefix: str) -> str:
    """The user's text in a mode: ``"{prefix}\\n\\n{question}"``, the question alone when
    ``prefix`` is empty."""
    return f"{prefix}\n\n{question}" if prefix else question


def split_think(text: str) -> tuple[str | None, str | None]:
    """``(reasoning, rest)`` of a response, unstripped, by the module's split rule.

    ``reasoning`` is None when there is no think block; ``rest`` is None when the think block
    never closes (a truncated response: no answer).
    """
    open_at = text.find(THINK_OPEN)
    start = open_at + len(THINK_OPEN) if open_at >= 0 else 0
    close_at = text.find(THINK_CLOSE, start)
    if close_at >= 0:
        return text[start:close_at], text[close_at + len(THINK_CLOSE):]
    if open_at >= 0:
        return text[start:], None
    return None, text


def last_answer(text: str) -> str | None:
    """The inside of the last closed ``<answer>…</answer>`` of ``text`` (unstripped), or None.
    ``text`` is searched whole: pass the rest of :func:`split_think` to skip the reasoning."""
    answers = _ANSWER.findall(text)
    return answers[-1] if answers else None


def split_trace(text: str) -> tuple[str, str]:
    """``(reasoning, answer)`` of a response, both stripped; ``""`` for what is missing.

    The answer is the last ``<answer>…</answer>`` after the think block (see the module
    docstring); a truncated response (unclosed ``<think>``) has all its text as reasoning.
    """
    reasoning, rest = split_think(text)
    answer = last_answer(rest) if rest is not None else None
    return (reasoning or "").strip(), (answer or "").strip()


def is_long_form(text: str) -> bool:
    """Whether ``text`` has a think block opened and closed in it followed by a closed
    ``<answer>…</answer>`` (the format reward's test)."""
    _, rest = split_think(text)
    return THINK_OPEN in text and rest is not None and last_answer(rest) is not None


def strip_reasoning(text: str) -> str:
    """The text after the think block, stripped: the whole text when there is none, ``""``
    when it never closes. For captions from models that think before they answer."""
    _, rest = split_think(text)
    return (rest or "").strip()
