"""GPT-SoVITS's ``api_v2`` HTTP interface over GPT-SoVITS2 synthesis, so the clients written for it work unchanged.

    python -m sovits2_jax.infer.gpt_sovits2.server --model_dir DIR --ref_dir REFS \\
        [--speech_tokenizer DIR/speech_tokenizer.onnx] [--host 127.0.0.1 --port 9880]

``/tts`` takes GET with query parameters or POST with a JSON body: ``text``, ``text_lang``, ``ref_audio_path``,
``prompt_lang`` (required), ``prompt_text``, ``aux_ref_audio_paths`` (a list; repeat the key in a query),
``top_k`` (15), ``top_p`` (1), ``temperature`` (1), ``text_split_method`` (cut0..cut5, default cut5),
``batch_size`` (1: fragments per batched decode), ``speed_factor`` (1.0), ``fragment_interval`` (0.3 s of
silence between fragments), ``seed`` (-1: random), ``media_type`` (wav, raw, ogg, aac), ``streaming_mode``
(false/0, or true/1/2/3: each fragment is sent as soon as it is synthesised; a wav stream starts with a header
and continues as raw 16-bit PCM). GPT-SoVITS's other tuning fields are accepted and have no effect here.

Differences that follow from the model: the language fields are checked against GPT-SoVITS's names but not used
(GPT-SoVITS2 reads any language without tags); ``prompt_text`` is required (the AR is prompted with the
reference's transcript); the auxiliary references lend their voice only (their style vectors are averaged with the
main one's, as GPT-SoVITS fuses them). Reference paths are read only inside ``--ref_dir``: a path that leaves it
(``..``, an absolute path elsewhere, a link pointing out) is refused. A bad request gets HTTP 400 with a JSON
``{"message": ...}``; a failed synthesis ``{"message": "tts failed", "Exception": ...}``, as GPT-SoVITS answers.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import subprocess
import threading
import wave
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request  # at module level: the handlers' string annotations resolve here
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from sovits2_jax import cli
from sovits2_jax.infer.gpt_sovits2 import text_split

# GPT-SoVITS's language names (v2): checked, not used
LANGUAGES = ("auto", "auto_yue", "en", "zh", "ja", "yue", "ko", "all_zh", "all_ja", "all_yue", "all_ko")
MEDIA_TYPES = ("wav", "raw", "ogg", "aac")
REQUIRED = ("text", "text_lang", "ref_audio_path", "prompt_lang")


class RequestError(ValueError):
    """A request the server refuses (HTTP 400 with this message)."""


@dataclasses.dataclass(frozen=True)
class TtsRequest:
    """One ``/tts`` request, checked and typed."""

    text: str
    text_lang: str
    ref_audio_path: str
    prompt_lang: str
    prompt_text: str = ""
    aux_ref_audio_paths: tuple[str, ...] = ()
    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    text_split_method: str = "cut5"
    batch_size: int = 1
    speed_factor: float = 1.0
    fragment_interval: float = 0.3
    seed: int = -1
    media_type: str = "wav"
    streaming: bool = False


def _number(fields: Mapping, name: str, kind: type):
    value = fields.get(name)
    default = getattr(TtsRequest, name)
    if value is None or value == "":
        return default
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise RequestError(f"{name}: expected {'an integer' if kind is int else 'a number'}, got {value!r}") from None


def _streaming(value) -> bool:
    """GPT-SoVITS's streaming_mode: false/true or 0..3 (1..3 are its quality / latency trade-offs: here all one)."""
    if value is None or value == "":
        return False
    text = str(value).strip().lower()
    if isinstance(value, bool) or text in ("true", "false"):
        return text == "true"
    if text in ("0", "1", "2", "3"):
        return text != "0"
    raise RequestError("the value of streaming_mode must be 0, 1, 2, 3 (int) or true/false (bool)")


