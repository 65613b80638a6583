"""``curate efficacy-table`` through the real CLI entry function."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualcurate_dualtuning.metrics import group_metrics
from dualcurate_dualtuning.table import ScoresFileError, read_scores

PAPER = ("group,B_S,B_L,DT_S,DT_L\n"
         "VSI-Bench,37.57,24.91,51.35,43.26\n"
         "MathVista,69.80,69.83,67.37,72.87\n")


@pytest.fixture
def scores_file(tmp_path):
    def write(text: str, name: str = "scores.csv"):
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


def test_prints_one_object_per_group(run_cli, scores_file):
    result = run_cli("--plugin", "dual-tuning", "efficacy-table", "--scores",
                     scores_file(PAPER))
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["group"] for r in rows] == ["VSI-Bench", "MathVista"]
    for row in rows:
        assert set(row) == {"group", "Gain_DA", "Gain_CoT", "GAP_B", "GAP_DT", "region"}
    vsi, mathvista = rows
    assert (round(vsi["Gain_DA"], 2), round(vsi["Gain_CoT"], 2), round(vsi["GAP_DT"], 2)) == \
        (36.68, 15.15, -8.09)
    assert vsi["region"] == "direct-benefit"
    assert (round(mathvista["Gain_DA"], 2), round(mathvista["Gain_CoT"], 2),
            round(mathvista["GAP_DT"], 2)) == (-3.52, 4.35, 5.50)
    assert mathvista["region"] == "reasoning-benefit"


def test_extra_columns_and_percent_signs_are_fine(run_cli, scores_file):
    text = ("model,group,B_S,B_L,DT_S,DT_L,notes\n"
            "qwen,VSI-Bench,37.57%,24.91%,51.35%,43.26%,from lmms-eval\n")
    result = run_cli("--plugin", "dual-tuning", "efficacy-table", "--scores",
                     scores_file(text))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[0]["region"] == "direct-benefit"


@pytest.mark.parametrize(("text", "expected"), [
    ("group,B_S,B_L,DT_S\nmath,1,2,3\n", "missing column(s) DT_L"),
    ("group,B_S,B_L,DT_S,DT_L\nmath,1,2,three,4\n", "line 2 (group 'math'), column DT_S"),
    ("group,B_S,B_L,DT_S,DT_L\nmath,1,2,3,4\nchart,1,,3,4\n", "line 3 (group 'chart'), column B_L: empty"),
    ("group,B_S,B_L,DT_S,DT_L\nmath,1,2,3,-4\n", "negative"),
    ("group,B_S,B_L,DT_S,DT_L\nmath,1,2,3,nan\n", "not a finite number"),
    ("group,B_S,B_L,DT_S,DT_L\nmath,1,2,3,4\nmath,1,2,3,4\n", "already given on line 2"),
    ("group,B_S,B_L,DT_S,DT_L\n,1,2,3,4\n", "column group: empty"),
    ("group,B_S,B_L,DT_S,DT_L\n", "no rows"),
    ("", "missing column(s) group"),
])
def test_bad_csv_exits_2_naming_row_and_column(run_cli, scores_file, text, expected):
    result = run_cli("--plugin", "dual-tuning", "efficacy-table", "--scores",
                     scores_file(text))
    assert result.exit_code == 2
    assert expected in " ".join(result.stderr.split()), result.stderr
    assert result.stdout.strip() == ""


def test_missing_file_exits_2(run_cli, tmp_path):
    result = run_cli("--plugin", "dual-tuning", "efficacy-table", "--scores",
                     str(tmp_path / "nope.csv"))
    assert result.exit_code == 2
    assert "not found" in result.stderr


def test_scores_option_is_required(run_cli):
    result = run_cli("--plugin", "dual-tuning", "efficacy-table")
    assert result.exit_code == 2
    assert "--scores" in result.stderr


score = st.integers(min_value=0, max_value=10_000).map(lambda x: x / 100)
group_name = st.text(alphabet=st.characters(categories=("L", "N"), max_codepoint=0x2FF),
                     min_size=1, max_size=12)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
          max_examples=50, deadline=None)  # writes a CSV per example: slow on a loaded machine
@given(st.dictionaries(group_name, st.tuples(score, score, score, score), min_size=1,
                       max_size=6))
def test_read_scores_matches_the_metrics(tmp_path_factory, groups):
    path = tmp_path_factory.mktemp("csv") / "s.csv"
    lines = ["group,B_S,B_L,DT_S,DT_L"]
    lines += [f"{g},{','.join(repr(v) for v in vals)}" for g, vals in groups.items()]
    path.write_text("\n".join(lines) + "\n")
    got = read_scores(path)
    assert [m.group for m in got] == list(groups)
    for m, (g, vals) in zip(got, groups.items(), strict=True):
        assert m == group_metrics(g, *vals)


def test_read_scores_error_is_a_usage_error(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("group,B_S,B_L,DT_S,DT_L\nmath,1,2,3,4,5\n")
    with pytest.raises(ScoresFileError, match="more cells than header") as info:
        read_scores(path)
    assert info.value.exit_code == 2
