"""Key tables for ``sovits2_jax.models.discriminators`` <-> the torch HiFi-GAN / CosyVoice2 / VITS discriminators."""

from __future__ import annotations

from sovits2_jax.convert.mapping import Rule
from sovits2_jax.convert.weight_norm_keys import wn_rules


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def period_rules(ours: str, torch: str, *, style: str | None = None) -> list[Rule]:
    """One ``DiscriminatorP`` (Conv2d stack + conv_post)."""
    return [
        *wn_rules(_join(ours, "convs.{j}"), _join(torch, "convs.{j}"), "conv2d", style=style),
        *wn_rules(_join(ours, "conv_post"), _join(torch, "conv_post"), "conv2d", style=style),
    ]


def scale_rules(ours: str, torch: str, *, style: str | None = None) -> list[Rule]:
    """One ``DiscriminatorS`` (grouped Conv1d stack + conv_post)."""
    return [
        *wn_rules(_join(ours, "convs.{j}"), _join(torch, "convs.{j}"), "conv1d", style=style),
        *wn_rules(_join(ours, "conv_post"), _join(torch, "conv_post"), "conv1d", style=style),
    ]


def mpd_rules(
    ours: str = "", torch: str = "", *, num_periods: int = 5, with_scale: bool = False, style: str | None = None
) -> list[Rule]:
    """``MultiPeriodDiscriminator``; with ``with_scale`` index 0 is the VITS-style scale discriminator."""
    rules = []
    first = 0
    if with_scale:
        rules += scale_rules(_join(ours, "discriminators.0"), _join(torch, "discriminators.0"), style=style)
        first = 1
    for i in range(first, first + num_periods):
        rules += period_rules(_join(ours, f"discriminators.{i}"), _join(torch, f"discriminators.{i}"), style=style)
    return rules


def mrsd_rules(ours: str = "", torch: str = "", *, style: str | None = None) -> list[Rule]:
    """``MultiResSpecDiscriminator`` (each ``SpecDiscriminator``: Conv2d stack ``discriminators`` + ``out``)."""
    d_ours, d_torch = _join(ours, "discriminators.{i}"), _join(torch, "discriminators.{i}")
    return [
        *wn_rules(f"{d_ours}.discriminators.{{j}}", f"{d_torch}.discriminators.{{j}}", "conv2d", style=style),
        *wn_rules(f"{d_ours}.out", f"{d_torch}.out", "conv2d", style=style),
    ]


def cosyvoice2_discriminator_rules(ours: str = "", torch: str = "", *, style: str | None = None) -> list[Rule]:
    """CosyVoice2's ``MultipleDiscriminator`` (``mpd`` + ``mrd``)."""
    return [
        *mpd_rules(_join(ours, "mpd"), _join(torch, "mpd"), style=style),
        *mrsd_rules(_join(ours, "mrd"), _join(torch, "mrd"), style=style),
    ]
