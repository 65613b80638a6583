"""The Dual Tuning table, drawn once for every place it is shown (the run report's HTML and
markdown, the dataset card, the end of ``curate run`` / ``curate report``), and
``curate efficacy-table``: gains and regions from scores any evaluator produced.

The CSV needs the columns ``group,B_S,B_L,DT_S,DT_L`` (others are ignored), one row per task
group, e.g. copied from lmms-eval or VLMEvalKit result tables.
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from dualcurate.errors import DualcurateError
from dualcurate.report_sections import SummaryTable
from dualcurate_dualtuning.metrics import SCORE_NAMES, GroupMetrics, check_score, group_metrics
from dualcurate_dualtuning.results import REGION_COLOURS

REQUIRED_COLUMNS = ("group", *SCORE_NAMES)
#: the table's columns, in order (accuracies, gains and gaps in %; counts of rows)
TABLE_COLUMNS = ("group", *SCORE_NAMES, "Gain_DA", "Gain_CoT", "region", "GAP_B", "GAP_DT",
                 "n_train", "n_eval")
#: the columns of the short table at the end of ``curate run`` / ``curate report``
SUMMARY_COLUMNS = TABLE_COLUMNS[:8]
SUMMARY_TITLE = "Dual Tuning: reasoning or direct?"
#: the accuracy the images add, per mode: the dual model's score minus its blind score (every
#: image blank); shown after GAP_DT when a group of the table was evaluated blind
IMAGE_COLUMNS = {"Img_S": "DT_S", "Img_L": "DT_L"}
IMAGE_EXPLAIN = ("Img_S = DT_S − DT_S blind, Img_L = DT_L − DT_L blind: the points the images "
                 "add (blind: every image replaced by a blank one of its size); near 0, the "
                 "group is answered as well without its images.")


def columns_of(groups: Iterable[dict[str, Any]]) -> tuple[str, ...]:
    """The table's columns for ``groups``: with Img_S and Img_L after GAP_DT when any group
    has blind scores."""
    if not any(isinstance(g.get("blind"), dict) for g in groups):
        return TABLE_COLUMNS
    at = TABLE_COLUMNS.index("GAP_DT") + 1
    return (*TABLE_COLUMNS[:at], *IMAGE_COLUMNS, *TABLE_COLUMNS[at:])


def image_gain(group: dict[str, Any], column: str) -> float | None:
    """A group's Img_S or Img_L (DT minus its blind score, points); None without blind
    scores."""
    blind = group.get("blind")
    key = IMAGE_COLUMNS[column]
    if not isinstance(blind, dict):
        return None
    try:
        return float(group[key]) - float(blind[key])
    except (KeyError, TypeError, ValueError):
        return None


def cell(group: dict[str, Any], column: str) -> str:
    """One cell of the table as text: numbers with one decimal, counts as they are, "–" for
    what the group does not have."""
    value = image_gain(group, column) if column in IMAGE_COLUMNS else group.get(column)
    if value is None:
        return "–"
    if isinstance(value, int | float) and not isinstance(value, bool) \
            and column not in ("n_train", "n_eval"):
        return f"{float(value):.1f}"
    return str(value)


def table_rows(groups: Iterable[dict[str, Any]],
               columns: Sequence[str] = TABLE_COLUMNS) -> list[list[str]]:
    """The table's cells, one list per group."""
    return [[cell(g, c) for c in columns] for g in groups]


def table_html(groups: list[dict[str, Any]]) -> str:
    """The table as an HTML ``<table>`` (regions as coloured badges), escaped."""
    columns = columns_of(groups)
    head = "".join(
        f'<th title="{html.escape(f"{IMAGE_COLUMNS[c]} minus {IMAGE_COLUMNS[c]} blind")}">'
        f"{html.escape(c)}</th>" if c in IMAGE_COLUMNS else f"<th>{html.escape(c)}</th>"
        for c in columns)
    body = []
    for g, cells in zip(groups, table_rows(groups, columns), strict=True):
        tds = []
        for column, text in zip(columns, cells, strict=True):
            text = html.escape(text)
            colour = REGION_COLOURS.get(str(g.get("region"))) if column == "region" else None
            if column == "region":
                style = f' style="background: {colour}"' if colour else ""
                text = f'<span class="badge"{style}>{text}</span>'
            tds.append(f"<td>{text}</td>")
        body.append(f"<tr>{''.join(tds)}</tr>")
    return (f'<table id="dual-tuning-table">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(body) + "\n</tbody>\n</table>")


def table_markdown(groups: list[dict[str, Any]]) -> str:
    """The table in markdown."""
    columns = columns_of(groups)
    align = ["---" if c in ("group", "region") else "---:" for c in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(t.replace("|", "\\|") for t in cells) + " |"
              for cells in table_rows(groups, columns)]
    return "\n".join(lines)


#: what the short table's columns mean, printed under it (a run log is read without the report)
SUMMARY_LEGEND = (
    "B_S / B_L: the base model's accuracy (%) answering directly / step by step; DT_S / DT_L: "
    "the same for the model trained once on both (Dual Tuning)",
    "Gain_DA / Gain_CoT: DT_S / DT_L against the better base mode, in % of it; region: "
    "reasoning-benefit (Gain_CoT > 0 and the larger: train with traces), direct-benefit "
    "(Gain_DA > 0 and at least Gain_CoT: train with direct answers), detrimental (neither "
    "gains: drop the group)",
)


def summary_table(groups: list[dict[str, Any]]) -> SummaryTable:
    """The short table printed at the end of ``curate run`` / ``curate report`` (and by
    ``curate efficacy-table --format table``, and a sweep's report): scores, gains and region
    per group, then Img_S and Img_L when a group was evaluated blind."""
    columns = SUMMARY_COLUMNS
    notes = list(SUMMARY_LEGEND)
    if columns_of(groups) != TABLE_COLUMNS:
        columns = (*SUMMARY_COLUMNS, *IMAGE_COLUMNS)
        notes.append(IMAGE_EXPLAIN)
    return SummaryTable(SUMMARY_TITLE, list(columns), table_rows(groups, columns), notes)


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
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="json",
              show_default=True, help="JSON objects, or the table `curate run` ends with.")
def efficacy_table_cmd(scores: str, fmt: str = "json") -> None:
    """Print Gain_DA, Gain_CoT, GAP_B, GAP_DT and the Dual Tuning region per group as JSON.

    Gains are percent changes of the dual-tuned scores over B* = max(B_S, B_L); see
    docs/efficacy.md for the rules (ties, B* = 0).
    """
    if fmt == "table":
        from dualcurate.cli import out_console, summary_renderable

        groups = [m.full_row() for m in read_scores(scores)]
        out_console.print(summary_renderable(summary_table(groups)))
        return
    click.echo(json.dumps(efficacy_table(scores), indent=2))
