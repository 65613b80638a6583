"""Every plugin writes the trace format and the mode prompts through dualcurate.formats, and the
bytes are the ones written before that module existed: the demo's trained models and every
request cache depend on them. The expected strings below were captured from the former
per-plugin implementations (trl's, dual-tuning's, synthetic's, the exporter's)."""

from __future__ import annotations

import pytest

from dualcurate import export_formats, formats
from dualcurate_dualtuning.data import ModePrompts, training_examples
from dualcurate_synthetic.prompts import completion_text, prompt_messages
from dualcurate_trl import long_completion, short_completion
from dualcurate_trl.grpo import FORMAT_SYSTEM_PROMPT
from dualcurate_trl.toy import trace

# (reasoning, answer) -> (long text, short text), as written before dualcurate.formats
RENDERED = {
    ("", ""): ("<think></think>\n<answer></answer>", "<answer></answer>"),
    ("3 plus 4 is 7.", "7"): ("<think>3 plus 4 is 7.</think>\n<answer>7</answer>",
                              "<answer>7</answer>"),
    ("  spaced \n lines\n", " B "): ("<think>  spaced \n lines\n</think>\n<answer> B </answer>",
                                     "<answer> B </answer>"),
    ("unicode ∑ λ 你好 😀", "½"): (
        "<think>unicode ∑ λ 你好 😀</think>\n<answer>½</answer>", "<answer>½</answer>"),
    ("braces {x} and \\boxed{5}", "\\frac{1}{2}"): (
        "<think>braces {x} and \\boxed{5}</think>\n<answer>\\frac{1}{2}</answer>",
        "<answer>\\frac{1}{2}</answer>"),
    ("a\r\nb\tc", "multi\nline answer"): (
        "<think>a\r\nb\tc</think>\n<answer>multi\nline answer</answer>",
        "<answer>multi\nline answer</answer>"),
}
INSTRUCTION = ("Think step by step inside <think></think>, then give the final answer inside "
               "<answer></answer>.")


@pytest.mark.parametrize(("pair", "expected"), list(RENDERED.items()))
def test_completions_are_byte_identical(pair: tuple[str, str], expected: tuple[str, str]) -> None:
    reasoning, answer = pair
    long_text, short_text = expected
    for render_long in (formats.render_trace, long_completion,
                        lambda r, a: completion_text(r, a, "long"),
                        lambda r, a: trace(r, a)["text"]):
        assert render_long(reasoning, answer) == long_text
    for render_short in (formats.render_answer, short_completion,
                         lambda a: completion_text("ignored", a, "short")):
        assert render_short(answer) == short_text


def test_dual_tuning_training_rows_are_byte_identical() -> None:
    row = {"id": "r", "group": "g", "question": "What is 3 + 4?", "answer": "7",
           "choices": ["6", "7"], "images": ["abc"],
           "traces": [{"verdict": "correct", "reasoning": " 3 plus 4 is 7. ", "answer": "7"}]}
    short, long = training_examples([row], {"g": "dual"}, "group", ModePrompts())
    assert short["prompt"] == [{"role": "user", "content": [
        {"type": "image", "image": "abc"},
        {"type": "text", "text": "Answer directly.\n\nWhat is 3 + 4?\nA. 6\nB. 7"}]}]
    assert short["completion"][0]["content"][0]["text"] == "<answer>7</answer>"
    assert long["prompt"][0]["content"][1]["text"] == \
        "Think step by step.\n\nWhat is 3 + 4?\nA. 6\nB. 7"
    assert long["completion"][0]["content"][0]["text"] == \
        "<think>3 plus 4 is 7.</think>\n<answer>7</answer>"
    with_system = ModePrompts(system_long="S").messages({"question": ""}, "long")
    assert with_system == [{"role": "system", "content": [{"type": "text", "text": "S"}]},
                           {"role": "user", "content": [{"type": "text",
                                                         "text": "Think step by step.\n\n"}]}]


def test_the_base_models_prompts_are_dual_tunings() -> None:
    # the demo's base model is pre-trained on synthetic's prompts and evaluated on the judge's
    for mode, expected in (("short", "Answer directly.\n\nq"),
                           ("long", "Think step by step.\n\nq")):
        assert prompt_messages("q", mode) == [{"role": "user", "content": expected}]
        judge = ModePrompts().messages({"question": "q"}, mode)  # type: ignore[arg-type]
        assert judge == [{"role": "user", "content": [{"type": "text", "text": expected}]}]


def test_format_instruction_is_byte_identical() -> None:
    assert formats.FORMAT_INSTRUCTION == INSTRUCTION
    assert export_formats.RL_SYSTEM_PROMPT == FORMAT_SYSTEM_PROMPT == INSTRUCTION
    assert (export_formats.SHORT_PREFIX, export_formats.LONG_PREFIX) == \
        ("Answer directly.", "Think step by step.")


def _rollout_text(row: dict, **options: object) -> str:
    from dualcurate_difficulty.filter import DifficultyFilter
    from dualcurate_difficulty.rollouts import build_messages

    stage = DifficultyFilter({"engine": {"use": "hf", "model": "m"}, **options})
    cfg = stage.config
    (message,) = build_messages(row, stage._template, cfg.system_prompt, cfg.include_caption,
                                cfg.include_images)
    return message["content"][-1]["text"]


def test_the_difficulty_default_prompt_is_byte_identical() -> None:
    # as the former str.format template "{question}\n\n" + INSTRUCTION rendered it, with
    # "Image description: {caption}\n\n" in front under include_caption
    row = {"question": "What is {3} + 4?\n(a line)", "caption": "A {chart}."}
    assert _rollout_text(row) == row["question"] + "\n\n" + INSTRUCTION
    assert _rollout_text(row, include_caption=True) == \
        "Image description: A {chart}.\n\n" + row["question"] + "\n\n" + INSTRUCTION
    assert _rollout_text({**row, "caption": ""}, include_caption=True) == \
        row["question"] + "\n\n" + INSTRUCTION


def test_the_demos_difficulty_prompts_and_seeds_are_unchanged() -> None:
    """The default recipe's filter renders every demo row as the former str.format template
    "Think step by step.\n\n{question}" did, and samples with the former fixed seed 0 (the
    run's seed, now that ``seed`` is unset): the demo's rollouts and their cache keys stay."""
    import tomllib
    from importlib import resources

    from dualcurate import StageContext
    from dualcurate_synthetic.source import SyntheticSource

    recipe = tomllib.loads(resources.files("dualcurate").joinpath("recipes", "default.toml")
                           .read_text("utf-8"))
    source = {k: v for k, v in recipe["source"].items() if k != "use"}
    source.update(train_per_family=40, eval_per_family=10)
    rows = [r for batch in SyntheticSource(source).read(StageContext.ephemeral("source"))
            for r in batch]
    options = {k: v for k, v in recipe["filter"].items() if k not in ("use", "engine")}
    assert len(rows) == 150
    for row in rows:
        assert _rollout_text(row, **options) == "Think step by step.\n\n" + row["question"]
    from dualcurate_difficulty.filter import DifficultyConfig

    config = DifficultyConfig(**options)
    assert config.seed is None and recipe["run"]["seed"] == 0
    assert config.sampling(recipe["run"]["seed"]).seed == 0
