"""pytest plugin (entry point ``pytest11: dualcurate``): fixtures for plugin authors.

Fixtures:

* ``plugin_host``: a fresh :class:`~dualcurate.PluginHost` with autoload off (built-ins only).
* ``register_plugin``: ``register_plugin(obj, name=None)`` registers a plugin object on
  ``plugin_host`` for the test and unregisters it afterwards.
* ``stage_context``: a :class:`~dualcurate.StageContext` backed by a run store in ``tmp_path``.
* ``run_cli``: ``run_cli("run", "recipe.toml", ...)`` runs ``curate`` in a fresh temporary
  working directory (in-process, through the real entry function) and returns a result with
  ``exit_code``, ``stdout``, ``stderr`` and ``cwd``. ``curate run`` writes its run summary
  (the stage table, plugins' summaries) and progress to stderr; stdout holds what a command
  prints as its result (``curate plugins``, ``curate validate``, ``curate inspect``).
* ``tiny_lm_dir`` / ``tiny_llava_dir``: session-scoped tiny models saved once per test session.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dualcurate.context import StageContext
from dualcurate.plugins import PluginHost


@pytest.fixture
def plugin_host() -> PluginHost:
    """A fresh :class:`~dualcurate.PluginHost` with autoload off: core's built-ins only (an
    installed plugin is loaded when a lookup names it). Register yours with
    ``register_plugin``."""
    return PluginHost(autoload=False)


@pytest.fixture
def register_plugin(plugin_host: PluginHost) -> Iterator[Callable[..., str]]:
    """``register_plugin(obj, name=None) -> name``: registers a plugin object (your plugin
    module, or an instance with ``@hookimpl`` methods) on ``plugin_host`` for this test and
    unregisters it afterwards. A misspelt hook raises ``RegistrationError``; a method named
    like a hook without ``@hookimpl`` warns (``PluginWarning``)."""
    names: list[str] = []

    def register(plugin: object, name: str | None = None) -> str:
        info = plugin_host.register(plugin, name=name)
        names.append(info.name)
        return info.name

    yield register
    for name in names:
        plugin_host.unregister(name)


@pytest.fixture
def stage_context(tmp_path: Path, plugin_host: PluginHost) -> Iterator[StageContext]:
    """A :class:`~dualcurate.StageContext` for calling a stage or engine directly
    (``stage.setup(ctx)``, ``stage.process(rows, ctx)``): a run store, image store and request
    cache under ``tmp_path``, and ``plugin_host`` as its host (``ctx.engine``,
    ``ctx.make_stage``). Closed after the test."""
    ctx = StageContext.ephemeral(stage_name="stage", root=tmp_path / "run", host=plugin_host)
    yield ctx
    ctx.close()
    if ctx.cache is not None:
        ctx.cache.close()


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    cwd: Path


@pytest.fixture
def run_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """``run_cli(*args, env=None) -> CliResult``: runs ``curate ARGS`` in-process in a fresh
    temporary working directory (``cwd``), with ``env`` set for the call. The result has
    ``exit_code`` (0 ok, 2 a user error, 1 a stage failure), ``stdout`` (a command's output)
    and ``stderr`` (errors, and ``curate run``'s progress and run summary)."""
    workdir = tmp_path / "cli"
    workdir.mkdir()

    def run(*args: str, env: dict[str, str] | None = None) -> CliResult:
        from dualcurate import cli as cli_module

        monkeypatch.chdir(workdir)
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        out, err = io.StringIO(), io.StringIO()
        code = 0
        old_out, old_err = cli_module.out_console.file, cli_module.err_console.file
        cli_module.out_console.file, cli_module.err_console.file = out, err
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    cli_module.main(list(args))
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            cli_module.out_console.file, cli_module.err_console.file = old_out, old_err
        return CliResult(code, out.getvalue(), err.getvalue(), workdir)

    return run


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2-style causal LM saved once per session (copy it before training)."""
    from dualcurate.testing.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm") / "model")


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaVA-style vision-language model saved once per session (copy it before
    training)."""
    from dualcurate.testing.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava") / "model")


def pytest_configure(config: pytest.Config) -> None:
    # Plugins tests must not pick up whatever else is installed by accident.
    os.environ.setdefault("DUALCURATE_TESTING", "1")
