"""Field mapping and answer types: examples and hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualcurate import DualcurateError
from dualcurate_hf.mapping import (
    FieldMapping,
    choice_answer,
    infer_answer_type,
    map_record,
    needed_columns,
    normalise_answer_type,
    resolve_columns,
    with_choices,
)

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
values = st.one_of(st.text(max_size=30), st.integers(-10**6, 10**6), st.booleans())


@given(st.lists(names, min_size=2, max_size=6, unique=True), st.data())
def test_mapping_reads_the_named_columns(columns: list[str], data: st.DataObject) -> None:
    q_col, a_col = columns[0], columns[1]
    record = {c: data.draw(values) for c in columns}
    record[q_col] = data.draw(st.text(min_size=1, max_size=30))
    resolved = resolve_columns(FieldMapping(question=q_col, answer=a_col), columns, "src")
    item = map_record(record, resolved)
    assert item.question == record[q_col]
    answer = record[a_col]
    expected = ("yes" if answer else "no") if isinstance(answer, bool) else str(answer)
    assert item.answer == expected
    assert q_col in needed_columns(resolved, []) and a_col in needed_columns(resolved, [])


@given(st.lists(names, min_size=1, max_size=6, unique=True), names)
def test_unknown_column_names_source_column_and_available(columns: list[str],
                                                          wrong: str) -> None:
    if wrong in columns:
        return
    with pytest.raises(DualcurateError) as err:
        resolve_columns(FieldMapping(question=wrong, answer=columns[0]), columns, "geo-src")
    message = str(err.value)
    assert "geo-src" in message and repr(wrong) in message and "fields.question" in message
    assert all(c in message for c in columns)


def test_image_column_guessed_and_dotted_names() -> None:
    cols = resolve_columns(FieldMapping(question="meta.q"), ["meta", "answer", "images"], "s")
    assert cols["image"] == "images"
    item = map_record({"meta": {"q": "Why?"}, "answer": 3, "images": [b"a", None, b"b"]}, cols)
    assert (item.question, item.answer, item.images) == ("Why?", "3", [b"a", b"b"])
    assert resolve_columns(FieldMapping(), ["question", "answer"], "s")["image"] is None


def test_keep_columns_checked() -> None:
    with pytest.raises(DualcurateError, match="'extra' \\(keep_columns\\)"):
        resolve_columns(FieldMapping(), ["question", "answer"], "s", keep_columns=["extra"])


@pytest.mark.parametrize(("raw", "expected"), [
    (["a", "b"], ["a", "b"]), ('["x", "y"]', ["x", "y"]), ({"B": "two", "A": "one"},
                                                            ["one", "two"]),
    ("red\nblue", ["red", "blue"]), (None, []),
])
def test_choices_shapes(raw, expected) -> None:
    cols = resolve_columns(FieldMapping(choices="opts"), ["question", "answer", "opts"], "s")
    assert map_record({"question": "q", "answer": "A", "opts": raw}, cols).choices == expected


def test_integer_answer_with_choices_is_an_option_index() -> None:
    cols = resolve_columns(FieldMapping(choices="choices"), ["question", "answer", "choices"],
                           "s")
    item = map_record({"question": "q", "answer": 2, "choices": ["a", "b", "c"]}, cols)
    assert item.answer == "C" and item.answer_was_index
    assert map_record({"question": "q", "answer": 7, "choices": ["a"]}, cols).answer == "7"


@pytest.mark.parametrize(("answer", "choices", "kind"), [
    ("B", [], "multiple_choice"), ("(c)", [], "multiple_choice"), ("x", ["x", "y"],
                                                                   "multiple_choice"),
    ("42", [], "number"), ("-3.5", [], "number"), ("1,200", [], "number"), ("3/4", [], "number"),
    ("50%", [], "number"), ("Yes", [], "yes_no"), ("no.", [], "yes_no"),
    ("\\frac{1}{2}", [], "expression"), ("2x+3", [], "expression"), ("x^2", [], "expression"),
    ("y = 3", [], "expression"), ("Paris", [], "text"), ("a red car", [], "text"),
])
def test_infer_answer_type(answer: str, choices: list[str], kind: str) -> None:
    assert infer_answer_type(answer, choices) == kind


@given(st.integers(-10**9, 10**9))
def test_integers_are_numbers(n: int) -> None:
    assert infer_answer_type(str(n), []) == "number"


@given(st.floats(-1e6, 1e6, allow_nan=False).map(lambda f: f"{f:.3f}"))
def test_decimals_are_numbers(text: str) -> None:
    assert infer_answer_type(text, []) == "number"


@pytest.mark.parametrize(("declared", "canonical"), [
    ("MCQ", "multiple_choice"), ("multiple choice", "multiple_choice"), ("integer", "number"),
    ("free-form", "open"), ("yes_no", "yes_no"), ("whatever", None), (None, None),
])
def test_declared_answer_types(declared, canonical) -> None:
    assert normalise_answer_type(declared) == canonical


def test_choice_answer_and_with_choices() -> None:
    choices = ["red", "green", "blue"]
    assert choice_answer("Blue", choices) == "C"
    assert choice_answer("(a)", choices) == "A"
    assert choice_answer("purple", choices) == "purple"
    q = with_choices("Which colour?", choices)
    assert q == "Which colour?\nA. red\nB. green\nC. blue"
    assert with_choices(q, choices) == q  # already listed: unchanged
    assert with_choices("Pick one", ["A. one", "B. two"]) == "Pick one\nA. one\nB. two"


record_text = st.one_of(st.none(), st.text(max_size=40),
                        st.sampled_from(["N/A", "See the video.", "12 cm", "\\boxed{B}",
                                         "1. Find x. (2 points)", "Answer with one word."]))


@given(st.lists(st.fixed_dictionaries({"question": record_text, "answer": record_text}),
                max_size=12))
@settings(max_examples=25, deadline=None)
def test_every_record_is_accounted_for(recs: list[dict]) -> None:
    """Whatever the records hold, each one is a row, a counted drop or a counted duplicate,
    and each row keeps what was read in original_question/original_answer."""
    import json
    import tempfile
    from pathlib import Path

    from dualcurate import StageContext
    from dualcurate.schema import ANSWER_TYPES
    from dualcurate_hf.source import HFDatasetSource

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in recs) or "\n")
        if not recs:
            return
        ctx = StageContext.ephemeral(root=Path(tmp) / "run")
        rows = [r for b in HFDatasetSource({"sources": [{"name": "h", "jsonl": str(path)}]})
                .read(ctx) for r in b]
        report = json.loads((ctx.workdir / "standardisation.json").read_text())["sources"]["h"]
        ctx.cache.close()
    assert report["rows_in"] == len(recs)
    assert report["rows_out"] == len(rows)
    assert len(rows) + sum(report["dropped"].values()) + sum(
        report["duplicates"].values()) == len(recs)
    originals = [(r["question"], r["answer"]) for r in recs]
    for row in rows:
        assert row["question"].strip() and row["answer"].strip()
        assert row["answer_type"] in ANSWER_TYPES
        assert (row["original_question"], row["original_answer"]) in originals
