"""Speech language model over S3 speech tokens on a Qwen2 backbone: CosyVoice2's ``Qwen2LM`` and the
GPT-SoVITS2 multi-reference layout as two configurations of one model.

Parameters (CosyVoice2 names): ``llm`` (a Qwen2ForCausalLM whose text embedding embeds text tokens; its LM head
is unused), ``llm_embedding`` (2 rows: sos = 0, task_id = 1), ``speech_embedding`` and ``llm_decoder`` (Linear
with bias) over ``speech_token_size + 3`` speech ids (eos = size, fill = size + 2). GPT-SoVITS2 may add
``text_feature_proj`` (an MLP adding per-token text features, BGE-M3-sized, to text embeddings).

Several codebooks per frame (``num_codebooks`` K > 1, GPT-SoVITS2's grouped residual VQ codes; K = 1 builds exactly
the one-codebook model): codebook 0 is the speech id above (its rows keep eos and fill, only its head predicts eos);
codebooks 1..K-1 get ``codebooks`` (``ExtraCodebooks``: stacked tables and heads over ``extra_codebook_size`` ids,
no special rows). A speech position's input is the sum of its K code embeddings and every head reads the same hidden
state ("parallel" heads: one AR step per frame). The extra codes of a sequence are ``codes_extra`` [B, T, K-1]
(-1 = none: non-speech positions and fed eos) and their targets ``targets_extra`` [B, T, K-1] (-1 = ignored).

A sequence is described position by position with ``kinds`` (SPECIAL / TEXT / SPEECH / PAD) and ``ids`` (the
row in the table of that kind), plus ``targets`` (next speech token, -1 = ignored). Builders:

- CosyVoice2 unistream ``[sos, text, task_id, speech]`` -> targets ``[-1 x (1 + len(text)), speech, eos]``;
  bistream (a per-row draw, used when len(speech) / len(text) > mix[1] / mix[0]): ``sos``, then blocks of
  mix[0] text + mix[1] speech tokens whose targets end in the fill token, then the remaining text, task_id and
  the remaining speech with targets ending in eos. Both have length len(text) + len(speech) + 2.
- GPT-SoVITS2 ``x1 + y1 + ... + xn -> yn``: ``sos, x1, task_id, y1, eos, x2, task_id, y2, eos, ...`` under one
  RoPE; the loss covers the last speech block (and its eos). Training and inference build the prompt with the
  same function (inference stops after the last ``task_id``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sovits2_jax.models import qwen2
from sovits2_jax.models.config_base import ConfigBase
from sovits2_jax.models.qwen2 import Qwen2Config, Qwen2ForCausalLM
from sovits2_jax.nn.layers import Embed, Linear, default_kernel_init, param
from sovits2_jax.parallel.sharding import constrain
from sovits2_jax.text.layouts import IGNORE_ID, PAD, SOS, SPECIAL, SPEECH, TASK_ID, TEXT

LAYOUTS = ("cosyvoice2", "gpt_sovits2")
TEXT_ATTENTION = ("causal", "bidirectional")


@dataclasses.dataclass(frozen=True)
class SpeechLMConfig(ConfigBase):
    """Speech LM on a Qwen2 backbone; defaults are CosyVoice2-0.5B's ``Qwen2LM``."""

    backbone: Qwen2Config = dataclasses.field(default_factory=Qwen2Config)
    speech_token_size: int = 6561
    layout: str = "cosyvoice2"
    mix_ratio: tuple[int, int] = (5, 15)
    lsm_weight: float = 0.0
    length_normalized_loss: bool = True
    text_feature_dim: int = 0  # > 0: add MLP(per-token features) to text embeddings (GPT-SoVITS2: 1024)
    loss_on_references: bool = False  # GPT-SoVITS2: also train on the reference speech blocks
    text_attention: str = "causal"  # "bidirectional": each text block attends both ways within itself
    num_codebooks: int = 1  # codes per speech frame; > 1: codebooks 1.. in ``ExtraCodebooks`` (gpt_sovits2 layout)
    extra_codebook_size: int = 0  # ids of each codebook 1..K-1 (0: speech_token_size)

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"SpeechLMConfig.layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.text_attention not in TEXT_ATTENTION:
            raise ValueError(
                f"SpeechLMConfig.text_attention must be one of {TEXT_ATTENTION}, got {self.text_attention!r}"
            )
        if self.speech_token_size <= 0:
            raise ValueError(f"SpeechLMConfig.speech_token_size must be positive, got {self.speech_token_size}")
        if len(self.mix_ratio) != 2 or min(self.mix_ratio) <= 0:
            raise ValueError(f"SpeechLMConfig.mix_ratio must be two positive ints, got {self.mix_ratio}")
        if self.num_codebooks < 1 or self.extra_codebook_size < 0:
            raise ValueError(
                f"SpeechLMConfig.num_codebooks must be >= 1 and extra_codebook_size >= 0, got "
                f"{self.num_codebooks} and {self.extra_codebook_size}"
            )
        if self.num_codebooks > 1 and self.layout != "gpt_sovits2":
            raise ValueError(f"SpeechLMConfig.num_codebooks={self.num_codebooks} needs layout='gpt_sovits2'")
        if not 0.0 <= self.lsm_weight < 1.0:
            raise ValueError(f"SpeechLMConfig.lsm_weight must be in [0, 1), got {self.lsm_weight}")
        if isinstance(self.backbone, dict):
            object.__setattr__(self, "backbone", Qwen2Config.from_dict(self.backbone))
        object.__setattr__(self, "mix_ratio", tuple(int(m) for m in self.mix_ratio))

    @property
    def eos_id(self) -> int:
        return self.speech_token_size

    @property
    def fill_id(self) -> int:
        return self.speech_token_size + 2

    @property
    def num_speech_rows(self) -> int:
        return self.speech_token_size + 3

    @property
    def extra_vocab(self) -> int:
        """Ids of each codebook 1..K-1."""
        return self.extra_codebook_size or self.speech_token_size


