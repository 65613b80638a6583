"""hf-distill with tiny local models: traces from a real transformers generation, through the
request cache."""

from __future__ import annotations

import io

import pytest

from dualcurate.distill import TeacherDistiller
from dualcurate.schema import Sample, rows_to_table
from dualcurate.testing.contracts import DistillerContract, default_rows
from dualcurate_hf import plugin
from dualcurate_hf.distill import HFDistiller


def config(model_dir, batch_size=4, **extra):
    return {"engine": {"model": str(model_dir), "batch_size": batch_size}, "max_tokens": 8,
            "seed": 0, **extra}


class TestHFDistillerContract(DistillerContract):
    stage_cls = HFDistiller
    plugin = plugin.hf_distill

    @pytest.fixture(autouse=True)
    def _model(self, tiny_lm_dir):
        self.config = config(tiny_lm_dir, samples_per_question=2)


def run(stage, rows, ctx):
    stage.setup(ctx)
    try:
        return stage.process(rows, ctx)
    finally:
        stage.teardown()


def test_text_teacher_traces_and_cached_rerun(tiny_lm_dir, stage_context):
    rows = default_rows(3)
    out = run(HFDistiller(config(tiny_lm_dir, samples_per_question=2)), rows, stage_context)
    assert stage_context.stats.sent == 6
    for row in out:
        assert row["n_traces"] == 2
        for trace in row["traces"]:
            assert trace["engine"] == "hf" and trace["model"] == str(tiny_lm_dir)
            assert trace["finish_reason"] in ("stop", "length")
            assert trace["truncated"] == (trace["finish_reason"] == "length")
            assert 1 <= trace["completion_tokens"] <= 8
    assert rows_to_table(out).num_rows == 3
    again = run(HFDistiller(config(tiny_lm_dir, samples_per_question=2, batch_size=1)), rows,
                stage_context)
    assert stage_context.stats.sent == 6  # batch_size is runtime-only: all from the cache
    assert again == out


def test_llava_teacher_gets_the_image(tiny_llava_dir, stage_context):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "green").save(buf, format="PNG")
    digest = stage_context.images.put(buf.getvalue())
    rows = [Sample(source="t", question="What colour is it?", answer="green",
                   images=[digest]).to_row()]
    stage = HFDistiller(config(tiny_llava_dir, samples_per_question=2))
    out = run(stage, rows, stage_context)
    assert out[0]["n_traces"] == 2
    assert all(t["error"] is None for t in out[0]["traces"])


def test_is_a_teacher_distiller_on_hf():
    assert issubclass(HFDistiller, TeacherDistiller)
    assert HFDistiller.default_engine == "hf" and HFDistiller.name == "hf-distill"
