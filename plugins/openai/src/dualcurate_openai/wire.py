"""What the ``openai`` engine's two modes share, online (:mod:`dualcurate_openai.engine`) and
batch (:mod:`dualcurate_openai.batch`): the request bodies (:class:`Wire`: the sampling
fields, the jobs a request's samples become, images as data URLs, whether the server takes
``n``, the answers parsed into completions, errors), and the thread that hands results to a
``generate`` call's ``on_result`` (:class:`Reporter`). Neither mode imports the other's
internals: both use these public names.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from dualcurate.chat import ChatRequest, Completion, OnResult, map_image_parts
from dualcurate.errors import DualcurateError
from dualcurate.formats import THINK_OPEN, render_think
from dualcurate.sampling import SamplingParams
from dualcurate.store import image_data_url
from dualcurate_openai.retry import redact

if TYPE_CHECKING:
    from dualcurate_openai.engine import OpenAIEngineConfig

OPENAI_API = "https://api.openai.com/v1"
#: How many images' data URLs are kept (the k samples of a row reuse them; memory bounded).
IMAGE_URLS_KEPT = 64


def data_url(data: bytes) -> str:
    """A ``data:`` URL holding the image bytes, as chat APIs accept them."""
    return image_data_url(data, default="image/png")


class Job:
    """One HTTP request (or batch line): ``count`` consecutive samples of request ``ri``
    starting at list position ``pos`` (sample index ``first``)."""

    __slots__ = ("count", "first", "pos", "ri")

    def __init__(self, ri: int, pos: int, first: int, count: int):
        self.ri, self.pos, self.first, self.count = ri, pos, first, count

    def singles(self, start: int = 0) -> list[Job]:
        """This job's samples from ``start`` on, one job each."""
        return [Job(self.ri, self.pos + i, self.first + i, 1) for i in range(start, self.count)]


