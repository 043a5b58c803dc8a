"""Pure VITS training steps (GPT-SoVITS ``s2_train``: discriminator turn, then generator turn on one batch).

``make_vits_steps`` returns jit-able functions of explicit state ``VitsState`` (generator / discriminator params
and AdamW states), a batch ``{"codes", "spec", "spec_lengths", "wav", "text", "text_lengths"}`` (+ optional
``"refer"``, ``"refer_lengths"`` for same-speaker zero-shot pairs) and an rng key. With no discriminator the
generator trains on the reconstruction terms alone (mel L1 + KL), e.g. as a warm-up.
"""

from __future__ import annotations

import dataclasses

import jax
import optax
from flax import nnx

from sovits2_jax.models.vits2 import losses


@dataclasses.dataclass(frozen=True)
class VitsState:
    g_params: nnx.State
    d_params: nnx.State | None
    g_opt: optax.OptState
    d_opt: optax.OptState | None


jax.tree_util.register_dataclass(VitsState, data_fields=["g_params", "d_params", "g_opt", "d_opt"], meta_fields=[])


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


def gpt_sovits_optimizer(
    params,
    lr: float = 1e-4,
    betas=(0.8, 0.99),
    eps: float = 1e-9,
    lr_decay: float = 0.999875,
    steps_per_epoch: int = 1000,
    text_low_lr_rate: float = 0.4,
    weight_decay: float = 0.01,
) -> optax.GradientTransformation:
    """GPT-SoVITS's s2 generator optimizer: AdamW(betas (0.8, 0.99), eps 1e-9, torch's default decay 0.01) with
    per-epoch exponential lr decay; text embedding / text encoder / MRTE at ``text_low_lr_rate`` x lr; the
    quantizer and its input projection frozen (no update, no weight decay)."""

    def adamw(scale):
        sched = optax.exponential_decay(lr * scale, steps_per_epoch, lr_decay, staircase=True)
        return optax.adamw(sched, b1=betas[0], b2=betas[1], eps=eps, weight_decay=weight_decay)

    return optax.multi_transform(
        {"base": adamw(1.0), "text": adamw(text_low_lr_rate), "frozen": optax.set_to_zero()}, param_labels(params)
    )


def make_vits_steps(
    cfg,
    g_graphdef: nnx.GraphDef,
    d_graphdef: nnx.GraphDef | None,
    g_tx: optax.GradientTransformation,
    d_tx: optax.GradientTransformation | None = None,
):
    """(init_state, train_step) closures; ``train_step(state, batch, key) -> (state, metrics)`` is pure."""

    def init_state(g_params, d_params=None) -> VitsState:
        d_opt = d_tx.init(d_params) if d_params is not None and d_tx is not None else None
        return VitsState(g_params, d_params, g_tx.init(g_params), d_opt)

    def generate(g_params, batch, key):
        model = nnx.merge(g_graphdef, g_params)
        out = model(
            batch["codes"],
            batch["spec"],
            batch["spec_lengths"],
            batch["text"],
            batch["text_lengths"],
            key,
            refer=batch.get("refer"),
            refer_lengths=batch.get("refer_lengths"),
        )
        y, y_mel = losses.segment_targets(cfg, batch["wav"], batch["spec"], out["ids_slice"])
        return out, y, y_mel

    def train_step(state: VitsState, batch: dict, key: jax.Array):
        metrics = {}
        d_params, d_opt = state.d_params, state.d_opt
        if d_graphdef is not None:
            out, y, _ = generate(state.g_params, batch, key)
            y_hat = jax.lax.stop_gradient(out["y_hat"])

            def d_loss(p):
                terms = losses.discriminator_losses(nnx.merge(d_graphdef, p)(y, y_hat))
                return terms["loss"], terms

            (_, d_terms), d_grads = jax.value_and_grad(d_loss, has_aux=True)(d_params)
            updates, d_opt = d_tx.update(d_grads, d_opt, d_params)
            d_params = optax.apply_updates(d_params, updates)
            metrics.update(d_terms)

        def g_loss(p):
            out, y, y_mel = generate(p, batch, key)
            disc_out = None
            if d_graphdef is not None:
                disc_out = nnx.merge(d_graphdef, d_params)(y, out["y_hat"])
            terms = losses.generator_losses(cfg, out, y_mel, disc_out)
            return terms["loss"], terms

        (_, g_terms), g_grads = jax.value_and_grad(g_loss, has_aux=True)(state.g_params)
        updates, g_opt = g_tx.update(g_grads, state.g_opt, state.g_params)
        g_params = optax.apply_updates(state.g_params, updates)
        metrics.update({f"g/{k}": v for k, v in g_terms.items()})
        metrics["g/grad_norm"] = optax.global_norm(g_grads)
        return VitsState(g_params, d_params, g_opt, d_opt), metrics

    return init_state, train_step
