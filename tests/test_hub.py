"""`curate push`: the dry-run folder (data with embedded images in small row groups, the dataset
card) and the upload to a loopback stand-in of the Hub's HTTP API (never the real Hub)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dualcurate.hub import IMAGE_ROW_GROUP, recipe_toml
from dualcurate.schema import Sample, Trace
from dualcurate.store import RunStore
from dualcurate.testing.fake_hub import FakeHub

GROUPS = [
    {"group": "math", "B_S": 20.0, "B_L": 40.0, "DT_S": 22.0, "DT_L": 80.0, "Gain_DA": 10.0,
     "Gain_CoT": 100.0, "region": "reasoning-benefit"},
    {"group": "chart", "B_S": 60.0, "B_L": 50.0, "DT_S": 90.0, "DT_L": 70.0, "Gain_DA": 50.0,
     "Gain_CoT": 16.7, "region": "direct-benefit"},
]
RECIPE = {"run": {"name": "t", "seed": 0, "shard_size": 128, "cache": None},
          "source": {"kind": "source", "use": "hf-dataset", "sources": [{"name": "a"}]},
          "distill": {"kind": "distiller", "use": "openai-distill",
                      "engine": {"use": "openai", "model": "org/teacher-as-recipe-names-it"}},
          "verify": {"kind": "verifier", "use": "rule-verify", "min_words": 0},
          "filter": {"kind": "filter", "use": "difficulty", "keep": "pass_rate < 1"}}
N = 250  # more than two row groups of image data


def png(i: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (i % 256, (7 * i) % 256, 40)).save(buf, format="PNG")
    return buf.getvalue()


def make_run(root: Path) -> RunStore:
    store = RunStore(root)
    rows = []
    for i in range(N):
        digest = store.images.put(png(i))
        domain = ["math", "chart"][i % 2]
        row = Sample(source="s", domain=domain, images=[digest], question=f"Q{i} | pipe?",
                     answer=str(i)).to_row()
        row["traces"] = [Trace(text=f"<think>t</think><answer>{i}</answer>", reasoning="t",
                               answer=str(i), model="Qwen/Qwen3-VL-235B-A22B-Thinking",
                               engine="openai",
                               verdict="correct" if i % 3 else "incorrect").model_dump()]
        row["pass_rate"] = [0.0, 0.5, 1.0][i % 3]
        row["keep"] = i % 3 != 2
        rows.append(row)
    for shard, start in enumerate(range(0, N, 128)):
        for stage in ("verify", "filter"):
            part = rows[start:start + 128]
            if stage == "verify":
                part = [{k: v for k, v in r.items() if k not in ("pass_rate", "keep")}
                        for r in part]
            store.write_shard(stage, shard, part)
    for name, kind, plugin, rows_out in [("source", "source", "hf-dataset", N),
                                         ("distill", "distiller", "openai-distill", N),
                                         ("verify", "verifier", "rule-verify", N),
                                         ("filter", "filter", "difficulty", 167),
                                         ("judge", "efficacy_judge", "dual-tuning", 167)]:
        rec = store.stage_record(name)
        rec.update(kind=kind, plugin=plugin, status="done", rows_in=N, rows_out=rows_out,
                   seconds=1.0)
    path = store.artifacts_dir("judge") / "efficacy.json"
    path.write_text(json.dumps({"groups": GROUPS}))
    store.manifest.update(status="done", recipe_source="r.toml", recipe=RECIPE,
                          plugins={"builtins": "0.1.0", "hf-dataset": "0.1.0",
                                   "openai-distill": "0.1.0", "rule-verify": "0.1.0",
                                   "difficulty": "0.1.0", "dual-tuning": "0.1.0"})
    store.save_manifest()
    return store


def front_matter(card: str) -> dict:
    import yaml

    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_dry_run_writes_data_and_card(tmp_path, run_cli):
    make_run(tmp_path / "run")
    out = tmp_path / "upload"
    result = run_cli("push", str(tmp_path / "run"), "--stage", "filter", "--repo", "me/data",
                     "--dry-run", str(out), "--license", "cc-by-4.0")
    assert result.exit_code == 0, result.stderr
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["README.md", "data/train-00000-of-00001.parquet"]

    kept = 167  # keep = i % 3 != 2 over 250 rows
    meta = pq.ParquetFile(out / "data" / "train-00000-of-00001.parquet").metadata
    assert meta.num_rows == kept
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert max(sizes) <= IMAGE_ROW_GROUP and sum(sizes) == kept

    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"),
                               split="train")
    assert isinstance(ds.features["images"], datasets.List)
    assert isinstance(ds.features["images"].feature, datasets.Image)
    first = ds[0]
    assert first["images"][0].size == (8, 8)  # decoded as a PIL image
    assert len(first["image_sha256"][0]) == 64

    card = (out / "README.md").read_text()
    yaml_meta = front_matter(card)
    assert yaml_meta["license"] == "cc-by-4.0"
    assert yaml_meta["configs"] == [{"config_name": "default",
                                     "data_files": [{"split": "train",
                                                     "path": "data/train-*"}]}]
    assert yaml_meta["size_categories"] == ["n<1K"]
    # the teacher as the recipe's engine reference names it
    assert "org/teacher-as-recipe-names-it" in card and "`rule-verify`" in card
    assert "| difficulty | 0.1.0 | yes |" in card
    assert "| filter | filter | difficulty | done | 250 | 167 | 1.0 |" in card
    # verification: 250 traces, i % 3 == 0 incorrect -> 84 incorrect, 166 correct
    assert "| chart | 83 | 42 | 125 | 66.4 |" in card
    assert "## Pass rates" in card and "## Dual Tuning" in card
    assert "| math | 20.0 | 40.0 | 22.0 | 80.0 | 10.0 | 100.0 | reasoning-benefit |" in card
    recipe = card.split("```toml\n")[1].split("```")[0]
    import tomllib

    assert tomllib.loads(recipe)["distill"]["engine"]["model"] == \
        "org/teacher-as-recipe-names-it"


def test_card_carries_the_sources_section_without_run_image_links(tmp_path):
    """The hf-dataset source's Standardisation section reaches the card as in report.md, less
    its links into the run's image store (not uploaded); no teacher note for a real teacher."""
    from dualcurate.hub import dataset_card
    from dualcurate.report import write_report

    store = make_run(tmp_path / "run")
    digest = store.images.put(png(1))
    pair = {"line": 3, "question": "Q dup?", "answer": "1", "images": [digest],
            "kept_id": "nope", "kept_images": [digest]}
    doc = {"sources": {"a": {"rows_in": 260, "rows_out": 250, "dropped": {"no_answer": 9},
                             "duplicates": {"near": 1}, "near_conflicts": 0,
                             "pairs": {"near": [pair]}}}}
    (store.artifacts_dir("source") / "standardisation.json").write_text(json.dumps(doc))
    md = write_report(store.root)[1].read_text()  # report.md sits beside images/
    assert f"![image](images/{digest[:2]}/{digest})" in md
    card = dataset_card(store, "filter", "me/data", 167, has_images=True)
    section = card.split("## Standardisation\n\n")[1].split("\n## ")[0]
    assert "| a | 260 | 250 | 10 | duplicate_near 1, no_answer 9 | 0 |" in section
    assert "near-duplicate: dropped" in section and "](images/" not in card
    assert "No teacher model was run" not in card
    assert card.index("## Pipeline") < card.index("## Standardisation")


