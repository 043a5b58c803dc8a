"""``cosyvoice2.yaml`` (HyperPyYAML) written from our llm / flow / hift configs, for a model trained here.

The model sections (``llm``, ``flow``, ``hift`` and the values they reference) are written in the released file's
layout; with the llm, also the frontend entries CosyVoice2's own loader reads (``get_tokenizer``,
``allowed_special``, ``feat_extractor``: the Qwen2 BPE of ``qwen_pretrain_path`` and the mel of ``MelConfig`` at the
vocoder's sample rate).
Each written section is read back with the part's ``config_from_yaml`` and must give the same architecture
(execution switches such as dtype, remat or layer scanning are not part of the file).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sovits2_jax.convert.hyperpyyaml import load_hyperpyyaml
from sovits2_jax.convert.mapping import ConversionError, flatten

# config fields that choose how a model runs here, not what it is; cosyvoice2.yaml has no place for them
RUNTIME_FIELDS = frozenset(
    {"dtype", "param_dtype", "attention_impl", "remat_policy", "scan_layers", "zero_padding_before_lookahead"}
)

_LLM = """llm_input_size: {hidden}
llm_output_size: {hidden}
qwen_pretrain_path: ''

llm: !new:cosyvoice.llm.llm.Qwen2LM
    llm_input_size: !ref <llm_input_size>
    llm_output_size: !ref <llm_output_size>
    speech_token_size: {speech_token_size}
    length_normalized_loss: {length_normalized_loss}
    lsm_weight: {lsm_weight}
    mix_ratio: [{mix0}, {mix1}]
    llm: !new:cosyvoice.llm.llm.Qwen2Encoder
        pretrain_path: !ref <qwen_pretrain_path>
    sampling: !name:cosyvoice.utils.common.{sampling}
        top_p: {top_p}
        top_k: {top_k}
        win_size: {win_size}
        tau_r: {tau_r}
"""

_FLOW = """flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
    input_size: {input_size}
    output_size: {output_size}
    spk_embed_dim: {spk_embed_dim}
    output_type: 'mel'
    vocab_size: {vocab_size}
    input_frame_rate: 25
    only_mask_loss: True
    token_mel_ratio: {token_mel_ratio}
    pre_lookahead_len: {pre_lookahead_len}
    encoder: !new:cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder
        output_size: {enc_output_size}
        attention_heads: {attention_heads}
        linear_units: {linear_units}
        num_blocks: {num_blocks}
        dropout_rate: {dropout_rate}
        positional_dropout_rate: {positional_dropout_rate}
        attention_dropout_rate: {attention_dropout_rate}
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        input_size: {enc_input_size}
        use_cnn_module: False
        macaron_style: False
        static_chunk_size: {enc_chunk}
        key_bias: {key_bias}
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: {output_size}
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: {sigma_min}
                solver: 'euler'
                t_scheduler: {t_scheduler}
                training_cfg_rate: {training_cfg_rate}
                inference_cfg_rate: {inference_cfg_rate}
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
            in_channels: {est_in}
            out_channels: {est_out}
            channels: {channels}
            dropout: 0.0
            attention_head_dim: {attention_head_dim}
            n_blocks: {n_blocks}
            num_mid_blocks: {num_mid_blocks}
            num_heads: {num_heads}
            act_fn: 'gelu'
            static_chunk_size: {est_chunk}
            num_decoding_left_chunks: {num_decoding_left_chunks}
"""

_HIFT = """sample_rate: {sampling_rate}
hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: {in_channels}
    base_channels: {base_channels}
    nb_harmonics: {nb_harmonics}
    sampling_rate: !ref <sample_rate>
    nsf_alpha: {nsf_alpha}
    nsf_sigma: {nsf_sigma}
    nsf_voiced_threshold: {nsf_voiced_threshold}
    upsample_rates: {upsample_rates}
    upsample_kernel_sizes: {upsample_kernel_sizes}
    istft_params:
        n_fft: {n_fft}
        hop_len: {hop_len}
    resblock_kernel_sizes: {resblock_kernel_sizes}
    resblock_dilation_sizes: {resblock_dilation_sizes}
    source_resblock_kernel_sizes: {source_resblock_kernel_sizes}
    source_resblock_dilation_sizes: {source_resblock_dilation_sizes}
    lrelu_slope: {lrelu_slope}
    audio_limit: {audio_limit}
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
        in_channels: {in_channels}
        cond_channels: {f0_cond_channels}
"""


def _value(v) -> str:
    """YAML text of a config value: floats always with a dot (YAML 1.1 reads ``1e-06`` as a string)."""
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, float):
        text = repr(v)
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    return str(v)


_FRONTEND = """get_tokenizer: !name:cosyvoice.tokenizer.tokenizer.get_qwen_tokenizer
    token_path: !ref <qwen_pretrain_path>
    skip_special_tokens: True
allowed_special: 'all'
feat_extractor: !name:matcha.utils.audio.mel_spectrogram
    n_fft: {n_fft}
    num_mels: {num_mels}
    sampling_rate: {sampling_rate}
    hop_size: {hop_size}
    win_size: {win_size}
    fmin: {fmin}
    fmax: {fmax}
    center: False
