"""BGE-M3's tokenizer: our ids equal transformers.XLMRobertaTokenizer's, through sentencepiece.bpe.model (fairseq
id layout) and through tokenizer.json, on a small sentencepiece model trained here (nothing is downloaded)."""

import io
import shutil
from pathlib import Path

import pytest
import sentencepiece

from sovits2_jax.text.bge_m3_tokenizer import SENTENCEPIECE_MODEL, TOKENIZER_JSON, BgeM3Tokenizer

SENTENCES = Path(__file__).resolve().parents[2] / "sovits2_jax" / "data" / "prep" / "sentences"
TEXTS = [
    "The old lighthouse keeper climbed the stairs every evening.",
    "Déjà vu: a naïve café owner in Zürich, ¿verdad? Ça va!",
    "北京欢迎你 — Привет, мир! こんにちは 😀",
    "  spaces   and\ttabs\nand new lines  ",
    "Ｆｕｌｌｗｉｄｔｈ ﬁ ① and 1,234.5 numbers",
    "literal <s> and </s> and a<mask> inside",
    "",
]


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory):
    """A directory with only ``sentencepiece.bpe.model``: a 400-piece unigram model of the prep sentences (English,
    German, French, Spanish: accented letters are pieces, other scripts are not)."""
    lines = [line for path in sorted(SENTENCES.glob("*.txt")) for line in path.read_text().splitlines()]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=400, model_type="unigram",
        character_coverage=1.0, num_threads=1, minloglevel=2,
    )  # fmt: skip
    directory = tmp_path_factory.mktemp("bge_m3_spm")
    (directory / SENTENCEPIECE_MODEL).write_bytes(model.getvalue())
    return directory


@pytest.fixture(scope="module")
def reference(spm_dir):
    import transformers

    return transformers.XLMRobertaTokenizer.from_pretrained(spm_dir)


def test_sentencepiece_ids_equal_transformers(spm_dir, reference):
    ours = BgeM3Tokenizer.from_directory(spm_dir)
    assert ours.source == spm_dir / SENTENCEPIECE_MODEL
    assert ours.vocab_size == len(reference) == 400 + 2  # fairseq's offset and <mask>
    assert (ours.bos_id, ours.pad_id, ours.eos_id) == (0, 1, 2)
    for text in TEXTS:
        assert ours.encode(text) == reference(text)["input_ids"], text
    assert 3 in ours.encode(TEXTS[2])  # characters the model never saw are <unk>, id 3


def test_fairseq_id_layout(spm_dir):
    """Independently of transformers: sentencepiece piece i is id i + 1, its <unk> is 3, and <s> ... </s> wrap it."""
    model = sentencepiece.SentencePieceProcessor(model_file=str(spm_dir / SENTENCEPIECE_MODEL))
    ours = BgeM3Tokenizer.from_directory(spm_dir)
    text = "the calm water"
    assert ours.encode(text) == [0, *(i + 1 for i in model.encode(text)), 2]
    assert ours.encode("") == [0, 2]
    assert ours.encode("a<mask>") == [0, *(i + 1 for i in model.encode("a")), model.get_piece_size() + 1, 2]


def test_tokenizer_json_ids_equal_transformers(spm_dir, reference, tmp_path):
    reference.save_pretrained(tmp_path / "fast")
    (tmp_path / "fast" / SENTENCEPIECE_MODEL).unlink(missing_ok=True)
    ours = BgeM3Tokenizer.from_directory(tmp_path / "fast")
    assert ours.source == tmp_path / "fast" / TOKENIZER_JSON and ours.vocab_size == len(reference)
    for text in TEXTS:
        assert ours.encode(text) == reference(text)["input_ids"], text
    both = tmp_path / "both"  # a BGE-M3 directory has both files: tokenizer.json is read
    shutil.copytree(tmp_path / "fast", both)
    shutil.copy(spm_dir / SENTENCEPIECE_MODEL, both)
    assert BgeM3Tokenizer.from_directory(both).source == both / TOKENIZER_JSON


def test_max_length_keeps_the_special_tokens(spm_dir, reference):
    ours = BgeM3Tokenizer.from_directory(spm_dir)
    text = TEXTS[0]
    assert ours.encode(text, max_length=8) == reference(text, truncation=True, max_length=8)["input_ids"]
    assert len(ours.encode(text, max_length=8)) == 8 and ours.encode(text, max_length=8)[-1] == 2
    with pytest.raises(ValueError, match="max_length=1"):
        ours.encode(text, max_length=1)


def test_missing_tokenizer_is_one_error_naming_the_paths(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        BgeM3Tokenizer.from_directory(tmp_path)
    message = str(err.value)
    assert str(tmp_path / TOKENIZER_JSON) in message and str(tmp_path / SENTENCEPIECE_MODEL) in message
    assert "\n" not in message
