"""tokens -> mel -> audio against cosyvoice-minicpmo's path (``CosyVoice2Model.token2wav`` = flow.inference then
hift.inference) from the same converted tiny random weights: offline, and streamed chunk by chunk (growing hop,
HiFT mel/source caches, hamming cross-fade, full-context final chunk), including the fork's own ``tts`` loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sovits2_jax.configs.flow import tiny_config
from sovits2_jax.infer.cosyvoice2.hift_streaming import HiftStreamer
from sovits2_jax.infer.cosyvoice2.token2wav import (
    GrowingHopFlowStreamer,
    Token2WavStream,
    fixed_noise,
    flow_batch,
    stretch_mel,
)
from sovits2_jax.parity.references import flow as pf
from sovits2_jax.parity.references import hift as ph
from sovits2_jax.parity.torch_refs import import_cosyvoice, to_numpy

pytestmark = pytest.mark.parity
PROMPT, TOKENS, ATOL = 20, 90, 1e-4


@pytest.fixture(scope="module")
def models(torch_available):
    import torch

    flow_cfg = tiny_config()
    flow_ref = pf.build_reference(flow_cfg, seed=0)
    flow = pf._ours(flow_cfg, [(k, to_numpy(v)) for k, v in flow_ref.state_dict().items()], _cpu())
    hift_ref = ph.build_reference(ph.TINY, seed=0)
    hift = ph.convert([(k, to_numpy(v)) for k, v in hift_ref.state_dict().items()], ph.TINY)
    noise = fixed_noise(0)
    flow_ref.decoder.rand_noise = torch.from_numpy(np.ascontiguousarray(noise[: 2 * (PROMPT + 200)].T[None]))
    import_cosyvoice()
    from cosyvoice.cli.model import CosyVoice2Model

    model = CosyVoice2Model(None, flow_ref, hift_ref)
    rng = np.random.default_rng(1)
    data = dict(
        prompt=rng.integers(0, flow_cfg.vocab_size, PROMPT).astype(np.int32),
        feat=(rng.standard_normal((2 * PROMPT, 80)) - 4.0).astype(np.float32),
        embedding=rng.standard_normal(flow_cfg.spk_embed_dim).astype(np.float32),
        tokens=rng.integers(0, flow_cfg.vocab_size, TOKENS).astype(np.int32),
    )
    return model, flow, hift, noise, data


def _cpu():
    import jax

    return jax.devices("cpu")[0]


def _t(a, dtype=None):
    import torch

    t = torch.from_numpy(np.asarray(a))
    return t.to(dtype) if dtype is not None else t


class _Recorder:
    """Wraps the reference's flow.inference and hift.inference to keep every mel chunk, the mels HiFT is given and
    its excitations."""

    def __init__(self, model):
        self.model, self.mels, self.sources, self.hift_mels = model, [], [], []
        flow_inf, hift_inf = model.flow.inference, model.hift.inference

        def flow(**kw):
            mel, cache = flow_inf(**kw)
            self.mels.append(mel)
            return mel, cache

        def hift(**kw):
            from sovits2_jax.parity.references.hift import torch_noise_off

            with torch_noise_off():
                speech, source = hift_inf(**kw)
            self.sources.append(to_numpy(source)[0, 0])
            self.hift_mels.append(to_numpy(kw["speech_feat"])[0].T)
            return speech, source

        model.flow.inference, model.hift.inference = flow, hift

    def restore(self):
        del self.model.flow.inference, self.model.hift.inference


def _ref_args(data):
    import torch

    return dict(
        prompt_token=_t(data["prompt"][None], torch.int32),
        prompt_feat=_t(data["feat"][None]),
        embedding=_t(data["embedding"][None]),
    )


def _reference_stream(model, data, hop=25, max_hop=100, scale=2):
    """``CosyVoice2Model.tts``'s streaming loop (upstream's growing hop) over known tokens, calling the fork's
    ``token2wav``: (audio chunks, new mel per chunk [T, 80], excitations)."""
    import torch

    rec, uid, tokens = _Recorder(model), "t", data["tokens"].tolist()
    model.hift_cache_dict[uid] = None
    pad = math.ceil(PROMPT / hop) * hop - PROMPT
    offset, cur, audio, offsets = 0, hop, [], []
    try:
        while len(tokens) - offset >= (this := cur + pad if offset == 0 else cur) + 3:
            chunk = torch.tensor(tokens[: offset + this + 3], dtype=torch.int32)[None]
            audio.append(model.token2wav(chunk, token_offset=offset, uuid=uid, stream=True, finalize=False,
                                         **_ref_args(data)))  # fmt: skip
            offsets.append(offset)
            offset, cur = offset + this, min(max_hop, cur * scale)
        chunk = torch.tensor(tokens, dtype=torch.int32)[None]
        audio.append(model.token2wav(chunk, token_offset=offset, uuid=uid, finalize=True, **_ref_args(data)))
        offsets.append(offset)
    finally:
        rec.restore()
        model.hift_cache_dict.pop(uid)
    mels = [to_numpy(m)[0, :, 2 * o :].T for m, o in zip(rec.mels, offsets)]
    return [to_numpy(a)[0] for a in audio], mels, rec.sources


def test_offline_mel_and_audio(models):
    import torch

    from sovits2_jax.parity.references.hift import torch_noise_off

    model, flow, hift, noise, data = models
    with torch.no_grad():
        mel_ref, _ = model.flow.inference(
            token=_t(data["tokens"][None], torch.int32), token_len=torch.tensor([TOKENS], dtype=torch.int32),
            prompt_token_len=torch.tensor([PROMPT], dtype=torch.int32),
            prompt_feat_len=torch.tensor([2 * PROMPT], dtype=torch.int32), streaming=False, finalize=True,
            **_ref_args(data),
        )  # fmt: skip
        with torch_noise_off():
            wav_ref, source_ref = model.hift.inference(speech_feat=mel_ref)
    mel_ref = to_numpy(mel_ref)[0].T
    (mel,) = flow_batch(*flow, [data["tokens"]], [data["prompt"]], [data["feat"]], [data["embedding"]], noise)
    assert mel.shape == mel_ref.shape == (2 * TOKENS, 80)
    np.testing.assert_allclose(mel, mel_ref, atol=ATOL, rtol=0)
    # audio from the reference's mel with its excitation passed in (decode(mel, source))
    streamer = HiftStreamer(*hift)
    wav = streamer.push(mel_ref, finalize=True, source=to_numpy(source_ref)[0, 0])
    np.testing.assert_allclose(wav, to_numpy(wav_ref)[0], atol=ATOL, rtol=0)
    assert np.abs(wav).max() > 0.05


def test_streamed_chunks_equal_reference(models):
    model, flow, hift, noise, data = models
    ref_audio, ref_mels, ref_sources = _reference_stream(model, data)
    assert [m.shape[0] for m in ref_mels] == [60, 100, 20]  # hops 30 (prompt-aligned), 50 (grown), the last 10
    fs = GrowingHopFlowStreamer(*flow, data["prompt"], data["feat"], data["embedding"], noise, max_frames=300)
    mels = list(fs.push(data["tokens"][:40])) + list(fs.push(data["tokens"][40:])) + [fs.finish()]
    assert len(mels) == len(ref_mels)
    hs = HiftStreamer(*hift)
    for i, (mel, ref_mel, ref_wav, src) in enumerate(zip(mels, ref_mels, ref_audio, ref_sources)):
        np.testing.assert_allclose(mel, ref_mel, atol=ATOL, rtol=0, err_msg=f"mel chunk {i}")
        wav = hs.push(mel, finalize=i == len(mels) - 1, source=src)
        np.testing.assert_allclose(wav, ref_wav, atol=ATOL, rtol=0, err_msg=f"audio chunk {i}")


def test_fork_tts_loop_equals_ours(models):
    """The fork's own ``CosyVoice2Model.tts`` (fixed hop 25, vc tokens so no LLM is needed) vs Token2WavStream
    (with the recomputing flow streamer; the cached one is compared above)."""
    import torch

    model, flow, hift, noise, data = models
    rec = _Recorder(model)
    try:
        args = dict(flow_prompt_speech_token=_t(data["prompt"][None], torch.int32),
                    prompt_speech_feat=_t(data["feat"][None]), flow_embedding=_t(data["embedding"][None]))  # fmt: skip
        out = list(model.tts(source_speech_token=_t(data["tokens"][None], torch.int32), stream=True, **args))
    finally:
        rec.restore()
    ref = [to_numpy(o["tts_speech"])[0] for o in out]
    stream = Token2WavStream(flow, hift, data["prompt"], data["feat"], data["embedding"], noise, hop_scale=1,
                             cached=False)  # fmt: skip
    # replay the reference's excitations in order (the HiFT parts are compared above; here the schedule is)
    sources = iter(rec.sources)
    push = stream.hift.push
    stream.hift.push = lambda mel, finalize=False: push(mel, finalize=finalize, source=next(sources))
    ours = [*stream.push(data["tokens"]), stream.finish()]
    assert [len(a) for a in ours] == [len(a) for a in ref]
    assert len(ref) == 4  # 30, 25, 25 tokens, then the last 10
    np.testing.assert_allclose(np.concatenate(ours), np.concatenate(ref), atol=ATOL, rtol=0)


SPEED = 1.5


@pytest.fixture(scope="module")
def speed_reference(models):
    """``CosyVoice2Model.token2wav(..., speed=1.5)`` offline: (the mel it hands HiFT, its audio), noise off."""
    import torch

    model, _, _, _, data = models
    rec, uid = _Recorder(model), "speed"
    model.hift_cache_dict[uid] = None
    try:
        with torch.no_grad():
            wav = model.token2wav(_t(data["tokens"][None], torch.int32), token_offset=0, uuid=uid, finalize=True,
                                  speed=SPEED, **_ref_args(data))  # fmt: skip
    finally:
        rec.restore()
        model.hift_cache_dict.pop(uid)
    (mel,) = rec.hift_mels
    return mel, to_numpy(wav)[0]


def test_offline_speed_change_equals_cosyvoice2_token2wav(models, speed_reference):
    """speed=1.5: the flow's mel linearly interpolated to 1/1.5 of its frames (``stretch_mel``) and HiFT's audio of
    it, against the reference (excitation noise off on both sides; nothing of the reference's is passed in)."""
    _, flow, hift, noise, data = models
    mel_ref, wav_ref = speed_reference
    assert mel_ref.shape == (int(2 * TOKENS / SPEED), 80)
    (flow_mel,) = flow_batch(*flow, [data["tokens"]], [data["prompt"]], [data["feat"]], [data["embedding"]], noise)
    mel = stretch_mel(flow_mel, SPEED)
    np.testing.assert_allclose(mel, mel_ref, atol=ATOL, rtol=0)
    wav = HiftStreamer(*hift).push(mel, finalize=True)
    assert len(wav) == mel_ref.shape[0] * 480
    np.testing.assert_allclose(wav, wav_ref, atol=ATOL, rtol=0)


def _row_mels(data, lengths=(37, 90, 61)):
    """Mels of different lengths for batched HiFT: the prompt's frames continued by random frames around them."""
    rng = np.random.default_rng(7)
    base = np.concatenate([data["feat"], data["feat"][::-1]] * 3)
    return [(base[:n] + 0.3 * rng.standard_normal((n, 80))).astype(np.float32) for n in lengths]


def test_batched_hift_rows_equal_the_reference_on_each_row_alone(models):
    """One padded HiFT call (rows of 37, 90 and 61 frames in a 96-frame bucket) against the reference's
    ``hift.inference`` on each unpadded row: every sample, the last frames included (noise off on both sides)."""
    import torch

    from sovits2_jax.infer.cosyvoice2.token2wav import hift_batch
    from sovits2_jax.parity.references.hift import torch_noise_off

    model, _, hift, _, data = models
    mels = _row_mels(data)
    rows = hift_batch(*hift, mels, None)
    for i, mel in enumerate(mels):
        with torch.no_grad(), torch_noise_off():
            ref, _ = model.hift.inference(speech_feat=_t(mel.T[None]))
        ref = to_numpy(ref)[0]
        assert rows[i].shape == ref.shape == (len(mel) * 480,)
        assert np.abs(ref[-480 * 8 :]).max() > 0.01  # the tail carries signal, so a wrong tail shows
        np.testing.assert_allclose(rows[i], ref, atol=ATOL, rtol=0, err_msg=f"row {i}")


def test_batched_hift_with_noise_equals_each_row_unpadded(models):
    """With per-row excitation keys (random phases and noise on): each row of the padded call equals our HiFT on
    that row alone, unpadded, with the same key."""
    import jax
    from flax import nnx

    from sovits2_jax.infer.cosyvoice2.token2wav import hift_batch

    _, _, hift, _, data = models
    mels = _row_mels(data, (90, 23))
    keys = [jax.random.key(3), jax.random.key(4)]
    rows = hift_batch(*hift, mels, keys)
    model = nnx.merge(*hift)
    for i, (mel, key) in enumerate(zip(mels, keys)):
        alone = np.asarray(model.inference(mel[None], key)[0][0])
        np.testing.assert_allclose(rows[i], alone, atol=ATOL, rtol=0, err_msg=f"row {i}")
