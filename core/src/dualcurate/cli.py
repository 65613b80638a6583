"""The ``curate`` command line. It only combines the plugin registry with configuration:
everything it does is available from Python (``Pipeline``, ``RunStore``, the stage classes)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table

from dualcurate.errors import DualcurateError, RecipeError
from dualcurate.kinds import KINDS
from dualcurate.plugins import PluginHost, env_plugin_names

if TYPE_CHECKING:
    from dualcurate.report_sections import ReportSection, SummaryTable

err_console = Console(stderr=True)
out_console = Console()


class State:
    def __init__(self, host: PluginHost, selected: list[str], debug: bool):
        self.host = host
        self.selected = selected
        self.debug = debug


def _prescan(argv: Sequence[str]) -> tuple[list[str], list[str], bool]:
    """Read --plugin/--no-plugin/--debug before click parses, so plugins can add commands."""
    select, block, debug = [], [], False
    it = iter(range(len(argv)))
    for i in it:
        arg = argv[i]
        for flag, dest in (("--plugin", select), ("--no-plugin", block)):
            if arg == flag and i + 1 < len(argv):
                dest.append(argv[i + 1])
                next(it, None)
            elif arg.startswith(flag + "="):
                dest.append(arg.split("=", 1)[1])
        if arg == "--debug":
            debug = True
        if not arg.startswith("-") and (i == 0 or argv[i - 1] not in ("--plugin", "--no-plugin")):
            break  # the subcommand: options after it are its own
    return select, block, debug


def _progress_factory(progress: Any):
    from dualcurate.progress import RichProgress

    return lambda name: RichProgress(progress, name)


def _is_terminal(console: Console) -> bool:
    return console.is_terminal and not console.is_dumb_terminal


@contextlib.contextmanager
def _stage_progress() -> Any:
    """The stages' progress factory: one rich bar per stage on a terminal; elsewhere (a log
    file, a pipe) plain lines of words, complete whatever the width (``LineProgress``)."""
    if _is_terminal(err_console):
        with _make_progress() as progress:
            yield _progress_factory(progress)
        return
    from dualcurate.progress import LineProgress

    def emit(line: str) -> None:
        err_console.print(line, markup=False, highlight=False, soft_wrap=True)

    yield lambda name: LineProgress(name, emit)


def _print_whole(renderable: Any, console: Console | None = None) -> None:
    """Print a table; on a console that is not a terminal (a log file, whose width rich
    guesses as 80), as wide as it needs, so no column is cut short with "…"."""
    console = console or err_console
    if _is_terminal(console):
        console.print(renderable)
        return
    from rich.measure import Measurement

    need = Measurement.get(console, console.options.update_width(10_000), renderable).maximum
    if need <= console.width:
        console.print(renderable)
        return
    import io

    wide = Console(file=io.StringIO(), width=need, color_system=None, force_terminal=False,
                   legacy_windows=False)
    wide.print(renderable)
    console.out(wide.file.getvalue(), end="", highlight=False)


def _make_progress():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description:<10}"), BarColumn(),
                    MofNCompleteColumn(), TextColumn("{task.fields[requests]}"),
                    TextColumn("{task.fields[tps]}"),
                    TextColumn("errors {task.fields[errors]}"), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=err_console)


def run_recipe(state: State, recipe_path: str | None, out: str | None,
               overrides: Sequence[str], report: bool = True) -> None:
    from dualcurate.pipeline import Pipeline
    from dualcurate.recipe import load_recipe

    recipe = load_recipe(recipe_path, list(overrides))
    from dualcurate.quiet import LOG_NAME, held_warnings, third_party_to_log

    pipeline = Pipeline(recipe, host=state.host, selected=state.selected)
    verbose = getattr(state, "verbose", False)
    with held_warnings(verbose) as held:  # to run.log with the rest (-v: on the terminal)
        pipeline.validate()
    for note in pipeline.notes:
        err_console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    target = out or recipe.run.out or f"runs/{recipe.run.name}"
    log_path = Path(target) / LOG_NAME
    try:
        # third-party output (warnings, tqdm bars, engine logs) to run.log unless -v
        with _stage_progress() as progress_factory, _stage_log_to_console(), \
                third_party_to_log(log_path, [err_console, out_console], verbose, held):
            store = pipeline.run(target, progress_factory=progress_factory, log=_log_line)
    except BaseException:
        if log_path.is_file() and not verbose:
            err_console.print(f"[dim]third-party output of this run: {escape(str(log_path))}"
                              f" (curate -v shows it on the terminal)[/dim]")
        raise
    table = Table(title=f"run {store.root}")
    for col in ("stage", "use", "status", "rows in", "rows out", "seconds"):
        table.add_column(col)
    for rec in store.manifest["stages"]:
        table.add_row(rec["name"], str(rec["plugin"]), rec["status"], str(rec["rows_in"]),
                      str(rec["rows_out"]), f"{rec['seconds']:.1f}")
    _print_whole(table)
    from dualcurate.report import run_sections, write_report

    sections = run_sections(store, state.host)  # drawn once: the summaries and the report
    _print_summaries(sections)
    if report:
        html_path, md_path = write_report(store.root, sections=sections)
        err_console.print(f"report: {escape(str(html_path))} (and {escape(str(md_path))})")


def _log_line(message: str) -> None:
    """The pipeline's own notes (stages skipped, recomputed), one line each."""
    err_console.print(f"[dim]{escape(message)}[/dim]", highlight=False, soft_wrap=True)


