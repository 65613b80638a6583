"""The trace format, written and read here only.

A long (thinking) response is ``<think>{reasoning}</think>\\n<answer>{answer}</answer>``
(:func:`render_trace`); a short (direct) one is ``<answer>{answer}</answer>``
(:func:`render_answer`). The mode is chosen by a prefix on the user's text
(:func:`render_mode_prompt`, :data:`MODE_PREFIXES`). Training data, rewards, the teacher's
traces, the verifier and the demo's models all use these bytes: changing them changes what
trained models write and misses every request cache entry.

The split rule, one for every reader (the distiller, the verifier, rewards, rollouts,
captions). Thinking models restate the prompt's instructions in their reasoning ("I put my
reasoning in <think> … </think> and after </think> write the answer"), so a ``<think>`` or
``</think>`` inside the reasoning is read as quoted text, not as the block's edge:

1. Where the block opens: at a ``<think>`` that begins the response (after whitespace).
   Otherwise, when the response holds a think tag anywhere, the chat template opened the block
   in the prompt and it opens at the response's start: a ``<think>`` later in the text is
   quoted reasoning, and nothing before it is dropped. Neither tag: no reasoning; the whole
   text is the *rest*, where the answer is.
2. Where it closes: the tags after the opening are read in order, each ``<think>`` one level
   deeper into the block (a quote), each ``</think>`` one level out (never past the outside).
   The block closes at the last ``</think>`` before a ``<think>`` met outside it (which opens
   a second block), or at the text's last ``</think>`` when none comes. Everything after the
   close is the rest. So quoted pairs (``<think></think>``), a quoted ``<think>`` alone and a
   quoted ``</think>`` alone are all reasoning, while ``<think>a</think> 3 <think>b</think>
   5`` is still two blocks with an answer between them (its rest is `` 3 <think>b</think> 5``).
3. A block with no ``</think>`` after its opening (a response cut off at the token limit):
   everything after the opening is reasoning and there is no rest (no answer).

For an ordinary response (at most one ``<think>``, at the start, and one ``</think>`` after
it) this is vLLM's split: ``text.partition("</think>")`` after the opening. vLLM's reasoning
parsers differ on quoted tags: they drop everything before the first ``<think>`` anywhere and
end the reasoning at the first ``</think>``, deciding while streaming, without the text that
follows; a reader of a whole response can tell a quote from the close by what follows it.

What the rule gives up: text between a ``</think>`` and a later one, with no ``<think>``
between, is reasoning, so ``<think>a</think> 3 </think> 5`` answers 5 (vLLM would show `` 3
</think> 5``); only the last answer is scored either way. A reasoning that quotes
``</think>`` alone and later ``<think>`` reads as two blocks; one that quotes ``<think>``
alone reads a second block after it as part of the first. A preamble before the model's own
``<think>`` (``Sure.\n<think>r</think>…``) cannot be told from a quote and stays in the
reasoning. Whether a response with
more than one think block is acceptable is the verifier's rule (``rule-verify`` rejects it),
not the format's.

The answer is the inside of the last ``<answer>…</answer>`` in the rest (several: the last
wins), ``""`` when there is none. :func:`split_trace` and :func:`strip_reasoning` strip
surrounding whitespace; :func:`split_think` returns the parts as written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dualcurate.chat import Completion

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
_THINK_TAG = re.compile(f"{re.escape(THINK_OPEN)}|{re.escape(THINK_CLOSE)}")


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

    ``reasoning`` is None when there is no think tag; ``rest`` is None when the think block
    never closes (a truncated response: no answer).
    """
    body = text.lstrip()
    if body.startswith(THINK_OPEN):
        start = len(text) - len(body) + len(THINK_OPEN)
    elif THINK_OPEN in text or THINK_CLOSE in text:
        start = 0  # the chat template opened the block in the prompt
    else:
        return None, text
    close_at = _block_close(text, start)
    if close_at is None:
        return text[start:], None
    return text[start:close_at], text[close_at + len(THINK_CLOSE):]


def _block_close(text: str, start: int) -> int | None:
    """Where the think block opened at ``start`` closes: the last ``</think>`` before a
    ``<think>`` that reopens it (rule 2 of the module docstring), None when none follows."""
    depth, close_at = 1, None
    for tag in _THINK_TAG.finditer(text, start):
        if tag.group() == THINK_CLOSE:
            close_at, depth = tag.start(), max(depth - 1, 0)
        elif depth == 0:
            break  # after the block closed: a second block
        else:
            depth += 1  # a quoted <think> inside the reasoning
    return close_at


def last_answer(text: str) -> str | None:
    """The inside of the last closed ``<answer>…</answer>`` of ``text`` (unstripped), or None.
    ``text`` is searched whole: pass the rest of :func:`split_think` to skip the reasoning."""
    answers = _ANSWER.findall(text)
    return answers[-1] if answers else None


#: The version of the split rule: the run store keeps a trace's ``reasoning`` and ``answer``
#: only where they differ from :func:`split_trace` of its ``text`` and records this number
#: (``dualcurate.store``); change it whenever the rule would split a stored text differently.
SPLIT_VERSION = 1


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


def make_trace(completion: Completion, sample_index: int, model: str,
               engine: str) -> dict[str, Any]:
    """One trace (the keys of :class:`dualcurate.schema.Trace`, verdict not yet set) from one
    completion: the teacher's traces and the difficulty filter's rollouts alike. Reasoning and
    answer by :func:`split_trace`; a failed completion keeps its error and no text."""
    if not completion.ok:
        return {"text": "", "reasoning": "", "answer": "", "finish_reason": None,
                "truncated": False, "prompt_tokens": 0, "completion_tokens": 0,
                "model": model, "engine": engine, "sample_index": sample_index,
                "error": completion.error, "verdict": None, "method": None, "label": None,
                "reason": None}
    reasoning, answer = split_trace(completion.text)
    return {"text": completion.text, "reasoning": reasoning, "answer": answer,
            "finish_reason": completion.finish_reason,
            "truncated": completion.finish_reason == "length",
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "model": model, "engine": engine, "sample_index": sample_index, "error": None,
            "verdict": None, "method": None, "label": None, "reason": None}
