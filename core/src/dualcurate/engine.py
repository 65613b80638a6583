"""The Engine interface (hf, vllm, openai implement it), the options every engine takes, and an
engine's identity: everything about it that can change what it generates.

Engines are fed, not called once per shard. The streaming executor runs several shards at once,
each in its own thread, so ``generate`` is called from several threads: an engine that sets
``concurrent_generate = True`` shares one capacity (``capacity()`` samples at once) across
every call and starts a request of one call as soon as a request of another finishes; an
engine that leaves it False is called one call at a time (correct, but it drains at every
call boundary). Calls go through :func:`dualcurate.cache.generate_cached`, which sends an
engine only what the request cache does not hold.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import model_validator

from dualcurate.chat import ChatRequest, Completion, ImageResolver, OnResult
from dualcurate.errors import DualcurateError
from dualcurate.fingerprint import model_fingerprint
from dualcurate.recipe import StageConfig, code_versions, coerce_config
from dualcurate.sampling import SamplingParams

if TYPE_CHECKING:
    from dualcurate.context import StageContext


class EngineConfig(StageConfig):
    """Common engine options. ``model`` is a hub id or a local directory."""

    model: str
    revision: str | None = None


COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


class LocalModelConfig(EngineConfig):
    """Options of engines that load weights in this process (hf, vllm).

    ``trust_remote_code`` runs code shipped with the model, so it is refused unless
    ``revision`` pins a commit (40 hex digits) or the model is a local directory: the code that
    runs can then not change under you."""

    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _remote_code_needs_a_pin(self) -> LocalModelConfig:
        if self.trust_remote_code and not Path(self.model).expanduser().is_dir() and not (
                self.revision and COMMIT_RE.match(self.revision)):
            raise ValueError(
                f"trust_remote_code=true for {self.model!r} needs revision set to a commit "
                f"hash (40 hex digits), so the code that runs cannot change under you; pin "
                f"one, or set trust_remote_code=false")
        return self


class Engine:
    """Base class for generation backends."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "engine"
    Config: ClassVar[type[EngineConfig]] = EngineConfig
    #: True when ``generate`` may be called from several threads at once and keeps the model
    #: fed across calls (one capacity shared by all of them). False: core calls it one call
    #: at a time.
    concurrent_generate: ClassVar[bool] = False

    def __init__(self, config: EngineConfig | dict[str, Any] | None = None, **kwargs: Any):
        self.config = coerce_config(self.Config, config, kwargs)
        self.resolve_image: ImageResolver | None = None

    @classmethod
    def preflight_config(cls, config: EngineConfig) -> list[str]:
        """Problems with running this engine with ``config`` found before anything runs (a
        backend library not installed, say); checked by ``curate validate`` wherever a
        stage names the engine. Each message says what to do."""
        return []

    def capacity(self) -> int:
        """How many samples the engine works on at once (requests in flight to a server,
        sequences in a vLLM batch, rows in an hf batch). The streaming executor keeps up to
        ``depth`` (3 by default) times this many samples handed to the engine, so it never
        runs dry between shards."""
        for option in ("max_concurrency", "max_num_seqs", "batch_size"):
            value = getattr(self.config, option, None)
            if isinstance(value, int) and value > 0:
                return value
        return 1

    def identity(self) -> dict[str, Any]:
        """What, beyond the request, determines the output: part of every cache key. Core adds
        every option of ``Config`` not declared in ``runtime_fields``, the version of the
        engine's code and, for a model loaded in this process (no ``endpoint``), the model's
        content fingerprint (:func:`engine_identity`); engines override this only to add
        what their Config does not hold."""
        return {"model": self.config.model, "revision": self.config.revision, "endpoint": None}

    def setup(self, ctx: StageContext | None = None, resolve_image: ImageResolver | None = None) -> None:
        """Load the model / open the client. Called once per worker."""
        engine_identity(self)  # fingerprint the weights before they are loaded
        if resolve_image is not None:
            self.resolve_image = resolve_image
        elif ctx is not None and ctx.images is not None:
            self.resolve_image = ctx.images.get

    def image_bytes(self, digest: str) -> bytes:
        """The bytes of an image part's hash, from the resolver given at ``setup``."""
        if self.resolve_image is None:
            raise DualcurateError(f"engine {self.name}: a request has an image but no image "
                                  f"store was given; call setup(ctx) with a run context")
        return self.resolve_image(digest)

    def generate(self, requests: Sequence[ChatRequest], sampling: SamplingParams,
                 on_result: OnResult | None = None) -> list[list[Completion]]:
        """Answer every request with ``request.n`` completions, aligned with ``requests``.
        Calls ``on_result(i, completions)`` as each request finishes (any order)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the model / client."""



def engine_identity(engine: Engine) -> dict[str, Any]:
    """Everything about an engine that can change its outputs, computed once per engine
    instance: its ``identity()``, every Config option not in ``runtime_fields`` (dtype,
    quantization, max_model_len, chat template, llm_kwargs...) under ``options``, the
    version of the engine's code under ``code`` (:func:`~dualcurate.recipe.code_versions`:
    its distribution's version, with a hash of its source files when installed editable, so
    an engine edited in place or upgraded is not answered from what the old code generated),
    and for a model run in this process (no endpoint) its fingerprint under ``weights``: a
    local folder by the content of its files, a hub id by the commit it resolves to in the
    local cache."""
    memo = engine.__dict__.get("_dualcurate_identity")
    if memo is not None:
        return memo

    ident = dict(engine.identity())
    config = engine.config
    runtime = set(type(config).runtime_fields) | {"model", "revision"}
    ident.setdefault("options", config.model_dump(mode="json", exclude=runtime))
    ident["code"] = code_versions(type(engine))
    model = ident.get("model")
    if model and ident.get("endpoint") is None and "weights" not in ident:
        ident["weights"] = model_fingerprint(str(model), ident.get("revision"))
    engine.__dict__["_dualcurate_identity"] = ident
    return ident

