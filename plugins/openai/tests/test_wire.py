"""The request bodies both modes of the openai engine share (dualcurate_openai.wire)."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from dualcurate.chat import ChatRequest, Completion
from dualcurate_openai.engine import OpenAIEngineConfig
from dualcurate_openai.wire import Job, Wire

IMAGE = [{"role": "user", "content": [{"type": "image", "image": "ab" * 32},
                                      {"type": "text", "text": "What is shown?"}]}]


def wire(**options) -> Wire:
    return Wire(OpenAIEngineConfig(model="m", base_url="http://127.0.0.1:1/v1", **options),
                lambda digest: b"")


@given(st.sets(st.integers(0, 40), min_size=1, max_size=30), st.integers(1, 8),
       st.sampled_from([None, True, False]))
def test_jobs_cover_each_sample_once_in_runs_of_consecutive_indices(indices, limit, supported):
    w = wire(max_concurrency=limit, n_per_request="auto")
    w.n_supported = supported
    request = ChatRequest(messages=IMAGE, sample_indices=sorted(indices))
    jobs = list(w.jobs(3, request))
    covered = [(job.pos + i, job.first + i) for job in jobs for i in range(job.count)]
    assert covered == list(enumerate(sorted(indices)))
    assert all(job.ri == 3 and 1 <= job.count <= (1 if supported is False else limit)
               for job in jobs)
    if supported is not False:  # runs as long as they can be: each ends at a gap or the limit
        for job, after in pairwise(jobs):
            assert job.count == limit or after.first != job.first + job.count


def test_text_only_requests_go_singly_unless_n_per_request_is_always():
    text = ChatRequest(messages=[{"role": "user", "content": "hi"}], n=4)
    assert [j.count for j in wire().jobs(0, text)] == [1, 1, 1, 1]
    assert [j.count for j in wire(n_per_request="always").jobs(0, text)] == [4]


def test_settle_learns_whether_the_server_takes_n():
    job = Job(ri=0, pos=2, first=5, count=3)
    ignored = wire()
    kept, rest = ignored.settle(job, [Completion(text="a")])
    assert [c.text for c in kept] == ["a"] and ignored.n_supported is False
    assert [(j.pos, j.first, j.count) for j in rest] == [(3, 6, 1), (4, 7, 1)]
    taken = wire()
    kept, rest = taken.settle(job, [Completion(text=t) for t in "abc"])
    assert len(kept) == 3 and rest == [] and taken.n_supported is True
    assert taken.refuses_n(3, 400) is False and ignored.refuses_n(3, 400) is True
