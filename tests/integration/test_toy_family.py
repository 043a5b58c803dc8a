"""A model family kept outside the package: a temporary package defines a family module and a config file, and
``python -m sovits2_jax.train`` trains it (found by its dotted module path) with no file of sovits2_jax changed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FAMILY = '''
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.data.synthetic_tokens import SyntheticTokens
from sovits2_jax.train.family import Family, Phase, Player
from sovits2_jax.validation import ConfigError

VOCAB = 16


class Bigram(nnx.Module):
    def __init__(self, rngs):
        self.embed = nnx.Embed(VOCAB, 8, rngs=rngs)
        self.out = nnx.Linear(8, VOCAB, rngs=rngs)

    def __call__(self, tokens):
        return self.out(self.embed(tokens))


def loss(models, batch, rng, train):
    tokens = batch["tokens"]
    logits = models["model"](tokens[:, :-1])
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], axis=-1)
    return jnp.mean(nll), {"weight": jnp.float32(nll.size)}


@dataclasses.dataclass(frozen=True)
class BigramFamily(Family):
    name: str = "bigram"

    def validate(self, config):
        if config.model.width != 8:
            raise ConfigError(f"config.model.width={config.model.width} must be 8")

    def players(self, config):
        return [Player("model", lambda: Bigram(nnx.Rngs(config.seed)), config.train.optimizer)]

    def phases(self, config):
        return [Phase("model", loss)]

    def eval_loss(self, config):
        return loss

    def make_batches(self, config, split):
        seed = config.seed + (split != "train")
        return SyntheticTokens(batch_size=config.train.batch_size, seq_len=12, vocab=VOCAB, seed=seed,
                               num_batches=None if split == "train" else 2)

    def tokens(self, batch):
        return batch["tokens"].size

    def export_meta(self, config):
        return {"format": "bigram", "config": config.model.to_dict()}


FAMILY = BigramFamily()
'''

CONFIG = '''
import ml_collections

from sovits2_jax.configs.common import base_config, training_sections


def get_config(arg=""):
    config = base_config("bigram", "out/bigram", model=ml_collections.ConfigDict(dict(width=8)))
    for name, section in training_sections("toy_pkg.family", None, batch_size=8, num_steps=2, log_every=1,
                                           eval_every=2, checkpoint_every=2, optimizer=dict(lr=0.1)).items():
        config[name] = section
    return config
'''


def _package_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted((ROOT / "sovits2_jax").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + path.read_bytes())
    return digest.hexdigest()


def _train(tmp_path, *overrides):
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "sovits2_jax.train", f"--config={tmp_path / 'toy_pkg' / 'config.py'}",
           f"--workdir={tmp_path / 'run'}", *overrides]  # fmt: skip
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_a_family_outside_the_package_trains_through_the_cli(tmp_path):
    before = _package_digest()
    pkg = tmp_path / "toy_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "family.py").write_text(textwrap.dedent(FAMILY))
    (pkg / "config.py").write_text(textwrap.dedent(CONFIG))

    bad = _train(tmp_path, "--config.model.width=3")
    assert bad.returncode == 1 and "error: config.model.width=3 must be 8" in bad.stderr  # its validate() ran

    run = _train(tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    first, second = rows[0]["train/loss"], rows[1]["train/loss"]
    assert 2.0 < first < 4.0  # a mean NLL over 16 ids starts near log(16) = 2.77
    assert second < first and "eval/loss" in rows[1]  # it learns, and the dev batches came from make_batches
    meta = json.loads((tmp_path / "run" / "checkpoints" / "2" / "meta" / "meta.json").read_text())
    assert meta["family"] == "toy_pkg.family" and meta["format"] == "bigram" and meta["step"] == 2
    assert _package_digest() == before


def test_an_unknown_family_is_one_line(tmp_path):
    pkg = tmp_path / "toy_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text(textwrap.dedent(CONFIG).replace('"toy_pkg.family"', '"toy_pkg.nowhere"'))
    run = _train(tmp_path)
    assert run.returncode == 1
    assert "error: config.family='toy_pkg.nowhere': no module toy_pkg.nowhere" in run.stderr
