"""S/L example building, prompts and the eval split: properties with hypothesis."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dualcurate import Sample, Trace
from dualcurate_dualtuning.data import (
    ModePrompts,
    question_text,
    split_groups,
    training_examples,
)


def make_rows(sizes: list[int], split_every: int | None = None) -> list[dict]:
    rows = []
    for g, n in enumerate(sizes):
        for i in range(n):
            row = Sample(source="p", domain=f"g{g}", question=f"q{g}-{i}", answer=str(i)).to_row()
            if split_every:
                row["split"] = "eval" if i % split_every == 0 else "train"
            rows.append(row)
    return rows


sizes = st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=5)


@given(sizes, st.floats(min_value=0.01, max_value=0.99), st.integers(1, 5),
       st.one_of(st.none(), st.integers(1, 10)), st.integers(0, 2**31), st.randoms())
def test_seeded_split_partitions_each_group(sizes, fraction, eval_min, eval_max, seed, rnd):
    rows = make_rows(sizes)
    splits = split_groups(rows, "domain", fraction, eval_min, eval_max, seed)
    assert [s.group for s in splits] == [f"g{g}" for g in range(len(sizes))]
    for split, n in zip(splits, sizes, strict=True):
        ids = [r["id"] for r in split.train + split.eval]
        assert sorted(ids) == sorted(r["id"] for r in rows if r["domain"] == split.group)
        want = max(eval_min, round(fraction * n))
        want = min(want, eval_max) if eval_max is not None else want
        assert len(split.eval) == min(want, n)
        assert split.how == "seeded"
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    again = split_groups(shuffled, "domain", fraction, eval_min, eval_max, seed)
    by_group = {s.group: sorted(r["id"] for r in s.eval) for s in again}
    assert by_group == {s.group: sorted(r["id"] for r in s.eval) for s in splits}


@given(sizes, st.integers(2, 4))
def test_split_column_wins(sizes, every):
    rows = make_rows(sizes, split_every=every)
    for split in split_groups(rows, "domain", 0.5, 1, None, 0):
        assert split.how == "column"
        assert all(r["split"] == "eval" for r in split.eval)
        assert all(r["split"] == "train" for r in split.train)


@given(st.text(max_size=40), st.text(max_size=40), st.text(min_size=1, max_size=20),
       st.integers(0, 3))
def test_examples_follow_the_mode_table(prefix_s, prefix_l, answer, n_verified):
    prompts = ModePrompts(user_prefix_short=prefix_s, user_prefix_long=prefix_l + "!")
    row = Sample(source="p", domain="math", question="Q?", answer=answer).to_row()
    row["traces"] = [Trace(reasoning=f"r{i}", answer=answer, verdict="correct").model_dump()
                     for i in range(n_verified)]
    row["traces"].append(Trace(reasoning="bad", answer="x", verdict="incorrect").model_dump())
    for which, expect_s, expect_l in (("short", 1, 0), ("long", 0, min(n_verified, 2)),
                                      ("dual", 1, min(n_verified, 2))):
        out = training_examples([row], {"math": which}, "domain", prompts, max_traces=2)
        modes = [e["mode"] for e in out]
        assert modes.count("short") == expect_s and modes.count("long") == expect_l
        for e in out:
            text = e["prompt"][-1]["content"][-1]["text"]
            assert text.startswith(prefix_s if e["mode"] == "short" else prefix_l + "!")
            assert text.endswith("Q?")
            assert "bad" not in e["completion"][0]["content"][0]["text"]
    assert training_examples([row], {"chart": "dual"}, "domain", prompts) == []


def test_images_come_first_and_system_prompt_per_mode():
    prompts = ModePrompts(system_short="Be brief.", system_long="")
    row = Sample(source="p", images=["ab" * 32], question="Q?", answer="1").to_row()
    short = prompts.messages(row, "short")
    assert short[0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    assert short[1]["content"][0] == {"type": "image", "image": "ab" * 32}
    assert [m["role"] for m in prompts.messages(row, "long")] == ["user"]


def test_choices_are_listed_once():
    row = {"question": "Which?", "choices": ["red", "blue"]}
    assert question_text(row) == "Which?\nA. red\nB. blue"
    assert question_text({**row, "question": "Which? (A) red (B) blue"}) == \
        "Which? (A) red (B) blue"
    assert question_text(row, show_choices=False) == "Which?"
