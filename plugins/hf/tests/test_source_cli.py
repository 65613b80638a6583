"""``curate run`` with a recipe whose source is hf-dataset (through the real CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from dualcurate_hf.sample_data import NOT_AN_IMAGE, image_bytes, write_dataset


def recipe(tmp_path: Path, fields: str = "") -> Path:
    geo = write_dataset(tmp_path / "geo", "parquet", [
        {"question": f"{i + 1}. Find angle {i}. (3 points)", "answer": f"{30 + i}°",
         "image": image_bytes(i)} for i in range(5)] + [
        {"question": "Broken?", "answer": "1", "image": NOT_AN_IMAGE}])
    charts = write_dataset(tmp_path / "charts", "image_folder", [
        {"prompt": "Which bar is tallest? Answer with a single letter.", "label": "(b)",
         "image": image_bytes(20 + i)} for i in range(3)])
    path = tmp_path / "recipe.toml"
    path.write_text(f"""
[run]
name = "hf"
shard_size = 3

[source]
use = "hf-dataset"

[[source.sources]]
name = "geo"
domain = "math"
parquet = "{geo}"

[[source.sources]]
name = "charts"
domain = "chart"
image_folder = "{charts}"
[source.sources.fields]
question = "prompt"
answer = "label"
{fields}
""")
    return path


def test_curate_run_with_hf_dataset(run_cli, tmp_path: Path) -> None:
    result = run_cli("run", str(recipe(tmp_path)), "--out", "out")
    assert result.exit_code == 0, result.stderr + result.stdout
    out = result.cwd / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert manifest["stages"][0]["rows_out"] == 8
    rows = [r for f in sorted((out / "source").glob("shard-*.parquet"))
            for r in pq.read_table(f).to_pylist()]
    assert len(rows) == 8 and len(list((out / "source").glob("shard-*.parquet"))) == 3
    assert [r["source"] for r in rows] == ["geo"] * 5 + ["charts"] * 3
    assert rows[0]["question"] == "Find angle 0." and rows[0]["answer"] == "30"
    chart = rows[-1]
    assert chart["answer"] == "B" and chart["answer_type"] == "multiple_choice"
    assert "step by step" in chart["question"]
    for row in rows:
        assert (out / "images" / row["images"][0][:2] / row["images"][0]).exists()
    report = json.loads((out / "source" / "artifacts" / "standardisation.json").read_text())
    assert report["sources"]["geo"]["dropped"] == {"image_not_an_image": 1}
    assert report["totals"] == {"rows_in": 9, "rows_out": 8,
                                "dropped": {"image_not_an_image": 1}, "duplicates": {}}
    again = run_cli("run", str(recipe(tmp_path)), "--out", "out")
    assert again.exit_code == 0, again.stderr


def test_curate_run_reports_an_unknown_column(run_cli, tmp_path: Path) -> None:
    result = run_cli("run", str(recipe(tmp_path, fields='image = "picture"')), "--out", "out")
    assert result.exit_code == 2
    text = " ".join((result.stderr + result.stdout).split())
    assert "'charts'" in text and "'picture'" in text and "file_name" in text


def test_curate_run_checks_files_before_running(run_cli, tmp_path: Path) -> None:
    path = recipe(tmp_path)
    path.write_text(path.read_text().replace(str(tmp_path / "geo"), str(tmp_path / "gone")))
    result = run_cli("run", str(path), "--out", "out")
    assert result.exit_code == 2
    assert "matches no file" in " ".join((result.stderr + result.stdout).split())
    assert not (result.cwd / "out" / "source").exists()


def test_console_summary_warning_and_strict(run_cli, tmp_path: Path) -> None:
    """Every source's summary at the end of the source stage; a source that keeps nothing is
    a warning (exit 0), and with --strict a failure (exit 2)."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"question": f"Q{i}?", "answer": str(i),
                                       "image": i}) + "\n" for i in range(4)))
    path = recipe(tmp_path)
    path.write_text(path.read_text().replace('[[source.sources]]\nname = "charts"',
                                             f'[[source.sources]]\nname = "ids"\njsonl = "{bad}"'
                                             f'\n\n[[source.sources]]\nname = "charts"'))
    result = run_cli("run", str(path), "--out", "out")
    assert result.exit_code == 0, result.stderr + result.stdout
    assert "source geo: read 6, kept 5, dropped 1 (image_not_an_image 1)" in result.stderr
    assert "source ids: read 4, kept 0, dropped 4 (image_unsupported_input 4)" in result.stderr
    assert "warning: source 'ids' kept 0 of 4 rows read" in result.stderr
    drops = [json.loads(x) for x in (result.cwd / "out" / "source" / "artifacts" /
                                     "drops.jsonl").read_text().splitlines()]
    assert [(d["source"], d["line"], d["reason"]) for d in drops if d["source"] == "ids"] == [
        ("ids", i, "image_unsupported_input") for i in range(1, 5)]
    manifest = json.loads((result.cwd / "out" / "manifest.json").read_text())
    source = next(s for s in manifest["stages"] if s["name"] == "source")
    # rows in: every record read, before the source's own drops; rows out: what it kept
    assert source["rows_in"] - source["rows_out"] == len(drops) > 0
    strict = run_cli("run", str(path), "--out", "out2", "--strict")
    assert strict.exit_code == 2
    assert "strict: source 'ids' kept 0 of 4 rows read" in strict.stderr
    # the recipe's own [run] strict does the same, with nothing in the environment
    from_recipe = run_cli("run", str(path), "--out", "out3", "--set", "run.strict=true")
    assert from_recipe.exit_code == 2
    assert "strict: source 'ids' kept 0 of 4 rows read" in from_recipe.stderr
