"""Column deltas: a map stage's shard holds the ids and the columns it adds or changes, and every
reader sees the rows a full copy would give."""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualcurate import RunStore, StoreError
from dualcurate.formats import split_trace
from dualcurate.report_sections import RunView
from dualcurate.schema import rows_to_table
from dualcurate.store import STORE_FORMAT, kept

TRACE_FIELDS = ("text", "verdict", "label")
words = st.sampled_from(["a", "b", "long answer text " * 3, "", None])
floats = st.sampled_from([0.0, -0.0, 1.5, math.nan, None])


@st.composite
def source_rows(draw, index: int) -> list[dict]:
    n = draw(st.integers(0, 4))
    return [{"id": f"s{index}-{i}", "question": draw(words), "score": draw(floats),
             "traces": draw(st.one_of(st.none(), st.lists(
                 st.fixed_dictionaries({f: words for f in TRACE_FIELDS}), max_size=3)))}
            for i in range(n)]


OPS = ("add", "change_question", "change_score", "verdict", "keep", "nothing", "new_trace",
       "drop_traces", "retype")


def apply(op: str, rows: list[dict], draw) -> list[dict]:
    """One map stage's output for its input ``rows`` (same ids, same order)."""
    out = copy.deepcopy(rows)
    for row in out:
        if op == "add":
            row["added"] = draw(st.integers(-3, 3))
        elif op == "change_question" and draw(st.booleans()):
            row["question"] = draw(words)
        elif op == "change_score":
            row["score"] = draw(floats)
        elif op == "verdict" and row.get("traces"):
            for trace in row["traces"]:
                trace["verdict"] = draw(st.sampled_from(["correct", "incorrect", None]))
        elif op == "keep":
            row["keep"] = draw(st.sampled_from([True, False, None]))
        elif op == "new_trace" and row.get("traces") is not None:
            row["traces"] = [*row["traces"], {"text": "more", "verdict": None, "label": None}]
        elif op == "drop_traces":
            row["traces"] = None
        elif op == "retype":
            row["score"] = None if row.get("score") is None else str(row["score"])
    return out


def write_chain(data, root: Path) -> tuple[RunStore, RunStore, list[str]]:
    """The same stages written twice: ``deltas`` with ``base`` (as map stages do), ``full``
    without (whole copies, the reference)."""
    deltas, full = RunStore(root / "delta"), RunStore(root / "full")
    shards = data.draw(st.integers(1, 3))
    ops = data.draw(st.lists(st.sampled_from(OPS), min_size=1, max_size=4))
    current = {i: data.draw(source_rows(i)) for i in range(shards)}
    for i, rows in current.items():
        deltas.write_shard("source", i, rows)
        full.write_shard("source", i, rows)
    stages = ["source"]
    for n, op in enumerate(ops):
        name = f"m{n}"
        for i in range(shards):
            rows_in = kept(deltas.read_shard(stages[-1], i)).to_pylist()
            out = apply(op, rows_in, data.draw) if rows_in else [{"id": None}][:0]
            table = out if out else pa.table({"id": pa.array([], pa.string())})
            deltas.write_shard(name, i, table, base=(stages[-1], i))
            full.write_shard(name, i, table)
        stages.append(name)
    return deltas, full, stages


