"""The Standardisation section of a run's report (hook ``dualcurate_report_sections`` of the
``hf-dataset`` plugin): drawn once from a source stage's ``standardisation.json`` into HTML
and markdown, only when a stage wrote that file; and end to end, from a real ``curate run``."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pyarrow.parquet as pq

from dualcurate.report_sections import RunView
from dualcurate.schema import Sample
from dualcurate.store import RunStore
from dualcurate_hf.plugin import hf_dataset, hf_distill, hf_engine
from dualcurate_hf.report import ORDER, report_sections


def png(colour: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (6, 4), colour).save(buf, format="PNG")
    return buf.getvalue()


def make_run(root: Path, artifact: bool = True, kind: str = "source") -> RunStore:
    """A source stage with three rows and, if ``artifact``, the standardisation.json and
    drops.jsonl hf-dataset leaves: a near-duplicate pair, a conflict pair, a warning."""
    store = RunStore(root)
    rows = [Sample(source="shapes", domain="perception", question=f"Q{i} <i>?</i>",
                   answer=f"a{i}", images=[store.images.put(png(c))]).to_row()
            for i, c in enumerate(["red", "green", "blue"])]
    store.write_shard("source", 0, rows)
    store.stage_record("source").update(kind=kind, plugin="hf-dataset", status="done",
                                        rows_in=9, rows_out=3)
    store.save_manifest()
    if not artifact:
        return store
    dropped_img = store.images.put(png("white"))
    near = {"source": "shapes", "line": 7, "question": "Dropped <b>q</b>?", "answer": "x",
            "images": [dropped_img], "kept_id": rows[0]["id"]}
    conflict = {"source": "shapes", "line": None, "question": "Conflict q?", "answer": "y",
                "images": [], "kept_id": rows[1]["id"], "kept_images": rows[1]["images"]}
    doc = {"totals": {}, "sources": {
        "shapes": {"domain": "perception", "location": "a.jsonl", "rows_in": 9,
                   "rows_out": 3, "dropped": {"image_corrupt": 2, "empty_question": 1},
                   "duplicates": {"exact": 2, "near": 1}, "near_conflicts": 1,
                   "examples": {"image_corrupt": ["shapes#4: <not a png>"]},
                   "pairs": {"near": [near], "conflict": [conflict]}, "warning": None},
        "pipes | bars": {"domain": "", "location": "b.csv", "rows_in": 4, "rows_out": 0,
                         "dropped": {"no_answer": 4}, "duplicates": {},
                         "near_conflicts": 0, "examples": {}, "pairs": {},
                         "warning": "source 'pipes | bars' kept 0 of 4 rows read"}},
        "warnings": ["source 'pipes | bars' kept 0 of 4 rows read"]}
    folder = store.artifacts_dir("source")
    (folder / "standardisation.json").write_text(json.dumps(doc))
    (folder / "drops.jsonl").write_text(json.dumps(near) + "\n")
    return store


def test_section_from_standardisation_json(tmp_path):
    store = make_run(tmp_path / "run")
    (section,) = report_sections(RunView(tmp_path / "run"))
    assert (section.title, section.anchor, section.order) == ("Standardisation",
                                                              "standardisation", ORDER)
    assert 100 < ORDER < 300  # after the stage table, before verification
    html, md = section.html, section.markdown
    assert "counts from <code>source/artifacts/standardisation.json</code>" in html
    assert "in <code>source/artifacts/drops.jsonl</code>" in html
    # duplicates count as drops, by reason, sorted
    assert ("<tr><td>shapes</td><td>9</td><td>3</td><td>6</td><td>duplicate_exact 2, "
            "duplicate_near 1, empty_question 1, image_corrupt 2</td><td>1</td></tr>") in html
    assert '<tr class="failed"><td>pipes | bars</td><td>4</td><td>0</td><td>4</td>' in html
    assert "<p class=\"note\">source &#39;pipes | bars&#39; kept 0 of 4 rows read</p>" in html
    # what came from the data is escaped
    assert "&lt;not a png&gt;" in html and "Dropped &lt;b&gt;q&lt;/b&gt;?" in html
    assert "<b>q</b>" not in html
    # the pairs side by side: the other row read back from the stage's shard
    blocks = html.split('<div class="pair ')[1:]
    assert [b.split('"')[0] for b in blocks] == ["near", "conflict"]
    near, conflict = blocks
    assert near.count('<div class="pair-side">') == 2 and near.count("data:image/png") == 2
    assert "dropped (line 7)" in near and "Q0 &lt;i&gt;?&lt;/i&gt;" in near
    assert "kept in its place (id " in near
    assert "kept (no line)" in conflict and "(no image)" in conflict
    assert "<b>Answer:</b> a1" in conflict and conflict.count("data:image/png") == 1
    # the same figures in markdown, cells escaped, images as links into the run
    assert ("| shapes | 9 | 3 | 6 | duplicate_exact 2, duplicate_near 1, empty_question 1, "
            "image_corrupt 2 | 1 |") in md
    assert "| pipes \\| bars | 4 | 0 | 4 | no_answer 4 | 0 |" in md
    assert "> **Warning.** source 'pipes \\| bars' kept 0 of 4 rows read" in md
    assert "every dropped row in `source/artifacts/drops.jsonl`" in md
    links = re.findall(r"!\[image\]\((images/[0-9a-f]{2}/[0-9a-f]+)\)", md)
    assert len(links) == 3 and all((store.root / link).is_file() for link in links)
    # data: JSON-able, the image paths without the inline images
    json.dumps(section.data)
    (stage,) = section.data["stages"]
    assert stage["stage"] == "source" and stage["sources"][0]["n_dropped"] == 6
    assert "images" not in stage["pairs"][0]["row"]
    assert stage["pairs"][0]["row"]["image_paths"] == [links[0]]


def test_no_section_without_the_file(tmp_path):
    make_run(tmp_path / "run", artifact=False)
    view = RunView(tmp_path / "run")
    assert report_sections(view) == []
    assert hf_dataset.dualcurate_report_sections(view) is None


def test_only_source_stages_and_readable_files(tmp_path):
    store = make_run(tmp_path / "run", kind="filter")
    assert report_sections(RunView(tmp_path / "run")) == []
    store.stage_record("source")["kind"] = "source"
    store.save_manifest()
    (store.artifacts_dir("source") / "standardisation.json").write_text("{not json")
    assert report_sections(RunView(tmp_path / "run")) == []  # a report never fails on it


def test_a_source_without_drops_log_or_pairs(tmp_path):
    store = make_run(tmp_path / "run")
    folder = store.artifacts_dir("source")
    (folder / "drops.jsonl").unlink()
    doc = json.loads((folder / "standardisation.json").read_text())
    doc["sources"]["shapes"]["pairs"] = {}
    (folder / "standardisation.json").write_text(json.dumps(doc))
    (section,) = report_sections(RunView(tmp_path / "run"))
    assert "drops.jsonl" not in section.html and "Example pairs" not in section.html
    assert "Example pairs" not in section.markdown


def test_one_plugin_object_draws_it():
    assert hasattr(hf_dataset, "dualcurate_report_sections")
    assert not hasattr(hf_engine, "dualcurate_report_sections")
    assert not hasattr(hf_distill, "dualcurate_report_sections")


def test_curate_run_report_shows_the_section(run_cli, tmp_path):
    """A real hf-dataset source run: report.html and report.md carry the section."""
    import pyarrow as pa

    table = pa.table({"question": ["What is 1+1?", "What is 1+1?", "What is 2+2?", ""],
                      "answer": ["2", "2", "4", "5"]})
    pq.write_table(table, tmp_path / "q.parquet")
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"""
[run]
name = "std"

[source]
kind = "source"
use = "hf-dataset"

[[source.sources]]
name = "qa"
domain = "math"
parquet = "{tmp_path / 'q.parquet'}"
""")
    result = run_cli("run", str(recipe), "--out", "out")
    assert result.exit_code == 0, result.stderr + result.stdout
    out = result.cwd / "out"
    doc = json.loads((out / "source" / "artifacts" / "standardisation.json").read_text())
    qa = doc["sources"]["qa"]
    html = (out / "report.html").read_text()
    section = html.split('<section id="standardisation"')[1].split("</section>")[0]
    assert 'data-plugin="hf-dataset"' in section
    assert f"<td>qa</td><td>{qa['rows_in']}</td><td>{qa['rows_out']}</td>" in section
    assert "## Standardisation\n\nStage `source`" in (out / "report.md").read_text()
