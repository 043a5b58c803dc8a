"""optax optimizers from config sections against the PyTorch reference: CosyVoice's WarmupLR and ConstantLR, and
clipping + Adam / AdamW + frozen / scaled parameter groups against torch.optim with clip_grad_norm_."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sovits2_jax.configs.common import optimizer_config
from sovits2_jax.train import optim
from sovits2_jax.validation import ConfigError


def torch_lrs(scheduler_cls, steps, lr, **kw):
    """The lr each of ``steps`` optimizer updates uses under a cosyvoice scheduler stepped after every update."""
    import torch

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=lr)
    sched = scheduler_cls(opt, **kw)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.asarray(out)


@pytest.mark.parametrize("warmup", [0, 25])
def test_warmup_lr_matches_cosyvoice(torch_available, warmup):
    from sovits2_jax.parity.torch_refs import import_cosyvoice

    scheduler = import_cosyvoice("cosyvoice.utils.scheduler")
    expected = torch_lrs(scheduler.WarmupLR, 60, 1e-3, warmup_steps=warmup)
    schedule = optim.make_schedule(optimizer_config(lr=1e-3, schedule="warmup_lr", warmup_steps=warmup), 60)
    np.testing.assert_allclose([float(schedule(i)) for i in range(60)], expected, rtol=1e-6)


def test_constant_lr_matches_cosyvoice_and_warmup_ramps(torch_available):
    from sovits2_jax.parity.torch_refs import import_cosyvoice

    scheduler = import_cosyvoice("cosyvoice.utils.scheduler")
    expected = torch_lrs(scheduler.ConstantLR, 5, 2e-4)
    constant = optim.make_schedule(optimizer_config(lr=2e-4), 5)
    np.testing.assert_allclose([float(constant(i)) for i in range(5)], expected, rtol=1e-7)
    ramp = optim.make_schedule(optimizer_config(lr=1.0, warmup_steps=4), 10)
    np.testing.assert_allclose([float(ramp(i)) for i in range(6)], [0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    cosine = optim.make_schedule(optimizer_config(lr=1.0, schedule="cosine", warmup_steps=2, end_lr_fraction=0.1), 12)
    assert float(cosine(2)) == pytest.approx(1.0) and float(cosine(12)) == pytest.approx(0.1)
    assert float(cosine(7)) == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-6)  # half way down the cosine


def labels(params):
    return {"frozen_w": "frozen", "text": "text", "rest": "rest"}


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_clip_adam_and_groups_match_torch(torch_available, name):
    import torch

    rng = np.random.default_rng(0)
    init = {k: rng.standard_normal((3, 4)).astype(np.float32) for k in ("frozen_w", "text", "rest")}
    grads = [{k: (10 * rng.standard_normal((3, 4))).astype(np.float32) for k in init} for _ in range(4)]
    section = optimizer_config(name=name, lr=1e-2, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.1, grad_clip=1.0,
                               lr_scale={"text": 0.5})  # fmt: skip
    tx, _ = optim.make_optimizer(section, 10, labels, init)
    params = jax.tree.map(jnp.asarray, init)
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
        params = optax.apply_updates(params, updates)

    tp = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
    tp["frozen_w"].requires_grad_(False)
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    kw = dict(betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1 if name == "adamw" else 0.0)
    opt = cls([{"params": [tp["text"]], "lr": 5e-3}, {"params": [tp["rest"]], "lr": 1e-2}], **kw)
    for g in grads:
        for k in ("text", "rest"):
            tp[k].grad = torch.tensor(g[k])
        torch.nn.utils.clip_grad_norm_([tp["text"], tp["rest"]], 1.0)  # frozen params have no grad in torch
        opt.step()
    for k in init:
        np.testing.assert_allclose(np.asarray(params[k]), tp[k].detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    np.testing.assert_array_equal(np.asarray(params["frozen_w"]), init["frozen_w"])


def test_bad_sections_name_the_key():
    with pytest.raises(ConfigError, match=r"config.train.optimizer.name='sgd'"):
        optim.make_optimizer(optimizer_config(name="sgd"), 10)
    with pytest.raises(ConfigError, match=r"config.train.optimizer.schedule='step'"):
        optim.make_optimizer(optimizer_config(schedule="step"), 10)
    with pytest.raises(ConfigError, match=r"lr_scale has labels \['txt'\]"):
        optim.make_optimizer(optimizer_config(lr_scale={"txt": 0.5}), 10, labels, {"frozen_w": 0, "text": 0, "rest": 0})


def test_freeze_patterns_hold_matching_parameters_and_keep_them_out_of_the_clip():
    rng = np.random.default_rng(1)
    init = {"embed": {"table": rng.standard_normal((5, 2)).astype(np.float32)},
            "layer": {"kernel": rng.standard_normal((2, 2)).astype(np.float32)}}  # fmt: skip
    grad = {"embed": {"table": np.full((5, 2), 100.0, np.float32)}, "layer": {"kernel": np.ones((2, 2), np.float32)}}
    # eps 1 makes Adam's first step scale with the gradient: lr * g / (|g| + 1)
    section = optimizer_config(name="adam", lr=0.1, eps=1.0, grad_clip=1.0, freeze=("^embed/",))
    tx, _ = optim.make_optimizer(section, 10, None, init)
    params = jax.tree.map(jnp.asarray, init)
    updates, _ = tx.update(jax.tree.map(jnp.asarray, grad), tx.init(params), params)
    np.testing.assert_array_equal(np.asarray(updates["embed"]["table"]), 0.0)
    # the layer's gradient (norm 2) is clipped alone to 0.5 per entry; were the frozen table's gradient (norm 316)
    # in the norm, it would shrink to 0.003 and the update 100x
    np.testing.assert_allclose(np.asarray(updates["layer"]["kernel"]), -0.1 * 0.5 / 1.5, rtol=1e-4)
    with pytest.raises(ConfigError, match=r"freeze: 'nothing' matches no parameter \(e.g. embed/table, layer/kernel\)"):
        optim.make_optimizer(optimizer_config(freeze=("nothing",)), 10, None, init)
    with pytest.raises(ConfigError, match=r"freeze: '\(' is not a regular expression"):
        optim.make_optimizer(optimizer_config(freeze=("(",)), 10, None, init)
