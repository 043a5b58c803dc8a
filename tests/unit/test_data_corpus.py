"""The built-in espeak-ng corpus: LibriTTS layout, 24 kHz, deterministic for a seed."""

import os

import numpy as np
import pytest
import soundfile as sf

from sovits2_jax.data.prep import corpus


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    stats = corpus.build_corpus(str(root / "a"), utterances=12, num_speakers=4, langs=["en", "fr"], seed=7)
    return root, stats


def test_layout_and_audio(built):
    root, stats = built
    a = root / "a"
    assert stats == {"utterances": 12, "hours": pytest.approx(stats["hours"]), "speakers": 4}
    wavs = sorted(str(p) for p in a.glob("*/*/*.wav"))
    assert len(wavs) == 12
    speakers = {os.path.basename(os.path.dirname(os.path.dirname(w))) for w in wavs}
    assert speakers == {"1000", "1001", "1002", "1003"}
    rows = (a / "speakers.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["speaker", "language", "voice", "rate", "pitch", "range"]
    langs = {r.split("\t")[0]: r.split("\t")[1] for r in rows[1:]}
    assert langs == {"1000": "en", "1001": "fr", "1002": "en", "1003": "fr"}
    total = 0.0
    for w in wavs:
        utt = os.path.basename(w)[:-4]
        spk, chapter, _, _ = utt.split("_")
        assert w.endswith(os.path.join(spk, chapter, utt + ".wav"))
        info = sf.info(w)
        assert info.samplerate == 24000 and info.channels == 1 and info.subtype == "PCM_16"
        assert 1.0 < info.duration < 12.0
        total += info.duration
        audio, _ = sf.read(w)
        assert np.abs(audio).max() > 0.05  # speech, not silence
        with (
            open(w[:-4] + ".normalized.txt", encoding="utf-8") as f,
            open(w[:-4] + ".original.txt", encoding="utf-8") as g,
        ):
            text = f.read()
            assert text and text == g.read()
        assert text in corpus.load_sentences(langs[spk])
    assert stats["hours"] == pytest.approx(total / 3600, rel=1e-3)


def test_same_seed_gives_identical_files(built, tmp_path):
    root, _ = built
    corpus.build_corpus(str(tmp_path / "b"), utterances=12, num_speakers=4, langs=["en", "fr"], seed=7, workers=1)
    first, second = _files(root / "a"), _files(tmp_path / "b")
    assert first.keys() == second.keys()
    assert all(first[k] == second[k] for k in first)
    corpus.build_corpus(str(tmp_path / "c"), utterances=12, num_speakers=4, langs=["en", "fr"], seed=8)
    third = _files(tmp_path / "c")
    assert any(first.get(k) != v for k, v in third.items())


def test_hours_budget_stops_once_reached(tmp_path):
    stats = corpus.build_corpus(str(tmp_path / "h"), hours=20 / 3600, num_speakers=2, seed=0)
    assert 20 / 3600 <= stats["hours"] < 35 / 3600  # stops at the utterance that crosses 20 s


def test_sentences_and_bad_arguments(tmp_path):
    for lang in corpus.languages():
        sentences = corpus.load_sentences(lang)
        assert len(sentences) >= 80 and len(set(sentences)) == len(sentences)
    assert set(corpus.languages()) == {"en", "fr", "de", "es"}
    with pytest.raises(ValueError, match="unsupported languages"):
        corpus.build_corpus(str(tmp_path), utterances=1, langs=["xx"])
    with pytest.raises(ValueError, match="speakers"):
        corpus.build_corpus(str(tmp_path), utterances=1, num_speakers=0)


def test_train_and_dev_share_speakers_but_not_sentences(tmp_path):
    for split in ("train", "dev"):
        corpus.build_corpus(
            str(tmp_path / split), utterances=6, num_speakers=3, langs=["en", "es"], seed=2, split=split
        )
    assert (tmp_path / "train" / "speakers.tsv").read_text() == (tmp_path / "dev" / "speakers.tsv").read_text()
    texts = {
        split: {p.read_text(encoding="utf-8") for p in (tmp_path / split).glob("*/*/*.normalized.txt")}
        for split in ("train", "dev")
    }
    assert len(texts["dev"]) == 6 and not texts["train"] & texts["dev"]
    en = corpus.load_sentences("en")
    assert set(corpus.split_sentences(en, "dev")) == set(en) - set(corpus.split_sentences(en, "train"))
    with pytest.raises(ValueError, match="split"):
        corpus.split_sentences(en, "test")


def test_repeated_sentences_are_read_at_another_rate():
    speakers = corpus.make_speakers(1, ["de"], seed=0)
    n = len(corpus.split_sentences(corpus.load_sentences("de"), "dev"))
    jobs = corpus.plan(speakers, seed=0, split="dev")
    first, second = [next(jobs) for _ in range(n)], [next(jobs) for _ in range(n)]
    assert [j.text for j in first] == [j.text for j in second]
    assert {j.speaker.rate for j in first} == {speakers[0].rate}
    assert {j.speaker.rate for j in second} == {speakers[0].rate + corpus.PASS_RATE_OFFSETS[1]}
    assert len({j.utt for j in first + second}) == 2 * n


def test_utterances_are_loudness_normalised(built, tmp_path):
    from sovits2_jax.audio.loudness import integrated_loudness

    root, _ = built
    levels = [integrated_loudness(sf.read(w)[0], 24000) for w in sorted((root / "a").glob("*/*/*.wav"))]
    assert np.allclose(levels, -23.0, atol=0.1)  # PCM16 rounding and the peak limit aside
    corpus.build_corpus(str(tmp_path / "raw"), utterances=4, num_speakers=4, seed=7, loudness_lufs=None)
    raw = [integrated_loudness(sf.read(w)[0], 24000) for w in sorted((tmp_path / "raw").glob("*/*/*.wav"))]
    assert np.ptp(raw) > 0.5  # espeak's own levels differ between voices


def test_extra_sentences_join_the_train_pool_only():
    from sovits2_jax.data.prep.sentence_maker import compose

    made = compose(500, seed=3)
    assert len(made) == len(set(made)) == 500 and made == compose(500, seed=3) and made != compose(500, seed=4)
    assert all(s[0].isupper() and s[-1] in ".?" for s in made)
    speakers = corpus.make_speakers(2, ["en"], seed=0)
    natural = corpus.split_sentences(corpus.load_sentences("en"), "train")
    n = len(natural) + 300
    jobs = corpus.plan(speakers, 0, "train", extra_sentences=300)
    train = {next(jobs).text for _ in range(2 * n)}
    assert set(natural) < train and len(train - set(natural)) == 300  # each speaker reads the whole larger pool
    dev = corpus.plan(speakers, 0, "dev", extra_sentences=300)
    dev_texts = {next(dev).text for _ in range(200)}
    assert dev_texts == set(corpus.split_sentences(corpus.load_sentences("en"), "dev"))  # dev unchanged
    with pytest.raises(ValueError, match="no speaker reads en"):
        next(corpus.plan(corpus.make_speakers(1, ["de"], seed=0), 0, "train", extra_sentences=5))


def test_the_cli_with_workers_prints_no_runpy_warning(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "sovits2_jax.data.prep.corpus", "--out", str(tmp_path / "c"),
                          "--utterances", "4", "--speakers", "2", "--workers", "2"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.splitlines()[-1].startswith("corpus: 4 utterances")  # the stage's one summary line
    assert "RuntimeWarning" not in out.stderr, out.stderr[-2000:]  # one per forkserver worker before


def test_code_switching_utterances_switch_inside_with_plain_transcripts(tmp_path):
    import itertools
    import json

    speakers = corpus.make_speakers(4, ["en", "fr", "de"], seed=0)
    jobs = list(itertools.islice(corpus.plan(speakers, 0, "dev", code_switch=0.5), 40))
    mixed = [j for j in jobs if "+" in j.languages]
    assert 10 <= len(mixed) <= 30 and len(mixed) < len(jobs)  # about half
    dev = {lang: set(corpus.split_sentences(corpus.load_sentences(lang), "dev")) for lang in ("en", "fr", "de")}
    for job in mixed:
        (first, own), (second, other) = job.segments
        assert first == job.speaker.language and second != first and job.languages == f"{first}+{second}"
        assert own in dev[first] and other in dev[second]  # held-out sentences of both languages
        assert job.text == f"{own} {other}" and "<" not in job.text  # the transcript carries no tag
    assert jobs == list(itertools.islice(corpus.plan(speakers, 0, "dev", code_switch=0.5), 40))  # deterministic
    with pytest.raises(ValueError, match="two or more languages"):
        next(corpus.plan(corpus.make_speakers(2, ["en"], 0), 0, code_switch=0.3))
    with pytest.raises(ValueError, match="fraction"):
        next(corpus.plan(speakers, 0, code_switch=1.5))

    job = mixed[0]
    ssml = corpus.to_ssml((*job.segments, ("fr", "Tom & <Jerry>")), job.speaker)
    variant = job.speaker.voice.partition("+")[2]
    assert ssml.startswith("<speak>") and f'name="{corpus.ESPEAK_VOICE[job.segments[1][0]]}+{variant}"' in ssml
    assert "Tom &amp; &lt;Jerry&gt;" in ssml
    switched, plain = corpus.render([job, corpus.Job(job.utt, job.path, job.text, job.speaker)])
    assert abs(len(switched) - len(plain)) > 0.05 * len(plain)  # the second sentence is read in its own language

    out = tmp_path / "c"
    corpus.build_corpus(str(out), utterances=6, num_speakers=2, langs=["en", "fr"], split="dev", code_switch=1.0,
                        workers=1)  # fmt: skip
    index = corpus.read_utterances(str(out / "utterances.tsv"))
    assert len(index) == 6 and all("+" in langs for langs, _ in index.values())
    utt, (_, segments) = next(iter(index.items()))
    text = next(out.rglob(f"{utt}.normalized.txt")).read_text(encoding="utf-8")
    assert text == " ".join(seg for _, seg in segments) and json.dumps(segments)
