"""Parity of the numpy frontends with the references: kaldi-native-fbank and s3tokenizer's whisper log-mel."""

import os

import numpy as np
import pytest

from sovits2_jax.audio.fbank import fbank
from sovits2_jax.audio.io import load_audio
from sovits2_jax.audio.whisper_mel import log_mel_spectrogram, whisper_mel_filters

pytestmark = pytest.mark.parity


def _s3_assets():
    import importlib.util

    spec = importlib.util.find_spec("s3tokenizer")
    if spec is None:
        pytest.skip("s3tokenizer (parity extra) is not installed")
    return os.path.join(os.path.dirname(spec.origin), "assets")


def _waveforms():
    """Two real 16 kHz Mandarin recordings, an espeak-ng English utterance and white noise."""
    assets = _s3_assets()
    waves = [load_audio(os.path.join(assets, f"BAC009S0764W012{i}.wav"))[0] for i in (1, 2)]
    from sovits2_jax.audio.resample import resample
    from sovits2_jax.data.prep.espeak import Espeak

    engine = Espeak()
    speech = engine.synthesize("The wind carried the smell of pine trees down into the valley.", "en-us+f3")
    waves.append(resample(speech.astype(np.float32) / 32768, engine.sample_rate, 16000))
    waves.append((0.1 * np.random.default_rng(0).standard_normal(16000 * 2)).astype(np.float32))
    return waves


@pytest.fixture(scope="module")
def waveforms():
    return _waveforms()


def _knf_fbank(wav):
    knf = pytest.importorskip("kaldi_native_fbank")
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = 16000
    opts.mel_opts.num_bins = 80
    online = knf.OnlineFbank(opts)
    online.accept_waveform(16000, wav.tolist())
    online.input_finished()
    return np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])


def test_fbank_matches_kaldi_native_fbank(waveforms):
    for wav in waveforms:
        ours, ref = fbank(wav), _knf_fbank(wav)
        assert ours.shape == ref.shape and ours.dtype == np.float32
        # knf works in float32, so weak bins carry rounding noise of the frame's strong bins: compare mel energies
        # relative to each frame's total energy.
        p_ours, p_ref = np.exp(ours.astype(np.float64)), np.exp(ref.astype(np.float64))
        err = np.abs(p_ours - p_ref) / p_ref.sum(axis=1, keepdims=True)
        assert err.max() < 1e-5, err.max()
        # and in the log domain wherever a bin holds at least 1% of its frame's energy
        strong = p_ref > 0.01 * p_ref.sum(axis=1, keepdims=True)
        assert np.abs(ours - ref)[strong].max() < 1e-4


def test_fbank_short_input_gives_no_frames():
    assert fbank(np.zeros(399, np.float32)).shape == (0, 80)
    assert fbank(np.ones(400, np.float32)).shape == (1, 80)


def _s3_reference(wav, dtype):
    from sovits2_jax.parity.torch_refs import stub_torchaudio

    stub_torchaudio()
    import s3tokenizer.utils as s3u
    import torch

    original = s3u._mel_filters
    if dtype == torch.float64:
        s3u._mel_filters = lambda device, n_mels: original(device, n_mels).double()
    try:
        return s3u.log_mel_spectrogram(torch.from_numpy(wav.astype(np.float64)).to(dtype), n_mels=128).numpy()
    finally:
        s3u._mel_filters = original


def test_whisper_mel_matches_s3tokenizer(waveforms, torch_available):
    import torch

    for wav in waveforms:
        ours = log_mel_spectrogram(wav)
        ref64 = _s3_reference(wav, torch.float64)
        ref32 = _s3_reference(wav, torch.float32)
        assert ours.shape == ref32.shape == (128, len(wav) // 160)
        np.testing.assert_allclose(ours, ref64, rtol=0, atol=1e-5)
        # we compute in float64: at least as close to the exact result as the float32 reference is (whose own
        # error depends on the machine's FFT kernels)
        assert np.abs(ours - ref64).max() <= np.abs(ref32 - ref64).max()


def test_whisper_filters_equal_the_shipped_ones():
    with np.load(os.path.join(_s3_assets(), "mel_filters.npz")) as f:
        np.testing.assert_allclose(whisper_mel_filters(128), f["mel_128"], rtol=0, atol=1e-7)
        np.testing.assert_allclose(whisper_mel_filters(80), f["mel_80"], rtol=0, atol=1e-7)
