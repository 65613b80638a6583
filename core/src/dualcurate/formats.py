"""The texts a model sees and writes, written and read here only: the trace and answer
format, the mode prompts, and the prompt templates and chat messages a row becomes.

The trace format
----------------

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

Prompt templates
----------------

One mechanism for every stage that renders a row into a prompt (the teacher distiller, the
difficulty filter's rollouts).

A ``template`` option is Jinja: the path of a ``.jinja`` file, or the template text itself
(a value holding ``{{``, ``{%`` or a line break is text; anything else is a path). Unset, the
stage's default applies (a file shipped in ``dualcurate/prompts/`` or an inline text). Every
template gets the same variables (:data:`TEMPLATE_VARIABLES`, :func:`template_variables`):
``question``, ``choices`` (a list), ``answer_type``, ``domain``, ``n_images``, ``caption``
(empty unless the stage's ``include_caption`` is set) and ``row`` (the whole row). The
rendered text is stripped of surrounding whitespace. Undefined variables are errors
(``StrictUndefined``), found when the option is validated (:func:`template_problems`) rather
than at the first row.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from dualcurate.errors import DualcurateError

if TYPE_CHECKING:
    import jinja2

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


# prompt templates ----------------------------------------------------------------------

#: The variables every template may use.
TEMPLATE_VARIABLES = ("question", "choices", "answer_type", "domain", "n_images", "caption",
                      "row")


def _environment() -> jinja2.Environment:
    import jinja2  # imported on first use: the CLI starts without it

    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
                              autoescape=False)


def is_inline(value: str) -> bool:
    """Whether a ``template`` value is the template text (it holds ``{{``, ``{%`` or a line
    break) rather than a file path."""
    return "{{" in value or "{%" in value or "\n" in value


def template_source(value: str | None, default: str) -> tuple[str, str]:
    """``(source, name)`` of a template option: the text itself, a user file, or (``value``
    None) the default: a file shipped in ``dualcurate/prompts/`` when ``default`` ends in
    ``.jinja``, else ``default`` as the text."""
    if value is None:
        if default.endswith(".jinja"):
            source = resources.files("dualcurate").joinpath("prompts", default).read_text("utf-8")
            return source, f"prompts/{default}"
        return default, "<default template>"
    if is_inline(value):
        return value, "<inline template>"
    return Path(value).expanduser().read_text("utf-8"), value


def load_template(value: str | None, default: str) -> jinja2.Template:
    """The Jinja template a ``template`` option names (see :func:`template_source`)."""
    source, name = template_source(value, default)
    template = _environment().from_string(source)
    template.name = name
    return template


def template_problems(value: str | None, default: str = "", option: str = "template",
                      ) -> list[str]:
    """What is wrong with a ``template`` option: a file that does not exist, a Jinja syntax
    error, a variable that is not one of :data:`TEMPLATE_VARIABLES`. Empty when it is fine."""
    if value is None and not default:
        return []
    if value is not None and not is_inline(value) and not Path(value).expanduser().is_file():
        return [f"{option}: file {value!r} not found; give the path of a Jinja file, the "
                f"template text itself (e.g. \"{{{{ question }}}}\"), or leave it unset for "
                f"the default prompt"]
    import jinja2.meta

    source, name = template_source(value, default)
    env = _environment()
    try:
        parsed = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return [f"{option} {name}: Jinja syntax error at line {exc.lineno}: {exc.message}; "
                f"fix the template"]
    unknown = sorted(jinja2.meta.find_undeclared_variables(parsed)
                     - set(TEMPLATE_VARIABLES) - set(env.globals))
    if unknown:
        return [f"{option} {name}: unknown variable{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(unknown)}; the variables are {', '.join(TEMPLATE_VARIABLES)}"]
    return []


def template_variables(row: Mapping[str, Any], include_caption: bool) -> dict[str, Any]:
    """The variables a template renders one row with."""
    return {"question": row.get("question") or "", "choices": list(row.get("choices") or []),
            "answer_type": row.get("answer_type") or "open",
            "domain": row.get("domain") or "", "n_images": len(row.get("images") or []),
            "caption": (row.get("caption") or "") if include_caption else "",
            "row": row}


def render_template(template: jinja2.Template, row: Mapping[str, Any],
                    include_caption: bool = False) -> str:
    """``template`` rendered for one row, stripped."""
    import jinja2

    env = template.environment
    try:
        # render() without its per-call ChainMap over the globals (a third of its cost)
        context = template.new_context(
            {**env.globals, **template_variables(row, include_caption)}, shared=True)
        return env.concat(template.root_render_func(context)).strip()  # type: ignore[attr-defined]
    except jinja2.UndefinedError as exc:
        raise DualcurateError(f"template {template.name}: {exc.message} while rendering row "
                              f"{row.get('id')}; available variables: "
                              f"{', '.join(TEMPLATE_VARIABLES)}") from exc


def user_messages(text: str, images: list[str] | None = None,
                  system_prompt: str | None = None) -> list[dict[str, Any]]:
    """Chat messages: an optional system message, then the user turn with the images (by
    hash) followed by ``text``."""
    parts: list[dict[str, Any]] = [{"type": "image", "image": h} for h in images or []]
    parts.append({"type": "text", "text": text})
    out: list[dict[str, Any]] = []
    if system_prompt:
        out.append({"role": "system", "content": system_prompt})
    out.append({"role": "user", "content": parts})
    return out
