"""Field mapping: which columns of a source hold the question, answer, images, choices and the
rest, and how one record becomes the raw fields of a canonical sample.

Values are read leniently (numbers become strings, a JSON string of a list becomes a list, an
integer answer with choices is an option index) and strictly where it matters: a column named
in the mapping that the data does not have is an error that names it and lists what exists.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from dualcurate import DualcurateError
from dualcurate.schema import ANSWER_TYPES

LETTERS = string.ascii_uppercase
IMAGE_COLUMN_GUESSES = ("image", "images", "image_path", "img", "file_name")


class FieldMapping(BaseModel):
    """``[[source.sources]] fields``: column names in the source for each canonical field.

    ``question`` and ``answer`` are required (they default to columns of those names);
    ``image`` defaults to the first of image/images/image_path/img/file_name that exists (none:
    a text-only source). A dotted name (``meta.question``) reads inside a struct column.
    """

    model_config = ConfigDict(extra="forbid")

    question: str = "question"
    answer: str = "answer"
    image: str | None = None
    choices: str | None = None
    answer_type: str | None = None
    caption: str | None = None
    id: str | None = None
    domain: str | None = None


@dataclass
class RawItem:
    """The mapped, not yet cleaned fields of one record."""

    question: str | None
    answer: str | None
    images: list[Any] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)
    answer_type: str | None = None
    caption: str = ""
    source_id: str | None = None
    domain: str | None = None
    answer_was_index: bool = False


def resolve_columns(mapping: FieldMapping, available: list[str], source: str,
                    keep_columns: list[str] | None = None) -> dict[str, str | None]:
    """Canonical field -> source column, checked against the columns the data has."""
    columns: dict[str, str | None] = dict(mapping.model_dump())
    if mapping.image is None:
        columns["image"] = next((c for c in IMAGE_COLUMN_GUESSES if c in available), None)
    missing = []
    for target, column in columns.items():
        if column is not None and column.split(".", 1)[0] not in available:
            missing.append(f"{column!r} (fields.{target})")
    missing.extend(f"{c!r} (keep_columns)" for c in keep_columns or [] if c not in available)
    if missing:
        raise DualcurateError(
            f"source {source!r}: column {', '.join(missing)} not in the data; available "
            f"columns: {', '.join(available) or '(none)'}. Fix [[source.sources]] fields for "
            f"{source!r} (e.g. fields.question = \"{available[0] if available else 'problem'}\")")
    return columns


def needed_columns(columns: dict[str, str | None], keep_columns: list[str]) -> list[str]:
    """The top-level source columns to read (for column projection)."""
    out: list[str] = []
    for column in [*columns.values(), *keep_columns]:
        if column is not None:
            top = column.split(".", 1)[0]
            if top not in out:
                out.append(top)
    return out


def _get(record: dict[str, Any], column: str | None) -> Any:
    if column is None:
        return None
    if column in record:
        return record[column]
    value: Any = record
    for part in column.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from pandas-written files
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) if value else None
    return str(value)


def _choices(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith(("[", "{")):
            try:
                return _choices(json.loads(stripped))
            except json.JSONDecodeError:
                pass
        return [c.strip() for c in re.split(r"\n|\|\|", stripped) if c.strip()]
    if isinstance(value, dict):
        return [str(value[k]) for k in sorted(value)]
    if isinstance(value, list | tuple):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def _images(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [v for v in value if v is not None]
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            return [v for v in json.loads(value) if v]
        except json.JSONDecodeError:
            pass
    if isinstance(value, str | bytes) and not value:
        return []
    return [value]


def map_record(record: dict[str, Any], columns: dict[str, str | None]) -> RawItem:
    """One record's raw fields per the resolved mapping."""
    choices = _choices(_get(record, columns["choices"]))
    raw_answer = _get(record, columns["answer"])
    answer_was_index = False
    if (choices and isinstance(raw_answer, int) and not isinstance(raw_answer, bool)
            and 0 <= raw_answer < len(choices)):
        raw_answer = LETTERS[raw_answer]  # ScienceQA-style option index
        answer_was_index = True
    source_id = _get(record, columns["id"])
    domain = _get(record, columns["domain"])
    return RawItem(
        question=_text(_get(record, columns["question"])),
        answer=_text(raw_answer),
        images=_images(_get(record, columns["image"])),
        choices=choices,
        answer_type=_text(_get(record, columns["answer_type"])),
        caption=_text(_get(record, columns["caption"])) or "",
        source_id=None if source_id is None else str(source_id),
        domain=None if domain is None else str(domain),
        answer_was_index=answer_was_index,
    )