"""


def frontend_section(sample_rate: int) -> str:
    """The tokenizer and mel extractor entries of the released yaml (the mel: ``MelConfig`` at ``sample_rate``)."""
    from sovits2_jax.audio.mel import MelConfig

    mel = dataclasses.replace(MelConfig(), sampling_rate=sample_rate)
    return _fill(_FRONTEND, **dataclasses.asdict(mel))


def _fill(template: str, **values) -> str:
    return template.format(**{k: _value(v) for k, v in values.items()})


def llm_section(config, sampling=None) -> str:
    from sovits2_jax.models.sampling_config import SamplingConfig

    s = sampling or SamplingConfig()
    name = {"ras": "ras_sampling", "nucleus": "nucleus_sampling", "random": "random_sampling"}[s.method]
    return _fill(
        _LLM,
        hidden=config.backbone.hidden_size,
        speech_token_size=config.speech_token_size,
        length_normalized_loss=config.length_normalized_loss,
        lsm_weight=config.lsm_weight,
        mix0=config.mix_ratio[0],
        mix1=config.mix_ratio[1],
        sampling=name,
        top_p=s.top_p,
        top_k=s.top_k,
        win_size=s.win_size,
        tau_r=s.tau_r,
    )


def flow_section(config) -> str:
    enc, est, cfm = config.encoder, config.estimator, config.cfm
    if enc.pre_lookahead_len != 3 or enc.num_up_blocks != 4 or enc.upsample_stride != config.token_mel_ratio:
        raise ConversionError(
            "flow: cosyvoice's CausalMaskedDiffWithXvec hard-codes 4 up-blocks, lookahead 3 and an upsample stride "
            f"equal to token_mel_ratio (have {enc.num_up_blocks}, {enc.pre_lookahead_len}, {enc.upsample_stride})"
        )
    return _fill(
        _FLOW,
        **{k: getattr(config, k) for k in ("input_size", "output_size", "spk_embed_dim", "vocab_size")},
        token_mel_ratio=config.token_mel_ratio,
        pre_lookahead_len=enc.pre_lookahead_len,
        enc_output_size=enc.output_size,
        enc_input_size=enc.input_size,
        enc_chunk=enc.static_chunk_size,
        **{k: getattr(enc, k) for k in ("attention_heads", "linear_units", "num_blocks", "key_bias")},
        **{k: getattr(enc, k) for k in ("dropout_rate", "positional_dropout_rate", "attention_dropout_rate")},
        **{k: getattr(cfm, k) for k in ("sigma_min", "t_scheduler", "training_cfg_rate", "inference_cfg_rate")},
        est_in=est.in_channels,
        est_out=est.out_channels,
        channels=est.channels,
        est_chunk=est.static_chunk_size,
        **{k: getattr(est, k) for k in ("attention_head_dim", "n_blocks", "num_mid_blocks", "num_heads")},
        num_decoding_left_chunks=est.num_decoding_left_chunks,
    )


def hift_section(config) -> str:
    values = dataclasses.asdict(config)
    if config.f0_num_layers != 5:
        raise ConversionError("hift: cosyvoice's ConvRNNF0Predictor hard-codes 5 conv layers")
    return _fill(_HIFT, **values)


def architecture(d: Any) -> Any:
    """A config dict without its RUNTIME_FIELDS (tuples as lists): what a yaml can say about a model."""
    if isinstance(d, dict):
        out = {k: architecture(v) for k, v in d.items() if k not in RUNTIME_FIELDS}
        if out.get("head_dim", 0) is None and "num_heads" in out:  # a Qwen2 config's implied head size
            out["head_dim"] = out["hidden_size"] // out["num_heads"]
        return out
    return list(d) if isinstance(d, tuple) else d


def cosyvoice2_yaml(llm=None, flow=None, hift=None, sampling=None, *, qwen_pretrain_path: str = "") -> str:
    """The yaml text for the given part configs (any may be None), checked by reading each part back."""
    from sovits2_jax.convert import cosyvoice2_flow, cosyvoice2_hift, cosyvoice2_llm

    header = "# cosyvoice2.yaml written by sovits2_jax.convert.cosyvoice2_yaml from the trained models' configs\n"
    sections = []
    if llm is not None:
        sections.append(llm_section(llm, sampling))
    if flow is not None:
        sections.append(flow_section(flow))
    if hift is not None:
        sections.append(hift_section(hift))
    if llm is not None:
        sections.append(frontend_section(hift.sampling_rate if hift is not None else 24000))
    text = header + "\n".join(sections)
    parsed = load_hyperpyyaml(text, overrides={"qwen_pretrain_path": qwen_pretrain_path} if llm else None)
    readers = {"flow": cosyvoice2_flow.config_from_yaml, "hift": cosyvoice2_hift.config_from_yaml}
    if llm is not None and qwen_pretrain_path:
        readers["llm"] = cosyvoice2_llm.config_from_yaml
    for part, config in (("llm", llm), ("flow", flow), ("hift", hift)):
        if config is None or part not in readers:
            continue
        check_same_architecture(part, readers[part](parsed), config, "the written cosyvoice2.yaml")
    return text


def check_same_architecture(part: str, theirs, ours, where: str) -> None:
    """Raises a ConversionError naming every field where ``where``'s config of ``part`` differs from ours."""
    a = flatten(architecture(theirs.to_dict()))
    b = flatten(architecture(ours.to_dict()))
    diff = [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if diff:
        raise ConversionError(f"{part}: {where} does not describe the exported model ({'; '.join(diff)})")
