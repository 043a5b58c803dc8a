"""The ``flow`` family: CosyVoice2's ``CausalMaskedDiffWithXvec`` trained with its conditional flow-matching loss.

As the reference's ``forward``: the x-vector, the encoded speech tokens and a prompt prefix of the target mel
condition the estimator; streaming (chunk) attention is drawn with p 0.5 per batch; each row drops its
conditions with p ``training_cfg_rate`` (0.2) for classifier-free guidance; masked MSE against the flow's
velocity at a cosine-warped t. The prompt-prefix lengths come from the data task (``cond_len``, drawn on the host
like the reference) or, without them, from the step's key; every other draw is from the key the trainer hands
the step, so a step is a pure function of (params, batch, key).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.models.flow import config as flow_config
from sovits2_jax.models.flow.config import FlowConfig
from sovits2_jax.models.flow.flow import CausalMaskedDiffWithXvec, draw_training_randomness
from sovits2_jax.train import family as family_lib
from sovits2_jax.train.family import Family, Phase, Player
from sovits2_jax.validation import ConfigError


def training_draws(rng: jax.Array, batch: dict, cfg: FlowConfig) -> dict[str, jax.Array]:
    """streaming, cond_lengths, t, noise and keep_cond of one step (``cond_len`` of the batch when it has one)."""
    draws = draw_training_randomness(jax.random.fold_in(rng, 1), batch, cfg)
    if "cond_len" in batch:
        draws["cond_lengths"] = jnp.asarray(batch["cond_len"], jnp.int32)
    return draws


def cfm_loss(models: dict, batch: dict, rng: jax.Array, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The flow-matching loss of ``models["model"]`` (encoder dropout only when ``train``); weight = mel frames.
    Rows with ``valid`` False score nothing; a batch without a valid row has loss 0 and weight 0."""
    model = models["model"]
    lengths = jnp.where(jnp.asarray(batch.get("valid", True), bool), batch["speech_token_len"], 0)
    frames = model.cfg.token_mel_ratio * jnp.sum(lengths).astype(jnp.float32)
    # the loss is a mean over valid frames: give an empty batch one frame so neither it nor its gradient is 0/0
    lengths = jnp.where(frames > 0, lengths, lengths.at[0].set(1))
    batch = {**batch, "speech_token_len": lengths}
    draws = training_draws(rng, batch, model.cfg)
    dropout = jax.random.fold_in(rng, 2) if train else None
    loss = jnp.where(frames > 0, model.loss_with_draws(batch, dropout_key=dropout, **draws), 0.0)
    return loss, dict(weight=frames, streaming=draws["streaming"].astype(jnp.float32))


def model_config(config) -> FlowConfig:
    """The FlowConfig of ``config.model`` (the flow model computes in float32 only)."""
    if family_lib.compute_dtype(config) != "float32":
        raise ConfigError(f"family flow computes in float32; config.train.dtype={family_lib.compute_dtype(config)!r}")
    return FlowConfig.from_section(config.model, "config.model")


@dataclasses.dataclass(frozen=True)
class FlowFamily(Family):
    name: str = "flow"
    init_part = "flow"
    throughput_unit = "frames"  # mel / spectrogram frames

    def validate(self, config) -> None:
        flow_config.validate(config.model, prefix="config.model")

    def players(self, config) -> list[Player]:
        cfg = model_config(config)
        data = config.data
        for key, want in (("token_mel_ratio", cfg.token_mel_ratio), ("embedding_dim", cfg.spk_embed_dim)):
            if data[key] != want:
                raise ConfigError(f"config.data.{key}={data[key]} must equal the flow model's {want}")
        if data.online_tokenization:
            raise ConfigError("family flow trains on the Parquet's speech tokens: config.data.online_tokenization")
        make = lambda: CausalMaskedDiffWithXvec(cfg, rngs=nnx.Rngs(config.seed))
        return [Player("model", make, config.train.optimizer)]

    def phases(self, config) -> list[Phase]:
        return [Phase("model", cfm_loss)]

    def eval_loss(self, config):
        return cfm_loss

    def tokens(self, batch):
        return jnp.sum(batch["speech_feat_len"])

    def init_from(self, config, path: str, params: dict) -> dict:
        """The flow from a CosyVoice2 model directory (flow.pt), a trainer checkpoint or an Orbax dir of ours."""
        from sovits2_jax.convert import parts

        loaded, _ = parts.load(path, "flow")
        return {**params, "model": loaded}

    def export_meta(self, config) -> dict:
        from sovits2_jax.convert import parts

        return parts.export_meta("flow", model_config(config), "model")


FAMILY = FlowFamily()
