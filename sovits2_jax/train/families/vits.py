"""The ``vits`` family: the VITS decoder GAN as GPT-SoVITS's ``s2_train`` (discriminator phase, then generator).

Players ``generator`` (``SynthesizerTrn``, trained with GPT-SoVITS's parameter groups: the quantizer and its input
projection frozen, text embedding / text encoder / MRTE at ``text_low_lr_rate`` via ``optimizer.lr_scale.text``)
and ``discriminator`` (MPD, with the VITS scale discriminator first). Generator objective: LSGAN + feature
matching + c_mel x mel L1 + c_kl x KL; discriminator: LSGAN. The data task is ``vits``: GPT-SoVITS2's layout reads
S3 tokens, BPE text and a same-speaker reference spectrogram; GPT-SoVITS v1/v2 (``content="hubert_vq"``) read
the Parquet's SSL feature column, quantised by the frozen codebook inside the loss, and reference themselves.
Each phase runs its own generator forward with its own key (slice starts, posterior noise, dropout); eval is the
deterministic forward (posterior mean, segments from frame 0).

``content="ssl_grvq"`` (GPT-SoVITS2's plan): SSL features -> ``ssl_proj`` (trained) -> a grouped residual VQ whose
codebooks are the generator's buffer ``grvq`` (``Family.init_buffers``: ``{"generator": {"grvq": state dict}}``).
k-means initialises them on the first batch (in the discriminator phase, which runs first; its result is kept), the
generator phase updates them by EMA and replaces dead codes, and its commitment loss (the mean over the codebooks,
GPT-SoVITS's ``kl_ssl``) joins the generator objective as ``loss_commit``; ``vq_perplexity`` logs the batch's mean
code perplexity per codebook. Eval quantises without updating them.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.models import grvq
from sovits2_jax.models.discriminators import VITS_S_LAYERS, MultiPeriodDiscriminator
from sovits2_jax.models.vits2 import config as vits_config
from sovits2_jax.models.vits2.config import VitsConfig
from sovits2_jax.models.vits2.synthesizer import SynthesizerTrn
from sovits2_jax.train import text_encoder_sizes
from sovits2_jax.train import vits_losses as losses
from sovits2_jax.train.family import BUFFERS, Family, Phase, Player
from sovits2_jax.validation import ConfigError

log = logging.getLogger("sovits2_jax.train")

FROZEN_PREFIXES = ("quantizer", "ssl_proj")  # GPT-SoVITS: frozen quantizer; its codebook is a torch buffer
TEXT_PREFIXES = ("enc_p.text_embedding", "enc_p.encoder_text", "enc_p.mrte")  # trained at text_low_lr_rate
VQ_BUFFER = "grvq"  # the generator's buffer of ssl_grvq codebooks (grvq.state_to_dict)


def text_encoder_keys(vocab: int, width: int) -> dict:
    """The keys a text encoder decides for the VITS: its text encoder reads the per-token features."""
    return {"model.text_input": "features", "model.text_feature_dim": width, "data.text_feature_dim": width}


def param_labels(params, frozen: tuple[str, ...] = FROZEN_PREFIXES) -> object:
    """Same-structure tree of "frozen" / "text" / "base" labels from each parameter's dotted path."""

    def label(path, _):
        name = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        if frozen and name.startswith(frozen):
            return "frozen"
        return "text" if name.startswith(TEXT_PREFIXES) else "base"

    return jax.tree_util.tree_map_with_path(label, params)


def _need_ssl(model: SynthesizerTrn, batch: dict) -> None:
    if "ssl" not in batch:
        raise ConfigError(
            f"config.model.content={model.cfg.content!r} trains on SSL features: the Parquet needs the column named "
            "by config.data.ssl_column (python -m sovits2_jax.data.prep.ssl_features adds it)"
        )


def codes_of(model: SynthesizerTrn, batch: dict) -> jax.Array:
    """The content codes: the batch's S3 tokens, or its SSL features through the frozen projection + codebook."""
    if model.cfg.content == "tokens":
        return batch["codes"]
    _need_ssl(model, batch)
    return jax.lax.stop_gradient(model.extract_codes(batch["ssl"]))