class _ConsoleLogHandler(logging.Handler):
    """Stages' ``ctx.log`` messages (INFO and up) on the console, above the progress bars:
    the source's per-source summary, warnings about sources that kept few rows."""

    def emit(self, record: logging.LogRecord) -> None:
        style = "yellow" if record.levelno >= logging.WARNING else "dim"
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        err_console.print(f"[{style}]{escape(prefix + record.getMessage())}[/{style}]",
                          highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _stage_log_to_console() -> Any:
    logger = logging.getLogger("dualcurate")
    handler = _ConsoleLogHandler(logging.INFO)
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def summary_renderable(summary: SummaryTable) -> RenderableType:
    """A report section's summary table as the terminal shows it (columns of numbers
    right-aligned, its notes under it); plugins' own commands print theirs the same way."""
    from rich import box

    table = Table(title=escape(summary.title), box=box.SIMPLE, pad_edge=False,
                  collapse_padding=True)
    for i, column in enumerate(summary.columns):
        cells = [str(row[i]) for row in summary.rows if i < len(row)]
        numeric = any(_is_number(c) for c in cells) and \
            all(_is_number(c) or c in ("", "-", "–") for c in cells)
        table.add_column(escape(column), justify="right" if numeric else "left", no_wrap=True)
    for row in summary.rows:
        table.add_row(*[escape(str(c)) for c in row])
    if not summary.notes:
        return table
    from rich.console import Group
    from rich.text import Text

    return Group(table, *[Text(line, style="dim") for line in summary.notes])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _print_summaries(sections: list[ReportSection]) -> None:
    """The summary tables of the run's report sections (each plugin's figures), on stderr
    after the stage table."""
    for section in sections:
        if section.summary is not None:
            _print_whole(summary_renderable(section.summary))


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--plugin", "plugins", multiple=True, metavar="NAME",
              help="Load plugin NAME (entry point in group 'dualcurate'); the stage it "
                   "implements runs with it. Repeatable. Also DUALCURATE_PLUGINS=a,b.")
@click.option("--no-plugin", "no_plugins", multiple=True, metavar="NAME",
              help="Do not load plugin NAME.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.option("-v", "--verbose", is_flag=True, help="Show third-party warnings, logs and "
              "progress bars on the terminal (default: in the run's run.log). Also "
              "DUALCURATE_VERBOSE=1.")
