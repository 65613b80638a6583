"""The hf-dataset source over datasets built on the fly in every supported format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dualcurate import DualcurateError, StageContext
from dualcurate.testing.contracts import SourceContract
from dualcurate_hf import plugin
from dualcurate_hf.sample_data import (
    FORMATS,
    NOT_AN_IMAGE,
    bomb_png,
    image_bytes,
    truncated_jpeg,
    write_dataset,
)
from dualcurate_hf.source import HFDatasetSource


def records(n_good: int = 6) -> list[dict[str, Any]]:
    """Good rows (noisy questions, boxed answers), then one row per failure kind."""
    good = [{"question": f"{i + 1}. What is {i} + {i}? (2 points)",
             "answer": f"\\boxed{{{2 * i}}}", "image": image_bytes(i)} for i in range(n_good)]
    return [
        *good,
        {"question": "Count the balls. Watch the video.", "answer": "3", "image": image_bytes(50)},
        {"question": "Bomb?", "answer": "1", "image": bomb_png()},
        {"question": "Truncated?", "answer": "1", "image": truncated_jpeg()},
        {"question": "Not an image?", "answer": "1", "image": NOT_AN_IMAGE},
        {"question": None, "answer": "1", "image": image_bytes(51)},
        {"question": "No answer?", "answer": None, "image": image_bytes(52)},
        {"question": "What is 0 + 0?", "answer": "0", "image": image_bytes(0)},  # dup of row 0
    ]


EXPECTED_DROPS = {"needs_other_media": 1, "image_too_large": 1, "image_corrupt": 1,
                  "image_not_an_image": 1, "missing_question": 1, "missing_answer": 1}


def read_all(config: dict[str, Any], ctx: StageContext) -> list[dict[str, Any]]:
    stage = HFDatasetSource(config)
    stage.setup(ctx)
    try:
        return [row for batch in stage.read(ctx) for row in batch]
    finally:
        stage.teardown()


def report_of(ctx: StageContext) -> dict[str, Any]:
    return json.loads((ctx.workdir / "standardisation.json").read_text())


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_standardises_the_same(fmt: str, tmp_path: Path,
                                            stage_context: StageContext) -> None:
    path = write_dataset(tmp_path / fmt, fmt, records())
    rows = read_all({"sources": [{"name": f"src-{fmt}", "domain": "math", fmt: str(path)}],
                     "batch_size": 4}, stage_context)
    assert [r["question"] for r in rows] == [f"What is {i} + {i}?" for i in range(6)]
    assert [r["answer"] for r in rows] == [str(2 * i) for i in range(6)]
    assert {(r["source"], r["domain"], r["answer_type"]) for r in rows} == {
        (f"src-{fmt}", "math", "number")}
    assert rows[1]["original_question"] == "2. What is 1 + 1? (2 points)"
    assert rows[1]["original_answer"] == "\\boxed{2}"
    for row in rows:
        assert len(row["images"]) == 1 and stage_context.images.has(row["images"][0])
        image = stage_context.images.open(row["images"][0])
        assert image.mode == "RGB" and image.format == "PNG"
        assert json.loads(row["meta"])["source_row"] < 13
    report = report_of(stage_context)["sources"][f"src-{fmt}"]
    assert report["rows_in"] == 13 and report["rows_out"] == 6
    assert report["dropped"] == EXPECTED_DROPS
    assert report["duplicates"] == {"exact": 1}
    assert report["answer_types"] == {"number": 6}
    assert (stage_context.workdir / "standardisation.md").read_text().count("src-") == 1


def test_sources_merge_tagged_with_exact_dedup_across_them(tmp_path: Path,
                                                           stage_context: StageContext) -> None:
    geo = write_dataset(tmp_path / "geo", "parquet", records(3))
    charts = write_dataset(tmp_path / "charts", "jsonl", [
        {"prompt": "What is 1 + 1?", "label": "2", "pic": image_bytes(1)},  # dup of geo row 1
        {"prompt": "Which bar is tallest?", "label": "B", "pic": image_bytes(70),
         "options": ["first", "second"]},
    ], image_column="pic")
    config = {"sources": [
        {"name": "geo", "domain": "math", "parquet": str(geo)},
        {"name": "charts", "domain": "chart", "jsonl": str(charts),
         "fields": {"question": "prompt", "answer": "label", "image": "pic",
                    "choices": "options"}},
    ]}
    rows = read_all(config, stage_context)
    assert [(r["source"], r["domain"]) for r in rows] == [("geo", "math")] * 3 + [
        ("charts", "chart")]
    chart = rows[-1]
    assert chart["answer_type"] == "multiple_choice" and chart["choices"] == ["first", "second"]
    assert chart["question"] == "Which bar is tallest?\nA. first\nB. second"
    report = report_of(stage_context)
    assert report["sources"]["charts"]["duplicates"] == {"exact": 1}
    assert report["totals"]["rows_out"] == 4
    again = read_all(config, stage_context)
    assert [r["id"] for r in again] == [r["id"] for r in rows]


def test_unknown_column_is_a_clear_error(tmp_path: Path, stage_context: StageContext) -> None:
    path = write_dataset(tmp_path, "parquet", records(2))
    config = {"sources": [{"name": "first", "parquet": str(path)},
                          {"name": "geo", "parquet": str(path),
                           "fields": {"question": "problem"}}]}
    batches = HFDatasetSource(config).read(stage_context)
    with pytest.raises(DualcurateError) as err:
        next(batches)  # before any row of the first source
    message = str(err.value)
    assert "'geo'" in message and "'problem'" in message
    assert "question, answer, image" in message


def test_missing_file_found_by_check_and_by_read(tmp_path: Path, plugin_host,
                                                 stage_context: StageContext) -> None:
    config = {"sources": [{"name": "gone", "jsonl": str(tmp_path / "nope" / "*.jsonl")},
                          {"name": "dir", "load_from_disk": str(tmp_path / "nodir")}]}
    problems = HFDatasetSource(config).preflight(plugin_host)
    assert len(problems) == 2
    assert "'gone'" in problems[0] and "matches no file" in problems[0]
    assert "'dir'" in problems[1] and "not a directory" in problems[1]
    with pytest.raises(DualcurateError, match="matches no file"):
        read_all(config, stage_context)


@pytest.mark.parametrize(("fmt", "content", "match"), [
    ("parquet", b"PAR1 this is not parquet", "not readable as Parquet"),
    ("jsonl", b"\xff\xfe\x00binary", "not readable as JSON Lines"),
    ("jsonl", b"[1, 2, 3]\n", "not an object"),
])
def test_unreadable_format_is_a_clear_error(fmt: str, content: bytes, match: str,
                                            tmp_path: Path, stage_context: StageContext) -> None:
    path = tmp_path / f"data.{fmt}"
    path.write_bytes(content)
    with pytest.raises(DualcurateError, match=match):
        read_all({"sources": [{"name": "bad", fmt: str(path)}]}, stage_context)


def test_malformed_csv_record_is_a_drop_with_its_line(tmp_path: Path,
                                                      stage_context: StageContext) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b'question,answer\nWhat is 1 + 1?,2\n"unterminated,1\n')
    rows = read_all({"sources": [{"name": "bad", "csv": str(path)}]}, stage_context)
    assert [r["answer"] for r in rows] == ["2"]
    drops = [json.loads(x) for x in (stage_context.workdir / "drops.jsonl").read_text()
             .splitlines()]
    assert [(d["reason"], d["line"]) for d in drops] == [("unparseable_record", 3)]


def test_bad_jsonl_lines_are_counted(tmp_path: Path, stage_context: StageContext) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "What is 2 + 3?", "answer": "5"}\n{oops\n'
                    '{"question": "Is it raining?", "answer": "no."}\n')
    rows = read_all({"sources": [{"name": "t", "jsonl": str(path)}]}, stage_context)
    assert [(r["answer"], r["answer_type"], r["images"]) for r in rows] == [
        ("5", "number", []), ("No", "yes_no", [])]
    assert report_of(stage_context)["sources"]["t"]["dropped"] == {"unparseable_record": 1}


def test_config_errors() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="exactly one of"):
        HFDatasetSource({"sources": [{"name": "x", "parquet": "a", "csv": "b"}]})
    with pytest.raises(ValidationError, match="exactly one of"):
        HFDatasetSource({"sources": [{"name": "x"}]})
    with pytest.raises(ValidationError, match="unique"):
        HFDatasetSource({"sources": [{"name": "x", "csv": "a"}, {"name": "x", "csv": "b"}]})
    with pytest.raises(ValidationError, match="Jinja"):
        HFDatasetSource({"sources": [{"name": "x", "csv": "a"}], "llm_clean_prompt": "{% if"})


class TestHFDatasetSourceContract(SourceContract):
    stage_cls = HFDatasetSource
    plugin = plugin.hf_dataset

    @pytest.fixture(autouse=True)
    def _data(self, tmp_path: Path) -> None:
        path = write_dataset(tmp_path / "contract", "parquet", records(4))
        self.config = {"sources": [{"name": "contract", "parquet": str(path)}]}


def test_image_folder_without_metadata_found_by_check(tmp_path: Path, plugin_host) -> None:
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(image_bytes(1))
    problems = HFDatasetSource({"sources": [{"name": "pics", "image_folder": str(
        tmp_path / "pics")}]}).preflight(plugin_host)
    assert len(problems) == 1 and "no metadata.jsonl or metadata.csv" in problems[0]
    (tmp_path / "pics" / "metadata.csv").write_text("file_name,question,answer\na.png,Q?,1\n")
    assert HFDatasetSource({"sources": [{"name": "pics", "image_folder": str(
        tmp_path / "pics")}]}).preflight(plugin_host) == []
