"""Prompt templates, one mechanism for every stage that renders a row into a prompt (the
teacher distiller, the difficulty filter's rollouts).

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

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta

from dualcurate.errors import DualcurateError

#: The variables every template may use.
TEMPLATE_VARIABLES = ("question", "choices", "answer_type", "domain", "n_images", "caption",
                      "row")


def _environment() -> jinja2.Environment:
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