@click.version_option(package_name="dualcurate")
@click.pass_context
def cli(ctx: click.Context, plugins: tuple[str, ...], no_plugins: tuple[str, ...],
        debug: bool, verbose: bool = False) -> None:
    """dualcurate: curate reasoning data for multimodal LLMs.

    With no command, runs the default recipe (the offline demo) into runs/demo.
    """
    if ctx.obj is None:  # invoked without main() (tests calling cli directly)
        ctx.obj = build_state(list(plugins), list(no_plugins), debug)
    ctx.obj.verbose = verbose or bool(os.environ.get("DUALCURATE_VERBOSE"))
    if ctx.invoked_subcommand is None:
        run_recipe(ctx.obj, None, None, [])


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.pass_obj
def plugins_cmd(state: State, as_json: bool) -> None:
    """List installed plugins, what they register, and any that failed to load."""
    infos = state.host.plugin_infos()
    if as_json:
        click.echo(json.dumps([i.to_json() for i in infos], indent=2))
        return
    table = Table(title="dualcurate plugins")
    for col in ("name", "distribution", "version", "registers", "status"):
        table.add_column(col)
    for info in infos:
        regs = "; ".join(f"{k.title}: {', '.join(info.registers[k.name])}" for k in KINDS
                         if info.registers.get(k.name))
        status = (f"[red]error: {escape(info.error)}[/red]" if info.error
                  else ("loaded" if info.name in state.host.infos else "[dim]not loaded[/dim]"))
        status += "".join(f"\n[red]refused: {escape(p)}[/red]" for p in info.problems)
        status += "".join(f"\n[yellow]warning: {escape(w)}[/yellow]" for w in info.warnings)
        table.add_row(info.name, info.distribution or "", info.version or "", regs, status)
    out_console.print(table)


@cli.command("validate")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a recipe value, e.g. --set distill.samples_per_question=4.")
@click.option("--explain", is_flag=True, help="Print every stage's effective options and where "
              "each comes from (default, [stage], [stage.plugins.NAME], --set); on a recipe "
              "with problems, the options each component it names takes.")
@click.option("--json", "as_json", is_flag=True, help="With --explain: print JSON.")
@click.pass_obj
def validate_cmd(state: State, recipe: str, overrides: tuple[str, ...], explain: bool,
                 as_json: bool) -> None:
    """Check RECIPE against every stage's Config and against the stages before it (columns
    required, trainer configs as TRL builds them, max_length against the teacher's
    max_tokens); report all problems at once."""
    from dualcurate.pipeline import Pipeline
    from dualcurate.quiet import held_warnings
    from dualcurate.recipe import load_recipe

    pipeline = Pipeline(load_recipe(recipe, list(overrides)), host=state.host,
                        selected=state.selected)
    verbose = getattr(state, "verbose", False)
    try:
        with held_warnings(verbose) as held:  # TRL and transformers warn while configs are built
            resolved = pipeline.validate()
    except RecipeError:
        if explain:  # the options each component takes, to fix the problems against
            _print_component_options(pipeline.component_options(), as_json)
        raise
    if held:
        err_console.print(f"note: {len(held)} third-party warning(s) while building the "
                          f"stages' configs; -v shows them", highlight=False, soft_wrap=True)
    for note in pipeline.notes:
        err_console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    if explain:
        stages = pipeline.explain()
        if as_json:
            click.echo(json.dumps(stages, indent=2, default=str))
            return
        for stage in stages:
            click.echo(f"[{stage['stage']}] {stage['kind']}: {stage['use']}"
                       f" (chosen by {stage['chosen_by']})")
            width = max((len(o["option"]) for o in stage["options"]), default=0)
            for opt in stage["options"]:
                value = json.dumps(opt["value"], default=str)
                if len(value) > 100:
                    value = value[:97] + "..."
                flag = ", runtime only" if opt["runtime"] else ""
                click.echo(f"  {opt['option']:<{width}} = {value}   ({opt['origin']}{flag})")
    click.echo(f"{recipe}: ok ({', '.join(f'{r.name}={r.plugin}' for r in resolved)})")


def _print_component_options(components: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(components, indent=2, default=str))
        return
    click.echo("the recipe has problems (below); the options its components take:")
    for comp in components:
        click.echo(f"[{comp['stage']}] {comp['kind']}: {comp['use']}")
        width = max((len(o["option"]) for o in comp["options"]), default=0)
        for opt in comp["options"]:
            default = "required" if opt["required"] else \
                f"default {json.dumps(opt['default'], default=str)}"
            flag = ", runtime only" if opt["runtime"] else ""
            click.echo(f"  {opt['option']:<{width}}  {opt['type']}  ({default}{flag})")