def same(a, b) -> bool:
    """Equal rows, telling -0.0 from 0.0 and NaN from NaN (by repr)."""
    return repr(a) == repr(b)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_every_reader_sees_the_rows_of_a_full_copy(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("chain")
    deltas, full, stages = write_chain(data, root)
    view_d, view_f = RunView(deltas), RunView(full)
    for stage in stages:
        assert deltas.finished_shards(stage) == full.finished_shards(stage)
        assert deltas.count_rows(stage) == full.count_rows(stage)
        assert deltas.stage_schema(stage) == full.stage_schema(stage)
        assert view_d.columns(stage) == view_f.columns(stage)
        for i in full.finished_shards(stage):
            want = full.read_shard(stage, i)
            got = deltas.read_shard(stage, i)
            assert got.schema == want.schema and got.schema.metadata == want.schema.metadata
            assert [f.type for f in got.schema] == [f.type for f in want.schema]
            assert same(got.to_pylist(), want.to_pylist())
            assert deltas.shard_schema(stage, i) == full.shard_schema(stage, i)
            subset = data.draw(st.lists(st.sampled_from(want.column_names), unique=True)
                               if want.column_names else st.just([]))
            assert same(deltas.read_shard(stage, i, subset).to_pylist(),
                        full.read_shard(stage, i, subset).to_pylist())
        assert same([t.to_pylist() for t in deltas.iter_tables(stage)],
                    [t.to_pylist() for t in full.iter_tables(stage)])
        assert same(deltas.dataset(stage).to_list(), full.dataset(stage).to_list())
        assert deltas.dataset(stage).features == full.dataset(stage).features
        assert same([t.to_pylist() for t in view_d.tables(stage, ["id", "score", "nope"])],
                    [t.to_pylist() for t in view_f.tables(stage, ["id", "score", "nope"])])
        assert deltas.stale_deltas(stage) == []


ROWS = [{"id": f"r{i}", "question": f"question {i} " * 20,
         "traces": [{"text": f"trace {i}.{k} " * 50, "verdict": None} for k in range(4)]}
        for i in range(50)]


def verified(rows: list[dict]) -> list[dict]:
    out = copy.deepcopy(rows)
    for row in out:
        for trace in row["traces"]:
            trace["verdict"] = "correct"
        row["n_verified"] = len(row["traces"])
    return out


def test_a_verifier_stores_its_verdicts_not_the_traces(tmp_path):
    store = RunStore(tmp_path / "r")
    store.write_shard("distill", 0, ROWS)
    store.write_shard("verify", 0, verified(ROWS), base=("distill", 0))
    stored = pq.read_table(store.shard_path("verify", 0))
    assert stored.column_names == ["id", "traces", "n_verified"]
    # only the verdicts of the traces: their texts are read from distill's shard
    assert [f.name for f in stored.schema.field("traces").type.value_type] == ["verdict"]
    assert store.read_shard("verify", 0).to_pylist() == \
        RunStore(tmp_path / "r").read_shard("verify", 0).to_pylist()
    trace = store.read_shard("verify", 0).to_pylist()[3]["traces"][1]
    assert (trace["text"], trace["verdict"]) == (ROWS[3]["traces"][1]["text"], "correct")
    assert store.shard_base("verify", 0) == ("distill", 0)
    assert store.shard_base("distill", 0) is None


def test_rows_that_do_not_line_up_are_stored_whole(tmp_path):
    store = RunStore(tmp_path / "r")
    store.write_shard("distill", 0, ROWS)
    store.write_shard("other", 0, list(reversed(ROWS)), base=("distill", 0))
    assert store.shard_base("other", 0) is None
    assert pq.read_table(store.shard_path("other", 0)).num_columns == 3
    assert [r["id"] for r in store.read_shard("other", 0).to_pylist()] == \
        [r["id"] for r in reversed(ROWS)]


def test_a_filtered_upstream_aligns_with_its_kept_rows(tmp_path):
    store = RunStore(tmp_path / "r")
    store.write_shard("distill", 0, ROWS)
    marked = [{**r, "keep": i % 3 != 0} for i, r in enumerate(ROWS)]
    store.write_shard("filter", 0, marked, base=("distill", 0))
    assert pq.read_table(store.shard_path("filter", 0)).column_names == ["id", "keep"]
    after = verified([r for r in marked if r["keep"]])
    store.write_shard("verify", 0, after, base=("filter", 0))
    assert store.shard_base("verify", 0) == ("filter", 0)
    store.write_shard("whole", 0, after)
    assert store.read_shard("verify", 0).to_pylist() == store.read_shard("whole", 0).to_pylist()
    assert len(after) == 33


def test_a_delta_is_never_joined_with_a_rewritten_upstream_shard(tmp_path):
    store = RunStore(tmp_path / "r")
    store.write_shard("distill", 0, ROWS)
    store.write_shard("verify", 0, verified(ROWS), base=("distill", 0))
    # the same rows written again: the same content id, still joined
    store.write_shard("distill", 0, ROWS)
    assert store.stale_deltas("verify") == []
    changed = copy.deepcopy(ROWS)
    changed[0]["question"] = "another question"
    store.write_shard("distill", 0, changed)
    assert store.stale_deltas("verify") == [0]
    with pytest.raises(StoreError, match="rewritten or removed since; rerun the same command"):
        store.read_shard("verify", 0)
    # the columns it stores itself still read (no join needed)
    assert store.read_shard("verify", 0, ["id", "n_verified"]).num_rows == len(ROWS)
    store.shard_path("distill", 0).unlink()
    assert store.stale_deltas("verify") == [0]


def test_store_format_was_bumped_for_deltas(tmp_path):
    store = RunStore(tmp_path / "r")
    store.manifest["store_format"] = STORE_FORMAT - 1
    store.save_manifest()
    with pytest.raises(StoreError, match=f"store format {STORE_FORMAT - 1}.*another --out"):
        RunStore(tmp_path / "r")


texts = st.sampled_from(["<think>a b</think>\n<answer>3</answer>", " <think> r </think> 5",
                         "<think>cut off", "no tags <answer>x</answer>", "", None,
                         "<think>a</think> <think>b</think><answer>1</answer>"])


@st.composite
def traced_rows(draw) -> list[dict]:
    rows = []
    for i in range(draw(st.integers(0, 4))):
        traces = []
        for _ in range(draw(st.integers(0, 3))):
            text = draw(texts)
            reasoning, answer = split_trace(text) if text is not None else (None, None)
            traces.append({
                "text": text,
                # as split (stored once) or something else a plugin wrote (stored as is)
                "reasoning": draw(st.sampled_from([reasoning, reasoning, "other", "", None])),
                "answer": draw(st.sampled_from([answer, answer, "7", None])),
                "verdict": draw(st.sampled_from(["correct", None]))})
        rows.append({"id": f"r{i}", "traces": draw(st.one_of(st.none(), st.just(traces)))})
    return rows


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=traced_rows())
def test_reasoning_and_answer_read_back_as_written(tmp_path_factory, rows):
    store = RunStore(tmp_path_factory.mktemp("derived") / "r")
    store.write_shard("distill", 0, rows)
    assert store.read_shard("distill", 0).to_pylist() == rows_to_table(rows).to_pylist()
    for column in (["traces"], ["id"], ["traces", "id"]) if rows else ():
        assert store.read_shard("distill", 0, column).to_pylist() == \
            rows_to_table(rows).select(column).to_pylist()
    # a verifier's delta over it reads the same texts, reasoning and answers
    after = copy.deepcopy(rows)
    for row in after:
        for trace in row["traces"] or []:
            trace["verdict"] = "incorrect"
    store.write_shard("verify", 0, after, base=("distill", 0))
    assert store.read_shard("verify", 0).to_pylist() == rows_to_table(after).to_pylist()


