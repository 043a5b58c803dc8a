"""The ``vits`` family: the VITS decoder GAN as GPT-SoVITS's ``s2_train`` (discriminator phase, then generator).

Players ``generator`` (``SynthesizerTrn``, trained with GPT-SoVITS's parameter groups: the quantizer and its input
projection frozen, text embedding / text encoder / MRTE at ``text_low_lr_rate`` via ``optimizer.lr_scale.text``)
and ``discriminator`` (MPD, with the VITS scale discriminator first). Generator objective: LSGAN + feature
matching + c_mel x mel L1 + c_kl x KL; discriminator: LSGAN. The data task is ``vits``: GPT-SoVITS2's layout reads
S3 tokens, BPE text and a same-speaker reference spectrogram; GPT-SoVITS v1/v2 (``content="hubert_vq"``) read
the Parquet's SSL feature column, quantised by the frozen codebook inside the loss, and reference themselves.
Each phase runs its own generator forward with its own key (slice starts, posterior noise, dropout); eval is the
deterministic forward (posterior mean, segments from frame 0).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.models.discriminators import VITS_S_LAYERS, MultiPeriodDiscriminator
from sovits2_jax.models.vits2 import config as vits_config
from sovits2_jax.models.vits2.config import VitsConfig
from sovits2_jax.models.vits2.synthesizer import SynthesizerTrn
from sovits2_jax.train import vits_losses as losses
from sovits2_jax.train.family import Family, Phase, Player
from sovits2_jax.validation import ConfigError

FROZEN_PREFIXES = ("quantizer", "ssl_proj")  # GPT-SoVITS: frozen quantizer; its codebook is a torch buffer
TEXT_PREFIXES = ("enc_p.text_embedding", "enc_p.encoder_text", "enc_p.mrte")  # trained at text_low_lr_rate


def param_labels(params) -> object:
    """Same-structure tree of "frozen" / "text" / "base" labels from each parameter's dotted path."""

    def label(path, _):
        name = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        if name.startswith(FROZEN_PREFIXES):
            return "frozen"
        return "text" if name.startswith(TEXT_PREFIXES) else "base"

    return jax.tree_util.tree_map_with_path(label, params)


def codes_of(model: SynthesizerTrn, batch: dict) -> jax.Array:
    """The content codes: the batch's S3 tokens, or its SSL features through the frozen projection + codebook."""
    if model.cfg.content == "tokens":
        return batch["codes"]
    if "ssl" not in batch:
        raise ConfigError(
            "config.model.content='hubert_vq' trains on SSL features: the Parquet needs the column named by "
            "config.data.ssl_column"
        )
    return jax.lax.stop_gradient(model.extract_codes(batch["ssl"]))


def generate(model: SynthesizerTrn, batch: dict, key: jax.Array | None) -> tuple[dict, jax.Array, jax.Array]:
    """(training forward, real waveform segment, its mel); ``key`` None: the deterministic eval forward."""
    fixed = {}
    if key is None:
        b, t = batch["spec"].shape[:2]
        fixed = dict(posterior_eps=jnp.zeros((b, t, model.cfg.inter_channels)), slice_starts=jnp.zeros(b, jnp.int32))
    out = model(
        codes_of(model, batch), batch["spec"], batch["spec_len"], batch["text"], batch["text_len"], key,
        refer=batch.get("refer"), refer_lengths=batch.get("refer_len"), **fixed,
    )  # fmt: skip
    y, y_mel = losses.segment_targets(model.cfg, batch["wav"], batch["spec"], out["ids_slice"])
    return out, y, y_mel


def discriminator_terms(generator, discriminator, batch: dict, key) -> dict:
    """LSGAN discriminator objective on D(real segment, generated segment without its gradient)."""
    out, y, _ = generate(generator, batch, key)
    return losses.discriminator_losses(discriminator(y, jax.lax.stop_gradient(out["y_hat"])))


