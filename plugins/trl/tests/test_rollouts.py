"""GRPO/GSPO rollouts generated with transformers are row-seeded, as the engines are: a
rollout's tokens depend on its prompt, its sample index, the seed and the training step only,
never on which other prompts share the generation batch."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dualcurate_trl.grpo import GRPOStage
from dualcurate_trl.rollouts import rollout_seeds, row_seeded_trainer_class

N = 3  # rollouts per prompt, as TRL repeats each prompt num_generations times
TEXTS = ["What is 3 + 4?", "Count the red squares.", "a", "Which option (A) (B) or (C)?"]


def zero_reward(completions: list, **kwargs: object) -> list[float]:
    return [0.0] * len(completions)


@pytest.fixture(scope="module")
def trainer(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The stage's trainer on the tiny model in float64 (the batch moves a row's logits by
    float64 rounding only, so the comparisons below are about sampling, not numerics)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stage = GRPOStage({"model": str(tiny_lm_dir), "num_generations": N,
                       "per_device_train_batch_size": N, "max_completion_length": 8,
                       "temperature": 1.0, "top_p": 0.95, "use_vllm": False, "seed": 7,
                       "trl_args": {"gradient_checkpointing": False}})
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float64)
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    tokenizer.padding_side = "left"
    return row_seeded_trainer_class()(
        model=model, reward_funcs=[zero_reward, zero_reward],
        args=stage.trl_config(tmp_path_factory.mktemp("rollouts")),
        train_dataset=Dataset.from_dict({"prompt": TEXTS}), processing_class=tokenizer)


def prompt_ids(trainer, texts: list[str]) -> list[list[int]]:
    return [trainer.processing_class(t)["input_ids"] for t in texts]


def rollouts(trainer, ids: list[list[int]]) -> list[tuple[int, ...]]:
    completions, _ = trainer._generate_single_turn(ids, None, {}, N)
    return [tuple(c) for c in completions]


def test_a_rollout_does_not_depend_on_its_batch_mates(trainer) -> None:
    ids = prompt_ids(trainer, TEXTS)
    trainer.state.global_step = 0
    batched = rollouts(trainer, [p for p in ids for _ in range(N)])
    alone = [r for p in ids for r in rollouts(trainer, [p] * N)]
    assert batched == alone
    # another order and other batch mates: each (prompt, sample index) keeps its tokens
    shuffled = rollouts(trainer, [ids[i] for i in (2, 0, 2, 3, 0, 2, 0)])
    expect = [alone[i * N + k] for i, k in ((2, 0), (0, 0), (2, 1), (3, 0), (0, 1), (2, 2),
                                            (0, 2))]
    assert shuffled == expect
    assert rollouts(trainer, [ids[1]]) == [alone[N]]


def test_rollouts_of_a_prompt_differ_and_change_with_the_step_and_seed(trainer) -> None:
    ids = prompt_ids(trainer, TEXTS)
    batch = [p for p in ids for _ in range(N)]
    trainer.state.global_step = 0
    first = rollouts(trainer, batch)
    for i in range(len(ids)):
        assert len(set(first[i * N:(i + 1) * N])) == N, TEXTS[i]
    trainer.state.global_step = 1
    later = rollouts(trainer, batch)
    assert all(a != b for a, b in zip(first, later, strict=True))
    trainer.state.global_step = 0
    assert rollouts(trainer, batch) == first
    seed = trainer.args.seed
    try:
        trainer.args.seed = seed + 1
        assert all(a != b for a, b in zip(first, rollouts(trainer, batch), strict=True))
    finally:
        trainer.args.seed = seed
    assert "generate" not in vars(trainer.model)  # the wrapper is gone after each call


@given(st.lists(st.lists(st.integers(0, 50), min_size=1, max_size=4), min_size=1, max_size=8),
       st.randoms(use_true_random=False))
def test_seeds_follow_the_prompt_and_its_occurrence_not_the_batch(prompts, rnd) -> None:
    seeds = rollout_seeds(3, 5, prompts)
    key = {}
    counts: dict[tuple[int, ...], int] = {}
    for p, s in zip(prompts, seeds, strict=True):
        t = tuple(p)
        key[t, counts.get(t, 0)] = s
        counts[t] = counts.get(t, 0) + 1
    assert len(set(seeds)) == len(seeds)  # no two rollouts share a random stream
    order = list(range(len(prompts)))
    rnd.shuffle(order)
    shuffled = [prompts[i] for i in order]
    counts = {}
    for p, s in zip(shuffled, rollout_seeds(3, 5, shuffled), strict=True):
        t = tuple(p)
        assert key[t, counts.get(t, 0)] == s
        counts[t] = counts.get(t, 0) + 1
    assert rollout_seeds(3, 6, prompts) != seeds and rollout_seeds(4, 5, prompts) != seeds
