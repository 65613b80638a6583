"""Tiny models built from configs, with a tokenizer trained locally: for tests, benchmarks and
the offline demo. Nothing is downloaded. Each builder saves with ``save_pretrained`` so the
model is loaded back through the same ``from_pretrained`` code a user's real model goes
through. transformers/torch/tokenizers are imported only when a builder is called.

* :func:`build_tokenizer`: a small byte-level BPE tokenizer (chat and reasoning markers as
  single tokens) with a Qwen-style chat template.
* :func:`build_tiny_causal_lm`: a Qwen2 (or Qwen3) text model.
* :func:`build_tiny_llava`: LLaVA with a tiny CLIP vision tower and a Qwen2 text model, with
  its processor.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from dualcurate.formats import TAGS

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]
MARKER_TOKENS = list(TAGS)


DEFAULT_CORPUS = [
    "Step 1: extract the information. Step 2: set up the problem. Step 3: compute. "
    "Step 4: check. The answer is 42. What is the colour of the first shape? red green blue "
    "yellow circle square triangle sum digit last first count how many Which option (A) (B) "
    "(C) (D) 0 1 2 3 4 5 6 7 8 9 + - * / = . , ; : ? !",
]


def build_tokenizer(out_dir: str | Path | None = None, extra_texts: list[str] | None = None,
                    vocab_size: int = 400):
    """A byte-level BPE tokenizer trained locally with ``tokenizers`` (no download), laid out
    like Qwen's (so ``AutoTokenizer`` loads it through the Qwen2 tokenizer class), with the
    chat and reasoning markers as single tokens and a Qwen-style chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    corpus = [*DEFAULT_CORPUS, *(extra_texts or []), string.printable]
    tok.train_from_iterator(corpus, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token=None, bos_token=None,
        additional_special_tokens=["<|im_start|>", "<image>"],
    )
    hf_tok.add_tokens(MARKER_TOKENS)
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.padding_side = "left"
    if out_dir is not None:
        hf_tok.save_pretrained(str(out_dir))
    return hf_tok


def _text_config(vocab_size: int, hidden_size: int, layers: int, heads: int, family: str,
                 tokenizer: Any, max_positions: int) -> Any:
    from transformers import Qwen2Config, Qwen3Config

    cls = Qwen3Config if family == "qwen3" else Qwen2Config
    kwargs = dict(vocab_size=vocab_size, hidden_size=hidden_size,
                  intermediate_size=hidden_size * 2, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=heads,
                  max_position_embeddings=max_positions, tie_word_embeddings=True,
                  eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                  pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    if family == "qwen3":
        kwargs["head_dim"] = hidden_size // heads
    return cls(**kwargs)


def build_tiny_causal_lm(out_dir: str | Path, hidden_size: int = 128, layers: int = 2,
                         heads: int = 2, family: str = "qwen2", seed: int = 0,
                         max_positions: int = 2048) -> Path:
    """A tiny Qwen2/Qwen3 causal LM saved with its tokenizer (head_dim = hidden/heads; keep
    it ≥ 64 for vLLM's CPU backend). Returns ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    out = Path(out_dir)
    tokenizer = build_tokenizer()
    config = _text_config(len(tokenizer), hidden_size, layers, heads, family, tokenizer,
                          max_positions)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id, do_sample=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out


def build_tiny_llava(out_dir: str | Path, image_size: int = 32, patch_size: int = 8,
                     hidden_size: int = 128, layers: int = 2, heads: int = 2,
                     seed: int = 0) -> Path:
    """A tiny LLaVA (CLIP vision tower + Qwen2 text model) with its processor. Loads with
    ``AutoModelForImageTextToText`` / ``AutoProcessor``. Returns ``out_dir``."""
    import torch
    from transformers import (
        AutoModelForImageTextToText,
        CLIPVisionConfig,
        GenerationConfig,
        LlavaConfig,
        LlavaProcessor,
    )

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # older transformers
        from transformers import CLIPImageProcessor as ImageProcessor

    out = Path(out_dir)
    tokenizer = build_tokenizer()
    text = _text_config(len(tokenizer), hidden_size, layers, heads, "qwen2", tokenizer, 2048)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=2, image_size=image_size,
                              patch_size=patch_size, projection_dim=32)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=image_token_id,
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config = GenerationConfig(
        eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id, do_sample=True)
    image_processor = ImageProcessor(size={"shortest_edge": image_size},
                                     crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               patch_size=patch_size, vision_feature_select_strategy="default",
                               chat_template=CHAT_TEMPLATE, image_token="<image>",
                               num_additional_image_tokens=1)
    model.save_pretrained(str(out), safe_serialization=True)
    processor.save_pretrained(str(out))
    return out
