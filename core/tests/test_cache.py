"""Request cache keys (hypothesis) and SQLite behaviour."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from dualcurate.cache import RequestCache, generate_cached, request_key
from dualcurate.chat import ChatRequest, Completion
from dualcurate.engine import Engine, EngineConfig
from dualcurate.sampling import SamplingParams

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user"]),
                                           "content": st.text(max_size=40)}),
                    min_size=1, max_size=3)
sampling = st.dictionaries(st.sampled_from(["temperature", "top_p", "max_tokens", "seed"]),
                           json_scalars, max_size=4)
BASE = dict(engine="hf", model="m", revision="r", endpoint="http://x", messages=[
    {"role": "system", "content": "sys"}, {"role": "user", "content": "q"}],
    sampling={"temperature": 1.0, "top_p": 0.95}, sample_index=0, image_hashes=["ab"])


@given(st.sampled_from(["engine", "model", "revision", "endpoint"]), st.text(max_size=20))
def test_changing_identity_changes_key(field, value):
    changed = {**BASE, field: value}
    if value == BASE[field]:
        return
    assert request_key(**changed) != request_key(**BASE)


@given(messages)
def test_changing_messages_changes_key(msgs):
    if msgs == BASE["messages"]:
        return
    assert request_key(**{**BASE, "messages": msgs}) != request_key(**BASE)


@given(st.text(max_size=30))
def test_system_prompt_is_part_of_the_key(system):
    if system == "sys":
        return
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "q"}]
    assert request_key(**{**BASE, "messages": msgs}) != request_key(**BASE)


@given(sampling, st.integers(0, 64), st.lists(st.text(min_size=1, max_size=8), max_size=3))
def test_sampling_index_and_images_change_key(samp, index, images):
    other = request_key(**{**BASE, "sampling": samp, "sample_index": index,
                           "image_hashes": images})
    same = (samp == BASE["sampling"] and index == 0 and images == ["ab"])
    assert (other == request_key(**BASE)) == same


@given(sampling)
def test_dict_order_does_not_matter(samp):
    reordered = dict(reversed(list(samp.items())))
    msgs = [{"content": "q", "role": "user"}]
    msgs_other = [{"role": "user", "content": "q"}]
    assert request_key(**{**BASE, "sampling": samp, "messages": msgs}) == \
        request_key(**{**BASE, "sampling": reordered, "messages": msgs_other})


class CountingEngine(Engine):
    name = "counting"
    Config = EngineConfig

    def __init__(self, config=None, fail_every: int = 0, **kw):
        super().__init__(config or {"model": "m"}, **kw)
        self.sent = 0
        self.fail_every = fail_every
        self.lock = threading.Lock()

    def generate(self, requests, sampling, on_result=None):
        out = []
        for i, req in enumerate(requests):
            comps = []
            for idx in req.indices():
                with self.lock:
                    self.sent += 1
                    n = self.sent
                if self.fail_every and n % self.fail_every == 0:
                    comps.append(Completion(error="HTTP 503"))
                else:
                    comps.append(Completion(text=f"{req.messages[-1]['content']}#{idx}",
                                            finish_reason="stop", completion_tokens=3))
            out.append(comps)
            if on_result:
                on_result(i, comps)
        return out


def _requests(n=5, k=3):
    return [ChatRequest(messages=[{"role": "user", "content": f"q{i}"}], n=k) for i in range(n)]


def test_rerun_sends_nothing(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    engine = CountingEngine()
    first = generate_cached(engine, _requests(), SamplingParams(seed=1), cache)
    assert engine.sent == 15
    second = generate_cached(engine, _requests(), SamplingParams(seed=1), cache)
    assert engine.sent == 15
    assert [[c.text for c in r] for r in first] == [[c.text for c in r] for r in second]
    assert all(c.cached for r in second for c in r)


def test_only_missing_samples_are_sent(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    engine = CountingEngine()
    generate_cached(engine, _requests(k=2), SamplingParams(), cache)
    engine.sent = 0
    out = generate_cached(engine, _requests(k=4), SamplingParams(), cache)
    assert engine.sent == 5 * 2
    assert [c.text for c in out[0]] == ["q0#0", "q0#1", "q0#2", "q0#3"]


def test_failures_are_recorded_not_cached_and_retried(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    engine = CountingEngine(fail_every=4)
    out = generate_cached(engine, _requests(), SamplingParams(), cache)
    failed = sum(1 for r in out for c in r if not c.ok)
    assert failed == 3 and len(cache.failures()) == 3
    assert cache.count() == 12
    engine2 = CountingEngine()
    out2 = generate_cached(engine2, _requests(), SamplingParams(), cache)
    assert engine2.sent == 3
    assert all(c.ok for r in out2 for c in r)


def test_changed_sampling_is_a_miss(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    engine = CountingEngine()
    generate_cached(engine, _requests(), SamplingParams(temperature=1.0), cache)
    generate_cached(engine, _requests(), SamplingParams(temperature=0.7), cache)
    assert engine.sent == 30


@settings(max_examples=20)
@given(st.dictionaries(st.text(max_size=5), json_scalars, max_size=4))
def test_derived_values_roundtrip(tmp_path_factory, value):
    cache = RequestCache(tmp_path_factory.mktemp("d") / "c.sqlite")
    cache.put_derived("k", value)
    assert cache.get_derived("k") == value


@settings(max_examples=60, deadline=None)
@given(messages, sampling, st.lists(st.integers(0, 10**6), max_size=5),
       st.dictionaries(st.text(max_size=8), json_scalars, max_size=3),
       st.lists(st.text(max_size=8), max_size=2), st.one_of(st.none(), st.text(max_size=10)))
def test_request_keys_equal_one_request_key_per_sample(msgs, samp, indices, extra, images, rev):
    from dualcurate.cache import request_keys

    common = dict(engine="openai", model="m", messages=msgs, sampling=samp, revision=rev,
                  endpoint="http://x", image_hashes=images, extra=extra)
    assert request_keys(**common, sample_indices=indices) == [
        request_key(**common, sample_index=i) for i in indices]
