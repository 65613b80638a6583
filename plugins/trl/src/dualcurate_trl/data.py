"""Training examples from rows: the data contract every trainer (and the dual-tuning judge)
shares.

Two input shapes:

* rows with ``prompt`` and ``completion`` columns (TRL's conversational prompt–completion
  format: lists of ``{"role", "content"}`` messages, content a string or a list of parts, images
  as ``{"type": "image", "image": "<sha256>"}``) are trained on as given;
* otherwise canonical rows (question, images, answer, traces with verdicts) are turned into
  examples by ``mode``: ``"long"`` (every correct, untruncated trace is its own example:
  :func:`long_completion`), ``"short"`` (:func:`short_completion` of the gold answer) or
  ``"row"`` (each row's ``mode`` column picks long or short).

Images are resolved through the run's image store: a vision-language model gets them as PIL
images in an ``images`` column with ``{"type": "image"}`` placeholders in the messages (what
TRL's collators expect); a text-only model gets the text parts only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from dualcurate.formats import render_answer, render_trace

Mode = Literal["long", "short", "row"]
Message = dict[str, Any]
ImageLoader = Callable[[str], Any]


#: The L (chain-of-thought) training text: think block, then the answer (rendered by
#: :mod:`dualcurate.formats`, the format's one owner; the name stays for the trainers' users).
long_completion = render_trace
#: The S (direct answer) training text.
short_completion = render_answer


@dataclass
class BuildStats:
    """What example building did: rows in, examples out, rows skipped and why."""

    rows: int = 0
    examples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    images_dropped: int = 0  # image parts a text-only model cannot take

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def describe(self) -> str:
        """One sentence for the run log: ``87 rows → 57 examples; skipped 30 rows with no
        correct untruncated trace and 4 examples longer than max_length``."""
        text = f"{_count(self.rows, 'row')} → {_count(self.examples, 'example')}"
        if not self.skipped:
            return text + ", none skipped"
        parts = [skip_phrase(reason, n) for reason, n in self.skipped.items()]
        listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{text}; skipped {listed}"


#: skip reasons that count examples (the rest count rows)
EXAMPLE_REASONS = frozenset({"longer than max_length"})


def skip_phrase(reason: str, n: int) -> str:
    """``30 rows with no correct untruncated trace``, ``1 example longer than max_length``."""
    joint = " with " if reason.startswith("no ") else " "
    return _count(n, "example" if reason in EXAMPLE_REASONS else "row") + joint + reason


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def has_prompt_completion(columns: Iterable[str]) -> bool:
    """True when rows come in TRL's prompt–completion format (trained on as given)."""
    cols = set(columns)
    return "prompt" in cols and "completion" in cols


