"""The flow every TRL trainer stage shares: rows → training examples → TRL trainer (here or
under ``accelerate launch``) → model directory, log and curve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from dualcurate import StageResult, Trainer
from dualcurate_trl.checkpoints import resume_checkpoint
from dualcurate_trl.config import TrainConfig
from dualcurate_trl.errors import TrainerError
from dualcurate_trl.loading import is_vision_model
from dualcurate_trl.saving import SavedModel, finish
from dualcurate_trl.training_log import make_log_callback

if TYPE_CHECKING:
    import datasets

    from dualcurate import PluginHost, StageContext


class TRLStage(Trainer):
    """Base of the ``sft``, ``grpo`` and ``gspo`` stages; subclasses build examples
    (:meth:`prepare`) and the TRL trainer (:meth:`build_trainer`)."""

    Config: ClassVar[type[TrainConfig]] = TrainConfig
    curve_keys: ClassVar[tuple[str, ...]] = ("loss",)
    config: TrainConfig

    def __init__(self, config: TrainConfig | dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        self.saved: SavedModel | None = None
        self.build_stats: dict[str, Any] = {}

    def preflight(self, host: PluginHost) -> list[str]:
        problems = []
        acc = self.config.accelerate_config
        if acc is not None and not Path(acc).is_file():
            problems.append(f"accelerate_config {acc}: no such file; give the YAML that "
                            f"`accelerate config` wrote, or leave it out to train in-process")
        problems.extend(self.check_trl_config())
        return problems

    def check_trl_config(self) -> list[str]:
        """Build the TRL config for real (in a throwaway folder), so what TRL would refuse
        after every earlier stage has run is refused by ``curate validate`` instead."""
        import tempfile

        try:
            with tempfile.TemporaryDirectory(prefix="dualcurate-validate-") as tmp:
                self.trl_config(Path(tmp))
        except ImportError as exc:
            return [f"trl is not importable ({exc}); install dualcurate-trl's dependencies"]
        except Exception as exc:  # TRL's own checks: ValueError mostly
            return [self.explain_trl_error(exc)]
        return []

    def explain_trl_error(self, exc: Exception) -> str:
        """TRL's refusal of the config, with the options that feed it."""
        return (f"TRL refuses the {self.name} config these options make: {exc}. Fix the "
                f"option it names (trl_args are applied last and can set any TRL option)")

    def trl_config(self, workdir: Path) -> Any:
        """The TRL config object (``SFTConfig``, ``GRPOConfig``) these options make."""
        raise NotImplementedError

    # subclass hooks ---------------------------------------------------------------------------
    def prepare(self, dataset: datasets.Dataset, ctx: StageContext,
                vision: bool) -> datasets.Dataset:
        """Rows → the TRL training dataset."""
        raise NotImplementedError

    def build_trainer(self, train_dataset: datasets.Dataset, workdir: Path, vision: bool,
                      callbacks: list[Any]) -> tuple[Any, Any]:
        """(TRL trainer, tokenizer/processor) ready to ``train()``."""
        raise NotImplementedError

    def launch_state(self) -> dict[str, Any]:
        """What the stage holds beyond its options (plain JSON data) that the processes an
        ``accelerate_config`` launch starts need: they rebuild the stage from its options."""
        return {}

    def restore_launch_state(self, state: dict[str, Any]) -> None:
        """Take back :meth:`launch_state` in a launched process."""

    # flow -------------------------------------------------------------------------------------
    def train(self, dataset: datasets.Dataset, ctx: StageContext) -> Path:
        """Train on ``dataset``; write ``ctx.workdir/model`` (and ``model-merged`` for LoRA with
        ``merge_lora``), ``training_log.jsonl`` and ``training_curve.png``. Resumes from the
        last checkpoint in ``ctx.workdir/checkpoints``."""
        cfg = self.config
        workdir = Path(ctx.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        vision = is_vision_model(cfg.model, cfg.revision)
        train_dataset = self.prepare(dataset, ctx, vision)
        if cfg.accelerate_config:
            from dualcurate_trl.launch import launch

            self.saved = launch(self, train_dataset, workdir, vision)
        else:
            self.saved = self.fit(train_dataset, workdir, vision)
        return self.saved.model

    def fit(self, train_dataset: datasets.Dataset, workdir: Path, vision: bool) -> SavedModel:
        """Run the TRL trainer in this process (resuming if a checkpoint exists)."""
        callbacks = [make_log_callback(workdir / "training_log.jsonl")]
        trainer, processor = self.build_trainer(train_dataset, workdir, vision, callbacks)
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # the JSONL log has every record
        checkpoint = resume_checkpoint(workdir / "checkpoints")
        self._check_same_training(workdir, resuming=checkpoint is not None)
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        return finish(trainer, processor, workdir, cfg=self.config,
                      curve_keys=self.curve_keys)

    #: Options that may change between a run and its resumption (training length).
    resumable_changes: ClassVar[frozenset[str]] = frozenset({"max_steps", "num_train_epochs"})

    def _check_same_training(self, workdir: Path, resuming: bool) -> None:
        """Resuming continues the same training: refuse checkpoints another configuration
        wrote (only the training length and runtime options may differ)."""
        path = workdir / "train_config.json"
        ignore = set(self.Config.runtime_fields) | self.resumable_changes
        current = self.config.model_dump(mode="json", exclude=ignore)
        current["stage"] = self.name
        if resuming and path.exists():
            previous = json.loads(path.read_text(encoding="utf-8"))
            changed = sorted(k for k in set(previous) | set(current)
                             if previous.get(k) != current.get(k))
            if changed:
                raise TrainerError(
                    f"{workdir}: its checkpoints come from another configuration (changed: "
                    f"{', '.join(changed)}); use a new workdir, delete "
                    f"{workdir / 'checkpoints'}, or restore those options")
        path.write_text(json.dumps(current, indent=2, sort_keys=True), encoding="utf-8")

    def run(self, dataset: datasets.Dataset, ctx: StageContext) -> StageResult:
        model_dir = self.train(dataset, ctx)
        workdir = Path(ctx.workdir)
        artifacts = {"model": str(model_dir)}
        if self.saved is not None and self.saved.merged is not None:
            artifacts["merged"] = str(self.saved.merged)
        for name, file in (("log", "training_log.jsonl"), ("curve", "training_curve.png")):
            if (workdir / file).exists():
                artifacts[name] = str(workdir / file)
        return StageResult(dataset=None, artifacts=artifacts, report=dict(self.build_stats))
