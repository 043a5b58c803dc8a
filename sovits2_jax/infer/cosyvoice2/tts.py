"""The Python API: ``TTS.from_pretrained(path)`` and one method per CosyVoice2 mode.

    tts = TTS.from_pretrained("pretrained_models/CosyVoice2-0.5B")   # or our Orbax dir, or a trainer workdir
    wav = tts.zero_shot("Text to say.", "Transcript of the prompt.", "prompt.wav")     # float32 at tts.sample_rate
    for chunk in tts.sft("Text to say.", "spk_a", stream=True): ...

A text is normalised and split into segments (``text_frontend``); offline, all segments of a request go through
the engine as one batch (segment i uses seed + i) and their audio is concatenated; streamed, the segments are
streamed one after another with the same seeds, so the concatenated chunks are the offline audio's segments.
``speed`` (offline only, as in CosyVoice2) stretches each segment's mel to 1/speed of its length before HiFT.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from sovits2_jax.infer.cosyvoice2.frontend import Audio, Frontend, FrontendError
from sovits2_jax.infer.cosyvoice2.inputs import ModelInput
from sovits2_jax.infer.cosyvoice2.loading import ModelFiles, build_engine, find_model, load_parts


@dataclasses.dataclass
class Synthesis:
    """One request's audio and what produced it (for ``--dump``)."""

    audio: np.ndarray  # float32 [samples]
    inputs: list[ModelInput]  # one per text segment
    speech_tokens: list[np.ndarray]
    mels: list[np.ndarray]


def _check_speed(speed: float, stream: bool = False) -> None:
    if not (np.isfinite(speed) and speed > 0):
        raise FrontendError(f"speed must be a positive number, got {speed}")
    if stream and speed != 1.0:
        raise FrontendError("a speed change works offline only (CosyVoice2 stretches the whole mel); drop stream")


def _session_opener(path: Path | None):
    if path is None:
        return None

    def open_session():
        from sovits2_jax.audio.onnx_models import make_session

        return make_session(str(path))

    return open_session


def _spk2info_reader(path: Path | None):
    def read():
        if path is None:
            return {}
        from sovits2_jax.infer.cosyvoice2 import spk2info

        try:
            return spk2info.load(path)
        except spk2info.Spk2InfoError as e:
            raise FrontendError(str(e)) from e

    return read


