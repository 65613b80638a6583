"""The demo's tiny base model: a Qwen2 from config with a tokenizer built locally, briefly
pre-trained on freshly drawn puzzles of every family with correct labels in both answer modes
(direct and step by step), so it starts clearly above chance everywhere.

It is the ``synthetic-base`` model builder (:class:`SyntheticBaseBuilder`), named in a recipe's
``[models]`` table::

    [models.base]
    path = "runs/.cache/demo-base-seed0"
    build = { use = "synthetic-base", seed = 0, steps = 300 }

The pipeline builds it before the stages run when the folder is missing or was built with other
options, and reuses it otherwise (:func:`dualcurate.models.ensure_model`). torch and
transformers are imported only when a model has to be built.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from dualcurate import StageConfig
from dualcurate.models import ModelBuilder
from dualcurate_synthetic.families import (
    FAMILIES,
    GENERATORS,
    Puzzle,
    known_families,
    student_question,
)
from dualcurate_synthetic.prompts import MODE_INSTRUCTIONS, completion_text, prompt_messages

if TYPE_CHECKING:
    from dualcurate.context import StageContext

#: bump when the pre-training recipe changes in a way the options do not show (it is the
#: builder's ``version``, so a bump rebuilds every cached base model)
RECIPE_VERSION = 3


class BaseModelConfig(StageConfig):
    """What the base model is made of: the seed and families of its pre-training puzzles, the
    Qwen2's size and the pre-training run. ``threads`` (torch CPU threads) is runtime-only."""

    seed: int = 0
    families: list[str] = Field(default_factory=lambda: list(FAMILIES))
    hidden_size: int = Field(default=128, ge=1)
    intermediate_size: int = Field(default=256, ge=1)
    layers: int = Field(default=4, ge=1)
    heads: int = Field(default=2, ge=1)
    steps: int = Field(default=300, ge=0)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    examples_per_family: int = Field(default=150, ge=1)
    threads: int = Field(default=2, ge=1)

    runtime_fields = frozenset({"threads"})

    @field_validator("families")
    @classmethod
    def _known_families(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"pre-train on at least one family; choose from {list(FAMILIES)}")
        return known_families(value)

    @model_validator(mode="after")
    def _heads_divide_hidden_size(self) -> BaseModelConfig:
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of heads "
                             f"{self.heads}; each head gets hidden_size / heads dimensions")
        return self


class SyntheticBaseBuilder(ModelBuilder):
    """The offline demo's tiny base model (a Qwen2 from config, briefly pre-trained on
    correct-label puzzles of ``families``, drawn from ``seed``). Its signature covers every
    option but ``threads`` and :data:`RECIPE_VERSION`: change any and the model is rebuilt."""

    name = "synthetic-base"
    Config = BaseModelConfig
    version = str(RECIPE_VERSION)

    def build(self, out: Path, ctx: StageContext) -> None:
        cfg = self.config
        build_and_pretrain(out, cfg, cfg.seed, list(cfg.families))


def pretraining_puzzles(families: list[str], per_family: int, seed: int) -> list[Puzzle]:
    """Correct-label puzzles for pre-training, drawn from a stream of their own (not the
    source's train/eval puzzles)."""
    rng = random.Random(f"pretrain:{seed}")
    return [GENERATORS[f](rng, corrupt=False) for f in families for _ in range(per_family)]


def build_tokenizer(out_dir: Path | None = None) -> Any:
    """A character-level tokenizer with the puzzles' fixed wording as single tokens.

    The model is a byte-level BPE without merges, so every character of variable content
    (colours, shapes, digits) is a token of its own: "red" in a caption and in
    ``<answer>red</answer>`` is the same three tokens, so an answer is copied out of the caption
    letter by letter, and sums are written digit by digit. The template text that never varies
    (:data:`~dualcurate_synthetic.families.PHRASES`: caption openings, questions, the four
    phase labels, the mode instructions, the chat roles) is added as whole tokens, as a
    tokenizer trained on this text would merge it, which keeps sequences short. The chat and
    reasoning markers are single tokens too; the chat template is Qwen-style."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from dualcurate.testing.tiny import CHAT_TEMPLATE, MARKER_TOKENS, SPECIAL_TOKENS
    from dualcurate_synthetic.families import PHRASES

    symbols = [*SPECIAL_TOKENS, *sorted(pre_tokenizers.ByteLevel.alphabet())]
    tok = Tokenizer(models.BPE(vocab={s: i for i, s in enumerate(symbols)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token=None, bos_token=None, additional_special_tokens=["<|im_start|>", "<image>"])
    hf_tok.add_tokens([*MARKER_TOKENS, *PHRASES, *MODE_INSTRUCTIONS.values(),
                       "system", "user", "assistant"])
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.padding_side = "left"
    if out_dir is not None:
        hf_tok.save_pretrained(str(out_dir))
    return hf_tok


def build_model(tokenizer: Any, settings: Any, seed: int) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen2Config

    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=settings.hidden_size,
                         intermediate_size=settings.intermediate_size,
                         num_hidden_layers=settings.layers,
                         num_attention_heads=settings.heads,
                         num_key_value_heads=settings.heads, max_position_embeddings=1024,
                         tie_word_embeddings=True, eos_token_id=eos,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(eos_token_id=eos,
                                               pad_token_id=tokenizer.pad_token_id,
                                               do_sample=False)
    return model


def encode_example(tokenizer: Any, puzzle: Puzzle, mode: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one example; labels are -100 on the prompt."""
    prompt = tokenizer.apply_chat_template(prompt_messages(student_question(puzzle), mode),
                                           tokenize=False, add_generation_prompt=True)
    completion = completion_text(puzzle.solution, puzzle.answer, mode) + "<|im_end|>"
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return p_ids + c_ids, [-100] * len(p_ids) + c_ids


def train_loop(model: Any, tokenizer: Any, examples: list[tuple[list[int], list[int]]],
               steps: int, batch_size: int, learning_rate: float, seed: int) -> list[float]:
    """Plain causal-LM fine-tuning on (input_ids, labels): AdamW, linear warmup then cosine.
    Returns the loss per step."""
    import math

    import torch

    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup)
        * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps)))))
    pad = tokenizer.pad_token_id
    model.train()
    losses = []
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_size:
            more = list(range(len(examples)))
            rng.shuffle(more)
            order.extend(more)
        batch = [examples[i] for i in order[:batch_size]]
        del order[:batch_size]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), pad)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (x, y) in enumerate(batch):
            ids[row, :len(x)] = torch.tensor(x)
            labels[row, :len(y)] = torch.tensor(y)
            mask[row, :len(x)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def build_and_pretrain(out: Path, settings: Any, seed: int, families: list[str]) -> None:
    """Build the tokenizer and model, pre-train it, save both into ``out``. ``settings``: a
    :class:`BaseModelConfig` (or anything with its fields)."""
    import torch

    torch.set_num_threads(max(1, settings.threads))
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, settings, seed)
    puzzles = pretraining_puzzles(families, settings.examples_per_family, seed)
    examples = [encode_example(tokenizer, p, mode) for p in puzzles for mode in ("short", "long")]
    if settings.steps > 0:
        train_loop(model, tokenizer, examples, settings.steps, settings.batch_size,
                   settings.learning_rate, seed)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
