"""Qwen2 BPE + CosyVoice2 special tokens: ids equal tiktoken's and HF's (built offline from one vocab)."""

import unicodedata

import pytest
import tiktoken

from sovits2_jax.text import tokenizer as tk

TEXTS = [
    "Hello world, it's 2024!",
    "你好，世界。今天天气真不错，我们去公园散步吧。",
    "mixed 中文 and English<|endofprompt|>text [breath] more",
    "<strong>强调</strong>[laughter]ok<laughter>哈哈</laughter>[mn]",
    "e\u0301 cafe\u0301  \n\n spaces\t\tx  ",
    "You are a helpful assistant.<|endofprompt|>希望你以后能够做的比我还好呦。",
    "<|im_start|>user\nnumbers 1234567 and 3.14159<|im_end|><|endoftext|>",
    "",
]


@pytest.fixture(scope="module")
def ours():
    return tk.get_tokenizer("cosyvoice2")


@pytest.fixture(scope="module")
def plain_tiktoken():
    ranks = tk.load_bpe_ranks(tk.qwen_tiktoken_path())
    return tiktoken.Encoding(
        "ref", pat_str=tk.QWEN2_PATTERN, mergeable_ranks=ranks, special_tokens=tk.cosyvoice2_special_tokens()
    )


@pytest.fixture(scope="module")
def hf_tokenizer():
    """HF's Qwen2 tokenizer from the same vocabulary, with CosyVoice2's ``add_special_tokens`` call."""
    convert = pytest.importorskip("transformers.convert_slow_tokenizer")
    from transformers import Qwen2Tokenizer

    path = tk.qwen_tiktoken_path()
    vocab, merges = convert.TikTokenConverter(vocab_file=path).extract_vocab_merges_from_model(path)
    hf = Qwen2Tokenizer(vocab=vocab, merges=merges)
    hf.add_special_tokens(
        {
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>", *tk.COSYVOICE2_ADDED_TOKENS],
        }
    )
    return hf


def test_known_ids(ours):
    assert ours.encode("Hello world") == [9707, 1879]
    assert ours.token_id("<|endoftext|>") == 151643
    assert ours.token_id("<|im_end|>") == 151645
    assert ours.token_id("<|endofprompt|>") == 151646
    assert ours.token_id("[breath]") == 151647
    assert ours.token_id("[mn]") == 151662
    assert ours.vocab_size == 151663


@pytest.mark.parametrize("text", TEXTS)
def test_matches_tiktoken(ours, plain_tiktoken, text):
    expected = plain_tiktoken.encode(unicodedata.normalize("NFC", text), allowed_special="all")
    assert ours.encode(text) == expected


def test_matches_hf_qwen2_with_cosyvoice_tokens(ours, hf_tokenizer):
    assert [hf_tokenizer.convert_tokens_to_ids(t) for t in tk.COSYVOICE2_ADDED_TOKENS] == [
        ours.token_id(t) for t in tk.COSYVOICE2_ADDED_TOKENS
    ]
    for text in TEXTS:
        ids = hf_tokenizer(text)["input_ids"]
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == hf_tokenizer.decode(ids, skip_special_tokens=True), text
        assert ours.decode(ids, skip_special_tokens=False) == hf_tokenizer.decode(ids), text


def test_special_tokens_inside_words_and_decode(ours):
    ids = ours.encode("ab[breath]cd")
    assert 151647 in ids
    assert ours.decode(ids) == "abcd"
    assert ours.decode(ids, skip_special_tokens=False) == "ab[breath]cd"
    for text in TEXTS:
        assert ours.decode(ours.encode(text), skip_special_tokens=False) == unicodedata.normalize("NFC", text)


def test_combining_mark_after_special_token_not_merged(ours):
    # NFC would turn '>' + U+0338 into U+226F; HF normalises only the text between special tokens
    ids = ours.encode("</strong>\u0338")
    assert ids[0] == ours.token_id("</strong>")
    assert ours.decode(ids[1:]) == "\u0338"


def test_bad_input(ours):
    with pytest.raises(TypeError, match="str"):
        ours.encode(b"bytes")
    with pytest.raises(ValueError, match="out of range"):
        ours.decode([151663])
    with pytest.raises(ValueError, match="kind"):
        tk.get_tokenizer("gpt2")
    with pytest.raises(KeyError, match="not a special token"):
        ours.token_id("[nope]")
