"""The teacher distiller (``teacher``), independent of the engine that runs the teacher.

A teacher model gets each row's image(s) and question in a prompt (by default MMFineReason's
four-phase prompt, ``prompts/four_phase.jinja``) and writes ``samples_per_question`` responses.
Each response becomes a trace: full text, reasoning (inside ``<think>``), final answer (inside
``<answer>`` after the think block), finish reason, token counts, model and engine. Every
request goes through the run's request cache (``ctx.generate``), so a rerun pays only for what
is missing. An optional caption pass fills ``caption`` from an instruct model first.

The engine is an option, a typed reference resolved and validated by ``curate validate``::

    [distill]
    use = "teacher"
    engine = { use = "vllm", model = "Qwen/Qwen3-VL-235B-A22B-Thinking", tensor_parallel_size = 8 }

``hf-distill``, ``openai-distill`` and ``vllm-distill`` are this class with a default engine
(``default_engine``): ``engine = { model = ... }`` without ``use`` runs that engine.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import jinja2
from pydantic import Field, ValidationError, field_validator, model_validator

from dualcurate.chat import ChatRequest, Completion
from dualcurate.engine import Engine, LocalModelConfig
from dualcurate.errors import DualcurateError, UnknownComponentError
from dualcurate.fingerprint import canonical_json
from dualcurate.formats import (
    load_template,
    make_trace,
    render_template,
    strip_reasoning,
    template_problems,
    user_messages,
)
from dualcurate.recipe import EngineRef
from dualcurate.sampling import SamplingOptions, SamplingParams
from dualcurate.stages import Distiller, Row, StageConfig

if TYPE_CHECKING:
    from dualcurate.context import StageContext

DEFAULT_TEMPLATE = "four_phase.jinja"
DEFAULT_CAPTION_TEMPLATE = "caption.jinja"


class TeacherConfig(StageConfig, SamplingOptions):
    """Options of a teacher distiller.

    ``engine``: the engine that runs the teacher, with its options (``model`` at least):
    ``engine = { use = "vllm", model = "..." }`` (a distiller with a default engine fills
    ``use``). Sampling:
    ``temperature``, ``top_p``, ``top_k`` (0: every token), ``min_p``,
    ``repetition_penalty``, ``max_tokens``, ``seed`` (None: the run's seed), ``stop`` — each
    applied as given, whatever the checkpoint's generation config says — and
    ``sampling_extra`` (engine-specific, e.g. ``chat_template_kwargs``). ``template``: the user prompt, a Jinja
    file or text (:mod:`dualcurate.formats`; default: the four-phase prompt); ``system_prompt``: an optional system
    message. Both are part of the rendered request and so of the cache key.
    ``include_caption`` shows the teacher the row's caption too; ``include_images = false``
    leaves the images out of the request (a text-only teacher reading captions; the rows keep
    their images). ``splits`` limits distillation to rows of those splits (e.g.
    ``["train"]``); other rows pass through without requests. The caption pass
    (``caption_enabled``) asks ``caption_engine`` (default: ``engine``; without ``use``, the
    teacher's engine kind) for a dense caption of each row with images and no caption yet. Runtime only (not in the signature):
    the engines' own runtime options (``batch_size``, ``max_concurrency``...).
    """

    #: the engine a distiller class runs when the recipe names none (``vllm-distill``: vllm)
    default_engine: ClassVar[str | None] = None

    engine: EngineRef
    samples_per_question: int = Field(1, ge=1)
    top_p: float = Field(0.95, gt=0.0, le=1.0)  # the sampling options' defaults but these two
    max_tokens: int = Field(16384, ge=1)
    seed: int | None = None
    stop: list[str] | None = None
    sampling_extra: dict[str, Any] = {}
    template: str | None = None
    system_prompt: str | None = None
    include_caption: bool = False
    include_images: bool = True
    splits: list[str] | None = None
    caption_enabled: bool = False
    caption_template: str | None = None
    caption_engine: EngineRef | None = None
    caption_max_tokens: int = Field(1024, ge=1)
    caption_temperature: float = Field(0.0, ge=0.0)
    caption_overwrite: bool = False
    @model_validator(mode="before")
    @classmethod
    def _default_engine(cls, data: Any) -> Any:
        """A distiller with a default engine fills a missing ``use`` (``engine = { model =
        ... }``); ``caption_engine`` without ``use`` runs the teacher's engine kind."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        engine = data.get("engine")
        if cls.default_engine is not None:
            if engine is None:
                engine = data["engine"] = {"use": cls.default_engine}
            elif isinstance(engine, dict):
                engine = data["engine"] = {"use": cls.default_engine, **engine}
        caption = data.get("caption_engine")
        if isinstance(caption, dict) and "use" not in caption:
            use = engine.get("use") if isinstance(engine, dict) else getattr(engine, "use", engine)
            if isinstance(use, str):
                data["caption_engine"] = {"use": use, **caption}
        return data

    @field_validator("template", "caption_template")
    @classmethod
    def _template_ok(cls, value: str | None) -> str | None:
        problems = template_problems(value)
        if problems:
            raise ValueError("; ".join(problems))
        return value


class EngineSwitch:
    """Holds at most one engine of several that cannot share the accelerator (a caption model
    and the teacher, each loading weights in this process): :meth:`acquire` for another
    engine waits until no call uses the current one, closes it, then builds the new one.

    The current engine is kept while anyone uses it, so the shards in flight caption
    together, then all wait for the teacher, which loads once for all of them (the streaming
    executor's ``max_shards_in_flight`` bounds how many shards one load serves; the sequential
    executor switches twice per shard)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._key: str | None = None
        self._engine: Engine | None = None
        self._users = 0
        self._switching = False
        #: how many times an engine was built (for tests and logs)
        self.builds: collections.Counter[str] = collections.Counter()

    def acquire(self, key: str, build: Callable[[], Engine]) -> Engine:
        """The engine ``key`` names, built by ``build()`` unless it is the current one; pair
        with :meth:`release`."""
        with self._cond:
            while self._switching or (self._key not in (None, key) and self._users):
                self._cond.wait()
            self._users += 1
            if self._key == key:
                assert self._engine is not None
                return self._engine
            old, self._engine, self._key = self._engine, None, key
            self._switching = True
        engine: Engine | None = None
        try:
            if old is not None:
                old.close()  # before the next one loads: the two never hold memory together
            engine = build()
            self.builds[key] += 1
            return engine
        finally:
            with self._cond:
                self._switching = False
                self._engine = engine
                if engine is None:  # the build failed: nothing is current
                    self._key = None
                    self._users -= 1
                self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self._users -= 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            engine, self._engine, self._key = self._engine, None, None
        if engine is not None:
            engine.close()


class TeacherDistiller(Distiller):
    """Distils k reasoning traces per row from a teacher model behind any engine, registered
    as ``teacher``: ``engine = { use = "...", ...options }`` says which.

    Subclasses set ``default_engine`` (the registered engine name used when the recipe names
    none) and may give ``engine_class()`` (used when the plugin host does not know that name,
    e.g. a test host without the engine's plugin)."""

    name: ClassVar[str] = "teacher"
    default_engine: ClassVar[str | None] = None
    Config: ClassVar[type[StageConfig]] = TeacherConfig
    requires = ("id", "question", "images")
    provides = ("traces", "n_traces")
    generates = True
    config: TeacherConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "default_engine" in cls.__dict__ and "Config" not in cls.__dict__:
            cls.Config = type(f"{cls.__name__}Config", (TeacherConfig,), {
                "__module__": cls.__module__, "__doc__": TeacherConfig.__doc__,
                "default_engine": cls.default_engine})

    def __init__(self, config: TeacherConfig | dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        self._template = load_template(self.config.template, DEFAULT_TEMPLATE)
        self._caption_template = load_template(self.config.caption_template,
                                               DEFAULT_CAPTION_TEMPLATE)
        self._switch = EngineSwitch()  # caption and teacher engines that take turns
        self._take_turns: bool | None = None
        for ref in (self.config.engine, self.config.caption_engine):
            # the default engine is known without a plugin host (its runtime options then
            # stay out of the signature in library use too)
            if ref is not None and ref.resolved is None and ref.use == self.default_engine:
                ref._resolved = self.engine_class()

    # engine ---------------------------------------------------------------------------------
    @classmethod
    def engine_class(cls) -> type[Engine] | None:
        """The default engine's class (imported lazily by subclasses), for hosts that do not
        register it."""
        return None

    def _engine(self, ctx: StageContext, ref: EngineRef) -> Engine:
        """The run's engine for ``ref`` (``ctx.engine``: one per stage, shared by the shards
        in flight)."""
        cls = self._engine_class(ctx, ref)
        try:
            return ctx.engine(ref.use, ref.options, cls)
        except ValidationError as exc:
            raise DualcurateError(f"{self.name}: engine {ref.use!r}: options do not "
                                  f"validate: {exc}") from exc

    def _engine_class(self, ctx: StageContext, ref: EngineRef) -> type[Engine]:
        try:
            return ctx.resolve(ref)
        except UnknownComponentError:
            cls = self.engine_class() if ref.use == self.default_engine else None
            if cls is None:
                raise
            return cls

    def engines_take_turns(self, ctx: StageContext) -> bool:
        """True when the caption pass runs its own engine and both it and the teacher's
        engine load weights in this process (``LocalModelConfig``: vllm, hf): then the two
        take turns (:class:`EngineSwitch`), one closed before the other is built, instead of
        both holding the accelerator (two vLLM engines at 0.9 memory utilisation each)."""
        if self._take_turns is None:
            cfg = self.config
            caption = cfg.caption_engine
            self._take_turns = bool(
                cfg.caption_enabled and caption is not None
                and caption.use + canonical_json(caption.options)
                != cfg.engine.use + canonical_json(cfg.engine.options)
                and all(issubclass(getattr(self._engine_class(ctx, ref), "Config", object),
                                   LocalModelConfig) for ref in (caption, cfg.engine)))
        return self._take_turns

    @contextmanager
    def using(self, ctx: StageContext, ref: EngineRef) -> Iterator[Engine]:
        """The engine ``ref`` names, for one pass over a shard's rows (see
        :meth:`engines_take_turns`)."""
        if not self.engines_take_turns(ctx):
            yield self._engine(ctx, ref)
            return

        def build() -> Engine:
            cls = self._engine_class(ctx, ref)
            try:
                engine = cls(ref.options)
            except ValidationError as exc:
                raise DualcurateError(f"{self.name}: engine {ref.use!r}: options do not "
                                      f"validate: {exc}") from exc
            ctx.log.info("%s: loading engine %s (%s); the caption and teacher engines take "
                         "turns", ctx.stage_name, ref.use, ref.options.get("model"))
            engine.setup(ctx)
            return engine

        engine = self._switch.acquire(ref.use + canonical_json(ref.options), build)
        try:
            yield engine
        finally:
            self._switch.release()

    # lifecycle ------------------------------------------------------------------------------
    def setup(self, ctx: StageContext) -> None:
        # The pipeline counts rows; announce the requests still to come so done/total and
        # the ETA cover them (one request per row, two with the caption pass).
        remaining = max(ctx.progress.total - ctx.progress.done, 0)
        ctx.progress.reserve(remaining * (2 if self.config.caption_enabled else 1))

    def teardown(self) -> None:
        self._switch.close()

    # prompts --------------------------------------------------------------------------------
    def sampling(self, ctx: StageContext) -> SamplingParams:
        cfg = self.config
        return cfg.sampling_params(cfg.seed if cfg.seed is not None else ctx.seed, cfg.stop,
                                   cfg.sampling_extra)

    def messages(self, row: Row, template: jinja2.Template | None = None,
                 system: bool = True) -> list[dict[str, Any]]:
        """The chat messages for one row: optional system prompt, then the user turn with the
        row's images (by hash) followed by the rendered prompt."""
        cfg = self.config
        text = render_template(template or self._template, row, cfg.include_caption)
        return user_messages(text, (row.get("images") or []) if cfg.include_images else [],
                             cfg.system_prompt if system else None)

    # the stage ------------------------------------------------------------------------------
    def process(self, rows: list[Row], ctx: StageContext) -> list[Row]:
        rows = [dict(r) for r in rows]
        if self.config.caption_enabled:
            self._caption(rows, ctx)
        splits = self.config.splits
        todo = [r for r in rows if splits is None or r.get("split") in splits]
        ctx.progress.release(len(rows) - len(todo))  # reserved in setup, one per row
        if not todo:
            return rows
        k = self.config.samples_per_question
        with self.using(ctx, self.config.engine) as engine:
            requests, results = self._generate_rows(
                ctx, engine, todo, self.sampling(ctx),
                lambda row: ChatRequest(messages=self.messages(row), n=k,
                                        request_id=str(row.get("id"))))
            model = str(engine.identity().get("model") or "")
            engine_name = engine.name
        errors = truncated = 0
        for row, request, completions in zip(todo, requests, results, strict=True):
            traces = [make_trace(c, idx, model, engine_name)
                      for idx, c in zip(request.indices(), completions, strict=True)]
            row["traces"] = traces
            row["n_traces"] = sum(1 for t in traces if t["error"] is None)
            errors += sum(1 for t in traces if t["error"] is not None)
            truncated += sum(1 for t in traces if t["truncated"])
        if errors or truncated:
            ctx.log.warning("%s: %d of %d traces failed (retried on the next run), %d truncated "
                            "at max_tokens=%d (kept, marked truncated)", ctx.stage_name, errors,
                            len(todo) * k, truncated, self.config.max_tokens)
        return rows

    @staticmethod
    def _generate_rows(ctx: StageContext, engine: Engine, rows: list[Row],
                       sampling: SamplingParams, make_request: Callable[[Row], ChatRequest],
                       ) -> tuple[list[ChatRequest], list[list[Completion]]]:
        """One request per row, generated through the run's cache in one call: the streaming
        executor's shard window keeps the engine fed across shards and the engine's own
        admission (``max_concurrency``, ``batch_size``) decides how many are in flight."""
        requests = [make_request(r) for r in rows]
        return requests, ctx.generate(engine, requests, sampling)

    def _caption(self, rows: list[Row], ctx: StageContext) -> None:
        cfg = self.config
        todo = [r for r in rows if r.get("images") and (cfg.caption_overwrite or not r.get("caption"))]
        ctx.progress.release(len(rows) - len(todo))  # reserved in setup, one per row
        if not todo:
            return
        sampling = SamplingParams(temperature=cfg.caption_temperature, top_p=1.0,
                                  max_tokens=cfg.caption_max_tokens,
                                  seed=cfg.seed if cfg.seed is not None else ctx.seed)
        with self.using(ctx, cfg.caption_engine or cfg.engine) as engine:
            _, results = self._generate_rows(
                ctx, engine, todo, sampling,
                lambda r: ChatRequest(messages=self.messages(r, self._caption_template,
                                                              system=False),
                                      n=1, request_id=f"caption:{r.get('id')}"))
        failed = 0
        for row, completions in zip(todo, results, strict=True):
            if completions and completions[0].ok:
                row["caption"] = strip_reasoning(completions[0].text)
            else:
                failed += 1
        if failed:
            ctx.log.warning("%s: %d of %d captions failed; those rows keep their caption and "
                            "are retried on the next run", ctx.stage_name, failed, len(todo))
