"""The HTTP server in a real uvicorn subprocess on 127.0.0.1 over the tiny random CosyVoice2 model directory: two
concurrent streaming requests from httpx (sft, and zero_shot with an uploaded wav going through the ONNX frontend)
are batched together and answer, as 16-bit PCM, the audio ``python -m sovits2_jax.infer --stream`` writes for the
same request (the CLI shares the server's persistent compilation cache, so it does not compile again); bad
requests get a 4xx with a one-line reason. The same process serves CosyVoice's gRPC protocol: requests encoded by
hand from its cosyvoice.proto get the HTTP answer's samples, bad ones INVALID_ARGUMENT with a one-line reason."""

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

PROMPT_TEXT = "The wind carried the smell."
_GRPC: dict[str, str] = {}  # the server fixture's gRPC address


def _prompt_wav() -> bytes:
    """A real utterance (espeak-ng, 22.05 kHz: the server resamples it) as WAV file bytes."""
    import soundfile as sf

    from sovits2_jax.data.prep.espeak import Espeak

    engine = Espeak()
    speech = engine.synthesize(PROMPT_TEXT, "en-us+f3").astype(np.float32) / 32768
    buf = io.BytesIO()
    sf.write(buf, speech, engine.sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_cosyvoice2_dir, xla_cache):
    import httpx

    port, grpc_port = _free_port(), _free_port()
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    cmd = [sys.executable, "-m", "sovits2_jax.infer.cosyvoice2.server", f"--model_dir={tiny_cosyvoice2_dir}",
           f"--port={port}", f"--grpc_port={grpc_port}", "--batch_window_ms=3000",
           f"--compile_cache={xla_cache}"]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=Path(__file__).parents[2])
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                httpx.get(f"{url}/stats", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            proc.kill()
            pytest.fail("server did not start")
        _GRPC["address"] = f"127.0.0.1:{grpc_port}"
        yield url
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def grpc_address(server) -> str:
    return _GRPC["address"]


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


@pytest.mark.parametrize(
    "path,data,files,status,reason",
    [
        ("/inference_sft", {"spk_id": "spk_a"}, None, 422, "missing form field 'tts_text'"),
        ("/inference_sft", {"tts_text": "Hi.", "spk_id": "carol"}, None, 400,
         "unknown speaker id 'carol'; known speakers: spk_a, spk_b"),
        ("/inference_sft", {"tts_text": "  ", "spk_id": "spk_b"}, None, 400, "the text to synthesise is empty"),
        ("/inference_zero_shot", {"tts_text": "Hi.", "prompt_text": "Yes."},
         {"prompt_wav": ("p.wav", b"RIFF\x24\x00\x00\x00WAVEfmt junk", "audio/wav")}, 400, "unreadable audio"),
    ],
)  # fmt: skip
def test_bad_requests_get_a_4xx_with_one_line(server, path, data, files, status, reason):
    import httpx

    r = httpx.post(server + path, data=data, files=files, timeout=60)
    assert r.status_code == status
    assert reason in r.text and r.text.count("\n") == 1, r.text


def _cli_streams(model_dir, xla_cache, outs, arg_lists) -> list[np.ndarray]:
    """``python -m sovits2_jax.infer ... --stream --out OUT`` for each argument list, run side by side: the audio of
    each (float, from its 16-bit wav)."""
    import soundfile as sf

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = []
    for out, args in zip(outs, arg_lists):
        cmd = [sys.executable, "-m", "sovits2_jax.infer", f"--model_dir={model_dir}", f"--out={out}", "--stream",
               f"--compile_cache={xla_cache}", *args]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                      cwd=Path(__file__).parents[2]))  # fmt: skip
    audio = []
    for proc, out in zip(procs, outs):
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        pcm, sr = sf.read(out, dtype="int16")
        assert sr == 24000
        audio.append(pcm.astype(np.float64) / 2**15)
    return audio


