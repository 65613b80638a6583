"""A quiet terminal during ``curate run``: what third-party libraries print (transformers' and
TRL's warnings, datasets' and tqdm's progress bars, vLLM's engine logs, anything a stage's
subprocess writes) goes to the run's log file; the terminal keeps dualcurate's own output (one
rich bar per stage, notes, the tables, errors). ``curate -v run`` leaves everything on screen.

Three layers, because libraries reach the terminal in three ways:

* Python objects: ``sys.stdout`` / ``sys.stderr`` point at the log while the run lasts (tqdm
  and logging's last-resort handler look them up when they write), and warnings are shown
  into it;
* logging handlers that captured a terminal stream when they were created (transformers',
  vLLM's) are pointed at the log and back;
* file descriptors 1 and 2 are duplicated onto the log (C extensions, worker processes such as
  vLLM's engine core or ``accelerate launch``), when they are real descriptors.

The console that draws the bars is pinned to the terminal before any of this, so it is not
redirected with the rest.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

LOG_NAME = "run.log"


def _fd(stream: Any) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _terminal_streams() -> list[Any]:
    return [s for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__) if s is not None]


@contextlib.contextmanager
def held_warnings(verbose: bool = False) -> Iterator[list[str]]:
    """Hold the warnings raised in the block (validation builds TRL configs, which warn) as
    formatted text, to be written to the run's log once it exists. ``verbose``: show them."""
    held: list[str] = []
    if verbose:
        yield held
        return
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        yield held
    held.extend(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line)
                for w in caught)


@contextlib.contextmanager
def third_party_to_log(log_path: str | Path, consoles: list[Any], verbose: bool = False,
                       preamble: list[str] | None = None) -> Iterator[Path]:
    """While the block runs, send third-party output to ``log_path`` (appended, after the
    ``preamble`` lines); the rich ``consoles`` keep writing where they wrote before.
    ``verbose``: change nothing."""
    log_path = Path(log_path)
    if verbose:
        yield log_path
        return
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log: TextIO = open(log_path, "a", encoding="utf-8", buffering=1)
    except OSError:  # the run store says what is wrong with the folder, better than we can
        yield log_path
        return
    log.write(f"\n===== curate run {time.strftime('%Y-%m-%d %H:%M:%S')} (pid {os.getpid()}) "
              f"=====\n")
    log.writelines(preamble or [])
    log.flush()
    restore: list[Any] = []
    try:
        # 1. pin each console to where it writes now (a dup of the terminal's descriptor when
        #    that descriptor is about to be redirected)
        for console in consoles:
            old = console._file  # None: the console follows sys.stdout/sys.stderr
            target = console.file
            fd = _fd(target)
            if fd in (1, 2):
                dup = os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8",
                                errors="replace")
                # keep what rich decided from the real terminal (colours, width, live bars)
                saved = (console._force_terminal, console._width)
                is_terminal, width = console.is_terminal, console.width
                console.file = dup
                console._force_terminal, console._width = is_terminal, width

                def undo(c: Any = console, o: Any = old, d: Any = dup, v: Any = saved) -> None:
                    c.file = o
                    c._force_terminal, c._width = v
                    d.close()

                restore.append(undo)
            else:
                console.file = target
                restore.append(lambda c=console, o=old: setattr(c, "file", o))
        # 2. logging handlers holding a terminal stream
        streams = _terminal_streams()
        for handler in _stream_handlers():
            if any(handler.stream is s for s in streams):
                try:
                    old_stream = handler.setStream(log)
                except AttributeError:  # a handler that looks sys.stderr up itself
                    continue
                restore.append(lambda h=handler, s=old_stream: h.setStream(s))
        # 3. the Python-level streams
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = log
        restore.append(lambda: (setattr(sys, "stdout", old_out), setattr(sys, "stderr", old_err)))
        # 4. warnings, even where a warnings recorder (pytest's, a library's) is active
        import warnings

        held = warnings.catch_warnings()
        held.__enter__()

        def to_log(message: Any, category: Any, filename: str, lineno: int,
                   file: Any = None, line: str | None = None) -> None:
            log.write(warnings.formatwarning(message, category, filename, lineno, line))

        warnings.showwarning = to_log
        restore.append(lambda: held.__exit__(None, None, None))
        # 5. the descriptors (worker processes, C code)
        for fd in (1, 2):
            saved = _dup_onto(fd, log.fileno())
            if saved is not None:
                restore.append(lambda f=fd, s=saved: (os.dup2(s, f), os.close(s)))
        yield log_path
    finally:
        with contextlib.suppress(Exception):
            log.flush()
        for undo in reversed(restore):
            with contextlib.suppress(Exception):
                undo()
        log.close()


def _dup_onto(fd: int, target: int) -> int | None:
    """Point descriptor ``fd`` at ``target``; return a copy of what it was (None: no such fd)."""
    try:
        saved = os.dup(fd)
    except OSError:
        return None
    with contextlib.suppress(Exception):
        sys.__stdout__ and sys.__stdout__.flush()
        sys.__stderr__ and sys.__stderr__.flush()
    os.dup2(target, fd)
    return saved


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    seen: dict[int, logging.StreamHandler] = {}
    for lg in loggers:
        for h in lg.handlers:
            if type(h) is logging.StreamHandler or (isinstance(h, logging.StreamHandler)
                                                    and not isinstance(h, logging.FileHandler)):
                seen[id(h)] = h
    return list(seen.values())
