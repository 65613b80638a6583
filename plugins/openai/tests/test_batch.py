"""Batch mode of the openai engine against the scripted server's fake ``/v1/files`` and
``/v1/batches``: one batch for many concurrent calls, expiry, failed lines, failed batches,
resuming a recorded batch in a new engine, and the request cache in front of it all."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from dualcurate import StageContext
from dualcurate.cache import generate_cached
from dualcurate.chat import ChatRequest
from dualcurate.engine import engine_identity
from dualcurate.sampling import SamplingParams
from dualcurate_openai.batch import RECORDS, custom_id
from dualcurate_openai.engine import OpenAIEngine
from dualcurate_openai.testing import BatchPlan, Reply, ScriptedServer, chat_response

SAMPLING = SamplingParams(max_tokens=8, seed=4)
KEY = "sk-batch-SECRET-0123"


def make(server: ScriptedServer, **options: Any) -> OpenAIEngine:
    return OpenAIEngine({"model": "scripted-model", "base_url": server.base_url,
                         "batch": True, "batch_linger": 0.1, "batch_poll_interval": 0.02,
                         "backoff_initial": 0.01, "backoff_max": 0.02, **options})


def questions(n: int, k: int = 2, prefix: str = "q") -> list[ChatRequest]:
    return [ChatRequest(messages=[{"role": "user", "content": f"{prefix}{i}"}], n=k)
            for i in range(n)]


def answer(text: str) -> str:
    return text.split("<answer>")[1].split("<")[0]


def seeds(out: list[list[Any]]) -> list[list[str]]:
    return [[answer(c.text) if c.ok else c.error for c in row] for row in out]


def expected(requests: list[ChatRequest], sampling: SamplingParams = SAMPLING) -> list[list[str]]:
    return [[str(sampling.seed_for(i, r)) for i in r.indices()] for r in requests]


def records(ctx: StageContext) -> list[dict[str, Any]]:
    path = ctx.store.root / "batches" / RECORDS
    return [json.loads(line) for line in path.read_text().splitlines()]


def by_prompt(table: dict[str, Reply | list[Reply]]):
    """A handler answering by the prompt text; a list is consumed one reply per request."""
    lock = threading.Lock()

    def handler(body: dict[str, Any], headers: dict[str, str], number: int) -> Reply:
        prompt = body["messages"][0]["content"]
        with lock:
            script = table.get(prompt)
            if isinstance(script, list) and script:
                return script.pop(0)
            if isinstance(script, Reply):
                return script
        seed = body.get("seed")
        return Reply(body=chat_response(f"<think>t</think><answer>{seed}</answer>"))

    return handler


def test_concurrent_calls_share_one_batch_with_the_online_seeds(stage_context, monkeypatch):
    """Three threads' calls in one batch; every sample has the seed the online path gives it;
    the lines are valid batch lines and the records hold ids, never the key."""
    monkeypatch.setenv("BATCH_TEST_KEY", KEY)
    calls = [questions(4, prefix=f"c{c}-") for c in range(3)]
    with ScriptedServer() as server:
        engine = make(server, api_key_env="BATCH_TEST_KEY", batch_linger=1.0)
        engine.setup(stage_context)
        outs: dict[int, Any] = {}
        reported: dict[int, list[int]] = {c: [] for c in range(3)}
        try:
            threads = [threading.Thread(target=lambda c=c: outs.__setitem__(c, engine.generate(
                calls[c], SAMPLING, on_result=lambda i, comps, c=c: reported[c].append(i))))
                for c in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        finally:
            engine.close()
        assert server.count == 0  # nothing online
        assert len(server.batches) == 1
        assert len(server.batch_seen) == 3 * 4 * 2  # text: one line per sample, as online
        for c in range(3):
            assert seeds(outs[c]) == expected(calls[c])
            assert sorted(reported[c]) == [0, 1, 2, 3]
        ids = server.batch_requests()
        assert len(ids) == len(set(ids)) == 24
        events = records(stage_context)
        assert [e["event"] for e in events] == ["uploaded", "submitted", "final"]
        assert events[0]["custom_ids"] == ids and events[2]["status"] == "completed"
        folder = stage_context.store.root / "batches"
        assert not any(KEY in p.read_text() for p in folder.iterdir() if p.is_file())
        assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]


def test_custom_ids_hash_image_hashes_not_data_urls(stage_context):
    """A question with an image is one line with n = k (as online); its custom id is a hash
    of the messages with the image's hash, so it is the same in every run."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buf, format="PNG")
    digest = stage_context.images.put(buf.getvalue())
    request = ChatRequest(messages=[{"role": "user", "content": [
        {"type": "image", "image": digest}, {"type": "text", "text": "colour?"}]}], n=3)
    with ScriptedServer() as server:
        engine = make(server)
        engine.setup(stage_context)
        try:
            out = engine.generate([request], SAMPLING)
        finally:
            engine.close()
        (line,) = [json.loads(raw) for raw in server.files["file-0001"][2].splitlines()]
    assert seeds(out) == expected([request])
    assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
    body = line["body"]
    assert body["n"] == 3 and body["seed"] == SAMPLING.seed_for(0, request)
    assert body["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png")
    base = {k: v for k, v in body.items() if k not in ("messages", "seed", "n")}
    assert line["custom_id"] == custom_id(server.base_url, request.messages, base,
                                          body["seed"], 3)
    assert digest in json.dumps(request.messages) and "base64" not in line["custom_id"]


