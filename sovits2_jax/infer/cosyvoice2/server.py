"""Streaming HTTP server with CosyVoice's endpoints (runtime/python/fastapi/server.py), batched across requests.

    python -m sovits2_jax.infer.cosyvoice2.server --model_dir DIR [--base DIR] [--host 127.0.0.1 --port 50000] \\
        [--grpc_port 50001]

``/inference_sft`` (tts_text, spk_id), ``/inference_zero_shot`` (tts_text, prompt_text, prompt_wav upload),
``/inference_cross_lingual`` (tts_text, prompt_wav), ``/inference_instruct2`` (tts_text, instruct_text,
prompt_wav); GET or POST, the fields in a multipart or urlencoded body (CosyVoice's client sends GET with a
multipart body) or in the query string, plus an optional ``seed`` (default 0; segment i of the text uses
seed + i). Each answers a stream of 16-bit little-endian mono PCM at the model's sample rate (CosyVoice2: 24 kHz),
chunks sent as the engine produces them. A request goes through the same ``TTS`` frontend as the CLI and the Python
API (text normalisation and splitting, the uploaded prompt's ONNX tokens, embedding and mel, spk2info speakers), in
a worker thread so requests are prepared concurrently; its audio is ``TTS.<mode>(..., stream=True)``'s. Requests
arriving within ``--batch_window_ms`` of each other share one ``Engine.stream`` call (one batched LM decode). A bad
request (missing field, unknown speaker, unreadable or too long prompt, empty text) gets a 4xx whose body is one
line saying why. ``/stats`` reports the batches made. As CosyVoice's server, no ``speed`` field (CosyVoice2 changes
the speed offline only). ``--grpc_port`` also serves CosyVoice's gRPC protocol (``grpc_service``) from the same
batcher.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
from fastapi import FastAPI, Request  # at module level: the handlers' string annotations resolve here
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from sovits2_jax import cli

log = logging.getLogger(__name__)

# A request -> its model inputs (one per text segment): (mode, form fields) -> list[ModelInput]
MakeInputs = Callable[[str, dict], list]
ENDPOINTS = {  # endpoint -> (mode, required form fields)
    "/inference_sft": ("sft", ("tts_text", "spk_id")),
    "/inference_zero_shot": ("zero_shot", ("tts_text", "prompt_text", "prompt_wav")),
    "/inference_cross_lingual": ("cross_lingual", ("tts_text", "prompt_wav")),
    "/inference_instruct2": ("instruct2", ("tts_text", "instruct_text", "prompt_wav")),
}
_END = object()


def to_pcm16(audio: np.ndarray) -> bytes:
    """float audio in [-1, 1] -> 16-bit PCM bytes (CosyVoice's server scales by 2**15)."""
    return (np.clip(np.asarray(audio, np.float32), -1.0, 32767 / 32768) * 2**15).astype("<i2").tobytes()


class _Job:
    """One request's rows and the queue its audio goes to (in segment order)."""

    def __init__(self, inputs: list, seed: int):
        self.inputs, self.seed = inputs, seed
        self.out: queue.Queue = queue.Queue()
        self.pending = {i: [] for i in range(len(inputs))}  # buffered chunks of segments not yet playing
        self.done: set[int] = set()
        self.playing = 0

    def add(self, segment: int, chunk: np.ndarray, final: bool) -> None:
        self.pending[segment].append(chunk)
        if final:
            self.done.add(segment)
        while self.playing < len(self.inputs):  # release segments strictly in order
            for c in self.pending[self.playing]:
                self.out.put(c)
            self.pending[self.playing] = []
            if self.playing not in self.done:
                break
            self.playing += 1
        if self.playing == len(self.inputs):
            self.out.put(_END)


class Batcher:
    """A worker thread in front of ``Engine.stream``: waits ``window_s`` after the first queued request for more
    (up to ``max_rows`` rows), then streams all their rows as one batch and routes each chunk to its request."""

    def __init__(self, engine, *, window_s: float = 0.05, max_rows: int = 8):
        self.engine, self.window_s, self.max_rows = engine, window_s, max_rows
        self.jobs: queue.Queue = queue.Queue()
        self.batches = 0  # engine calls made (a test can see that requests were batched)
        self.batch_sizes: list[int] = []
        threading.Thread(target=self._loop, name="tts-batcher", daemon=True).start()

    def submit(self, inputs: list, seed: int = 0) -> Iterator[np.ndarray]:
        """Queues a request; yields its audio chunks in order as they are produced."""
        job = _Job(list(inputs), seed)
        self.jobs.put(job)
        while (item := job.out.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def _collect(self) -> list[_Job]:
        batch = [self.jobs.get()]
        rows = len(batch[0].inputs)
        deadline = time.monotonic() + self.window_s
        while rows < self.max_rows and (left := deadline - time.monotonic()) > 0:
            try:
                job = self.jobs.get(timeout=left)
            except queue.Empty:
                break
            batch.append(job)
            rows += len(job.inputs)
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._collect()
            rows, seeds, owner = [], [], []
            for job in batch:
                for i, x in enumerate(job.inputs):
                    rows.append(x)
                    seeds.append(job.seed + i)
                    owner.append((job, i))
            self.batches += 1
            self.batch_sizes.append(len(batch))
            try:
                for row, chunk, final in self.engine.stream_events(rows, seeds):
                    job, seg = owner[row]
                    job.add(seg, chunk, final)
            except Exception as e:  # reported to every waiting request; the server keeps running
                log.exception("synthesis failed")
                for job in batch:
                    job.out.put(e)


async def _fields(request: Request) -> dict:
    """A request's fields, from a multipart or urlencoded body whatever the method (CosyVoice's client sends its
    form with GET) and from the query string (a body field wins)."""
    fields = dict(request.query_params)
    kind = request.headers.get("content-type", "")
    if kind.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        fields.update((await request.form()).items())
    return fields


def create_app(engine, make_inputs: MakeInputs, *, sample_rate: int = 24000, window_s: float = 0.05,
               max_rows: int = 8):  # fmt: skip
    """The FastAPI app: CosyVoice's four endpoints over a ``Batcher`` of ``engine``."""
    app = FastAPI(title="sovits2-jax CosyVoice2 server")
    batcher = Batcher(engine, window_s=window_s, max_rows=max_rows)
    app.state.batcher = batcher

    @app.exception_handler(RequestValidationError)
    def _invalid(request, exc):
        return PlainTextResponse(f"bad request: {exc.errors()[0].get('msg', 'invalid form')}\n", status_code=422)

    def endpoint(mode: str, required: tuple[str, ...]):
        async def handle(request: Request):
            form = await _fields(request)
            fields = {}
            for name in (*required, "seed"):
                value = form.get(name)
                if value is None:
                    if name == "seed":
                        continue
                    return PlainTextResponse(f"bad request: missing form field {name!r}\n", status_code=422)
                fields[name] = await value.read() if hasattr(value, "read") else value
            try:
                seed = int(fields.pop("seed", 0))
                inputs = await run_in_threadpool(make_inputs, mode, fields)
            except ValueError as e:
                reason = (str(e).splitlines() or [type(e).__name__])[0]
                return PlainTextResponse(f"bad request: {reason}\n", status_code=400)
            if not inputs:
                return PlainTextResponse("bad request: nothing to synthesise\n", status_code=400)
            chunks = (to_pcm16(c) for c in batcher.submit(inputs, seed))  # iterated in a worker thread
            headers = {"X-Sample-Rate": str(sample_rate)}
            return StreamingResponse(chunks, media_type="application/octet-stream", headers=headers)

        return handle

    for path, (mode, required) in ENDPOINTS.items():
        app.add_api_route(path, endpoint(mode, required), methods=["GET", "POST"])

    @app.get("/stats")
    def stats():
        """Engine calls so far and how many requests each batched."""
        return {"batches": batcher.batches, "batch_sizes": batcher.batch_sizes}

    return app


def tts_inputs(tts) -> MakeInputs:
    """Form fields -> ModelInputs through a ``TTS`` (its frontend: text normalisation, prompts, speakers)."""

    def make(mode: str, f: dict) -> list:
        kw = {"spk_id": f.get("spk_id"), "prompt_text": f.get("prompt_text"), "instruct": f.get("instruct_text")}
        if "prompt_wav" in f:
            kw["prompt_wav"] = f["prompt_wav"]
        return tts.inputs(mode, f["tts_text"], **{k: v for k, v in kw.items() if v is not None})

    return make


def _flags():
    from absl import flags

    flags.DEFINE_string("model_dir", None, "CosyVoice2 model dir, converted Orbax dir or trainer workdir/checkpoint")
    flags.DEFINE_string("base", None, "model dir for the parts a trainer checkpoint lacks")
    flags.DEFINE_string("host", "127.0.0.1", "address to listen on")
    flags.DEFINE_integer("port", 50000, "port to listen on")
    flags.DEFINE_integer("grpc_port", 0, "also serve CosyVoice's gRPC protocol on this port (0: no gRPC)")
    flags.DEFINE_integer("batch_window_ms", 50, "how long the first request of a batch waits for others")
    flags.DEFINE_integer("max_batch_rows", 8, "most text segments in one batch")
    flags.DEFINE_string("compile_cache", "", "persistent compilation cache dir ('': the default one; 'off': none)")
    return flags.FLAGS


FLAGS = _flags()


def main(argv) -> int:
    if len(argv) > 1:
        raise cli.Error(f"unexpected arguments {argv[1:]}")
    from sovits2_jax.infer import compile_cache

    if FLAGS.compile_cache != "off":
        compile_cache.enable(FLAGS.compile_cache or None)
    if not FLAGS.model_dir:
        raise cli.Error("give --model_dir DIR")
    from sovits2_jax.infer.cosyvoice2.tts import TTS

    try:
        tts = TTS.from_pretrained(FLAGS.model_dir, base=FLAGS.base)
        engine = tts.engine  # weights read now: a broken model directory fails before the server listens
    except (ValueError, FileNotFoundError) as e:
        raise cli.Error(str(e)) from e
    import uvicorn

    make_inputs = tts_inputs(tts)
    app = create_app(engine, make_inputs, sample_rate=tts.sample_rate, window_s=FLAGS.batch_window_ms / 1e3,
                     max_rows=FLAGS.max_batch_rows)  # fmt: skip
    grpc_server = None
    if FLAGS.grpc_port:
        from sovits2_jax.infer.cosyvoice2 import grpc_service

        try:
            grpc_server = grpc_service.start(app.state.batcher, make_inputs, to_pcm16, FLAGS.grpc_port, host=FLAGS.host)
        except OSError as e:
            raise cli.Error(str(e)) from e
    uvicorn.run(app, host=FLAGS.host, port=FLAGS.port, log_level="info")
    if grpc_server is not None:
        grpc_server.stop(grace=5)
    return 0


if __name__ == "__main__":
    cli.run(main)
