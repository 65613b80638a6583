"""Canonical schema and the run store."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualcurate import RunStore, Sample, StoreError, Trace, rows_to_table, sample_id
from dualcurate.schema import CANONICAL_SCHEMA, TRACE_TYPE

texts = st.text(max_size=50)


@given(texts, texts, texts, st.lists(st.text(min_size=1, max_size=10), max_size=3))
def test_sample_id_is_stable_and_content_based(source, question, answer, images):
    a = sample_id(source, question, answer, images)
    assert a == sample_id(source, question, answer, list(images))
    assert a != sample_id(source + "x", question, answer, images)
    assert a != sample_id(source, question + "x", answer, images)
    assert a != sample_id(source, question, answer, [*images, "extra"])


@settings(max_examples=50)
@given(st.lists(st.builds(Sample, source=texts, question=texts, answer=texts,
                          domain=texts, choices=st.lists(texts, max_size=3),
                          meta=st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)),
                min_size=1, max_size=5))
def test_rows_roundtrip_through_arrow(samples):
    rows = [s.to_row() for s in samples]
    table = rows_to_table(rows)
    assert table.schema.equals(CANONICAL_SCHEMA)
    back = table.to_pylist()
    assert back == rows
    for row, sample in zip(back, samples, strict=True):
        assert json.loads(row["meta"]) == sample.meta


def test_traces_get_their_declared_type():
    row = {**Sample(source="s", question="q", answer="a").to_row(),
           "traces": [Trace(text="t", answer="a").model_dump(), {"text": "partial"}]}
    table = rows_to_table([row])
    assert table.schema.field("traces").type == pa.list_(TRACE_TYPE)
    assert table.to_pylist()[0]["traces"][1]["verdict"] is None


def test_mixed_types_in_a_column_is_a_clear_error():
    with pytest.raises(ValueError, match="column 'score'"):
        rows_to_table([{"id": "1", "score": 1}, {"id": "2", "score": "high"}])


def test_shards_visible_only_when_complete(tmp_path):
    store = RunStore(tmp_path / "r")
    (store.stage_dir("s")).mkdir(parents=True)
    (store.stage_dir("s") / ".tmp-abc").write_bytes(b"half a shard")
    store.write_shard("s", 3, [{"id": "a"}])
    assert store.finished_shards("s") == [3]
    assert (store.stage_dir("s") / ".tmp-abc").exists()  # a reader never sweeps a writer's file
    store.sweep_temporary("s")  # the run that writes the stage does, before it writes
    assert not (store.stage_dir("s") / ".tmp-abc").exists()
    assert store.finished_shards("s") == [3]


def test_image_store_dedups_by_content(tmp_path):
    store = RunStore(tmp_path / "r")
    a = store.images.put(b"png-bytes")
    b = store.images.put(b"png-bytes")
    assert a == b and store.images.get(a) == b"png-bytes"
    with pytest.raises(StoreError, match="not in the image store"):
        store.images.get("0" * 64)


def test_incompatible_store_version(tmp_path):
    store = RunStore(tmp_path / "r")
    store.manifest["store_format"] = 999
    store.save_manifest()
    with pytest.raises(StoreError, match="store format 999"):
        RunStore(tmp_path / "r")


def test_unwritable_out_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot write there"):
        RunStore(blocker / "run")


def test_corrupt_manifest(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        RunStore(tmp_path / "r")
