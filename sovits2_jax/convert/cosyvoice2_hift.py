"""CosyVoice2 ``hift.pt`` (HiFTGenerator state_dict) <-> our HiFT parameters; a part of the ``cosyvoice2`` format.

Part interface: ``config_from_yaml``, ``default_config``, ``build_model``, ``torch_to_params``,
``params_to_torch``. Reading accepts weight norm as ``parametrizations.weight.original0/1`` or
``weight_g/weight_v``, a ``generator.`` prefix (HiFiGan training checkpoints) and ``epoch``/``step`` entries;
``discriminator.*`` weights, when present, are converted too and kept under the params' ``"discriminator"`` key
(the rest of the tree is exactly ``build_model``'s parameters). Writing uses the key style the current
reference writes (parametrizations; matcha's MPD: weight_g/weight_v) unless asked otherwise, and HiFiGan's
``generator.``/``discriminator.`` layout only when discriminator params are present.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from flax import nnx

from sovits2_jax.convert.discriminator_keys import cosyvoice2_discriminator_rules, mpd_rules, mrsd_rules
from sovits2_jax.convert.mapping import Rule, expected_shapes, flatten, ours_to_torch, torch_to_ours, unflatten
from sovits2_jax.convert.weight_norm_keys import LEGACY, PARAMETRIZATIONS, conv_rules, wn_rules
from sovits2_jax.models.discriminators import MultipleDiscriminator
from sovits2_jax.models.hift import HiFTConfig, HiFTGenerator

IGNORE = (r"^epoch$", r"^step$")
DISCRIMINATOR_KEY = "discriminator"
GENERATOR_PREFIX = "generator."
DISCRIMINATOR_PREFIX = "discriminator."


def default_config() -> HiFTConfig:
    return HiFTConfig()


def config_from_yaml(cfg: Mapping[str, Any]) -> HiFTConfig:
    """HiFTConfig from the parsed cosyvoice2.yaml (the whole file as plain dicts, or just its ``hift`` entry)."""
    hift = cfg.get("hift", cfg)
    if not isinstance(hift, Mapping):
        raise ValueError("cosyvoice2.yaml: 'hift' must be a HiFTGenerator mapping")
    cls = hift.get("__class__", "")
    if cls and not cls.endswith("HiFTGenerator"):
        raise ValueError(f"cosyvoice2.yaml: hift is a {cls}, expected cosyvoice.hifigan.generator.HiFTGenerator")
    d = HiFTConfig()
    istft = hift.get("istft_params", {}) or {}
    f0 = hift.get("f0_predictor", {}) or {}
    if f0 and int(f0.get("num_class", 1)) != 1:
        raise ValueError("cosyvoice2.yaml: hift.f0_predictor.num_class must be 1")
    if f0 and int(f0.get("in_channels", hift.get("in_channels", d.in_channels))) != int(
        hift.get("in_channels", d.in_channels)
    ):
        raise ValueError("cosyvoice2.yaml: hift.f0_predictor.in_channels must equal hift.in_channels")
    values = {
        "in_channels": hift.get("in_channels", d.in_channels),
        "base_channels": hift.get("base_channels", d.base_channels),
        "nb_harmonics": hift.get("nb_harmonics", d.nb_harmonics),
        "sampling_rate": hift.get("sampling_rate", cfg.get("sample_rate", d.sampling_rate)),
        "nsf_alpha": hift.get("nsf_alpha", d.nsf_alpha),
        "nsf_sigma": hift.get("nsf_sigma", d.nsf_sigma),
        "nsf_voiced_threshold": hift.get("nsf_voiced_threshold", d.nsf_voiced_threshold),
        "upsample_rates": hift.get("upsample_rates", d.upsample_rates),
        "upsample_kernel_sizes": hift.get("upsample_kernel_sizes", d.upsample_kernel_sizes),
        "n_fft": istft.get("n_fft", d.n_fft),
        "hop_len": istft.get("hop_len", d.hop_len),
        "resblock_kernel_sizes": hift.get("resblock_kernel_sizes", d.resblock_kernel_sizes),
        "resblock_dilation_sizes": hift.get("resblock_dilation_sizes", d.resblock_dilation_sizes),
        "source_resblock_kernel_sizes": hift.get("source_resblock_kernel_sizes", d.source_resblock_kernel_sizes),
        "source_resblock_dilation_sizes": hift.get("source_resblock_dilation_sizes", d.source_resblock_dilation_sizes),
        "lrelu_slope": hift.get("lrelu_slope", d.lrelu_slope),
        "audio_limit": hift.get("audio_limit", d.audio_limit),
        "f0_cond_channels": f0.get("cond_channels", d.f0_cond_channels),
    }
    ints = ("in_channels", "base_channels", "nb_harmonics", "sampling_rate", "n_fft", "hop_len", "f0_cond_channels")
    floats = ("nsf_alpha", "nsf_sigma", "nsf_voiced_threshold", "lrelu_slope", "audio_limit")
    for k in ints:
        values[k] = int(values[k])
    for k in floats:
        values[k] = float(values[k])
    return HiFTConfig.from_dict(values)


def build_model(config: HiFTConfig, rngs: nnx.Rngs) -> HiFTGenerator:
    return HiFTGenerator(config, rngs=rngs)


def _resblock_rules(ours: str, torch: str, style: str | None) -> list[Rule]:
    return [
        *wn_rules(f"{ours}.convs1.{{j}}", f"{torch}.convs1.{{j}}", "conv1d", style=style),
        *wn_rules(f"{ours}.convs2.{{j}}", f"{torch}.convs2.{{j}}", "conv1d", style=style),
        Rule(f"{ours}.activations1.{{j}}.alpha", f"{torch}.activations1.{{j}}.alpha"),
        Rule(f"{ours}.activations2.{{j}}.alpha", f"{torch}.activations2.{{j}}.alpha"),
    ]


def generator_rules(config: HiFTConfig, *, style: str | None = None) -> list[Rule]:
    """Our HiFTGenerator paths <-> HiFTGenerator state_dict keys (both weight-norm styles when style is None)."""
    rules: list[Rule] = []
    for i in range(config.f0_num_layers):  # condnet is a Sequential with an ELU after every conv
        rules += wn_rules(f"f0_predictor.convs.{i}", f"f0_predictor.condnet.{2 * i}", "conv1d", style=style)
    rules += [
        Rule("f0_predictor.classifier.kernel", "f0_predictor.classifier.weight", "linear"),
        Rule("f0_predictor.classifier.bias", "f0_predictor.classifier.bias"),
        Rule("source.merge.kernel", "m_source.l_linear.weight", "linear"),
        Rule("source.merge.bias", "m_source.l_linear.bias"),
        *wn_rules("conv_pre", "conv_pre", "conv1d", style=style),
        *wn_rules("ups.{i}", "ups.{i}", "conv_transpose1d", style=style),
        *conv_rules("source_downs.{i}", "source_downs.{i}", "conv1d"),
        *_resblock_rules("source_resblocks.{i}", "source_resblocks.{i}", style),
        *_resblock_rules("resblocks.{i}", "resblocks.{i}", style),
        *wn_rules("conv_post", "conv_post", "conv1d", style=style),
    ]
    return rules


def _generator_shapes(config: HiFTConfig) -> dict[str, tuple[int, ...]]:
    return expected_shapes(lambda: HiFTGenerator(config, rngs=nnx.Rngs(0)))


def _discriminator_shapes() -> dict[str, tuple[int, ...]]:
    return expected_shapes(lambda: MultipleDiscriminator(rngs=nnx.Rngs(0)))


def torch_to_params(items: Iterable[tuple[str, np.ndarray]], config: HiFTConfig, *, source: str = "hift.pt") -> dict:
    """Nested params of ``build_model(config)``, plus ``"discriminator"`` when the checkpoint carries one."""
    ignored = [re.compile(p) for p in IGNORE]
    gen, disc = [], []
    for key, value in items:
        if any(p.search(key) for p in ignored):
            continue
        if key.startswith(DISCRIMINATOR_PREFIX):
            disc.append((key[len(DISCRIMINATOR_PREFIX) :], value))
        elif key.startswith(GENERATOR_PREFIX):
            gen.append((key[len(GENERATOR_PREFIX) :], value))
        else:
            gen.append((key, value))
    nested = unflatten(torch_to_ours(gen, generator_rules(config), _generator_shapes(config), source=source))
    if disc:
        flat = torch_to_ours(
            disc, cosyvoice2_discriminator_rules(), _discriminator_shapes(), source=f"{source} (discriminator)"
        )
        nested[DISCRIMINATOR_KEY] = unflatten(flat)
    return nested


def discriminator_rules(style: str | None = None) -> list[Rule]:
    """CosyVoice2's discriminator keys; style None = as the reference writes them (matcha's MPD uses the legacy
    ``weight_g``/``weight_v`` hook, cosyvoice's spectrogram discriminator the parametrizations)."""
    if style is None:
        return [*mpd_rules("mpd", "mpd", style=LEGACY), *mrsd_rules("mrd", "mrd", style=PARAMETRIZATIONS)]
    return cosyvoice2_discriminator_rules(style=style)


