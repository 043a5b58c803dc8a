"""The Qwen2 BPE as HF tokenizer files (``tokenizer.json``, ``tokenizer_config.json``), so that a directory we
write (an exported ``CosyVoice-BlankEN/``) loads with ``transformers.AutoTokenizer`` as the released one does.

The files are built from the same ``qwen.tiktoken`` ranks and split pattern our tokenizer uses, through
transformers' own tiktoken converter, with NFC normalisation and Qwen2's three special tokens
(``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` at 151643..151645). CosyVoice2's loader adds its other
special tokens on top, which gives the ids of ``sovits2_jax.text.tokenizer.cosyvoice2_special_tokens``.
"""

from __future__ import annotations

import json
from pathlib import Path

QWEN2_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TOKENIZER_CONFIG = {
    "tokenizer_class": "Qwen2Tokenizer",
    "eos_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
    "bos_token": None,
    "unk_token": None,
    "model_max_length": 32768,
    "add_prefix_space": False,
    "clean_up_tokenization_spaces": False,
    "errors": "replace",
}


def write_tokenizer_files(dst: str | Path) -> None:
    """Writes ``tokenizer.json`` and ``tokenizer_config.json`` of the Qwen2 base vocabulary into ``dst``."""
    from tokenizers import normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from sovits2_jax.text.tokenizer import QWEN2_PATTERN, qwen_tiktoken_path

    converter = TikTokenConverter(vocab_file=qwen_tiktoken_path(), pattern=QWEN2_PATTERN,
                                  extra_special_tokens=list(QWEN2_SPECIAL_TOKENS))  # fmt: skip
    tokenizer = converter.converted()
    tokenizer.normalizer = normalizers.NFC()
    dst = Path(dst)
    tokenizer.save(str(dst / "tokenizer.json"))
    (dst / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2))
