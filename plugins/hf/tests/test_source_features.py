"""hf-dataset options: splits, Image features, image lists, limits, ids, near dedup, streaming,
the LLM cleaning pass through a registered engine, and signatures that follow the data."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from dualcurate import (
    ChatRequest,
    Completion,
    DualcurateError,
    Engine,
    Register,
    SamplingParams,
    StageContext,
    hookimpl,
)
from dualcurate_hf.sample_data import image_bytes, write_dataset
from dualcurate_hf.source import HFDatasetSource


def read_all(config: dict[str, Any], ctx: StageContext) -> list[dict[str, Any]]:
    return [row for batch in HFDatasetSource(config).read(ctx) for row in batch]


def report_of(ctx: StageContext) -> dict[str, Any]:
    return json.loads((ctx.workdir / "standardisation.json").read_text())


def test_dataset_dict_split_and_image_feature(tmp_path: Path, stage_context) -> None:
    import datasets

    rows = {"question": ["What colour is it?", "How many?"], "answer": ["red", "3"],
            "image": [{"bytes": image_bytes(1), "path": None},
                      {"bytes": image_bytes(2), "path": None}]}
    features = datasets.Features({"question": datasets.Value("string"),
                                  "answer": datasets.Value("string"),
                                  "image": datasets.Image()})
    ds = datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows, features=features)})
    ds.save_to_disk(str(tmp_path / "dd"))
    config = {"sources": [{"name": "dd", "load_from_disk": str(tmp_path / "dd"),
                           "split": "test"}]}
    out = read_all(config, stage_context)
    assert [(r["answer"], r["answer_type"]) for r in out] == [("red", "text"), ("3", "number")]
    assert all(len(r["images"]) == 1 for r in out)
    config["sources"][0]["split"] = "train"
    with pytest.raises(DualcurateError, match=r"split 'train' not in .* it has test"):
        read_all(config, stage_context)


def test_image_lists_limit_keep_columns_and_ids(tmp_path: Path, stage_context) -> None:
    recs = [{"q": f"Compare picture {i} with the next one. Which is brighter?",
             "a": "A" if i % 2 else "B", "pics": [image_bytes(i), image_bytes(i + 1)],
             "uid": f"row-{i}", "difficulty": i, "kind": "MCQ"} for i in range(10)]
    path = write_dataset(tmp_path, "parquet", recs)
    config = {"sources": [{"name": "pairs", "parquet": str(path), "limit": 7,
                           "keep_columns": ["difficulty"],
                           "fields": {"question": "q", "answer": "a", "image": "pics",
                                      "id": "uid", "answer_type": "kind"}}],
              "batch_size": 3}
    out = read_all(config, stage_context)
    assert len(out) == 7
    assert all(len(r["images"]) == 2 for r in out)
    assert out[0]["images"][1] == out[1]["images"][0]  # one image, stored once
    assert {r["answer_type"] for r in out} == {"multiple_choice"}
    meta = json.loads(out[3]["meta"])
    assert meta["difficulty"] == 3 and meta["source_id"] == "row-3"
    assert meta["image_sizes"] == [[48, 32], [48, 32]]
    report = report_of(stage_context)
    assert report["sources"]["pairs"]["rows_in"] == 7
    assert report["images"]["decoded"] == 8  # images 0..7, each decoded once


def test_dedup_off_still_gives_unique_ids(tmp_path: Path, stage_context) -> None:
    recs = [{"question": "What is shown?", "answer": "a cat", "image": image_bytes(3)}] * 3
    path = write_dataset(tmp_path, "jsonl", recs)
    source = {"name": "s", "jsonl": str(path)}
    assert len(read_all({"sources": [source]}, stage_context)) == 1
    out = read_all({"sources": [source], "dedup": {"exact": False}}, stage_context)
    assert len(out) == 3 and len({r["id"] for r in out}) == 3


def test_near_duplicates_dropped_when_enabled(tmp_path: Path, stage_context) -> None:
    base = ("In the figure, triangle ABC has a right angle at B with AB = 5 and BC = 12. "
            "Find the length of the hypotenuse AC.")
    recs = [{"question": base, "answer": "13", "image": image_bytes(4, size=(96, 64))},
            {"question": base + " Show your work.", "answer": "13",
             "image": image_bytes(4, size=(96, 64))},
            {"question": base, "answer": "13", "image": image_bytes(5, size=(96, 64))}]
    path = write_dataset(tmp_path, "parquet", recs)
    source = {"name": "s", "parquet": str(path)}
    assert len(read_all({"sources": [source]}, stage_context)) == 3
    out = read_all({"sources": [source], "dedup": {"near": True, "text_threshold": 0.7}},
                   stage_context)
    assert len(out) == 2
    assert report_of(stage_context)["sources"]["s"]["duplicates"] == {"near": 1}


def test_reads_lazily_in_batches(tmp_path: Path, stage_context) -> None:
    recs = [{"question": f"What is {i} times 3?", "answer": str(3 * i)} for i in range(1000)]
    path = write_dataset(tmp_path, "parquet", recs)
    batches = HFDatasetSource({"sources": [{"name": "s", "parquet": str(path)}],
                               "batch_size": 50}).read(stage_context)
    first = next(batches)
    assert len(first) == 50
    assert not (stage_context.workdir / "standardisation.json").exists()  # not read to the end
    assert sum(len(b) for b in batches) == 950


def test_signature_follows_the_data(tmp_path: Path) -> None:
    path = write_dataset(tmp_path, "jsonl", [{"question": "What is 2+2?", "answer": "4"}])
    config = {"sources": [{"name": "s", "jsonl": str(path)}]}
    before = HFDatasetSource(config).signature()
    assert HFDatasetSource({**config, "batch_size": 7}).signature() == before
    path.write_text(json.dumps({"question": "What is 2+3?", "answer": "5"}) + "\n")
    os.utime(path, ns=(1, 1))
    assert HFDatasetSource(config).signature() != before


# -- the LLM cleaning pass -------------------------------------------------------------------
class FakeCleanEngine(Engine):
    """Upper-cases the question it finds in the prompt; says "unanswerable" for DROPME."""

    name = "fake-clean"
    calls = 0

    def generate(self, requests: Sequence[ChatRequest], sampling: SamplingParams,
                 on_result=None) -> list[list[Completion]]:
        out = []
        for i, request in enumerate(requests):
            prompt = request.messages[-1]["content"]
            question = prompt.split("Question:\n", 1)[1].split("\n", 1)[0]
            if "GARBLE" in question:
                text = "I cannot produce JSON today."
            else:
                text = "<think>{not json}</think>" + json.dumps(
                    {"question": question.upper(), "answer": "four",
                     "answerable": "DROPME" not in question})
            comps = [Completion(text=text, finish_reason="stop", completion_tokens=9)]
            if on_result is not None:
                on_result(i, comps)
            out.append(comps)
        type(self).calls += len(requests)
        return out


class FakeEnginePlugin:
    @hookimpl
    def dualcurate_register_engines(self, register: Register) -> None:
        register(FakeCleanEngine)


def test_llm_cleaning_pass(tmp_path: Path, stage_context, register_plugin,
                           plugin_host) -> None:
    register_plugin(FakeEnginePlugin(), name="fake-clean-plugin")
    path = write_dataset(tmp_path, "jsonl", [
        {"question": "what is 2+2?", "answer": "4"},
        {"question": "DROPME please", "answer": "1"},
        {"question": "GARBLE this", "answer": "2"},
    ])
    config = {"sources": [{"name": "s", "jsonl": str(path)}],
              "llm_clean_engine": {"use": "fake-clean", "model": "fake"}}
    assert HFDatasetSource(config).preflight(plugin_host) == []
    FakeCleanEngine.calls = 0
    out = read_all(config, stage_context)
    assert [(r["question"], r["answer"]) for r in out] == [("WHAT IS 2+2?", "four"),
                                                          ("GARBLE this", "2")]
    assert json.loads(out[0]["meta"])["cleaned"] == ["llm"]
    report = report_of(stage_context)
    assert report["sources"]["s"]["dropped"] == {"llm_unanswerable": 1}
    assert report["llm_clean"] == {"ok": 2, "unparseable": 1}
    assert FakeCleanEngine.calls == 3
    stage_context.close()  # a new engine instance; answers come from the request cache
    assert [r["id"] for r in read_all(config, stage_context)] == [r["id"] for r in out]
    assert FakeCleanEngine.calls == 3


def test_llm_engine_is_a_reference_validated_before_the_run(plugin_host,
                                                            register_plugin) -> None:
    from dualcurate.recipe import check_refs

    sources = [{"name": "s", "jsonl": __file__}]
    problems = check_refs(HFDatasetSource({"sources": sources,
                                           "llm_clean_engine": "nobody"}).config, plugin_host)
    assert problems and problems[0].startswith("llm_clean_engine.use: engine 'nobody'")
    register_plugin(FakeEnginePlugin(), name="fake-clean-plugin")
    misspelt = HFDatasetSource({"sources": sources, "llm_clean_engine": {
        "use": "fake-clean", "model": "fake", "temprature": 0}})
    assert [p.split(" (")[0] for p in check_refs(misspelt.config, plugin_host)] == \
        ["llm_clean_engine.temprature: unknown option"]
    assert HFDatasetSource({"sources": sources}).config.llm_clean_engine is None


def test_hub_reader_streams_through_datasets(tmp_path: Path, stage_context) -> None:
    """The hub path (load_dataset, streaming), exercised offline with a packaged builder and
    local data_files; Image features arrive as bytes, not decoded PIL images."""
    import datasets

    features = datasets.Features({"problem": datasets.Value("string"),
                                  "solution": datasets.Value("string"),
                                  "image": datasets.Image()})
    datasets.Dataset.from_dict(
        {"problem": ["Find x. (2 points)", "Is the line straight?"], "solution": ["3", "Yes"],
         "image": [{"bytes": image_bytes(1), "path": None},
                   {"bytes": image_bytes(2), "path": None}]},
        features=features).to_parquet(str(tmp_path / "d.parquet"))
    config = {"sources": [{"name": "h", "hub": "parquet",
                           "data_files": str(tmp_path / "d.parquet"),
                           "fields": {"question": "problem", "answer": "solution"}}]}
    out = read_all(config, stage_context)
    assert [(r["question"], r["answer_type"]) for r in out] == [("Find x.", "number"),
                                                               ("Is the line straight?",
                                                                "yes_no")]
    assert all(stage_context.images.has(r["images"][0]) for r in out)


def test_ids_unique_when_only_choices_differ(tmp_path: Path, stage_context) -> None:
    recs = [{"question": "Pick the warm colour: red, green or blue?", "answer": "A",
             "options": opts} for opts in (["red", "green"], ["red", "blue"])]
    path = write_dataset(tmp_path, "jsonl", recs)
    out = read_all({"sources": [{"name": "s", "jsonl": str(path),
                                 "fields": {"choices": "options"}}],
                    "append_choices": False}, stage_context)
    assert len(out) == 2 and out[0]["id"] != out[1]["id"]
