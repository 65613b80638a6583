"""S and L versions of samples, the mode-selecting prompts, and the per-group eval split.

* S (short, direct): prompt with the direct-mode prefix → ``<answer>{answer}</answer>``.
* L (long, reasoning): prompt with the reasoning-mode prefix →
  ``<think>{reasoning}</think>\\n<answer>{answer}</answer>``, from the sample's verified
  traces (verdict ``correct``) only.

Prompts and completions are rendered by :mod:`dualcurate.formats`, as every trainer renders
them.

Training rows carry ``prompt`` and ``completion`` as chat messages (every content a list of
parts; images as ``{"type": "image", "image": sha256}``), which is what the trainer plugins
take.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from dualcurate.errors import DualcurateError
from dualcurate.formats import MODE_PREFIXES, render_answer, render_mode_prompt, render_trace

Mode = Literal["short", "long"]
SHORT: Mode = "short"
LONG: Mode = "long"
MODES: tuple[Mode, ...] = (SHORT, LONG)
SCORE_KEY = {SHORT: "S", LONG: "L"}


@dataclass(frozen=True)
class ModePrompts:
    """What selects the mode: a system prompt and a prefix on the user's text, per mode."""

    system_short: str = ""
    system_long: str = ""
    user_prefix_short: str = MODE_PREFIXES["short"]
    user_prefix_long: str = MODE_PREFIXES["long"]
    show_choices: bool = True

    def messages(self, row: dict[str, Any], mode: Mode) -> list[dict[str, Any]]:
        """The prompt messages for ``row`` in ``mode`` (system message only when set)."""
        system = self.system_short if mode == SHORT else self.system_long
        prefix = self.user_prefix_short if mode == SHORT else self.user_prefix_long
        text = render_mode_prompt(question_text(row, self.show_choices), prefix)
        parts: list[dict[str, Any]] = [{"type": "image", "image": digest}
                                       for digest in row.get("images") or []]
        parts.append({"type": "text", "text": text})
        messages: list[dict[str, Any]] = []
        if system:
            messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
        messages.append({"role": "user", "content": parts})
        return messages


def question_text(row: dict[str, Any], show_choices: bool = True) -> str:
    """The question, with lettered options appended for multiple choice unless the question
    already lists them."""
    question = str(row.get("question") or "")
    choices = [str(c) for c in row.get("choices") or []]
    if not show_choices or not choices or all(c in question for c in choices):
        return question
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    lines = [f"{letters[i]}. {c}" if i < len(letters) else c for i, c in enumerate(choices)]
    return question + "\n" + "\n".join(lines)


def verified_traces(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Traces whose verdict is ``correct`` and that carry reasoning, in stored order."""
    return [t for t in row.get("traces") or []
            if t and t.get("verdict") == "correct" and (t.get("reasoning") or "").strip()]


def training_examples(rows: Iterable[dict[str, Any]], modes: dict[str, Mode | str],
                      group_by: str, prompts: ModePrompts,
                      max_traces: int = 1) -> list[dict[str, Any]]:
    """Trainer rows for ``rows``: for each row, its S example when its group's entry in
    ``modes`` is ``short`` or ``dual``, and up to ``max_traces`` L examples (one per verified
    trace) when it is ``long`` or ``dual``. Groups absent from ``modes`` contribute nothing."""
    out: list[dict[str, Any]] = []
    for row in rows:
        group = group_of(row, group_by)
        which = modes.get(group)
        if which is None:
            continue
        base = {"id": row["id"], group_by: group, "images": list(row.get("images") or [])}
        if which in (SHORT, "dual"):
            out.append({**base, "mode": SHORT, "prompt": prompts.messages(row, SHORT),
                        "completion": assistant(render_answer(str(row["answer"])))})
        if which in (LONG, "dual"):
            for trace in verified_traces(row)[:max_traces]:
                answer = (trace.get("answer") or "").strip() or str(row["answer"])
                out.append({**base, "mode": LONG, "prompt": prompts.messages(row, LONG),
                            "completion": assistant(render_trace(trace["reasoning"].strip(),
                                                                 answer))})
    return out


def assistant(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def group_of(row: dict[str, Any], group_by: str) -> str:
    value = row.get(group_by)
    return "(none)" if value is None or value == "" else str(value)


@dataclass
class GroupSplit:
    """One group's rows, held-out eval rows apart from the rest."""

    group: str
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    how: Literal["column", "seeded"]


def split_groups(rows: list[dict[str, Any]], group_by: str, eval_fraction: float,
                 eval_min: int, eval_max: int | None, seed: int) -> list[GroupSplit]:
    """Group rows by ``group_by`` (groups in order of first appearance) and hold out an eval
    split per group: the rows with ``split == "eval"`` when the group has any, else a seeded
    ``eval_fraction`` (at least ``eval_min``, at most ``eval_max``), chosen independently of
    row order."""
    if rows and group_by not in rows[0]:
        have = ", ".join(sorted(rows[0])) or "(none)"
        raise DualcurateError(f"dual-tuning: group_by={group_by!r} is not a column of the "
                              f"dataset (columns: {have}); set group_by to one of them")
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(group_of(row, group_by), []).append(row)
    out = []
    for group, members in groups.items():
        marked = [r for r in members if r.get("split") == "eval"]
        if marked:
            held = {id(r) for r in marked}
            out.append(GroupSplit(group, [r for r in members if id(r) not in held], marked,
                                  "column"))
            continue
        n_eval = max(eval_min, round(eval_fraction * len(members)))
        if eval_max is not None:
            n_eval = min(n_eval, eval_max)
        n_eval = min(n_eval, len(members))
        order = sorted(range(len(members)), key=lambda i: str(members[i].get("id", i)))
        random.Random(f"{seed}:{group}").shuffle(order)
        held_idx = set(order[:n_eval])
        out.append(GroupSplit(group, [r for i, r in enumerate(members) if i not in held_idx],
                              [r for i, r in enumerate(members) if i in held_idx], "seeded"))
    return out
