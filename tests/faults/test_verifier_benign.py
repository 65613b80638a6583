"""The injection guard must tell a response speaking *to the grader* from a worked solution
that uses the same words. Teachers such as Qwen3-VL-Thinking write a full solution after the
think block; none of these may be marked ``invalid`` (which the judge never overrides and which
makes the GRPO reward 0)."""

from __future__ import annotations

import pytest

from dualcurate import StageContext
from dualcurate_verify import check
from dualcurate_verify.rules import addresses_grader

pytestmark = pytest.mark.faults

THINK = "<think>Work through the figure step by step.</think>\n"
BENIGN = [  # (gold, solution written after the think block)
    ("60", "Label the top vertex as A and the base vertices as B and C. Since AB = AC and "
           "the apex angle is 60°, the triangle is equilateral, so \\boxed{60}."),
    ("right", "Classify the triangle as right, since 3² + 4² = 5². The answer is right."),
    ("(2,3)", "Mark the point where the lines cross as A. Solving y = x + 1 and y = 2x - 1 "
              "gives A = (2, 3). \\boxed{(2,3)}"),
    ("2", "As the judge always lies, statement 2 is false, so the culprit is the second "
          "suspect. \\boxed{2}"),
    ("12", "Using the corner points as markers, the grid holds 3 × 4 squares. \\boxed{12}"),
    ("45", "Reading the chart:\nSystem: 45 units\nNetwork: 30 units\nThe largest bar is "
           "System, so the answer is 45."),
    ("A", "Label the larger circle as A and the smaller as B; the area of A is 4π, larger. "
          "\\boxed{A}"),
    ("7", "We mark the unknown as x. Then 2x = 14, so x = \\boxed{7}."),
    ("3", "Treat the remaining balls as a group of 3: the answer is \\boxed{3}."),
    ("5", "Count each shaded cell as one unit; there are \\boxed{5}."),
    ("10", "The checker board has 10 black squares in the first two rows. \\boxed{10}"),
    ("4", "Consider this as a right triangle with legs 3 and 4... the shorter leg plus 1 is "
          "\\boxed{4}."),
    ("9", "The function should return correct values for all n; f(3) = \\boxed{9}."),
    ("B", "Option A is ruled out. Marking option B as the candidate that fits all three "
          "clues, the answer is \\boxed{B}."),
    ("6", "Evaluate: the evaluator function g(x) = 2x gives g(3) = \\boxed{6}."),
    ("8", "Classify it as right-angled, then the hypotenuse is \\boxed{8}."),
    ("1", "Let me say correct to two decimal places: the ratio is \\boxed{1}."),
    ("5", "First \\boxed{2}, then on reflection the final answer is \\boxed{5}."),
    ("5", "<answer>3</answer> Wait, I made an arithmetic error: 2 + 3 = 5. <answer>5</answer>"),
    ("30", "Assistant coach: 12 players, head coach: 18 players; together \\boxed{30}."),
    ("2", "In this puzzle, the judge says the answer is in box 2, and the judge is honest. "
          "\\boxed{2}"),
    ("4", "Denote the grader's score as s; the teacher grades the 4 tests. \\boxed{4}"),
]


@pytest.mark.parametrize(("gold", "solution"), BENIGN, ids=[str(i) for i in range(len(BENIGN))])
def test_a_worked_solution_is_not_an_injection(gold: str, solution: str) -> None:
    assert not addresses_grader(solution)
    result = check(gold, THINK + solution)
    assert result.verdict == "correct", result


def test_benign_corpus_through_rule_verify(tmp_path) -> None:
    from dualcurate_verify.stage import RuleVerifier

    rows = [{"id": str(i), "question": "q", "answer": gold,
             "traces": [{"text": THINK + solution, "finish_reason": "stop"}]}
            for i, (gold, solution) in enumerate(BENIGN)]
    ctx = StageContext.ephemeral("verify", root=tmp_path / "run")
    out = RuleVerifier({"workers": 1}).process(rows, ctx)
    invalid = [(r["traces"][0]["label"], r["traces"][0]["text"]) for r in out
               if r["traces"][0]["verdict"] == "invalid"]
    assert invalid == []
    assert all(r["traces"][0]["verdict"] == "correct" for r in out)


def test_alternatives_stay_an_enumeration() -> None:
    assert check("5", THINK + "\\boxed{2} or maybe \\boxed{5}").verdict == "incorrect"
    assert check("5", THINK + "\\boxed{2}, actually it could also be \\boxed{5}").verdict == \
        "incorrect"
    assert check("5", THINK + "\\boxed{2} \\boxed{5}").verdict == "incorrect"
