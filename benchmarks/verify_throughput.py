"""Throughput of ``rule-verify`` against plain math-verify, side by side in one run.

20,000 mixed (gold, response) pairs (about a fifth each of integers, decimals, fractions,
multiple choice and expressions; about half of them correct, written in several equivalent
forms; unique except for option letters) go through

* plain math-verify: ``verify(parse(f"${gold}$"), parse(response))`` in the main thread (its own
  signal-based timeouts on), and
* ``rule-verify``: ``RuleVerifier(require_think=False, workers=1).process(rows)``, one trace per
  row, single stream (math-verify runs in its worker process under the time budget).

Both start warm (math-verify imported, the worker started). Prints both rates, the speedup and
the verdict agreement where math-verify is decided (it parsed both sides): rule-verify agrees
when (verdict == "correct") equals math-verify's True/False. Then the fidelity figures, through
``rule-verify`` as a recipe runs it:

* ``suite_agreement``: agreement with the expected verdicts of math-verify's own test tables
  (``plugins/verify/tests/data/math_verify_cases.jsonl``, 254 cases; math-verify itself: 248);
* ``benign_false_invalid``: worked solutions of the benign corpus
  (``tests/faults/test_verifier_benign.py``) marked invalid (target 0);
* ``attack_false_positive``: attacks of ``tests/faults/test_judge_attacks.py`` verified
  correct (target 0).

Last line: JSON with ``speedup``, ``agreement`` and those three.

    .venv/bin/python benchmarks/verify_throughput.py [--n 20000] [--seed 0] [--smoke]

``--smoke``: 200 pairs (the fidelity figures in full: they are small), seconds; checks that the
script runs and prints its keys (``make test-bench``), its figures are not measurements.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import random
import sys
import tempfile
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

KEYS = ("speedup", "agreement", "rule_verify_per_s", "math_verify_per_s", "decided", "n",
        "suite_agreement", "suite_cases", "benign_false_invalid", "benign_n",
        "attack_false_positive", "attack_n", "smoke")
LETTERS = "ABCDE"


def _expression(rng: random.Random) -> tuple[str, list[str], list[str]]:
    """gold, equivalent forms, wrong forms."""
    a, b, c = rng.randint(2, 9), rng.randint(1, 20), rng.randint(2, 9)
    v = rng.choice("xyt")
    kind = rng.randrange(4)
    if kind == 0:
        return (f"{a}{v}+{b}", [f"{a}{v}+{b}", f"{b}+{a}{v}", f"{a}{v} + {b}"],
                [f"{a}{v}-{b}", f"{a + 1}{v}+{b}", f"{b}{v}+{a}"])
    if kind == 1:
        return (f"{v}^2+{2 * a}{v}+{a * a + b}", [f"({v}+{a})^2+{b}", f"{v}^2+{2 * a}{v}+{a * a + b}"],
                [f"({v}-{a})^2+{b}", f"{v}^2+{a * a + b}", f"({v}+{a})^2+{b + 1}"])
    if kind == 2:
        return (f"\\frac{{{a}}}{{{c}}}\\sqrt{{{b}}}", [f"\\frac{{{a}\\sqrt{{{b}}}}}{{{c}}}",
                                                      f"\\frac{{{a}}}{{{c}}}\\sqrt{{{b}}}"],
                [f"\\frac{{{a}}}{{{c}}}\\sqrt{{{b + 1}}}", f"\\frac{{{c}}}{{{a}}}\\sqrt{{{b}}}"])
    return (f"{a}\\pi+{b}", [f"{a}\\pi+{b}", f"{b}+{a}\\pi", f"\\pi \\cdot {a}+{b}"],
            [f"{a + 1}\\pi+{b}", f"{a}\\pi^2+{b}", f"{a}\\pi-{b}"])


def make_pairs(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(kind, gold, response) triples, deterministic; unique except for option letters."""
    rng = random.Random(seed)
    templates = ["\\boxed{{{}}}", "The answer is ${}$.", "{}", "Final Answer: The final answer "
                 "is ${}$. I hope it is correct.", "So we get $\\boxed{{{}}}$."]
    seen: set[tuple[str, str]] = set()
    out: list[tuple[str, str, str]] = []
    while len(out) < n:
        kind = rng.choice(["integer", "decimal", "fraction", "choice", "expression"])
        right = rng.random() < 0.5
        if kind == "integer":
            g = rng.randint(-10**6, 10**6)
            gold = str(g)
            answer = (rng.choice([str(g), f"{g:,}"]) if right
                      else str(g + rng.choice([-1, 1, 10, -100, 1000])))
        elif kind == "decimal":
            g = Fraction(rng.randint(-10**5, 10**5), 100)
            gold = f"{float(g):.2f}"
            answer = (rng.choice([f"{float(g):.2f}", f"{float(g):.3f}"]) if right
                      else f"{float(g) + rng.choice([0.1, -0.01, 1.5]):.2f}")
        elif kind == "fraction":
            p, q = rng.randint(1, 99), rng.choice([2, 4, 5, 8, 3, 7])
            gold = f"\\frac{{{p}}}{{{q}}}"
            value = Fraction(p, q)
            forms = [f"\\frac{{{p}}}{{{q}}}", f"{p}/{q}", f"\\dfrac{{{p}}}{{{q}}}"]
            if q in (2, 4, 5, 8):
                forms.append(str(float(value)))
            answer = rng.choice(forms) if right else f"\\frac{{{p + 1}}}{{{q}}}"
        elif kind == "choice":
            gold = rng.choice(LETTERS)
            letter = gold if right else rng.choice([c for c in LETTERS if c != gold])
            answer = rng.choice([letter, f"({letter})", f"{letter}."])
        else:
            gold, same, wrong = _expression(rng)
            answer = rng.choice(same if right else wrong)
        # math-verify does not extract undelimited LaTeX (it reads a bare "9\\pi" as 9), so
        # expressions always come delimited; bare answers are numbers and letters
        template = rng.choice(templates[:2] + templates[3:] if kind == "expression" else templates)
        response = template.format(answer)
        # pairs are unique, so no cache can help either side; option letters have only a few
        # hundred distinct (gold, response) pairs, so those repeat, as they do in practice
        if kind == "choice" or (gold, response) not in seen:
            seen.add((gold, response))
            out.append((kind, gold, response))
    return out


