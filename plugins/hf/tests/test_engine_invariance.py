"""The hf engine samples batch-invariantly: a sample's text depends only on its request, its
sample index and the seed — not on the batch size, the rows it shares a batch with, how many
threads call the engine, the order requests come in, or which samples were cached already.
And what the recipe asks is what the model does: a checkpoint's own sampling defaults
(Qwen2.5-VL-Instruct ships top_k = 1, repetition_penalty = 1.05) never apply."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualcurate.cache import RequestCache, generate_cached
from dualcurate.chat import ChatRequest
from dualcurate.errors import DualcurateError
from dualcurate.sampling import SamplingParams
from dualcurate_hf.engine import HFEngine, checkpoint_overrides, row_generators, sample_rows

QUESTIONS = ["Count the red squares.", "Which option (A) (B)?", "What is 3 + 4?",
             "Step 1: extract the information.", "a", "how many circle square triangle?"]
K = 3
SAMPLING = SamplingParams(max_tokens=10, seed=11, temperature=1.0, top_p=0.95)


def ask(text: str, indices: list[int]) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": [{"type": "text", "text": text}]}],
                       n=len(indices), sample_indices=indices)


@pytest.fixture(scope="module")
def engines(tiny_lm_dir):
    """One engine per batch size, built once."""
    made: dict[int, HFEngine] = {}

    def get(batch_size: int) -> HFEngine:
        if batch_size not in made:
            made[batch_size] = HFEngine({"model": str(tiny_lm_dir), "batch_size": batch_size})
            made[batch_size].setup()
        return made[batch_size]

    yield get
    for engine in made.values():
        engine.close()


@pytest.fixture(scope="module")
def reference(engines) -> dict[tuple[int, int], str]:
    """Every (question, sample) generated alone: batch size 1, one request at a time."""
    engine = engines(1)
    return {(q, i): engine.generate([ask(QUESTIONS[q], [i])], SAMPLING)[0][0].text
            for q in range(len(QUESTIONS)) for i in range(K)}


def test_samples_of_a_question_differ(reference):
    for q in range(len(QUESTIONS)):
        assert len({reference[q, i] for i in range(K)}) > 1, QUESTIONS[q]


def test_the_cpu_default_computes_in_float64(engines):
    import torch

    assert engines(1).model.dtype == torch.float64


def last_logits(engine: HFEngine, texts: list[str]):
    import torch

    enc = engine.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    # positions count real tokens only, as generate() derives them from the attention mask
    positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        return engine.model(**enc, position_ids=positions).logits[:, -1]


@pytest.mark.parametrize("dtype", ["auto", "float32"])
def test_padding_and_batch_mates_barely_move_the_numbers(tiny_lm_dir, dtype):
    """What a row samples from does not depend on its batch beyond float64 rounding (the CPU
    default: ~1e-16, which would flip a draw about once in 10^15); in float32 the batch moves
    the logits by ~1e-7 (a flip about once in a million draws), which is why float32 is not
    the default."""
    engine = HFEngine({"model": str(tiny_lm_dir), "dtype": dtype})
    engine.setup()
    try:
        alone = [last_logits(engine, [q])[0] for q in QUESTIONS]
        batched = last_logits(engine, QUESTIONS)
        mixed = last_logits(engine, [QUESTIONS[3], QUESTIONS[0], QUESTIONS[0]])
    finally:
        engine.close()
    moved = max([float((alone[q] - batched[q]).abs().max()) for q in range(len(QUESTIONS))]
                + [float((mixed[1] - alone[0]).abs().max()),
                   float((mixed[0] - alone[3]).abs().max())])
    if dtype == "auto":
        assert moved < 1e-12
    else:
        assert moved > 1e-9


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch_size=st.integers(1, 6), threads=st.integers(1, 3),
       wanted=st.lists(st.tuples(st.integers(0, len(QUESTIONS) - 1), st.integers(0, K - 1)),
                       min_size=1, max_size=12, unique=True),
       data=st.data())
def test_a_sample_is_a_function_of_its_request_index_and_seed(
        engines, reference, batch_size, threads, wanted, data):
    # the samples still wanted (the rest "cached"), grouped into requests in any order,
    # spread over several threads calling the engine at once
    by_question: dict[int, list[int]] = {}
    for q, i in wanted:
        by_question.setdefault(q, []).append(i)
    requests = [(q, sorted(idx)) for q, idx in by_question.items()]
    requests = data.draw(st.permutations(requests))
    parts = [requests[t::threads] for t in range(threads)]
    engine = engines(batch_size)
    got: dict[tuple[int, int], str] = {}
    errors: list[BaseException] = []

    def call(part):
        try:
            out = engine.generate([ask(QUESTIONS[q], idx) for q, idx in part], SAMPLING)
            for (q, idx), comps in zip(part, out, strict=True):
                for i, comp in zip(idx, comps, strict=True):
                    assert comp.ok, comp.error
                    got[q, i] = comp.text
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=call, args=(p,)) for p in parts if p]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert not errors, errors
    assert got == {key: reference[key] for key in wanted}


def test_cached_subsets_and_batch_sizes_through_the_cache(engines, reference, tmp_path):
    """generate_cached over a cache that already holds some samples sends only the rest,
    and they come out as they would alone."""
    cache = RequestCache(tmp_path / "cache.sqlite")
    try:
        first = [ask(QUESTIONS[q], [0, 2]) for q in range(len(QUESTIONS))]
        generate_cached(engines(4), first, SAMPLING, cache)
        full = [ask(QUESTIONS[q], list(range(K))) for q in range(len(QUESTIONS))]
        out = generate_cached(engines(5), full, SAMPLING, cache)
    finally:
        cache.close()
    assert {(q, i): out[q][i].text for q in range(len(QUESTIONS)) for i in range(K)} == reference
    assert [c.cached for c in out[0]] == [True, False, True]


# the row sampler ------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 6), vocab=st.integers(2, 40), seed=st.integers(0, 2**31),
       temperature=st.floats(0.2, 2.0), top_k=st.integers(0, 50),
       top_p=st.floats(0.05, 1.0), min_p=st.floats(0.0, 0.5), pick=st.data())
def test_row_sampler_draws_each_row_from_its_own_generator(rows, vocab, seed, temperature,
                                                           top_k, top_p, min_p, pick):
    import torch

    scores = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed),
                         dtype=torch.float64) * 3
    sampling = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    seeds = [seed + j for j in range(rows)]
    together = sample_rows(scores, row_generators(seeds), sampling).argmax(-1).tolist()
    j = pick.draw(st.integers(0, rows - 1))
    alone = sample_rows(scores[j:j + 1], row_generators([seeds[j]]), sampling).argmax(-1)
    assert together[j] == alone.item()
    out = sample_rows(scores, row_generators(seeds), sampling)
    assert ((out == 0).sum(-1) == 1).all()  # exactly one token left per row
    if top_k == 1 or top_p < 1e-9:
        assert together == scores.argmax(-1).tolist()


def test_row_sampler_follows_the_distribution():
    import torch

    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0]], dtype=torch.float64)
    gen = row_generators([1])
    counts = [0, 0, 0, 0]
    for _ in range(4000):
        counts[int(sample_rows(probs.log(), gen, SamplingParams()).argmax())] += 1
    assert counts[3] == 0
    assert [round(c / 4000, 1) for c in counts[:3]] == [0.5, 0.3, 0.2]
    # top_p = 0.6 keeps the two most likely tokens (0.5 alone is less than 0.6)
    gen = row_generators([2])
    kept = {int(sample_rows(probs.log(), gen, SamplingParams(top_p=0.6)).argmax())
            for _ in range(300)}
    assert kept == {0, 1}


# the checkpoint's own sampling defaults ------------------------------------------------------

@pytest.fixture(scope="module")
def qwen_like_dir(tmp_path_factory) -> Path:
    """A tiny model whose saved generation_config is Qwen2.5-VL-Instruct's sampling: top_k 1,
    repetition_penalty 1.05, temperature 1e-6."""
    from transformers import GenerationConfig

    from dualcurate.testing.tiny import build_tiny_causal_lm

    out = build_tiny_causal_lm(tmp_path_factory.mktemp("qwen-like"))
    config = GenerationConfig.from_pretrained(out)
    config.update(do_sample=True, top_k=1, top_p=0.001, temperature=1e-6,
                  repetition_penalty=1.05)
    config.save_pretrained(out)
    return out


def test_checkpoint_sampling_defaults_do_not_apply(qwen_like_dir, caplog):
    engine = HFEngine({"model": str(qwen_like_dir), "batch_size": 4})
    engine.setup()
    try:
        with caplog.at_level(logging.INFO, logger="dualcurate"):
            out = engine.generate([ask(q, [0, 1, 2, 3]) for q in QUESTIONS[:3]],
                                  SamplingParams(max_tokens=8, seed=0, temperature=1.0))
    finally:
        engine.close()
    for comps in out:
        assert len({c.text for c in comps}) > 1  # top_k = 1 would make all four the same
    notes = [r.getMessage() for r in caplog.records if "generation_config" in r.getMessage()]
    assert len(notes) == 1
    assert "top_k=1" in notes[0] and "repetition_penalty=1.05" in notes[0]
    assert "this run uses" in notes[0] and "top_k=0" in notes[0]


def test_repetition_penalty_is_applied_when_asked(qwen_like_dir):
    """The recipe's repetition_penalty does apply (greedy, so only it can change the text)."""
    engine = HFEngine({"model": str(qwen_like_dir), "batch_size": 2})
    engine.setup()
    try:
        request = [ask("a a a a a a a a", [0])]
        plain = engine.generate(request, SamplingParams(max_tokens=16, temperature=0.0))
        again = engine.generate(request, SamplingParams(max_tokens=16, temperature=0.0))
        penalised = engine.generate(request, SamplingParams(max_tokens=16, temperature=0.0,
                                                            repetition_penalty=5.0))
    finally:
        engine.close()
    assert plain[0][0].text == again[0][0].text
    assert penalised[0][0].text != plain[0][0].text


def test_overrides_note():
    assert checkpoint_overrides({}, SamplingParams()) is None
    note = checkpoint_overrides({"top_k": 1, "suppress_tokens": [3]}, SamplingParams(top_k=20))
    assert note == ("the checkpoint's generation_config sets suppress_tokens=[3], top_k=1; "
                    "this run uses top_k=20 (suppress_tokens not applied)")


def test_unknown_extras_are_refused(engines):
    with pytest.raises(DualcurateError, match="presence_penalty"):
        engines(1).generate([ask("a", [0])],
                            SamplingParams(max_tokens=2, extra={"presence_penalty": 1.0}))


def test_sampling_fields_are_refused_as_extras():
    with pytest.raises(ValueError, match="top_k"):
        SamplingParams(extra={"top_k": 5})
