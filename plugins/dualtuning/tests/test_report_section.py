"""The Dual Tuning section of a run's report: the table and the scatter drawn once, the same
table for the CLI's summary and `curate efficacy-table --format table`, the efficacy.json copy,
each sample's region, and the results read back by `efficacy_groups`."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dualcurate.report_sections import RunView
from dualcurate.store import RunStore
from dualcurate_dualtuning.plot import scatter_svg
from dualcurate_dualtuning.plugin import dual_tuning
from dualcurate_dualtuning.report import report_section
from dualcurate_dualtuning.results import COLUMN_TYPES, REGION_COLOURS, efficacy_groups
from dualcurate_dualtuning.table import SUMMARY_COLUMNS, TABLE_COLUMNS, summary_table

GROUPS = [
    {"group": "digit-sum", "B_S": 20.0, "B_L": 40.0, "DT_S": 22.0, "DT_L": 80.0,
     "Gain_DA": -45.0, "Gain_CoT": 100.0, "GAP_B": 20.0, "GAP_DT": 58.0,
     "region": "reasoning-benefit", "n_train": 8, "n_eval": 4},
    {"group": "nth-colour", "B_S": 60.0, "B_L": 50.0, "DT_S": 100.0, "DT_L": 90.0,
     "Gain_DA": 66.7, "Gain_CoT": 50.0, "GAP_B": -10.0, "GAP_DT": -10.0,
     "region": "direct-benefit", "n_train": 8, "n_eval": 4},
    {"group": "last-shape", "B_S": 80.0, "B_L": 70.0, "DT_S": 30.0, "DT_L": 20.0,
     "Gain_DA": -62.5, "Gain_CoT": -75.0, "GAP_B": -10.0, "GAP_DT": -10.0,
     "region": "detrimental", "n_train": 8, "n_eval": 4},
]


def make_run(root: Path, results: str | None = "artifact") -> RunStore:
    store = RunStore(root)
    rec = store.stage_record("judge")
    rec.update(kind="efficacy_judge", plugin="dual-tuning", status="done")
    if results == "artifact":
        path = store.artifacts_dir("judge") / "efficacy.json"
        path.write_text(json.dumps({"groups": GROUPS, "gain_basis": {}}))
        rec["artifacts"] = {"efficacy": str(path)}
    elif results == "manifest":
        rec["report"] = {"groups": GROUPS}
    store.save_manifest()
    return store


def test_section_draws_table_and_scatter_once(tmp_path):
    make_run(tmp_path / "run")
    section = report_section(RunView(tmp_path / "run"))
    assert section is not None and section.anchor == "dual-tuning"
    assert section.html.count('id="dual-tuning-table"') == 1
    assert section.html.count("<svg") == 1 and section.html.count('class="point"') == 3
    for g in GROUPS:
        colour = REGION_COLOURS[g["region"]]
        assert f'<span class="badge" style="background: {colour}">{g["region"]}</span>' \
            in section.html
        assert f"| {g['group']} | {g['B_S']:.1f} | {g['B_L']:.1f} |" in section.markdown
    assert section.data["groups"] == GROUPS
    assert json.loads(section.files["efficacy.json"])["groups"] == GROUPS
    fields = {f.label: f for f in section.sample_fields}
    assert fields["region"].by_group["nth-colour"] == "direct-benefit"
    assert fields["region"].colours == REGION_COLOURS


def test_summary_is_the_same_table(tmp_path):
    make_run(tmp_path / "run")
    summary = report_section(RunView(tmp_path / "run")).summary
    assert summary == summary_table(GROUPS)
    assert summary.columns == list(SUMMARY_COLUMNS) == list(TABLE_COLUMNS[:8])
    assert summary.rows[0] == ["digit-sum", "20.0", "40.0", "22.0", "80.0", "-45.0", "100.0",
                               "reasoning-benefit"]


def test_results_from_the_manifest_and_none_yet(tmp_path):
    make_run(tmp_path / "m", results="manifest")
    assert efficacy_groups(tmp_path / "m") == GROUPS
    assert "manifest.json (judge report)" in report_section(RunView(tmp_path / "m")).markdown
    make_run(tmp_path / "none", results=None)
    section = report_section(RunView(tmp_path / "none"))
    assert section.summary is None and not section.files
    assert "No efficacy judge results in this run yet." in section.html
    store = RunStore(tmp_path / "plain")
    store.save_manifest()
    assert report_section(RunView(tmp_path / "plain")) is None
    assert dual_tuning.dualcurate_report_sections(RunView(tmp_path / "plain")) is None


def test_scatter_places_points_in_their_regions():
    svg = scatter_svg(GROUPS, size=420)
    points = re.findall(r'cx="([\d.]+)" cy="([\d.]+)"', svg)
    (x1, y1), (x2, y2), (x3, y3) = [(float(a), float(b)) for a, b in points]
    centre = 210
    assert x1 < centre and y1 < centre  # reasoning: Gain_CoT > 0 (up), Gain_DA < 0 (left)
    assert x2 > centre and y2 < centre and (x2 - centre) > (centre - y2)  # direct
    assert x3 < centre and y3 > centre  # detrimental


def test_the_judge_types_its_columns():
    from dualcurate import rows_to_table
    from dualcurate_dualtuning.judge import DualTuningJudge

    assert DualTuningJudge.column_types == COLUMN_TYPES
    table = rows_to_table([{"id": "a", "mode": None, "efficacy_region": None}],
                          DualTuningJudge.column_types)
    assert {table.schema.field(c).type for c in COLUMN_TYPES} == {COLUMN_TYPES["mode"]}


def test_efficacy_table_prints_the_same_table(tmp_path, run_cli):
    scores = tmp_path / "scores.csv"
    scores.write_text("group,B_S,B_L,DT_S,DT_L\nmath,20,40,22,80\n")
    result = run_cli("efficacy-table", "--scores", str(scores), "--format", "table")
    assert result.exit_code == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if "math" in ln)
    assert re.search(r"math\s+20\.0\s+40\.0\s+22\.0\s+80\.0\s+-45\.0\s+100\.0\s+"
                     r"reasoning-benefit", line)


def test_the_accuracy_the_images_add(tmp_path):
    """Groups evaluated blind show Img_S / Img_L (DT minus blind DT) after GAP_DT, in HTML and
    markdown; a group without blind scores shows a dash; none at all: no such columns."""
    blind = {"B_S": 10.0, "B_L": 40.0, "DT_S": 2.0, "DT_L": 82.5}
    groups = [{**GROUPS[0], "blind": blind}, {**GROUPS[1], "blind": None}]
    store = RunStore(tmp_path / "run")
    rec = store.stage_record("judge")
    rec.update(kind="efficacy_judge", plugin="dual-tuning", status="done")
    (store.artifacts_dir("judge") / "efficacy.json").write_text(json.dumps({"groups": groups}))
    store.save_manifest()
    section = report_section(RunView(tmp_path / "run"))

    header = section.markdown.split("\n\n")[1].splitlines()[0]
    assert "| GAP_B | GAP_DT | Img_S | Img_L | n_train |" in header
    assert "| 58.0 | 20.0 | -2.5 | 8 | 4 |" in section.markdown  # 22 − 2, 80 − 82.5
    assert "| -10.0 | -10.0 | – | – | 8 | 4 |" in section.markdown
    assert "Img_S = DT_S − DT_S blind" in section.markdown
    heads = re.findall(r"<th[^>]*>([^<]*)</th>", section.html)
    assert heads[heads.index("GAP_DT") + 1:heads.index("n_train")] == ["Img_S", "Img_L"]
    cells = re.findall(r"<td>(.*?)</td>", section.html.split("<tr>")[2])
    assert cells[heads.index("Img_S")] == "20.0" and cells[heads.index("Img_L")] == "-2.5"

    make_run(tmp_path / "text")  # no group has blind scores
    plain = report_section(RunView(tmp_path / "text"))
    assert "Img_S" not in plain.html and "Img_S" not in plain.markdown


def test_the_summary_adds_the_image_columns_only_with_blind_scores():
    blind = {"B_S": 10.0, "B_L": 40.0, "DT_S": 2.0, "DT_L": 82.5}
    summary = summary_table([{**GROUPS[0], "blind": blind}, {**GROUPS[1], "blind": None}])
    assert summary.columns == [*SUMMARY_COLUMNS, "Img_S", "Img_L"]
    assert summary.rows[0][-2:] == ["20.0", "-2.5"] and summary.rows[1][-2:] == ["–", "–"]
    assert summary_table(GROUPS).columns == list(SUMMARY_COLUMNS)


def test_the_short_table_explains_its_columns_under_it():
    """A run log is read without the report: every score, gain and the region are explained,
    and Img_S / Img_L only when they are shown."""
    plain = summary_table(GROUPS)
    legend = " ".join(plain.notes)
    for column in ("B_S", "B_L", "DT_S", "DT_L", "Gain_DA", "Gain_CoT", "reasoning-benefit",
                   "direct-benefit", "detrimental"):
        assert column in legend, column
    assert "Img_S" not in legend
    blind = {"B_S": 25.0, "B_L": 25.0, "DT_S": 25.0, "DT_L": 25.0}
    with_images = summary_table([{**GROUPS[0], "blind": blind}])
    assert "Img_S" in " ".join(with_images.notes) and "Img_S" in with_images.columns