def test_concurrent_streams_are_batched_and_equal_the_cli(server, tiny_cosyvoice2_dir, xla_cache, tmp_path):
    import httpx

    wav = _prompt_wav()
    requests = [
        ("/inference_sft", {"tts_text": "Hello.", "spk_id": "spk_a", "seed": "5"}, None),
        ("/inference_zero_shot", {"tts_text": "Good day.", "prompt_text": PROMPT_TEXT, "seed": "7"},
         {"prompt_wav": ("p.wav", wav, "audio/wav")}),
    ]  # fmt: skip
    # one request first, so that the pair below is not split by first-use costs (loading the ONNX frontend,
    # compiling): each of the pair then reaches the queue well within the batch window of the other
    warm = _post(server, requests[1][0], {**requests[1][1], "tts_text": "Hi."}, requests[1][2], {})
    assert warm["status"] == 200, warm["body"][:200]
    before = len(httpx.get(f"{server}/stats").json()["batch_sizes"])
    results = [{} for _ in requests]
    threads = [threading.Thread(target=_post, args=(server, p, d, f, o)) for (p, d, f), o in zip(requests, results)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r["status"] for r in results] == [200, 200], [r["body"][:200] for r in results]
    stats = httpx.get(f"{server}/stats").json()
    assert stats["batch_sizes"][before:] == [2]  # both requests went through one Engine.stream call

    (tmp_path / "prompt.wav").write_bytes(wav)
    cli_args = [
        ["--mode=sft", "--text=Hello.", "--spk_id=spk_a", "--seed=5"],
        ["--mode=zero_shot", "--text=Good day.", f"--prompt_text={PROMPT_TEXT}",
         f"--prompt_wav={tmp_path / 'prompt.wav'}", "--seed=7"],
    ]  # fmt: skip
    outs = [tmp_path / f"cli_{i}.wav" for i in range(len(cli_args))]
    cli_audio = _cli_streams(tiny_cosyvoice2_dir, xla_cache, outs, cli_args)
    for (path, _, _), got, want in zip(requests, results, cli_audio):
        served = np.frombuffer(got["body"], "<i2").astype(np.float64) / 2**15
        assert served.shape == want.shape and len(served) > 0, path
        # both 16-bit, and float rounding across batch shapes: within two PCM steps
        assert np.abs(served - want).max() <= 2 / 2**15, path
        assert np.abs(served).max() > 1e-3, path
        print(f"{path}: {len(served) / 24000:.2f} s of audio, first chunk after {got['first_s']:.2f} s")


def _client_request(url, path, payload, wav=None) -> bytes:
    """A request shaped as CosyVoice's own fastapi client sends it: GET with the form in the body (multipart when a
    prompt file goes with it, else urlencoded), read as a stream."""
    import requests

    files = [("prompt_wav", ("prompt_wav", io.BytesIO(wav), "application/octet-stream"))] if wav else None
    with requests.request("GET", url + path, data=payload, files=files, stream=True, timeout=1800) as r:
        assert r.status_code == 200, r.text[:300]
        return b"".join(r.iter_content(chunk_size=16000))


def test_cosyvoice_client_requests_get_the_same_audio_as_posts(server):
    import httpx

    wav = _prompt_wav()
    cases = [
        ("/inference_sft", {"tts_text": "Hello.", "spk_id": "spk_b"}, None),
        ("/inference_zero_shot", {"tts_text": "Good day.", "prompt_text": PROMPT_TEXT}, wav),
        ("/inference_cross_lingual", {"tts_text": "Good day."}, wav),
        ("/inference_instruct2", {"tts_text": "Good day.", "instruct_text": "Speak slowly."}, wav),
    ]
    for path, payload, prompt in cases:
        got = _client_request(server, path, payload, prompt)
        files = {"prompt_wav": ("p.wav", prompt, "audio/wav")} if prompt else None
        posted = httpx.post(server + path, data=payload, files=files, timeout=1800)
        assert posted.status_code == 200, posted.text[:300]
        assert len(got) > 0 and len(got) % 2 == 0, path
        assert got == posted.content, path  # same fields, same seed (0), one row each: the same samples
    # the fields in the query string of a GET with no body
    query = httpx.get(server + "/inference_sft", params=cases[0][1], timeout=1800)
    assert query.status_code == 200 and query.content == _client_request(server, *cases[0][:2])


