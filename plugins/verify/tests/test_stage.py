"""``rule-verify`` as a map stage: structure rules, row columns, contracts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dualcurate import Sample, Trace, rows_to_table
from dualcurate.testing.contracts import VerifierContract
from dualcurate_verify import plugin
from dualcurate_verify.stage import RuleVerifier, repeated_ngram

THINK = "<think>" + " ".join(f"step{i}" for i in range(30)) + "</think>"


def _row(answer: str, traces: list[dict], **extra) -> dict:
    row = Sample(source="t", question="What is 6*7?", answer=answer, **extra).to_row()
    row["traces"] = traces
    return row


def contract_rows() -> list[dict]:
    return [_row("42", [{"text": THINK + "<answer>42</answer>"}, {"text": THINK + "41"}]),
            _row("B", [{"text": THINK + "(B) 45°", "finish_reason": "length"}],
                 answer_type="multiple_choice"),
            Sample(source="t", question="q", answer="1").to_row()]  # no traces at all


class TestRuleVerifierContract(VerifierContract):
    stage_cls = RuleVerifier
    plugin = plugin.rule_verify
    input_rows = contract_rows()


def test_verdicts_and_row_columns(stage_context) -> None:
    out = RuleVerifier().process(contract_rows(), stage_context)
    first, second, third = out
    assert [t["verdict"] for t in first["traces"]] == ["correct", "incorrect"]
    assert [t["method"] for t in first["traces"]] == ["rule", "rule"]
    assert first["n_verified"] == 1 and first["consistent"] is True
    assert second["traces"][0]["verdict"] == "invalid"
    assert second["traces"][0]["label"] == "truncated"
    assert second["n_verified"] == 0 and second["consistent"] is False
    assert third["traces"] == [] and third["n_verified"] == 0 and third["consistent"] is False
    table = rows_to_table(out)
    assert table.num_rows == 3


def test_structure_rules(stage_context) -> None:
    stage = RuleVerifier(min_words=20)
    cases = {
        "no-think": "<answer>42</answer>",
        "two-blocks": "<think>a</think><think>b</think><answer>42</answer>",
        "unclosed": "<think>" + "word " * 40 + "<answer>42</answer>",
        "inside": THINK.replace("</think>", "<answer>42</answer></think>"),
        "short": "<think>ok</think><answer>42</answer>",
        "fine": THINK + "<answer>42</answer>",
        "template-opened": " ".join(["w"] * 30) + "</think><answer>42</answer>",
    }
    out = stage.process([_row("42", [{"text": t} for t in cases.values()])], stage_context)[0]
    got = dict(zip(cases, [(t["verdict"], t["label"]) for t in out["traces"]], strict=True))
    assert got["no-think"] == ("invalid", "think")
    assert got["two-blocks"] == ("invalid", "think")
    assert got["unclosed"] == ("invalid", "think")
    assert got["inside"] == ("invalid", "no-answer")
    assert got["short"] == ("invalid", "too-short")
    assert got["fine"] == ("correct", "number")
    assert got["template-opened"] == ("correct", "number")
    assert RuleVerifier(require_think=False).process(
        [_row("42", [{"text": "<answer>42</answer>"}])], stage_context)[0]["n_verified"] == 1


def test_think_tags_quoted_in_the_reasoning(stage_context) -> None:
    # thinking models restate the prompt ("reason in <think></think>, after </think> write
    # <answer>X</answer>"): that is reasoning, not a second block; real second blocks and
    # responses with nothing after the block still fail
    words = " ".join(f"step{i}" for i in range(30))
    cases = {
        "quoted-pair": f"<think>I reason in <think> ... </think> tags. {words}</think>\n"
                       "<answer>42</answer>",
        "quoted-close": f"<think>After </think>, write a short solution and end with "
                        f"<answer>X</answer>. {words}</think>\n<answer>42</answer>",
        "template-quoted-open": f"Okay, inside the <think> block: {words}\n</think>\n\n"
                                "<answer>42</answer>",
        "template-quoted-both": f"Put it in <think></think>; after </think> the answer. {words}"
                                "</think><answer>42</answer>",
        "two-blocks": f"<think>{words}</think><answer>41</answer><think>{words}</think>"
                      "<answer>42</answer>",
        "template-two-blocks": f"{words}</think>41\n<think>{words}</think><answer>42</answer>",
        "quoting-two-blocks": f"<think>use <think></think>, {words}</think>41<think>after "
                              "</think> comes</think><answer>42</answer>",
        "nothing-after": f"<think>I use <think></think>. {words} <answer>42</answer></think>",
        "reopened-cut-off": f"<think>{words}</think><answer>42</answer><think>more",
    }
    out = RuleVerifier(min_words=20).process([_row("42", [{"text": t} for t in cases.values()])],
                                             stage_context)[0]
    got = dict(zip(cases, out["traces"], strict=True))
    for name in ("quoted-pair", "quoted-close", "template-quoted-open", "template-quoted-both"):
        assert (got[name]["verdict"], got[name]["label"]) == ("correct", "number"), name
    for name in ("two-blocks", "template-two-blocks", "quoting-two-blocks", "reopened-cut-off"):
        assert (got[name]["verdict"], got[name]["label"]) == ("invalid", "think"), name
        assert got[name]["reason"].startswith("2 think blocks"), name
    assert (got["nothing-after"]["verdict"], got["nothing-after"]["label"]) == \
        ("invalid", "no-answer")


def test_engine_separated_reasoning_counts_as_the_think_block(stage_context) -> None:
    trace = Trace(text="<answer>42</answer>", reasoning="six times seven", finish_reason="stop")
    out = RuleVerifier().process([_row("42", [trace])], stage_context)[0]
    assert out["traces"][0]["verdict"] == "correct"
    assert out["traces"][0]["answer"] == "42"  # filled in: the trace had no parsed answer


def test_repetition_filter(stage_context) -> None:
    loop = " ".join(f"t{i}" for i in range(50))
    text = f"<think>{loop} {loop} {loop}</think><answer>42</answer>"
    out = RuleVerifier().process([_row("42", [{"text": text}])], stage_context)[0]
    assert (out["traces"][0]["verdict"], out["traces"][0]["label"]) == ("invalid", "repetition")
    twice = f"<think>{loop} {loop}</think><answer>42</answer>"
    out = RuleVerifier().process([_row("42", [{"text": twice}])], stage_context)[0]
    assert out["traces"][0]["verdict"] == "correct"
    assert repeated_ngram(["a", "b"] * 3, 2, 3) == ("a", "b")
    assert repeated_ngram(["a", "b"] * 3, 3, 3) is None


def test_rows_with_a_response_column_are_verified(stage_context) -> None:
    row = {"id": "x", "answer": "42", "question": "q", "response": "42"}
    out = RuleVerifier(require_think=False).process([row], stage_context)[0]
    assert out["traces"][0]["verdict"] == "correct" and out["consistent"] is True


def test_multiple_choice_with_choices(stage_context) -> None:
    row = _row("B", [{"text": THINK + "<answer>45°</answer>"}, {"text": THINK + "<answer>30°</answer>"}],
               answer_type="multiple_choice", choices=["30°", "45°", "60°"])
    out = RuleVerifier().process([row], stage_context)[0]
    assert [t["verdict"] for t in out["traces"]] == ["correct", "incorrect"]


def test_parallel_and_serial_agree(stage_context) -> None:
    rows = [_row(str(i), [{"text": THINK + f"\\boxed{{{i if i % 3 else i + 1}}}"}]) for i in range(12)]
    serial = RuleVerifier(workers=1).process(rows, stage_context)
    parallel = RuleVerifier(workers=4).process(rows, stage_context)
    assert [r["traces"] for r in serial] == [r["traces"] for r in parallel]
    assert RuleVerifier(workers=1).signature() == RuleVerifier(workers=4).signature()


def test_public_names() -> None:
    import dualcurate_verify
    from dualcurate_verify import CheckResult, CompassJudge, RuleVerifier, check, extract_answer

    assert RuleVerifier.name == "rule-verify" and CompassJudge.name == "compass-judge"
    assert issubclass(CompassJudge, RuleVerifier)
    assert isinstance(check("1", "1"), CheckResult) and extract_answer("1") == "1"
    assert set(dualcurate_verify.__all__) >= {"check", "extract_answer", "CheckResult",
                                              "RuleVerifier", "CompassJudge"}


def _one(stage, trace_text: str, **row) -> dict:
    from dualcurate import StageContext

    rows = [{"id": "r", "question": "q", "answer": "42", **row, "traces": [{"text": trace_text}]}]
    return stage.process(rows, StageContext.ephemeral(stage_name="verify"))[0]["traces"][0]


def test_repetition_is_measured_in_the_think_block_only() -> None:
    from dualcurate_verify.stage import RuleVerifier

    stage = RuleVerifier({"workers": 1, "repetition_ngram": 3, "repetition_count": 3})
    loop = "the same words " * 4
    assert _one(stage, f"<think>ok</think>{loop} so \\boxed{{42}}")["verdict"] == "correct"
    assert _one(stage, f"<think>{loop}</think>\\boxed{{42}}")["label"] == "repetition"


def test_mmfinereason_selection_options() -> None:
    from dualcurate_verify.stage import RuleVerifier

    text = "<think>six times seven</think><answer>42</answer>"
    captions = RuleVerifier({"workers": 1, "min_caption_words": 3})
    assert _one(captions, text, caption="a red cube")["verdict"] == "correct"
    assert _one(captions, text, caption="cube")["label"] == "short-caption"
    assert _one(RuleVerifier({"workers": 1}), "[ERROR] upstream timeout")["label"] == "error"
    tags = RuleVerifier({"workers": 1, "require_answer_tag": True,
                         "answer_tag_exempt_sources": ["free-text"]})
    boxed = "<think>six times seven</think>\\boxed{42}"
    assert _one(tags, boxed, source="math")["label"] == "answer-tag"
    assert _one(tags, boxed, source="free-text")["verdict"] == "correct"
    assert _one(tags, text, source="math")["verdict"] == "correct"


def _first_repeated_by_tuples(tokens: list[str], n: int, times: int) -> tuple[str, ...] | None:
    """The definition, written plainly: the first n-gram whose count reaches ``times`` (none
    in fewer than n * times tokens: overlapping occurrences of a short loop are not counted
    there)."""
    if len(tokens) < n * times:
        return None
    counts: dict[tuple[str, ...], int] = {}
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i:i + n])
        counts[gram] = counts.get(gram, 0) + 1
        if counts[gram] >= times:
            return gram
    return None


@settings(max_examples=300, deadline=None)
@given(tokens=st.lists(st.sampled_from(["a", "b", "ab", "a.b", "bb", "ba"]), max_size=40),
       n=st.integers(1, 5), times=st.integers(2, 4))
def test_repeated_ngram_is_the_first_gram_to_reach_its_count(tokens, n, times) -> None:
    # tokens that join into the same text differently ("a b" / "ab") must not be confused
    assert repeated_ngram(tokens, n, times) == _first_repeated_by_tuples(tokens, n, times)
