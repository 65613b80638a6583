"""The ``hf-distill`` distiller: the teacher distiller on the ``hf`` (transformers) engine."""

from __future__ import annotations

from dualcurate.distill import TeacherDistiller
from dualcurate.engine import Engine


class HFDistiller(TeacherDistiller):
    """Distils reasoning traces from a transformers teacher loaded in this process
    (the ``teacher`` distiller with its
    engine by default; ``engine`` options: ``model``, ``revision``, ``dtype``, ``device``...)."""

    name = "hf-distill"
    default_engine = "hf"

    @classmethod
    def engine_class(cls) -> type[Engine]:
        from dualcurate_hf.engine import HFEngine

        return HFEngine
