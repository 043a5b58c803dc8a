"""Loudness, resampling and audio I/O used by data preparation."""

import numpy as np
import pytest
import soundfile as sf

from sovits2_jax.audio.fbank import fbank, kaldi_mel_banks
from sovits2_jax.audio.io import AudioError, audio_info, load_audio, write_wav
from sovits2_jax.audio.loudness import integrated_loudness, normalize_loudness
from sovits2_jax.audio.resample import resample


def _sine(freq, sr, seconds, amp=1.0):
    return amp * np.sin(2 * np.pi * freq * np.arange(int(sr * seconds)) / sr)


@pytest.mark.parametrize("sr", [48000, 44100])
def test_full_scale_997hz_sine_is_minus_3_01_lufs(sr):
    # BS.1770-4 calibration: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS.
    assert integrated_loudness(_sine(997, sr, 5.0), sr) == pytest.approx(-3.01, abs=0.02)


def test_loudness_scales_with_gain_and_gates_silence():
    sr = 24000
    tone = _sine(440, sr, 20.0, 0.5)
    base = integrated_loudness(tone, sr)
    assert integrated_loudness(tone * 0.1, sr) == pytest.approx(base - 20.0, abs=1e-6)
    padded = np.concatenate([np.zeros(sr * 3), tone, np.zeros(sr * 3)])
    # the absolute gate drops the silent blocks; only the few blocks straddling the edges still count
    assert integrated_loudness(padded, sr) == pytest.approx(base, abs=0.1)
    assert 10 * np.log10(np.mean(padded**2) / np.mean(tone**2)) < -1  # ungated it would read 1.1 dB lower
    assert integrated_loudness(np.zeros(sr), sr) == float("-inf")
    with pytest.raises(ValueError, match="400 ms"):
        integrated_loudness(np.ones(100), sr)


def test_normalize_loudness_reaches_minus_23():
    sr = 32000
    rng = np.random.default_rng(0)
    wav = (0.3 * rng.standard_normal(sr * 4) * _sine(3, sr, 4.0)).astype(np.float32)
    out = normalize_loudness(wav, sr)
    assert out.dtype == np.float32
    assert integrated_loudness(out, sr) == pytest.approx(-23.0, abs=1e-3)
    assert normalize_loudness(np.zeros(sr, np.float32), sr).max() == 0.0


@pytest.mark.parametrize(("src", "dst"), [(22050, 24000), (24000, 16000), (48000, 16000)])
def test_resample_keeps_frequency_and_duration(src, dst):
    wav = _sine(1000, src, 2.0, 0.5).astype(np.float32)
    out = resample(wav, src, dst)
    assert out.dtype == np.float32 and abs(len(out) - 2 * dst) <= 1
    spectrum = np.abs(np.fft.rfft(out[dst // 4 : -dst // 4]))
    peak_hz = np.argmax(spectrum) * dst / len(out[dst // 4 : -dst // 4])
    assert peak_hz == pytest.approx(1000, abs=2)
    assert np.abs(out).max() == pytest.approx(0.5, abs=0.01)
    assert resample(wav, src, src) is not None and np.array_equal(resample(wav, src, src), wav)


def test_audio_io_round_trip_and_errors(tmp_path):
    wav = _sine(300, 24000, 0.5, 0.5).astype(np.float32)
    path = tmp_path / "a.wav"
    write_wav(path, wav, 24000)
    assert audio_info(path) == (12000, 24000)
    back, sr = load_audio(path)
    assert sr == 24000 and np.abs(back - wav).max() < 1e-4
    back16, sr16 = load_audio(path, target_sr=16000)
    assert sr16 == 16000 and abs(len(back16) - 8000) <= 1
    stereo = tmp_path / "s.wav"
    sf.write(stereo, np.stack([wav, -wav], 1), 24000)
    assert np.abs(load_audio(stereo)[0] - wav).max() < 1e-4  # first channel
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    (tmp_path / "empty.wav").write_bytes(b"")
    for name in ("corrupt.wav", "empty.wav", "missing.wav"):
        with pytest.raises(AudioError, match=name):
            load_audio(tmp_path / name)
        with pytest.raises(AudioError, match=name):
            audio_info(tmp_path / name)
    with pytest.raises(AudioError, match=r"missing\.wav: no such file"):
        load_audio(tmp_path / "missing.wav")
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), 24000)
    with pytest.raises(AudioError, match="zero samples"):
        audio_info(tmp_path / "zero.wav")


def test_fbank_frames_and_filters():
    wav = np.random.default_rng(1).standard_normal(16000).astype(np.float32)
    feats = fbank(wav)
    assert feats.shape == (1 + (16000 - 400) // 160, 80)
    banks = kaldi_mel_banks(80, 512, 16000, 20.0, 0.0)
    assert banks.shape == (257, 80) and np.all(banks[-1] == 0) and banks.max() <= 1.0
    assert np.all(banks.sum(0) > 0)  # every filter covers at least one FFT bin
    with pytest.raises(ValueError, match="mono"):
        fbank(np.zeros((2, 1000)))