def _parts(content: Any) -> list[dict[str, Any]]:
    """Message content as a list of parts; Arrow gives every part every key (None if unset)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [dict(p) for p in content]


def convert_messages(messages: list[Message], vision: bool, load_image: ImageLoader | None,
                     where: str) -> tuple[list[Message], list[Any]]:
    """Messages with image hashes → (messages with placeholders, PIL images in order).

    A vision model keeps structured content with ``{"type": "image"}`` placeholders; a text
    model gets plain string content with images dropped."""
    out: list[Message] = []
    images: list[Any] = []
    for message in messages:
        role = message.get("role")
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"{where}: message role {role!r} is not system/user/assistant; "
                             f"fix the prompt/completion column")
        parts = []
        for part in _parts(message.get("content")):
            kind = part.get("type")
            if kind == "text":
                parts.append({"type": "text", "text": part.get("text") or ""})
            elif kind == "image":
                if not vision:
                    continue
                ref = part.get("image")
                if ref is None:
                    raise ValueError(f"{where}: an image part has no 'image' hash; give the "
                                     f"sha256 of an image in the run's image store")
                if load_image is None:
                    raise ValueError(f"{where}: image {str(ref)[:12]}… but no image store; run "
                                     f"the trainer inside a run (ctx.images) or drop images")
                images.append(load_image(ref) if isinstance(ref, str) else ref)
                parts.append({"type": "image"})
            else:
                raise ValueError(f"{where}: content part type {kind!r} is not text/image")
        if vision:
            out.append({"role": role, "content": parts})
        else:
            out.append({"role": role, "content": "".join(p["text"] for p in parts)})
    return out, images


def question_prompt(question: str, image_hashes: list[str], system_prompt: str | None,
                    vision: bool) -> list[Message]:
    """The user turn for a canonical row: images first, then the question."""
    messages: list[Message] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    content: list[dict[str, Any]] = [{"type": "image", "image": h} for h in image_hashes
                                     if vision]
    content.append({"type": "text", "text": question})
    messages.append({"role": "user", "content": content})
    return messages


def _correct_traces(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in (row.get("traces") or [])
            if t and t.get("verdict") == "correct" and not t.get("truncated")]


def completions_for(row: dict[str, Any], mode: Mode, where: str) -> list[str]:
    """The assistant texts one canonical row yields under ``mode`` (empty: row skipped)."""
    row_mode = mode
    if mode == "row":
        row_mode = row.get("mode")
        if row_mode not in ("long", "short"):
            raise ValueError(f"{where}: mode='row' needs a 'mode' column of 'long'/'short', got "
                             f"{row_mode!r}; run the efficacy judge first or set mode")
    if row_mode == "short":
        return [short_completion(str(row["answer"]))]
    return [long_completion(t.get("reasoning") or "", t.get("answer") or str(row["answer"]))
            for t in _correct_traces(row)]


def _count_images(row: dict[str, Any]) -> int:
    if row.get("prompt") is not None:
        return sum(1 for m in row["prompt"] for p in _parts(m.get("content"))
                   if p.get("type") == "image")
    return len(row.get("images") or [])


def build_examples(rows: Iterable[dict[str, Any]], *, mode: Mode = "long",
                   system_prompt: str | None = None, vision: bool = False,
                   load_image: ImageLoader | None = None,
                   with_completion: bool = True,
                   keep_columns: tuple[str, ...] = ()) -> tuple[list[dict[str, Any]], BuildStats]:
    """Rows → TRL examples ``{"prompt", "completion"?, "images"?, *keep_columns}``.

    ``with_completion=False`` builds prompts only (for GRPO: one example per row, the gold
    answer kept in ``answer``)."""
    stats = BuildStats()
    examples: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        stats.rows += 1
        where = f"row {index} (id {row.get('id') or '?'})"
        if not vision:
            stats.images_dropped += _count_images(row)
        extra = {c: row.get(c) for c in keep_columns}
        if "prompt" in row and row["prompt"] is not None and (
                "completion" in row or not with_completion):
            prompt, images = convert_messages(list(row["prompt"]), vision, load_image, where)
            example: dict[str, Any] = {"prompt": prompt, **extra}
            if with_completion:
                completion, more = convert_messages(list(row["completion"]), vision,
                                                    load_image, where)
                if more:
                    raise ValueError(f"{where}: images in the completion are not supported; "
                                     f"put them in the prompt")
                example["completion"] = completion
            if vision:
                example["images"] = images
            examples.append(example)
            continue
        for col in ("question", "answer"):
            if row.get(col) is None:
                raise ValueError(f"{where}: no {col!r} column and no prompt/completion; give "
                                 f"canonical rows or TRL prompt-completion rows")
        raw = question_prompt(row["question"], list(row.get("images") or []), system_prompt,
                              vision)
        prompt, images = convert_messages(raw, vision, load_image, where)
        if not with_completion:
            example = {"prompt": prompt, **extra}
            if vision:
                example["images"] = images
            examples.append(example)
            continue
        texts = completions_for(row, mode, where)
        if not texts:
            stats.skip("no correct untruncated trace")
            continue
        for text in texts:
            example = {"prompt": prompt,
                       "completion": [{"role": "assistant", "content": text}], **extra}
            if vision:
                example["completion"] = [{"role": "assistant",
                                          "content": [{"type": "text", "text": text}]}]
                example["images"] = list(images)
            examples.append(example)
    stats.examples = len(examples)
    return examples, stats


def to_dataset(examples: list[dict[str, Any]], vision: bool):  # -> datasets.Dataset
    """Examples → ``datasets.Dataset`` (images as an Image-feature list when ``vision``)."""
    import datasets

    if not examples:
        raise ValueError("no training examples: every row was skipped (mode='long' needs "
                         "traces with verdict 'correct'); verify traces first or use "
                         "mode='short'")
    if not vision:
        return datasets.Dataset.from_list(examples)
    rest = [{k: v for k, v in ex.items() if k != "images"} for ex in examples]
    features = datasets.Dataset.from_list(rest).features
    features["images"] = datasets.List(datasets.Image())
    return datasets.Dataset.from_list(examples, features=features)


def warn_dropped_images(ctx: Any, count: int, model: str) -> None:
    """Say once that a text-only model trains without the rows' images."""
    if count:
        ctx.log.warning("%d image(s) dropped: model %s has no vision tower, so it trains on "
                        "the text only; use a vision-language model to train on them",
                        count, model)
