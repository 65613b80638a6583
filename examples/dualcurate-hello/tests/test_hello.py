"""The hello plugin tested with dualcurate's own testing kit, as a third party would."""

from dualcurate import ChatRequest, SamplingParams
from dualcurate.testing.contracts import EngineContract, FilterContract, SourceContract
from dualcurate_hello import plugin
from dualcurate_hello.engine import SumEngine
from dualcurate_hello.stages import AnswerLengthFilter, HelloSource


class TestHelloSource(SourceContract):
    stage_cls = HelloSource
    plugin = plugin
    config = {"n": 10}


class TestAnswerLengthFilter(FilterContract):
    stage_cls = AnswerLengthFilter
    plugin = plugin

    def test_keeps_short_answers_only(self, rows, stage_context):
        rows = [{**rows[0], "answer": "7"}, {**rows[1], "answer": "123"}]
        out = self._process(rows, stage_context)
        assert [r["keep"] for r in out] == [True, False]


def test_recipe_runs_through_the_cli(run_cli):
    from pathlib import Path

    recipe = Path(__file__).parents[1] / "recipe.toml"
    result = run_cli("run", str(recipe), "--out", "out", "--set", "source.n=12")
    assert result.exit_code == 0, result.stderr
    import json

    manifest = json.loads((result.cwd / "out" / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert [s["rows_in"] for s in manifest["stages"]] == [12, 12]


class TestSumEngine(EngineContract):
    engine_cls = SumEngine
    plugin = plugin
    config = {}  # EngineConfig requires `model`; SumConfig gives it a default

    def test_every_nth_sample_is_wrong_when_asked(self):
        engine = SumEngine({"wrong_every": 2})
        request = ChatRequest(messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is 3 + 4?"}]}], n=2)
        first, second = engine.generate([request], SamplingParams(max_tokens=64))[0]
        assert "<answer>7</answer>" in first.text and "<answer>8</answer>" in second.text


def test_teacher_recipe_runs_with_the_engine_and_reports_the_filter(run_cli):
    from pathlib import Path

    recipe = Path(__file__).parents[1] / "recipe-teacher.toml"
    result = run_cli("run", str(recipe), "--out", "out", "--set", "source.n=6",
                     "--set", "filter.max_answer_digits=1")
    assert result.exit_code == 0, result.stderr
    assert "hello-length (filter)" in result.stderr  # the run summary is on stderr

    from dualcurate.report_sections import RunView

    run = RunView(result.cwd / "out")
    rows = run.rows("distill", ["answer", "traces"])
    assert all(r["traces"][0]["answer"] == r["answer"] for r in rows)  # the engine adds
    assert run.stage_options("filter")["max_answer_digits"] == 1  # --set reached the view
    section = plugin.dualcurate_report_sections(run)[0]
    short = sum(len(r["answer"]) <= 1 for r in rows)
    assert section.data == {"stage": "filter", "max_answer_digits": 1, "kept": short,
                            "rows": 6}
    assert "data-plugin=\"hello\"" in (result.cwd / "out" / "report.html").read_text()
