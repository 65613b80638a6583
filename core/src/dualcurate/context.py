"""What a stage gets while it runs: the run store, the request cache, the plugin host, a
progress reporter and helpers to build engines and other stages by registered name."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dualcurate.cache import GenerationStats, RequestCache, generate_cached
from dualcurate.chat import ChatRequest, Completion
from dualcurate.engine import Engine
from dualcurate.fingerprint import canonical_json
from dualcurate.plugins import PluginHost
from dualcurate.progress import NullProgress, StageProgress
from dualcurate.sampling import SamplingParams
from dualcurate.store import ImageStore, RunStore
from dualcurate.window import GenerationWindow

if TYPE_CHECKING:
    from dualcurate.recipe import ComponentRef
    from dualcurate.stages import Stage


@dataclass
class StageContext:
    """Per-stage runtime services. ``ephemeral()`` makes one for library use (temp dir).

    The streaming executor gives each shard in flight its own view (:meth:`for_shard`): the
    same store, cache, engines and progress, its own ``stats`` (adding into the stage's) and
    the ``shard`` it works on, reported to the executor's generation ``window``."""

    stage_name: str
    workdir: Path
    store: RunStore | None = None
    cache: RequestCache | None = None
    host: PluginHost | None = None
    seed: int = 0
    progress: StageProgress = field(default_factory=NullProgress)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("dualcurate"))
    #: the run's ``[run] strict`` (``curate run --strict``): fail where a stage would warn
    strict: bool = False
    stats: GenerationStats = field(default_factory=GenerationStats)
    window: GenerationWindow | None = None
    shard: int | None = None
    _engines: dict[str, Engine] = field(default_factory=dict)
    _engines_lock: threading.Lock = field(default_factory=threading.Lock)

    def for_shard(self, shard: int, window: GenerationWindow | None = None) -> StageContext:
        """This context as seen by the thread working on ``shard``."""
        return dataclasses.replace(self, shard=shard, window=window or self.window,
                                   stats=GenerationStats(parent=self.stats))

    @property
    def images(self) -> ImageStore | None:
        return self.store.images if self.store is not None else None

    @classmethod
    def ephemeral(cls, stage_name: str = "stage", root: str | Path | None = None,
                  host: PluginHost | None = None, seed: int = 0) -> StageContext:
        """A context backed by a fresh run store in a temporary directory."""
        root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="dualcurate-"))
        store = RunStore(root)
        return cls(stage_name=stage_name, workdir=store.artifacts_dir(stage_name), store=store,
                   cache=RequestCache(root / "cache.sqlite"), host=host, seed=seed)

    # engines --------------------------------------------------------------------------------
    def engine(self, name: str, config: dict[str, Any],
               cls: type[Engine] | None = None) -> Engine:
        """An engine by registered name (or built from ``cls``, the class a reference
        resolved to), set up once and reused for the rest of the stage."""
        key = name + canonical_json(config)
        with self._engines_lock:  # shards in flight share one engine
            if key not in self._engines:
                if cls is None:
                    if self.host is None:
                        self.host = PluginHost()
                    cls = self.host.get("engine", name)
                engine = cls(config)
                engine.setup(self)
                self._engines[key] = engine
            return self._engines[key]

    def generate(self, engine: Engine, requests: Sequence[ChatRequest],
                 sampling: SamplingParams) -> list[list[Completion]]:
        """Generate through the run's request cache, reporting progress."""
        return generate_cached(engine, requests, sampling, self.cache, self.progress, self.stats,
                               self.window, self.shard)

    def resolve(self, ref: ComponentRef) -> type:
        """The class a component reference names (``engine = { use = ... }``): the one
        ``curate validate`` resolved, else resolved now against this context's plugin host
        (a default one in library use), its plugin's entry point loaded on first need."""
        if ref.resolved is not None:
            return ref.resolved
        if self.host is None:
            self.host = PluginHost()
        return ref.resolve(self.host)

    def make_stage(self, kind: str, name: str, config: dict[str, Any] | None = None) -> Stage:
        """Another stage by registered name (an efficacy judge building its trainer, say)."""
        if self.host is None:
            self.host = PluginHost()
        return self.host.get(kind, name)(config or {})

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()


#: The verifier that scorers (difficulty rollouts, rewards, Dual Tuning's evaluation) use when
#: the recipe has no verifier stage.
DEFAULT_VERIFIER = "rule-verify"


def recipe_verifier(ctx: StageContext | None) -> tuple[str, dict[str, Any]]:
    """The recipe's verifier: the plugin and options of the run's last verifier stage, as the
    run's manifest records it (``--plugin`` swaps included), else ``rule-verify`` with its
    defaults. Scorers build it with ``ctx.make_stage("verifier", name, options)``, so every
    verdict in a run comes from one configured verifier."""
    store = getattr(ctx, "store", None)
    recipe = (getattr(store, "manifest", None) or {}).get("recipe") or {}
    found: dict[str, Any] | None = None
    for spec in recipe.values():
        if isinstance(spec, dict) and spec.get("kind") == "verifier" and spec.get("use"):
            found = spec
    if found is None:
        return DEFAULT_VERIFIER, {}
    return str(found["use"]), {k: v for k, v in found.items() if k not in ("kind", "use")}
