"""The openai engine against a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import time

import pytest

from dualcurate.chat import ChatRequest
from dualcurate.errors import DualcurateError
from dualcurate.sampling import SamplingParams
from dualcurate.testing.contracts import EngineContract
from dualcurate_openai import plugin
from dualcurate_openai.engine import OpenAIEngine, image_mime
from dualcurate_openai.testing import Reply, ScriptedServer, chat_response
from dualcurate_openai.wire import data_url

SAY = [ChatRequest(messages=[{"role": "user", "content": "Say hi"}], n=1)]
TRANSPORT: dict[str, str] = {}


@pytest.fixture(params=["aiohttp", "openai-sdk"], autouse=True)
def http_client(request, monkeypatch) -> str:
    """Every test runs on both HTTP clients."""
    monkeypatch.setitem(TRANSPORT, "http_client", request.param)
    return request.param


def make(server: ScriptedServer, **options) -> OpenAIEngine:
    return OpenAIEngine({"model": "scripted-model", "base_url": server.base_url,
                         "backoff_initial": 0.01, "backoff_max": 0.05, **TRANSPORT, **options})


def run(engine: OpenAIEngine, requests, sampling=None, ctx=None, on_result=None):
    engine.setup(ctx)
    try:
        return engine.generate(requests, sampling or SamplingParams(max_tokens=16, seed=3),
                               on_result=on_result)
    finally:
        engine.close()


class TestOpenAIEngineContract(EngineContract):
    engine_cls = OpenAIEngine
    plugin = plugin.openai_engine

    @pytest.fixture(autouse=True)
    def _server(self, server):
        self.server = server

    def make_engine(self) -> OpenAIEngine:
        return make(self.server)


def test_sends_model_sampling_and_one_request_for_k_samples(server):
    request = ChatRequest(messages=[{"role": "user", "content": "q"}], n=3)
    sampling = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=12, seed=5, stop=["X"],
                              top_k=20, extra={"chat_template_kwargs": {"x": 1}})
    out = run(make(server, n_per_request="always"), [request], sampling)
    (body,) = [s.body for s in server.seen]
    assert body["model"] == "scripted-model" and body["n"] == 3
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9 and body["max_tokens"] == 12
    assert body["stop"] == ["X"] and body["top_k"] == 20
    assert body["chat_template_kwargs"] == {"x": 1}
    assert body["seed"] == sampling.seed_for(0, request)
    # sample i is drawn with seed + i, as vLLM does: the scripted answer names the seed it got
    assert [c.text.split("<answer>")[1].split("<")[0] for c in out[0]] == \
           [str(sampling.seed_for(i, request)) for i in range(3)]


def test_every_sampling_setting_is_stated_so_server_defaults_never_apply(server):
    """A served Qwen2.5-VL would otherwise sample with its generation_config's top_k = 1
    (vllm serve applies it by default): the body states top_k, min_p and repetition_penalty
    even at their defaults."""
    run(make(server), SAY, SamplingParams(max_tokens=4, seed=1))
    (body,) = [s.body for s in server.seen]
    assert (body["top_k"], body["min_p"], body["repetition_penalty"]) == (0, 0.0, 1.0)
    server.reset()
    run(make(server), SAY, SamplingParams(max_tokens=4, seed=1, top_k=5, min_p=0.1,
                                          repetition_penalty=1.1))
    (body,) = [s.body for s in server.seen]
    assert (body["top_k"], body["min_p"], body["repetition_penalty"]) == (5, 0.1, 1.1)


def test_transformers_dialect_states_them_in_the_generation_config(server):
    import json

    sampling = SamplingParams(max_tokens=4, seed=1, top_k=7,
                              extra={"generation_config": {"max_time": 5}})
    run(make(server, sampling_dialect="transformers"), SAY, sampling)
    (body,) = [s.body for s in server.seen]
    assert "top_k" not in body
    assert json.loads(body["generation_config"]) == {
        "do_sample": True, "max_time": 5, "min_p": 0.0, "repetition_penalty": 1.0, "top_k": 7}
    with pytest.raises(DualcurateError, match="generation_config sets top_k"):
        run(make(server, sampling_dialect="transformers"), SAY,
            SamplingParams(extra={"generation_config": {"top_k": 1}}))


def test_openai_dialect_sends_only_the_schema_and_refuses_what_it_cannot_send(server):
    run(make(server, sampling_dialect="openai"), SAY, SamplingParams(max_tokens=4, seed=1))
    (body,) = [s.body for s in server.seen]
    assert not {"top_k", "min_p", "repetition_penalty", "generation_config"} & set(body)
    with pytest.raises(DualcurateError, match="top_k=3"):
        run(make(server, sampling_dialect="openai"), SAY, SamplingParams(top_k=3))


@pytest.mark.parametrize("n_mode", ["native", "ignore", "reject"])
def test_same_samples_whether_or_not_the_server_takes_n(n_mode):
    """A server that ignores or refuses n gets one request per sample from then on; every
    sample has the same seed, so the same text, either way."""
    requests = [ChatRequest(messages=[{"role": "user", "content": f"q{i}"}], n=3)
                for i in range(4)]
    sampling = SamplingParams(max_tokens=8, seed=9)
    with ScriptedServer(n_mode=n_mode) as server:
        out = run(make(server, max_concurrency=2, n_per_request="always"), requests, sampling)
        assert server.samples == 12 if n_mode == "native" else server.samples >= 12
        answered = sum(1 for s in server.seen if n_mode != "reject" or "n" not in s.body)
    assert [[c.text.split("<answer>")[1].split("<")[0] for c in comps] for comps in out] == \
           [[str(sampling.seed_for(i, r)) for i in range(3)] for r in requests]
    if n_mode == "native":  # n = 3 split into n = 2 and n = 1: at most max_concurrency each
        assert server.count == 8 and sorted(s.samples for s in server.seen) == [1] * 4 + [2] * 4
    else:  # detected once: at most the requests in flight then were sent with n
        assert answered >= 12 - 2


def test_auto_sends_n_for_questions_with_images_and_singles_for_text(server, stage_context):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), "blue").save(buf, format="PNG")
    digest = stage_context.images.put(buf.getvalue())
    with_image = ChatRequest(messages=[{"role": "user", "content": [
        {"type": "image", "image": digest}, {"type": "text", "text": "colour?"}]}], n=4)
    text_only = ChatRequest(messages=[{"role": "user", "content": "q"}], n=4)
    run(make(server), [with_image, text_only], SamplingParams(max_tokens=4, seed=2),
        ctx=stage_context)
    image_bodies = [s.body for s in server.seen if isinstance(s.body["messages"][0]["content"],
                                                              list)]
    assert [b.get("n") for b in image_bodies] == [4]  # the image is uploaded once
    assert server.count == 1 + 4


def test_seeds_differ_between_questions_and_follow_the_sample_index(server):
    a = ChatRequest(messages=[{"role": "user", "content": "a"}], n=2)
    b = ChatRequest(messages=[{"role": "user", "content": "b"}], n=2)
    sampling = SamplingParams(seed=1)
    assert sampling.seed_for(0, a) != sampling.seed_for(0, b)
    assert sampling.seed_for(1, a) == sampling.seed_for(0, a) + 1


def test_sample_indices_choose_the_seeds(server):
    request = ChatRequest(messages=[{"role": "user", "content": "q"}], n=2,
                          sample_indices=[4, 7])
    run(make(server), [request], SamplingParams(seed=1))
    sampling = SamplingParams(seed=1)
    assert sorted(s.body["seed"] for s in server.seen) == [sampling.seed_for(4, request),
                                                           sampling.seed_for(7, request)]
    assert all("n" not in s.body for s in server.seen)  # 4 and 7 are not consecutive


def test_samples_in_flight_never_exceed_max_concurrency():
    """max_concurrency counts samples: a request for k holds k of them."""
    requests = [ChatRequest(messages=[{"role": "user", "content": f"q{i}"}], n=3)
                for i in range(10)]
    with ScriptedServer(lambda b, h, n: Reply(body=chat_response("<answer>1</answer>"),
                                              delay=0.05)) as server:
        run(make(server, max_concurrency=7, n_per_request="always"), requests,
            SamplingParams(max_tokens=4, seed=0))
        assert server.samples == 30
        assert 3 <= server.max_in_flight <= 7


def test_images_are_sent_as_data_urls_from_the_store(server, stage_context):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    digest = stage_context.images.put(buf.getvalue())
    request = ChatRequest(messages=[{"role": "user", "content": [
        {"type": "image", "image": digest}, {"type": "text", "text": "colour?"}]}], n=2)
    run(make(server), [request], ctx=stage_context)
    for seen in server.seen:
        parts = seen.body["messages"][0]["content"]
        assert parts[1] == {"type": "text", "text": "colour?"}
        url = parts[0]["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        assert base64.b64decode(url.split(",", 1)[1]) == buf.getvalue()


def test_image_mime_by_magic_number():
    assert image_mime(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert image_mime(b"GIF89a...") == "image/gif"
    assert image_mime(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert data_url(b"\x89PNG\r\n").startswith("data:image/png;base64,")


def test_concurrency_is_bounded_and_kept_full(server):
    server.handler = lambda body, headers, n: Reply(body=chat_response("ok"), delay=0.05)
    requests = [ChatRequest(messages=[{"role": "user", "content": f"q{i}"}], n=1)
                for i in range(24)]
    out = run(make(server, max_concurrency=4), requests)
    assert all(c[0].ok for c in out)
    assert server.max_in_flight == 4


def test_on_result_once_per_request_as_each_finishes(server):
    delays = {"slow": 0.4, "fast": 0.0}
    server.handler = lambda body, headers, n: Reply(
        body=chat_response(body["messages"][0]["content"]),
        delay=delays[body["messages"][0]["content"]])
    requests = [ChatRequest(messages=[{"role": "user", "content": w}], n=2)
                for w in ("slow", "fast")]
    order: list[int] = []
    out = run(make(server), requests, on_result=lambda i, comps: order.append(i))
    assert order == [1, 0]
    assert [[c.text for c in comps] for comps in out] == [["slow"] * 2, ["fast"] * 2]


def test_finish_reason_tokens_and_reasoning_content(server):
    body = chat_response("<answer>4</answer>", finish_reason="length", prompt_tokens=11,
                         completion_tokens=5)
    body["choices"][0]["message"]["reasoning_content"] = "2+2"
    server.handler = lambda b, h, n: Reply(body=body)
    comp = run(make(server), SAY)[0][0]
    assert (comp.finish_reason, comp.prompt_tokens, comp.completion_tokens) == ("length", 11, 5)
    assert comp.text == "<think>2+2</think><answer>4</answer>"


def test_reasoning_a_parser_cut_at_a_quoted_tag_is_put_back_whole(server):
    """vLLM's reasoning parser ends the reasoning at the first </think>, also one the model
    quotes: the rest of the reasoning arrives in the content, and nothing is lost."""
    from dualcurate.formats import split_trace

    written = ("<think>The prompt says to reason inside <think> and </think> tags. "
               "2 + 2 = 4.</think>\n<answer>4</answer>")
    reasoning, _, content = written[len("<think>"):].partition("</think>")
    body = chat_response(content)
    body["choices"][0]["message"]["reasoning_content"] = reasoning
    server.handler = lambda b, h, n: Reply(body=body)
    comp = run(make(server), SAY)[0][0]
    assert comp.text == written
    think, answer = split_trace(comp.text)[:2]
    assert "reason inside <think> and </think> tags. 2 + 2 = 4." in think and answer == "4"
    # a server that returns the whole text and the reasoning too is not doubled
    body = chat_response(written)
    body["choices"][0]["message"]["reasoning_content"] = "The prompt says ..."
    server.handler = lambda b, h, n: Reply(body=body)
    assert run(make(server), SAY)[0][0].text == written


def _flaky(first: Reply):
    def handler(body, headers, n):
        return first if n == 1 else Reply(body=chat_response("fine"))
    return handler


@pytest.mark.parametrize("first", [
    Reply(status=429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "0.3"}),
    Reply(status=503, body={"error": {"message": "overloaded"}}),
    Reply(status=500, body={"error": {"message": "boom"}}),
])
def test_retries_rate_limits_and_server_errors(server, first):
    server.handler = _flaky(first)
    started = time.monotonic()
    comp = run(make(server), SAY)[0][0]
    assert comp.ok and comp.text == "fine"
    assert server.count == 2
    if "Retry-After" in first.headers:
        assert time.monotonic() - started >= 0.3


def test_retries_timeouts(server):
    server.handler = lambda b, h, n: Reply(body=chat_response("late" if n == 1 else "fine"),
                                           delay=3.0 if n == 1 else 0.0)
    comp = run(make(server, timeout=0.5), SAY)[0][0]
    assert comp.ok and comp.text == "fine"
    assert server.count == 2


@pytest.mark.parametrize("status", [400, 401, 404])
def test_client_errors_are_not_retried(server, status):
    server.handler = lambda b, h, n: Reply(status=status, body={"error": {"message": "no"}})
    comp = run(make(server, max_retries=5), SAY)[0][0]
    assert not comp.ok
    assert f"HTTP {status}" in comp.error and "scripted-model" in comp.error
    assert server.count == 1


def test_retries_are_bounded(server):
    server.handler = lambda b, h, n: Reply(status=503, body={"error": {"message": "down"}})
    comp = run(make(server, max_retries=2), SAY)[0][0]
    assert not comp.ok and "after 2 retries" in comp.error
    assert server.count == 3


def test_api_key_is_sent_but_never_in_errors(server, monkeypatch):
    secret = "sk-test-9f8e7d6c5b4a"
    monkeypatch.setenv("MY_KEY", secret)
    # a hostile server that echoes the credentials back in its error
    server.handler = lambda b, h, n: Reply(
        status=401, body={"error": {"message": f"bad key {h.get('Authorization')}"}})
    engine = make(server, api_key_env="MY_KEY")
    comp = run(engine, SAY)[0][0]
    assert server.seen[0].headers["Authorization"] == f"Bearer {secret}"
    assert secret not in comp.error and "***" in comp.error
    assert secret not in repr(engine.config) and secret not in str(engine.identity())


def test_missing_key_for_the_openai_api_is_a_clear_error():
    engine = OpenAIEngine({"model": "gpt-x"})
    with pytest.raises(DualcurateError, match="OPENAI_API_KEY"):
        engine.setup()


def test_local_server_needs_no_key(server, http_client):
    assert run(make(server), SAY)[0][0].ok
    expected = "Bearer EMPTY" if http_client == "openai-sdk" else None  # the SDK insists on one
    assert server.seen[0].headers.get("Authorization") == expected


def test_identity_names_the_endpoint(server):
    ident = make(server).identity()
    assert ident == {"model": "scripted-model", "revision": None, "endpoint": server.base_url}


def test_on_result_errors_propagate(server):
    def explode(i, comps):
        raise RuntimeError("cache is full")

    with pytest.raises(RuntimeError, match="cache is full"):
        run(make(server), SAY, on_result=explode)


def test_api_key_env_must_be_a_variable_name_and_is_never_echoed():
    from pydantic import ValidationError

    secret = "sk-proj-abcdef0123456789"
    with pytest.raises(ValidationError) as info:
        OpenAIEngine({"model": "m", "api_key_env": secret})
    assert "NAME of an environment variable" in str(info.value)
    assert all(secret not in str(err["msg"]) for err in info.value.errors())
    assert OpenAIEngine({"model": "m", "api_key_env": "MY_TEAM_KEY_2"}).config.api_key_env


def test_a_dropped_connection_is_reported_as_one():
    """A server that closes every connection without answering: retried, then reported as
    a connection error (the SDK's transport calls it a timeout; the engine looks deeper)."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def drop_all() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.recv(65536)
            conn.close()

    thread = threading.Thread(target=drop_all, daemon=True)
    thread.start()
    try:
        engine = OpenAIEngine({"model": "m", "base_url": f"http://127.0.0.1:"
                               f"{listener.getsockname()[1]}/v1", "max_retries": 1,
                               "backoff_initial": 0.01, "timeout": 5, **TRANSPORT})
        comp = run(engine, SAY)[0][0]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
    assert not comp.ok
    assert "connection error" in comp.error and "timed out" not in comp.error
    assert "after 1 retries" in comp.error
