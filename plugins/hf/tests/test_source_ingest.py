"""Real layouts read as they are, and every lost row accounted for: undecodable bytes as
per-row drops with line numbers, JSON arrays, image ids resolved in an image folder,
drops.jsonl, the kept-fraction warning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dualcurate import DualcurateError, StageContext
from dualcurate_hf.sample_data import image_bytes
from dualcurate_hf.source import HFDatasetSource


def read_all(config: dict[str, Any], ctx: StageContext) -> list[dict[str, Any]]:
    return [row for batch in HFDatasetSource(config).read(ctx) for row in batch]


def drops_of(ctx: StageContext) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (ctx.workdir / "drops.jsonl").read_text().splitlines()]


def report_of(ctx: StageContext) -> dict[str, Any]:
    return json.loads((ctx.workdir / "standardisation.json").read_text())


def test_one_bad_byte_in_jsonl_drops_one_row_with_its_line(tmp_path: Path,
                                                           stage_context: StageContext) -> None:
    path = tmp_path / "d.jsonl"
    lines = [json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}).encode()
             for i in range(5)]
    lines[2] = lines[2].replace(b"What", b"Wh\xffat")
    path.write_bytes(b"\n".join(lines) + b"\n")
    rows = read_all({"sources": [{"name": "t", "jsonl": str(path)}]}, stage_context)
    assert [r["answer"] for r in rows] == ["1", "2", "4", "5"]
    [drop] = drops_of(stage_context)
    assert (drop["source"], drop["line"], drop["reason"]) == ("t", 3, "undecodable_text")
    rep = report_of(stage_context)["sources"]["t"]
    assert (rep["rows_in"], rep["rows_out"], rep["dropped"]) == (5, 4, {"undecodable_text": 1})


def test_one_bad_byte_in_csv_and_the_encoding_option(tmp_path: Path,
                                                     stage_context: StageContext) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"question,answer\nQuelle est la capitale ?,Paris\n"
                     + "Combien fait 2 × 3 ?,6\n".encode("latin-1") + b"Is 7 prime?,yes\n")
    rows = read_all({"sources": [{"name": "c", "csv": str(path)}]}, stage_context)
    assert [r["answer"] for r in rows] == ["Paris", "Yes"]
    assert [(d["line"], d["reason"]) for d in drops_of(stage_context)] == [
        (3, "undecodable_text")]
    ctx = StageContext.ephemeral()
    latin = tmp_path / "latin.csv"
    latin.write_bytes("question,answer\nCombien fait 2 × 3 ?,6\n".encode("latin-1"))
    rows = read_all({"sources": [{"name": "c", "csv": str(latin), "encoding": "latin-1"}]}, ctx)
    assert rows[0]["original_question"] == "Combien fait 2 × 3 ?"


def test_unknown_encoding_is_a_config_error() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown encoding"):
        HFDatasetSource({"sources": [{"name": "x", "csv": "a", "encoding": "utf-9"}]})


@pytest.mark.parametrize("wrapped", [False, True])
def test_json_array_of_objects(tmp_path: Path, stage_context: StageContext,
                               wrapped: bool) -> None:
    records = [{"question": f"How many sides has shape {i}?", "answer": i + 3}
               for i in range(3)]
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"data": records} if wrapped else records, indent=2))
    rows = read_all({"sources": [{"name": "j", "json": str(path)}]}, stage_context)
    assert [r["answer"] for r in rows] == ["3", "4", "5"]
    assert [json.loads(r["meta"])["source_line"] for r in rows] == ([3, 7, 11] if wrapped else [2, 6, 10])


def test_json_array_of_lists_with_image_ids(tmp_path: Path, stage_context: StageContext) -> None:
    images = tmp_path / "images" / "train"
    images.mkdir(parents=True)
    for i in (7, 8):
        (images / f"{i}.png").write_bytes(image_bytes(i))
    path = tmp_path / "q.json"
    path.write_text(json.dumps([["What colour is the square?", "red", 7],
                                ["What colour is the circle?", "blue", 8],
                                ["What is missing?", "x", 9]]))
    source = {"name": "ids", "json": str(path), "columns": ["question", "answer", "image_id"],
              "image_dir": str(tmp_path / "images" / "{split}"),
              "fields": {"image": "{image_id}.png"}}
    rows = read_all({"sources": [source]}, stage_context)
    assert [r["answer"] for r in rows] == ["red", "blue"]
    assert all(len(r["images"]) == 1 for r in rows)
    [drop] = drops_of(stage_context)
    assert drop["reason"] == "image_missing" and drop["question"] == "What is missing?"
    # the same ids without a format string: looked up with common suffixes
    ctx = StageContext.ephemeral()
    source = {"name": "ids", "json": str(path), "columns": ["question", "answer", "image"],
              "image_dir": str(images)}
    assert [r["images"] for r in read_all({"sources": [source]}, ctx)] == [
        r["images"] for r in rows]


def test_integer_image_without_image_dir_says_what_to_do(tmp_path: Path,
                                                         stage_context: StageContext) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "Q?", "answer": "1", "image": 5}) + "\n")
    assert read_all({"sources": [{"name": "n", "jsonl": str(path)}]}, stage_context) == []
    [drop] = drops_of(stage_context)
    assert drop["reason"] == "image_unsupported_input" and "image_dir" in drop["message"]
    assert report_of(stage_context)["warnings"] == [
        "source 'n' kept 0 of 1 rows read (top reasons: image_unsupported_input 1)"]


def test_strict_fails_after_writing_the_report(tmp_path: Path,
                                               stage_context: StageContext) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"question": "Same?", "answer": "1"}) + "\n"
                            for _ in range(4)))
    with pytest.raises(DualcurateError, match="kept 1 of 4 rows read"):
        read_all({"sources": [{"name": "d", "jsonl": str(path)}], "strict": True},
                 stage_context)
    drops = drops_of(stage_context)
    assert len(drops) == 3 and {d["reason"] for d in drops} == {"duplicate_exact"}
    assert len({d["kept_id"] for d in drops}) == 1


def test_same_question_with_another_gold_answer_is_a_conflict_not_a_duplicate(
        tmp_path: Path, stage_context: StageContext) -> None:
    path = tmp_path / "d.jsonl"
    records = [{"question": "What colour is it?", "answer": "green"},
               {"question": "what colour  is it?", "answer": "Green"},   # a duplicate
               {"question": "What colour is it?", "answer": "yellow"}]   # a conflict: kept
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = read_all({"sources": [{"name": "d", "jsonl": str(path)}]}, stage_context)
    assert [r["answer"] for r in rows] == ["green", "yellow"]
    [drop] = drops_of(stage_context)
    assert drop["reason"] == "duplicate_exact" and drop["kept_id"] == rows[0]["id"]
    rep = report_of(stage_context)["sources"]["d"]
    assert rep["near_conflicts"] == 1  # counted with near-duplicate conflicts


def test_data_edited_in_place_changes_the_signature_even_with_size_and_mtime_kept(
        tmp_path: Path) -> None:
    import os

    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "2"}) + "\n")
    config = {"sources": [{"name": "d", "jsonl": str(path)}]}
    before = HFDatasetSource(config).signature()
    st = path.stat()
    path.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "3"}) + "\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
    assert path.stat().st_size == st.st_size
    assert HFDatasetSource(config).signature() != before
    assert HFDatasetSource(config).signature() == HFDatasetSource(config).signature()


def test_conflicts_drop_drops_every_row_of_a_conflict(tmp_path: Path,
                                                      stage_context: StageContext) -> None:
    path = tmp_path / "d.jsonl"
    records = [{"question": "What colour is it?", "answer": "green"},
               {"question": "What is 2 + 2?", "answer": "4"},
               {"question": "what colour is it?", "answer": "green"},    # a duplicate of 1
               {"question": "What colour is it?", "answer": "yellow"}]   # a conflict with 1
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = {"sources": [{"name": "d", "jsonl": str(path)}], "dedup": {"conflicts": "drop"}}
    rows = read_all(config, stage_context)
    assert [r["answer"] for r in rows] == ["4"]
    reasons = sorted(d["reason"] for d in drops_of(stage_context))
    assert reasons == ["conflict_dropped", "conflict_dropped", "duplicate_exact"]
    rep = report_of(stage_context)["sources"]["d"]
    assert (rep["rows_in"], rep["rows_out"]) == (4, 1)