def test_a_trace_text_is_stored_once(tmp_path):
    """Reasoning and answer that are the split of the text are stored as null; reasoning a
    plugin wrote otherwise is kept."""
    rng = random.Random(0)
    reasonings = [[" ".join(f"{rng.getrandbits(40):x}" for _ in range(80)) for _ in range(4)]
                  for _ in range(20)]
    rows = [{"id": f"r{i}", "traces": [
        {"text": f"<think>{reasonings[i][k]}</think>\n<answer>{k}</answer>",
         "reasoning": reasonings[i][k], "answer": str(k)} for k in range(4)]}
        for i in range(20)]
    rows[0]["traces"][0]["reasoning"] = "written by hand"
    store = RunStore(tmp_path / "r")
    store.write_shard("distill", 0, rows)
    stored = pq.read_table(store.shard_path("distill", 0)).column("traces").to_pylist()
    assert stored[0][0]["reasoning"] == "written by hand"
    assert [t["reasoning"] for r in stored for t in r][1:] == [None] * 79
    assert [t["answer"] for r in stored for t in r] == [None] * 80
    assert store.read_shard("distill", 0).to_pylist() == rows_to_table(rows).to_pylist()
    # the texts once: well under a copy that holds the reasoning beside each text
    assert store.shard_path("distill", 0).stat().st_size < 0.7 * _parquet_bytes(rows)


def _parquet_bytes(rows: list[dict]) -> int:
    """Bytes of a zstd Parquet file of ``rows`` as they are (reasoning stored beside text)."""
    sink = pa.BufferOutputStream()
    pq.write_table(rows_to_table(rows), sink, compression="zstd")
    return len(sink.getvalue())


def test_a_shard_split_by_another_rule_is_refused(tmp_path, monkeypatch):
    import dualcurate.store as store_mod

    store = RunStore(tmp_path / "r")
    store.write_shard("distill", 0, [{"id": "a", "traces": [
        {"text": "<think>r</think>", "reasoning": "r", "answer": ""}]}])
    monkeypatch.setattr(store_mod, "SPLIT_VERSION", 2)
    with pytest.raises(StoreError, match=r"split by rule 1.*splits them by rule 2.*new --out"):
        store.read_shard("distill", 0)
