"""The difficulty filter with a scripted engine: contract, adaptive == full-k for the exact
rules (hypothesis over pass patterns), prefix rollouts and cache reuse, errors, verifier
cascade, config validation and the report."""

from __future__ import annotations

import json
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dualcurate import Completion, StageContext, hookimpl
from dualcurate.errors import DualcurateError
from dualcurate.recipe import check_refs
from dualcurate.testing.contracts import FilterContract, default_rows
from dualcurate_difficulty import plugin
from dualcurate_difficulty.filter import DifficultyFilter
from dualcurate_difficulty.report import EARLY_ABOVE_0, EARLY_BELOW_1, known_bin, pass_rate_bin
from dualcurate_difficulty.scripted import (
    ScriptedConfig,
    ScriptedEngine,
    answer_judge_plugin,
    make_rows,
    run_filter,
    scripted_check,
    scripted_host,
    scripted_options,
    scripted_plugin,
)

CONTRACT_ROWS = default_rows()


class TestDifficultyContract(FilterContract):
    stage_cls = DifficultyFilter
    plugin = plugin.difficulty
    config = {"engine": {"use": "scripted",
                         **scripted_options(CONTRACT_ROWS, probabilities=[0.5] * 4)}, "samples_per_question": 3}

    @pytest.fixture(autouse=True)
    def _scripted_engine(self, register_plugin) -> None:
        register_plugin(scripted_plugin, name="scripted")

    def make_stage(self) -> DifficultyFilter:
        stage = DifficultyFilter(dict(self.config))
        stage.check_fn = scripted_check
        return stage


def fresh_context(root: str) -> StageContext:
    return StageContext.ephemeral(root=root, host=scripted_host())


@st.composite
def pass_patterns(draw: st.DrawFn) -> tuple[int, list[list[bool]]]:
    k = draw(st.integers(1, 8))
    patterns = draw(st.lists(st.lists(st.booleans(), min_size=k, max_size=k), min_size=1,
                             max_size=6))
    return k, patterns


@given(pass_patterns(), st.sampled_from(["pass_rate == 0", "pass_rate < 1", "hard",
                                         "nontrivial"]), st.integers(1, 3))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_adaptive_decisions_equal_full_k(case: tuple[int, list[list[bool]]], keep: str,
                                         round_size: int) -> None:
    k, patterns = case
    rows = make_rows(len(patterns))
    options = scripted_options(rows, patterns)
    with tempfile.TemporaryDirectory() as root:
        ctx = fresh_context(root)
        try:
            adaptive = run_filter(rows, ctx, options=options, samples_per_question=k, keep=keep,
                                  round_size=round_size, report=False)
            sent_adaptive = ctx.stats.sent
            full = run_filter(rows, ctx, options=options, samples_per_question=k, keep=keep,
                              adaptive=False, report=False)
        finally:
            ctx.close()
            ctx.cache.close()
    assert [r["keep"] for r in adaptive] == [r["keep"] for r in full]
    exact_keep = [sum(p) == 0 if keep in ("hard", "pass_rate == 0") else sum(p) < k
                  for p in patterns]
    assert [r["keep"] for r in full] == exact_keep
    used = sum(r["pass_drawn"] for r in adaptive)
    assert sent_adaptive == used <= k * len(rows)
    # adaptive rollouts are a prefix of the full-k ones, and the full run re-paid none of them
    assert ctx.stats.cached == used
    assert ctx.stats.sent == k * len(rows)
    for a, f in zip(adaptive, full, strict=True):
        assert [t["text"] for t in a["rollouts"]] == \
            [t["text"] for t in f["rollouts"][:a["pass_drawn"]]]
        assert [t["sample_index"] for t in a["rollouts"]] == list(range(a["pass_drawn"]))
        assert f["pass_drawn"] == k
        assert f["pass_rate"] == pytest.approx(sum(t["verdict"] == "correct"
                                                   for t in f["rollouts"]) / k)
        # what adaptive sampling stores is what it observed, never a rate of fewer draws
        drawn = a["pass_drawn"]
        assert a["pass_drawn"] == drawn
        assert a["pass_correct"] == sum(t["verdict"] == "correct" for t in f["rollouts"][:drawn])
        assert a["pass_rate"] == (f["pass_rate"] if drawn == k else None)
        # the histogram bin of what is known never contradicts the full-k figure
        known = known_bin(a, k)
        if known == EARLY_ABOVE_0:
            assert f["pass_rate"] > 0
        elif known == EARLY_BELOW_1:
            assert f["pass_rate"] < 1
        elif drawn:
            assert known == pass_rate_bin(f["pass_rate"])