def run_math_verify(pairs: list[tuple[str, str, str]]) -> tuple[list[bool | None], float]:
    from math_verify import parse, verify

    results: list[bool | None] = []
    start = time.perf_counter()
    for _, gold, response in pairs:
        g, r = parse(f"${gold}$"), parse(response)
        decided = any(not isinstance(x, str) for x in g) and any(not isinstance(x, str) for x in r)
        ok = verify(g, r) if g and r else False
        results.append(bool(ok) if decided else None)
    return results, time.perf_counter() - start


def run_rule_verify(pairs: list[tuple[str, str, str]]) -> tuple[list[str], float]:
    from dualcurate import StageContext
    from dualcurate_verify.stage import RuleVerifier

    rows = [{"id": str(i), "question": "", "answer": gold, "traces": [{"text": response}]}
            for i, (_, gold, response) in enumerate(pairs)]
    stage = RuleVerifier(require_think=False, workers=1)
    ctx = StageContext.ephemeral(stage_name="verify")
    stage.setup(ctx)
    start = time.perf_counter()
    out: list[dict] = []
    for i in range(0, len(rows), 256):
        out.extend(stage.process(rows[i:i + 256], ctx))
    elapsed = time.perf_counter() - start
    labels = Counter(f"{row['traces'][0]['verdict']}/{row['traces'][0]['label']}" for row in out)
    print(f"rule-verify verdict/label: {dict(labels.most_common())}")
    return [row["traces"][0]["verdict"] for row in out], elapsed


ROOT = Path(__file__).resolve().parent.parent