def params_to_torch(
    params_nested: Mapping, config: HiFTConfig, *, style: str | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """(torch key, array) pairs: a hift.pt state_dict, or HiFiGan's ``generator.*`` + ``discriminator.*``.

    ``style`` None writes weight norm the way the current reference does; "parametrizations" or "legacy" forces one.
    """
    if style not in (None, PARAMETRIZATIONS, LEGACY):
        raise ValueError(f"unknown weight-norm key style {style!r}")
    params_nested = dict(params_nested)
    disc = params_nested.pop(DISCRIMINATOR_KEY, None)
    flat = {k: np.asarray(v) for k, v in flatten(params_nested).items()}
    prefix = GENERATOR_PREFIX if disc is not None else ""
    for key, value in ours_to_torch(flat, generator_rules(config, style=style or PARAMETRIZATIONS)):
        yield prefix + key, value
    if disc is not None:
        disc_flat = {k: np.asarray(v) for k, v in flatten(disc).items()}
        for key, value in ours_to_torch(disc_flat, discriminator_rules(style)):
            yield DISCRIMINATOR_PREFIX + key, value


def detect_weight_norm_style(keys: Iterable[str]) -> str:
    """The weight-norm key style a state_dict uses (parametrizations when it has none)."""
    return LEGACY if any(k.endswith((".weight_g", ".weight_v")) for k in keys) else PARAMETRIZATIONS
