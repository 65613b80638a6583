"""`curate export --format llamafactory|verl`: the files as written, and (markers llamafactory,
verl; `make test-export-tools`) read by each tool's own loader in its own venv: LLaMA-Factory
loads the dataset and runs a one-step SFT with the images on a tiny local LLaVA on CPU; verl's
RLHFDataset loads the Parquet."""

from __future__ import annotations

import io
import json
import subprocess
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dualcurate.schema import Sample, Trace
from dualcurate.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
LF_PY = ROOT / ".venv-llamafactory" / "bin" / "python"
VERL_PY = ROOT / ".venv-verl" / "bin" / "python"


def png(i: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (40 * i % 256, 90, 200)).save(buf, format="PNG")
    return buf.getvalue()


def make_run(root: Path, with_images: bool = True) -> RunStore:
    """Rows as a curated run leaves them: judge rows with mode (long/short), verified and
    failed traces; an rl-subset stage with rl rows kept = false; pass rates."""
    store = RunStore(root)
    judge, rl = [], []
    for i in range(12):
        digest = store.images.put(png(i)) if with_images else None
        mode = "long" if i % 2 == 0 else "short"
        row = Sample(source=f"src{i % 2}", domain=["math", "chart"][i % 2],
                     images=[digest] if digest else [], question=f"What is {i} + {i}?",
                     answer=str(2 * i), choices=[]).to_row()
        verdict = "incorrect" if i == 4 else "correct"  # row 4: long, no verified trace
        row["traces"] = [Trace(text="", reasoning=f"{i} plus {i} is {2 * i}.",
                               answer=str(2 * i), verdict=verdict).model_dump()]
        row["pass_rate"] = [0.0, 0.5, 1.0][i % 3]
        row["pass_drawn"], row["pass_correct"] = 4, [0, 2, 4][i % 3]
        if i == 7:  # adaptive sampling stopped after one incorrect rollout: rate unknown
            row["pass_rate"], row["pass_drawn"], row["pass_correct"] = None, 1, 0
        row["split"] = "train"
        row["rl_split"] = "rl" if i >= 9 else "sft"
        rl.append({**row, "keep": i < 9})
        judge.append({**row, "mode": mode, "efficacy_region": "x"})
    store.write_shard("rl_split", 0, rl)
    store.write_shard("judge", 0, [r for r in judge if r["rl_split"] == "sft"])
    for name, kind, plugin in [("rl_split", "filter", "rl-subset"),
                               ("judge", "efficacy_judge", "dual-tuning")]:
        store.stage_record(name).update(kind=kind, plugin=plugin, status="done")
    store.manifest["recipe"] = {"judge": {"use": "dual-tuning", "user_prefix_short": "Quick.",
                                          "user_prefix_long": "Reason first.",
                                          "system_prompt_long": "You think."}}
    store.save_manifest()
    return store


def test_llamafactory_export(tmp_path, run_cli):
    make_run(tmp_path / "run")
    out = tmp_path / "lf"
    (out).mkdir()
    (out / "dataset_info.json").write_text(json.dumps({"other": {"file_name": "o.json"}}))
    result = run_cli("export", str(tmp_path / "run"), "--stage", "judge", "--to", str(out),
                     "--format", "llamafactory")
    assert result.exit_code == 0, result.stderr
    assert "wrote 8 examples from 9 rows" in result.stdout
    assert "skipped 1: no verified trace" in result.stdout
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["other"] == {"file_name": "o.json"}  # kept
    assert info["judge"]["file_name"] == "judge.json"
    assert info["judge"]["formatting"] == "sharegpt"
    assert info["judge"]["columns"] == {"messages": "messages", "images": "images"}
    records = json.loads((out / "judge.json").read_text())
    by_mode = {m: [r for r in records if r["mode"] == m] for m in ("long", "short")}
    assert len(by_mode["long"]) == 4 and len(by_mode["short"]) == 4
    long, short = by_mode["long"][0], by_mode["short"][0]
    assert long["messages"][0] == {"role": "system", "content": "You think."}
    assert long["messages"][1]["content"] == "<image>Reason first.\n\nWhat is 0 + 0?"
    assert long["messages"][2]["content"] == "<think>0 plus 0 is 0.</think>\n<answer>0</answer>"
    assert [m["role"] for m in short["messages"]] == ["user", "assistant"]
    assert short["messages"][0]["content"].startswith("<image>Quick.\n\nWhat is 1 + 1?")
    assert short["messages"][1]["content"] == "<answer>2</answer>"
    for record in records:
        assert len(record["images"]) == record["messages"][-2]["content"].count("<image>") == 1
        path = out / record["images"][0]
        assert not Path(record["images"][0]).is_absolute() and path.read_bytes()[:4] == \
            b"\x89PNG"

    forced = run_cli("export", str(tmp_path / "run"), "--stage", "judge", "--to",
                     str(tmp_path / "lf2"), "--format", "llamafactory", "--mode", "short",
                     "--images", "none", "--name", "direct")
    assert forced.exit_code == 0, forced.stderr
    records = json.loads((tmp_path / "lf2" / "direct.json").read_text())
    assert len(records) == 9 and all(r["mode"] == "short" and r["images"] == []
                                     for r in records)
    assert "<image>" not in records[0]["messages"][0]["content"]
    bad = run_cli("export", str(tmp_path / "run"), "--stage", "judge", "--to",
                  str(tmp_path / "x"), "--format", "llamafactory", "--images", "embed")
    assert bad.exit_code == 2 and "copy, link, none" in bad.stderr


