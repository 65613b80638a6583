"""docs/demo.md's measured tables are written by benchmarks/demo_seeds.py --write-docs.

The writer and its reader are checked here (default suite); ``test_docs_regions_match_a_fresh
seed_0_demo`` (marker ``demo_docs``, ``make test-demo-docs``, about 6 minutes) runs the demo for
seed 0 and fails when a task family lands in another region than docs/demo.md's seed-0 row says.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "demo.md"
REGIONS = ("reasoning-benefit", "direct-benefit", "detrimental")
COLUMNS = ("B_S", "B_L", "DT_S", "DT_L", "Gain_DA", "Gain_CoT")


def _load_demo_seeds():
    spec = importlib.util.spec_from_file_location("demo_seeds", ROOT / "benchmarks" /
                                                  "demo_seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo_seeds = _load_demo_seeds()

numbers = st.floats(min_value=-1000, max_value=1000, allow_nan=False)
group = st.fixed_dictionaries({
    "group": st.from_regex(r"[a-z][a-z0-9]*(-[a-z0-9]+)?", fullmatch=True),
    "region": st.sampled_from(REGIONS), "n_train": st.integers(0, 5000),
    **{c: numbers for c in COLUMNS}})
tables = st.dictionaries(st.integers(0, 99).map(str),
                         st.lists(group, min_size=1, max_size=4, unique_by=lambda g: g["group"]),
                         min_size=1, max_size=3)
prose = st.text(st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)),
                max_size=200)


def _doc(before: str, between: str, after: str) -> str:
    return (f"{before}\n<!-- demo_seeds:regions:begin -->\n{between}\n"
            f"<!-- demo_seeds:regions:end -->\n{after}\n<!-- demo_seeds:stages:begin -->\n"
            f"{between}\n<!-- demo_seeds:stages:end -->\n{after}")


def _outside(text: str) -> str:
    return re.sub(r"(<!-- demo_seeds:(\w+):begin -->).*?(<!-- demo_seeds:\2:end -->)", r"\1\3",
                  text, flags=re.S)


@given(tables, prose, prose, prose)
def test_written_tables_read_back_and_the_prose_stays(tables, before, old, after):
    seconds = {seed: 300.0 for seed in tables}
    first = next(iter(tables))
    stages = [{"name": "source", "plugin": "synthetic", "rows_in": 10, "rows_out": 0,
               "seconds": 1.5}]
    blocks = {"regions": demo_seeds.regions_block(tables, seconds),
              "stages": demo_seeds.stages_block(first, stages, 300.0)}
    written = demo_seeds.replace_blocks(_doc(before, old, after), blocks)
    expected = {seed: {g["group"]: g["region"] for g in groups}
                for seed, groups in tables.items()}
    assert demo_seeds.docs_regions(written) == expected
    # only the blocks changed, and writing again gives the same text
    assert _outside(written) == _outside(_doc(before, old, after))
    assert demo_seeds.replace_blocks(written, blocks) == written


def test_numbers_are_written_as_the_docs_write_them():
    assert [demo_seeds._number(x) for x in (7.0, -22.24, 322.25, -0.01, 0.0, 138.1)] == [
        "7", "−22.2", "322.2", "0", "0", "138.1"]


@pytest.mark.parametrize("text", ["no markers", "<!-- demo_seeds:regions:end -->\n"
                                  "<!-- demo_seeds:regions:begin -->",
                                  "<!-- demo_seeds:regions:begin -->\n" * 2
                                  + "<!-- demo_seeds:regions:end -->"])
def test_missing_or_misplaced_markers_are_named(text):
    with pytest.raises(ValueError, match=r"notes\.md: expected one <!-- demo_seeds:regions:"
                                         r"begin --> followed by one <!-- demo_seeds:regions:end"):
        demo_seeds.docs_regions(text, "notes.md")


def test_write_docs_stops_before_running_when_the_markers_are_gone(tmp_path):
    docs = tmp_path / "demo.md"
    docs.write_text("# The demo\n\nno tables\n")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "demo_seeds.py"),
                           "--write-docs", "--docs", str(docs), "--out", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0
    assert "demo_seeds:regions:begin" in proc.stderr and str(docs) in proc.stderr
    assert not (tmp_path / "x").exists(), "nothing may run before the markers are checked"


def test_smoke_never_writes_the_committed_docs():
    before = DOCS.read_text()
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "demo_seeds.py"),
                           "--smoke", "--write-docs"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode != 0 and "not measurements" in proc.stderr
    assert DOCS.read_text() == before


def test_the_committed_docs_have_a_row_per_family_and_seed():
    regions = demo_seeds.docs_regions(DOCS.read_text())
    assert "0" in regions, "docs/demo.md's regions table has no seed-0 rows"
    for seed, by_family in regions.items():
        assert set(by_family) == set(demo_seeds.EXPECTED), (seed, by_family)
        assert set(by_family.values()) <= set(REGIONS), (seed, by_family)
    demo_seeds.block(DOCS.read_text(), "stages")  # the stages block is there too


@pytest.mark.demo_docs
@pytest.mark.timeout(3600)  # the demo with its base model build: ~8 min alone, more when loaded
def test_docs_regions_match_a_fresh_seed_0_demo(tmp_path):
    # the base model is cached in runs/.cache/demo-base-seed0 (reused when its options match)
    proc = subprocess.run([sys.executable, "benchmarks/demo_seeds.py", "--seeds", "0",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=3600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    fresh = json.loads(proc.stdout.strip().splitlines()[-1])["regions"]["0"]
    documented = demo_seeds.docs_regions(DOCS.read_text())["0"]
    differ = {f: (documented.get(f), fresh.get(f)) for f in {*fresh, *documented}
              if documented.get(f) != fresh.get(f)}
    assert not differ, (
        "docs/demo.md's seed-0 regions differ from a fresh run (family: (docs, fresh)): "
        f"{differ}. Rerun `.venv/bin/python benchmarks/demo_seeds.py --write-docs` (seeds 0, "
        "1, 2) and update the prose around the tables.")


def test_blind_scores_add_the_image_columns_and_the_perception_check():
    def row(group, region, dt_s, dt_l, blind=None):
        g = {"group": group, "region": region, "n_train": 10, "B_S": 50.0, "B_L": 40.0,
             "DT_S": dt_s, "DT_L": dt_l, "Gain_DA": 0.0, "Gain_CoT": 0.0}
        return {**g, "blind": blind} if blind is not None else g

    seen = {"B_S": 25.0, "B_L": 25.0, "DT_S": 30.0, "DT_L": 40.0}
    tables = {"0": [row("nth-colour", "direct-benefit", 95.0, 80.0, seen),
                    row("colour-ops", "reasoning-benefit", 10.0, 60.0)],
              "1": [row("nth-colour", "direct-benefit", 95.0, 60.0, seen)]}
    text = demo_seeds.regions_block(tables, {"0": 1.0, "1": 1.0})
    assert "| Img_S | Img_L | region |" in text
    assert "| 0 | nth-colour | 10 | 50 | 40 | 95 | 80 | 0 | 0 | 65 | 40 | direct-benefit |" in text
    assert "| 0 | colour-ops | 10 | 50 | 40 | 10 | 60 | 0 | 0 |  |  | reasoning-benefit |" in text
    regions = {s: {g["group"]: g["region"] for g in gs} for s, gs in tables.items()}
    # seed 1's DT_L is only 20 points above blind: the check counts seed 0 alone
    assert demo_seeds.met(regions, tables)[
        "nth-colour DT_S and DT_L each 30+ points above blind"] == "1/2"
    assert demo_seeds.docs_regions(demo_seeds.replace_blocks(
        _doc("", "", ""), {"regions": text, "stages": ""})) == regions
