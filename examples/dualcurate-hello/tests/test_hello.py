"""The hello plugin tested with dualcurate's own testing kit, as a third party would."""

from dualcurate.testing.contracts import FilterContract, SourceContract
from dualcurate_hello import plugin
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