def test_stops_at_first_settling_rollout(stage_context: StageContext,
                                         register_plugin) -> None:
    register_plugin(scripted_plugin, name="scripted")
    rows = make_rows(3)
    patterns = [[False, False, True, False], [True] * 4, [False] * 4]
    out = run_filter(rows, stage_context, options=scripted_options(rows, patterns), samples_per_question=4)
    assert [r["pass_drawn"] for r in out] == [3, 1, 4]
    assert [r["keep"] for r in out] == [False, False, True]
    # observed counts are stored as observed; a pass rate only for the k-rollout figure
    assert [(r["pass_correct"], r["pass_drawn"]) for r in out] == [(1, 3), (1, 1), (0, 4)]
    assert [r["pass_rate"] for r in out] == [None, None, 0.0]
    engine = stage_context.engine("scripted", scripted_options(rows, patterns))
    assert isinstance(engine, ScriptedEngine)
    # one request per pending sample per round, sample indices in order
    by_sample: dict[str, list[int]] = {}
    for sample_id, indices in engine.calls:
        by_sample.setdefault(sample_id, []).extend(indices)
    assert by_sample == {rows[0]["id"]: [0, 1, 2], rows[1]["id"]: [0],
                         rows[2]["id"]: [0, 1, 2, 3]}


def test_progress_total_counts_rows_and_requests(stage_context: StageContext,
                                                 register_plugin) -> None:
    from dualcurate.progress import StageProgress

    register_plugin(scripted_plugin, name="scripted")
    progress = StageProgress()
    stage_context.progress = progress
    rows = make_rows(3)
    patterns = [[False, False, True, False], [True] * 4, [False] * 4]
    progress.start(len(rows), unit="rows")  # as the pipeline does
    run_filter(rows, stage_context, options=scripted_options(rows, patterns), samples_per_question=4)
    progress.advance(len(rows))  # the pipeline, once the shard is committed
    assert progress.total == 3 + 3 + 2 + 2 + 1  # rows, then requests per round (3, 2, 2, 1)
    assert progress.done == progress.total


def test_band_and_expression_rules(stage_context: StageContext, register_plugin) -> None:
    register_plugin(scripted_plugin, name="scripted")
    rows = make_rows(4)
    patterns = [[True, False, False, False], [True, True, False, False],
                [True, True, True, True], [False, False, False, False]]
    options = scripted_options(rows, patterns)
    band = run_filter(rows, stage_context, options=options, samples_per_question=4, keep="band",
                      band=(0.25, 0.5))
    assert [r["keep"] for r in band] == [True, True, False, False]
    expr = run_filter(rows, stage_context, options=options, samples_per_question=4,
                      keep="domain == 'math' or pass_rate == 1")
    assert [r["keep"] for r in expr] == [True, False, True, True]
    assert expr[0]["pass_drawn"] == 0  # decided by the domain alone
    assert expr[0]["pass_rate"] is None


class _FailingEngine(ScriptedEngine):
    name = "failing"

    def generate(self, requests, sampling, on_result=None):
        out = [[Completion(error="server said no") for _ in r.indices()] for r in requests]
        for i, comps in enumerate(out):
            if on_result is not None:
                on_result(i, comps)
        return out


class _FailingPlugin:
    @hookimpl
    def dualcurate_register_engines(self, register) -> None:
        register(_FailingEngine)


