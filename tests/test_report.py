"""write_report over a run store: contents, escaping, self-containedness, and a real headless
Chromium opening the page without console errors."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dualcurate.report import write_report
from dualcurate.schema import Sample, Trace
from dualcurate.store import RunStore

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


def png(colour: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 8), colour).save(buf, format="PNG")
    return buf.getvalue()


def make_run(root: Path, with_judge: bool = True) -> RunStore:
    store = RunStore(root)
    rows = []
    for i, group in enumerate(g["group"] for g in GROUPS for _ in range(3)):
        digest = store.images.put(png(["red", "green", "blue"][i % 3]))
        split = "eval" if i % 3 == 2 else "train"
        row = Sample(source="synthetic", domain=group, images=[digest],
                     question=f"Question {i} <b>bold?</b>", answer=str(i % 10),
                     caption=f"caption {i}", meta={"split": split, "corrupted": i == 7},
                     split=split).to_row()
        rows.append(row)
    store.write_shard("source", 0, rows)
    standardise(store, rows)
    verdicts = ["correct", "incorrect", "invalid"]
    traced = [{**r, "traces": [Trace(text=f"<think>x</think>\n<answer>{r['answer']}</answer>"
                                      "</script><script>bad()</script>",
                                      reasoning="x", answer=r["answer"], engine="reference",
                                      verdict=verdicts[i % 3], method="exact",
                                      reason=None if i % 3 == 0 else "answer differs"
                                      ).model_dump()],
               "n_traces": 1} for i, r in enumerate(rows)]
    # a failed generation in the first group, as rule-verify leaves it: verdict invalid,
    # label error
    traced[0]["traces"].append(Trace(text="", engine="openai", error="HTTP 500 after retries",
                                     verdict="invalid", method="rule", label="error",
                                     reason="generation failed: HTTP 500").model_dump())
    store.write_shard("verify", 0, traced)
    filtered = [{**r, "pass_rate": [0.0, 0.25, 1.0][i % 3], "keep": i % 3 != 1}
                for i, r in enumerate(traced)]
    store.write_shard("filter", 0, filtered)
    stages = [("source", "source", "synthetic", 9, 9, 1.5),
              ("distill", "distiller", "reference", 9, 9, 0.1),
              ("verify", "verifier", "rule-verify", 9, 9, 0.4),
              ("filter", "filter", "difficulty", 9, 6, 12.0),
              ("train", "trainer", "sft", 6, 6, 30.0)]
    if with_judge:
        stages.append(("judge", "efficacy_judge", "dual-tuning", 6, 6, 60.0))
    for name, kind, plugin, rows_in, rows_out, seconds in stages:
        rec = store.stage_record(name)
        rec.update(kind=kind, plugin=plugin, status="done", rows_in=rows_in,
                   rows_out=rows_out, seconds=seconds)
    if with_judge:
        path = store.artifacts_dir("judge") / "efficacy.json"
        path.write_text(json.dumps({"groups": GROUPS}))
        store.stage_record("judge")["artifacts"] = {"efficacy": str(path)}
    store.manifest["status"] = "done"
    store.manifest["recipe_source"] = "default.toml"
    store.save_manifest()
    return store


def standardise(store: RunStore, rows: list[dict]) -> None:
    """What hf-dataset leaves in source/artifacts: standardisation.json (a near-duplicate
    pair and a conflict pair among its examples) and drops.jsonl."""
    dropped_img = store.images.put(png("#ff0001"))
    conflict_img = store.images.put(png("yellow"))
    near = {"source": "shapes", "file": "a.jsonl", "line": 12, "reason": "duplicate_near",
            "question": "What colour is the square?", "answer": "red",
            "images": [dropped_img], "kept_id": rows[0]["id"],
            "kept_images": rows[0]["images"]}
    conflict = {"source": "shapes", "file": "a.jsonl", "line": 40,
                "reason": "near_conflict_kept", "question": "Which shape is it?",
                "answer": "circle", "images": [conflict_img], "kept_id": rows[1]["id"],
                "kept_images": rows[1]["images"], "id": rows[2]["id"]}
    doc = {"totals": {}, "images": {}, "llm_clean": {},
           "sources": {
               "shapes": {"domain": "perception", "location": "a.jsonl", "rows_in": 14,
                          "rows_out": 9, "dropped": {"undecodable_text": 2,
                                                     "image_unsupported_input": 1},
                          "duplicates": {"exact": 1, "near": 1}, "near_conflicts": 1,
                          "examples": {"undecodable_text": ["shapes line 3: bad byte 0xff"]},
                          "pairs": {"near": [near], "conflict": [conflict]},
                          "warning": None},
               "empty": {"domain": "", "location": "b.csv", "rows_in": 50, "rows_out": 0,
                         "dropped": {"image_unsupported_input": 50}, "duplicates": {},
                         "near_conflicts": 0, "examples": {}, "pairs": {},
                         "warning": "source 'empty' kept 0 of 50 rows read"}},
           "warnings": ["source 'empty' kept 0 of 50 rows read"]}
    folder = store.artifacts_dir("source")
    (folder / "standardisation.json").write_text(json.dumps(doc))
    (folder / "drops.jsonl").write_text(json.dumps(near) + "\n")


def test_standardisation_section(tmp_path):
    """The hf-dataset plugin's section, drawn from standardisation.json, after the stages."""
    store = make_run(tmp_path / "run")
    html_path, md_path = write_report(tmp_path / "run")
    html, md = html_path.read_text(), md_path.read_text()
    assert re.findall(r'<section id="([\w-]+)"', html)[:3] == ["teacher", "stages",
                                                                 "standardisation"]
    section = html.split('<section id="standardisation"')[1].split("</section>")[0]
    assert 'data-plugin="hf-dataset"' in section and "<h2>Standardisation</h2>" in section
    assert re.search(r"<td>shapes</td><td>14</td><td>9</td><td>5</td><td>duplicate_exact 1, "
                     r"duplicate_near 1, image_unsupported_input 1, undecodable_text 2</td>"
                     r"<td>1</td>", section)
    assert re.search(r'<tr class="failed"><td>empty</td><td>50</td><td>0</td><td>50</td>',
                     section)
    assert "kept 0 of 50 rows read" in section and "source/artifacts/drops.jsonl" in section
    assert "bad byte 0xff" in section
    pairs = re.findall(r'<div class="pair (\w+)".*?</div>\n</div>', section, re.S)
    assert pairs == ["near", "conflict"]
    blocks = section.split('<div class="pair ')[1:]
    for block in blocks:  # both images side by side: the flagged row's and the other's
        assert block.count('<div class="pair-side">') == 2
        assert block.count("<img src=\"data:image/png;base64,") == 2
    assert "line 12" in blocks[0] and "kept in its place" in blocks[0]
    # the conflict shows both gold answers: the other row's read back from the source shard
    assert "<b>Answer:</b> circle" in blocks[1]
    assert f"<b>Answer:</b> {store.read_shard('source', 0).column('answer')[1]}" in blocks[1]
    assert ("| shapes | 14 | 9 | 5 | duplicate_exact 1, duplicate_near 1, "
            "image_unsupported_input 1, undecodable_text 2 | 1 |") in md
    assert "| empty | 50 | 0 | 50 | image_unsupported_input 50 | 0 |" in md
    assert "near-duplicate: dropped" in md and "conflict (answers differ)" in md


