"""The ``rl-subset`` filter: carve a seeded RL subset out of the SFT data (as MMFineReason does).

It needs the whole dataset, so it is a :class:`dualcurate.DatasetFilter`, a second stage after
``difficulty``. Every row gets its own column ``rl_split`` (``"rl"`` or ``"sft"``; None for
evaluation rows, which are never drawn): the dataset's ``split`` column is left alone, so eval
rows stay eval rows and the efficacy judge keeps its hold-out. RL rows get ``keep = False``, so
they stay recorded in this stage's shards (export them with ``curate export --all``) but do
not reach the SFT trainer. The draw depends only on the seed and the sample ids, never on row
order or sharding.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from dualcurate import DatasetFilter, StageConfig, StageResult
from dualcurate.errors import DualcurateError
from dualcurate_difficulty.expr import parse_keep

if TYPE_CHECKING:
    import datasets

    from dualcurate import StageContext


class RLSubsetConfig(StageConfig):
    """Options of the ``rl-subset`` filter."""

    rl_subset_size: int = Field(ge=0)
    seed: int = 0
    stratify_by: str | None = None
    eligible: str | None = None
    split_column: str = "rl_split"
    #: Rows whose ``split`` is one of these are never drawn and get no ``rl_split``.
    holdout_splits: list[str] = Field(default_factory=lambda: ["eval", "test", "validation"])

    @field_validator("split_column")
    @classmethod
    def _own_column(cls, value: str) -> str:
        if value == "split":
            raise ValueError("split_column = 'split' would overwrite the dataset's split (eval "
                             "rows would land in the SFT set and the judge would lose its "
                             "hold-out); leave it at 'rl_split' or name another new column")
        return value

    @field_validator("eligible")
    @classmethod
    def _eligible_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_keep(value)
        return value


def allocate(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Proportional allocation of ``total`` over strata by largest remainder (ties by name),
    never more than a stratum holds."""
    available = sum(sizes.values())
    if total > available:
        raise ValueError(f"cannot draw {total} from {available}")
    if available == 0:
        return dict.fromkeys(sizes, 0)
    quotas = {name: total * size / available for name, size in sizes.items()}
    counts = {name: int(q) for name, q in quotas.items()}
    left = total - sum(counts.values())
    order = sorted(sizes, key=lambda n: (-(quotas[n] - counts[n]), n))
    for name in order:
        if left == 0:
            break
        if counts[name] < sizes[name]:
            counts[name] += 1
            left -= 1
    return counts


def choose_rl_ids(rows: list[dict[str, Any]], size: int, seed: int,
                  stratify_by: str | None = None) -> set[str]:
    """The ids of the RL subset: ``size`` rows, seeded, stratified when asked."""
    strata: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        key = "" if stratify_by is None else str(row.get(stratify_by))
        strata[key].append(str(row["id"]))
    counts = allocate({name: len(ids) for name, ids in strata.items()}, size)
    chosen: set[str] = set()
    for name in sorted(strata):
        ids = sorted(strata[name])
        stratum_seed = int(hashlib.sha256(f"{seed}\x1f{name}".encode()).hexdigest()[:16], 16)
        chosen.update(random.Random(stratum_seed).sample(ids, counts[name]))
    return chosen


class RLSubsetFilter(DatasetFilter):
    """Marks ``rl_subset_size`` seeded samples ``rl_split = "rl"`` (``keep = False``), the rest
    ``rl_split = "sft"`` (eval rows: None, never drawn); optionally stratified by a column (``domain``) and restricted to rows a
    rule calls ``eligible``."""

    name = "rl-subset"
    Config = RLSubsetConfig
    requires = ("id",)
    provides = ("rl_split", "keep")

    def run(self, dataset: datasets.Dataset, ctx: StageContext) -> StageResult:
        import datasets as hf_datasets
        import pyarrow as pa

        from dualcurate.schema import rows_to_table, schema_types

        cfg: RLSubsetConfig = self.config  # type: ignore[assignment]
        rows = dataset.to_list()
        rule = parse_keep(cfg.eligible) if cfg.eligible is not None else None
        holdout = set(cfg.holdout_splits)
        pool = [r for r in rows if r.get("split") not in holdout
                and (rule is None or rule.evaluate(r))]
        if cfg.stratify_by is not None and pool and cfg.stratify_by not in pool[0]:
            raise DualcurateError(f"rl-subset: stratify_by = {cfg.stratify_by!r} is not a column "
                                  f"(columns: {', '.join(sorted(pool[0]))})")
        if cfg.rl_subset_size > len(pool):
            raise DualcurateError(
                f"rl-subset: rl_subset_size = {cfg.rl_subset_size} but only {len(pool)} "
                f"eligible samples reached this stage (of {len(rows)}); lower rl_subset_size"
                + (" or widen eligible" if rule is not None else ""))
        chosen = choose_rl_ids(pool, cfg.rl_subset_size, cfg.seed, cfg.stratify_by)
        out = []
        for row in rows:
            in_rl = str(row["id"]) in chosen
            held = row.get("split") in holdout
            out.append({**row, cfg.split_column: None if held else "rl" if in_rl else "sft",
                        "keep": not in_rl and row.get("keep") is not False})
        per_stratum: dict[str, dict[str, int]] = defaultdict(lambda: {"rl": 0, "sft": 0})
        for row in out:
            if row[cfg.split_column] is None:
                continue
            key = str(row.get(cfg.stratify_by or "domain"))
            per_stratum[key][row[cfg.split_column]] += 1
        held_out = sum(1 for r in out if r[cfg.split_column] is None)
        report = {"rl": len(chosen), "sft": len(out) - len(chosen) - held_out,
                  "held_out": held_out, "eligible": len(pool),
                  "by_" + (cfg.stratify_by or "domain"): dict(sorted(per_stratum.items()))}
        types = {**schema_types(dataset.data.schema), cfg.split_column: pa.string()}
        table = rows_to_table(out, types) if out else dataset.data.table
        return StageResult(dataset=hf_datasets.Dataset(table), report=report)