def vq_content(model: SynthesizerTrn, batch: dict, key, buffers: dict, training: bool):
    """``ssl_grvq``: (the straight-through quantised content [B, T_codes, ssl_dim], the commitment loss (mean over
    the codebooks), the batch's mean code perplexity, the buffers after the VQ call)."""
    _need_ssl(model, batch)
    state = buffers["generator"][VQ_BUFFER]
    out = model.quantize(batch["ssl"], state, key, ssl_lengths=batch["ssl_len"], training=training)
    perplexity = jnp.mean(grvq.perplexity(out.codes, model.cfg.codebook_size))
    new = {**buffers["generator"], VQ_BUFFER: grvq.state_to_dict(out.state)}
    return out.quantized, jnp.mean(out.commit_loss), perplexity, {"generator": new}


def generate(
    model: SynthesizerTrn, batch: dict, key: jax.Array | None, content: jax.Array | None = None, noise_scale=None
) -> tuple[dict, jax.Array, jax.Array]:
    """(training forward, real waveform segment, its mel); ``key`` None: the deterministic eval forward.
    ``content`` (ssl_grvq: the VQ's output) replaces the content of the batch's codes; ``noise_scale`` (the KL
    warm-up's fraction) scales the posterior's noise."""
    fixed = {}
    b, t = batch["spec"].shape[:2]
    if key is None:
        fixed = dict(posterior_eps=jnp.zeros((b, t, model.cfg.inter_channels)), slice_starts=jnp.zeros(b, jnp.int32))
    elif noise_scale is not None:
        key, k_eps = jax.random.split(key)
        fixed = dict(posterior_eps=noise_scale * jax.random.normal(k_eps, (b, t, model.cfg.inter_channels)))
    codes = codes_of(model, batch) if content is None else None
    out = model(
        codes, batch["spec"], batch["spec_len"], batch["text"], batch["text_len"], key,
        refer=batch.get("refer"), refer_lengths=batch.get("refer_len"), content=content, **fixed,
    )  # fmt: skip
    y, y_mel = losses.segment_targets(model.cfg, batch["wav"], batch["spec"], out["ids_slice"])
    return out, y, y_mel


def discriminator_terms(generator, discriminator, batch: dict, key, content=None) -> dict:
    """LSGAN discriminator objective on D(real segment, generated segment without its gradient)."""
    out, y, _ = generate(generator, batch, key, content)
    return losses.discriminator_losses(discriminator(y, jax.lax.stop_gradient(out["y_hat"])))


