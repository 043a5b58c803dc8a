"""GPT-SoVITS2 synthesis: the AR speech LM prompted with several references, then VITS2 decoding.

The AR sees ``sos, x1, task_id, y1, eos, ..., xn, task_id, yn, eos, x, task_id`` and continues with the target
speech ``y`` until eos: the prompt is built by ``layouts.gpt_sovits2_sequence`` with one speech block fewer than
text blocks, the same builder the training data uses, so BOS / EOS / separators and the text-block numbering
(bidirectional text attention) are those the model was trained on. Several texts with the same references decode
in one batched ``generate`` call with a key per row. Each row's S3 tokens are then decoded by the VITS2
``SynthesizerTrn`` with the BPE text and the mean of the references' style vectors ``ge`` (multi-reference
fusion, as GPT-SoVITS averages ``ge`` over a list of references), at ``speed`` (length scale) and
``noise_scale``. The VITS decode runs row by row at each row's exact length, as GPT-SoVITS decodes its batched
AR output per sentence: padding a batch would change the vocoder's last frames.

With a text encoder (``from_pretrained`` finds ``MODEL_DIR/text_encoder/``, see ``convert/text_encoder.py``) the AR
reads what it was trained on with ``config.data.text_source="bge_m3"``: every text of a call (the targets and the
references' transcripts) is tokenized by the encoder's tokenizer and encoded in one bucketed, jitted
``xlm_roberta.encode`` call, and each text position of the prompt carries its feature (rounded to float16, as the
training data stores them). The VITS keeps reading ``tokenizer``'s ids.

An ``ssl_grvq`` VITS behind an AR on K codebooks per frame (GPT-SoVITS2's planned path): each reference's codes come
from its audio through the SSL encoder (``ssl_encoder``; ``from_pretrained`` reads ``MODEL_DIR/hubert/``), its
features rounded to float16 as the data stage stores them, then the VITS's grouped VQ (``extract_codes``, eval
mode) -> [K, T] codes; the prompt carries codebook 0 as its speech ids and codebooks 1..K-1 as ``codes_extra``, and
each generated [N, K] frame sequence is decoded by the VITS from codes (``[K, 1, N]`` with its codebooks
``vq_state``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sovits2_jax.audio.resample import resample
from sovits2_jax.audio.spectrogram import linear_spectrogram
from sovits2_jax.infer import generate as gen
from sovits2_jax.models.sampling_config import SamplingConfig
from sovits2_jax.models.speech_lm import SpeechLM, SpeechLMConfig
from sovits2_jax.models.vits2 import SynthesizerTrn, VitsConfig
from sovits2_jax.text import layouts

if TYPE_CHECKING:
    from sovits2_jax.convert.text_encoder import TextEncoder

SPEECH_TOKENIZER_RATE = 16000  # S3 tokenizers read 16 kHz audio
SSL_RATE = 16000  # the SSL encoder reads 16 kHz audio
TEXT_ENCODER_DIR = "text_encoder"  # in a model directory, beside ar/ and vits/
SSL_MODEL_DIR = "hubert"  # in a model directory: the SSL encoder of an ssl_grvq VITS
SSL_BUCKET = 64  # SSL frames are padded to a multiple of this before the VQ (one compiled shape per multiple)

SSLEncoder = Callable[[Sequence[np.ndarray]], list[np.ndarray]]  # 16 kHz waveforms -> [frames, ssl_dim] each


class SynthesisError(ValueError):
    """Bad synthesis input (one line saying what is wrong)."""


class TextTokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...


@dataclasses.dataclass
class Reference:
    """One reference utterance: its audio, its transcript and (optionally) its S3 speech tokens.

    Without ``speech_tokens`` the synthesizer's ``speech_tokenizer`` computes them from the audio (an ``ssl_grvq``
    VITS: ``speech_tokens`` are [K, T] codes, computed by the SSL encoder and the VITS's VQ when absent). A reference
    with ``text=None`` lends only its voice: its style vector joins the fused ones, the AR prompt leaves it out
    (GPT-SoVITS's auxiliary references).
    """

    wav: np.ndarray
    sample_rate: int
    text: str | None
    speech_tokens: Sequence[int] | None = None


@dataclasses.dataclass(frozen=True)
class SynthesisSettings:
    """AR decoding limits: at least ``min_ratio`` and at most ``max_ratio`` speech tokens per text token of the
    target (capped at ``max_tokens``, 60 s at 25 Hz); prompts padded to a multiple-of-two bucket >= prompt_bucket."""

    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    min_ratio: float = 2.0
    max_ratio: float = 20.0
    max_tokens: int = 1500
    prompt_bucket: int = 64


# ------------------------------------------------------------------------------------------------ prompts


PROMPT_KEYS = ("kinds", "ids", "text_segments", "text_features", "codes_extra")


def prompt_sequence(
    ref_texts: Sequence[Sequence[int]],
    ref_speeches: Sequence[Sequence[int]],
    text: Sequence[int],
    *,
    speech_token_size: int,
    text_features: Sequence[np.ndarray] | None = None,
    speech_extra: Sequence[np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The AR prompt ``x1 + y1 + ... + xn + x`` (kinds, ids, text_segments) ending in the last task_id; with
    ``text_features`` (one [len, F] array per text, the references' first) also its [T, F] ``text_features``; with
    ``speech_extra`` (each reference's codebooks 1..K-1, [len, K-1]) also its [T, K-1] ``codes_extra``."""
    seq = layouts.gpt_sovits2_sequence(
        [*ref_texts, text], list(ref_speeches), speech_token_size=speech_token_size, text_features=text_features,
        speech_extra=speech_extra,
    )  # fmt: skip
    return {k: seq[k] for k in PROMPT_KEYS if k in seq}


def prompt_batch(examples: Sequence[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Right-padded prompts for ``generate`` and their lengths."""
    batch = layouts.pad_batch(examples)
    return {k: batch[k] for k in PROMPT_KEYS if k in batch}, batch["lengths"]


# ------------------------------------------------------------------------------------------------- VITS


def reference_spectrogram(wav: np.ndarray, sample_rate: int, cfg: VitsConfig) -> np.ndarray:
    """Linear spectrogram [frames, bins] of a reference at the VITS rate (GPT-SoVITS scales peaks above 1 down)."""
    wav = resample(np.asarray(wav, np.float32).reshape(-1), sample_rate, cfg.sampling_rate)
    peak = float(np.abs(wav).max(initial=0.0))
    if peak > 1.0:
        wav = wav / min(2.0, peak)
    spec = linear_spectrogram(wav, n_fft=cfg.n_fft, hop_size=cfg.hop_length, win_size=cfg.win_length)
    return np.asarray(spec[0])


@functools.partial(jax.jit, static_argnames=("graphdef", "speed"))
def decode_fused(graphdef, params, codes, text, refers, noise_scale, key, vq_state=None, *, speed: float = 1.0):
    """VITS ``decode`` of codes + text with the mean style vector of ``refers`` (a tuple of [1, T_i, bins]
    spectrograms); noise drawn from ``key`` (noise_scale 0 is deterministic); ``vq_state``: an ``ssl_grvq`` VITS's
    codebooks. Waveform [B, samples]."""
    model = nnx.merge(graphdef, params)
    return model.decode(codes, text, list(refers), noise_scale, key, speed=speed, vq_state=vq_state)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def extract_codes(graphdef, params, vq_state, ssl, lengths):
    """An ``ssl_grvq`` VITS's codes [K, B, T25] of SSL features [B, T50, ssl_dim] (-1 past ``lengths``)."""
    return nnx.merge(graphdef, params).extract_codes(ssl, vq_state, ssl_lengths=lengths)


def _codes(tokens: np.ndarray, cfg: VitsConfig) -> jax.Array:
    codes = np.asarray(tokens, np.int32)
    if cfg.content == "ssl_grvq":  # frames [N, K] -> [K, 1, N]
        return jnp.asarray(codes.reshape(len(codes), -1).T[:, None])
    codes = jnp.asarray(codes[None])  # [1, T]
    return codes[None] if cfg.content == "hubert_vq" else codes


def load_ssl_encoder(path: str | Path, batch_size: int = 4) -> SSLEncoder:
    """The HuBERT at ``path`` (a HF directory or our checkpoint of the ``hubert`` part) as a bucketed extractor."""
    from sovits2_jax.convert import parts
    from sovits2_jax.convert.mapping import flatten
    from sovits2_jax.convert.params import params_from_flat
    from sovits2_jax.models import hubert

    params, config = parts.load(path, "hubert")
    graphdef, state = params_from_flat(lambda: parts.build_module("hubert", config), flatten(params))
    return hubert.BucketedExtractor(nnx.merge(graphdef, state), batch_size=batch_size)


# ------------------------------------------------------------------------------------------- synthesizer


class GptSoVITS2:
    """Text -> waveform with multi-reference prompting. Build with ``from_parts`` or ``from_pretrained``."""

    def __init__(
        self,
        ar: SpeechLM,
        vits: SynthesizerTrn,
        tokenizer: TextTokenizer,
        settings: SynthesisSettings,
        speech_tokenizer: Callable[[np.ndarray], Sequence[int]] | None = None,
        text_encoder: TextEncoder | None = None,
        ssl_encoder: SSLEncoder | None = None,
        vq_state=None,
    ):
        self.ar_config: SpeechLMConfig = ar.config
        self.vits_config: VitsConfig = vits.cfg
        if self.ar_config.layout != "gpt_sovits2":
            raise SynthesisError(f"the AR model has layout {self.ar_config.layout!r}, GPT-SoVITS2 needs 'gpt_sovits2'")
        self.grvq = self.vits_config.content == "ssl_grvq"
        if self.grvq:
            self._check_grvq(vq_state)
        elif self.vits_config.content != "tokens":
            raise SynthesisError("the VITS model must embed S3 tokens (content='tokens', the GPT-SoVITS2 decoder) or "
                                 "decode grouped VQ codes (content='ssl_grvq')")  # fmt: skip
        elif self.ar_config.num_codebooks > 1:
            raise SynthesisError(f"the AR predicts {self.ar_config.num_codebooks} codebooks per frame but the VITS "
                                 "embeds S3 tokens: a multi-codebook AR needs an ssl_grvq VITS")  # fmt: skip
        elif self.ar_config.speech_token_size > self.vits_config.speech_vocab_size:
            raise SynthesisError(
                f"the AR speaks {self.ar_config.speech_token_size} speech tokens but the VITS embeds only "
                f"{self.vits_config.speech_vocab_size}"
            )
        if text_encoder is not None:
            width, vocab = self.ar_config.text_feature_dim, self.ar_config.backbone.vocab_size
            if width != text_encoder.hidden_size:
                raise SynthesisError(f"the AR reads text features of width {width} but the text encoder "
                                     f"{text_encoder.source} gives {text_encoder.hidden_size}")  # fmt: skip
            if text_encoder.vocab_size > vocab:
                raise SynthesisError(f"the text encoder's tokenizer gives {text_encoder.vocab_size} ids but the AR "
                                     f"embeds only {vocab}")  # fmt: skip
        if self.vits_config.text_input == "features":
            width = self.vits_config.text_feature_dim
            if text_encoder is None or text_encoder.hidden_size != width:
                raise SynthesisError(f"the VITS reads text features of width {width}: it needs the text encoder it "
                                     "was trained with (the model directory's text_encoder/)")  # fmt: skip
        self.text_encoder = text_encoder
        self.ar_graphdef, self.ar_params = nnx.split(ar, nnx.Param)
        self.vits_graphdef, self.vits_params = nnx.split(vits, nnx.Param)
        self.tokenizer = tokenizer
        self.speech_tokenizer = speech_tokenizer
        self.ssl_encoder = ssl_encoder
        self.vq_state = vq_state
        self.settings = settings
        self.sample_rate = self.vits_config.sampling_rate

    def _check_grvq(self, vq_state) -> None:
        """An ssl_grvq VITS needs its codebooks, and the AR's K codebooks and vocabularies must be the VQ's."""
        ar, vits = self.ar_config, self.vits_config
        if vq_state is None:
            raise SynthesisError("the ssl_grvq VITS needs its codebooks (vq_state: its checkpoint's grvq buffer)")
        if ar.num_codebooks != vits.num_codebooks:
            raise SynthesisError(
                f"the AR predicts {ar.num_codebooks} codebooks per frame but the ssl_grvq VITS decodes "
                f"{vits.num_codebooks} ({vits.vq_groups} groups x {vits.vq_quantizers} quantizers)"
            )
        sizes = {ar.speech_token_size, ar.extra_vocab if ar.num_codebooks > 1 else ar.speech_token_size}
        if sizes != {vits.codebook_size}:
            raise SynthesisError(f"the AR's codebooks hold {sorted(sizes)} codes but the VITS's VQ codebooks hold "
                                 f"{vits.codebook_size}")  # fmt: skip

    @classmethod
    def from_parts(
        cls,
        ar_model: SpeechLM,
        vits_model: SynthesizerTrn,
        tokenizer: TextTokenizer,
        settings: SynthesisSettings | None = None,
        *,
        speech_tokenizer: Callable[[np.ndarray], Sequence[int]] | None = None,
        text_encoder: TextEncoder | None = None,
        ssl_encoder: SSLEncoder | None = None,
        vq_state=None,
    ) -> GptSoVITS2:
        """From built models; ``speech_tokenizer`` maps 16 kHz audio to S3 tokens for references given without;
        ``text_encoder`` (a loaded ``convert.text_encoder.TextEncoder``) gives the AR its text ids and features;
        an ``ssl_grvq`` VITS takes its codebooks ``vq_state`` and ``ssl_encoder`` (16 kHz waveforms -> SSL
        features, e.g. a ``models.hubert.BucketedExtractor``) for the references' codes."""
        return cls(ar_model, vits_model, tokenizer, settings or SynthesisSettings(), speech_tokenizer, text_encoder,
                   ssl_encoder, vq_state)  # fmt: skip

    @classmethod
    def from_pretrained(
        cls,
        ar: str | Path,
        vits: str | Path | None = None,
        *,
        tokenizer: TextTokenizer | None = None,
        settings: SynthesisSettings | None = None,
        speech_tokenizer: Callable[[np.ndarray], Sequence[int]] | None = None,
        text_encoder: str | Path | None = None,
        ssl_model: str | Path | None = None,
    ) -> GptSoVITS2:
        """From checkpoints ``train.parts.load`` reads (our Orbax directories, trainer checkpoints or
        workdirs): ``ar`` holds the speech LM, ``vits`` the decoder; with ``vits`` None, ``ar`` is a directory
        holding both as ``ar/`` and ``vits/``, and its ``text_encoder/`` and ``hubert/`` when present.
        ``text_encoder``: a text encoder directory for the AR's text. ``ssl_model``: the HuBERT (a HF directory or
        our checkpoint) an ``ssl_grvq`` VITS was trained on, whose codebooks come with its checkpoint. The (VITS)
        tokenizer defaults to the Qwen2 BPE one."""
        from sovits2_jax.convert import parts
        from sovits2_jax.convert import text_encoder as text_encoder_dir
        from sovits2_jax.convert.mapping import flatten
        from sovits2_jax.convert.params import params_from_flat

        if vits is None:
            if text_encoder is None and (Path(ar) / TEXT_ENCODER_DIR).is_dir():
                text_encoder = Path(ar) / TEXT_ENCODER_DIR
            if ssl_model is None and (Path(ar) / SSL_MODEL_DIR).is_dir():
                ssl_model = Path(ar) / SSL_MODEL_DIR
            ar, vits = Path(ar) / "ar", Path(ar) / "vits"
        ar_params, ar_cfg = parts.load(ar, "llm")
        vits_params, vits_cfg = parts.load(vits, "vits")
        g, p = params_from_flat(lambda: SpeechLM(ar_cfg, rngs=nnx.Rngs(0)), flatten(ar_params))
        vg, vp = params_from_flat(lambda: SynthesizerTrn(vits_cfg, rngs=nnx.Rngs(0)), flatten(vits_params))
        if tokenizer is None:
            from sovits2_jax.text.tokenizer import get_tokenizer

            tokenizer = get_tokenizer("qwen2")
        encoder = None if text_encoder is None else text_encoder_dir.load(text_encoder)
        vq_state = ssl_encoder = None
        if vits_cfg.content == "ssl_grvq":
            vq_state = parts.load_buffers(vits, "vits").get("grvq")
            ssl_encoder = None if ssl_model is None else load_ssl_encoder(ssl_model)
        return cls(nnx.merge(g, p), nnx.merge(vg, vp), tokenizer, settings or SynthesisSettings(), speech_tokenizer,
                   encoder, ssl_encoder, vq_state)  # fmt: skip

    # -- inputs ------------------------------------------------------------------------------------------------
    @staticmethod
    def _check_text(text, what: str) -> str:
        if not isinstance(text, str) or not text.strip():
            raise SynthesisError(f"{what} is empty")
        return text

    def _text_ids(self, text, what: str) -> list[int]:
        """``tokenizer``'s ids of a text: the VITS's (and, without a text encoder, the AR's)."""
        ids = [int(i) for i in self.tokenizer.encode(self._check_text(text, what))]
        limit = self.vits_config.n_symbols
        if self.text_encoder is None:
            limit = min(self.ar_config.backbone.vocab_size, limit)
        if not ids:
            raise SynthesisError(f"{what} gives no text tokens")
        if max(ids) >= limit or min(ids) < 0:
            raise SynthesisError(f"{what} has token ids outside [0, {limit}) the models embed")
        return ids

    def _ar_texts(self, texts: Sequence[str], whats: Sequence[str]) -> tuple[list[list[int]], list | None]:
        """The AR's ids of each text and, with a text encoder, their features (float16-rounded float32 [len, F]),
        all texts encoded in one call."""
        if self.text_encoder is None:
            return [self._text_ids(t, w) for t, w in zip(texts, whats)], None
        enc = self.text_encoder
        rows = [enc.tokenize(self._check_text(t, w)) for t, w in zip(texts, whats)]
        for row, what in zip(rows, whats):
            if len(row) > enc.max_tokens:
                raise SynthesisError(f"{what} is {len(row)} text encoder tokens, more than its {enc.max_tokens}")
        features = [f.astype(np.float16).astype(np.float32) for f in enc.features(rows)]
        return rows, features

    def _reference(self, i: int, ref: Reference) -> tuple[str | None, list[int] | None, np.ndarray]:
        """(transcript, speech tokens, spectrogram) of a reference; the first two None for a voice-only one."""
        if not isinstance(ref, Reference):
            raise SynthesisError(f"reference {i} must be a Reference(wav, sample_rate, text[, speech_tokens])")
        text = None if ref.text is None else self._check_text(ref.text, f"reference {i}'s text")
        wav = np.asarray(ref.wav, np.float32).reshape(-1)
        if wav.size == 0 or not np.isfinite(wav).all():
            raise SynthesisError(f"reference {i}'s audio is empty or not finite")
        cfg = self.vits_config
        if wav.size * cfg.sampling_rate // ref.sample_rate <= cfg.n_fft:
            raise SynthesisError(f"reference {i}'s audio is too short for the VITS spectrogram (n_fft {cfg.n_fft})")
        if text is None:
            return None, None, reference_spectrogram(wav, ref.sample_rate, cfg)
        if self.grvq:
            return text, self._reference_codes(i, ref, wav), reference_spectrogram(wav, ref.sample_rate, cfg)
        tokens = ref.speech_tokens
        if tokens is None:
            if self.speech_tokenizer is None:
                raise SynthesisError(f"reference {i} has no speech tokens and the synthesizer has no speech tokenizer")
            tokens = self.speech_tokenizer(resample(wav, ref.sample_rate, SPEECH_TOKENIZER_RATE))
        tokens = [int(t) for t in tokens]
        size = self.ar_config.speech_token_size
        if not tokens or min(tokens) < 0 or max(tokens) >= size:
            raise SynthesisError(f"reference {i}'s speech tokens must be a non-empty list of ids in [0, {size})")
        return text, tokens, reference_spectrogram(wav, ref.sample_rate, cfg)

    def _reference_codes(self, i: int, ref: Reference, wav: np.ndarray) -> np.ndarray:
        """A reference's [K, T] codes: given, or its audio's through the SSL encoder and the VITS's VQ."""
        k, size = self.vits_config.num_codebooks, self.vits_config.codebook_size
        if ref.speech_tokens is None:
            codes = self.ssl_codes([resample(wav, ref.sample_rate, SSL_RATE)])[0]
        else:
            codes = np.asarray(ref.speech_tokens)
        if codes.ndim != 2 or codes.shape[0] != k or codes.shape[1] == 0:
            raise SynthesisError(f"reference {i}'s codes must be [{k}, frames] (one row per codebook), got "
                                 f"shape {codes.shape}")  # fmt: skip
        if codes.min() < 0 or codes.max() >= size:
            raise SynthesisError(f"reference {i}'s codes must lie in [0, {size})")
        return codes.astype(np.int32)

    def ssl_codes(self, wavs16k: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The ssl_grvq VITS's [K, T25] codes of 16 kHz waveforms: SSL features (float16-rounded, as the data
        stage stores them) through its VQ in eval mode."""
        if self.ssl_encoder is None:
            raise SynthesisError("an ssl_grvq VITS needs the SSL encoder for references given without codes "
                                 "(ssl_encoder / the model directory's hubert/)")  # fmt: skip
        out = []
        for feats in self.ssl_encoder(list(wavs16k)):
            feats = np.asarray(feats, np.float16).astype(np.float32)
            if feats.ndim != 2 or feats.shape[1] != self.vits_config.ssl_dim:
                raise SynthesisError(f"the SSL encoder gives features of shape {feats.shape} but the VITS reads "
                                     f"{self.vits_config.ssl_dim}-d ones")  # fmt: skip
            n = len(feats)
            ssl = np.zeros((1, -(-n // SSL_BUCKET) * SSL_BUCKET, feats.shape[1]), np.float32)
            ssl[0, :n] = feats
            codes = np.asarray(extract_codes(self.vits_graphdef, self.vits_params, self.vq_state, jnp.asarray(ssl),
                                             jnp.asarray([n], jnp.int32)))[:, 0]  # fmt: skip
            out.append(codes[:, : int(np.sum(codes[0] >= 0))])
        return out

    # -- synthesis ---------------------------------------------------------------------------------------------
    def speech_tokens(
        self,
        texts: Sequence[str],
        references: Sequence[Reference],
        seed: int = 0,
        sampling: SamplingConfig | None = None,
    ) -> tuple[list[list[int]], dict]:
        """The AR step alone: the target S3 tokens of each text (one batched decode; [N, K] code frames for an
        ssl_grvq VITS) and the prepared inputs."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise SynthesisError("no text to synthesise")
        if not references:
            raise SynthesisError("GPT-SoVITS2 synthesis needs at least one reference (wav, text, speech tokens)")
        refs = [self._reference(i, r) for i, r in enumerate(references)]
        spoken = [r for r in refs if r[0] is not None]  # the AR prompt: references with their transcript
        if not spoken:
            raise SynthesisError("at least one reference needs its transcript (the others may lend only their voice)")
        whats = [f"text {i}" if len(texts) > 1 else "text" for i in range(len(texts))]
        ref_whats = [f"reference {i}'s text" for i, r in enumerate(refs) if r[0] is not None]
        ar_ids, features = self._ar_texts([r[0] for r in spoken] + list(texts), ref_whats + whats)
        n_refs, size = len(spoken), self.ar_config.speech_token_size
        ref_speeches, speech_extra = [r[1] for r in spoken], None
        if self.grvq:  # [K, T] codes: codebook 0 as the speech ids, 1..K-1 as codes_extra
            ref_speeches = [c[0] for c in ref_speeches]
            if self.ar_config.num_codebooks > 1:
                speech_extra = [r[1][1:].T for r in spoken]
        if self.vits_config.text_input == "features":  # the VITS's text: the encoder's features, or BPE ids
            vits_texts = features[n_refs:]
        else:
            vits_texts = [np.asarray(self._text_ids(t, w), np.int32) for t, w in zip(texts, whats)]
        examples = [
            prompt_sequence(
                ar_ids[:n_refs], ref_speeches, ids, speech_token_size=size,
                text_features=None if features is None else [*features[:n_refs], features[n_refs + j]],
                speech_extra=speech_extra,
            )
            for j, ids in enumerate(ar_ids[n_refs:])
        ]  # fmt: skip
        prompt, prompt_len = prompt_batch(examples)
        s = self.settings
        n_text = np.asarray([len(t) for t in ar_ids[n_refs:]])
        max_len = np.minimum((n_text * s.max_ratio).astype(np.int32), s.max_tokens)
        min_len = np.minimum((n_text * s.min_ratio).astype(np.int32), max_len)
        if max_len.min() < 1:
            raise SynthesisError("settings allow no speech token for the text (max_ratio / max_tokens)")
        base = jax.random.fold_in(jax.random.key(seed), 0)
        keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(len(texts)))
        out = gen.generate(
            self.ar_graphdef,
            self.ar_params,
            prompt,
            prompt_len,
            keys,
            max_len=max_len,
            min_len=min_len,
            sampling=sampling or s.sampling,
            prompt_bucket=s.prompt_bucket,
            **gen.speech_decode_kwargs(self.ar_config),
        )
        rows = out.rows()
        empty = [i for i, r in enumerate(rows) if not r]
        if empty:
            raise SynthesisError(f"the AR produced no speech token for text {empty[0]}")
        return rows, dict(
            vits_text=vits_texts, ar_text_ids=ar_ids[n_refs:], refers=tuple(jnp.asarray(r[2])[None] for r in refs),
            prompt=prompt, prompt_len=prompt_len,
        )  # fmt: skip

    def vocode(
        self,
        tokens: Sequence[int],
        text: Sequence[int] | np.ndarray,
        refers: Sequence,
        *,
        speed: float = 1.0,
        noise_scale: float = 0.5,
        key: jax.Array | None = None,
    ) -> np.ndarray:
        """VITS decode of one row's speech tokens ([N, K] code frames for an ssl_grvq VITS) with its text (the
        VITS's ids, or for a VITS that reads them the text encoder's features [len, F]: ``speech_tokens``'
        ``vits_text``) and the fused style of ``refers``."""
        if not speed > 0:
            raise SynthesisError(f"speed must be > 0, got {speed}")
        if noise_scale < 0:
            raise SynthesisError(f"noise_scale must be >= 0, got {noise_scale}")
        key = jax.random.key(0) if key is None else key
        wav = decode_fused(
            self.vits_graphdef,
            self.vits_params,
            _codes(np.asarray(tokens), self.vits_config),
            jnp.asarray(self._vits_text(text)[None]),
            tuple(refers),
            jnp.float32(noise_scale),
            key,
            self.vq_state,
            speed=float(speed),
        )
        return np.asarray(wav[0])

    def _vits_text(self, text) -> np.ndarray:
        if self.vits_config.text_input == "features":
            text = np.asarray(text, np.float32)
            if text.ndim != 2 or text.shape[1] != self.vits_config.text_feature_dim:
                raise SynthesisError(f"the VITS reads text features [tokens, {self.vits_config.text_feature_dim}], "
                                     f"got shape {text.shape}")  # fmt: skip
            return text
        return np.asarray(text, np.int32)

    def synthesize_batch(
        self,
        texts: Sequence[str],
        references: Sequence[Reference],
        *,
        speed: float = 1.0,
        noise_scale: float = 0.5,
        seed: int = 0,
        sampling: SamplingConfig | None = None,
    ) -> list[np.ndarray]:
        """Waveforms (float32 at ``sample_rate``) of several texts spoken after the same references."""
        rows, inputs = self.speech_tokens(texts, references, seed, sampling)
        base = jax.random.fold_in(jax.random.key(seed), 1)
        return [
            self.vocode(
                tok, ids, inputs["refers"], speed=speed, noise_scale=noise_scale, key=jax.random.fold_in(base, i)
            )
            for i, (tok, ids) in enumerate(zip(rows, inputs["vits_text"]))
        ]

    def synthesize(
        self,
        text: str,
        references: Sequence[Reference],
        *,
        speed: float = 1.0,
        noise_scale: float = 0.5,
        seed: int = 0,
        sampling: SamplingConfig | None = None,
    ) -> np.ndarray:
        """The waveform of ``text`` in the voice of ``references`` (float32 at ``sample_rate``)."""
        if not isinstance(text, str):
            raise SynthesisError(f"text must be a str, got {type(text).__name__}")
        return self.synthesize_batch(
            [text], references, speed=speed, noise_scale=noise_scale, seed=seed, sampling=sampling
        )[0]
