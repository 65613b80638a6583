"""Hook implementations (thin): each entry point is one plugin object. Stage modules are
imported inside the hooks, so listing plugins never imports torch, transformers or TRL."""

from __future__ import annotations

from dualcurate import Register, hookimpl


class SFTPlugin:
    """Entry point ``sft``: supervised fine-tuning (full or LoRA, text or VLM) with TRL."""

    @hookimpl
    def dualcurate_register_trainers(self, register: Register) -> None:
        from dualcurate_trl.sft import SFTStage

        register(SFTStage)


class GRPOPlugin:
    """Entry point ``grpo``: GRPO with TRL, rewarded by the verifier."""

    @hookimpl
    def dualcurate_register_trainers(self, register: Register) -> None:
        from dualcurate_trl.grpo import GRPOStage

        register(GRPOStage)


class GSPOPlugin:
    """Entry point ``gspo``: GSPO (sequence-level importance ratio) with TRL."""

    @hookimpl
    def dualcurate_register_trainers(self, register: Register) -> None:
        from dualcurate_trl.grpo import GSPOStage

        register(GSPOStage)


sft = SFTPlugin()
grpo = GRPOPlugin()
gspo = GSPOPlugin()