def parse_request(fields: Mapping) -> TtsRequest:
    """The checked request of ``/tts``'s fields (query parameters or JSON); RequestError naming the first problem."""
    for name in REQUIRED:
        if fields.get(name) in (None, ""):
            raise RequestError(f"{name} is required")
    for name in ("text_lang", "prompt_lang"):
        if str(fields[name]).lower() not in LANGUAGES:
            raise RequestError(f"{name}: {fields[name]} is not supported (one of {', '.join(LANGUAGES)})")
    media_type = str(fields.get("media_type") or "wav")
    if media_type not in MEDIA_TYPES:
        raise RequestError(f"media_type: {media_type} is not supported")
    if media_type == "aac" and shutil.which("ffmpeg") is None:
        raise RequestError("media_type: aac needs ffmpeg on the server's PATH (wav, raw and ogg do not)")
    method = str(fields.get("text_split_method") or "cut5")
    if method not in text_split.METHODS:
        raise RequestError(f"text_split_method: {method} is not supported")
    aux = fields.get("aux_ref_audio_paths") or ()
    if isinstance(aux, str) or not all(isinstance(p, str) for p in aux):
        raise RequestError("aux_ref_audio_paths: expected a list of paths")
    request = TtsRequest(
        text=str(fields["text"]), text_lang=str(fields["text_lang"]).lower(),
        ref_audio_path=str(fields["ref_audio_path"]), prompt_lang=str(fields["prompt_lang"]).lower(),
        prompt_text=str(fields.get("prompt_text") or ""), aux_ref_audio_paths=tuple(aux),
        top_k=_number(fields, "top_k", int), top_p=_number(fields, "top_p", float),
        temperature=_number(fields, "temperature", float), text_split_method=method,
        batch_size=_number(fields, "batch_size", int), speed_factor=_number(fields, "speed_factor", float),
        fragment_interval=_number(fields, "fragment_interval", float), seed=_number(fields, "seed", int),
        media_type=media_type, streaming=_streaming(fields.get("streaming_mode")),
    )  # fmt: skip
    if not request.prompt_text.strip():
        raise RequestError("prompt_text is required: GPT-SoVITS2 prompts its AR with the reference's transcript")
    if request.batch_size < 1 or request.fragment_interval < 0 or not request.speed_factor > 0:
        raise RequestError("batch_size must be >= 1, fragment_interval >= 0 and speed_factor > 0")
    return request


def reference_path(ref_dir: str | Path, path: str, field: str = "ref_audio_path") -> Path:
    """``path`` (relative to ``ref_dir``, or absolute) as a file inside ``ref_dir`` once links are followed."""
    root = Path(ref_dir).resolve()
    candidate = (root / path).resolve()
    if not candidate.is_relative_to(root):
        raise RequestError(f"{field}: {path} is outside the server's reference folder")
    if not candidate.is_file():
        raise RequestError(f"{field}: {path} is not a file in the server's reference folder")
    return candidate


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(audio, np.float32), -1.0, 32767 / 32768) * 2**15).astype("<i2")