def test_verl_export_and_subsets(tmp_path, run_cli):
    make_run(tmp_path / "run")
    result = run_cli("export", str(tmp_path / "run"), "--stage", "rl_split", "--to",
                     str(tmp_path / "v"), "--format", "verl", "--subset", "rl")
    assert result.exit_code == 0, result.stderr
    table = pq.read_table(tmp_path / "v" / "rl_split_rl.parquet")
    assert table.column_names == ["data_source", "prompt", "images", "ability",
                                  "reward_model", "extra_info"]
    rows = table.to_pylist()
    assert [r["extra_info"]["id"] for r in rows] and len(rows) == 3  # rows 9-11, keep = false
    first = rows[0]
    assert first["data_source"] == "src1" and first["ability"] == "chart"
    assert first["prompt"][0]["role"] == "system"
    assert first["prompt"][1] == {"role": "user", "content": "<image>What is 9 + 9?"}
    assert first["reward_model"] == {"style": "rule", "ground_truth": "18"}
    assert first["images"][0]["bytes"][:4] == b"\x89PNG"
    assert first["extra_info"]["split"] == "rl" and first["extra_info"]["pass_rate"] == 0.0

    hard = run_cli("export", str(tmp_path / "run"), "--stage", "rl_split", "--to",
                   str(tmp_path / "v"), "--format", "verl", "--subset", "hard")
    assert hard.exit_code == 0, hard.stderr
    rates = [r["extra_info"]["pass_rate"] for r in
             pq.read_table(tmp_path / "v" / "rl_split_hard.parquet").to_pylist()]
    assert rates == [0.0, 0.0, 0.0]  # rows 0, 3, 6 (kept; row 9 is rl, dropped)
    nontrivial = run_cli("export", str(tmp_path / "run"), "--stage", "rl_split", "--to",
                         str(tmp_path / "v"), "--format", "verl", "--subset", "nontrivial")
    assert nontrivial.exit_code == 0, nontrivial.stderr
    ids = [r["extra_info"]["question"] for r in
           pq.read_table(tmp_path / "v" / "rl_split_nontrivial.parquet").to_pylist()]
    assert ids == [f"What is {i} + {i}?" for i in (0, 1, 3, 4, 6, 7)]
    missing = run_cli("export", str(tmp_path / "run"), "--stage", "judge", "--to",
                      str(tmp_path / "v"), "--format", "verl", "--subset", "nope")
    assert missing.exit_code == 2 and "--subset 'nope'" in missing.stderr