@cli.command("run")
@click.argument("recipe", type=click.Path(dir_okay=False), required=False)
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default: "
              "[run] out, else runs/<name>).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a recipe value, e.g. --set distill.samples_per_question=4.")
@click.option("--no-report", is_flag=True, help="Do not write report.html / report.md.")
@click.option("--executor", metavar="NAME", help="Run map stages with this executor (`local`, "
              "`ray`): the same as --set run.executor=NAME.")
@click.option("--address", metavar="ADDR", help="With --executor ray: the cluster to join "
              "(`auto`, `ray://HOST:10001`); unset starts a local Ray.")
@click.option("--strict", is_flag=True, help="Fail (exit 2) when a source keeps 0 rows or "
              "less than its min_kept_fraction of the rows it read (without it: a warning).")
@click.pass_obj
def run_cmd(state: State, recipe: str | None, out: str | None, overrides: tuple[str, ...],
            no_report: bool, executor: str | None, address: str | None,
            strict: bool = False) -> None:
    """Run RECIPE (default: the built-in default recipe); rerunning resumes. Ends by writing
    report.html and report.md into the run directory."""
    extra = [f"run.executor={json.dumps(executor)}"] if executor else []
    if address:
        extra.append(f"run.executor_options.address={json.dumps(address)}")
    if strict:  # the same as --set run.strict=true; sources read it from their context
        extra.append("run.strict=true")
    run_recipe(state, recipe, out, (*overrides, *extra), report=not no_report)


@cli.command("sweep")
@click.argument("recipe", type=click.Path(dir_okay=False), required=False)
@click.option("--grid", "grid", multiple=True, metavar="SECTION.KEY=[V1, V2]",
              help="Values to sweep (TOML, as --set); several --grid form their product. "
                   "Default: the recipe's [sweep] grid.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Sweep directory: one run directory per variant, sweep.json, the report.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a recipe value in every variant.")
@click.option("--executor", metavar="NAME", help="Run map stages with this executor (`local`, "
              "`ray`): the same as --set run.executor=NAME.")
@click.option("--address", metavar="ADDR", help="With --executor ray: the cluster to join.")
@click.option("--no-report", is_flag=True, help="Do not write report.html / report.md.")
@click.pass_obj
def sweep_cmd(state: State, recipe: str | None, grid: tuple[str, ...], out: str,
              overrides: tuple[str, ...], executor: str | None, address: str | None,
              no_report: bool) -> None:
    """Run RECIPE once per point of a grid of overrides, each variant a run directory under
    OUT; stages with the same signature are computed once and shared, and all variants share
    one request cache. Rerunning resumes. Ends with OUT/report.html comparing the variants."""
    from dualcurate.quiet import LOG_NAME, held_warnings, third_party_to_log
    from dualcurate.sweep import Sweep, plan_sweep
    from dualcurate.sweep_report import sweep_tables, write_sweep_report

    extra = [f"run.executor={json.dumps(executor)}"] if executor else []
    if address:
        extra.append(f"run.executor_options.address={json.dumps(address)}")
    verbose = getattr(state, "verbose", False)
    with held_warnings(verbose) as held:
        plan = plan_sweep(recipe, grid, [*overrides, *extra], host=state.host,
                          selected=state.selected)
    err_console.print(f"sweep: {len(plan.variants)} variant(s) into {escape(out)}",
                      highlight=False)
    sweep = Sweep(plan, out, host=state.host, selected=state.selected)
    log_path = Path(out) / LOG_NAME

    def announce(variant: Any, i: int, n: int) -> None:
        err_console.print(f"[bold]variant {i + 1}/{n}: {escape(variant.name)}[/bold]",
                          highlight=False)

    with _stage_progress() as progress_factory, _stage_log_to_console(), \
            third_party_to_log(log_path, [err_console, out_console], verbose, held):
        sweep.run(progress_factory=progress_factory, log=_log_line, on_variant=announce)
    from dualcurate.report_sections import SummaryTable

    index = json.loads((Path(out) / "sweep.json").read_text())
    for title, columns, rows in sweep_tables(index)[:2]:
        _print_whole(summary_renderable(SummaryTable(title, columns, rows)))
    if not no_report:
        html_path, md_path = write_sweep_report(out)
        err_console.print(f"report: {escape(str(html_path))} (and {escape(str(md_path))})")