def _load(name: str) -> Any:
    """A test module of ``tests/faults`` by name (the tests keep the one copy of each corpus)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"tests.faults.{name}")


def _rule_verify(rows: list[dict], options: dict | None = None) -> list[dict]:
    from dualcurate import StageContext
    from dualcurate_verify.stage import RuleVerifier

    with tempfile.TemporaryDirectory() as tmp:
        ctx = StageContext.ephemeral("verify", root=Path(tmp) / "run")
        try:
            return RuleVerifier({"workers": 1, **(options or {})}).process(rows, ctx)
        finally:
            ctx.close()
            if ctx.cache is not None:
                ctx.cache.close()


def fidelity() -> dict[str, Any]:
    """suite_agreement, benign_false_invalid, attack_false_positive (see the module doc)."""
    cases = [json.loads(line) for line in (ROOT / "plugins/verify/tests/data/"
                                           "math_verify_cases.jsonl").read_text().splitlines()
             if line.strip()]
    rows = [{"id": str(i), "question": "", "answer": c["gold"],
             "traces": [{"text": c["response"]}]} for i, c in enumerate(cases)]
    out = _rule_verify(rows, {"require_think": False})
    agree = sum((r["traces"][0]["verdict"] == "correct") == c["expected"]
                for r, c in zip(out, cases, strict=True))
    benign = _load("test_verifier_benign")
    rows = [{"id": str(i), "question": "q", "answer": gold,
             "traces": [{"text": benign.THINK + solution, "finish_reason": "stop"}]}
            for i, (gold, solution) in enumerate(benign.BENIGN)]
    false_invalid = sum(r["traces"][0]["verdict"] == "invalid" for r in _rule_verify(rows))
    attacks = _load("test_judge_attacks").attacks()
    false_positive = sum(r["traces"][0]["verdict"] == "correct" for r in _rule_verify(attacks))
    print(f"math-verify's tables: {agree}/{len(cases)} agree (math-verify itself: 248); benign "
          f"corpus: {false_invalid}/{len(benign.BENIGN)} invalid; attack suite: "
          f"{false_positive}/{len(attacks)} verified correct")
    return {"suite_agreement": round(agree / len(cases), 5), "suite_cases": len(cases),
            "benign_false_invalid": false_invalid, "benign_n": len(benign.BENIGN),
            "attack_false_positive": false_positive, "attack_n": len(attacks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="200 pairs (seconds): checks the script runs, measures nothing")
    args = parser.parse_args()
    if args.smoke:
        args.n = 200
    logging.disable(logging.WARNING)

    import math_verify  # noqa: F401 - warm: import cost is not throughput

    from dualcurate_verify.symbolic import default_pool

    default_pool().call({"op": "ping"}, budget=120)  # warm: the worker is started once per run

    pairs = make_pairs(args.n, args.seed)
    kinds = Counter(kind for kind, _, _ in pairs)
    mv, mv_seconds = run_math_verify(pairs)
    rv, rv_seconds = run_rule_verify(pairs)

    decided = [i for i, r in enumerate(mv) if r is not None]
    agree = sum(1 for i in decided if (rv[i] == "correct") == mv[i])
    by_kind: dict[str, list[int]] = {}
    for i in decided:
        by_kind.setdefault(pairs[i][0], [0, 0])
        by_kind[pairs[i][0]][0] += (rv[i] == "correct") == mv[i]
        by_kind[pairs[i][0]][1] += 1
    mv_rate, rv_rate = len(pairs) / mv_seconds, len(pairs) / rv_seconds
    print(f"pairs: {len(pairs)} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})")
    print(f"math-verify parse+verify: {mv_seconds:.1f} s, {mv_rate:,.0f} answers/s; decided on "
          f"{len(decided)} ({len(pairs) - len(decided)} unparsed, e.g. option letters)")
    print(f"rule-verify:              {rv_seconds:.1f} s, {rv_rate:,.0f} answers/s; verdicts "
          f"{dict(Counter(rv))}")
    print("agreement where math-verify is decided: "
          + ", ".join(f"{k} {a}/{t}" for k, (a, t) in sorted(by_kind.items())))
    disagreements = [(pairs[i][1], pairs[i][2], mv[i], rv[i]) for i in decided
                     if (rv[i] == "correct") != mv[i]]
    for gold, response, m, r in disagreements[:10]:
        print(f"  differs: gold {gold!r} response {response!r}: math-verify {m}, rule-verify {r}")
    figures = fidelity()
    result = {"speedup": round(rv_rate / mv_rate, 2),
              "agreement": round(agree / max(1, len(decided)), 5),
              "rule_verify_per_s": round(rv_rate, 1), "math_verify_per_s": round(mv_rate, 1),
              "decided": len(decided), "n": len(pairs), **figures, "smoke": args.smoke}
    assert set(result) == set(KEYS), sorted(set(result) ^ set(KEYS))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
