"""Small learnable data sets for tests, the benchmark and examples: the answer is a function of
the question (arithmetic) or of the image's colour (vision), so a tiny model's loss falls."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from dualcurate.formats import last_answer, render_trace, split_think

if TYPE_CHECKING:
    import datasets

    from dualcurate import StageContext

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
           "yellow": (255, 255, 0)}


def trace(reasoning: str, answer: str, verdict: str = "correct",
          truncated: bool = False) -> dict[str, Any]:
    """A verified trace as the verifier leaves it."""
    return {"text": render_trace(reasoning, answer),
            "reasoning": reasoning, "answer": answer, "verdict": verdict,
            "truncated": truncated}


def arithmetic_rows(n: int = 8) -> list[dict[str, Any]]:
    """Canonical rows "What is i + i?" with one correct trace each."""
    from dualcurate import Sample

    rows = []
    for i in range(n):
        row = Sample(source="toy", domain="math", question=f"What is {i} + {i}?",
                     answer=str(2 * i), answer_type="number").to_row()
        row["traces"] = [trace(f"{i} plus {i} is {2 * i}", str(2 * i))]
        rows.append(row)
    return rows


def colour_rows(ctx: StageContext) -> list[dict[str, Any]]:
    """Canonical rows with one plain-colour image each (stored in ``ctx.images``)."""
    from PIL import Image

    from dualcurate import Sample

    if ctx.images is None:
        raise ValueError("colour_rows needs a context with an image store")
    rows = []
    for name, rgb in COLOURS.items():
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), rgb).save(buf, format="PNG")
        digest = ctx.images.put(buf.getvalue())
        rows.append(Sample(source="toy", domain="perception", question="What is the colour?",
                           answer=name, images=[digest]).to_row())
    return rows


def to_hf(rows: list[dict[str, Any]]) -> datasets.Dataset:
    """Rows → ``datasets.Dataset`` with the canonical column types."""
    import datasets

    from dualcurate import rows_to_table

    return datasets.Dataset(rows_to_table(rows))


def answer_tag_check(gold: str, response: str, question: str | None = None) -> SimpleNamespace:
    """A minimal stand-in for ``dualcurate_verify.check`` (tests of the reward plumbing only):
    correct when the last ``<answer>`` after the think block equals the gold answer."""
    _, rest = split_think(response)
    found = last_answer(rest) if rest is not None else None
    ok = found is not None and found.strip() == gold.strip()
    return SimpleNamespace(verdict="correct" if ok else "incorrect")
