"""CosyVoice2's special tokens: ours equal the ones ``cosyvoice.tokenizer.tokenizer.QwenTokenizer`` adds."""

from __future__ import annotations

import sys
import types

import pytest

from sovits2_jax.text import tokenizer as tk

pytestmark = pytest.mark.parity


@pytest.fixture
def reference_tokenizer(tmp_path, monkeypatch):
    """cosyvoice's ``QwenTokenizer`` over an HF Qwen2 tokenizer built offline from the same vocabulary."""
    pytest.importorskip("torch")
    convert = pytest.importorskip("transformers.convert_slow_tokenizer")
    from transformers import Qwen2Tokenizer

    # the module imports openai-whisper's tokenizer (not installed) for its whisper-style tokenizers, unused here
    whisper = types.ModuleType("whisper")
    whisper.tokenizer = types.ModuleType("whisper.tokenizer")
    whisper.tokenizer.Tokenizer = object
    monkeypatch.setitem(sys.modules, "whisper", whisper)
    monkeypatch.setitem(sys.modules, "whisper.tokenizer", whisper.tokenizer)
    monkeypatch.delitem(sys.modules, "cosyvoice.tokenizer.tokenizer", raising=False)
    from cosyvoice.tokenizer.tokenizer import QwenTokenizer

    path = tk.qwen_tiktoken_path()
    vocab, merges = convert.TikTokenConverter(vocab_file=path).extract_vocab_merges_from_model(path)
    Qwen2Tokenizer(vocab=vocab, merges=merges).save_pretrained(tmp_path)
    return QwenTokenizer(token_path=str(tmp_path), skip_special_tokens=True)


def test_special_tokens_equal_cosyvoice(reference_tokenizer):
    ref = reference_tokenizer
    # same tokens in the same order: eos (= pad), then the additional ones
    assert ref.special_tokens["pad_token"] == ref.special_tokens["eos_token"]
    names = [ref.special_tokens["eos_token"], *ref.special_tokens["additional_special_tokens"]]
    assert tuple(names) == tk.QWEN2_SPECIAL_TOKENS + tk.COSYVOICE2_ADDED_TOKENS
    # same ids, as HF's add_special_tokens assigns them in the reference
    ours = tk.cosyvoice2_special_tokens()
    assert {t: ref.tokenizer.convert_tokens_to_ids(t) for t in names} == ours
    assert len(ref.tokenizer) == tk.get_tokenizer("cosyvoice2").vocab_size