def _run(python: Path, script: str, cwd: Path, timeout: int = 600) -> str:
    proc = subprocess.run([str(python), "-c", textwrap.dedent(script)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                               "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                               "HOME": str(cwd), "CUDA_VISIBLE_DEVICES": "",
                               "DISABLE_VERSION_CHECK": "1", "WANDB_DISABLED": "true",
                               "TOKENIZERS_PARALLELISM": "false"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


@pytest.mark.llamafactory
def test_llamafactory_loads_and_trains_one_step(tmp_path, run_cli, tiny_lm_dir,
                                                tiny_llava_dir):
    assert LF_PY.exists(), "make test-export-tools sets up .venv-llamafactory"
    make_run(tmp_path / "run")
    data = tmp_path / "data"
    assert run_cli("export", str(tmp_path / "run"), "--stage", "judge", "--to", str(data),
                   "--format", "llamafactory").exit_code == 0
    # 1. LLaMA-Factory's own loader reads the image export: every image path resolves
    out = _run(LF_PY, f"""
        from llamafactory.data.parser import get_dataset_list
        from llamafactory.data.loader import _load_single_dataset
        from llamafactory.hparams import DataArguments, ModelArguments, TrainingArguments
        data_args = DataArguments(dataset_dir={str(data)!r}, dataset="judge", template="qwen")
        attr = get_dataset_list(["judge"], data_args.dataset_dir)[0]
        ds = _load_single_dataset(attr, ModelArguments(model_name_or_path={str(tiny_lm_dir)!r}),
                                  data_args, TrainingArguments(output_dir="o", use_cpu=True))
        import os
        print("ROWS", len(ds))
        print("IMAGES_OK", all(os.path.isfile(p) for r in ds for p in r["_images"]))
        print("ROLES", [m["role"] for m in ds[0]["_prompt"]], ds[0]["_response"][0]["role"])
        """, tmp_path)
    assert "ROWS 8" in out and "IMAGES_OK True" in out, out
    assert "ROLES ['user'] assistant" in out, out
    # 2. a one-step SFT through llamafactory-cli on the image export: a tiny local LLaVA
    #    (its processor places the images), template llava, CPU
    config = tmp_path / "sft.yaml"
    config.write_text(textwrap.dedent(f"""
        model_name_or_path: {tiny_llava_dir}
        stage: sft
        do_train: true
        finetuning_type: full
        dataset_dir: {data}
        dataset: judge
        template: llava
        cutoff_len: 512
        output_dir: {tmp_path / "out"}
        per_device_train_batch_size: 2
        max_steps: 1
        logging_steps: 1
        save_strategy: "no"
        report_to: none
        overwrite_output_dir: true
        use_cpu: true
        """))
    proc = subprocess.run([str(LF_PY.parent / "llamafactory-cli"), "train", str(config)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={"PATH": f"{LF_PY.parent}:/usr/bin:/bin", "HOME": str(tmp_path),
                               "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "",
                               "DISABLE_VERSION_CHECK": "1", "WANDB_DISABLED": "true"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 1
    assert any("loss" in entry for entry in state["log_history"])


@pytest.mark.verl
def test_verl_rl_dataset_loads_the_parquet(tmp_path, run_cli, tiny_lm_dir, tiny_llava_dir):
    assert VERL_PY.exists(), "make test-export-tools sets up .venv-verl"
    make_run(tmp_path / "text", with_images=False)
    make_run(tmp_path / "images")
    for run in ("text", "images"):
        assert run_cli("export", str(tmp_path / run), "--stage", "rl_split", "--to",
                       str(tmp_path / run / "v"), "--format", "verl", "--subset",
                       "sft").exit_code == 0
    out = _run(VERL_PY, f"""
        from omegaconf import OmegaConf
        from transformers import AutoProcessor, AutoTokenizer
        from verl.utils.dataset.rl_dataset import RLHFDataset
        config = OmegaConf.create({{"prompt_key": "prompt", "image_key": "images",
                                    "max_prompt_length": 256, "truncation": "error",
                                    "filter_overlong_prompts": True, "return_raw_chat": True,
                                    "cache_dir": "cache"}})
        # text rows: the whole item, as verl's trainer gets it
        tok = AutoTokenizer.from_pretrained({str(tiny_lm_dir)!r})
        ds = RLHFDataset(data_files=[{str(tmp_path / "text" / "v" / "rl_split_sft.parquet")!r}],
                         tokenizer=tok, config=config, processor=None)
        item = ds[0]
        print("LEN", len(ds))
        print("ROLES", [m["role"] for m in item["raw_prompt"]])
        print("USER", item["raw_prompt"][-1]["content"])
        print("TRUTH", item["reward_model"]["ground_truth"], item["data_source"])
        # image rows: verl turns each <image> into an image part holding the decoded picture
        # (its pixel processing needs qwen_vl_utils and a Qwen-VL processor, not installed)
        proc = AutoProcessor.from_pretrained({str(tiny_llava_dir)!r})
        config.filter_overlong_prompts = False
        ds = RLHFDataset(data_files=[{str(tmp_path / "images" / "v" / "rl_split_sft.parquet")!r}],
                         tokenizer=proc.tokenizer, config=config, processor=proc)
        messages = ds._build_messages(dict(ds.dataframe[0]), key="prompt")
        parts = messages[-1]["content"]
        print("PARTS", [p["type"] for p in parts], parts[0]["image"].size, parts[1]["text"])
        """, tmp_path)
    assert "LEN 9" in out, out
    assert "ROLES ['system', 'user']" in out and "USER What is 0 + 0?" in out, out
    assert "TRUTH 0 src0" in out, out
    assert "PARTS ['image', 'text'] (16, 16) What is 0 + 0?" in out, out


def test_docs_reward_function_scores_as_the_trainers_do():
    """docs/export.md's verl reward function, run as written."""
    pytest.importorskip("dualcurate_verify")
    doc = (ROOT / "docs" / "export.md").read_text()
    code = next(block.split("```")[0] for block in doc.split("```python")[1:]
                if "def compute_score" in block)
    namespace: dict = {}
    exec(compile(code, "docs/export.md", "exec"), namespace)
    score = namespace["compute_score"]
    assert score("geo", "<think>6 * 4 / 2</think>\n<answer>12</answer>", "12") == \
        pytest.approx(1.0)
    assert score("geo", "The area is 12.", "12") == pytest.approx(0.9)
    assert score("geo", "<think>x</think><answer>13</answer>", "12") == pytest.approx(0.1)
    assert score("mc", "<think>x</think><answer>B</answer>", "B",
                 {"answer_type": "multiple_choice", "choices": ["1", "2"]}) == pytest.approx(1.0)
