"""SFT on the tiny models: loss falls (text and LLaVA), LoRA adapters load and merge, resume,
no pickle is ever loaded, and the trainer contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dualcurate import StageContext
from dualcurate.testing.contracts import TrainerContract
from dualcurate_trl import plugin
from dualcurate_trl.errors import TrainerError
from dualcurate_trl.sft import SFTStage
from dualcurate_trl.toy import arithmetic_rows, colour_rows, to_hf
from dualcurate_trl.training_log import read_log

FAST = {"learning_rate": 5e-3, "per_device_train_batch_size": 4,
        "trl_args": {"gradient_checkpointing": False}}


def _losses(workdir: Path) -> list[float]:
    return [r["loss"] for r in read_log(workdir / "training_log.jsonl") if "loss" in r]


def _ctx(tmp_path: Path) -> StageContext:
    return StageContext.ephemeral(stage_name="train", root=tmp_path / "run")


def test_text_sft_loss_falls_and_writes_the_artifacts(lm_dir: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    stage = SFTStage({"model": str(lm_dir), "mode": "long", "max_steps": 16, **FAST})
    model_dir = stage.train(to_hf(arithmetic_rows(8)), ctx)
    assert model_dir == ctx.workdir / "model"
    losses = _losses(ctx.workdir)
    assert len(losses) == 16
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses
    assert (model_dir / "model.safetensors").exists()
    assert (model_dir / "tokenizer.json").exists()
    assert not list(model_dir.glob("*.bin")) and not list(model_dir.glob("*.pt"))
    png = ctx.workdir / "training_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)


def test_vlm_sft_loss_falls(llava_dir: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    stage = SFTStage({"model": str(llava_dir), "mode": "short", "max_steps": 12, **FAST})
    model_dir = stage.train(to_hf(colour_rows(ctx)), ctx)
    losses = _losses(ctx.workdir)
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses
    assert (model_dir / "processor_config.json").exists()
    from transformers import AutoModelForImageTextToText, AutoProcessor

    AutoModelForImageTextToText.from_pretrained(model_dir, use_safetensors=True)
    AutoProcessor.from_pretrained(model_dir)


def test_lora_adapters_load_and_merge(lm_dir: Path, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ctx = _ctx(tmp_path)
    stage = SFTStage({"model": str(lm_dir), "mode": "short", "max_steps": 4, "lora": True,
                      "lora_r": 4, "merge_lora": True, **FAST})
    result = stage.run(to_hf(arithmetic_rows(4)), ctx)
    adapter = Path(result.artifacts["model"])
    merged_dir = Path(result.artifacts["merged"])
    assert (adapter / "adapter_model.safetensors").exists()
    assert (adapter / "adapter_config.json").exists()
    assert (merged_dir / "model.safetensors").exists()

    base = AutoModelForCausalLM.from_pretrained(lm_dir)
    peft_model = PeftModel.from_pretrained(base, adapter)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        adapted = peft_model(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(lm_dir)(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(merged_dir)(ids).logits
        remerged = peft_model.merge_and_unload()(ids).logits
    assert not torch.allclose(adapted, plain), "the adapter changed nothing"
    assert torch.allclose(adapted, merged, atol=1e-4)
    assert torch.allclose(remerged, merged, atol=1e-4)


def test_resumes_from_the_last_checkpoint(lm_dir: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    ds = to_hf(arithmetic_rows(4))
    cfg = {"model": str(lm_dir), "mode": "short", "save_steps": 2, **FAST}
    SFTStage({**cfg, "max_steps": 2}).train(ds, ctx)
    assert (ctx.workdir / "checkpoints" / "checkpoint-2").is_dir()
    SFTStage({**cfg, "max_steps": 4}).train(ds, ctx)
    steps = [r["step"] for r in read_log(ctx.workdir / "training_log.jsonl") if "loss" in r]
    assert steps == [1, 2, 3, 4], "the second run must continue at step 3, not restart"
    state = json.loads((ctx.workdir / "checkpoints" / "checkpoint-4" /
                        "trainer_state.json").read_text())
    assert state["global_step"] == 4


class _Payload:
    """Unpickling this runs code: writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("planted", ["pytorch_model.bin", "optimizer.pt", "extra/evil.pt"])
def test_planted_pickle_in_a_checkpoint_is_refused(lm_dir: Path, tmp_path: Path,
                                                   planted: str) -> None:
    import torch

    ctx = _ctx(tmp_path)
    ds = to_hf(arithmetic_rows(4))
    cfg = {"model": str(lm_dir), "mode": "short", "save_steps": 2, **FAST}
    SFTStage({**cfg, "max_steps": 2}).train(ds, ctx)
    checkpoint = ctx.workdir / "checkpoints" / "checkpoint-2"
    marker = tmp_path / "pwned"
    target = checkpoint / planted
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": _Payload(marker)}, target)
    with pytest.raises(TrainerError, match=planted.split("/")[-1]):
        SFTStage({**cfg, "max_steps": 4}).train(ds, ctx)
    assert not marker.exists(), "the pickle payload ran"


