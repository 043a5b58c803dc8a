"""Parity components ``hift.decode`` and ``hift`` against cosyvoice-minicpmo's HiFTGenerator.

- ``hift.decode``: inputs ``x`` = mel [B, 80, T], ``s`` = source [B, 1, T*480]; output ``wav`` = ``decode(x, s)``.
- ``hift``: inputs ``x`` = mel and ``f0`` = a frame-rate F0 contour [B, T] (Hz); outputs the predicted
  ``f0_pred`` = ``f0_predictor(x)``, the excitation ``source`` made from the given F0 with noise off (zero initial
  phases and noise in both implementations), and ``wav`` decoded from that source. The F0 is an input because the
  source integrates phase over the whole utterance: a 1e-6 relative F0 difference becomes a visible phase error
  after a second of audio, so chaining the predicted F0 would compare rounding, not the model.

Without ``src`` a random-init reference is built at the real CosyVoice2 size (or ``size="tiny"``), with biases,
weight-norm gains and Snake alphas perturbed so a converter that drops or swaps them cannot pass. With ``src`` (a
CosyVoice2 model directory or a hift.pt) the real weights are used.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np
from flax import nnx

from sovits2_jax.configs import hift as hift_configs
from sovits2_jax.convert import cosyvoice2_hift
from sovits2_jax.convert.mapping import flatten
from sovits2_jax.convert.params import params_from_flat
from sovits2_jax.models.hift import HiFTConfig, HiFTGenerator
from sovits2_jax.parity.compare import MODEL_ATOL, ParityCase
from sovits2_jax.parity.torch_refs import config_kwargs, import_cosyvoice, to_numpy, to_torch, torch_device

# the parity components this reference builds (found by sovits2_jax.parity.registry)
COMPONENTS = ("hift", "hift.decode")

TINY = hift_configs.named_config("tiny")


_HIFT_YAML = """
sample_rate: 24000
hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: 80
    base_channels: {base_channels}
    nb_harmonics: 8
    sampling_rate: !ref <sample_rate>
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [8, 5, 3]
    upsample_kernel_sizes: [16, 11, 7]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3, 7, 11]
    resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    source_resblock_kernel_sizes: [7, 7, 11]
    source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    lrelu_slope: 0.1
    audio_limit: 0.99
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: {cond_channels}
"""


def hift_yaml(base_channels: int = 512, cond_channels: int = 512) -> str:
    """The ``hift`` section of the released cosyvoice2.yaml (HyperPyYAML), optionally with other widths."""
    return _HIFT_YAML.format(base_channels=base_channels, cond_channels=cond_channels)


def reference_config(size: str) -> HiFTConfig:
    if size == "real":
        return cosyvoice2_hift.default_config()
    if size == "tiny":
        return TINY
    raise ValueError(f"unknown hift parity size {size!r} (expected 'real' or 'tiny')")


def build_reference(config: HiFTConfig, seed: int = 0, *, perturb: bool = True):
    """A torch HiFTGenerator (+ ConvRNNF0Predictor) with ``config``'s sizes, eval mode."""
    import torch

    import_cosyvoice()
    from cosyvoice.hifigan.f0_predictor import ConvRNNF0Predictor
    from cosyvoice.hifigan.generator import HiFTGenerator as TorchHiFT

    c = config
    if c.f0_num_layers != 5:
        raise ValueError("the torch ConvRNNF0Predictor hard-codes 5 conv layers")
    torch.manual_seed(seed)
    model = TorchHiFT(
        **config_kwargs(
            c,
            "in_channels base_channels nb_harmonics sampling_rate nsf_alpha nsf_sigma nsf_voiced_threshold "
            "upsample_rates upsample_kernel_sizes resblock_kernel_sizes resblock_dilation_sizes "
            "source_resblock_kernel_sizes source_resblock_dilation_sizes lrelu_slope audio_limit",
        ),
        istft_params={"n_fft": c.n_fft, "hop_len": c.hop_len},
        f0_predictor=ConvRNNF0Predictor(num_class=1, in_channels=c.in_channels, cond_channels=c.f0_cond_channels),
    )
    if perturb:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
                elif name.endswith(("original0", "weight_g")):
                    p.mul_(torch.rand(p.shape, generator=gen) + 0.5)
                elif name.endswith("alpha"):
                    p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            # Predicted F0 in the voiced range (about 200 +- 20 Hz) so every path is exercised.
            model.f0_predictor.classifier.bias.fill_(200.0)
            model.f0_predictor.classifier.weight.mul_(300.0)
    return model.eval()


def load_reference_weights(src: str | Path) -> tuple[HiFTConfig, list]:
    """(config, hift.pt items) from a CosyVoice2 model directory or a hift.pt file."""
    from sovits2_jax.convert.torch_io import iter_torch_file

    src = Path(src)
    pt = src / "hift.pt" if src.is_dir() else src
    config = cosyvoice2_hift.default_config()
    yaml_path = pt.parent / "cosyvoice2.yaml"
    if yaml_path.exists():
        from sovits2_jax.convert.hyperpyyaml import load_hyperpyyaml

        config = cosyvoice2_hift.config_from_yaml(load_hyperpyyaml(yaml_path))
    return config, list(iter_torch_file(pt))


