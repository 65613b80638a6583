"""The optional LLM cleaning pass: after the rules, each item goes to a model through any
registered engine with a Jinja prompt; the model answers with a JSON object holding the cleaned
question and answer and whether the item is answerable. Requests go through the run's request
cache, so a rerun never pays twice. Unparseable or failed replies keep the rule-based text."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dualcurate import ChatRequest, DualcurateError, SamplingParams
from dualcurate.formats import strip_reasoning

if TYPE_CHECKING:
    from jinja2 import Template

    from dualcurate.context import StageContext
    from dualcurate.recipe import EngineRef

DEFAULT_SYSTEM = ("You clean questions for a visual reasoning dataset. You never solve the "
                  "question; you only tidy it.")

DEFAULT_PROMPT = """\
Clean this question and its gold answer.

Rules:
1. If the question is not in English, translate it (and the answer) into English.
2. Remove noise: point values such as "(5 points)", question numbers, exam headers, URLs.
3. If the question cannot be answered from its image(s) and text alone (it needs a video, \
audio, a link or content that is missing), set "answerable" to false.
4. If the question asks for a bare answer without reasoning ("answer with a single word", \
"give only the letter"), rewrite that instruction so it asks for step-by-step reasoning \
followed by the final answer in the same form.
5. Never change what is asked or what the answer is. Write the answer plainly: no \\boxed{}, \
no unit after a number.

Question:
{{ question }}
{% if choices %}
Options:
{% for choice in choices %}{{ "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[loop.index0] }}. {{ choice }}
{% endfor %}{% endif %}
Gold answer: {{ answer }}

Reply with one JSON object and nothing else:
{"question": "<cleaned question>", "answer": "<cleaned answer>", "answerable": true}"""


def compile_template(text: str, option: str) -> Template:
    """A sandboxed Jinja template; a syntax error names the option."""
    from jinja2 import StrictUndefined, TemplateSyntaxError
    from jinja2.sandbox import SandboxedEnvironment

    try:
        return SandboxedEnvironment(undefined=StrictUndefined,
                                    keep_trailing_newline=True).from_string(text)
    except TemplateSyntaxError as exc:
        raise DualcurateError(f"{option}: not a valid Jinja template (line {exc.lineno}: "
                              f"{exc.message}); fix the template") from None


def parse_reply(text: str) -> dict[str, Any] | None:
    """The last JSON object with a "question" key in a reply after its think block, or None
    (also when the think block never closes)."""
    text = strip_reasoning(text)
    decoder = json.JSONDecoder()
    found: dict[str, Any] | None = None
    for start in [m.start() for m in re.finditer(r"\{", text)]:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("question"), str):
            found = obj
    return found


@dataclass
class LLMCleanResult:
    """What the model said about one item (``None`` fields: keep the rule-based text)."""

    question: str | None = None
    answer: str | None = None
    answerable: bool = True
    status: str = "ok"


class LLMCleaner:
    """Builds one request per item, sends a batch through ``ctx.generate``, parses replies."""

    def __init__(self, engine: EngineRef, prompt: str, system: str | None,
                 sampling: dict[str, Any], with_images: bool):
        self.engine = engine
        self.template = compile_template(prompt, "llm_clean_prompt")
        self.system = system
        self.sampling = SamplingParams(**{"temperature": 0.0, "max_tokens": 1024, **sampling})
        self.with_images = with_images

    def _request(self, item: dict[str, Any]) -> ChatRequest:
        text = self.template.render(question=item["question"], answer=item["answer"],
                                    choices=item.get("choices") or [],
                                    source=item.get("source", ""), domain=item.get("domain", ""))
        content: Any = text
        if self.with_images and item.get("images"):
            content = [*({"type": "image", "image": h} for h in item["images"]),
                       {"type": "text", "text": text}]
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": content})
        return ChatRequest(messages=messages, n=1, request_id=item.get("id", ""))

    def clean(self, items: list[dict[str, Any]], ctx: StageContext) -> list[LLMCleanResult]:
        if not items:
            return []
        engine = ctx.engine(self.engine.use, self.engine.options)
        sampling = self.sampling
        if sampling.seed is None:
            sampling = sampling.model_copy(update={"seed": ctx.seed})
        completions = ctx.generate(engine, [self._request(i) for i in items], sampling)
        results = []
        for comps in completions:
            comp = comps[0] if comps else None
            if comp is None or not comp.ok:
                results.append(LLMCleanResult(status="failed"))
                continue
            parsed = parse_reply(comp.text)
            if parsed is None:
                results.append(LLMCleanResult(status="unparseable"))
                continue
            answer = parsed.get("answer")
            results.append(LLMCleanResult(
                question=parsed["question"].strip() or None,
                answer=str(answer).strip() if answer not in (None, "") else None,
                answerable=parsed.get("answerable", True) is not False))
        return results