class Wire:
    """The request bodies of one engine and what it learnt of its server: ``n_supported``
    (None: not known yet; decided by the first ``n > 1`` request) and ``api_key`` (set by the
    engine's setup; redacted from every error)."""

    def __init__(self, config: OpenAIEngineConfig, image_bytes: Callable[[str], bytes]):
        self.config = config
        self.image_bytes = image_bytes
        self.api_key: str | None = None
        self.n_supported: bool | None = False if config.n_per_request == "never" else None
        self._images: OrderedDict[str, str] = OrderedDict()

    def endpoint(self) -> str:
        """The server's base URL: ``base_url``, else $OPENAI_BASE_URL, else the OpenAI API."""
        return (self.config.base_url or os.environ.get("OPENAI_BASE_URL")
                or OPENAI_API).rstrip("/")

    # request bodies -----------------------------------------------------------------------
    def base_kwargs(self, sampling: SamplingParams) -> dict[str, Any]:
        """The request body's fields shared by every sample: every sampling setting stated
        (see ``sampling_dialect``), then the engine-specific extras."""
        config = self.config
        kwargs: dict[str, Any] = {"model": config.model,
                                  "temperature": sampling.temperature, "top_p": sampling.top_p,
                                  config.token_limit_param: sampling.max_tokens}
        if sampling.stop:
            kwargs["stop"] = sampling.stop
        extra = dict(sampling.extra)  # server-specific options (chat_template_kwargs...)
        beyond = {"top_k": sampling.top_k, "min_p": sampling.min_p,
                  "repetition_penalty": sampling.repetition_penalty}
        dialect = config.sampling_dialect
        if dialect == "vllm":
            kwargs.update(beyond)
        elif dialect == "transformers":
            given = extra.pop("generation_config", None) or {}
            if isinstance(given, str):
                given = json.loads(given)
            clash = sorted(set(given) & {*beyond, "do_sample", "temperature", "top_p"})
            if clash:
                raise DualcurateError(
                    f"engine openai: sampling_extra.generation_config sets {', '.join(clash)}: "
                    f"set them as sampling options of their own")
            kwargs["generation_config"] = json.dumps(
                {**given, "do_sample": sampling.temperature > 0, **beyond}, sort_keys=True)
        else:
            asked = {k: v for k, v in beyond.items()
                     if v != SamplingParams.model_fields[k].default}
            if asked:
                raise DualcurateError(
                    f"engine openai: sampling_dialect = 'openai' sends only the OpenAI "
                    f"schema's sampling fields, so the server would not apply "
                    f"{', '.join(f'{k}={v}' for k, v in sorted(asked.items()))}; leave them "
                    f"at their defaults, or set sampling_dialect = 'vllm' or 'transformers' "
                    f"for a server that takes them")
        kwargs.update(extra)
        return kwargs

    @staticmethod
    def body(messages: list[dict[str, Any]], base: dict[str, Any], seed: int | None,
             n: int) -> dict[str, Any]:
        """One request's body: the shared fields, its (converted) messages, seed and ``n``."""
        body = dict(base, messages=messages)
        if seed is not None:
            body["seed"] = seed
        if n > 1:
            body["n"] = n
        return body

    def jobs(self, ri: int, request: ChatRequest) -> Iterator[Job]:
        """The HTTP requests for one request's samples: runs of consecutive sample indices
        (their seeds are consecutive too), each at most ``max_concurrency`` samples, or one
        request per sample where the server does not take ``n``."""
        indices = request.indices()
        single = self.n_supported is False or (
            self.config.n_per_request == "auto" and not request.image_hashes())
        limit = 1 if single else self.config.max_concurrency
        pos = 0
        while pos < len(indices):
            count = 1
            while (count < limit and pos + count < len(indices)
                   and indices[pos + count] == indices[pos] + count):
                count += 1
            yield Job(ri, pos, indices[pos], count)
            pos += count

    def convert(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Chat messages with image hashes replaced by data URLs read from the image store."""
        return map_image_parts(messages, lambda digest: {
            "type": "image_url", "image_url": {"url": self._image_url(digest)}})

    def _image_url(self, digest: str) -> str:
        url = self._images.get(digest)
        if url is None:
            url = data_url(self.image_bytes(digest))
            self._images[digest] = url
            if len(self._images) > IMAGE_URLS_KEPT:
                self._images.popitem(last=False)
        else:
            self._images.move_to_end(digest)
        return url

    def forget_images(self) -> None:
        self._images.clear()

    # whether the server takes n -------------------------------------------------------------
    def settle(self, job: Job, answered: list[Completion]) -> tuple[list[Completion], list[Job]]:
        """A job's answers as kept, and the jobs still to send: a server that answered fewer
        choices than asked ignores ``n`` (the first sample is kept, the rest go singly); one
        that answered them all takes it."""
        if len(answered) < job.count and answered and answered[0].ok:
            self.n_supported = False
            return answered[:1], job.singles(1)
        if job.count > 1 and answered and answered[0].ok:
            self.n_supported = True
        return answered, []

    def refuses_n(self, n: int, status: int) -> bool:
        """Whether an HTTP ``status`` for a request of ``n`` samples says the server refuses
        ``n`` (its samples are then asked for singly)."""
        return n > 1 and status in (400, 422) and self.n_supported is not True

    # answers ------------------------------------------------------------------------------
    def error(self, message: str, retries: int) -> str:
        """An error completion's text: the model and server, the message, the retries; the
        API key never shows."""
        text = (f"openai engine, model {self.config.model} at {self.endpoint()}: {message}"
                f"{f' (after {retries} retries)' if retries else ''}")
        return redact(text, self.api_key)

    @classmethod
    def completions(cls, response: Any, n: int) -> list[Completion]:
        """The completions of a chat.completion JSON object, by choice index (at most ``n``;
        fewer when the server ignored ``n``)."""
        if not isinstance(response, dict) or not response.get("choices"):
            return [Completion(error=f"server returned no choices: {str(response)[:200]}")] * n
        choices = sorted(response["choices"], key=lambda c: c.get("index") or 0)[:n]
        usage = response.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        total = int(usage.get("completion_tokens") or 0)
        out = [cls.completion(choice, prompt_tokens) for choice in choices]
        if len(out) == 1:
            out[0].completion_tokens = total
        else:  # usage is per request: share it out where the server gives no per-choice count
            for comp in out:
                comp.completion_tokens = max(total // len(out), 1) if total else 0
        return out

    @staticmethod
    def completion(choice: dict[str, Any], prompt_tokens: int) -> Completion:
        """One choice as a completion."""
        message = choice.get("message") or {}
        text = message.get("content") or ""
        # Servers with a reasoning parser (vLLM, SGLang) split the think block off, at the
        # first </think>: when the reasoning quoted the tag, the content goes on with the
        # rest of the reasoning and the real </think>. Putting the two back together gives
        # the response as written (dualcurate.formats reads quoted tags as reasoning); only a
        # content that opens a think block of its own already holds its reasoning.
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if reasoning and not text.lstrip().startswith(THINK_OPEN):
            text = render_think(reasoning, text)
        return Completion(text=text, finish_reason=choice.get("finish_reason") or "stop",
                          prompt_tokens=prompt_tokens)


class Call:
    """One generate() call: its callback, the first error the callback raised, and an event
    set once every result of the call was reported."""

    def __init__(self, on_result: OnResult | None):
        self.on_result = on_result
        # generate_cached's callback takes a request's samples as they arrive (positions)
        self.partial = bool(getattr(on_result, "accepts_partial", False))
        self.error: BaseException | None = None
        self.drained = threading.Event()


class Reporter:
    """The reporter thread: runs ``on_result`` callbacks (which write the request cache) off
    the event loop, in the order results arrived."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="dualcurate-openai-report")
        self._thread.start()

    def stop(self) -> None:
        """Report what is queued, then end the thread."""
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._thread = None

    def report(self, call: Call, index: int, completions: list[Completion],
               positions: list[int] | None = None,
               release: Callable[[], Any] | None = None) -> None:
        """Hand request ``index``'s completions (at list ``positions``: a part of its samples)
        to the call's ``on_result``, then call ``release``."""
        self._queue.put((call, index, completions, positions, release))

    def drained(self, call: Call) -> None:
        """Set ``call.drained`` once everything reported before this is handed on."""
        self._queue.put((call, -1, [], None, None))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            call, index, completions, positions, release = item
            if index < 0:
                call.drained.set()
            elif call.error is None:
                try:
                    if positions is None:
                        call.on_result(index, completions)  # type: ignore[misc]
                    else:
                        call.on_result(index, completions, positions)  # type: ignore[misc]
                except BaseException as exc:  # raised in generate(), in the caller's thread
                    call.error = exc
            if release is not None:  # the samples' slots free once their answers are kept
                release()
