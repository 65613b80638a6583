"""Plugins' report sections (hook ``dualcurate_report_sections``): where one section shows
(report.html, report.md, the end of ``curate report``, the dataset card), in what order, what
a failing plugin does to the others; and core's report knowing nothing of any plugin."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dualcurate import hookimpl
from dualcurate.report import run_sections, write_report
from dualcurate.report_sections import ReportSection, RunView, SampleField, SummaryTable
from dualcurate.schema import Sample
from dualcurate.store import RunStore

CORE = Path(__file__).parents[1] / "src" / "dualcurate"


def make_run(root: Path) -> RunStore:
    store = RunStore(root)
    rows = [{**Sample(source="s", domain=["math", "chart"][i % 2], question=f"q{i}",
                      answer=str(i)).to_row(), "score": i / 4} for i in range(4)]
    store.write_shard("source", 0, rows)
    store.stage_record("source").update(kind="source", plugin="probe-source", status="done",
                                        rows_in=4, rows_out=4, seconds=1.0)
    store.manifest.update(status="done", recipe_source="r.toml")
    store.save_manifest()
    return store


class ScorePlugin:
    """A plugin with one section: a figure, a table, a summary, a file and a sample field."""

    @hookimpl
    def dualcurate_report_sections(self, run: RunView) -> list[ReportSection] | None:
        rows = run.rows("source", columns=["domain", "score"])
        if not rows:
            return None
        mean = {d: sum(r["score"] for r in rows if r["domain"] == d) / 2
                for d in ("chart", "math")}
        return [ReportSection(
            title="Scores <by domain>", anchor="scores", order=450,
            html='<figure><svg class="probe-figure"></svg></figure>',
            markdown="| domain | mean |\n|---|---:|\n" + "\n".join(
                f"| {d} | {m:.2f} |" for d, m in mean.items()),
            summary=SummaryTable("Mean scores", ["domain", "mean"],
                                 [[d, f"{m:.2f}"] for d, m in mean.items()]),
            data={"mean": mean}, files={"scores.json": json.dumps(mean)},
            sample_fields=[SampleField("score", column="score"),
                           SampleField("verdict", by_group={"math": "good"},
                                       colours={"good": "#123456"})])]


class EarlyPlugin:
    @hookimpl
    def dualcurate_report_sections(self, run: RunView) -> list[ReportSection]:
        return [ReportSection(title="Early", anchor="stages", order=150, html="<p>early</p>",
                              markdown="early words")]


class BrokenPlugin:
    @hookimpl
    def dualcurate_report_sections(self, run: RunView) -> list[ReportSection]:
        raise RuntimeError("cannot draw")


@pytest.fixture
def with_sections(plugin_host, register_plugin):
    register_plugin(ScorePlugin(), name="scores")
    register_plugin(EarlyPlugin(), name="early")
    return plugin_host


def test_a_plugin_section_shows_in_html_markdown_and_files(tmp_path, with_sections):
    make_run(tmp_path / "run")
    html_path, md_path = write_report(tmp_path / "run", host=with_sections)
    html, md = html_path.read_text(), md_path.read_text()
    block = html.split('<section id="scores"')[1].split("</section>")[0]
    assert 'data-plugin="scores"' in block and "<h2>Scores &lt;by domain&gt;</h2>" in block
    assert html.count('class="probe-figure"') == 1  # drawn once, placed as given
    assert "## Scores <by domain>\n\n| domain | mean |" in md and "| math | 0.25 |" in md
    assert json.loads((tmp_path / "run" / "scores.json").read_text()) == {"chart": 0.5,
                                                                          "math": 0.25}
    # the sample browser shows the section's fields on every sample
    assert "score 0.25" in html and '<span class="badge" style="background: #123456">good' in html
    assert "- score: 0.00 · verdict: good" in md and "- score: 0.25 · verdict: –" in md


def test_sections_sit_by_order_among_cores_with_unique_ids(tmp_path, with_sections):
    make_run(tmp_path / "run")
    html, md = (p.read_text() for p in write_report(tmp_path / "run", host=with_sections))
    ids = re.findall(r'<section id="([\w-]+)"', html)
    assert ids == ["stages", "stages-2", "verification", "scores", "samples"]
    headings = re.findall(r"^## (.+)$", md, re.M)
    assert headings == ["Stages", "Early", "Verification", "Scores <by domain>", "Samples"]


def test_a_failing_plugin_does_not_hide_the_others(tmp_path, with_sections, register_plugin):
    register_plugin(BrokenPlugin(), name="broken")
    make_run(tmp_path / "run")
    sections = run_sections(tmp_path / "run", with_sections)
    by_plugin = {s.plugin: s for s in sections}
    assert set(by_plugin) == {"scores", "early", "broken"}
    assert "RuntimeError: cannot draw" in by_plugin["broken"].html
    html = write_report(tmp_path / "run", sections=sections)[0].read_text()
    assert "plugin &#x27;broken&#x27;: its report section failed" in html
    assert 'id="scores"' in html


def test_curate_report_prints_each_sections_summary(tmp_path, run_cli, monkeypatch):
    import dualcurate.cli as cli_module

    build = cli_module.build_state

    def build_with_scores(*args, **kwargs):
        state = build(*args, **kwargs)
        state.host.register(ScorePlugin(), name="scores")
        return state

    monkeypatch.setattr(cli_module, "build_state", build_with_scores)
    make_run(tmp_path / "run")
    result = run_cli("report", str(tmp_path / "run"))
    assert result.exit_code == 0, result.stderr
    assert "Mean scores" in result.stderr
    assert re.search(r"math\s+0\.25", result.stderr)
    assert (tmp_path / "run" / "scores.json").is_file()


def test_dataset_card_gets_the_sections_markdown(tmp_path, monkeypatch, plugin_host,
                                                 register_plugin):
    import dualcurate.report as report_module
    from dualcurate.hub import dataset_card

    register_plugin(ScorePlugin(), name="scores")
    monkeypatch.setattr(report_module, "report_host", lambda manifest=None: plugin_host)
    store = make_run(tmp_path / "run")
    card = dataset_card(store, "source", "me/data", 4, has_images=False)
    assert "## Scores <by domain>\n\n| domain | mean |" in card


def test_a_section_anchor_and_files_are_checked():
    with pytest.raises(ValueError, match="anchor"):
        ReportSection(title="x", anchor="Has Spaces")
    with pytest.raises(ValueError, match="inside the run directory"):
        ReportSection(title="x", anchor="x", files={"../escape.json": "{}"})


def test_run_view_reads_without_writing(tmp_path):
    store = make_run(tmp_path / "run")
    before = sorted(p.name for p in (tmp_path / "run").rglob("*"))
    view = RunView(tmp_path / "run")
    view.manifest["status"] = "changed"  # a copy: the store's manifest is untouched
    assert store.manifest["status"] == "done"
    assert view.columns("source")[:2] == ["id", "source"]
    assert [r["score"] for r in view.rows("source", columns=["score", "missing"])] == \
        [0.0, 0.25, 0.5, 0.75]
    assert view.rows(None) == [] and view.artifact("source", "nothing.json") is None
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == before


def test_run_view_shows_the_runs_images(tmp_path):
    import base64

    store = make_run(tmp_path / "run")
    jpeg = b"\xff\xd8\xff\xe0" + b"rest of a jpeg"
    png, jpg = store.images.put(b"\x89PNG\r\n\x1a\n..."), store.images.put(jpeg)
    view = RunView(tmp_path / "run")
    assert view.image_url(png).startswith("data:image/png;base64,")
    assert view.image_url(jpg) == "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    assert view.image_url("0" * 64) is None and view.image_url("") is None
    assert view.image_path(png) == f"images/{png[:2]}/{png}"
    assert (tmp_path / "run" / view.image_path(png)).is_file()


@pytest.mark.parametrize("path", ["report.py", "cli.py", "report_templates/report.html.j2",
                                  "report_templates/report.md.j2"])
def test_core_report_and_cli_know_no_plugin(path):
    """Pass rates and Dual Tuning are the difficulty and dual-tuning plugins' sections, the
    Standardisation section hf-dataset's and the teacher note the reference distiller's."""
    text = (CORE / path).read_text()
    words = (r"pass.?rate|dual.?tuning|efficacy|region|B_S|B_L|DT_S|DT_L|Gain_|difficulty"
             r"|standardisation|reference.?distiller|synthetic")
    assert not re.findall(words, text, re.I)
