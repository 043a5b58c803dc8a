"""Resemblyzer's pretrained encoder as an offline ONNX speaker model (skipped without the resemblyzer package)."""

import numpy as np
import pytest

from sovits2_jax.audio.io import load_audio
from sovits2_jax.data.prep import corpus, feature_store, kaldi, onnx_extract
from sovits2_jax.data.prep import resemblyzer_encoder as rz

pytest.importorskip("resemblyzer")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, torch_available):
    root = tmp_path_factory.mktemp("resemblyzer")
    corpus.build_corpus(str(root / "corpus"), utterances=12, num_speakers=3, langs=["en"], seed=4)
    data, _ = kaldi.prepare(str(root / "corpus"), str(root / "data"))
    return root, data, rz.export_resemblyzer(str(root / "resemblyzer.onnx"))


def test_mel_frames_equal_librosa():
    import librosa

    wav = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    ref = librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=400, hop_length=160, n_mels=40).T
    ours = rz.mel_frames(wav)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * ref.max())


def test_extractor_equals_resemblyzer_embed_utterance(setup):
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import normalize_volume

    root, data, model = setup
    onnx_extract.extract_embeddings(str(root / "data"), model, workers=0)
    ours = feature_store.load_vectors(str(root / "data" / "utt2embedding.npz"))
    encoder = VoiceEncoder(device="cpu", verbose=False)
    for utt in list(data.utt2wav)[:4]:
        wav, _ = load_audio(data.utt2wav[utt], target_sr=16000)
        ref = encoder.embed_utterance(normalize_volume(wav, -30, increase_only=True))
        assert ours[utt].shape == (256,)
        np.testing.assert_allclose(ours[utt], ref, rtol=0, atol=1e-5)
    x = np.stack([ours[u] for u in data.utt2wav])
    spk = np.array([data.utt2spk[u] for u in data.utt2wav])
    cos = x @ x.T
    same, different = spk[:, None] == spk[None, :], spk[:, None] != spk[None, :]
    np.fill_diagonal(same, False)
    assert cos[same].mean() > cos[different].mean() + 0.1  # measured 0.87 vs 0.71 on these espeak voices
