"""CosyVoice2 Qwen2LM parity (loss, logits, uni/bistream targets, inference path, DPO) and the llm.pt /
whole-directory converters, against cosyvoice's own module on a tiny random backbone."""

from __future__ import annotations

import dataclasses
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from sovits2_jax import parity
from sovits2_jax.convert import cosyvoice2, cosyvoice2_llm
from sovits2_jax.convert.mapping import ConversionError, flatten
from sovits2_jax.convert.params import params_from_flat
from sovits2_jax.infer import generate as gen
from sovits2_jax.models import speech_lm as slm
from sovits2_jax.parity.references import llm as parity_llm

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return parity_llm.write_tiny_model_dir(
        tmp_path_factory.mktemp("cv2") / "CosyVoice2-tiny", seed=0, training_entries=True
    )


@pytest.fixture(scope="module")
def case(model_dir):
    return parity_llm.build(str(model_dir), seed=0)


def _ours_model(model_dir):
    config = parity_llm.read_model_dir(model_dir)
    nested = cosyvoice2_llm.load_llm_pt(model_dir / "llm.pt", config)
    graphdef, params = params_from_flat(lambda: slm.SpeechLM(config, rngs=nnx.Rngs(0)), flatten(nested))
    return config, graphdef, params


def _reference(model_dir):
    config = parity_llm.read_model_dir(model_dir)
    ref = parity_llm.reference_model(config, model_dir / parity_llm.BLANK_EN)
    state = {k: v for k, v in torch.load(model_dir / "llm.pt", weights_only=True).items() if torch.is_tensor(v)}
    ref.load_state_dict(state, strict=True)
    return ref.eval()


def test_unistream_and_bistream_parity(case):
    ref = case.run_torch(case.inputs)
    ours = case.run_jax(case.inputs)
    report = parity.compare_outputs(ref, ours, case.atol, case.rtol)
    assert all(r["ok"] for r in report.values()), report
    assert ref["logits"].shape[1] >= 300  # RoPE checked over >= 300 positions
    fill = case.info["config"]["speech_token_size"] + 2
    has_fill = (ref["targets"] == fill).any(axis=1)
    assert has_fill.tolist() == [True, False, True, False]  # rows 0, 2 bistream by draw and length ratio


def test_bistream_sequence_matches_reference_for_many_shapes(model_dir):
    """Sequence construction alone (inputs and targets) for text lengths around the 5-token blocks."""
    ref = _reference(model_dir)
    rng = np.random.default_rng(5)
    text_lens = [1, 4, 5, 6, 9, 10, 11, 15]
    speech_lens = [7, 13, 16, 40, 28, 31, 60, 46]
    lt, ls = max(text_lens), max(speech_lens)
    text = np.zeros((8, lt), np.int64)
    speech = np.zeros((8, ls), np.int64)
    for i, (a, b) in enumerate(zip(text_lens, speech_lens)):
        text[i, :a] = rng.integers(0, 500, a)
        speech[i, :b] = rng.integers(0, 100, b)
    draws = rng.uniform(size=8) * 0.49  # every row draws bistream; the length ratio decides
    with torch.no_grad(), parity_llm.replayed_draws(draws):
        t_text = torch.as_tensor(text)
        t_speech = torch.as_tensor(speech)
        target, lm_input, lm_len = ref.prepare_lm_input_target(
            t_text,
            ref.llm.model.model.embed_tokens(t_text),
            torch.as_tensor(text_lens),
            t_speech,
            ref.speech_embedding(t_speech),
            torch.as_tensor(speech_lens),
        )
    config, graphdef, params = _ours_model(model_dir)
    seq = slm.cosyvoice2_sequence(
        text,
        np.asarray(text_lens),
        speech,
        np.asarray(speech_lens),
        draws < 0.5,
        speech_token_size=config.speech_token_size,
        mix_ratio=config.mix_ratio,
    )
    t = int(lm_len.max())
    np.testing.assert_array_equal(np.asarray(seq["lengths"]), lm_len.numpy())
    np.testing.assert_array_equal(np.asarray(seq["targets"])[:, :t], target.numpy())
    emb = nnx.merge(graphdef, params).embed(seq["kinds"], seq["ids"])
    valid = np.arange(t)[None, :] < lm_len.numpy()[:, None]
    np.testing.assert_allclose(
        np.asarray(emb)[:, :t] * valid[..., None], lm_input.numpy() * valid[..., None], atol=1e-6
    )
    assert np.asarray(seq["bistream"]).tolist() == [s * 5 > t * 15 for t, s in zip(text_lens, speech_lens)]


