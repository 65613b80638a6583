"""pytest plugin (entry point ``pytest11: dualcurate``): fixtures for plugin authors.

Fixtures:

* ``plugin_host``: a fresh :class:`~dualcurate.PluginHost` with autoload off (built-ins only).
* ``register_plugin``: ``register_plugin(obj, name=None)`` registers a plugin object on
  ``plugin_host`` for the test and unregisters it afterwards.
* ``stage_context``: a :class:`~dualcurate.StageContext` backed by a run store in ``tmp_path``.
* ``run_cli``: ``run_cli("run", "recipe.toml", ...)`` runs ``curate`` in a fresh temporary
  working directory (in-process, through the real entry function) and returns a result with
  ``exit_code``, ``stdout``, ``stderr`` and ``cwd``.
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
    return PluginHost(autoload=False)


@pytest.fixture
def register_plugin(plugin_host: PluginHost) -> Iterator[Callable[..., str]]:
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
    """Run ``curate ARGS`` in-process in a temporary working directory."""
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
    from dualcurate.testing.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm") / "model")


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dualcurate.testing.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava") / "model")


def pytest_configure(config: pytest.Config) -> None:
    # Plugins tests must not pick up whatever else is installed by accident.
    os.environ.setdefault("DUALCURATE_TESTING", "1")
