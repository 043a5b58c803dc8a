"""optax optimizers from a config.train.optimizer section: Adam / AdamW, CosyVoice's schedules, clipping, groups."""

from __future__ import annotations

import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from sovits2_jax.validation import ConfigError, check

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant_warmup", "warmup_lr", "cosine")
FROZEN = "frozen"  # the param-group label that is never updated


def validate(section, prefix: str = "config.train.optimizer") -> None:
    check(section.name in OPTIMIZERS, f"{prefix}.name={section.name!r} not in {OPTIMIZERS}")
    check(section.schedule in SCHEDULES, f"{prefix}.schedule={section.schedule!r} not in {SCHEDULES}")
    check(section.lr > 0, f"{prefix}.lr={section.lr} must be positive")
    check(section.warmup_steps >= 0, f"{prefix}.warmup_steps={section.warmup_steps} must be >= 0")
    check(section.grad_clip >= 0, f"{prefix}.grad_clip={section.grad_clip} must be >= 0 (0 = off)")
    check(0.0 <= section.end_lr_fraction <= 1.0, f"{prefix}.end_lr_fraction={section.end_lr_fraction} not in [0, 1]")
    for pattern in section.get("freeze", ()):
        try:
            re.compile(pattern)
        except (re.error, TypeError) as e:
            raise ConfigError(f"{prefix}.freeze: {pattern!r} is not a regular expression ({e})") from None


def path_name(path) -> str:
    """A parameter's tree path as "/"-joined keys (``embed/embedding``)."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def freeze_labels(section, param_labels: Callable | None, params, prefix: str = "config.train.optimizer"):
    """``param_labels`` with every parameter matching ``section.freeze`` relabelled "frozen" (labels "default"
    without ``param_labels``); ``param_labels`` itself when nothing is frozen. A pattern matching nothing is an
    error naming a few parameter paths."""
    patterns = [re.compile(p) for p in section.get("freeze", ())]
    if not patterns:
        return param_labels
    base = param_labels(params) if param_labels else jax.tree.map(lambda _: "default", params)
    paths = [path_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    for pattern in patterns:
        if not any(pattern.search(p) for p in paths):
            examples = ", ".join(paths[:3])
            raise ConfigError(f"{prefix}.freeze: {pattern.pattern!r} matches no parameter (e.g. {examples})")
    labels = jax.tree_util.tree_map_with_path(
        lambda path, label: FROZEN if any(p.search(path_name(path)) for p in patterns) else label, base
    )
    return lambda _: labels


def warmup_lr(lr: float, warmup_steps: int) -> optax.Schedule:
    """ESPnet / CosyVoice ``WarmupLR``: ``lr * warmup^0.5 * min(step^-0.5, step * warmup^-1.5)`` (warmup 0:
    ``lr * step^-0.5``), with step = update count + 1 (torch's scheduler has stepped once before update 1)."""

    def schedule(count):
        step = jnp.asarray(count, jnp.float32) + 1.0
        if warmup_steps == 0:
            return lr * step**-0.5
        return lr * warmup_steps**0.5 * jnp.minimum(step**-0.5, step * warmup_steps**-1.5)

    return schedule


def constant_warmup(lr: float, warmup_steps: int) -> optax.Schedule:
    """Linear ramp reaching lr at update ``warmup_steps``, then constant (warm-up 0: CosyVoice's ConstantLR)."""
    if warmup_steps <= 0:
        return optax.constant_schedule(lr)

    def schedule(count):
        return lr * jnp.minimum(1.0, (jnp.asarray(count, jnp.float32) + 1.0) / warmup_steps)

    return schedule


def make_schedule(section, num_steps: int) -> optax.Schedule:
    """The learning-rate schedule of an optimizer section (update count -> lr)."""
    if section.schedule == "warmup_lr":
        return warmup_lr(section.lr, section.warmup_steps)
    if section.schedule == "cosine":
        decay = section.decay_steps or num_steps
        return optax.warmup_cosine_decay_schedule(
            0.0, section.lr, section.warmup_steps, max(decay, section.warmup_steps + 1),
            end_value=section.lr * section.end_lr_fraction,
        )  # fmt: skip
    return constant_warmup(section.lr, section.warmup_steps)


def _base(section, schedule: optax.Schedule) -> optax.GradientTransformation:
    if section.name == "adamw":
        return optax.adamw(schedule, section.b1, section.b2, section.eps, weight_decay=section.weight_decay)
    return optax.adam(schedule, section.b1, section.b2, section.eps)


def _scaled(schedule: optax.Schedule, factor: float) -> optax.Schedule:
    return schedule if factor == 1.0 else (lambda count: schedule(count) * factor)


def make_optimizer(
    section, num_steps: int, param_labels: Callable | None = None, params=None
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(transformation, schedule): optional global-norm clip, then Adam/AdamW on the schedule; with
    ``param_labels`` a ``multi_transform`` where label "frozen" never moves and others scale the lr."""
    validate(section)
    schedule = make_schedule(section, num_steps)
    param_labels = freeze_labels(section, param_labels, params)
    if param_labels is None:
        tx = _base(section, schedule)
    else:
        labels = param_labels(params)
        names = sorted(set(jax.tree.leaves(labels)))
        scale = dict(section.lr_scale)
        unknown = set(scale) - set(names)
        if unknown:
            raise ConfigError(f"config.train.optimizer.lr_scale has labels {sorted(unknown)} not in {names}")
        transforms = {
            n: optax.set_to_zero() if n == FROZEN else _base(section, _scaled(schedule, float(scale.get(n, 1.0))))
            for n in names
        }
        tx = optax.multi_transform(transforms, labels)
    if section.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(section.grad_clip), tx)
        if param_labels is not None and FROZEN in names:
            # frozen parameters have no gradient in torch: keep them out of the clipping norm
            mask = {n: optax.set_to_zero() if n == FROZEN else optax.identity() for n in names}
            tx = optax.chain(optax.multi_transform(mask, labels), tx)
    return tx, schedule