@cli.command("report")
@click.argument("run", type=click.Path(file_okay=False))
@click.pass_obj
def report_cmd(state: State, run: str) -> None:
    """(Re)write RUN/report.html and RUN/report.md from the run store."""
    from dualcurate.report import run_sections, write_report
    from dualcurate.store import RunStore

    store = RunStore(run, create=False)  # a clear error if RUN is not a run directory
    sections = run_sections(store, state.host)
    html_path, md_path = write_report(run, sections=sections)
    _print_summaries(sections)
    click.echo(f"wrote {html_path} and {md_path}")


@cli.command("inspect")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--stage", help="Stage whose rows to show (default: the last with rows).")
@click.option("--limit", default=10, show_default=True, help="How many rows to show.")
@click.option("--columns", help="Comma-separated columns to show.")
def inspect_cmd(run: str, stage: str | None, limit: int, columns: str | None) -> None:
    """Show a run's stages, or rows of one stage."""
    from dualcurate.store import RunStore

    store = RunStore(run, create=False)
    stage = stage or _last_stage_with_rows(store)
    if stage is None:
        raise DualcurateError(f"run {run}: no stage has rows yet")
    rows = []
    for table in store.iter_tables(stage):
        rows.extend(table.slice(0, limit - len(rows)).to_pylist())
        if len(rows) >= limit:
            break
    if not rows and stage not in {s["name"] for s in store.manifest["stages"]}:
        names = ", ".join(s["name"] for s in store.manifest["stages"])
        raise DualcurateError(f"run {run}: no stage {stage!r}; stages: {names}")
    cols = columns.split(",") if columns else list(rows[0].keys()) if rows else []
    title = f"{run} / {stage} (first {len(rows)} of {store.count_rows(stage)})"
    if len(cols) <= 5:
        table = Table(title=title)
        for col in cols:
            table.add_column(col, overflow="fold", max_width=60)
        for row in rows:
            table.add_row(*[_cell(row.get(c)) for c in cols])
        out_console.print(table)
        return
    out_console.print(f"[bold]{escape(title)}[/bold]")
    for row in rows:  # wide rows read better one field per line
        table = Table(show_header=False, title=str(row.get("id", "")), title_justify="left")
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for col in cols:
            table.add_row(col, escape(_cell(row.get(col))))
        out_console.print(table)


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 300 else text[:297] + "…"


def _last_stage_with_rows(store: Any) -> str | None:
    for rec in reversed(store.manifest["stages"]):
        if store.finished_shards(rec["name"]):
            return rec["name"]
    return None


@cli.command("export")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--stage", required=True, help="Stage whose rows to export.")
@click.option("--to", "to", required=True, type=click.Path(file_okay=False),
              help="Directory to write the export into.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "jsonl", "hf", "llamafactory",
                                                  "verl"]), default="parquet", show_default=True,
              help="Parquet shards, one JSON-lines file, a datasets.save_to_disk folder, a "
                   "LLaMA-Factory dataset or verl RL Parquet (docs/export.md).")
@click.option("--all-rows", is_flag=True, help="Include rows a filter dropped (keep=false).")
@click.option("--images", "images", type=click.Choice(["copy", "link", "embed", "none"]),
              default=None, help="What the export carries of the images: files copied (or "
              "hard-linked) under TO/images with relative paths, bytes embedded (the datasets "
              "Image feature), or hashes only. Default: copy for jsonl, embed for parquet/hf.")
@click.option("--subset", default="all", show_default=True, metavar="NAME",
              help="llamafactory/verl: all, eval, or one a plugin adds (rl, sft, hard, "
                   "nontrivial: docs/export.md).")