# --- CosyVoice's gRPC protocol, encoded by hand from its cosyvoice.proto (independent of the server's descriptor)


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _field(number: int, value: bytes | str) -> bytes:
    """A length-delimited proto3 field (strings, bytes and sub-messages alike)."""
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _grpc_request(member: int, fields: list[tuple[int, bytes | str]]) -> bytes:
    """``Request`` with its oneof member ``member`` (1 sft, 2 zero_shot, 3 cross_lingual, 4 instruct)."""
    return _field(member, b"".join(_field(n, v) for n, v in fields))


def _tts_audio(response: bytes) -> bytes:
    """``Response.tts_audio`` (field 1) of one streamed message."""
    assert response[:1] == b"\x0a", response[:8]
    length, i, shift = 0, 1, 0
    while True:
        length |= (response[i] & 0x7F) << shift
        shift, i = shift + 7, i + 1
        if not response[i - 1] & 0x80:
            break
    assert len(response) == i + length
    return response[i:]


def _grpc_call(address: str, request: bytes) -> bytes:
    import grpc

    with grpc.insecure_channel(address) as channel:
        call = channel.unary_stream("/cosyvoice.CosyVoice/Inference")  # bytes in, bytes out
        return b"".join(_tts_audio(r) for r in call(request, timeout=1800))


def _prompt_16k() -> tuple[bytes, bytes]:
    """The prompt as CosyVoice's gRPC client sends it (16-bit PCM at 16 kHz) and the same samples as a WAV file."""
    import soundfile as sf

    from sovits2_jax.audio.io import load_audio

    wav, _ = load_audio(_prompt_wav(), target_sr=16000)
    pcm = (np.clip(wav, -1, 32767 / 32768) * 2**15).astype("<i2")
    buf = io.BytesIO()
    sf.write(buf, pcm, 16000, format="WAV", subtype="PCM_16")
    return pcm.tobytes(), buf.getvalue()


def test_cosyvoice_grpc_client_requests_get_the_http_servers_audio(server, grpc_address):
    import grpc
    import httpx

    pcm, wav = _prompt_16k()
    cases = [
        ("/inference_sft", {"tts_text": "Hello.", "spk_id": "spk_b"}, None, 1, [(1, "spk_b"), (2, "Hello.")]),
        ("/inference_zero_shot", {"tts_text": "Good day.", "prompt_text": PROMPT_TEXT}, wav, 2,
         [(1, "Good day."), (2, PROMPT_TEXT), (3, pcm)]),
        ("/inference_cross_lingual", {"tts_text": "Good day."}, wav, 3, [(1, "Good day."), (2, pcm)]),
    ]  # fmt: skip
    for path, payload, prompt, member, fields in cases:
        got = _grpc_call(grpc_address, _grpc_request(member, fields))
        files = {"prompt_wav": ("p.wav", prompt, "audio/wav")} if prompt else None
        posted = httpx.post(server + path, data=payload, files=files, timeout=1800)
        assert posted.status_code == 200, posted.text[:300]
        assert len(got) > 0 and got == posted.content, path  # the same samples, seed 0, one row each
    # CosyVoice2 has no speaker-id instruct: instruct_request needs a spk2info speaker with a stored prompt, which
    # this directory's sft speakers lack
    instruct = _grpc_request(4, [(1, "Good day."), (2, "spk_a"), (3, "Speak slowly.")])
    for request, reason in [
        (instruct, "speaker 'spk_a' has no stored prompt (an sft speaker); use mode sft"),
        (_grpc_request(1, [(1, "carol"), (2, "Hi.")]), "unknown speaker id 'carol'; known speakers: spk_a, spk_b"),
        (b"", "the request holds none of sft_request"),
        (_grpc_request(2, [(1, "Hi."), (2, "Yes."), (3, b"\x01")]), "prompt_audio must be 16-bit PCM at 16 kHz"),
    ]:
        with pytest.raises(grpc.RpcError) as failed:
            _grpc_call(grpc_address, request)
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason in failed.value.details() and "\n" not in failed.value.details()
