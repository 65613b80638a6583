"""The rl-subset filter: seeded, stratified, order-independent; and a whole pipeline
(hello source → difficulty → rl-subset) with resume through the request cache."""

from __future__ import annotations

import json
import random
from collections import Counter

import datasets
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualcurate import Pipeline, StageContext, load_recipe, rows_to_table
from dualcurate.errors import DualcurateError
from dualcurate_difficulty.rl_subset import RLSubsetFilter, allocate, choose_rl_ids
from dualcurate_difficulty.scripted import make_rows, scripted_host


def run_subset(rows: list[dict], tmp_path, **config) -> tuple[list[dict], dict]:
    ctx = StageContext.ephemeral(root=tmp_path / "run")
    result = RLSubsetFilter(config).run(datasets.Dataset(rows_to_table(rows)), ctx)
    return result.dataset.to_list(), result.report


@given(st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 30), min_size=1),
       st.data())
def test_allocation_is_exact_and_proportional(sizes: dict[str, int], data) -> None:
    total = data.draw(st.integers(0, sum(sizes.values())))
    counts = allocate(sizes, total)
    assert sum(counts.values()) == total
    for name, size in sizes.items():
        assert 0 <= counts[name] <= size
        quota = total * size / max(sum(sizes.values()), 1)
        assert abs(counts[name] - quota) < 1 + 1e-9 or counts[name] == size


@given(st.integers(0, 40), st.integers(0, 3), st.randoms())
@settings(max_examples=50, deadline=None)
def test_choice_is_seeded_and_ignores_row_order(size: int, seed: int, rnd: random.Random) -> None:
    rows = make_rows(40)
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    for stratify in (None, "domain"):
        chosen = choose_rl_ids(rows, size, seed, stratify)
        assert len(chosen) == size
        assert chosen == choose_rl_ids(shuffled, size, seed, stratify)


def test_marks_split_and_excludes_rl_from_sft(tmp_path) -> None:
    rows = make_rows(30)
    out, report = run_subset(rows, tmp_path, rl_subset_size=9, seed=1, stratify_by="domain")
    assert [r["id"] for r in out] == [r["id"] for r in rows]
    rl = [r for r in out if r["rl_split"] == "rl"]
    assert len(rl) == 9 and all(r["keep"] is False for r in rl)
    assert all(r["keep"] is True for r in out if r["rl_split"] == "sft")
    assert Counter(r["domain"] for r in rl) == {"math": 3, "chart": 3, "spatial": 3}
    assert report["rl"] == 9 and report["sft"] == 21
    assert report["by_domain"]["math"] == {"rl": 3, "sft": 7}
    other_seed, _ = run_subset(rows, tmp_path, rl_subset_size=9, seed=2, stratify_by="domain")
    assert {r["id"] for r in other_seed if r["rl_split"] == "rl"} != {r["id"] for r in rl}


def test_eligible_rule_and_errors(tmp_path) -> None:
    rows = [{**r, "pass_rate": i / 10} for i, r in enumerate(make_rows(10))]
    out, report = run_subset(rows, tmp_path, rl_subset_size=3, eligible="pass_rate >= 0.5")
    assert all(r["pass_rate"] >= 0.5 for r in out if r["rl_split"] == "rl")
    assert report["eligible"] == 5
    with pytest.raises(DualcurateError, match="rl_subset_size = 6 but only 5 eligible"):
        run_subset(rows, tmp_path, rl_subset_size=6, eligible="pass_rate >= 0.5")
    with pytest.raises(DualcurateError, match="stratify_by = 'task'"):
        run_subset(rows, tmp_path, rl_subset_size=1, stratify_by="task")
    with pytest.raises(ValueError, match="keep expression"):
        RLSubsetFilter({"rl_subset_size": 1, "eligible": "open('x')"})


RECIPE = """
[run]
name = "difficulty-e2e"
shard_size = 8

[source]
use = "hello"
n = 20

[filter]
use = "difficulty"
engine = {{ use = "scripted", model = "scripted-proxy", probabilities = {{}} }}
samples_per_question = 4
keep = "pass_rate < 1"
adaptive = {adaptive}
use_check = false
verifier_stage = ["answer-judge"]

[rl]
kind = "filter"
use = "rl-subset"
rl_subset_size = 4
stratify_by = "domain"
"""


def test_pipeline_difficulty_then_rl_subset(tmp_path) -> None:
    host = scripted_host()
    host.load("hello")
    out = tmp_path / "run"
    (tmp_path / "a.toml").write_text(RECIPE.format(adaptive="true"))
    store = Pipeline(load_recipe(tmp_path / "a.toml"), host=host).run(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done"
    filtered = store.dataset("filter").to_list()
    assert len(filtered) == 20
    assert all(r["keep"] and r["pass_drawn"] == 1 for r in filtered)  # all wrong: 1 settles
    rl_rows = store.dataset("rl").to_list()
    assert Counter(r["rl_split"] for r in rl_rows) == {"rl": 4, "sft": 16}
    assert all(r["keep"] is (r["rl_split"] == "sft") for r in rl_rows)
    rec = next(s for s in manifest["stages"] if s["name"] == "rl")
    assert rec["report"]["rl"] == 4 and rec["rows_out"] == 16
    report = json.loads((out / "filter" / "artifacts" / "difficulty_report.json").read_text())
    assert report["samples"] == 20 and report["pass_drawn"] == 20
    # turning adaptive off recomputes the stage but pays only for rollouts never drawn
    (tmp_path / "b.toml").write_text(RECIPE.format(adaptive="false"))
    Pipeline(load_recipe(tmp_path / "b.toml"), host=host).run(out)
    report = json.loads((out / "filter" / "artifacts" / "difficulty_report.json").read_text())
    assert report["pass_drawn"] == 80
    from dualcurate.cache import RequestCache

    assert RequestCache(out / "cache.sqlite").count() == 80


def test_split_column_is_left_alone_and_eval_rows_are_never_drawn(tmp_path) -> None:
    import pydantic

    rows = [{"id": f"s{i}", "split": "eval" if i % 2 else "train", "keep": True}
            for i in range(20)]
    out = RLSubsetFilter(rl_subset_size=10).run(datasets.Dataset.from_list(rows),
                                                StageContext.ephemeral(root=tmp_path)).dataset
    out = out.to_list()
    assert [r["split"] for r in out] == [r["split"] for r in rows]  # untouched
    assert all(r["rl_split"] is None and r["keep"] for r in out if r["split"] == "eval")
    assert sum(r["rl_split"] == "rl" for r in out) == 10
    with pytest.raises(pydantic.ValidationError, match="overwrite the dataset's split"):
        RLSubsetFilter(rl_subset_size=1, split_column="split")
