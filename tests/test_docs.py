"""The docs kept honest by tests, as datasette and llm do: the CLI reference is what click
renders, every command and option has help text, every option of every registered component is
documented on its page, and relative links in docs/ resolve."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from pydantic import BaseModel

from dualcurate.docgen import CLI_REFERENCE, cli_reference, curate_group, walk
from dualcurate.plugins import PluginHost

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: kind -> the docs page documenting the options of that kind's components
KIND_PAGES: dict[str, str] = {
    "source": "sources.md",
    "distiller": "distill.md",
    "verifier": "verification.md",
    "filter": "difficulty.md",
    "trainer": "trainers.md",
    "efficacy_judge": "efficacy.md",
    "engine": "engines.md",
    "executor": "scale-out.md",
    "model_builder": "recipes.md",  # the [models] table
}
#: (kind, registered name) -> page, where a component is documented away from its kind's page
COMPONENT_PAGES: dict[tuple[str, str], str] = {
    ("source", "synthetic"): "demo.md",  # the offline demo's data
    ("distiller", "reference"): "demo.md",  # the demo's stand-in teacher
    ("model_builder", "synthetic-base"): "demo.md",  # the demo's base model
    ("executor", "local"): "concepts.md",  # built in, next to streaming
    ("source", "hello"): "writing-plugins.md",  # the example plugin
    ("filter", "hello-length"): "writing-plugins.md",
}
#: (kind, name, option path) -> why it is not checked. Keep this short: document options instead.
EXCLUDED: dict[tuple[str, str, str], str] = {}


def _page_for(kind: str, name: str) -> str | None:
    return COMPONENT_PAGES.get((kind, name)) or KIND_PAGES.get(kind)


_FENCE = re.compile(r"^\s*(```|~~~)")
_SPAN = re.compile(r"`([^`\n]+)`")
# `name = ...` as a TOML line (commented out or not), or a key of an inline table
_TOML_KEY = re.compile(r"(?:^\s*#?\s*|[{,]\s*)([A-Za-z_][\w-]*)\s*=")
# a TOML table header names its last key: `[source.cleaning]`, `[[source.sources]]`
_TOML_TABLE = re.compile(r"^\s*#?\s*\[\[?[\w.-]*?([A-Za-z_][\w-]*)\]\]?")
# a component chosen by name: `use = "sft"`, in a code block or a code span
_USE = re.compile(r"\buse\s*=\s*\"([\w-]+)\"")


def documented_names(markdown: str) -> set[str]:
    """Names a page documents: inline code spans `name`, `name = ...` or `[section.name]`, and
    keys set in its fenced code blocks (`name = ...`, also commented out or inside an inline
    table, and `[section.name]` table headers); and components chosen with `use = "name"`."""
    names: set[str] = set()
    in_fence = False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        names.update(_USE.findall(line))
        if in_fence:
            names.update(_TOML_KEY.findall(line))
            names.update(_TOML_TABLE.findall(line))
            continue
        for span in _SPAN.findall(line):
            span = span.strip()
            key = re.split(r"\s*=", span, maxsplit=1)[0]
            if re.fullmatch(r"[A-Za-z_][\w-]*", key):
                names.add(key)
                names.update(_TOML_KEY.findall(span[len(key):]))  # `counts = { train = 50 }`
            elif table := re.fullmatch(r"\[\[?[\w.-]*?([A-Za-z_][\w-]*)\]\]?", span):
                names.add(table.group(1))
    return names


def _ours(host: PluginHost, kind: str, name: str) -> bool:
    """Components of this repository's distributions (dualcurate, dualcurate-*): a third-party
    plugin installed in the same environment documents its options itself."""
    info = host.infos.get(host.owner(kind, name) or "")
    dist = (info.distribution or "") if info else ""
    return dist == "dualcurate" or dist.startswith("dualcurate-")


def _options(config: type[BaseModel], prefix: str = "",
             seen: frozenset[type] = frozenset()) -> Iterator[tuple[str, str, Any]]:
    """``(dotted path, name a recipe writes, field)`` for every option of ``config``, and of the
    option tables nested in it (`[source.dedup]`, `[[source.sources]]`)."""
    for field_name, field in config.model_fields.items():
        option = field.alias or field_name  # what a recipe writes (`validate`, not `validate_`)
        yield prefix + option, option, field
        for nested in _models_in(field.annotation):
            if nested not in seen:
                yield from _options(nested, f"{prefix}{option}.", seen | {config})


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def undocumented_options(host: PluginHost | None = None) -> list[str]:
    """One message per option of a registered component missing from its docs page."""
    host = host or PluginHost(autoload=True)
    pages: dict[str, set[str]] = {}
    problems = []
    for kind, registered in host.registry.items():
        for name, cls in sorted(registered.items()):
            config = getattr(cls, "Config", None)
            if config is None or not _ours(host, kind, name):
                continue
            page = _page_for(kind, name)
            if page is None:
                problems.append(f"kind {kind!r} has no docs page: add one to KIND_PAGES in "
                                f"tests/test_docs.py, and document `{kind} {name}` there")
                continue
            if page not in pages:
                pages[page] = documented_names((DOCS / page).read_text(encoding="utf-8"))
            if name not in pages[page]:
                problems.append(f"`{kind} {name}` is not mentioned in docs/{page} (as `{name}` "
                                f"or `use = \"{name}\"`): document it there, or map it to its "
                                f"page in COMPONENT_PAGES")
            for path, option, field in _options(config):
                if field.deprecated or (kind, name, path) in EXCLUDED:
                    continue
                if option not in pages[page]:
                    problems.append(f"`{kind} {name}` option `{path}` is not documented in "
                                    f"docs/{page}; add it (one line: what it does, its "
                                    f"default)")
    return problems


def test_every_stage_option_is_documented() -> None:
    problems = undocumented_options()
    assert not problems, f"{len(problems)} undocumented option(s):\n" + "\n".join(problems)


def test_the_option_check_names_what_is_missing() -> None:
    from dualcurate import Filter, StageConfig, hookimpl

    class KnobConfig(StageConfig):
        undocumented_knob: int = 1

    class KnobFilter(Filter):
        name = "knob-filter"
        Config = KnobConfig

        def process(self, rows: list[dict], ctx: Any) -> list[dict]:
            return rows

    class KnobPlugin:
        @hookimpl
        def dualcurate_register_filters(self, register: Any) -> None:
            register(KnobFilter)

    host = PluginHost(autoload=False)
    host.register(KnobPlugin(), name="knob", distribution="dualcurate-knob")
    problems = [p for p in undocumented_options(host) if "knob-filter" in p]
    assert len(problems) == 2, problems
    assert problems[0].startswith("`filter knob-filter` is not mentioned in docs/difficulty.md")
    assert problems[1].startswith("`filter knob-filter` option `undocumented_knob` is not "
                                  "documented in docs/difficulty.md; add it")


def test_documented_names_reads_spans_and_toml() -> None:
    text = ("`k` and `band = [0.1, 0.9]`, not `a.b`, `[source.cleaning]`\n```toml\n"
            "[[source.sources]]\nround_size = 4\n# stop_risk = 0.05\n"
            "engine = { use = \"vllm\", model = \"m\" }\n```\n`after_fence`, "
            "`counts = { a = { train = 5 } }`")
    assert documented_names(text) == {"k", "band", "cleaning", "sources", "round_size",
                                      "stop_risk", "engine", "use", "vllm", "model",
                                      "after_fence", "counts", "a", "train"}


def test_cli_reference_is_current() -> None:
    committed = (ROOT / CLI_REFERENCE).read_text(encoding="utf-8")
    assert cli_reference() == committed, (f"{CLI_REFERENCE} is out of date with the click "
                                          f"commands: run `make docs` and commit it")


def test_every_command_and_option_has_help() -> None:
    missing = []
    for path, cmd, ctx in walk(curate_group()):
        title = " ".join(path)
        if not (cmd.help or cmd.short_help or "").strip():
            missing.append(f"`{title}` has no help text (its docstring)")
        for param in cmd.get_params(ctx):
            if isinstance(param, click.Option) and not (param.help or "").strip():
                missing.append(f"`{title} {max(param.opts, key=len)}` has no help= text")
    assert not missing, "\n".join(missing)


_LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


@pytest.mark.parametrize("page", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))],
                         ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    for target in _LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL, or an anchor on the same page
        file_part = target.split("#", 1)[0]
        if not (page.parent / file_part).exists():
            broken.append(target)
    assert not broken, (f"{page.relative_to(ROOT)}: links to missing files: "
                        f"{', '.join(broken)}")
