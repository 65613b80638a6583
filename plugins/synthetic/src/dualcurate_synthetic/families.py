"""Task families of the synthetic source: pure Python, no images (``render.py`` draws them).

Every scene is four coloured shapes (``render.py`` draws them in reading order: a 2 x 2 grid
in a square picture, a row in a wide one). The students read the pixels, so each family asks
about what a tiny vision tower sees easily (colours, positions), never about rendered glyphs,
and each is chosen so that the answer to "reasoning or direct?" is known in advance:

* ``colour-ops`` (multi-step): each colour is an operation on one digit, said in the question
  ("Start at 1. Red adds 1, green adds 3, blue triples, yellow multiplies by 7; keep only the
  last digit after each step."), applied in reading order. The reference solution reads the
  four colours, then applies one operation per step (``1+1=2. 2*3=6. 6*7=42. 2+3=5.``): each
  step is one colour and one small operation, which a small model learns; the direct answer
  depends on all four colours and their order (256 sequences, 10 answers near uniform), which
  it does not learn from a few hundred examples. A sum of fixed colour values (the same four
  colours, an addition per step) did not do this: the sum depends only on which colours are
  present, which the direct mode learned as well as the trace did (docs/demo.md).
* ``nth-colour`` (perception): "what colour is the third shape?" (any of the four ordinals).
  Answered directly, one look at the asked shape. Its reference solution is what teacher
  chain-of-thought on perception often is: verbose, and partly unfaithful in its intermediate
  statements (a scan of all four shapes that often misreads a colour as its neighbour's), before
  a closer look ends on the right answer. A student that imitates the scan learns an easy but
  unreliable shortcut (read the answer off its own scan) where the direct mode has to learn the
  exact look.
* ``last-shape`` (noisy labels): "what shape is the last one?". In the train split the labels
  are corrupted (a wrong shape), and the reference solution argues for the wrong label; eval
  labels are correct. In a 2 x 2 grid of a 64 x 64 picture each shape is 24 px wide, large
  enough for the base to tell the four shapes apart, so corrupted training has something to
  lower.

A :class:`Puzzle` holds what the source turns into a canonical row.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle", "diamond")
N_ITEMS = 4
ORDINALS = ("first", "second", "third", "fourth")

QUESTIONS = {
    "colour-ops": ("Start at 1. Red adds 1, green adds 3, blue triples, yellow multiplies by 7; "
                   "keep only the last digit after each step. Apply the four shapes in reading "
                   "order: what is the result?"),
    "nth-colour": "What colour is the {ordinal} shape?",
    "last-shape": "What shape is the last one?",
}
FAMILIES = tuple(QUESTIONS)

SHAPES_OPENING = "Four shapes, in reading order:"
SHAPES_ARE = "the shapes are"
#: the base model's extra pre-training task: name every shape, so that it learns to see
DESCRIBE = "Describe the shapes in reading order."
LAST_SHAPE_PLAN = "name the last shape."
#: what each family is for; the report and docs show it.
FAMILY_ROLES = {
    "colour-ops": "multi-step (expected: reasoning-benefit)",
    "nth-colour": "perception (expected: direct-benefit)",
    "last-shape": "labels corrupted in the train split (expected: detrimental)",
}


@dataclass
class Puzzle:
    """One rendered-to-be puzzle: the scene to draw and the texts of its canonical row."""

    family: str
    kind: str  # "shapes"
    items: list[dict[str, Any]]
    question: str
    answer: str
    caption: str
    info: str
    plan: str
    steps: str
    check: str
    answer_type: str = "text"
    choices: list[str] = field(default_factory=list)
    true_answer: str = ""
    corrupted: bool = False

    @property
    def solution(self) -> str:
        """The step-by-step reference solution in the four phases of the distillation
        prompt: extract the information, set up the problem, execute the steps, check."""
        return (f"Information: {self.info} Plan: {self.plan} Steps: {self.steps} "
                f"Check: {self.check}")

    def key(self) -> tuple:
        """What makes two puzzles the same (used to keep eval disjoint from train)."""
        return (self.family, tuple(tuple(sorted(i.items())) for i in self.items))


def random_scene(rng: random.Random) -> list[dict[str, Any]]:
    """Four shapes, each a shape and a colour drawn uniformly, in reading order."""
    return [{"shape": rng.choice(SHAPES), "colour": rng.choice(COLOURS)}
            for _ in range(N_ITEMS)]


def shapes_caption(items: list[dict[str, Any]]) -> str:
    parts = ", ".join(f"{i['colour']} {i['shape']}" for i in items)
    return f"{SHAPES_OPENING} {parts}."


def describe_answer(items: list[dict[str, Any]]) -> str:
    """What :data:`DESCRIBE` asks for: ``red circle, blue square, ...``."""
    return ", ".join(f"{i['colour']} {i['shape']}" for i in items)


#: what each colour does in ``colour-ops``: (operator, operand), applied modulo 10
OPS = {"red": ("+", 1), "green": ("+", 3), "blue": ("*", 3), "yellow": ("*", 7)}
THE_RESULT_IS = "the result is"
OPS_PLAN = "apply them one at a time."


def colour_ops(rng: random.Random, corrupt: bool = False) -> Puzzle:
    items = random_scene(rng)
    state, steps = 1, []
    for item in items:
        op, operand = OPS[item["colour"]]
        full = state + operand if op == "+" else state * operand
        steps.append(f"{state}{op}{operand}={full}")
        state = full % 10
    answer = str(state)
    read = ", ".join(i["colour"] for i in items)
    return Puzzle("colour-ops", "shapes", items, QUESTIONS["colour-ops"], answer,
                  shapes_caption(items), info=f"{SHAPES_ARE} {read}.", plan=OPS_PLAN,
                  steps=". ".join(steps) + ".", check=f"{THE_RESULT_IS} {answer}.",
                  answer_type="number", true_answer=answer)


def nth_colour(rng: random.Random, corrupt: bool = False,
               misread_rate: float = 0.6) -> Puzzle:
    items = random_scene(rng)
    k = rng.randrange(N_ITEMS)
    ordinal = ORDINALS[k]
    answer = items[k]["colour"]
    # The extraction phase is verbose and partly unfaithful, as teacher traces on perception
    # often are: it reads every shape, often misreading a colour as its next neighbour's
    # (colour bleeding), before the steps take a closer look and end on the right answer.
    readings = []
    for pos, item in enumerate(items):
        neighbour = items[(pos + 1) % len(items)]["colour"]
        colour = neighbour if rng.random() < misread_rate else item["colour"]
        readings.append(f"the {ORDINALS[pos]} looks {colour}")
    return Puzzle("nth-colour", "shapes", items, QUESTIONS["nth-colour"].format(ordinal=ordinal),
                  answer, shapes_caption(items), info=", ".join(readings) + ".",
                  plan=f"look closer at the {ordinal} shape.",
                  steps=f"the {ordinal} shape is a {answer} {items[k]['shape']}.",
                  check=f"its colour is {answer}.",
                  choices=list(COLOURS), true_answer=answer)


def last_shape(rng: random.Random, corrupt: bool = False) -> Puzzle:
    items = random_scene(rng)
    truth = items[-1]["shape"]
    label = rng.choice([s for s in SHAPES if s != truth]) if corrupt else truth
    colour = items[-1]["colour"]
    return Puzzle("last-shape", "shapes", items, QUESTIONS["last-shape"], label,
                  shapes_caption(items), info=f"the last shape is {colour}.",
                  plan=LAST_SHAPE_PLAN,
                  steps=f"the {colour} shape is a {label}.",
                  check=f"it is a {label}.",
                  choices=list(SHAPES), true_answer=truth, corrupted=label != truth)


GENERATORS = {"colour-ops": colour_ops, "nth-colour": nth_colour, "last-shape": last_shape}
#: families whose train-split labels are corrupted.
CORRUPTED_IN_TRAIN = frozenset({"last-shape"})

#: The fixed wording of captions, questions and reference solutions (every text here but
#: the colours, shapes and numbers). The demo's tokenizer makes each phrase one token, as a
#: tokenizer trained on this text would merge it; variable content stays characters.
PHRASES: tuple[str, ...] = (
    SHAPES_OPENING,
    QUESTIONS["colour-ops"], QUESTIONS["last-shape"], DESCRIBE,
    f" {THE_RESULT_IS}", f" {OPS_PLAN}",
    *(QUESTIONS["nth-colour"].format(ordinal=o) for o in ORDINALS),
    "Information:", " Plan:", " Steps:", " Check:",
    f" {SHAPES_ARE}",
    *(f" the {o} looks" for o in ORDINALS),
    *(f" look closer at the {o} shape." for o in ORDINALS),
    *(f" the {o} shape is a" for o in ORDINALS),
    " its colour is", " the last shape is", f" {LAST_SHAPE_PLAN}", " shape is a", " it is a",
)


def student_question(puzzle: Puzzle) -> str:
    """The question as a text-only student reads it: the caption, then the question."""
    return f"{puzzle.caption}\n{puzzle.question}"


def make_puzzles(family: str, n_train: int, n_eval: int, seed: int,
                 corrupt_train: bool = True) -> list[tuple[str, Puzzle]]:
    """``n_eval`` eval puzzles then ``n_train`` train puzzles of one family, as (split,
    puzzle), deterministic by seed; no scene appears twice (so eval never leaks into train).
    Raises ValueError when the family has fewer distinct scenes than asked for."""
    if family not in GENERATORS:
        raise ValueError(f"family {family!r}: unknown; choose from {', '.join(FAMILIES)}")
    gen = GENERATORS[family]
    rng = random.Random(f"{family}:{seed}")
    seen: set[tuple] = set()
    out: list[tuple[str, Puzzle]] = []
    for split, count in (("eval", n_eval), ("train", n_train)):
        corrupt = split == "train" and corrupt_train and family in CORRUPTED_IN_TRAIN
        made, tries = 0, 0
        while made < count:
            tries += 1
            if tries > 50 * count + 1000:
                raise ValueError(f"family {family!r}: could not draw {count} distinct "
                                 f"{split} puzzles; ask for fewer")
            puzzle = gen(rng, corrupt=corrupt)
            if puzzle.key() in seen:
                continue
            seen.add(puzzle.key())
            out.append((split, puzzle))
            made += 1
    return out


def known_families(value: list[str]) -> list[str]:
    """``value`` when it names only families this plugin has (an options validator)."""
    unknown = [f for f in value if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; choose from {list(FAMILIES)}")
    return value
