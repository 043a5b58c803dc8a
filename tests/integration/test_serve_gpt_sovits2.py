"""GPT-SoVITS's api_v2 ``/tts`` over GPT-SoVITS2 (sovits2_jax/infer/gpt_sovits2/server.py), served by a real
uvicorn on 127.0.0.1 and called with ``requests`` the way GPT-SoVITS's clients call it (GET query, POST JSON): tiny
random AR + VITS models, the references' tokens from an S3-v2 ONNX speech tokenizer, real espeak-ng references in a
reference folder. GET and POST answer the same audio, streaming sends the same samples fragment by fragment,
auxiliary references change the voice, every media type decodes, and paths leaving the folder are refused."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
SPEECH = 6561  # the S3-v2 tokenizer's codes


class CharTokenizer:
    """Characters -> ids 1..63 (a stand-in BPE small enough for the tiny models' 64-row tables)."""

    def encode(self, text: str) -> list[int]:
        return [1 + ord(c) % 63 for c in text]


def _espeak(path: Path, text: str, voice: str) -> None:
    from sovits2_jax.data.prep.espeak import Espeak

    engine = Espeak()
    sf.write(path, engine.synthesize(text, voice).astype(np.float32) / 32768, engine.sample_rate, subtype="PCM_16")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_cosyvoice2_dir):
    import requests
    import uvicorn
    from flax import nnx

    from sovits2_jax.configs.vits2 import tiny
    from sovits2_jax.infer.gpt_sovits2 import server, tts
    from sovits2_jax.models import speech_lm as slm
    from sovits2_jax.models.qwen2 import Qwen2Config
    from sovits2_jax.models.vits2 import SynthesizerTrn

    backbone = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                           num_kv_heads=2)  # fmt: skip
    ar_cfg = slm.SpeechLMConfig(backbone=backbone, speech_token_size=SPEECH, layout="gpt_sovits2",
                                text_attention="bidirectional")  # fmt: skip
    vits_cfg = tiny().replace(with_posterior=False, speech_vocab_size=SPEECH + 3)
    settings = tts.SynthesisSettings(min_ratio=1.0, max_ratio=3.0)
    model = tts.GptSoVITS2.from_parts(
        slm.SpeechLM(ar_cfg, rngs=nnx.Rngs(0)), SynthesizerTrn(vits_cfg, rngs=nnx.Rngs(1)), CharTokenizer(), settings,
        speech_tokenizer=server.onnx_speech_tokenizer(tiny_cosyvoice2_dir / "speech_tokenizer_v2.onnx"),
    )  # fmt: skip
    root = tmp_path_factory.mktemp("gpt_sovits2_serve")
    refs, outside = root / "refs", root / "outside"
    refs.mkdir()
    outside.mkdir()
    _espeak(refs / "main.wav", "The wind carried the smell of rain.", "en-us+f3")
    _espeak(refs / "aux.wav", "A second voice for the blend.", "en-us+m3")
    _espeak(outside / "secret.wav", "Not for the server.", "en-us+f2")
    os.symlink(outside / "secret.wav", refs / "link.wav")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(server.create_app(server.Synthesizer(model, refs)), host="127.0.0.1", port=port,
                            log_level="warning")  # fmt: skip
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)
    url = f"http://127.0.0.1:{port}/tts"
    yield dict(url=url, refs=refs, outside=outside, rate=model.sample_rate, requests=requests)
    uv.should_exit = True
    thread.join(timeout=30)


BASE = dict(text="Hello there, how are you?", text_lang="en", ref_audio_path="main.wav", prompt_lang="en",
            prompt_text="The wind carried the smell of rain.", seed=7, text_split_method="cut5")  # fmt: skip


def _wav(body: bytes) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(io.BytesIO(body), dtype="int16")
    return audio, rate


def test_get_and_post_answer_the_same_wav(served):
    rq = served["requests"]
    got = rq.get(served["url"], params=BASE, timeout=600)
    posted = rq.post(served["url"], json=BASE, timeout=600)
    assert got.status_code == posted.status_code == 200, (got.text[:300], posted.text[:300])
    assert got.headers["content-type"] == "audio/wav"
    assert got.content == posted.content
    audio, rate = _wav(got.content)
    assert rate == served["rate"] and audio.size > 0 and np.abs(audio).max() > 0
    # cut5 makes two fragments joined by fragment_interval seconds of silence: a longer gap, a longer answer
    longer, _ = _wav(rq.post(served["url"], json={**BASE, "fragment_interval": 1.3}, timeout=600).content)
    assert longer.size == audio.size + served["rate"]
    one, _ = _wav(rq.post(served["url"], json={**BASE, "text_split_method": "cut0"}, timeout=600).content)
    assert one.size < audio.size  # one fragment, no silence


