"""``curate efficacy-table``: gains and regions from scores any evaluator produced.

The CSV needs the columns ``group,B_S,B_L,DT_S,DT_L`` (others are ignored), one row per task
group, e.g. copied from lmms-eval or VLMEvalKit result tables.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import click

from dualcurate.errors import DualcurateError
from dualcurate_dualtuning.metrics import SCORE_NAMES, GroupMetrics, check_score, group_metrics

REQUIRED_COLUMNS = ("group", *SCORE_NAMES)


class ScoresFileError(DualcurateError):
    """A scores CSV that cannot be read (missing column, a cell that is not a number)."""


def read_scores(path: str | Path) -> list[GroupMetrics]:
    """Every row of a scores CSV as :class:`GroupMetrics`, in file order.

    Errors name the file, the line and the column, and say what to fix.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ScoresFileError(f"scores file {path}: not found; pass a CSV with columns "
                              f"{','.join(REQUIRED_COLUMNS)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScoresFileError(f"scores file {path}: cannot be read as UTF-8 text ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    header = [name.strip() for name in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ScoresFileError(
            f"scores file {path}: missing column(s) {', '.join(missing)} in the header "
            f"({','.join(header) or 'empty file'}); the first line must name "
            f"{','.join(REQUIRED_COLUMNS)}")
    reader.fieldnames = header
    out: list[GroupMetrics] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if None in row:
            raise ScoresFileError(f"scores file {path}, line {line}: more cells than header "
                                  f"columns; quote cells that contain commas")
        group = (row.get("group") or "").strip()
        if not group:
            raise ScoresFileError(f"scores file {path}, line {line}, column group: empty; "
                                  f"name the task group")
        if group in seen:
            raise ScoresFileError(f"scores file {path}, line {line}, column group: {group!r} "
                                  f"already given on line {seen[group]}; one row per group")
        seen[group] = line
        scores: dict[str, float] = {}
        for name in SCORE_NAMES:
            cell = (row.get(name) or "").strip()
            if not cell:
                raise ScoresFileError(f"scores file {path}, line {line} (group {group!r}), "
                                      f"column {name}: empty; give a number")
            try:
                # "37.57%" reads as 37.57: gains are scale-free, only the same scale matters
                scores[name] = check_score(name, cell.removesuffix("%").strip())
            except ValueError as exc:
                raise ScoresFileError(f"scores file {path}, line {line} (group {group!r}), "
                                      f"column {exc}") from None
        out.append(group_metrics(group, **scores))
    if not out:
        raise ScoresFileError(f"scores file {path}: no rows after the header; add one row "
                              f"per task group")
    return out


def efficacy_table(path: str | Path) -> list[dict[str, object]]:
    """The ``efficacy-table`` output: one object per group, in file order."""
    return [metrics.table_row() for metrics in read_scores(path)]


@click.command("efficacy-table")
@click.option("--scores", "scores", required=True, type=click.Path(dir_okay=False),
              help="CSV with columns group,B_S,B_L,DT_S,DT_L (one row per task group).")
def efficacy_table_cmd(scores: str) -> None:
    """Print Gain_DA, Gain_CoT, GAP_B, GAP_DT and the Dual Tuning region per group as JSON.

    Gains are percent changes of the dual-tuned scores over B* = max(B_S, B_L); see
    docs/efficacy.md for the rules (ties, B* = 0).
    """
    click.echo(json.dumps(efficacy_table(scores), indent=2))