def test_label_smoothing_parity(tmp_path):
    src = parity_llm.write_tiny_model_dir(tmp_path / "lsm", seed=1, lsm_weight=0.1)
    case = parity_llm.build(str(src), seed=1, text_lens=(30, 20), speech_lens=(120, 33))
    ref, ours = case.run_torch(case.inputs), case.run_jax(case.inputs)
    np.testing.assert_allclose(ours["loss"], ref["loss"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours["acc"], ref["acc"], atol=1e-6)


def test_inference_path_matches_reference_forward_one_step(model_dir):
    """Reference inference (Qwen2Encoder.forward_one_step with HF's cache, log_softmax of llm_decoder)
    against our prefill + cached decode, teacher-forced with the same tokens."""
    ref = _reference(model_dir)
    config, graphdef, params = _ours_model(model_dir)
    rng = np.random.default_rng(3)
    text, prompt_text = rng.integers(0, 500, 40), rng.integers(0, 500, 12)
    prompt_speech = rng.integers(0, config.speech_token_size, 230)
    fed = rng.integers(0, config.speech_token_size, 30)
    with torch.no_grad():
        tt = torch.as_tensor(np.concatenate([prompt_text, text]))[None]
        emb = ref.llm.model.model.embed_tokens(tt)
        lm_input = torch.cat(
            [
                ref.llm_embedding.weight[0].reshape(1, 1, -1),
                emb,
                ref.llm_embedding.weight[1].reshape(1, 1, -1),
                ref.speech_embedding(torch.as_tensor(prompt_speech)[None]),
            ],
            dim=1,
        )
        cache, ref_logp = None, []
        for i in range(len(fed) + 1):
            n = lm_input.shape[1] + (0 if cache is None else cache.get_seq_length())
            y, cache = ref.llm.forward_one_step(
                lm_input, masks=torch.tril(torch.ones(1, n, n, dtype=torch.bool)), cache=cache
            )
            ref_logp.append(ref.llm_decoder(y[:, -1]).log_softmax(dim=-1)[0].numpy())
            if i < len(fed):
                lm_input = ref.speech_embedding.weight[int(fed[i])].reshape(1, 1, -1)
    batch = gen.cosyvoice2_batch([text.tolist()], [prompt_text.tolist()], [prompt_speech.tolist()])
    assert batch["prompt_len"][0] + len(fed) >= 300
    ours = gen.decode_logits(graphdef, params, batch["prompt"], batch["prompt_len"], fed[None])
    ours_logp = np.asarray(jax.nn.log_softmax(ours[0], axis=-1))
    np.testing.assert_allclose(ours_logp, np.stack(ref_logp), atol=1e-4, rtol=0)


def test_dpo_matches_reference(model_dir):
    import cosyvoice.utils.losses as ref_losses

    ref = _reference(model_dir)
    _, graphdef, params = _ours_model(model_dir)
    rng = np.random.default_rng(4)
    b = 2
    batch = dict(
        text_token=rng.integers(0, 500, (b, 12)),
        text_token_len=np.asarray([12, 7]),
        speech_token=rng.integers(0, 100, (b, 50)),
        speech_token_len=np.asarray([50, 30]),
        reject_speech_token=rng.integers(0, 100, (b, 44)),
        reject_speech_token_len=np.asarray([44, 21]),
    )
    draws = np.asarray([0.3, 0.8, 0.6, 0.1])
    with torch.no_grad(), parity_llm.replayed_draws(draws):
        out = ref.forward_dpo({k: torch.as_tensor(v) for k, v in batch.items()}, torch.device("cpu"))
    # the rows' mean target log-probs, computed from the reference model's own logits and targets
    combined = dict(
        text_token=np.concatenate([batch["text_token"]] * 2),
        text_token_len=np.concatenate([batch["text_token_len"]] * 2),
        speech_token=np.concatenate(
            [np.pad(batch["speech_token"], ((0, 0), (0, 0))), np.pad(batch["reject_speech_token"], ((0, 0), (0, 6)))]
        ),
        speech_token_len=np.concatenate([batch["speech_token_len"], batch["reject_speech_token_len"]]),
        bistream_uniform=draws,
    )
    pieces = parity_llm.reference_outputs(ref, combined)
    logp = torch.log_softmax(torch.as_tensor(pieces["logits"]), -1).numpy()
    tgt = pieces["targets"].astype(np.int64)
    keep = tgt != -1
    row_logps = (np.take_along_axis(logp, np.where(keep, tgt, 0)[..., None], -1)[..., 0] * keep).sum(1) / keep.sum(1)

    model = nnx.merge(graphdef, params)
    ours = jax.jit(lambda bt, d: slm.cosyvoice2_forward_dpo(model, bt, d))(
        {k: np.asarray(v) for k, v in batch.items()}, draws < 0.5
    )
    np.testing.assert_allclose(ours["loss"], out["loss"].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours["acc"], out["acc"].numpy(), atol=1e-6)
    np.testing.assert_allclose(ours["chosen_logps"], row_logps[:b], atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours["rejected_logps"], row_logps[b:], atol=1e-4, rtol=0)

    pol_c, pol_r, ref_c, ref_r = (rng.normal(size=5).astype(np.float32) for _ in range(4))
    for ipo, ls in ((False, 0.0), (False, 0.1), (True, 0.0)):
        want = ref_losses.DPOLoss(beta=0.05, label_smoothing=ls, ipo=ipo)(
            *(torch.as_tensor(x) for x in (pol_c, pol_r, ref_c, ref_r))
        )
        got = slm.dpo_loss(pol_c, pol_r, ref_c, ref_r, beta=0.05, label_smoothing=ls, ipo=ipo)
        np.testing.assert_allclose(got["loss"], want[0].numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got["chosen_reward"], want[1].mean().numpy(), rtol=1e-6, atol=1e-7)


def test_llm_pt_round_trip_bit_exact(model_dir):
    original = torch.load(model_dir / "llm.pt", weights_only=True)
    assert "epoch" in original and "llm.model.lm_head.weight" in original
    tensors = {k: v.numpy() for k, v in original.items() if torch.is_tensor(v)}
    for scan in (False, True):
        config = parity_llm.read_model_dir(model_dir, scan_layers=scan)
        nested = cosyvoice2_llm.load_llm_pt(model_dir / "llm.pt", config)
        back = dict(cosyvoice2_llm.params_to_torch(nested, config))
        assert set(back) == set(tensors)
        for k, v in tensors.items():
            assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k


def test_strict_conversion_errors(model_dir):
    config = parity_llm.read_model_dir(model_dir)
    state = {k: v.numpy() for k, v in torch.load(model_dir / "llm.pt", weights_only=True).items() if torch.is_tensor(v)}
    broken = dict(state)
    del broken["llm.model.model.layers.1.mlp.up_proj.weight"]
    broken["speech_embedding.weight"] = broken["speech_embedding.weight"][:-1]
    broken["llm.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ConversionError) as err:
        cosyvoice2_llm.torch_to_params(broken.items(), config)
    msg = str(err.value)
    assert "llm.model.model.layers.1.mlp.up_proj.weight" in msg
    assert "speech_embedding.weight" in msg and "llm.extra.weight" in msg
    wrong = dataclasses.replace(config, speech_token_size=config.speech_token_size + 1)
    with pytest.raises(ConversionError, match="llm_decoder"):
        cosyvoice2_llm.torch_to_params(state.items(), wrong)


def test_yaml_config_and_sampling(model_dir):
    cfg = cosyvoice2.read_yaml(model_dir)
    config = cosyvoice2_llm.config_from_yaml(cfg)
    assert config.speech_token_size == parity_llm.TINY_SPEECH_TOKENS
    assert config.backbone.hidden_size == parity_llm.TINY_BACKBONE.hidden_size
    assert config.backbone.tie_word_embeddings and config.mix_ratio == (5, 15)
    s = cosyvoice2_llm.sampling_from_yaml(cfg)
    assert (s.method, s.top_p, s.top_k, s.win_size, s.tau_r) == ("ras", 0.8, 25, 10, 0.1)
    with pytest.raises(ConversionError, match="pretrain_path"):
        cosyvoice2_llm.config_from_yaml({"llm": {**cfg["llm"], "llm": {"pretrain_path": ""}}})


def test_whole_directory_round_trip(model_dir, tmp_path, caplog):
    from sovits2_jax.convert.formats import detect_torch_format, format_of_checkpoint

    src = tmp_path / "src"
    shutil.copytree(model_dir, src)
    (src / "campplus.onnx").write_bytes(b"\x08\x01fake-onnx")
    assert detect_torch_format(src).NAME == "cosyvoice2"
    dst = cosyvoice2.torch_to_jax(src, tmp_path / "jax")
    assert f"{src} has no flow.pt, hift.pt: converting llm.pt only" in caplog.text  # not silently one part
    assert format_of_checkpoint(dst).NAME == "cosyvoice2"
    assert (dst / "llm" / "meta.json").is_file() and not (dst / "flow").exists()
    _, p1, c1, s1 = cosyvoice2.load_llm(dst)
    _, p2, c2, s2 = cosyvoice2.load_llm(src)
    assert c1 == c2 and s1 == s2 and s1.method == "ras"
    leaves1, leaves2 = jax.tree.leaves(p1), jax.tree.leaves(p2)
    assert len(leaves1) == len(leaves2) > 20
    assert all(np.array_equal(a, b) for a, b in zip(leaves1, leaves2))
    params, config = cosyvoice2.load_part(dst, "llm")
    assert config.speech_token_size == parity_llm.TINY_SPEECH_TOKENS
    assert params["speech_embedding"]["embedding"].shape == (config.num_speech_rows, 64)
    back = cosyvoice2.jax_to_torch(dst, tmp_path / "back")
    assert (back / "cosyvoice2.yaml").read_bytes() == (src / "cosyvoice2.yaml").read_bytes()
    assert (back / "campplus.onnx").read_bytes() == b"\x08\x01fake-onnx"
    for f in (src / parity_llm.BLANK_EN).iterdir():
        assert (back / parity_llm.BLANK_EN / f.name).read_bytes() == f.read_bytes()
    a = torch.load(src / "llm.pt", weights_only=True)
    b = torch.load(back / "llm.pt", weights_only=True)
    assert set(b) == {k for k in a if torch.is_tensor(a[k])}
    assert all(torch.equal(a[k], b[k]) for k in b)
    with pytest.raises(ConversionError, match=r"no cosyvoice2\.yaml"):
        cosyvoice2.torch_to_jax(tmp_path / "back" / parity_llm.BLANK_EN, tmp_path / "x")


def test_clis_on_a_model_directory(model_dir, tmp_path, capsys):
    from sovits2_jax.convert import cli
    from sovits2_jax.parity import cli as parity_cli

    assert cli.convert(model_dir, tmp_path / "j").endswith("(cosyvoice2, PyTorch -> Orbax)")  # --to=auto
    assert cli.convert(tmp_path / "j", tmp_path / "t").endswith("(cosyvoice2, Orbax -> PyTorch)")
    assert (tmp_path / "t" / "llm.pt").is_file()
    report = tmp_path / "report.json"
    assert parity_cli.main(["--src", str(tmp_path / "t"), "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "parity llm" in out and "PASS" in out