def test_verification_counts_failed_generations_as_errors(tmp_path):
    make_run(tmp_path / "run")
    html_path, md_path = write_report(tmp_path / "run")
    # digit-sum: correct, incorrect, invalid and one failed generation
    assert ("<tr><td>digit-sum</td><td>1</td><td>1</td><td>1</td><td>0</td><td>1</td>"
            "<td>0</td><td>4</td></tr>") in html_path.read_text()
    assert "| digit-sum | 1 | 1 | 1 | 0 | 1 | 4 |" in md_path.read_text()


def test_no_standardisation_artifact_no_section(tmp_path):
    store = make_run(tmp_path / "run")
    (store.stage_dir("source") / "artifacts" / "standardisation.json").unlink()
    html_path, md_path = write_report(tmp_path / "run")
    html, md = html_path.read_text(), md_path.read_text()
    assert 'id="standardisation"' not in html and "## Standardisation" not in md
    assert "standardisation.json" not in html and 'id="stages"' in html


def test_writes_html_and_markdown_with_every_section(tmp_path):
    make_run(tmp_path / "run")
    html_path, md_path = write_report(tmp_path / "run")
    html = html_path.read_text()
    md = md_path.read_text()
    assert html_path.name == "report.html" and md_path.name == "report.md"
    assert json.loads((tmp_path / "run" / "efficacy.json").read_text())["groups"] == GROUPS
    for group in GROUPS:
        assert group["group"] in html and group["region"] in html
        assert f"| {group['group']} | {group['B_S']:.1f} | {group['B_L']:.1f} |" in md
    assert 'id="dual-tuning-table"' in html and 'class="scatter"' in html
    assert html.count('class="point"') == 3 and html.count("<svg") == 4  # each figure once
    # the reference distiller's note (the synthetic plugin's section), above the stages
    assert html.index('<section id="teacher"') < html.index('<section id="stages"')
    assert md.index("## Teacher\n\n> No teacher model was run") < md.index("## Stages")
    # stage summary with counts and times
    assert re.search(r"<td>filter</td><td>filter</td><td>difficulty</td><td>done</td>"
                     r"<td>9</td><td>6</td><td>12.0</td>", html)
    assert "| filter | filter | difficulty | done | 9 | 6 | 12.0 |" in md
    # verification breakdown: 3 correct, 3 incorrect, 3 invalid over the three groups
    assert "answer differs" in html
    assert html.count('class="hist"') == 3
    assert html.count('class="sample"') == 9


