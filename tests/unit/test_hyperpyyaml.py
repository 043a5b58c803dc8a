"""HyperPyYAML reader: tags become plain dicts, !ref resolves (with arithmetic), nothing is imported."""

import subprocess
import sys

import pytest

from sovits2_jax.convert.hyperpyyaml import HyperYamlError, load_hyperpyyaml

# the constructs CosyVoice2's cosyvoice2.yaml uses, in its layout
COSYVOICE2_LIKE = """
__set_seed1: !apply:random.seed [1986]
__set_seed3: !apply:torch.manual_seed [1986]
sample_rate: 24000
llm_input_size: 896
llm_output_size: 896
qwen_pretrain_path: ''
token_frame_rate: 25
token_mel_ratio: 2

llm: !new:cosyvoice.llm.llm.Qwen2LM
    llm_input_size: !ref <llm_input_size>
    llm_output_size: !ref <llm_output_size>
    speech_token_size: 6561
    length_normalized_loss: True
    lsm_weight: 0
    mix_ratio: [5, 15]
    llm: !new:cosyvoice.llm.llm.Qwen2Encoder
        pretrain_path: !ref <qwen_pretrain_path>
    sampling: !name:cosyvoice.utils.common.ras_sampling
        top_p: 0.8
        top_k: 25
        win_size: 10
        tau_r: 0.1

flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                t_scheduler: 'cosine'
        estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
            channels: [256]
            static_chunk_size: !ref <token_frame_rate> * <token_mel_ratio> # a comment
            num_decoding_left_chunks: -1

hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    sampling_rate: !ref <sample_rate>
    resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5]]
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
hifigan: !new:cosyvoice.hifigan.hifigan.HiFiGan
    generator: !ref <hift>
    discriminator: !new:matcha.hifigan.models.MultiPeriodDiscriminator
get_tokenizer: !name:cosyvoice.tokenizer.tokenizer.get_qwen_tokenizer
    token_path: !ref <qwen_pretrain_path>
    skip_special_tokens: True
data_pipeline: [
    !ref <get_tokenizer>,
]
train_conf:
    optim_conf:
        lr: 1e-5
    nested_rate: !ref <hift.sampling_rate> // 100
    ckpt: !ref <qwen_pretrain_path>/llm.pt
    copied: !copy <llm[mix_ratio]>
    pair: !tuple (3, 4)
"""


@pytest.fixture(scope="module")
def cfg():
    return load_hyperpyyaml(COSYVOICE2_LIKE, overrides={"qwen_pretrain_path": "/models/CosyVoice-BlankEN"})


def test_new_name_apply_representation(cfg):
    llm = cfg["llm"]
    assert llm["__class__"] == "cosyvoice.llm.llm.Qwen2LM"
    assert llm["llm_input_size"] == 896 and llm["speech_token_size"] == 6561
    assert llm["mix_ratio"] == [5, 15] and llm["length_normalized_loss"] is True
    assert llm["llm"] == {"__class__": "cosyvoice.llm.llm.Qwen2Encoder", "pretrain_path": "/models/CosyVoice-BlankEN"}
    assert llm["sampling"] == {
        "__name__": "cosyvoice.utils.common.ras_sampling",
        "top_p": 0.8,
        "top_k": 25,
        "win_size": 10,
        "tau_r": 0.1,
    }
    assert cfg["__set_seed1"] == {"__apply__": "random.seed", "__args__": [1986]}
    assert cfg["hifigan"]["discriminator"] == {"__class__": "matcha.hifigan.models.MultiPeriodDiscriminator"}


def test_references_arithmetic_and_sharing(cfg):
    est = cfg["flow"]["decoder"]["estimator"]
    assert est["static_chunk_size"] == 50 and isinstance(est["static_chunk_size"], int)
    assert est["num_decoding_left_chunks"] == -1
    assert cfg["hifigan"]["generator"] is cfg["hift"]  # hyperpyyaml shares referenced instances
    assert cfg["hift"]["sampling_rate"] == 24000
    assert cfg["data_pipeline"][0] is cfg["get_tokenizer"]
    tc = cfg["train_conf"]
    assert tc["nested_rate"] == 240
    assert tc["ckpt"] == "/models/CosyVoice-BlankEN/llm.pt"
    assert tc["copied"] == [5, 15] and tc["copied"] is not cfg["llm"]["mix_ratio"]
    assert tc["pair"] == (3, 4)


def test_yaml12_floats(cfg):
    assert cfg["train_conf"]["optim_conf"]["lr"] == pytest.approx(1e-5)
    assert cfg["flow"]["decoder"]["cfm_params"]["content"]["sigma_min"] == pytest.approx(1e-6)


def test_nothing_imported(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(COSYVOICE2_LIKE)
    code = (
        "import sys; from sovits2_jax.convert.hyperpyyaml import load_hyperpyyaml; "
        f"load_hyperpyyaml({str(path)!r}); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('cosyvoice', 'hyperpyyaml', 'torch', 'omegaconf')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_reads_file(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("a: 2\nb: !ref <a> ** 3 + 1\nc: !ref <a>\n")
    assert load_hyperpyyaml(str(path)) == {"a": 2, "b": 9, "c": 2}
    assert load_hyperpyyaml(path) == {"a": 2, "b": 9, "c": 2}


def test_errors():
    with pytest.raises(HyperYamlError, match="no key 'missing'"):
        load_hyperpyyaml("a: 1\nb: !ref <missing>\n")
    with pytest.raises(HyperYamlError, match="PLACEHOLDER"):
        load_hyperpyyaml("a: !PLACEHOLDER\nb: 1\n")
    assert load_hyperpyyaml("a: !PLACEHOLDER\nb: 1\n", overrides={"a": 3}) == {"a": 3, "b": 1}
    with pytest.raises(HyperYamlError, match="circular"):
        load_hyperpyyaml("a: !ref <b>\nb: !ref <a>\n")
    with pytest.raises(HyperYamlError, match="unsupported"):
        load_hyperpyyaml("a: !include:other.yaml\nb: 1\n")
    with pytest.raises(HyperYamlError, match="does not match"):
        load_hyperpyyaml("a: 1\nb: 2\n", overrides={"c": 1}, overrides_must_match=True)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_hyperpyyaml("/nonexistent/cosyvoice2.yaml")