def generator_terms(generator, discriminator, batch: dict, key, content=None, commit=None, step=None) -> dict:
    """GPT-SoVITS's generator objective with D held fixed (``discriminator`` None: mel + KL only); ``commit`` (the
    ssl_grvq commitment loss) is added as ``loss_commit``; ``step`` (training) sets the KL warm-up's fraction,
    which scales the KL term and the posterior's noise (``config.model.kl_warmup_steps``)."""
    warm = losses.warmup_fraction(generator.cfg, step)
    noise_scale = None if step is None or generator.cfg.kl_warmup_steps <= 0 else warm
    out, y, y_mel = generate(generator, batch, key, content, noise_scale)
    disc_out = None if discriminator is None else discriminator(y, out["y_hat"])
    terms = losses.generator_losses(generator.cfg, out, y_mel, disc_out, kl_scale=warm)
    if commit is not None:
        terms["loss"] = terms["loss"] + commit
        terms["loss_commit"] = commit
    return terms


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
        text_input = config.model.get("text_input", "ids")
        features = config.data.get("text_source", "bpe") == "bge_m3"
        if text_input != ("features" if features else "ids"):
            raise ConfigError(
                f"config.model.text_input={text_input!r}: the vits data task gives "
                + ("the text encoder's features ('features') with config.data.text_source='bge_m3'" if features
                   else "text ids ('ids'); set config.data.text_source='bge_m3' for a text encoder's features")
            )  # fmt: skip
        text_encoder_sizes.check(config, text_encoder_keys)

    def adopt(self, config, overrides=()) -> list[str]:
        """With ``config.data.text_source="bge_m3"``, the text encoder directory's feature width: the text encoder
        reads its features (``model.text_input="features"``) instead of BPE ids."""
        return text_encoder_sizes.adopt(config, text_encoder_keys, overrides)

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
        if cfg.content in vits_config.SSL_CONTENT:
            if not data.ssl_column:
                raise ConfigError(
                    f"config.model.content={cfg.content!r} reads SSL features: set config.data.ssl_column"
                )
            if data.ssl_dim != cfg.ssl_dim:
                raise ConfigError(f"config.data.ssl_dim={data.ssl_dim} must equal config.model.ssl_dim={cfg.ssl_dim}")
        elif data.ssl_column:
            raise ConfigError(
                f"config.model.content={cfg.content!r} reads speech tokens: config.data.ssl_column must be '' (got "
                f"{data.ssl_column!r})"
            )
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
        # GPT-SoVITS freezes its pretrained quantizer and projection; the ssl_grvq projection trains with its VQ
        frozen = FROZEN_PREFIXES if self.model_config(config).content == "hubert_vq" else ()
        labels = functools.partial(param_labels, frozen=frozen)
        return [
            Player("generator", functools.partial(self.make_generator, config), config.train.optimizer, labels),
            Player("discriminator", functools.partial(self.make_discriminator, config), config.train.optimizer_d),
        ]

    def init_buffers(self, config, mesh) -> dict:
        """ssl_grvq: the generator's empty VQ codebooks (k-means fills them on the first batch), placed by the
        logical axes of ``grvq.STATE_AXES``; other content kinds carry no buffers."""
        cfg = self.model_config(config)
        if cfg.content != "ssl_grvq":
            return {}
        vq = cfg.grvq_config()
        state = jax.device_put(grvq.init_state(vq), grvq.state_shardings(vq, mesh, config.sharding.rules))
        return {"generator": {VQ_BUFFER: grvq.state_to_dict(state)}}

    def buffers_from(self, config, path, buffers):
        """The VQ codebooks of ``config.init.path`` (a checkpoint of ours with a buffers item), else k-means'."""
        if not buffers:
            return buffers
        from sovits2_jax.convert import parts

        loaded = parts.load_buffers(path, "vits")
        if VQ_BUFFER not in loaded:
            log.warning("config.init.path=%s holds no VQ codebooks: k-means initialises them on the first batch", path)
            return buffers
        return {"generator": {VQ_BUFFER: loaded[VQ_BUFFER]}}

    @staticmethod
    def discriminator_loss(models, batch, rng, train, buffers=None):
        generator, new, content = models["generator"], None, None
        if buffers:  # ssl_grvq: codebooks read, not trained here (k-means on the very first batch is kept)
            k_vq, rng = jax.random.split(rng)
            content, _, _, new = vq_content(generator, batch, k_vq, buffers, training=False)
            content = jax.lax.stop_gradient(content)
        key = rng if train else None
        loss, aux = _weighted(discriminator_terms(generator, models["discriminator"], batch, key, content), batch)
        return loss, aux if new is None else {**aux, BUFFERS: new}

    @staticmethod
    def generator_loss(models, batch, rng, train, buffers=None, step=None):
        generator, new, content, commit, extra = models["generator"], None, None, None, {}
        if buffers:  # ssl_grvq: the generator phase trains the codebooks (EMA, dead codes) and commits to them
            k_vq, rng = jax.random.split(rng)
            content, commit, perplexity, new = vq_content(generator, batch, k_vq, buffers, training=train)
            extra = {"vq_perplexity": perplexity}
        key = rng if train else None
        terms = generator_terms(generator, models["discriminator"], batch, key, content, commit, step)
        loss, aux = _weighted(terms, batch)
        aux = {**aux, **extra}
        return loss, aux if new is None else {**aux, BUFFERS: new}

    def phases(self, config) -> list[Phase]:
        return [
            Phase("discriminator", self.discriminator_loss),
            Phase("generator", self.generator_loss, takes_step=True),
        ]

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