def test_streaming_sends_the_same_samples_fragment_by_fragment(served):
    rq = served["requests"]
    whole, _ = _wav(rq.post(served["url"], json=BASE, timeout=600).content)
    with rq.post(served["url"], json={**BASE, "streaming_mode": True}, stream=True, timeout=600) as r:
        assert r.status_code == 200
        chunks = [c for c in r.iter_content(chunk_size=None) if c]
    assert chunks[0][:4] == b"RIFF" and len(chunks[0]) == 44  # a header, then raw 16-bit PCM
    pcm = np.frombuffer(b"".join(chunks[1:]), "<i2")
    np.testing.assert_array_equal(pcm, whole)
    query = {**BASE, "streaming_mode": "2", "media_type": "raw"}  # GPT-SoVITS's int modes, as a query sends them
    raw = rq.get(served["url"], params=query, timeout=600)
    assert raw.status_code == 200 and raw.headers["content-type"] == "audio/raw"
    np.testing.assert_array_equal(np.frombuffer(raw.content, "<i2"), whole)


def test_auxiliary_references_blend_in_their_voice(served):
    rq = served["requests"]
    alone = rq.post(served["url"], json=BASE, timeout=600).content
    fused = rq.post(served["url"], json={**BASE, "aux_ref_audio_paths": ["aux.wav"]}, timeout=600)
    assert fused.status_code == 200 and fused.content != alone
    by_query = rq.get(served["url"], params={**BASE, "aux_ref_audio_paths": ["aux.wav"]}, timeout=600)
    assert by_query.content == fused.content  # the repeated query key is the JSON list


def test_ogg_and_aac(served):
    import shutil

    rq = served["requests"]
    whole, _ = _wav(rq.post(served["url"], json=BASE, timeout=600).content)
    ogg = rq.post(served["url"], json={**BASE, "media_type": "ogg"}, timeout=600)
    assert ogg.status_code == 200 and ogg.content[:4] == b"OggS"
    decoded, rate = sf.read(io.BytesIO(ogg.content))
    assert rate == served["rate"] and abs(decoded.size - whole.size) < 0.05 * whole.size
    aac = rq.post(served["url"], json={**BASE, "media_type": "aac"}, timeout=600)
    if shutil.which("ffmpeg"):
        assert aac.status_code == 200 and aac.content[0] == 0xFF and aac.content[1] & 0xF0 == 0xF0  # ADTS sync
    else:
        assert aac.status_code == 400 and "needs ffmpeg" in aac.json()["message"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"ref_audio_path": "../outside/secret.wav"}, "ref_audio_path: ../outside/secret.wav is outside"),
        ({"ref_audio_path": "ABSOLUTE"}, "is outside the server's reference folder"),
        ({"ref_audio_path": "link.wav"}, "ref_audio_path: link.wav is outside"),
        ({"aux_ref_audio_paths": ["../outside/secret.wav"]}, "aux_ref_audio_paths: ../outside/secret.wav is outside"),
        ({"ref_audio_path": "nope.wav"}, "ref_audio_path: nope.wav is not a file"),
        ({"text": ""}, "text is required"),
        ({"ref_audio_path": None}, "ref_audio_path is required"),
        ({"prompt_lang": None}, "prompt_lang is required"),
        ({"text_lang": "klingon"}, "text_lang: klingon is not supported"),
        ({"prompt_text": ""}, "prompt_text is required"),
        ({"media_type": "mp3"}, "media_type: mp3 is not supported"),
        ({"text_split_method": "cut9"}, "text_split_method: cut9 is not supported"),
        ({"streaming_mode": 5}, "streaming_mode must be 0, 1, 2, 3"),
        ({"top_k": "many"}, "top_k: expected an integer"),
        ({"text": "?!"}, "text has nothing to say"),
    ],
)
def test_bad_requests_get_400_with_a_json_message(served, change, message):
    rq = served["requests"]
    if change.get("ref_audio_path") == "ABSOLUTE":
        change = {"ref_audio_path": str(served["outside"] / "secret.wav")}
    body = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    for r in (rq.post(served["url"], json=body, timeout=600), rq.get(served["url"], params=body, timeout=600)):
        assert r.status_code == 400 and r.headers["content-type"] == "application/json"
        assert message in r.json()["message"], r.json()


def test_the_command_refuses_a_missing_reference_folder(tmp_path):
    cmd = [sys.executable, "-m", "sovits2_jax.infer.gpt_sovits2.server", f"--model_dir={tmp_path}",
           f"--ref_dir={tmp_path / 'none'}"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        f"error: --ref_dir: {tmp_path / 'none'} is not a directory"
    ]
