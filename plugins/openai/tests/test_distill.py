"""openai-distill against the scripted server: traces, prompts, cache, caption pass."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from dualcurate.distill import TeacherDistiller
from dualcurate.progress import StageProgress
from dualcurate.testing.contracts import DistillerContract, default_rows
from dualcurate_openai import plugin
from dualcurate_openai.distill import OpenAIDistiller
from dualcurate_openai.testing import Reply, chat_response


def options(server, **extra):
    return {"engine": {"model": "teacher", "base_url": server.base_url,
                       "backoff_initial": 0.01, "backoff_max": 0.02},
            "max_tokens": 64, "seed": 0, **extra}


def distil(server, ctx, rows, **extra):
    stage = OpenAIDistiller(options(server, **extra))
    stage.setup(ctx)
    try:
        return stage.process(rows, ctx)
    finally:
        stage.teardown()


def image_row(ctx, question="How many red squares?"):
    from PIL import Image

    from dualcurate.schema import Sample

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    digest = ctx.images.put(buf.getvalue())
    return Sample(source="t", question=question, answer="1", images=[digest],
                  caption="A red square.").to_row()


class TestOpenAIDistillerContract(DistillerContract):
    stage_cls = OpenAIDistiller
    plugin = plugin.openai_distill

    @pytest.fixture(autouse=True)
    def _server(self, server):
        self.config = options(server, samples_per_question=2)


def test_traces_are_parsed_and_complete(server, stage_context):
    out = distil(server, stage_context, default_rows(3), samples_per_question=2)
    assert server.samples == 6
    for row in out:
        assert row["n_traces"] == 2
        assert [t["sample_index"] for t in row["traces"]] == [0, 1]
        for trace in row["traces"]:
            assert trace["model"] == "teacher" and trace["engine"] == "openai"
            assert trace["reasoning"].startswith("step ")
            assert trace["answer"] == trace["reasoning"].split("seed ")[1]
            assert trace["finish_reason"] == "stop" and trace["truncated"] is False
            assert trace["completion_tokens"] > 0 and trace["error"] is None


def test_rerun_sends_zero_requests(server, stage_context):
    rows = default_rows(4)
    first = distil(server, stage_context, rows, samples_per_question=3)
    assert server.samples == 12
    again = distil(server, stage_context, rows, samples_per_question=3)
    assert server.samples == 12
    assert again == first


def test_after_an_interruption_only_missing_requests_are_sent(server, stage_context):
    rows = default_rows(6)
    distil(server, stage_context, rows[:4], samples_per_question=2)  # "killed" after 4 rows
    server.reset()
    out = distil(server, stage_context, rows, samples_per_question=2)
    assert server.samples == 4
    sent = {m["content"][-1]["text"] for s in server.seen for m in s.body["messages"]}
    assert {r["question"] for r in rows[4:]} == {
        text.split("Question: ")[1] for text in sent}
    assert all(r["n_traces"] == 2 for r in out)


def test_failed_requests_become_error_traces_and_are_retried_next_run(server, stage_context):
    server.handler = lambda b, h, n: Reply(status=400, body={"error": {"message": "bad"}})
    out = distil(server, stage_context, default_rows(2))
    assert [r["n_traces"] for r in out] == [0, 0]
    assert all("HTTP 400" in r["traces"][0]["error"] for r in out)
    server.handler = lambda b, h, n: Reply(body=chat_response("<think>a</think><answer>1</answer>"))
    server.reset()
    out = distil(server, stage_context, default_rows(2))
    assert server.count == 2
    assert [r["traces"][0]["answer"] for r in out] == ["1", "1"]


def test_truncated_traces_are_kept_marked_and_not_retried(server, stage_context):
    server.handler = lambda b, h, n: Reply(
        body=chat_response("<think>long long", finish_reason="length"))
    out = distil(server, stage_context, default_rows(1))
    trace = out[0]["traces"][0]
    assert trace["truncated"] is True and trace["finish_reason"] == "length"
    assert trace["reasoning"] == "long long" and trace["answer"] == ""
    assert out[0]["n_traces"] == 1
    assert server.count == 1


def test_system_prompt_is_sent_and_part_of_the_cache_key(server, stage_context):
    rows = default_rows(2)
    distil(server, stage_context, rows, system_prompt="You are careful.")
    assert server.seen[0].body["messages"][0] == {"role": "system", "content": "You are careful."}
    distil(server, stage_context, rows, system_prompt="You are quick.")
    assert server.count == 4
    distil(server, stage_context, rows, system_prompt="You are careful.")
    assert server.count == 4


def test_default_prompt_is_four_phase_with_image_first(server, stage_context):
    distil(server, stage_context, [image_row(stage_context)])
    parts = server.seen[0].body["messages"][0]["content"]
    assert parts[0]["type"] == "image_url"
    text = parts[1]["text"]
    for phase in ("1. Extract", "2. Set up", "3. Execute", "4. Validate", "<answer>X</answer>"):
        assert phase in text
    assert "How many red squares?" in text
    assert "A red square." not in text  # the teacher gets image + question, not the caption


def test_include_caption_shows_the_caption(server, stage_context):
    distil(server, stage_context, [image_row(stage_context)], include_caption=True)
    assert "A red square." in server.seen[0].body["messages"][0]["content"][1]["text"]


def test_include_images_false_sends_text_only_and_keeps_the_row_images(server, stage_context):
    row = image_row(stage_context)
    out = distil(server, stage_context, [row], include_images=False, include_caption=True)
    content = server.seen[0].body["messages"][0]["content"]
    assert [p["type"] for p in content] == ["text"] and "A red square." in content[0]["text"]
    assert out[0]["images"] == row["images"] and out[0]["traces"]


def test_splits_limit_which_rows_are_distilled(server, stage_context):
    train, other, unsplit = default_rows(3)
    train["split"], other["split"] = "train", "eval"
    out = distil(server, stage_context, [train, other, unsplit], splits=["train"])
    assert len(server.seen) == 1
    assert [bool(r.get("traces")) for r in out] == [True, False, False]
    server.seen.clear()
    out = distil(server, stage_context, [other, unsplit], splits=["train"])
    assert not server.seen and not any(r.get("traces") for r in out)


def test_user_template(server, stage_context, tmp_path: Path):
    template = tmp_path / "t.jinja"
    template.write_text("Q={{ question }} D={{ domain }} N={{ n_images }}")
    distil(server, stage_context, default_rows(1), template=str(template))
    text = server.seen[0].body["messages"][0]["content"][-1]["text"]
    assert text == "Q=What is 0 + 0? D=perception N=0"


def test_bad_templates_fail_validation(server, tmp_path: Path):
    with pytest.raises(ValidationError, match="not found"):
        OpenAIDistiller(options(server, template=str(tmp_path / "missing.jinja")))
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% if %}")
    with pytest.raises(ValidationError, match="syntax"):
        OpenAIDistiller(options(server, template=str(bad)))


def test_caption_pass_fills_captions_first(server, stage_context):
    def handler(body, headers, n):
        text = body["messages"][0]["content"][-1]["text"]
        if "Component breakdown" in text:
            return Reply(body=chat_response("Category: photo. A red tile."))
        return Reply(body=chat_response("<think>ok</think><answer>1</answer>"))

    server.handler = handler
    row = image_row(stage_context)
    row["caption"] = ""
    text_row = default_rows(1)[0]
    out = distil(server, stage_context, [row, text_row], caption_enabled=True,
                 include_caption=True, caption_engine={
                     "model": "captioner", "base_url": server.base_url})
    assert out[0]["caption"] == "Category: photo. A red tile."
    assert out[1]["caption"] == ""  # no image: no caption request
    models = [s.body["model"] for s in server.seen]
    assert models == ["captioner", "teacher", "teacher"]
    assert server.seen[0].body["temperature"] == 0.0
    assert "A red tile." in server.seen[1].body["messages"][0]["content"][-1]["text"]


def test_progress_counts_requests(server, stage_context):
    progress = StageProgress()
    stage_context.progress = progress
    rows = default_rows(5)
    progress.start(len(rows), unit="rows")  # as the pipeline does
    stage = OpenAIDistiller(options(server, samples_per_question=2))
    stage.setup(stage_context)
    assert progress.total == 10  # 5 rows + 5 requests
    stage.process(rows, stage_context)
    progress.advance(len(rows))  # the pipeline, once the shard is committed
    stage.teardown()
    assert progress.done == progress.total
    assert progress.tokens > 0


def test_runtime_options_leave_the_signature_alone(server):
    a = OpenAIDistiller(options(server))
    c_opts = options(server)
    c_opts["engine"] = {**c_opts["engine"], "max_concurrency": 3}
    c = OpenAIDistiller(c_opts)
    d = OpenAIDistiller(options(server, temperature=0.3))
    assert a.signature() == c.signature() != d.signature()


def test_bad_engine_settings_are_found_before_anything_runs(plugin_host):
    from dualcurate.recipe import check_refs

    stage = OpenAIDistiller({"engine": {"base_url": "http://127.0.0.1:9"}})
    problems = check_refs(stage.config, plugin_host)
    assert any(p.startswith("engine.model: required option missing (engine 'openai'")
               for p in problems), problems
    ok = OpenAIDistiller({"engine": {"use": "openai", "model": "m"}})
    assert check_refs(ok.config, plugin_host) == [] and ok.preflight(plugin_host) == []


def test_teacher_distiller_is_the_base():
    assert issubclass(OpenAIDistiller, TeacherDistiller)
    assert OpenAIDistiller.default_engine == "openai"


def test_pipeline_rerun_of_a_finished_stage_sends_nothing(server, run_cli, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"""
[run]
shard_size = 4
[source]
use = "hello"
n = 6
[distill]
use = "openai-distill"
samples_per_question = 2
max_tokens = 32
engine = {{ model = "teacher", base_url = "{server.base_url}" }}
""")
    first = run_cli("run", str(recipe), "--out", "out", "--set", "source.n=6")
    assert first.exit_code == 0, first.stderr
    assert server.samples == 12
    again = run_cli("run", str(recipe), "--out", "out")
    assert again.exit_code == 0, again.stderr
    fresh = run_cli("run", str(recipe), "--out", "out2", "--set",
                    f"run.cache=\"{first.cwd / 'out' / 'cache.sqlite'}\"")
    assert fresh.exit_code == 0, fresh.stderr
    assert server.samples == 12
    manifest = json.loads((first.cwd / "out2" / "manifest.json").read_text())
    assert manifest["status"] == "done"
