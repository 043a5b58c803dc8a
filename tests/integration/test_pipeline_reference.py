"""Our flow pipeline against cosyvoice-minicpmo's processor chain on the same Parquet files (our writer's layout):
same utterances kept and dropped, same tokens, same Matcha mels (within the mel parity tolerance), same
normalised embeddings."""

import io
import sys

import numpy as np
import pytest

from sovits2_jax.configs import data as data_configs
from sovits2_jax.data import pipeline
from sovits2_jax.data.prep import synthetic

pytestmark = pytest.mark.parity


def _torchaudio_load(source):
    import soundfile as sf
    import torch

    wav, sr = sf.read(io.BytesIO(source) if isinstance(source, bytes) else source, dtype="float32", always_2d=True)
    return torch.from_numpy(wav.T.copy()), sr


class _Tok:
    def __init__(self, tok):
        self.tok = tok

    def encode(self, text, allowed_special="all"):
        return self.tok.encode(text)


def reference_samples(data_list):
    import functools

    from sovits2_jax.parity.torch_refs import import_cosyvoice, to_numpy
    from sovits2_jax.text.tokenizer import get_tokenizer

    proc = import_cosyvoice("cosyvoice.dataset.processor")
    sys.modules["torchaudio"].load = _torchaudio_load  # the stub has no loader; soundfile reads the same bytes
    proc.torchaudio = sys.modules["torchaudio"]
    from matcha.utils.audio import mel_spectrogram

    feat = functools.partial(mel_spectrogram, n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480,
                             win_size=1920, fmin=0, fmax=8000, center=False)  # fmt: skip
    tok = _Tok(get_tokenizer("cosyvoice2"))
    with open(data_list) as f:
        data = ({"src": line.strip()} for line in f if line.strip())
        data = proc.parquet_opener(data)
        data = proc.tokenize(data, lambda: tok, "all")
        data = proc.filter(data, max_length=40960, min_length=100, token_max_length=200, token_min_length=1)
        data = proc.compute_fbank(data, feat, token_mel_ratio=2)
        data = proc.parse_embedding(data, True)
        return {
            s["utt"]: dict(
                speech_feat=to_numpy(s["speech_feat"]),
                speech_token=np.asarray(s["speech_token"]),
                text_token=np.asarray(s["text_token"]),
                utt_embedding=to_numpy(s["utt_embedding"]),
            )
            for s in data
        }


def test_flow_pipeline_matches_cosyvoice_processor(tmp_path, torch_available):
    # 24 kHz (no resampling: torchaudio's resampler is not available here); utterances under 1 s are dropped
    rows = synthetic.make_rows(14, num_speakers=3, min_seconds=0.5, max_seconds=3.0, seed=3)
    data_list = synthetic.write_corpus(str(tmp_path), rows, rows_per_file=4)
    ref = reference_samples(data_list)
    cfg = data_configs.get_config("flow").data
    cfg.worker_count, cfg.num_epochs, cfg.bucket_lengths, cfg.max_frames_in_batch = 0, 1, [100, 200, 300], 600
    it = pipeline.make_batches(cfg, data_list=data_list, process_index=0, process_count=1)
    ours = {}
    for batch in it:
        for i, utt in enumerate(it.last_meta["_utts"]):
            if utt:
                ours[utt] = {k: v[i] for k, v in batch.items()}
    assert sorted(ours) == sorted(ref)
    assert len(ref) < len(rows), "the fixture must contain utterances the filter drops"
    assert sum(it.skipped.values()) == len(rows) - len(ref) and set(it.skipped) == {"too short"}
    for utt, r in ref.items():
        o = ours[utt]
        n = o["speech_feat_len"]
        assert n == r["speech_feat"].shape[0]
        np.testing.assert_allclose(o["speech_feat"][:n], r["speech_feat"], atol=1e-4, rtol=0, err_msg=utt)
        assert o["speech_token_len"] == len(r["speech_token"])
        np.testing.assert_array_equal(o["speech_token"][: o["speech_token_len"]], r["speech_token"])
        np.testing.assert_allclose(o["embedding"], r["utt_embedding"], atol=1e-6)


# (audio samples at 16 kHz = 160 per 10 ms frame, text tokens, speech tokens, extra keys, kept): rows on both sides
# of every rule of cosyvoice's ``filter`` under FILTER, one sample (1/160 frame) from each threshold
FILTER = dict(max_length=200, min_length=50, token_max_length=20, token_min_length=3,
              min_output_input_ratio=0.02, max_output_input_ratio=0.15)  # fmt: skip
FILTER_ROWS = {
    "passes all": (16000, 8, 25, {}, True),
    "no audio": (0, 5, 12, {}, False),
    "below min_length": (8000 - 1, 5, 12, {}, False),
    "above min_length": (8000 + 1, 5, 12, {}, True),
    "above max_length": (32000 + 1, 5, 50, {}, False),
    "below max_length": (32000 - 1, 5, 50, {}, True),
    "below token_min_length": (16000, 2, 25, {}, False),
    "at token_min_length": (16000, 3, 25, {}, True),
    "above token_max_length": (30400, 21, 47, {}, False),
    "at token_max_length": (30400, 20, 47, {}, True),
    "below min_output_input_ratio": (24000 + 1, 3, 37, {}, False),
    "above min_output_input_ratio": (24000 - 1, 3, 37, {}, True),
    "above max_output_input_ratio": (9600 - 1, 9, 15, {}, False),
    "below max_output_input_ratio": (9600 + 1, 9, 15, {}, True),
    "no speech tokens": (16000, 8, 0, {}, False),
    "no rejected speech tokens": (16000, 8, 25, {"reject_speech_token": []}, False),
    "rejected speech tokens": (16000, 8, 25, {"reject_speech_token": [1, 2]}, True),
}


def _filter_rows():
    rng = np.random.default_rng(0)
    rows = []
    for utt, (samples, n_text, n_speech, extra, _) in FILTER_ROWS.items():
        wav = (0.1 * rng.standard_normal(samples)).astype(np.float32)
        rows.append(dict(utt=utt, audio_data=synthetic.wav_bytes(wav, 16000), text_token=list(range(n_text)),
                         speech_token=list(range(n_speech)), **extra))  # fmt: skip
    return rows


def test_length_filter_keeps_and_drops_as_cosyvoice(torch_available):
    from sovits2_jax.data import steps, tasks
    from sovits2_jax.parity.torch_refs import import_cosyvoice

    proc = import_cosyvoice("cosyvoice.dataset.processor")
    sys.modules["torchaudio"].load = _torchaudio_load
    proc.torchaudio = sys.modules["torchaudio"]
    theirs = {s["utt"] for s in proc.filter(iter(_filter_rows()), **FILTER)}
    assert theirs == {utt for utt, row in FILTER_ROWS.items() if row[-1]}, "the rows must sit where FILTER_ROWS says"

    cfg = data_configs.get_config("llm").data
    cfg.filter.update(FILTER)
    task = tasks.get("llm")(cfg, None)
    ours = set()
    for s in _filter_rows():
        try:
            s = steps.check_tokens(s, need_speech_token=True)
            if "reject_speech_token" in s:
                s = task.rejected_tokens(s)
            ours.add(task.filter(steps.decode_audio(s))["utt"])
        except steps.SkipSample:
            pass
    assert ours == theirs