def test_self_contained_and_escaped(tmp_path):
    make_run(tmp_path / "run")
    html = write_report(tmp_path / "run")[0].read_text()
    assert "data:image/png;base64," in html
    assert not re.search(r'(src|href)="(?!data:|#)', html), "no external resources"
    assert "<script>bad()</script>" not in html and "&lt;b&gt;bold?&lt;/b&gt;" in html
    assert html.count("<script>") == 1


def test_run_without_judge_still_reports(tmp_path):
    make_run(tmp_path / "run", with_judge=False)
    html = write_report(tmp_path / "run")[0].read_text()
    assert 'id="dual-tuning"' not in html and 'class="scatter"' not in html
    assert 'id="pass-rates"' in html  # the other plugin sections still show
    assert not (tmp_path / "run" / "efficacy.json").exists()


def test_judge_without_results_yet(tmp_path):
    store = make_run(tmp_path / "run")
    (store.stage_dir("judge") / "artifacts" / "efficacy.json").unlink()
    html = write_report(tmp_path / "run")[0].read_text()
    assert "No efficacy judge results in this run yet." in html and 'class="scatter"' not in html


def test_curate_report_prints_the_dual_tuning_answer(tmp_path, run_cli):
    from dualcurate_dualtuning.results import efficacy_groups

    make_run(tmp_path / "run")
    result = run_cli("report", str(tmp_path / "run"))
    assert result.exit_code == 0, result.stderr
    # each plugin section's summary: the pass rates, then the Dual Tuning table
    assert result.stderr.index("Pass rates") < result.stderr.index("Dual Tuning")
    table = result.stderr.split("Dual Tuning")[1].splitlines()
    for group in GROUPS:
        line = next(ln for ln in table if group["group"] in ln)
        assert group["region"] in line and f"{group['DT_L']:.1f}" in line
    assert efficacy_groups(tmp_path / "run") == GROUPS
    make_run(tmp_path / "plain", with_judge=False)
    result = run_cli("report", str(tmp_path / "plain"))
    assert result.exit_code == 0 and "Dual Tuning" not in result.stderr
    assert efficacy_groups(tmp_path / "plain") == []


def test_missing_run_names_the_directory(tmp_path):
    from dualcurate.errors import StoreError

    with pytest.raises(StoreError, match=r"no manifest\.json"):
        write_report(tmp_path / "nothing")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def open_in_chromium(page: Path, profile: Path) -> tuple[str, list[str]]:
    """(DOM after scripts ran, console lines) of ``page`` in headless Chromium."""
    proc = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [line for line in proc.stderr.splitlines() if "CONSOLE" in line]


def _require_chromium(func):
    """Browser tests fail (never skip) without chromium: `make test-browser` installs it."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        assert chromium() is not None, ("needs Debian's chromium: run `make test-browser`, "
                                        "which installs it (apt-get install chromium)")
        return func(*args, **kwargs)
    return wrapper


needs_chromium = _require_chromium


@pytest.mark.browser
@needs_chromium
def test_opens_in_headless_chromium_without_console_errors(tmp_path):
    make_run(tmp_path / "run")
    html_path, _ = write_report(tmp_path / "run")
    dom, console = open_in_chromium(html_path, tmp_path / "profile")
    assert not console, console
    assert 'id="dual-tuning-table"' in dom and "<svg" in dom and 'class="point"' in dom
    assert "9 of 9 shown" in dom  # the sample browser's script ran
    section = dom.split('id="standardisation"')[1].split("</section>")[0]
    assert "<td>shapes</td><td>14</td><td>9</td>" in section
    assert section.count('class="pair-side"') == 4 and section.count("<img") == 4
    assert 'id="teacher"' in dom and "No teacher model was run" in dom


@pytest.mark.browser
@needs_chromium
def test_console_errors_are_seen(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>notDefined();</script></body></html>")
    _, console = open_in_chromium(page, tmp_path / "profile")
    assert any("notDefined" in line for line in console)
