"""The HTTP server in a real uvicorn subprocess on 127.0.0.1: two concurrent streaming requests (sft and zero_shot
with an uploaded wav) from httpx are batched together and answer the engine's audio as 16-bit PCM; bad requests get
a 4xx with a one-line reason. The request -> ModelInput step is a toy mapping (``tiny_server``, loaded by the
server through ``--factory``), so no ONNX frontend models are needed."""

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

from configs.qwen2 import preset
from sovits2_jax.infer.engine import random_engine
from sovits2_jax.infer.inputs import ModelInput

TEXT_VOCAB = preset("tiny").vocab_size
SPEAKERS = {"alice": 1, "bob": 2}


def _embedding(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(16).astype(np.float32)


def toy_inputs(mode: str, fields: dict) -> list[ModelInput]:
    """Text bytes as token ids; sft speakers from SPEAKERS; a zero-shot prompt's tokens/mel/embedding derived from
    the uploaded wav's samples (deterministic), with the errors a frontend gives for bad input."""
    import soundfile as sf

    text = fields["tts_text"].strip()
    if not text:
        raise ValueError("tts_text is empty")
    ids = np.frombuffer(text.encode(), np.uint8).astype(np.int32) % TEXT_VOCAB
    if mode == "sft":
        spk = fields["spk_id"]
        if spk not in SPEAKERS:
            raise ValueError(f"unknown speaker id {spk!r}; known: {', '.join(sorted(SPEAKERS))}")
        return [ModelInput(text=ids, flow_embedding=_embedding(SPEAKERS[spk]))]
    try:
        wav, sr = sf.read(io.BytesIO(fields["prompt_wav"]), dtype="float32")
    except Exception as e:
        raise ValueError(f"prompt_wav is not readable audio ({type(e).__name__})") from None
    n = len(wav) * 25 // sr  # 25 tokens per second
    frames = wav[: n * sr // 25].reshape(n, -1)
    tokens = (np.abs(frames).mean(1) * 1e4).astype(np.int32) % 64
    feat = np.repeat(np.log(np.abs(frames[:, :80]) + 1e-3), 2, axis=0).astype(np.float32)
    prompt_text = np.frombuffer(fields["prompt_text"].encode(), np.uint8).astype(np.int32) % TEXT_VOCAB
    prompt = dict(llm_prompt_speech_token=tokens, flow_prompt_speech_token=tokens, prompt_speech_feat=feat)
    return [ModelInput(text=ids, prompt_text=prompt_text, flow_embedding=_embedding(3), **prompt)]


def tiny_server():
    """The ``--factory`` target: (engine, make_inputs, sample_rate)."""
    return random_engine("tiny", max_ratio=6.0), toy_inputs, 24000


def _wav_bytes() -> bytes:
    import soundfile as sf

    t = np.arange(int(0.4 * 16000)) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000, format="WAV")
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import httpx

    port = _free_port()
    log = (tmp_path_factory.mktemp("serve") / "server.log").open("w")
    cmd = [sys.executable, "-m", "sovits2_jax.serve", f"--factory={Path(__file__)}:tiny_server", f"--port={port}",
           "--batch_window_ms=1500", f"--compile_cache={tmp_path_factory.mktemp('xla')}"]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=Path(__file__).parents[2])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, Path(log.name).read_text()[-3000:]
        try:
            httpx.get(f"{url}/stats", timeout=2)
            break
        except httpx.TransportError:
            time.sleep(0.5)
    else:
        pytest.fail("server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def _post(url, path, data, files=None, out=None):
    import httpx

    start = time.monotonic()
    body, first = b"", None
    with httpx.stream("POST", url + path, data=data, files=files, timeout=1800) as r:
        for part in r.iter_bytes():
            first = first or time.monotonic() - start
            body += part
        out.update(status=r.status_code, body=body, first_s=first)
    return out


def test_concurrent_streams_are_batched_and_equal_the_engine(server):
    import httpx

    requests = [
        ("/inference_sft", {"tts_text": "hello there", "spk_id": "alice", "seed": "5"}, None),
        ("/inference_zero_shot", {"tts_text": "hi", "prompt_text": "a prompt", "seed": "7"},
         {"prompt_wav": ("p.wav", _wav_bytes(), "audio/wav")}),
    ]  # fmt: skip
    results = [{} for _ in requests]
    threads = [threading.Thread(target=_post, args=(server, p, d, f, o)) for (p, d, f), o in zip(requests, results)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r["status"] for r in results] == [200, 200]
    stats = httpx.get(f"{server}/stats").json()
    assert stats["batch_sizes"] == [2]  # both requests went through one Engine.stream call

    engine = random_engine("tiny", max_ratio=6.0)
    for (path, data, files), got in zip(requests, results):
        mode = path.removeprefix("/inference_")
        fields = {**data, **({"prompt_wav": files["prompt_wav"][1]} if files else {})}
        rows = toy_inputs(mode, fields)
        expected = np.concatenate([c for _, c in engine.stream(rows, int(data["seed"]))])
        pcm = np.frombuffer(got["body"], "<i2").astype(np.int32)
        ref = (np.clip(expected, -1, 32767 / 32768) * 2**15).astype(np.int16).astype(np.int32)
        assert pcm.shape == ref.shape and len(pcm) > 0
        assert np.abs(pcm - ref).max() <= 1, path  # float rounding across batch shapes, at most one PCM step
        assert np.abs(pcm).max() > 30
        print(f"{path}: {len(pcm) / 24000:.2f} s of audio, first chunk after {got['first_s']:.2f} s")


@pytest.mark.parametrize(
    "path,data,files,status,reason",
    [
        ("/inference_sft", {"spk_id": "alice"}, None, 422, "missing form field 'tts_text'"),
        ("/inference_sft", {"tts_text": "x", "spk_id": "carol"}, None, 400, "known: alice, bob"),
        ("/inference_sft", {"tts_text": "  ", "spk_id": "bob"}, None, 400, "tts_text is empty"),
        ("/inference_zero_shot", {"tts_text": "x", "prompt_text": "y"}, {"prompt_wav": ("p.wav", b"junk", "audio/wav")},
         400, "not readable audio"),
    ],
)  # fmt: skip
def test_bad_requests_get_a_4xx_with_one_line(server, path, data, files, status, reason):
    import httpx

    r = httpx.post(server + path, data=data, files=files, timeout=60)
    assert r.status_code == status
    assert reason in r.text and r.text.count("\n") == 1, r.text