@click.option("--mode", type=click.Choice(["row", "long", "short"]), default=None,
              help="llamafactory: each row's mode as the judge curated it (row; the default "
                   "when rows have one), or long/short for every row.")
@click.option("--name", default=None, help="llamafactory/verl: the dataset name (default: the "
              "stage, plus _SUBSET).")
@click.pass_obj
def export_cmd(state: State, run: str, stage: str, to: str, fmt: str, all_rows: bool,
               images: str | None, subset: str = "all", mode: str | None = None,
               name: str | None = None) -> None:
    """Write a stage's rows out as Parquet, JSON lines, a datasets.save_to_disk folder, a
    LLaMA-Factory dataset or verl RL Parquet."""
    from dualcurate.export import DEFAULT_IMAGES, export_stage

    if fmt in ("llamafactory", "verl"):
        from dualcurate.export_formats import TOOL_IMAGES, export_tool

        counts = export_tool(run, stage, to, fmt, all_rows=all_rows, images=images,
                             subset=subset, mode=mode, name=name, host=state.host)
        click.echo(f"wrote {counts['examples']} examples from {counts['rows']} rows of "
                   f"{run}/{stage} to {to} ({fmt}, images: {images or TOOL_IMAGES[fmt][0]})"
                   + "".join(f"; skipped {n}: {why}"
                             for why, n in (counts.get("skipped") or {}).items()))
        return

    n = export_stage(run, stage, to, fmt, all_rows=all_rows, images=images)
    click.echo(f"wrote {n} rows of {run}/{stage} to {to} ({fmt}, images: "
               f"{images or DEFAULT_IMAGES[fmt]})")


@cli.command("push")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--stage", required=True, help="Stage whose rows to push.")
@click.option("--repo", "repo_id", required=True, metavar="OWNER/NAME",
              help="Dataset repository on the Hub (HF_ENDPOINT and HF_TOKEN are honoured).")
@click.option("--private", is_flag=True, help="Create the repository private.")
@click.option("--dry-run", "dry_run", type=click.Path(file_okay=False), metavar="DIR",
              help="Write exactly what would be uploaded into DIR and upload nothing.")
@click.option("--license", "license_", default="other", show_default=True,
              help="The card's license field (a Hub license id, e.g. cc-by-4.0).")
@click.option("--all-rows", is_flag=True, help="Include rows a filter dropped (keep=false).")
def push_cmd(run: str, stage: str, repo_id: str, private: bool, dry_run: str | None,
             license_: str, all_rows: bool) -> None:
    """Push a stage's rows to the Hugging Face Hub as a dataset with a generated card."""
    from dualcurate.hub import push_stage

    result = push_stage(run, stage, repo_id, private=private, dry_run=dry_run,
                        license=license_, all_rows=all_rows)
    if dry_run is not None:
        click.echo(f"dry run: {result.rows} rows of {run}/{stage} in {dry_run} "
                   f"({', '.join(result.files)}); nothing uploaded")
    else:
        click.echo(f"pushed {result.rows} rows of {run}/{stage} to {repo_id}: {result.url}")


def build_state(select: list[str], block: list[str], debug: bool) -> State:
    select = [*select, *[n for n in env_plugin_names() if n not in select]]
    host = PluginHost(select=select, block=block)
    return State(host, select, debug)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    select, block, debug = _prescan(argv)
    debug = debug or bool(os.environ.get("DUALCURATE_DEBUG"))
    try:
        state = build_state(select, block, debug)
        state.host.register_commands(cli)
        cli.main(args=argv, prog_name="curate", obj=state, standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except DualcurateError as exc:
        if debug:
            traceback.print_exc()
        err_console.print("[bold red]error:[/bold red] " + escape(str(exc)), highlight=False,
                          soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted: committed shards are kept; rerun the same command "
                          "to resume")
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        err_console.print("[bold red]internal error:[/bold red] "
                          + escape(f"{type(exc).__name__}: {exc} (rerun with --debug for the "
                                   f"traceback)"), highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