def test_failed_rollouts_fail_loudly_by_default(stage_context: StageContext,
                                                register_plugin) -> None:
    register_plugin(_FailingPlugin(), name="failing")
    rows = make_rows(2)
    with pytest.raises(DualcurateError, match=rf"{rows[0]['id']}.*server said no.*on_error"):
        run_filter(rows, stage_context, engine="failing",
                   options=scripted_options(rows), samples_per_question=2)
    out = run_filter(rows, stage_context, engine="failing", options=scripted_options(rows),
                     samples_per_question=2, on_error="incorrect", adaptive=False)
    assert [r["pass_rate"] for r in out] == [0.0, 0.0]
    assert all(t["verdict"] == "invalid" and t["error"] for r in out for t in r["rollouts"])
    assert stage_context.cache.failures()  # recorded, not cached


def test_verifier_stage_cascade(stage_context: StageContext, register_plugin) -> None:
    register_plugin(scripted_plugin, name="scripted")
    register_plugin(answer_judge_plugin, name="judge")
    rows = make_rows(2)
    options = scripted_options(rows, [[True, False], [False, True]])
    only_judge = run_filter(rows, stage_context, options=options, samples_per_question=2, adaptive=False,
                            use_check=False, verifier_stage=["answer-judge"])
    assert [r["pass_rate"] for r in only_judge] == [0.5, 0.5]
    assert {t["method"] for r in only_judge for t in r["rollouts"]} == {"answer-judge"}

    # check first; what it leaves undecided goes to the judge
    stage = DifficultyFilter({"engine": {"use": "scripted", **options}, "samples_per_question": 2,
                              "adaptive": False, "verifier_stage": ["answer-judge"]})
    stage.check_fn = lambda gold, response, question=None: \
        "correct" if "rollout 0" in response else "undecided"
    stage.setup(stage_context)
    cascade = stage.process(rows, stage_context)
    stage.teardown()
    methods = [[t["method"] for t in r["rollouts"]] for r in cascade]
    assert methods == [["check", "answer-judge"], ["check", "answer-judge"]]
    assert [[t["verdict"] for t in r["rollouts"]] for r in cascade] == \
        [["correct", "incorrect"], ["correct", "correct"]]


def test_rollouts_use_the_recipes_verifier(stage_context: StageContext,
                                           register_plugin) -> None:
    """No check_fn: the rollouts are verified by the verifier stage the run's recipe
    configured (its manifest names the plugin), made by registered name."""
    register_plugin(scripted_plugin, name="scripted")
    register_plugin(answer_judge_plugin, name="judge")
    stage_context.store.manifest["recipe"] = {
        "run": {}, "verify": {"kind": "verifier", "use": "answer-judge"}}
    rows = make_rows(2)
    options = scripted_options(rows, [[True, False], [False, False]])
    stage = DifficultyFilter({"engine": {"use": "scripted", **options}, "samples_per_question": 2,
                              "adaptive": False})
    stage.setup(stage_context)
    out = stage.process(rows, stage_context)
    stage.teardown()
    assert {t["method"] for r in out for t in r["rollouts"]} == {"answer-judge"}
    assert [r["pass_rate"] for r in out] == [0.5, 0.0]