class TTS:
    """CosyVoice2 synthesis: a ``Frontend`` (text, prompts, speakers) in front of a batched ``Engine``.

    The weights are read and the engine is built on first synthesis, so bad requests fail fast.
    """

    def __init__(self, files: ModelFiles, frontend: Frontend, engine=None, **engine_config):
        self.files, self.frontend, self.sample_rate = files, frontend, files.sample_rate
        self._engine, self._engine_config = engine, engine_config

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, base: str | os.PathLike | None = None, **engine_config):
        """From a CosyVoice2 model directory, our converted Orbax directory, or a trainer workdir / (averaged)
        checkpoint holding one part with ``base`` (a model directory) for the rest and the assets.
        ``engine_config``: EngineConfig fields (``sampling`` defaults to the model's)."""
        from sovits2_jax.text.tokenizer import get_tokenizer

        files = find_model(path, base)
        frontend = Frontend(
            get_tokenizer("cosyvoice2"), speech_tokenizer=_session_opener(files.speech_tokenizer),
            speaker_model=_session_opener(files.speaker_model), spk2info=_spk2info_reader(files.spk2info),
            token_mel_ratio=files.token_mel_ratio,
        )  # fmt: skip
        return cls(files, frontend, **engine_config)

    @property
    def engine(self):
        """The batched Engine (weights read on first use)."""
        if self._engine is None:
            self._engine = build_engine(load_parts(self.files), **self._engine_config)
        return self._engine

    @property
    def speakers(self) -> list[str]:
        """The ids stored in the model's spk2info.pt (sft speakers and saved zero-shot prompts)."""
        return sorted(self.frontend.spk2info)

    # ---- requests -> ModelInputs -----------------------------------------------------------------------------

    def inputs(self, mode: str, text: str = "", *, normalize: bool = True, **kw) -> list[ModelInput]:
        """The model inputs of a request, one per text segment (``kw``: the mode's other arguments)."""
        f = self.frontend
        if mode == "vc":
            return [f.vc(kw["source_wav"], kw["prompt_wav"])]
        segments = f.split_text(text, normalize)
        if mode == "sft":
            return [f.sft(s, kw["spk_id"]) for s in segments]
        if mode == "zero_shot":
            first = f.zero_shot(segments[0], kw.get("prompt_text") or "", kw.get("prompt_wav"),
                                spk_id=kw.get("spk_id"), normalize=normalize)  # fmt: skip
        elif mode == "cross_lingual":
            first = f.cross_lingual(segments[0], kw.get("prompt_wav"), spk_id=kw.get("spk_id"))
        elif mode == "instruct2":
            first = f.instruct2(segments[0], kw.get("instruct") or "", kw.get("prompt_wav"), spk_id=kw.get("spk_id"),
                                normalize=normalize)  # fmt: skip
        else:
            raise FrontendError(f"unknown mode {mode!r}; one of sft, zero_shot, cross_lingual, instruct2, vc")
        # the prompt is extracted once and shared by every segment
        return [first] + [dataclasses.replace(first, text=f.text_ids(s)) for s in segments[1:]]

    # ---- synthesis -------------------------------------------------------------------------------------------

    def run(self, inputs: list[ModelInput], seed: int = 0, keep_mels: bool = False, speed: float = 1.0) -> Synthesis:
        """All segments as one batch; the audio of segment i (seed + i) concatenated in order. ``keep_mels``: the
        flow's mels (before any speed change) too."""
        _check_speed(speed)
        from sovits2_jax.infer.cosyvoice2.engine import row_keys

        tokens = self.engine.speech_tokens(inputs, seed)
        for i, t in enumerate(tokens):
            if len(t) == 0:
                raise FrontendError(f"segment {i}: the LM produced no speech tokens")
        audio = self.engine.token2wav(list(inputs), tokens, row_keys(seed, len(inputs)), speed)
        mels = self._mels(inputs, tokens) if keep_mels else []
        return Synthesis(np.concatenate(audio).astype(np.float32), list(inputs), tokens, mels)

    def run_many(self, requests: list[list[ModelInput]], seed: int = 0, speed: float = 1.0) -> list[np.ndarray]:
        """Several requests' segments in one batch (the k-th segment overall uses seed + k); audio per request."""
        _check_speed(speed)
        flat = [x for segments in requests for x in segments]
        audio = self.engine.synthesize(flat, seed, speed) if flat else []
        out, k = [], 0
        for segments in requests:
            out.append(np.concatenate(audio[k : k + len(segments)]).astype(np.float32))
            k += len(segments)
        return out

    def _mels(self, inputs: list[ModelInput], tokens: list[np.ndarray]) -> list[np.ndarray]:
        from sovits2_jax.infer.cosyvoice2.token2wav import flow_batch

        e = self.engine
        prompts = [x.flow_prompt_speech_token for x in inputs]
        feats, embeddings = [x.prompt_speech_feat for x in inputs], [x.flow_embedding for x in inputs]
        return flow_batch(*e.flow, tokens, prompts, feats, embeddings, e.noise)

    def stream_inputs(self, inputs: list[ModelInput], seed: int = 0) -> Iterator[np.ndarray]:
        """Audio chunks of the segments in order (segment i streamed alone with seed + i)."""
        for i, x in enumerate(inputs):
            for _, chunk in self.engine.stream([x], seed + i):
                if len(chunk):
                    yield chunk

    def _go(self, inputs: list[ModelInput], stream: bool, seed: int, speed: float):
        _check_speed(speed, stream)
        return self.stream_inputs(inputs, seed) if stream else self.run(inputs, seed, speed=speed).audio

    def sft(self, text: str, spk_id: str, *, stream: bool = False, seed: int = 0, normalize: bool = True,
            speed: float = 1.0):  # fmt: skip
        """A stored speaker (spk2info.pt) says ``text``; audio, or a generator of chunks with ``stream``."""
        return self._go(self.inputs("sft", text, spk_id=spk_id, normalize=normalize), stream, seed, speed)

    def zero_shot(
        self, text: str, prompt_text: str = "", prompt_wav: Audio | None = None, *, spk_id: str | None = None,
        stream: bool = False, seed: int = 0, normalize: bool = True, speed: float = 1.0,
    ):  # fmt: skip
        """The prompt's voice continues from its transcript into ``text`` (or a stored zero-shot ``spk_id``)."""
        kw = dict(prompt_text=prompt_text, prompt_wav=prompt_wav, spk_id=spk_id, normalize=normalize)
        return self._go(self.inputs("zero_shot", text, **kw), stream, seed, speed)

    def zero_shot_bistream(
        self, text_pieces: Iterable[str], prompt_text: str = "", prompt_wav: Audio | None = None, *,
        spk_id: str | None = None, seed: int = 0, normalize: bool = True, max_tokens: int = 2000,
    ) -> Iterator[np.ndarray]:  # fmt: skip
        """zero_shot while the text itself arrives in pieces (e.g. streamed from a text LLM): yields audio chunks as
        they become final. Each piece is tokenized as it comes, without normalisation (a piece may end mid-word)."""
        f = self.frontend
        prompt = f.zero_shot("", prompt_text, prompt_wav, spk_id=spk_id, normalize=normalize)
        pieces = (f.text_ids(piece) for piece in text_pieces if piece)
        return self.engine.stream_bistream(prompt, pieces, seed, max_tokens)

    def cross_lingual(
        self, text: str, prompt_wav: Audio | None = None, *, spk_id: str | None = None, stream: bool = False,
        seed: int = 0, normalize: bool = True, speed: float = 1.0,
    ):  # fmt: skip
        """The prompt's voice in any language: no prompt transcript, the LM gets no prompt."""
        kw = dict(prompt_wav=prompt_wav, spk_id=spk_id, normalize=normalize)
        return self._go(self.inputs("cross_lingual", text, **kw), stream, seed, speed)

    def instruct2(
        self, text: str, instruct: str, prompt_wav: Audio | None = None, *, spk_id: str | None = None,
        stream: bool = False, seed: int = 0, normalize: bool = True, speed: float = 1.0,
    ):  # fmt: skip
        """The prompt's voice following an instruction ("Speak happily.", "用四川话说这句话")."""
        kw = dict(instruct=instruct, prompt_wav=prompt_wav, spk_id=spk_id, normalize=normalize)
        return self._go(self.inputs("instruct2", text, **kw), stream, seed, speed)

    def vc(self, source_wav: Audio, prompt_wav: Audio, *, stream: bool = False, seed: int = 0, speed: float = 1.0):
        """``source_wav``'s speech in the prompt's voice (the flow alone runs)."""
        return self._go(self.inputs("vc", source_wav=source_wav, prompt_wav=prompt_wav), stream, seed, speed)

    # ---- speakers --------------------------------------------------------------------------------------------

    def add_speaker(self, spk_id: str, prompt_text: str, prompt_wav: Audio) -> None:
        """Stores a zero-shot prompt under ``spk_id`` (usable as ``spk_id`` in every prompt mode)."""
        self.frontend.add_zero_shot_speaker(spk_id, prompt_text, prompt_wav)

    def save_speakers(self, path: str | os.PathLike) -> None:
        """Writes every speaker to ``path`` in CosyVoice's spk2info.pt layout."""
        from sovits2_jax.infer.cosyvoice2 import spk2info

        spk2info.save(path, self.frontend.spk2info)
