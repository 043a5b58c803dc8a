"""CosyVoice2's frontend: user inputs of each mode -> ``ModelInput`` (text ids, prompt tokens, mel, embeddings).

Prompt features are extracted as CosyVoice's ``CosyVoiceFrontEnd`` does: speech tokens from the ONNX speech
tokenizer on the 16 kHz whisper log-mel (prompts over 30 s rejected), the speaker embedding from the ONNX speaker
model on the 16 kHz mean-subtracted Kaldi fbank, the Matcha mel at 24 kHz, and at 24 kHz the 2:1 trim
``n = min(frames // 2, tokens)``. The 16 kHz and 24 kHz signals are both resampled from the file's own rate.
Text goes through ``text_frontend.normalize_and_split`` and the Qwen tokenizer (special tokens included).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping

import numpy as np

from sovits2_jax.audio.fbank import campplus_features
from sovits2_jax.audio.io import AudioError, load_audio
from sovits2_jax.audio.mel import MelConfig, mel_spectrogram_np
from sovits2_jax.audio.resample import resample
from sovits2_jax.audio.whisper_mel import log_mel_spectrogram
from sovits2_jax.infer.cosyvoice2.inputs import ModelInput
from sovits2_jax.text import normalize as text_frontend
from sovits2_jax.text.tokenizer import QwenTokenizer

TOKENIZER_SR = 16000
MAX_PROMPT_SECONDS = 30.0
MIN_PROMPT_SECONDS = 0.1
SILENCE_PEAK = 1e-3  # -60 dBFS: a prompt whose loudest sample is below this carries no voice
ENDOFPROMPT = "<|endofprompt|>"
MODES = ("sft", "zero_shot", "cross_lingual", "instruct2", "vc")


class FrontendError(ValueError):
    """A request the frontend cannot turn into model inputs (bad prompt, empty text, unknown speaker...)."""


@dataclasses.dataclass
class PromptFeatures:
    """What a prompt recording gives the models (already trimmed 2:1)."""

    speech_token: np.ndarray  # int32 [n]
    speech_feat: np.ndarray  # float32 [2n, 80]
    embedding: np.ndarray  # float32 [D]


Audio = str | os.PathLike | bytes | tuple[np.ndarray, int]


def load_prompt(source: Audio, name: str = "prompt") -> tuple[np.ndarray, int]:
    """Mono float32 audio and its rate from a path, file bytes or (array, rate); bad audio -> FrontendError."""
    if isinstance(source, tuple):
        wav, sr = np.asarray(source[0], np.float32), int(source[1])
        if wav.ndim != 1:
            raise FrontendError(f"{name}: expected mono audio [samples], got shape {wav.shape}")
    else:
        try:
            wav, sr = load_audio(source)
        except AudioError as e:
            raise FrontendError(f"{name}: {e}") from e
    if not np.all(np.isfinite(wav)):
        raise FrontendError(f"{name}: audio has non-finite samples")
    seconds = len(wav) / sr
    if seconds > MAX_PROMPT_SECONDS:
        raise FrontendError(f"{name}: {seconds:.1f} s is longer than {MAX_PROMPT_SECONDS:.0f} s (CosyVoice's limit)")
    if seconds < MIN_PROMPT_SECONDS:
        raise FrontendError(f"{name}: {seconds * 1000:.0f} ms is too short (need >= {MIN_PROMPT_SECONDS} s)")
    if float(np.max(np.abs(wav))) < SILENCE_PEAK:
        raise FrontendError(f"{name}: audio is silent (peak below -60 dBFS)")
    return wav, sr


def trim_token_feat(tokens: np.ndarray, feat: np.ndarray, ratio: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """CosyVoice2's alignment: ``n = min(frames // ratio, tokens)``, tokens[:n], feat[:ratio * n]."""
    n = min(feat.shape[0] // ratio, tokens.shape[0])
    return tokens[:n], feat[: ratio * n]


class Frontend:
    """Builds ``ModelInput``s for every CosyVoice2 mode.

    ``speech_tokenizer`` and ``speaker_model`` are onnxruntime sessions (or callables returning one, opened on
    first use, so sft needs neither); ``spk2info`` maps speaker ids to stored ``ModelInput``s (or is a callable
    returning that mapping, read on first use).
    """

    def __init__(
        self,
        tokenizer: QwenTokenizer,
        *,
        speech_tokenizer=None,
        speaker_model=None,
        spk2info: Mapping[str, ModelInput] | Callable[[], Mapping[str, ModelInput]] | None = None,
        mel_config: MelConfig = MelConfig(),
        token_mel_ratio: int = 2,
    ):
        self.tokenizer = tokenizer
        self._sessions = {"speech tokenizer": speech_tokenizer, "speaker model": speaker_model}
        self._spk2info = spk2info
        self.mel_config = mel_config
        self.token_mel_ratio = token_mel_ratio

    # ---- text ------------------------------------------------------------------------------------------------

    def split_text(self, text: str, normalize: bool = True) -> list[str]:
        """Normalised segments of ``text`` (``normalize=False``: the text as one segment); empty -> error."""
        if not isinstance(text, str) or not text.strip():
            raise FrontendError("the text to synthesise is empty")
        if not normalize:
            return [text]
        segments = text_frontend.normalize_and_split(text, self.tokenizer.encode, list(self.tokenizer.special_tokens))
        if not segments:
            raise FrontendError(f"the text {text[:40]!r} has nothing to say (only punctuation)")
        return segments

    def normalize_prompt_text(self, text: str, normalize: bool = True) -> str:
        return text_frontend.normalize(text, specials=list(self.tokenizer.special_tokens)) if normalize else text

    def text_ids(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text), np.int32)

    # ---- prompt features -------------------------------------------------------------------------------------

    def _session(self, which: str):
        session = self._sessions[which]
        if session is None:
            raise FrontendError(f"this model has no {which} (ONNX); it is needed for prompt audio")
        if callable(session) and not hasattr(session, "run"):
            session = self._sessions[which] = session()
        return session

    def speech_tokens(self, wav16k: np.ndarray) -> np.ndarray:
        """Speech tokens of 16 kHz audio (at most 30 s), int32 [n]."""
        from sovits2_jax.audio.onnx_models import tokenize_mels

        if len(wav16k) / TOKENIZER_SR > MAX_PROMPT_SECONDS:
            raise FrontendError(f"speech tokens: audio over {MAX_PROMPT_SECONDS:.0f} s is not supported")
        return tokenize_mels(self._session("speech tokenizer"), [log_mel_spectrogram(wav16k)])[0]

    def speaker_embedding(self, wav16k: np.ndarray) -> np.ndarray:
        """Speaker embedding of 16 kHz audio, float32 [D]."""
        from sovits2_jax.audio.onnx_models import embed_features

        return embed_features(self._session("speaker model"), campplus_features(wav16k))

    def speech_feat(self, wav: np.ndarray) -> np.ndarray:
        """Matcha log-mel [frames, 80] of audio at the mel's rate (24 kHz)."""
        return mel_spectrogram_np(wav, self.mel_config)

    def prompt_features(self, prompt: Audio, name: str = "prompt") -> PromptFeatures:
        """Trimmed tokens, mel and embedding of one prompt recording (any sample rate)."""
        wav, sr = load_prompt(prompt, name)
        wav16k = resample(wav, sr, TOKENIZER_SR)
        feat = self.speech_feat(resample(wav, sr, self.mel_config.sampling_rate))
        tokens, feat = trim_token_feat(self.speech_tokens(wav16k), feat, self.token_mel_ratio)
        if len(tokens) == 0:
            raise FrontendError(f"{name}: the speech tokenizer gave no tokens")
        return PromptFeatures(tokens, feat, self.speaker_embedding(wav16k))

    # ---- speakers --------------------------------------------------------------------------------------------

    @property
    def spk2info(self) -> Mapping[str, ModelInput]:
        if callable(self._spk2info):
            self._spk2info = self._spk2info()
        return self._spk2info or {}

    def speaker(self, spk_id: str) -> ModelInput:
        """The stored entry of ``spk_id``; an unknown id -> FrontendError listing the known ones."""
        known = self.spk2info
        if spk_id not in known:
            listed = ", ".join(sorted(known)) if known else "none: the model has no spk2info.pt"
            raise FrontendError(f"unknown speaker id {spk_id!r}; known speakers: {listed}")
        return known[spk_id]

    def add_zero_shot_speaker(self, spk_id: str, prompt_text: str, prompt: Audio, normalize: bool = True) -> None:
        """Stores a zero-shot prompt (no text) under ``spk_id``, as CosyVoice's ``add_zero_shot_spk``."""
        if not spk_id:
            raise FrontendError("a speaker id must not be empty")
        entry = self.zero_shot("", prompt_text, prompt, normalize=normalize)
        self._spk2info = {**self.spk2info, spk_id: entry}

    # ---- modes -----------------------------------------------------------------------------------------------

    def sft(self, text: str, spk_id: str) -> ModelInput:
        entry = self.speaker(spk_id)
        return ModelInput(text=self.text_ids(text), llm_embedding=entry.llm_embedding,
                          flow_embedding=entry.flow_embedding)  # fmt: skip

    def _from_prompt(self, text: str, prompt_text: str, prompt: Audio | None, spk_id: str | None) -> ModelInput:
        if spk_id:
            stored = self.speaker(spk_id)
            if stored.flow_prompt_speech_token.size == 0:
                raise FrontendError(f"speaker {spk_id!r} has no stored prompt (an sft speaker); use mode sft")
            return dataclasses.replace(stored, text=self.text_ids(text))
        if prompt is None:
            raise FrontendError("give a prompt wav (or the id of a stored zero-shot speaker)")
        f = self.prompt_features(prompt)
        return ModelInput(
            text=self.text_ids(text), prompt_text=self.text_ids(prompt_text), llm_prompt_speech_token=f.speech_token,
            flow_prompt_speech_token=f.speech_token, prompt_speech_feat=f.speech_feat, llm_embedding=f.embedding,
            flow_embedding=f.embedding,
        )  # fmt: skip

    def zero_shot(
        self, text: str, prompt_text: str, prompt: Audio | None = None, *, spk_id: str | None = None,
        normalize: bool = True,
    ) -> ModelInput:  # fmt: skip
        """Prompt text + prompt speech continue into ``text`` (text is one already-split segment)."""
        if not spk_id and not prompt_text.strip():
            raise FrontendError("zero_shot needs the prompt's transcript (--prompt_text); use cross_lingual without")
        return self._from_prompt(text, self.normalize_prompt_text(prompt_text, normalize), prompt, spk_id)

    def cross_lingual(self, text: str, prompt: Audio | None = None, *, spk_id: str | None = None) -> ModelInput:
        """zero_shot without the LM prompt (no prompt text, no LM prompt tokens); the flow keeps the prompt."""
        mi = self._from_prompt(text, "", prompt, spk_id)
        return dataclasses.replace(mi, prompt_text=np.zeros(0, np.int32), llm_prompt_speech_token=np.zeros(0, np.int32))

    def instruct2(
        self, text: str, instruct: str, prompt: Audio | None = None, *, spk_id: str | None = None,
        normalize: bool = True,
    ) -> ModelInput:  # fmt: skip
        """The instruction (ending in ``<|endofprompt|>``) as the prompt text, no LM prompt tokens."""
        if not instruct.strip():
            raise FrontendError("instruct2 needs an instruction (--instruct)")
        instruct = self.normalize_prompt_text(instruct, normalize)
        if not instruct.endswith(ENDOFPROMPT):
            instruct += ENDOFPROMPT
        mi = self._from_prompt(text, "", prompt, spk_id)
        no_tokens = np.zeros(0, np.int32)
        return dataclasses.replace(mi, prompt_text=self.text_ids(instruct), llm_prompt_speech_token=no_tokens)

    def vc(self, source: Audio, prompt: Audio) -> ModelInput:
        """Re-voices ``source``'s speech tokens with the prompt's voice (the flow alone runs)."""
        wav, sr = load_prompt(source, "source")
        source_tokens = self.speech_tokens(resample(wav, sr, TOKENIZER_SR))
        if len(source_tokens) == 0:
            raise FrontendError("source: the speech tokenizer gave no tokens")
        f = self.prompt_features(prompt)
        return ModelInput(flow_prompt_speech_token=f.speech_token, prompt_speech_feat=f.speech_feat,
                          flow_embedding=f.embedding, source_speech_token=source_tokens)  # fmt: skip