def generator_terms(generator, discriminator, batch: dict, key) -> dict:
    """GPT-SoVITS's generator objective with D held fixed (``discriminator`` None: mel + KL only)."""
    out, y, y_mel = generate(generator, batch, key)
    disc_out = None if discriminator is None else discriminator(y, out["y_hat"])
    return losses.generator_losses(generator.cfg, out, y_mel, disc_out)


def _weighted(terms: dict, batch: dict) -> tuple[jax.Array, dict]:
    """(loss, aux): weight = valid rows; a batch without one contributes nothing."""
    weight = jnp.sum(batch["valid"]).astype(jnp.float32)
    loss = jnp.where(weight > 0, terms["loss"], 0.0)
    return loss, {**{k: v for k, v in terms.items() if k != "loss"}, "weight": weight}


class VitsFamily(Family):
    name = "vits"
    init_part = "vits"
    throughput_unit = "frames"  # mel / spectrogram frames

    def validate(self, config) -> None:
        vits_config.validate(config.model)

    def model_config(self, config) -> VitsConfig:
        return VitsConfig.from_section(config.model, "config.model")

    def check(self, config) -> None:
        """The model section fits the data section (vocabularies, audio frontend, reference)."""
        cfg, data = self.model_config(config), config.data
        spec = data.spectrogram
        frontend = (cfg.sampling_rate, cfg.n_fft, cfg.hop_length, cfg.win_length, cfg.content_upsample)
        if frontend != (data.sample_rate, spec.n_fft, spec.hop_size, spec.win_size, data.unit_frames):
            raise ConfigError(
                f"config.data (sample_rate, spectrogram n_fft / hop_size / win_size, unit_frames) must match "
                f"config.model's {frontend}"
            )
        if cfg.content == "tokens" and data.speech_token_size > cfg.speech_vocab_size:
            raise ConfigError(
                f"config.data.speech_token_size={data.speech_token_size} exceeds config.model.speech_vocab_size="
                f"{cfg.speech_vocab_size}"
            )
        if cfg.text_input != "ids":
            raise ConfigError("config.model.text_input: the vits data task gives text ids ('ids')")
        if data.bucket_lengths[0] < cfg.segment_size // cfg.hop_length:
            raise ConfigError(
                f"config.data.bucket_lengths[0]={data.bucket_lengths[0]} frames is shorter than the "
                f"{cfg.segment_size // cfg.hop_length}-frame training segment"
            )

    def make_generator(self, config):
        return SynthesizerTrn(self.model_config(config), rngs=nnx.Rngs(config.seed))

    def make_discriminator(self, config):
        d = config.discriminator
        layers = {"vits": VITS_S_LAYERS, "none": None}[d.scale_layers]
        rngs = nnx.Rngs(config.seed + 1)
        return MultiPeriodDiscriminator(tuple(d.periods), scale_layers=layers, channels=tuple(d.channels), rngs=rngs)

    def players(self, config) -> list[Player]:
        self.check(config)
        return [
            Player("generator", functools.partial(self.make_generator, config), config.train.optimizer, param_labels),
            Player("discriminator", functools.partial(self.make_discriminator, config), config.train.optimizer_d),
        ]

    @staticmethod
    def discriminator_loss(models, batch, rng, train):
        key = rng if train else None
        return _weighted(discriminator_terms(models["generator"], models["discriminator"], batch, key), batch)

    @staticmethod
    def generator_loss(models, batch, rng, train):
        key = rng if train else None
        return _weighted(generator_terms(models["generator"], models["discriminator"], batch, key), batch)

    def phases(self, config) -> list[Phase]:
        return [Phase("discriminator", self.discriminator_loss), Phase("generator", self.generator_loss)]

    def eval_loss(self, config):
        return self.generator_loss

    def init_from(self, config, path, params):
        from sovits2_jax.convert import parts

        loaded, _ = parts.load(path, "vits")
        return {**params, "generator": {**params["generator"], **loaded}}  # an s2 .pth has no enc_q

    def export_meta(self, config) -> dict:
        from sovits2_jax.convert import parts

        return parts.export_meta("vits", self.model_config(config), player="generator")

    def tokens(self, batch):
        return jnp.sum(batch["spec_len"])


FAMILY = VitsFamily()