def test_dry_run_refuses_a_folder_with_files(tmp_path, run_cli):
    make_run(tmp_path / "run")
    (tmp_path / "upload").mkdir()
    (tmp_path / "upload" / "x").write_text("x")
    result = run_cli("push", str(tmp_path / "run"), "--stage", "filter", "--repo", "me/data",
                     "--dry-run", str(tmp_path / "upload"))
    assert result.exit_code == 2 and "not empty" in result.stderr


def test_bad_repo_and_stage(tmp_path, run_cli):
    make_run(tmp_path / "run")
    result = run_cli("push", str(tmp_path / "run"), "--stage", "filter", "--repo", "data",
                     "--dry-run", str(tmp_path / "u"))
    assert result.exit_code == 2 and "OWNER/NAME" in result.stderr
    result = run_cli("push", str(tmp_path / "run"), "--stage", "nope", "--repo", "me/data",
                     "--dry-run", str(tmp_path / "u"))
    assert result.exit_code == 2 and "'nope' has no rows" in " ".join(result.stderr.split())


def test_push_uploads_exactly_the_dry_run(tmp_path, run_cli):
    make_run(tmp_path / "run")
    dry = tmp_path / "dry"
    assert run_cli("push", str(tmp_path / "run"), "--stage", "filter", "--repo", "me/data",
                   "--dry-run", str(dry)).exit_code == 0
    with FakeHub() as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": hub.token, "HF_HUB_DISABLE_XET": "1"}
        result = run_cli("push", str(tmp_path / "run"), "--stage", "filter", "--repo",
                         "me/data", "--private", env=env)
        assert result.exit_code == 0, result.stderr + str(hub.unknown)
        assert hub.unknown == [] and hub.cards_validated == 1
        repo = hub.repos["me/data"]
        assert repo.repo_type == "dataset" and repo.private
        expected = {str(p.relative_to(dry)): p.read_bytes() for p in dry.rglob("*")
                    if p.is_file()}
        assert repo.files == expected
        assert len(repo.commits) == 1
        assert f"{hub.url}/datasets/me/data/commit/" in result.stdout

        # a second push (same repo, exist_ok) replaces the data files in one more commit
        result = run_cli("push", str(tmp_path / "run"), "--stage", "verify", "--repo",
                         "me/data", env=env)
        assert result.exit_code == 0, result.stderr
        assert len(repo.commits) == 2
        assert pq.ParquetFile(io.BytesIO(
            repo.files["data/train-00000-of-00001.parquet"])).metadata.num_rows == N


def test_push_with_a_wrong_token_says_so(tmp_path, run_cli):
    make_run(tmp_path / "run")
    with FakeHub() as hub:
        result = run_cli("push", str(tmp_path / "run"), "--stage", "filter", "--repo",
                         "me/data", env={"HF_ENDPOINT": hub.url, "HF_TOKEN": "wrong"})
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    assert "push to me/data failed" in text and "HF_TOKEN" in text
    assert hub.repos == {}


def test_recipe_toml_round_trips():
    import tomllib

    assert tomllib.loads(recipe_toml(RECIPE))["source"]["sources"] == [{"name": "a"}]
    assert "cache" not in tomllib.loads(recipe_toml(RECIPE))["run"]


@pytest.mark.parametrize("n,cat", [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K")])
def test_size_category(n, cat):
    from dualcurate.hub import _size_category

    assert _size_category(n) == cat