def validate(section, prefix: str = "config.model") -> None:
    """Checks a speech-LM model section: its Qwen2 backbone, then the SpeechLMConfig fields."""
    qwen2.validate(section.backbone, prefix=f"{prefix}.backbone")
    SpeechLMConfig.from_section(section, prefix)


class TextFeatureProjection(nnx.Module):
    """Linear -> SiLU -> Linear from per-token text features to the model width."""

    def __init__(self, in_features: int, width: int, *, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.hidden = Linear(in_features, width, axes=("text_features", "embed"), **kw)
        self.out = Linear(width, width, axes=("mlp", "embed"), **kw)

    def __call__(self, x):
        return self.out(jax.nn.silu(self.hidden(x)))


class ExtraCodebooks(nnx.Module):
    """Codebooks 1..K-1: ``embedding`` [K-1, V, D], and heads ``kernel`` [K-1, D, V] and ``bias`` [K-1, V]."""

    def __init__(self, num: int, vocab: int, width: int, *, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.dtype = dtype
        self.embedding = param(rngs, nnx.initializers.normal(0.02), (num, vocab, width),
                               ("codebooks", "speech_vocab", "embed"), param_dtype)  # fmt: skip
        self.kernel = param(rngs, default_kernel_init, (num, width, vocab), ("codebooks", "embed", "speech_vocab"),
                            param_dtype)  # fmt: skip
        self.bias = param(rngs, nnx.initializers.zeros_init(), (num, vocab), ("codebooks", "speech_vocab"), param_dtype)

    def embed(self, codes: jax.Array) -> jax.Array:
        """codes [..., K-1] (-1 = none) -> the sum of their embeddings [..., D]."""
        table = self.embedding[...]
        if self.dtype is not None:
            table = table.astype(self.dtype)
        rows = jax.vmap(lambda t, c: jnp.take(t, jnp.maximum(c, 0), axis=0), in_axes=(0, -1), out_axes=-2)(
            table, codes
        )  # [..., K-1, D]
        return jnp.sum(jnp.where((codes >= 0)[..., None], rows, 0), axis=-2)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """hidden [..., D] -> logits [..., K-1, V]."""
        dtype = self.dtype or jnp.result_type(hidden.dtype, self.kernel.dtype)
        y = jnp.einsum("...d,kdv->...kv", hidden.astype(dtype), self.kernel[...].astype(dtype))
        return y + self.bias[...].astype(y.dtype)


class SpeechLM(nnx.Module):
    """Embeds a kinds/ids sequence, runs the Qwen2 backbone, scores next speech tokens."""

    def __init__(self, config: SpeechLMConfig, *, rngs: nnx.Rngs):
        self.config = config
        bb = config.backbone
        kw = dict(dtype=jnp.dtype(bb.dtype), param_dtype=jnp.dtype(bb.param_dtype), rngs=rngs)
        d = bb.hidden_size
        self.llm = Qwen2ForCausalLM(bb, rngs=rngs)
        self.llm_embedding = Embed(2, d, axes=(None, "embed"), **kw)
        self.speech_embedding = Embed(config.num_speech_rows, d, axes=("speech_vocab", "embed"), **kw)
        self.llm_decoder = Linear(d, config.num_speech_rows, axes=("embed", "speech_vocab"), **kw)
        self.text_feature_proj = (
            TextFeatureProjection(config.text_feature_dim, d, **kw) if config.text_feature_dim > 0 else None
        )
        if config.num_codebooks > 1:  # K = 1 has no such attribute: its parameter tree is the one-codebook model's
            self.codebooks = ExtraCodebooks(config.num_codebooks - 1, config.extra_vocab, d, **kw)

    @property
    def backbone(self):
        return self.llm.model

    def embed(
        self,
        kinds: jax.Array,
        ids: jax.Array,
        text_features: jax.Array | None = None,
        codes_extra: jax.Array | None = None,
    ) -> jax.Array:
        """[B, T] kinds/ids (+ optional [B, T, F] text features; with K > 1 the [B, T, K-1] ``codes_extra``) ->
        input embeddings [B, T, D]; PAD -> 0."""
        text = self.llm.model.embed_tokens(jnp.where(kinds == TEXT, ids, 0))
        speech = self.speech_embedding(jnp.where(kinds == SPEECH, ids, 0))
        if self.config.num_codebooks > 1:
            codes_extra = self.check_codes_extra(codes_extra, kinds.shape)
            speech = speech + self.codebooks.embed(codes_extra).astype(speech.dtype)
        special = self.llm_embedding(jnp.where(kinds == SPECIAL, ids, 0))
        k = kinds[..., None]
        x = jnp.where(k == TEXT, text, jnp.where(k == SPEECH, speech, special))
        if self.text_feature_proj is not None and text_features is not None:
            x = x + jnp.where(k == TEXT, self.text_feature_proj(text_features).astype(x.dtype), 0)
        return jnp.where(k == PAD, 0, x)

    def check_codes_extra(self, codes_extra: jax.Array | None, shape: tuple[int, ...]) -> jax.Array:
        k = self.config.num_codebooks - 1
        if codes_extra is None or tuple(codes_extra.shape) != (*shape, k):
            got = None if codes_extra is None else tuple(codes_extra.shape)
            raise ValueError(f"num_codebooks={k + 1} needs codes_extra of shape {(*shape, k)}, got {got}")
        return codes_extra

    def logits(self, hidden: jax.Array) -> jax.Array:
        return constrain(self.llm_decoder(hidden), ("batch", "length", "act_vocab"))

    def extra_logits(self, hidden: jax.Array) -> jax.Array:
        """Logits [B, T, K-1, extra_vocab] of codebooks 1..K-1 (K > 1 only)."""
        return constrain(self.codebooks.logits(hidden), ("batch", "length", None, "act_vocab"))

    def hidden(
        self,
        kinds: jax.Array,
        ids: jax.Array,
        *,
        lengths: jax.Array | None = None,
        text_features: jax.Array | None = None,
        text_segments: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        positions: jax.Array | None = None,
        codes_extra: jax.Array | None = None,
    ) -> jax.Array:
        """The backbone's last hidden states [B, T, D] (``__call__`` without the head)."""
        x = self.embed(kinds, ids, text_features, codes_extra)
        mask = None
        if lengths is not None and segment_ids is None:
            mask = jnp.arange(kinds.shape[1])[None, :] < lengths[:, None]
        hidden, _ = self.llm.model(
            inputs_embeds=x,
            attention_mask=mask,
            segment_ids=segment_ids,
            positions=positions,
            bidirectional_segments=self.bidirectional_segments(text_segments),
        )
        return hidden

    def __call__(self, kinds: jax.Array, ids: jax.Array, **kwargs) -> jax.Array:
        """Logits [B, T, speech_token_size + 3] (codebook 0) for right-padded rows of ``lengths`` (or packed
        segments); keyword arguments as ``hidden``.

        ``text_segments`` [B, T] numbers the text blocks (0 elsewhere); used with bidirectional text attention.
        Several examples packed in one row take ``segment_ids`` and ``positions`` restarting at each example.
        With K > 1, ``codes_extra`` [B, T, K-1] is needed; ``extra_logits(hidden(...))`` scores codebooks 1..K-1.
        """
        return self.logits(self.hidden(kinds, ids, **kwargs))

    def bidirectional_segments(self, text_segments: jax.Array | None) -> jax.Array | None:
        if self.config.text_attention != "bidirectional":
            return None
        if text_segments is None:
            raise ValueError("text_attention='bidirectional' needs the text_segments of the sequence")
        return text_segments


# ----------------------------------------------------------------------------------------------- sequences


def _gather(tokens: jax.Array, idx: jax.Array) -> jax.Array:
    return jnp.take_along_axis(tokens, jnp.clip(idx, 0, tokens.shape[1] - 1), axis=1)


def cosyvoice2_sequence(
    text: jax.Array,
    text_len: jax.Array,
    speech: jax.Array,
    speech_len: jax.Array,
    bistream_draw: jax.Array,
    *,
    speech_token_size: int,
    mix_ratio: tuple[int, int] = (5, 15),
) -> dict[str, jax.Array]:
    """CosyVoice2 ``prepare_lm_input_target`` as static-shape index arithmetic (jit-able).

    text [B, Lt], speech [B, Ls] right-padded; ``bistream_draw`` [B] bool is the reference's
    ``random.random() < 0.5``; a row goes bistream when the draw is True and len(speech)/len(text) > mix[1]/mix[0].
    Returns kinds, ids, targets [B, Lt + Ls + 2] and lengths [B] (= text_len + speech_len + 2), bistream [B].
    """
    m0, m1 = mix_ratio
    lt = text.shape[1]
    ls = speech.shape[1]
    t_total = lt + ls + 2
    text_len = text_len.astype(jnp.int32)[:, None]
    speech_len = speech_len.astype(jnp.int32)[:, None]
    p = jnp.arange(t_total, dtype=jnp.int32)[None, :]
    eos, fill = speech_token_size, speech_token_size + 2
    valid = p < text_len + speech_len + 2

    # unistream: sos | text | task_id | speech ; targets -1 x (1 + len(text)) | speech | eos
    u_kind = jnp.where(p == 0, SPECIAL, jnp.where(p <= text_len, TEXT, jnp.where(p == text_len + 1, SPECIAL, SPEECH)))
    u_id = jnp.where(
        p == 0,
        SOS,
        jnp.where(p <= text_len, _gather(text, p - 1), jnp.where(p == text_len + 1, TASK_ID, 0)),
    )
    u_id = jnp.where(u_kind == SPEECH, _gather(speech, p - text_len - 2), u_id)
    s_idx = p - text_len - 1
    u_tgt = jnp.where(p <= text_len, IGNORE_ID, jnp.where(s_idx < speech_len, _gather(speech, s_idx), eos))

    # bistream: sos | n_full x (m0 text + m1 speech) | rest text | task_id | rest speech
    n_full = text_len // m0
    q = p - 1
    in_blocks = q < n_full * (m0 + m1)
    c, o = q // (m0 + m1), q % (m0 + m1)
    blk_kind = jnp.where(o < m0, TEXT, SPEECH)
    blk_id = jnp.where(o < m0, _gather(text, c * m0 + o), _gather(speech, c * m1 + o - m0))
    blk_tgt = jnp.where(
        o < m0 - 1, IGNORE_ID, jnp.where(o == m0 + m1 - 1, fill, _gather(speech, c * m1 + o - (m0 - 1)))
    )
    r = text_len - n_full * m0
    rest_speech = speech_len - n_full * m1
    qr = q - n_full * (m0 + m1)
    tail_kind = jnp.where(qr < r, TEXT, jnp.where(qr == r, SPECIAL, SPEECH))
    tail_id = jnp.where(
        qr < r,
        _gather(text, n_full * m0 + qr),
        jnp.where(qr == r, TASK_ID, _gather(speech, n_full * m1 + qr - r - 1)),
    )
    tail_tgt = jnp.where(qr < r, IGNORE_ID, jnp.where(qr - r < rest_speech, _gather(speech, n_full * m1 + qr - r), eos))
    bi_kind = jnp.where(p == 0, SPECIAL, jnp.where(in_blocks, blk_kind, tail_kind))
    bi_id = jnp.where(p == 0, SOS, jnp.where(in_blocks, blk_id, tail_id))
    bi_tgt = jnp.where(p == 0, IGNORE_ID, jnp.where(in_blocks, blk_tgt, tail_tgt))

    bistream = jnp.asarray(bistream_draw, bool) & (speech_len[:, 0] * m0 > text_len[:, 0] * m1)
    bs = bistream[:, None]
    kinds = jnp.where(valid, jnp.where(bs, bi_kind, u_kind), PAD).astype(jnp.int32)
    ids = jnp.where(valid, jnp.where(bs, bi_id, u_id), 0).astype(jnp.int32)
    targets = jnp.where(valid, jnp.where(bs, bi_tgt, u_tgt), IGNORE_ID).astype(jnp.int32)
    return dict(kinds=kinds, ids=ids, targets=targets, lengths=(text_len + speech_len + 2)[:, 0], bistream=bistream)


# ------------------------------------------------------------------------------------------------- losses


def label_smoothing_loss(
    logits: jax.Array, targets: jax.Array, *, smoothing: float = 0.0, normalize_length: bool = True
) -> jax.Array:
    """KL(smoothed one-hot || softmax) summed over non-ignored positions, divided by their count
    (``normalize_length``) or by the batch size (wenet/CosyVoice ``LabelSmoothingLoss``)."""
    v = logits.shape[-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    keep = targets != IGNORE_ID
    tgt_logp = jnp.take_along_axis(logp, jnp.where(keep, targets, 0)[..., None], axis=-1)[..., 0]
    conf, other = 1.0 - smoothing, smoothing / (v - 1)
    const = conf * np.log(conf) if conf > 0 else 0.0
    if other > 0:
        const += (v - 1) * other * np.log(other)
        cross = conf * tgt_logp + other * (jnp.sum(logp, axis=-1) - tgt_logp)
    else:
        cross = conf * tgt_logp
    total = jnp.sum(jnp.where(keep, const - cross, 0.0))
    denom = jnp.maximum(jnp.sum(keep), 1) if normalize_length else targets.shape[0]
    return total / denom


def accuracy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    keep = targets != IGNORE_ID
    hit = (jnp.argmax(logits, axis=-1) == targets) & keep
    return jnp.sum(hit) / jnp.maximum(jnp.sum(keep), 1)


def sequence_logps(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean log-probability of the non-ignored targets per row [B] (the DPO policy score)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    keep = targets != IGNORE_ID
    tgt = jnp.take_along_axis(logp, jnp.where(keep, targets, 0)[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(keep, tgt, 0.0), axis=-1) / jnp.maximum(jnp.sum(keep, axis=-1), 1)


def dpo_loss(
    chosen: jax.Array,
    rejected: jax.Array,
    ref_chosen: jax.Array,
    ref_rejected: jax.Array,
    *,
    beta: float = 0.01,
    label_smoothing: float = 0.0,
    ipo: bool = False,
) -> dict[str, jax.Array]:
    """DPO (or IPO) on per-row sequence log-probs of the policy and the frozen reference (CosyVoice's DPOLoss)."""
    logits = (chosen - rejected) - (ref_chosen - ref_rejected)
    if ipo:
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        losses = (
            -jax.nn.log_sigmoid(beta * logits) * (1 - label_smoothing)
            - jax.nn.log_sigmoid(-beta * logits) * label_smoothing
        )
    chosen_reward = beta * jax.lax.stop_gradient(chosen - ref_chosen)
    rejected_reward = beta * jax.lax.stop_gradient(rejected - ref_rejected)
    return dict(
        loss=jnp.mean(losses),
        chosen_reward=jnp.mean(chosen_reward),
        rejected_reward=jnp.mean(rejected_reward),
        accuracy=jnp.mean((chosen_reward > rejected_reward).astype(jnp.float32)),
    )


def lm_loss(model: SpeechLM, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """CE loss + accuracy on a built batch (kinds, ids, targets, lengths[, text_features])."""
    logits = model(
        batch["kinds"],
        batch["ids"],
        lengths=batch["lengths"],
        text_features=batch.get("text_features"),
        text_segments=batch.get("text_segments"),
    )
    cfg = model.config
    loss = label_smoothing_loss(
        logits, batch["targets"], smoothing=cfg.lsm_weight, normalize_length=cfg.length_normalized_loss
    )
    return dict(loss=loss, acc=accuracy(logits, batch["targets"]), logits=logits)


def cosyvoice2_forward(model: SpeechLM, batch: dict[str, jax.Array], bistream_draw: jax.Array) -> dict:
    """CosyVoice2 ``Qwen2LM.forward``: build uni/bistream sequences from the token batch, then loss and acc."""
    seq = cosyvoice2_sequence(
        batch["text_token"],
        batch["text_token_len"],
        batch["speech_token"],
        batch["speech_token_len"],
        bistream_draw,
        speech_token_size=model.config.speech_token_size,
        mix_ratio=model.config.mix_ratio,
    )
    return {**lm_loss(model, seq), "targets": seq["targets"], "lengths": seq["lengths"]}


def cosyvoice2_forward_dpo(
    model: SpeechLM, batch: dict[str, jax.Array], bistream_draw: jax.Array
) -> dict[str, jax.Array]:
    """CosyVoice2 ``forward_dpo``: CE on the chosen speech, and per-row mean target log-probs of chosen and
    rejected speech. ``bistream_draw`` is [2B] (chosen rows, then rejected rows, as the reference draws them).

    The reference averages log-probs under the *ignored*-position mask of the chosen rows (and over the padded
    length); we average over each row's own scored positions, which is what the DPO objective needs.
    """
    b = batch["text_token"].shape[0]
    ls = max(batch["speech_token"].shape[1], batch["reject_speech_token"].shape[1])

    def pad_to(x):
        return jnp.pad(x, ((0, 0), (0, ls - x.shape[1])))

    combined = dict(
        text_token=jnp.concatenate([batch["text_token"]] * 2),
        text_token_len=jnp.concatenate([batch["text_token_len"]] * 2),
        speech_token=jnp.concatenate([pad_to(batch["speech_token"]), pad_to(batch["reject_speech_token"])]),
        speech_token_len=jnp.concatenate([batch["speech_token_len"], batch["reject_speech_token_len"]]),
    )
    out = cosyvoice2_forward(model, combined, bistream_draw)
    logits, targets = out["logits"], out["targets"]
    cfg = model.config
    loss = label_smoothing_loss(
        logits[:b], targets[:b], smoothing=cfg.lsm_weight, normalize_length=cfg.length_normalized_loss
    )
    logps = sequence_logps(logits, targets)
    return dict(
        loss=loss,
        acc=accuracy(logits[:b], targets[:b]),
        chosen_logps=logps[:b],
        rejected_logps=logps[b:],
    )