def convert(items, config: HiFTConfig):
    """(graphdef, params) of our generator from torch (key, array) items."""
    nested = cosyvoice2_hift.torch_to_params(items, config)
    nested.pop(cosyvoice2_hift.DISCRIMINATOR_KEY, None)
    return params_from_flat(lambda: HiFTGenerator(config, rngs=nnx.Rngs(0)), flatten(nested))


@contextlib.contextmanager
def torch_noise_off():
    """Zero the reference's random draws (SineGen2 initial phases and noise), like our ``rng=None``."""
    import torch

    rand, randn_like = torch.rand, torch.randn_like
    torch.rand = lambda *a, **k: torch.zeros(*a, **{k_: v for k_, v in k.items() if k_ != "generator"})
    torch.randn_like = lambda t, **k: torch.zeros_like(t)
    try:
        yield
    finally:
        torch.rand, torch.randn_like = rand, randn_like


def torch_source(model, f0):
    """The reference's excitation [B, 1, L] from a frame-rate F0 [B, T] (noise off)."""
    import torch

    with torch.no_grad(), torch_noise_off():
        s = model.f0_upsamp(f0[:, None]).transpose(1, 2)
        s, _, _ = model.m_source(s)
    return s.transpose(1, 2)


def random_inputs(config: HiFTConfig, frames: int, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mel = (rng.standard_normal((batch, config.in_channels, frames)) - 4.0).astype(np.float32)
    t = np.linspace(0.0, 1.0, frames)
    f0 = 180.0 + 60.0 * np.sin(2 * np.pi * 1.5 * t)[None] + 5.0 * rng.standard_normal((batch, frames))
    f0[:, : frames // 8] = 0.0  # an unvoiced stretch
    return {"x": mel, "f0": f0.astype(np.float32)}


def build(
    src: str | None,
    *,
    component: str = "hift.decode",
    device: str = "cpu",
    dtype: str = "float32",
    seed: int = 0,
    size: str = "real",
    frames: int = 48,
    batch: int = 2,
) -> ParityCase:
    import jax
    import jax.numpy as jnp
    import torch

    if component not in ("hift", "hift.decode"):
        raise ValueError(f"parity_hift: unknown component {component!r}")
    if src is None:
        config = reference_config(size)
        ref = build_reference(config, seed)
        items = [(k, to_numpy(v)) for k, v in ref.state_dict().items()]
    else:
        config, items = load_reference_weights(src)
        ref = build_reference(config, seed, perturb=False)
        # Normalise key style / prefix (legacy weight_g/v, HiFiGan's generator.*) to what the reference loads.
        nested = cosyvoice2_hift.torch_to_params(items, config, source=str(src))
        nested.pop(cosyvoice2_hift.DISCRIMINATOR_KEY, None)
        state = {k: torch.from_numpy(np.array(v)) for k, v in cosyvoice2_hift.params_to_torch(nested, config)}
        ref.load_state_dict(state)
    tdev = torch_device(device)
    ref = ref.to(tdev)
    jax_device = jax.devices("gpu" if device == "gpu" else "cpu")[0]
    ours_config = dataclasses.replace(config, dtype=dtype)
    with jax.default_device(jax_device):
        graphdef, params = convert(items, ours_config)
    inputs = random_inputs(config, frames, batch, seed)
    info = {"size": size if src is None else "checkpoint", "frames": frames, "batch": batch}

    @jax.jit
    def jax_decode(p, mel, s):
        return nnx.merge(graphdef, p).decode(mel, s)

    @jax.jit
    def jax_pieces(p, mel, f0):
        model = nnx.merge(graphdef, p)
        source = model.make_source(f0)
        return model.predict_f0(mel), source, model.decode(mel, source)

    if component == "hift.decode":
        src_in = torch_source(ref.cpu(), torch.from_numpy(inputs["f0"])).numpy()
        ref = ref.to(tdev)
        inputs = {"x": inputs["x"], "s": src_in.astype(np.float32)}

        def run_torch(inp):
            with torch.no_grad():
                wav = ref.decode(x=to_torch(inp["x"], tdev), s=to_torch(inp["s"], tdev))
            return {"wav": to_numpy(wav)}

        def run_jax(inp):
            with jax.default_device(jax_device):
                mel = jnp.asarray(inp["x"].transpose(0, 2, 1))
                return {"wav": np.asarray(jax_decode(params, mel, jnp.asarray(inp["s"][:, 0])), np.float32)}

        return ParityCase(inputs, run_torch, run_jax, atol=MODEL_ATOL, info=info)

    def run_torch(inp):
        x = to_torch(inp["x"], tdev)
        with torch.no_grad():
            f0_pred = ref.f0_predictor(x)
            s = torch_source(ref, to_torch(inp["f0"], tdev))
            wav = ref.decode(x=x, s=s)
        return {"f0_pred": to_numpy(f0_pred), "source": to_numpy(s), "wav": to_numpy(wav)}

    def run_jax(inp):
        with jax.default_device(jax_device):
            mel = jnp.asarray(inp["x"].transpose(0, 2, 1))
            f0_pred, source, wav = jax_pieces(params, mel, jnp.asarray(inp["f0"]))
        return {
            "f0_pred": np.asarray(f0_pred, np.float32),
            "source": np.asarray(source, np.float32)[:, None],
            "wav": np.asarray(wav, np.float32),
        }

    # F0 is in Hz (hundreds): compared relative; waveforms and sources are within [-1, 1].
    return ParityCase(inputs, run_torch, run_jax, atol=MODEL_ATOL, rtol=1e-5, info=info)
