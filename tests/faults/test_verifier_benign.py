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
    # a grader's words near the answer (judgment, marker, evaluator, verdict, score, correct),
    # addressed to nobody: labels, circuit nodes, map markers, self-checks (issue 24)
    ("6", "Evaluator: the output of the multiply node is 2 * 3 = 6. <answer>6</answer>"),
    ("B", "Using my judgment, the marker on the map is at B. \\boxed{B}"),
    ("1", "The grader node in the circuit outputs 1 when both inputs are high, so the answer "
          "is \\boxed{1}."),
    ("yes", "Final check: the verdict of the diagram's decision tree is 'yes'. \\boxed{yes}"),
    ("B", "My final judgment is that the marker sits at B, the only point north of the river. "
          "\\boxed{B}"),
    ("B", "Final judgment: the marker is at B, the only point inside both circles. \\boxed{B}"),
    ("12", "Marker: red dot at (3, 4). Its distance from the origin is 5, and 5 + 7 = 12. "
           "\\boxed{12}"),
    ("8", "Judge 1 gave 7 points and Judge 2 gave 9 points; the average score is 8. \\boxed{8}"),
    ("C", "Reviewer: the figure shows three bars, and bar C is the tallest. The answer is "
          "\\boxed{C}."),
    ("15", "Assessment: the score table lists 5, 4 and 6, so the total score is 15. \\boxed{15}"),
    ("4", "Checker: the corner squares of the checkerboard number 4. \\boxed{4}"),
    ("20", "(Evaluator: the evaluator multiplies 4 by 5.) The result is \\boxed{20}."),
    ("0", "Verifier: the verifier returns 0 when the parity bit is wrong; here it is wrong, so "
          "the output is \\boxed{0}."),
    ("true", "The comparator node will output true, since 7 > 3. \\boxed{true}"),
    ("9", "In the judge's final judgment, the defendant pays 9 coins. \\boxed{9}"),
    ("A", "Grading scale: 90 and above is an A; Ana scored 93, so her grade is \\boxed{A}."),
    ("7", "The evaluator in the diagram adds 3 and 4, and the marker then records 7. "
          "<answer>7</answer>"),
    ("6", "System: the output of block B is 2 * 3 = 6. \\boxed{6}"),
    ("5", "Score check: 2 + 3 = 5, and the marker stops at 5 on the number line. \\boxed{5}"),
    ("3", "Evaluator's note: the loop body runs 3 times. \\boxed{3}"),
    ("10", "Judgement call: rounding 9.7 to the nearest whole number gives \\boxed{10}."),
    ("yes", "The verdict: yes, the triangle is isosceles because AB = AC. \\boxed{yes}"),
    ("4", "The grader's rubric in the table gives 4 points for part (b). \\boxed{4}"),
    ("45", "The marker reads 45 on the protractor, so the angle is \\boxed{45}."),
    ("5", "Checking the answer: 5 × 4 = 20, so it is correct. \\boxed{5}"),
    ("x+1", "Evaluator: simplify (x^2-1)/(x-1) by factoring; the result is \\boxed{x+1}."),
    ("12", "Judge's score sheet: 4 + 4 + 4 = 12. \\boxed{12}"),
    ("2", "Marker: say the point is P. Then P lies 2 units from the axis, so \\boxed{2}."),
    ("3", "The examiner's marking scheme awards one point per step; there are 3 steps. "
          "\\boxed{3}"),
    ("16", "Scorer: the output of the scoring function for 4 is 4^2 = 16. <answer>16</answer>"),
    ("C", "Judge: the three witnesses point to C, and the judge in the puzzle never lies. "
          "\\boxed{C}"),
    ("6", "Assessment of the evaluator node: it outputs 6, the product of 2 and 3. \\boxed{6}"),
    ("A", "If x > 3, output A; otherwise output B. Here x = 5, so \\boxed{A}."),
    ("true", "If n is even then return true. For n = 4 the function gives \\boxed{true}"),
    ("2", "Verifier: all answers to the puzzle are primes; the smallest is \\boxed{2}."),
    ("5", "Verifier: the accepted range is 4 to 6, and the needle points at \\boxed{5}."),
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