# -- answer types ----------------------------------------------------------------------------
_TYPE_SYNONYMS = {
    "mc": "multiple_choice", "mcq": "multiple_choice", "choice": "multiple_choice",
    "multiple-choice": "multiple_choice", "multi_choice": "multiple_choice",
    "multiple choice": "multiple_choice", "single_choice": "multiple_choice",
    "numeric": "number", "numerical": "number", "integer": "number", "int": "number",
    "float": "number", "free_form": "open", "free-form": "open", "freeform": "open",
    "open-ended": "open", "open_ended": "open", "yesno": "yes_no", "yes/no": "yes_no",
    "bool": "yes_no", "boolean": "yes_no", "true_false": "yes_no", "formula": "expression",
    "latex": "expression", "string": "text", "word": "text", "phrase": "text",
}
_LETTER_ANSWER = re.compile(r"^\(?([A-Ha-h])[).:]?$")
_NUMBER_ANSWER = re.compile(
    r"^[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?%?$|^[-+]?\.\d+$")
_EXPRESSION_HINT = re.compile(r"\\[a-zA-Z]+|[\^=_]|\d\s*[a-zA-Z]\b|[a-zA-Z]\s*[-+*/]\s*[\w(]|"
                              r"sqrt|\bpi\b|π|√")
_YES_NO = frozenset({"yes", "no", "true", "false"})


def normalise_answer_type(value: str | None) -> str | None:
    """A declared answer type in the canonical vocabulary, or None if it is not one."""
    if value is None:
        return None
    key = value.strip().lower()
    key = _TYPE_SYNONYMS.get(key, key.replace(" ", "_"))
    return key if key in ANSWER_TYPES else None


def letter_answer(answer: str) -> str | None:
    """"B", "(b)", "B." -> "B"; None if the answer is not a single option letter."""
    m = _LETTER_ANSWER.match(answer.strip())
    return m.group(1).upper() if m else None


def infer_answer_type(answer: str, choices: list[str]) -> str:
    """multiple_choice (choices or a letter answer), number, yes_no, expression or text."""
    stripped = answer.strip()
    if choices or letter_answer(stripped):
        return "multiple_choice"
    if _NUMBER_ANSWER.match(stripped):
        return "number"
    if stripped.lower().rstrip(".") in _YES_NO:
        return "yes_no"
    if len(stripped) <= 80 and _EXPRESSION_HINT.search(stripped) and len(stripped.split()) <= 8:
        return "expression"
    return "text"


def choice_answer(answer: str, choices: list[str]) -> str:
    """For multiple choice: the option letter, if the answer is one or names an option's
    text; otherwise the answer unchanged."""
    letter = letter_answer(answer)
    if letter is not None:
        return letter
    folded = answer.strip().lower()
    for i, choice in enumerate(choices[: len(LETTERS)]):
        if choice.strip().lower() == folded:
            return LETTERS[i]
    return answer


def with_choices(question: str, choices: list[str]) -> str:
    """The question with its options appended as "A. …" lines, unless it lists them already."""
    if not choices or all(c.strip() and c.strip() in question for c in choices):
        return question
    lines = [c if re.match(r"^\(?[A-Z][.)]\s", c) else f"{LETTERS[i]}. {c}"
             for i, c in enumerate(choices[: len(LETTERS)])]
    return question.rstrip() + "\n" + "\n".join(lines)