def test_an_expired_batch_keeps_what_was_done_and_resubmits_the_rest(stage_context):
    plans = {1: BatchPlan(expire_after=3)}
    with ScriptedServer(batch_plan=lambda number, lines: plans.get(number, BatchPlan())) as srv:
        requests = questions(5)
        engine = make(srv)
        engine.setup(stage_context)
        try:
            out = engine.generate(requests, SAMPLING)
        finally:
            engine.close()
        assert seeds(out) == expected(requests)
        first, second = (srv.batches[b] for b in ("batch_0001", "batch_0002"))
        assert first["status"] == "expired" and second["status"] == "completed"
        ids = srv.batch_requests()
        assert len(ids) == 10 + 7 and len(set(ids)) == 10  # only the 7 not done went again
        assert len(srv.batch_seen) == 10  # each sample answered once
        assert len(srv.batches) == 2


def test_failed_lines_5xx_are_resubmitted_4xx_are_errors(stage_context):
    handler = by_prompt({
        "flaky": [Reply(status=500, body={"error": {"message": "overloaded"}})],
        "bad": Reply(status=400, body={"error": {"message": "this image is not allowed"}}),
    })
    requests = [ChatRequest(messages=[{"role": "user", "content": p}], n=1)
                for p in ("fine", "flaky", "bad")]
    with ScriptedServer(handler) as srv:
        engine = make(srv)
        engine.setup(stage_context)
        try:
            out = engine.generate(requests, SAMPLING)
        finally:
            engine.close()
        assert len(srv.batches) == 2
        first_error_file = srv.files[srv.batches["batch_0001"]["error_file_id"]][2]
        assert first_error_file.count(b"custom_id") == 2  # the 500 and the 400
        ids = srv.batch_requests()
        assert len(ids) == 4  # fine, flaky, bad; then flaky alone
    fine, flaky, bad = (row[0] for row in out)
    assert fine.ok and flaky.ok
    assert answer(flaky.text) == str(SAMPLING.seed_for(0, requests[1]))
    assert not bad.ok and "HTTP 400" in bad.error and "not allowed" in bad.error


def test_resubmissions_stop_after_max_retries(stage_context):
    with ScriptedServer(batch_plan=BatchPlan(expire_after=0)) as srv:
        engine = make(srv, max_retries=2)
        engine.setup(stage_context)
        try:
            (row,) = engine.generate(questions(1, k=1), SAMPLING)
        finally:
            engine.close()
        assert len(srv.batches) == 3  # the first and two resubmissions
    assert not row[0].ok and "expired" in row[0].error and "after 3 batches" in row[0].error


def test_a_failed_batch_is_submitted_again(stage_context):
    plans = {1: BatchPlan(fail="enqueued token limit reached")}
    with ScriptedServer(batch_plan=lambda number, lines: plans.get(number, BatchPlan())) as srv:
        requests = questions(3)
        engine = make(srv)
        engine.setup(stage_context)
        try:
            out = engine.generate(requests, SAMPLING)
        finally:
            engine.close()
        assert [b["status"] for b in srv.batches.values()] == ["failed", "completed"]
    assert seeds(out) == expected(requests)
    assert "token limit" in records(stage_context)[2]["message"]


@pytest.mark.parametrize("n_mode", ["ignore", "reject"])
def test_a_server_without_n_gets_singles_in_the_next_batch(stage_context, n_mode):
    requests = questions(2, k=3)
    with ScriptedServer(n_mode=n_mode) as srv:
        engine = make(srv, n_per_request="always")
        engine.setup(stage_context)
        try:
            out = engine.generate(requests, SAMPLING)
        finally:
            engine.close()
        assert len(srv.batches) == 2
    assert seeds(out) == expected(requests)


def test_batches_are_cut_at_max_requests_and_max_bytes(stage_context):
    requests = questions(5, k=1)
    with ScriptedServer() as srv:
        engine = make(srv, batch_max_requests=2)
        engine.setup(stage_context)
        try:
            out = engine.generate(requests, SAMPLING)
        finally:
            engine.close()
        assert [b["request_counts"]["total"] for b in srv.batches.values()] == [2, 2, 1]
    assert seeds(out) == expected(requests)
    with ScriptedServer() as srv:
        engine = make(srv, batch_max_bytes=1024)  # lines of ~300 bytes: 3 per file
        engine.setup(StageContext.ephemeral(root=stage_context.store.root / "other"))
        try:
            out = engine.generate(questions(7, k=1, prefix="x" * 40), SAMPLING)
        finally:
            engine.close()
        assert sum(b["request_counts"]["total"] for b in srv.batches.values()) == 7
        assert len(srv.batches) >= 3
        assert all(len(data) <= 1024 for _, purpose, data in srv.files.values()
                   if purpose == "batch")