def wav_header(sample_rate: int) -> bytes:
    """The header of a 16-bit mono WAV stream whose length is not known yet (sizes 0; players read to the end)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
    return buf.getvalue()


def pack(audio: np.ndarray, sample_rate: int, media_type: str) -> bytes:
    """``audio`` (float in [-1, 1]) as one file / chunk of ``media_type``."""
    import soundfile as sf

    if media_type == "raw":
        return to_pcm16(audio).tobytes()
    buf = io.BytesIO()
    if media_type == "wav":
        sf.write(buf, to_pcm16(audio), sample_rate, format="WAV", subtype="PCM_16")
        return buf.getvalue()
    if media_type == "ogg":
        sf.write(buf, np.asarray(audio, np.float32), sample_rate, format="OGG", subtype="VORBIS")
        return buf.getvalue()
    cmd = ["ffmpeg", "-loglevel", "error", "-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0",
           "-c:a", "aac", "-b:a", "192k", "-f", "adts", "pipe:1"]  # fmt: skip
    return subprocess.run(cmd, input=to_pcm16(audio).tobytes(), capture_output=True, check=True).stdout


class Synthesizer:
    """Requests -> audio fragments through one ``GptSoVITS2`` (one request at a time: the model calls hold a
    lock), references read from ``ref_dir`` and kept by path and modification time."""

    def __init__(self, model, ref_dir: str | Path, load_audio: Callable | None = None):
        from sovits2_jax.audio.io import load_audio as default_load

        self.model, self.ref_dir = model, Path(ref_dir)
        self.load_audio = load_audio or default_load
        self.lock = threading.Lock()
        self._references: dict[tuple[Path, float, bool], object] = {}

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    def _reference(self, path: str, text: str | None, field: str):
        from sovits2_jax.audio.io import AudioError
        from sovits2_jax.infer.gpt_sovits2.tts import SPEECH_TOKENIZER_RATE, Reference

        file = reference_path(self.ref_dir, path, field)
        key = (file, file.stat().st_mtime, text is None)
        if key not in self._references:
            try:
                wav, sr = self.load_audio(str(file))
            except AudioError as e:
                raise RequestError(f"{field}: {e}") from None
            tokens = None
            if text is not None and self.model.speech_tokenizer is not None:
                from sovits2_jax.audio.resample import resample

                tokens = self.model.speech_tokenizer(resample(wav, sr, SPEECH_TOKENIZER_RATE))
            self._references[key] = Reference(wav, sr, None, tokens)
        return dataclasses.replace(self._references[key], text=text)

    def references(self, request: TtsRequest) -> list:
        """The main reference (with its transcript) and the voice-only auxiliary ones."""
        refs = [self._reference(request.ref_audio_path, request.prompt_text, "ref_audio_path")]
        refs += [self._reference(p, None, "aux_ref_audio_paths") for p in request.aux_ref_audio_paths]
        return refs

    def fragments(self, request: TtsRequest) -> Iterator[np.ndarray]:
        """The audio of each text fragment in order, with ``fragment_interval`` of silence between them."""
        from sovits2_jax.infer.sampling import SamplingConfig

        texts = text_split.split(request.text, request.text_split_method)
        if not texts:
            raise RequestError("text has nothing to say")
        sampling = SamplingConfig(method="nucleus", temperature=request.temperature, top_p=request.top_p,
                                  top_k=request.top_k)  # fmt: skip
        seed = int(np.random.default_rng().integers(2**31)) if request.seed < 0 else request.seed
        silence = np.zeros(round(request.fragment_interval * self.sample_rate), np.float32)
        with self.lock:
            refs = self.references(request)
        for start in range(0, len(texts), request.batch_size):
            batch = texts[start : start + request.batch_size]
            with self.lock:
                wavs = self.model.synthesize_batch(batch, refs, speed=request.speed_factor, seed=seed + start,
                                                   sampling=sampling)  # fmt: skip
            for i, w in enumerate(wavs):
                yield w if start + i == 0 else np.concatenate([silence, w])


def _failure(e: Exception) -> JSONResponse:
    if isinstance(e, RequestError):
        return JSONResponse(status_code=400, content={"message": str(e)})
    return JSONResponse(status_code=400, content={"message": "tts failed", "Exception": str(e)})


async def _fields(request: Request) -> dict:
    if request.method == "GET":
        query = request.query_params
        fields: dict = dict(query)
        if "aux_ref_audio_paths" in query:
            fields["aux_ref_audio_paths"] = query.getlist("aux_ref_audio_paths")
        return fields
    try:
        body = await request.json()
    except ValueError:
        raise RequestError("the POST body must be a JSON object") from None
    if not isinstance(body, dict):
        raise RequestError("the POST body must be a JSON object")
    return body


def create_app(synthesizer: Synthesizer) -> FastAPI:
    """The FastAPI app: ``/tts`` (GET and POST) over ``synthesizer``."""
    app = FastAPI(title="sovits2-jax GPT-SoVITS2 server (GPT-SoVITS api_v2)")

    async def tts(request: Request):
        try:
            req = parse_request(await _fields(request))
            fragments = synthesizer.fragments(req)
            first = await run_in_threadpool(next, fragments, None)  # a bad request fails before any byte is sent
        except (ValueError, OSError) as e:
            return _failure(e)
        if first is None:
            return _failure(RequestError("text has nothing to say"))
        rate, media = synthesizer.sample_rate, f"audio/{req.media_type}"
        if not req.streaming:
            try:
                rest = await run_in_threadpool(list, fragments)
            except (ValueError, OSError) as e:
                return _failure(e)
            return Response(pack(np.concatenate([first, *rest]), rate, req.media_type), media_type=media)

        def stream() -> Iterator[bytes]:
            chunk_type = "raw" if req.media_type == "wav" else req.media_type
            if req.media_type == "wav":
                yield wav_header(rate)
            yield pack(first, rate, chunk_type)
            for fragment in fragments:
                yield pack(fragment, rate, chunk_type)

        return StreamingResponse(stream(), media_type=media)

    app.add_api_route("/tts", tts, methods=["GET", "POST"])
    return app


def onnx_speech_tokenizer(path: str | Path) -> Callable[[np.ndarray], Sequence[int]]:
    """16 kHz audio -> S3 speech tokens with an ONNX speech tokenizer (CosyVoice's or the recipe's offline one)."""
    from sovits2_jax.audio.onnx_models import make_session, tokenize_mels
    from sovits2_jax.audio.whisper_mel import log_mel_spectrogram

    session = make_session(str(path))
    return lambda wav16k: tokenize_mels(session, [log_mel_spectrogram(wav16k)])[0]


def _flags():
    from absl import flags

    flags.DEFINE_string("model_dir", None, "GPT-SoVITS2 model directory (ar/ and vits/ checkpoints of ours)")
    flags.DEFINE_string("ref_dir", None, "the folder reference audio paths are read from (nothing outside it)")
    flags.DEFINE_string("speech_tokenizer", None, "ONNX speech tokenizer (default: MODEL_DIR/speech_tokenizer.onnx)")
    flags.DEFINE_string("text_tokenizer", "cosyvoice2", "the BPE the model was trained with")
    flags.DEFINE_string("host", "127.0.0.1", "address to listen on")
    flags.DEFINE_integer("port", 9880, "port to listen on")
    flags.DEFINE_string("compile_cache", "", "persistent compilation cache dir ('': the default one; 'off': none)")
    return flags.FLAGS


FLAGS = _flags()


def main(argv) -> int:
    cli.command(argv)
    if not FLAGS.model_dir or not FLAGS.ref_dir:
        raise cli.Error("give --model_dir DIR and --ref_dir REFS")
    if not Path(FLAGS.ref_dir).is_dir():
        raise cli.Error(f"--ref_dir: {FLAGS.ref_dir} is not a directory")
    tokenizer_path = Path(FLAGS.speech_tokenizer or Path(FLAGS.model_dir) / "speech_tokenizer.onnx")
    if not tokenizer_path.is_file():
        raise cli.Error(f"--speech_tokenizer: {tokenizer_path} does not exist (the data's ONNX tokenizer)")
    from sovits2_jax.infer import compile_cache
    from sovits2_jax.infer.gpt_sovits2.tts import GptSoVITS2
    from sovits2_jax.text.tokenizer import get_tokenizer

    if FLAGS.compile_cache != "off":
        compile_cache.enable(FLAGS.compile_cache or None)
    try:
        model = GptSoVITS2.from_pretrained(FLAGS.model_dir, tokenizer=get_tokenizer(FLAGS.text_tokenizer),
                                           speech_tokenizer=onnx_speech_tokenizer(tokenizer_path))  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        raise cli.Error(str(e)) from e
    import uvicorn

    uvicorn.run(create_app(Synthesizer(model, FLAGS.ref_dir)), host=FLAGS.host, port=FLAGS.port, log_level="info")
    return 0


if __name__ == "__main__":
    cli.run(main)
