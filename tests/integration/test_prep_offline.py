"""Offline stand-in models fitted on the built-in corpus: S3-signature k-means tokenizer, statistical speaker ONNX."""

import os

import numpy as np
import onnx
import pytest

from sovits2_jax.audio.fbank import campplus_features
from sovits2_jax.audio.io import load_audio
from sovits2_jax.audio.whisper_mel import log_mel_spectrogram
from sovits2_jax.data.prep import corpus, feature_store, kaldi, offline_models, onnx_extract


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("offline")
    corpus.build_corpus(str(root / "corpus"), utterances=32, num_speakers=4, langs=["en"], seed=5)
    data, _ = kaldi.prepare(str(root / "corpus"), str(root / "all"))
    # fit on the first half of each speaker's utterances, evaluate on the rest
    train = [u for u in data.utt2wav if int(u.split("_")[2]) < 4]
    kaldi.write_kaldi_dir(
        kaldi.KaldiData({u: data.utt2wav[u] for u in train}, {u: data.utt2text[u] for u in train},
                        {u: data.utt2spk[u] for u in train}),
        str(root / "train"),
    )  # fmt: skip
    speaker = offline_models.fit_speaker_encoder(str(root / "train"), str(root / "speaker.onnx"))
    tokenizer = offline_models.fit_tokenizer(str(root / "train"), str(root / "tok.onnx"), codebook_size=48)
    return root, data, speaker, tokenizer


def test_models_have_the_real_signatures(fitted):
    _, _, speaker, tokenizer = fitted
    spk = onnx_extract.make_session(speaker)
    onnx_extract.check_embedding_model(spk, speaker)
    assert [i.name for i in spk.get_inputs()] == ["input"] and spk.get_outputs()[0].shape[-1] == 192
    tok = onnx_extract.make_session(tokenizer)
    onnx_extract.check_token_model(tok, tokenizer)
    assert [(i.name, i.type) for i in tok.get_inputs()] == [
        ("feats", "tensor(float)"),
        ("feats_length", "tensor(int32)"),
    ]
    onnx.checker.check_model(onnx.load(tokenizer))


def test_speaker_encoder_separates_held_out_utterances(fitted):
    root, data, speaker, _ = fitted
    onnx_extract.extract_embeddings(str(root / "all"), speaker, workers=0)
    emb = feature_store.load_vectors(str(root / "all" / "utt2embedding.npz"))
    test = [u for u in data.utt2wav if int(u.split("_")[2]) >= 4]
    assert len(test) == 16
    x = np.stack([emb[u] / np.linalg.norm(emb[u]) for u in test])
    spk = np.array([data.utt2spk[u] for u in test])
    cos = x @ x.T
    same = spk[:, None] == spk[None, :]
    np.fill_diagonal(same, False)
    different = spk[:, None] != spk[None, :]
    assert cos[same].mean() - cos[different].mean() > 0.5
    # nearest speaker centroid (from the fitting half) identifies every held-out utterance
    spk2emb = feature_store.load_vectors(str(root / "all" / "spk2embedding.npz"))
    train_centroids = {
        s: np.mean([emb[u] for u in data.spk2utt[s] if int(u.split("_")[2]) < 4], axis=0) for s in spk2emb
    }
    names = sorted(train_centroids)
    c = np.stack([train_centroids[s] / np.linalg.norm(train_centroids[s]) for s in names])
    predicted = np.array(names)[np.argmax(x @ c.T, axis=1)]
    assert (predicted == spk).mean() >= 0.9


def test_speaker_onnx_equals_numpy_statistics(fitted):
    _, data, speaker, _ = fitted
    model = onnx.load(speaker)
    init = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    session = onnx_extract.make_session(speaker)
    for utt in list(data.utt2wav)[:6]:
        feats = campplus_features(load_audio(data.utt2wav[utt], target_sr=16000)[0])
        expected = ((offline_models.speaker_stats(feats) - init["mu"]) / init["sigma"]) @ init["w"]
        got = onnx_extract.embed_features(session, feats)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_tokenizer_onnx_is_nearest_centroid_at_25hz(fitted):
    root, data, _, tokenizer = fitted
    model = onnx.load(tokenizer)
    init = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    centroids = init["centroids_t"].T
    session = onnx_extract.make_session(tokenizer)
    used = set()
    mels = [log_mel_spectrogram(load_audio(w, target_sr=16000)[0]) for w in list(data.utt2wav.values())[:6]]
    batched = onnx_extract.tokenize_mels(session, mels)
    for mel, toks in zip(mels, batched):
        assert len(toks) == -(-mel.shape[1] // 4)
        x = offline_models.tokenizer_features(mel, init["mean"], init["std"])
        expected = offline_models.assign(x, centroids)
        assert (toks == expected).mean() > 0.99  # float32 ties aside
        single = onnx_extract.tokenize_mels(session, [mel])[0]
        np.testing.assert_array_equal(single, toks)  # padding in a batch changes nothing
        used.update(toks.tolist())
    assert len(used) > 16  # the codebook is used, not collapsed
    onnx_extract.extract_speech_tokens(str(root / "all"), tokenizer, workers=2, batch_size=4)
    tokens = feature_store.load_sequences(os.path.join(root, "all", "utt2speech_token.npz"))
    assert len(tokens) == len(data) and all(t.max() < 48 for t in tokens.values())


def test_kmeans_recovers_separated_clusters():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 8)) * 10
    x = np.concatenate([c + rng.standard_normal((200, 8)) for c in centres])
    found = offline_models.kmeans(x, 5, seed=1)
    dist = np.linalg.norm(found[:, None] - centres[None], axis=-1)
    assert sorted(np.argmin(dist, axis=1).tolist()) == [0, 1, 2, 3, 4] and dist.min(axis=1).max() < 0.5
    with pytest.raises(ValueError, match="cannot fit"):
        offline_models.kmeans(x[:3], 5)
