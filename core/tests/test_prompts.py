"""The prompt templates of dualcurate.formats: one template mechanism (a Jinja file or text,
the same variables, the same rendering) for the teacher and the difficulty filter."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dualcurate.distill import TeacherDistiller
from dualcurate.errors import DualcurateError
from dualcurate.formats import (
    TEMPLATE_VARIABLES,
    is_inline,
    load_template,
    render_template,
    template_problems,
    template_variables,
)

ROW = {"id": "r1", "question": "What is 3 + 4?", "choices": ["6", "7"],
       "answer_type": "number", "domain": "math", "images": ["abc"], "caption": "two dots"}


@given(st.text(max_size=30).filter(lambda s: "{{" not in s and "{%" not in s and "\n" not in s))
def test_a_value_without_markers_or_line_breaks_is_a_path(value: str) -> None:
    assert not is_inline(value)
    assert is_inline(value + "{{ question }}") and is_inline(value + "\n")


def test_a_file_and_the_same_text_render_alike(tmp_path: Path) -> None:
    text = "{{ domain }}/{{ answer_type }}/{{ n_images }}: {{ question }} {{ choices | join(',') }}"
    path = tmp_path / "p.jinja"
    path.write_text(text + "\n")
    from_file = render_template(load_template(str(path), "unused.jinja"), ROW)
    inline = render_template(load_template(text, "unused.jinja"), ROW)
    assert from_file == inline == "math/number/1: What is 3 + 4? 6,7"


def test_the_rendered_text_is_stripped() -> None:
    template = load_template("\n  {{ question }}  \n", "")
    assert render_template(template, {**ROW, "question": " q\n"}) == "q"


def test_the_caption_is_empty_unless_asked_for() -> None:
    template = load_template("[{{ caption }}] {{ question }}", "")
    assert render_template(template, ROW) == "[] What is 3 + 4?"
    assert render_template(template, ROW, include_caption=True) == "[two dots] What is 3 + 4?"
    assert set(template_variables(ROW, True)) == set(TEMPLATE_VARIABLES)


def test_an_unset_template_is_the_default_text_or_shipped_file() -> None:
    assert render_template(load_template(None, "Q: {{ question }}"), ROW) == "Q: What is 3 + 4?"
    assert "Question: What is 3 + 4?" in render_template(load_template(None, "four_phase.jinja"),
                                                          ROW)


@pytest.mark.parametrize(("value", "message"), [
    ("{{ answer }}", "unknown variable answer; the variables are question, choices"),
    ("{{ gold }} {{ answer }}", "unknown variables answer, gold"),
    ("{% if question %}", "Jinja syntax error at line 1"),
    ("missing/prompt.jinja", "file 'missing/prompt.jinja' not found"),
])
def test_template_problems_name_the_option_and_the_fix(value: str, message: str) -> None:
    (problem,) = template_problems(value)
    assert problem.startswith("template") and message in problem


def test_good_templates_have_no_problems(tmp_path: Path) -> None:
    path = tmp_path / "p.jinja"
    path.write_text("{% for c in choices %}{{ loop.index }}{{ c }}{% endfor %}{{ row.id }}")
    for value in (None, str(path), "{{ question }}", "Think.\n\n{{ question | upper }}"):
        assert template_problems(value) == []


def test_a_strict_undefined_names_the_row_and_the_variables() -> None:
    template = load_template("{{ row.missing.deeper }}", "")
    with pytest.raises(DualcurateError, match="row r1; available variables: question"):
        render_template(template, ROW)


def test_the_teacher_takes_inline_templates_and_refuses_unknown_variables() -> None:
    stage = TeacherDistiller({"engine": {"use": "hf", "model": "m"},
                              "template": "Solve: {{ question }}", "system_prompt": "S"})
    assert stage.messages(ROW) == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": [{"type": "image", "image": "abc"},
                                     {"type": "text", "text": "Solve: What is 3 + 4?"}]}]
    with pytest.raises(ValueError, match="unknown variable answer"):
        TeacherDistiller({"engine": {"use": "hf", "model": "m"}, "template": "{{ answer }}"})