def test_bin_only_model_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (model / "pytorch_model.bin").write_bytes(b"not loaded")
    from dualcurate_trl.loading import load_model_and_processor

    with pytest.raises(TrainerError, match="safetensors"):
        load_model_and_processor(str(model), None, vision=False)


class TestSFTContract(TrainerContract):
    stage_cls = SFTStage
    plugin = plugin.sft

    @pytest.fixture(autouse=True)
    def _model(self, lm_dir: Path) -> None:
        self.config = {"model": str(lm_dir), "mode": "short", "max_steps": 1,
                       "trl_args": {"gradient_checkpointing": False}}


def _batch(trainer, n: int = 2) -> dict:
    examples = [trainer.train_dataset[i] for i in range(n)]
    return trainer.data_collator(examples)


def test_loss_covers_the_completion_only(lm_dir: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    stage = SFTStage({"model": str(lm_dir), "mode": "short", "max_steps": 1, **FAST})
    ds = stage.prepare(to_hf(arithmetic_rows(2)), ctx, vision=False)
    trainer, tokenizer = stage.build_trainer(ds, ctx.workdir, False, [])
    batch = _batch(trainer)
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        trained = tokenizer.decode(ids[labels != -100])
        assert trained.startswith("<answer>") and "</answer>" in trained, trained
        assert "What is" not in trained and "user" not in trained


def test_vlm_batches_carry_pixels_and_mask_the_prompt(llava_dir: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    stage = SFTStage({"model": str(llava_dir), "mode": "short", "max_steps": 1, **FAST})
    ds = stage.prepare(to_hf(colour_rows(ctx)), ctx, vision=True)
    trainer, processor = stage.build_trainer(ds, ctx.workdir, True, [])
    batch = _batch(trainer)
    assert batch["pixel_values"].shape[0] == 2
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        assert (ids == image_id).any(), "the prompt has no image tokens"
        assert not (labels == image_id).any()
        trained = processor.tokenizer.decode(ids[labels != -100])
        assert trained.startswith("<answer>") and "colour" not in trained, trained


def test_resuming_with_another_configuration_is_refused(lm_dir: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    ds = to_hf(arithmetic_rows(4))
    cfg = {"model": str(lm_dir), "mode": "short", "save_steps": 2, **FAST}
    SFTStage({**cfg, "max_steps": 2}).train(ds, ctx)
    with pytest.raises(TrainerError, match="changed: learning_rate"):
        SFTStage({**cfg, "max_steps": 4, "learning_rate": 1e-4}).train(ds, ctx)


@pytest.fixture(scope="module")
def many_token_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaVA whose processor expands one image into 256 tokens (64 px, 4-px patches),
    as a real VLM expands a large image into thousands."""
    from dualcurate.testing.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("llava-256") / "model", image_size=64,
                            patch_size=4)


def test_image_tokens_count_towards_max_length(many_token_llava: Path, tmp_path: Path) -> None:
    """The over-length check counts what the processor produces (each image as its many
    tokens), exactly the length TRL's collator builds: an example fits at that length and is
    dropped, never cut, one token below it."""
    from dualcurate_trl.sft import drop_over_length, vision_length

    ctx = _ctx(tmp_path)
    rows = to_hf(colour_rows(ctx))
    stage = SFTStage({"model": str(many_token_llava), "mode": "short", "max_length": None,
                      "max_steps": 1, **FAST})
    ds = stage.prepare(rows, ctx, vision=True)
    trainer, processor = stage.build_trainer(ds, ctx.workdir, True, [])
    batch = trainer.data_collator([ds[0]])
    built = int(batch["attention_mask"][0].sum())
    assert built > 256, "the image did not expand into its tokens"
    examples = [dict(ds[i]) for i in range(len(ds))]
    assert vision_length(examples[0], processor) == built
    model = str(many_token_llava)
    assert len(drop_over_length(examples[:1], model, None, built, vision=True)) == 1
    assert drop_over_length(examples[:1], model, None, built - 1, vision=True) == []

    # a limit the text alone fits but the image does not: every example is dropped, counted
    short = SFTStage({"model": model, "mode": "short", "max_length": 100, **FAST})
    assert vision_length(examples[0], processor) - 256 < 100
    mixed = [*colour_rows(ctx), *arithmetic_rows(1)]  # four with an image, one without
    kept = short.prepare(to_hf(mixed), ctx, vision=True)
    assert len(kept) == 1 and kept[0]["images"] == []
    assert short.build_stats["skipped"] == {"longer than max_length": 4}
