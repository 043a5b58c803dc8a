"""Conversion round trip on a random model: random HF Qwen2 -> Orbax -> parity vs transformers -> back to HF.

    python -m sovits2_jax.demo.roundtrip --config=configs/qwen2.py:tiny [--config.model.num_layers=3] \\
        [--workdir=out/roundtrip]  (make roundtrip)

Prints the parameter sharding on the configured mesh, the parity report and the round-trip check.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from absl import flags

from sovits2_jax import cli
from sovits2_jax.train.validate import validate

_CONFIG = cli.config_flag("configs/qwen2.py:tiny")
_WORKDIR = flags.DEFINE_string("workdir", "out/roundtrip", "where the checkpoints and report.json are written")


def round_trip_check(src: Path, back: Path) -> dict:
    """Compares every tensor of two HF directories bit for bit."""
    from sovits2_jax.convert.torch_io import iter_hf_weights

    a = dict(iter_hf_weights(src))
    b = dict(iter_hf_weights(back))
    differing = [k for k in a if k not in b or a[k].dtype != b[k].dtype or not np.array_equal(a[k], b[k])]
    return dict(tensors=len(a), missing=sorted(set(a) - set(b)), extra=sorted(set(b) - set(a)), differing=differing)


def main(argv) -> int:
    del argv
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # Orbax logs every read and write at INFO
    import jax
    from flax import nnx

    from sovits2_jax import parity
    from sovits2_jax.convert import hf_qwen2
    from sovits2_jax.models.qwen2 import Qwen2Config, Qwen2ForCausalLM
    from sovits2_jax.parallel.mesh import make_mesh
    from sovits2_jax.parallel.sharding import describe, sharded_init
    from sovits2_jax.parity.random_reference import save_random_hf_qwen2

    config = cli.validated(_CONFIG, validate)
    workdir = Path(_WORKDIR.value)
    model_config = Qwen2Config.from_dict(config.model.to_dict())

    hf_dir = save_random_hf_qwen2(workdir / "hf", model_config, seed=config.seed)
    print(f"[1/5] random-init transformers Qwen2 written to {hf_dir}")

    jax_dir = hf_qwen2.torch_to_jax(hf_dir, workdir / "jax")
    print(f"[2/5] converted to Orbax: {jax_dir}")

    mesh = make_mesh(dict(config.mesh))
    _, params, _ = sharded_init(lambda: Qwen2ForCausalLM(model_config, rngs=nnx.Rngs(0)), mesh, config.sharding.rules)
    print(f"[3/5] parameters created sharded on mesh {dict(mesh.shape)} ({jax.device_count()} devices):")
    describe(params)

    report = parity.run(
        "qwen2",
        str(hf_dir),
        device=config.parity.device,
        dtype=config.parity.dtype,
        seed=config.seed,
        report_path=workdir / "report.json",
    )
    print("[4/5] " + parity.format_report(report))

    back = hf_qwen2.jax_to_torch(jax_dir, workdir / "hf_back")
    rt = round_trip_check(hf_dir, back)
    exact = not (rt["missing"] or rt["extra"] or rt["differing"])
    print(f"[5/5] HF -> Orbax -> HF round trip: {rt['tensors']} tensors, {'bit-exact' if exact else 'DIFFERENT'}")
    if not exact:
        print(json.dumps(rt, indent=2))
    ok = report["ok"] and exact
    print(f"round trip {'OK' if ok else 'FAILED'}: report in {workdir / 'report.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    cli.run(main)