def test_a_new_engine_attaches_to_a_recorded_batch_instead_of_paying_again(stage_context):
    """A run that died after submitting: the next engine on the same run store polls the
    recorded batch (no new batch), then answers later calls from the downloaded results."""
    hold = threading.Event()
    requests = questions(4)
    with ScriptedServer(batch_plan=BatchPlan(hold=hold)) as srv:
        first = make(srv)
        first.setup(stage_context)
        waiter = threading.Thread(target=lambda: _swallow(first.generate, requests, SAMPLING))
        waiter.start()
        _wait(lambda: any(e["event"] == "submitted" for e in _records_or_empty(stage_context)))
        first.close()  # the "crash": the batch stays on the server, in progress
        waiter.join(10)

        second = make(srv)
        second.setup(StageContext.ephemeral(root=stage_context.store.root))
        threading.Timer(0.3, hold.set).start()
        try:
            out = second.generate(requests, SAMPLING)
        finally:
            second.close()
        assert seeds(out) == expected(requests)
        assert len(srv.batches) == 1 and len(srv.batch_seen) == 8

        third = make(srv)  # the batch is final and downloaded: nothing reaches the server
        third.setup(StageContext.ephemeral(root=stage_context.store.root))
        try:
            assert seeds(third.generate(requests[1:3], SAMPLING)) == expected(requests[1:3])
        finally:
            third.close()
        assert len(srv.batches) == 1 and len(srv.files) == 2


def test_a_batch_created_but_not_recorded_is_found_by_its_input_file(stage_context):
    requests = questions(3)
    with ScriptedServer() as srv:
        engine = make(srv)
        engine.setup(stage_context)
        try:
            engine.generate(requests, SAMPLING)
        finally:
            engine.close()
        folder = stage_context.store.root / "batches"
        path = folder / RECORDS
        uploaded = path.read_text().splitlines()[0]  # as if killed before "submitted"
        path.write_text(uploaded + "\n" + '{"event": "submitt')  # and a torn line
        for p in folder.glob("batch_*"):
            p.unlink()
        again = make(srv)
        again.setup(StageContext.ephemeral(root=stage_context.store.root))
        try:
            out = again.generate(requests, SAMPLING)
        finally:
            again.close()
        assert seeds(out) == expected(requests)
        assert len(srv.batches) == 1  # found, downloaded, not submitted again
        assert [json.loads(e)["event"] for e in path.read_text().splitlines()[-2:]] == \
               ["submitted", "final"]


def test_results_enter_the_request_cache_and_a_rerun_sends_nothing(stage_context):
    requests = questions(3)
    with ScriptedServer() as srv:
        for _ in range(2):
            engine = make(srv)
            engine.setup(stage_context)
            try:
                out = generate_cached(engine, requests, SAMPLING, stage_context.cache)
            finally:
                engine.close()
            assert seeds(out) == expected(requests)
        assert len(srv.batches) == 1 and len(srv.files) == 2 and srv.count == 0
    assert all(c.cached for row in out for c in row)


def test_batch_options_are_runtime_and_capacity_is_the_batch_size(server):
    online = OpenAIEngine({"model": "scripted-model", "base_url": server.base_url})
    batch = make(server, batch_max_requests=1234)
    assert engine_identity(online) == engine_identity(batch)  # the same cache entries
    assert batch.capacity() == 1234 and online.capacity() == online.config.max_concurrency


def _swallow(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except BaseException:
        pass


def _records_or_empty(ctx: StageContext) -> list[dict[str, Any]]:
    path: Path = ctx.store.root / "batches" / RECORDS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _wait(predicate: Any, timeout: float = 20) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("timed out")


def test_polling_refused_gives_error_completions_and_keeps_the_record(stage_context):
    """A key that stops working while a batch runs: error completions (sent again next run),
    and the batch stays recorded without a final event, so the next run attaches to it."""
    hold = threading.Event()
    srv = ScriptedServer(batch_plan=BatchPlan(hold=hold))

    async def refused(request: Any) -> Any:
        return srv._error(401, "invalid api key")

    srv._get_batch = refused  # type: ignore[method-assign]
    with srv:
        engine = make(srv)
        engine.setup(stage_context)
        try:
            (row,) = engine.generate(questions(1, k=1), SAMPLING)
        finally:
            engine.close()
        hold.set()
    assert not row[0].ok and "HTTP 401" in row[0].error
    assert [e["event"] for e in records(stage_context)] == ["uploaded", "submitted"]
