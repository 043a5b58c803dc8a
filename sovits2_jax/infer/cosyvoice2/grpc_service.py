"""CosyVoice's gRPC protocol (its runtime/python/grpc: service ``cosyvoice.CosyVoice``, one server-streaming
``Inference`` call) over the HTTP server's batcher, so both protocols share one engine and one compiled model.

    python -m sovits2_jax.infer.cosyvoice2.server --model_dir DIR --port 50000 --grpc_port 50001

The messages are built from their descriptor here (no generated code), field for field as CosyVoice's
``cosyvoice.proto``: ``Request`` holds one of ``sft_request`` (spk_id, tts_text), ``zero_shot_request`` (tts_text,
prompt_text, prompt_audio), ``cross_lingual_request`` (tts_text, prompt_audio) or ``instruct_request`` (tts_text,
spk_id, instruct_text); ``prompt_audio`` is 16-bit PCM at 16 kHz, as CosyVoice's client sends it. Each ``Response``
carries ``tts_audio``: 16-bit PCM at the model's rate, one message per chunk the engine produces. CosyVoice2 has
no speaker-id instruct mode; ``instruct_request`` runs instruct2 with the spk2info speaker's stored prompt (a
speaker without one is refused). A request the frontend refuses ends with INVALID_ARGUMENT and a one-line reason.
"""

from __future__ import annotations

import logging
from concurrent import futures

import numpy as np

log = logging.getLogger(__name__)

SERVICE = "cosyvoice.CosyVoice"
PROMPT_RATE = 16000  # CosyVoice's client sends prompt_audio at this rate
# message -> [(field, number, type)], as cosyvoice.proto; "string", "bytes" or a message name
FIELDS = {
    "sftRequest": [("spk_id", 1, "string"), ("tts_text", 2, "string")],
    "zeroshotRequest": [("tts_text", 1, "string"), ("prompt_text", 2, "string"), ("prompt_audio", 3, "bytes")],
    "crosslingualRequest": [("tts_text", 1, "string"), ("prompt_audio", 2, "bytes")],
    "instructRequest": [("tts_text", 1, "string"), ("spk_id", 2, "string"), ("instruct_text", 3, "string")],
    "Request": [("sft_request", 1, "sftRequest"), ("zero_shot_request", 2, "zeroshotRequest"),
                ("cross_lingual_request", 3, "crosslingualRequest"), ("instruct_request", 4, "instructRequest")],
    "Response": [("tts_audio", 1, "bytes")],
}  # fmt: skip
# Request's oneof member -> (our mode, its fields)
MODES = {
    "sft_request": ("sft", ("tts_text", "spk_id")),
    "zero_shot_request": ("zero_shot", ("tts_text", "prompt_text", "prompt_audio")),
    "cross_lingual_request": ("cross_lingual", ("tts_text", "prompt_audio")),
    "instruct_request": ("instruct2", ("tts_text", "spk_id", "instruct_text")),
}


def message_classes() -> dict[str, type]:
    """name -> protobuf message class of cosyvoice.proto, from a descriptor built here."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    kinds = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="sovits2_jax/cosyvoice.proto", package="cosyvoice", syntax="proto3")
    for name, fields in FIELDS.items():
        message = file.message_type.add(name=name)
        if name == "Request":
            message.oneof_decl.add(name="RequestPayload")
        for field, number, kind in fields:
            f = message.field.add(name=field, number=number, label=kinds.LABEL_OPTIONAL)
            if kind in ("string", "bytes"):
                f.type = kinds.TYPE_STRING if kind == "string" else kinds.TYPE_BYTES
            else:
                f.type, f.type_name = kinds.TYPE_MESSAGE, f".cosyvoice.{kind}"
            if name == "Request":
                f.oneof_index = 0
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClassesForFiles([file.name], pool)


def _cosyvoice_names(classes: dict[str, type]) -> dict[str, type]:
    return {name.rpartition(".")[2]: cls for name, cls in classes.items()}


def request_fields(request) -> tuple[str, dict]:
    """(mode, fields as the HTTP server's ``make_inputs`` takes them) of a ``Request``; ValueError if empty."""
    member = request.WhichOneof("RequestPayload")
    if member is None:
        raise ValueError("the request holds none of sft_request, zero_shot_request, cross_lingual_request, "
                         "instruct_request")  # fmt: skip
    mode, names = MODES[member]
    payload = getattr(request, member)
    fields = {}
    for name in names:
        value = getattr(payload, name)
        if name == "prompt_audio":
            if len(value) < 2 or len(value) % 2:
                raise ValueError(f"{member}.prompt_audio must be 16-bit PCM at 16 kHz, got {len(value)} bytes")
            fields["prompt_wav"] = (np.frombuffer(value, "<i2").astype(np.float32) / 2**15, PROMPT_RATE)
        elif value:
            fields[name] = value
    if "tts_text" not in fields:
        raise ValueError(f"{member}.tts_text is empty")
    return mode, fields


class Servicer:
    """``Inference``: the request's inputs through ``make_inputs`` (the HTTP server's), its audio from ``batcher``,
    each chunk as ``encode(chunk)`` bytes (the HTTP server's 16-bit PCM)."""

    def __init__(self, batcher, make_inputs, encode, response_class):
        self.batcher, self.make_inputs, self.encode, self.response = batcher, make_inputs, encode, response_class

    def inference(self, request, context):
        import grpc

        try:
            mode, fields = request_fields(request)
            inputs = self.make_inputs(mode, fields)
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, (str(e).splitlines() or [type(e).__name__])[0])
        if not inputs:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "nothing to synthesise")
        for chunk in self.batcher.submit(inputs, 0):
            yield self.response(tts_audio=self.encode(chunk))


def start(batcher, make_inputs, encode, port: int, host: str = "127.0.0.1", max_workers: int = 4):
    """A started ``grpc.server`` serving ``cosyvoice.CosyVoice/Inference`` on host:port (``.stop(grace)`` ends it)."""
    import grpc

    classes = _cosyvoice_names(message_classes())
    servicer = Servicer(batcher, make_inputs, encode, classes["Response"])
    handler = grpc.unary_stream_rpc_method_handler(
        servicer.inference,
        request_deserializer=classes["Request"].FromString,
        response_serializer=classes["Response"].SerializeToString,
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), maximum_concurrent_rpcs=max_workers)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Inference": handler}),))
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"gRPC: cannot listen on {host}:{port}")
    server.start()
    log.info("gRPC %s listening on %s:%d", SERVICE, host, port)
    return server