@pytest.mark.parametrize(("config", "message"), [
    ({"keep": "band"}, "band = \\[lo, hi\\]"),
    ({"keep": "band", "band": (0.8, 0.2)}, "lo <= hi"),
    ({"band": (0.2, 0.8)}, "set keep = 'band'"),
    ({"keep": "__import__('os')"}, "keep expression"),
    ({"keep": "pass_rate.real > 0"}, "Attribute"),
    ({"template": "{{ answer }}"}, "unknown variable answer; the variables are question"),
    ({"template": "{{ question "}, "Jinja syntax error at line 1"),
    ({"template": "no/such/prompt.jinja"}, "file 'no/such/prompt.jinja' not found"),
    ({"use_check": False}, "verifier_stage"),
    ({"samples_per_question": 0}, "samples_per_question"),
    ({"surely_not": 1}, "surely_not"),
])
def test_config_errors(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DifficultyFilter({"engine": {"use": "hf", "model": "m"}, **config})


def test_references_are_resolved_and_validated() -> None:
    host = scripted_host()
    stage = DifficultyFilter({"engine": "nope", "verifier_stage": ["nojudge"]})
    problems = "\n".join(check_refs(stage.config, host))
    assert "engine.use: engine 'nope': nothing registered under that name" in problems
    assert "verifier_stage[0].use: verifier 'nojudge'" in problems
    misspelt = DifficultyFilter({"engine": {"use": "scripted", "answerz": {}}})
    assert [p.split(" (")[0] for p in check_refs(misspelt.config, host)] == \
        ["engine.answerz: unknown option"]
    ok = DifficultyFilter({"engine": {"use": "scripted", "model": "m"},
                           "verifier_stage": [{"use": "answer-judge"}]})
    ok.check_fn = scripted_check
    assert check_refs(ok.config, host) == [] and ok.preflight(host) == []


def test_a_verifiers_options_are_validated_against_its_config() -> None:
    stage = DifficultyFilter({"engine": {"use": "scripted", "model": "m"},
                              "verifier_stage": [{"use": "answer-judge", "strict": True}]})
    # answer-judge takes no options
    assert [p.split(" (")[0] for p in check_refs(stage.config, scripted_host())] == \
        ["verifier_stage[0].strict: unknown option"]
    assert (stage.config.engine.use, stage.config.engine.options) == ("scripted", {"model": "m"})
    assert DifficultyFilter().config.engine.use == "hf"


class _BatchedConfig(ScriptedConfig):
    batch_size: int = 1
    runtime_fields = frozenset({"batch_size"})


class _BatchedEngine(ScriptedEngine):
    name = "batched"
    Config = _BatchedConfig


class _BatchedPlugin:
    @hookimpl
    def dualcurate_register_engines(self, register) -> None:
        register(_BatchedEngine)


def test_runtime_options_of_the_engine_stay_out_of_the_signature() -> None:
    host = scripted_host()
    host.register(_BatchedPlugin(), name="batched")

    def signature(**engine: Any) -> str:
        stage = DifficultyFilter({"engine": {"use": "batched", "model": "m", **engine}})
        assert check_refs(stage.config, host) == []  # resolves the reference
        return stage.signature()

    assert signature() == signature(batch_size=7) != signature(model="other")


def test_a_misspelt_engine_option_fails_recipe_validation() -> None:
    from dualcurate import Pipeline, load_recipe
    from dualcurate.errors import RecipeError

    host = scripted_host()
    host.load("hello")
    recipe = {"source": {"use": "hello"},
              "filter": {"use": "difficulty",
                         "engine": {"use": "scripted", "model": "m", "answerz": {}}}}
    with pytest.raises(RecipeError, match=r"\[filter\] engine.answerz: unknown option"):
        Pipeline(load_recipe(recipe), host=host).validate()


def test_prompt_carries_images_and_caption(stage_context: StageContext,
                                           register_plugin) -> None:
    register_plugin(scripted_plugin, name="scripted")
    digest = stage_context.images.put(b"not really a png")
    rows = [{**make_rows(1)[0], "images": [digest], "caption": "two red dots"}]
    run_filter(rows, stage_context, options=scripted_options(rows, [[True]]), samples_per_question=1,
               include_caption=True, system_prompt="be brief")
    engine = stage_context.engine("scripted", scripted_options(rows, [[True]]))
    messages = engine.messages[rows[0]["id"]]
    assert messages[0] == {"role": "system", "content": "be brief"}
    parts = messages[1]["content"]
    assert parts[0] == {"type": "image", "image": digest}
    assert parts[1]["text"].startswith("Image description: two red dots\n\nWhat is 0 + 0?")


def test_report_written_with_histograms_and_budget(stage_context: StageContext,
                                                   register_plugin) -> None:
    register_plugin(scripted_plugin, name="scripted")
    rows = make_rows(6, sources=2)
    patterns = [[False] * 4, [True] * 4, [True, False, False, False], [False] * 4,
                [False, True, True, True], [True, True, False, False]]
    run_filter(rows, stage_context, options=scripted_options(rows, patterns), samples_per_question=4)
    report = json.loads((stage_context.workdir / "difficulty_report.json").read_text())
    assert report["samples"] == 6 and report["kept"] == 2
    assert report["rollouts_full_k"] == 24
    assert report["pass_drawn"] == 4 + 1 + 1 + 4 + 2 + 1
    assert report["rollout_ratio"] == round(13 / 24, 4)
    assert set(report["by_source"]) == {"src0", "src1"}
    assert set(report["by_domain"]) == {"math", "chart", "spatial"}
    assert sum(g["histogram"]["0"] for g in report["by_domain"].values()) == 2
    svg = (stage_context.workdir / "pass_rate_histogram.svg").read_text()
    assert svg.startswith("<?xml")  # one histogram per source (2) and per domain (3)
    assert svg.count('class="hist"') == 5 and "source: src0" in svg and "domain: math" in svg
    markdown = (stage_context.workdir / "difficulty_report.md").read_text()
    assert "| src0 |" in markdown and "## By domain" in markdown


def test_seed_unset_is_the_runs_seed(stage_context: StageContext, register_plugin,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    register_plugin(scripted_plugin, name="scripted")
    rows = make_rows(2)
    seen: list[int | None] = []
    generate = StageContext.generate

    def recording(self, engine, requests, sampling):
        seen.append(sampling.seed)
        return generate(self, engine, requests, sampling)

    monkeypatch.setattr(StageContext, "generate", recording)
    stage_context.seed = 7
    run_filter(rows, stage_context, options=scripted_options(rows), samples_per_question=2)
    run_filter(rows, stage_context, options=scripted_options(rows), samples_per_question=2,
               seed=3)
    assert seen and set(seen[:len(seen) // 2]) == {7} and set(seen[len(seen) // 2:]) == {3}


def test_template_has_the_teachers_variables(stage_context: StageContext,
                                             register_plugin) -> None:
    register_plugin(scripted_plugin, name="scripted")
    rows = [{**make_rows(1)[0], "choices": ["1", "0"], "caption": "dots"}]
    template = ("{{ domain }} ({{ answer_type }}, {{ n_images }} images, {{ row.source }}): "
                "{{ question }}{% for c in choices %} [{{ c }}]{% endfor %} {{ caption }}")
    run_filter(rows, stage_context, options=scripted_options(rows, [[True]]),
               samples_per_question=1, template=template, include_caption=True)
    engine = stage_context.engine("scripted", scripted_options(rows, [[True]]))
    (message,) = engine.messages[rows[0]["id"]]
    assert message["content"][-1]["text"] == \
        "math (number, 0 images, src0): What is 0 + 0? [1] [0] dots"


@given(st.text(max_size=40), st.sampled_from(["stop", "length", None]))
def test_rollouts_are_traces_as_the_teachers(text: str, finish: str | None) -> None:
    from dualcurate.formats import make_trace, split_trace
    from dualcurate_difficulty.rollouts import rollout_trace

    completion = Completion(text=text, finish_reason=finish, completion_tokens=3)
    trace = rollout_trace(completion, 2, "m", "e")
    assert trace == make_trace(completion, 2, "m", "e")
    assert (trace["reasoning"], trace["answer"]) == split_trace(text)
    failed = rollout_trace(Completion(error="boom"), 1, "m", "e")
    assert {k: v for k, v in failed.items() if k not in ("verdict", "method", "reason")} == \
        {k: v for k, v in make_trace(Completion(error="boom"), 1, "m", "e").items()
         if k not in ("verdict", "method", "reason")}
    assert (failed["verdict"], failed["error"]) == ("invalid", "boom")
